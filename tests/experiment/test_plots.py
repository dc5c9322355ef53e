"""Plot helpers: point labels that would be drawn over each other are merged, the others kept."""

from deft6g.experiment import line_plot, merge_labels


def test_labels_of_coinciding_points_are_merged_and_others_kept(tmp_path):
    points = [(0.07, 0.683, 0.04, "-30 dB"), (0.07, 0.760, 0.01, "0 dB"), (0.07, 0.753, 0.01, "-20 dB"),
              (0.12, 0.757, 0.01, "-10 dB"), (0.07, 0.9, float("nan"))]
    span = 0.9 - 0.683
    assert merge_labels(points, span) == [(0.07, 0.683, "-30 dB"), (0.07, 0.760, "-20 / 0 dB"),
                                          (0.12, 0.757, "-10 dB")]
    assert merge_labels([(1, 0.5, "a"), (1, 0.5, "b")], 0.0) == [(1, 0.5, "a / b")]
    line_plot(tmp_path / "p.png", {"aircomp": points}, "latency [s]", "accuracy", "t", logx=True, marker_only=True)
    assert (tmp_path / "p.png").stat().st_size > 1000
