"""Matplotlib helpers shared by the benchmarks (headless Agg backend)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def line_plot(path, curves, xlabel, ylabel, title, logy=False, logx=False, marker_only=False, hlines=None):
    """Write a PNG with one line (or, with marker_only, one set of markers) per entry of `curves`
    ({label: [(x, y), ...]}; a third element (x, y, text) annotates the point) and a dashed horizontal
    line per entry of `hlines` ({label: y})."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in curves.items():
        points = sorted(points)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", ms=4 if marker_only else 3, ls="none" if marker_only else "-", label=label)
        for p in points:
            if len(p) > 2:
                ax.annotate(p[2], (p[0], p[1]), textcoords="offset points", xytext=(4, 3), fontsize=6)
    for i, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{len(curves) + i}", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
