"""Matplotlib helpers shared by every study (headless Agg backend)."""

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402


CYCLE_STYLES = (("-", "o"), ("--", "s"), (":", "^"))


def line_plot(path, curves, xlabel, ylabel, title, logy=False, logx=False, marker_only=False, hlines=None,
              note=None, xticks=None):
    """Write a PNG with one line (or, with marker_only, one set of markers) per entry of `curves`.

    curves: {label: [point, ...]}, a point being (x, y), (x, y, err) with err the half-width of an error
    bar (NaN: none) or a (low, high) pair of interval bounds, or either followed by a text that annotates
    the point. On a log y axis (`logy`) every interval must have a positive lower bound: compute it in log
    space (experiment.stats.log_mean_ci) or from percentiles; a bar that would run to zero raises ValueError.
    Curves take the 10 colours of the default cycle; the 11th to 20th repeat them dashed with square markers,
    the next ten dotted with triangles, so no two of up to 30 curves look alike.
    hlines: {label: y, (y, err) or (y, err, curve)}: a dashed reference line per entry, a shaded band of
    +-err around it, in the colour of the curve labelled `curve` when given (its own colour otherwise).
    note: a line of small text under the axes (e.g. "mean and 95% CI over 3 seeds").
    xticks: x values to label (e.g. a sweep's grid, such as pool sizes 1, 2, 4, 8 on a log axis); None: the
    axis's own ticks.
    Curves with equal points and some finite y (a choice that picked the bound, say) are drawn once, labelled
    "a = b", rather than one hiding the other; legend labels longer than 70 characters are wrapped.
    """
    curves, merged = same_curves(curves)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ys = [p[1] for points in curves.values() for p in points if not math.isnan(p[1])]
    span = (max(ys) - min(ys)) if ys else 0.0
    for i, (label, points) in enumerate(curves.items()):
        points = sorted(points, key=lambda p: p[0])
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        lows, highs = zip(*(interval(p) for p in points)) if points else ((), ())
        if logy and any(lo <= 0 for lo in lows if not math.isnan(lo)):
            raise ValueError(f"curve {label!r}: an interval on the log axis reaches {min(lows):.3g} <= 0; give "
                             "(low, high) bounds computed in log space or from percentiles")
        cycle = i // 10 % len(CYCLE_STYLES)          # past the 10 colours, another line style and marker
        style = dict(marker=CYCLE_STYLES[cycle][1], ms=4 if marker_only else 3,
                     ls="none" if marker_only else CYCLE_STYLES[cycle][0], color=f"C{i % 10}", label=label)
        if any(not math.isnan(lo) for lo in lows):
            yerr = [[0 if math.isnan(lo) else y - lo for y, lo in zip(ys, lows)],
                    [0 if math.isnan(hi) else hi - y for y, hi in zip(ys, highs)]]
            ax.errorbar(xs, ys, yerr=yerr, capsize=3, lw=1.2, **style)
        else:
            ax.plot(xs, ys, **style)
        for x, y, text in merge_labels(points, span):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=6)
    colors = {label: f"C{i}" for i, label in enumerate(curves)}
    colors.update({label: colors[name] for label, name in merged.items()})
    for i, (label, y) in enumerate((hlines or {}).items()):
        y, err, curve = (*y, None, None)[:3] if isinstance(y, (tuple, list)) else (y, float("nan"), None)
        color = colors.get(curve, f"C{len(curves) + i}")
        ax.axhline(y, ls="--", lw=1, color=color, label=label)
        if not math.isnan(err):
            ax.axhspan(y - err, y + err, color=color, alpha=0.12, lw=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if xticks is not None:
        ax.set_xticks(list(xticks), [f"{x:g}" for x in xticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [textwrap.fill(label, 70) for label in labels], fontsize=7)   # long (joined) labels wrapped
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def same_curves(curves):
    """({label: points} with the curves of equal points (sorted by x; NaN equal to NaN) that have a finite y
    joined under one label "a = b", in order of first appearance; {original label: its label now}). Curves
    without a finite y, and curves whose joined label another curve already has, stay as they are."""
    groups = {}
    for label, points in curves.items():
        finite = any(math.isfinite(p[1]) for p in points)
        key = tuple(_comparable(p) for p in sorted(points, key=lambda p: p[0])) if finite else ("alone", label)
        groups.setdefault(key, []).append(label)
    names = {}
    for labels in groups.values():
        name = " = ".join(labels)
        for label in labels:
            names[label] = name if name == label or name not in curves else label
    joined = {}
    for label, name in names.items():
        joined.setdefault(name, curves[label])
    return joined, names


def _comparable(value):
    """A point or one of its values as a hashable key: numbers as floats (NaN as "nan"), texts as they are."""
    if isinstance(value, (tuple, list)):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, str):
        return value
    return "nan" if math.isnan(value) else float(value)


def interval(point):
    """(low, high) of a point (x, y), (x, y, err) or (x, y, (low, high)), optionally followed by a text;
    (NaN, NaN) when it has none."""
    err = point[2] if len(point) > 2 and not isinstance(point[2], str) else float("nan")
    if isinstance(err, (tuple, list)):
        return float(err[0]), float(err[1])
    return point[1] - err, point[1] + err


def merge_labels(points, span):
    """[(x, y, text)] of the annotated points; points at one x within 5% of the y-span `span` of each other
    share one label ("-20 / -10 / 0 dB" at the highest of them) instead of drawing texts over each other."""
    groups = []
    for p in sorted((p for p in points if isinstance(p[-1], str)), key=lambda p: (p[0], p[1])):
        if groups and groups[-1][-1][0] == p[0] and p[1] - groups[-1][-1][1] <= 0.05 * span:
            groups[-1].append(p)
        else:
            groups.append([p])
    return [(g[-1][0], g[-1][1], _join([p[-1] for p in g])) for g in groups]


def _join(texts):
    """["-20 dB", "0 dB"] -> "-20 / 0 dB" (a shared unit is written once)."""
    unit = texts[0].rsplit(" ", 1)[-1] if " " in texts[0] else ""
    if len(texts) > 1 and unit and all(t.endswith(" " + unit) for t in texts):
        return " / ".join(t[: -len(unit) - 1] for t in texts) + " " + unit
    return " / ".join(texts)
