"""Plot helpers: point labels that would be drawn over each other are merged, the others kept."""

import pytest

from deft6g.experiment import interval, line_plot, log_mean_ci, mean_ci, merge_labels


def test_labels_of_coinciding_points_are_merged_and_others_kept(tmp_path):
    points = [(0.07, 0.683, 0.04, "-30 dB"), (0.07, 0.760, 0.01, "0 dB"), (0.07, 0.753, 0.01, "-20 dB"),
              (0.12, 0.757, 0.01, "-10 dB"), (0.07, 0.9, float("nan"))]
    span = 0.9 - 0.683
    assert merge_labels(points, span) == [(0.07, 0.683, "-30 dB"), (0.07, 0.760, "-20 / 0 dB"),
                                          (0.12, 0.757, "-10 dB")]
    assert merge_labels([(1, 0.5, "a"), (1, 0.5, "b")], 0.0) == [(1, 0.5, "a / b")]
    line_plot(tmp_path / "p.png", {"aircomp": points}, "latency [s]", "accuracy", "t", logx=True, marker_only=True)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_log_axis_refuses_intervals_that_reach_zero_and_draws_log_space_ones(tmp_path):
    """A linear +-CI of a heavy-tailed positive figure reaches below zero: on a log axis that is refused, and a
    (low, high) interval from log_mean_ci (positive by construction) is drawn."""
    values = [1e-4, 1e-2, 1.0]
    mean, half = mean_ci(values)
    with pytest.raises(ValueError, match="log axis"):
        line_plot(tmp_path / "bad.png", {"mse": [(1, mean, half)]}, "round", "MSE", "t", logy=True)
    gm, lo, hi = log_mean_ci(values)
    assert interval((1, gm, (lo, hi))) == (lo, hi) and lo > 0
    line_plot(tmp_path / "ok.png", {"mse": [(1, gm, (lo, hi)), (2, gm / 2, (lo / 2, hi / 2))]}, "round", "MSE", "t",
              logy=True)
    assert (tmp_path / "ok.png").stat().st_size > 1000


def test_xticks_label_a_sweeps_grid_on_a_log_axis(tmp_path, monkeypatch):
    """A log x axis over pool sizes 1, 2, 4, 8 with xticks: exactly those labels, and no minor labels such as
    '3x10^0'."""
    import deft6g.experiment.plots as plots
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.line_plot(tmp_path / "p.png", {"a": [(1, 0.5), (2, 0.6), (4, 0.7), (8, 0.8)]}, "pool size", "accuracy",
                    "pool", logx=True, xticks=[1, 2, 4, 8])
    ax = figures[0].axes[0]
    figures[0].canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert all(t.get_text() == "" for t in ax.get_xticklabels(minor=True))


def test_curves_past_ten_colours_differ_in_line_style_and_marker(tmp_path, monkeypatch):
    """25 curves: curve 11 reuses curve 1's colour but dashed with squares, curve 21 dotted with triangles; no two
    curves share colour, line style and marker."""
    import deft6g.experiment.plots as plots
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    plots.line_plot(tmp_path / "p.png", {f"c{i}": [(0, i), (1, i + 0.5)] for i in range(25)}, "x", "y", "t")
    lines = [ln for ln in figures[0].axes[0].get_lines() if ln.get_label().startswith("c")]
    looks = [(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in lines]
    assert len(lines) == 25 and len(set(looks)) == 25
    assert looks[10] == (looks[0][0], "--", "s") and looks[20] == (looks[0][0], ":", "^")


def test_curves_with_equal_points_are_drawn_once_under_both_labels(tmp_path, monkeypatch):
    """A choice that picked the oracle: its curve equals the oracle's (here one as numpy floats, in another
    order) and would hide under it; it is drawn once, labelled "single = oracle", and a reference line that
    names either takes its colour. A curve that differs in one point stays apart."""
    import numpy as np
    import deft6g.experiment.plots as plots
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    oracle = [(1, 0.61, 0.02), (2, 0.7, (0.66, 0.74)), (4, float("nan"))]
    single = [(2, np.float64(0.7), (0.66, 0.74)), (1, 0.61, np.float64(0.02)), (4, np.nan)]
    plots.line_plot(tmp_path / "p.png", {"single": single, "oracle": oracle, "ensemble": oracle[:2] + [(4, 0.8)]},
                    "pool size", "accuracy", "t", hlines={"oracle mean": (0.65, 0.01, "oracle")})
    handles, labels = figures[0].axes[0].get_legend_handles_labels()
    color = {label: (h.lines[0] if hasattr(h, "lines") else h).get_color() for h, label in zip(handles, labels)}
    assert sorted(labels) == ["ensemble", "oracle mean", "single = oracle"]
    assert color["oracle mean"] == color["single = oracle"] != color["ensemble"]
    nan = float("nan")
    curves = {"a = b": [(1, 0.1)], "a": [(1, 0.2)], "b": [(1, 0.2)], "x": [], "y": [], "n": [(1, nan)], "m": [(1, nan)]}
    assert plots.same_curves(curves)[0] == curves          # no data: nothing to call equal; "a = b" is taken


def test_a_long_joined_label_is_wrapped_in_the_legend_and_the_layout_still_fits(tmp_path, monkeypatch):
    """Six equal curves (the ensemble plot of a smoke run where every choice scored alike): one line, its joined
    label wrapped to lines of at most 70 characters in the legend, and no tight-layout warning (a 250-character
    legend line is wider than the axes)."""
    import warnings
    import deft6g.experiment.plots as plots
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    same = [(20, 0.4, 0.05), (40, 0.42, 0.05)]
    names = [f"{init}: {what}" for init in ("fresh", "warm") for what in
             ("single prompt chosen on validation", "newest single prompt", "best single on test (oracle bound)")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.line_plot(tmp_path / "p.png", {**{n: same for n in names}, "ensemble": [(20, 0.5), (40, 0.6)]},
                        "labelled examples received", "test accuracy", "t", note="mean and 95% CI")
    texts = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    joined = next(t for t in texts if " = " in t)
    assert sorted(texts) == sorted(["ensemble", joined]) and joined.replace("\n", " ") == " = ".join(names)
    assert max(len(line) for line in joined.splitlines()) <= 70 < len(" = ".join(names))
