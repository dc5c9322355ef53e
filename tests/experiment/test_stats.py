"""Seed statistics against hand computations and SciPy's own interval."""

import numpy as np
import pytest
from scipy import stats

from deft6g.experiment import censored_median, ci_points, log_mean_ci, mean_ci, paired_ci, summarise, tost


def test_mean_ci_hand_example():
    """x = (1, 2, 3): mean 2, s = 1, t_{0.975, 2} = 4.302653, half-width 4.302653 / sqrt(3) = 2.484138."""
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302652729749464 / np.sqrt(3), rel=1e-12)


def test_mean_ci_matches_scipy_interval():
    x = np.random.default_rng(0).normal(size=7)
    mean, half = mean_ci(x, 0.9)
    lo, hi = stats.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (mean - half, mean + half) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_ci_single_value_and_bad_input():
    assert np.isnan(mean_ci([0.5])[1])
    with pytest.raises(ValueError, match="`values`"):
        mean_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="`confidence`"):
        mean_ci([1.0, 2.0], 1.5)


def test_paired_ci_is_ci_of_differences_and_checks_pairs():
    a, b = [0.80, 0.78, 0.82], [0.79, 0.76, 0.80]
    assert paired_ci(a, b) == pytest.approx(mean_ci([0.01, 0.02, 0.02]))
    with pytest.raises(ValueError, match="pair up"):
        paired_ci([1, 2], [1, 2, 3])


def test_summarise_groups_rows_read_from_csv():
    rows = [{"scheme": "a", "snr": "0", "acc": "0.5"}, {"scheme": "a", "snr": "0", "acc": "0.7"},
            {"scheme": "b", "snr": "0", "acc": "0.9"}]
    s = summarise(rows, ["scheme", "snr"], ["acc"])
    assert [g["scheme"] for g in s] == ["a", "b"] and [g["n"] for g in s] == [2, 1]
    assert s[0]["acc_mean"] == pytest.approx(0.6)
    assert s[0]["acc_ci"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([0.5, 0.7], ddof=1) / np.sqrt(2))


def test_tost_hand_example():
    """d = a - b = (0, .01, -.01, .01, .01): mean .004, s = sqrt(320e-6 / 4), se = .004; with margin .01 the
    upper test has t = (.004 - .01) / .004 = -1.5 on 4 df, P[T4 <= -1.5] = 0.10400 (table), so p = 0.104 >= 0.05:
    "not shown"; the 90% interval is .004 +- t_{0.95,4} se = .004 +- 2.131847 * .004."""
    r = tost([0.80, 0.81, 0.79, 0.81, 0.82], [0.80, 0.80, 0.80, 0.80, 0.81], margin=0.01)
    assert r["n"] == 5 and r["diff"] == pytest.approx(0.004, abs=1e-12)
    assert r["p"] == pytest.approx(0.10400, abs=5e-5)
    assert (r["low"], r["high"]) == pytest.approx((0.004 - 2.131847 * 0.004, 0.004 + 2.131847 * 0.004), abs=1e-6)
    assert r["verdict"] == "not shown"
    wide = tost([0.80, 0.81, 0.79, 0.81, 0.82], [0.80, 0.80, 0.80, 0.80, 0.81], margin=0.02)   # t = -4.0
    assert wide["p"] == pytest.approx(stats.t.cdf(-4.0, 4), rel=1e-9) and wide["verdict"] == "equivalent"


def test_tost_is_equivalent_only_when_the_90_interval_lies_inside_the_margin():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a, b = rng.normal(0.8, 0.01, 6), rng.normal(0.8, 0.01, 6)
        r = tost(a, b, 0.01)
        assert (r["verdict"] == "equivalent") == (-0.01 < r["low"] and r["high"] < 0.01)


def test_tost_bad_input():
    with pytest.raises(ValueError, match="`margin`"):
        tost([1.0, 2.0], [1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="pair up"):
        tost([1.0], [1.0], 0.1)


def test_log_mean_ci_is_positive_and_is_the_t_interval_of_the_logs():
    x = np.array([1e-4, 1e-2, 1.0])                        # heavy-tailed: the linear mean +- CI runs below zero
    mean, half = mean_ci(x)
    assert mean - half < 0
    gm, lo, hi = log_mean_ci(x)
    m, h = mean_ci(np.log(x))
    assert (gm, lo, hi) == pytest.approx((np.exp(m), np.exp(m - h), np.exp(m + h)), rel=1e-12)
    assert 0 < lo < gm < hi
    with pytest.raises(ValueError, match="positive"):
        log_mean_ci([1.0, 0.0])


def _kaplan_meier_median(times, events):
    """Independent reference: the product-limit estimate S(t) = prod_{t_i <= t} (1 - d_i / n_i) over event
    times, and the median as the smallest event time with S(t) <= 1/2 (None if S stays above 1/2)."""
    s = 1.0
    for t in sorted(set(t for t, e in zip(times, events) if e)):
        at_risk = sum(u >= t for u in times)
        s *= 1 - sum(u == t and e for u, e in zip(times, events)) / at_risk
        if s <= 0.5:
            return t
    return None


def test_ci_points_are_the_per_x_intervals_in_x_order_and_positive_in_log_space():
    """What a study's per-round curves draw: samples per round -> (round, mean, half-width) by mean_ci, or on a log
    axis (round, geometric mean, (low, high)) by log_mean_ci, whose lower bound stays positive where a linear
    interval of the same heavy-tailed NMSE samples runs below zero."""
    samples = {2: [1e-5, 1e-3, 0.5], 1: [1e-4, 1e-2, 1.0]}
    assert ci_points(samples) == [(1, *mean_ci(samples[1])), (2, *mean_ci(samples[2]))]
    points = ci_points(samples, log=True)
    assert [p[0] for p in points] == [1, 2]
    for x, gm, (lo, hi) in points:
        assert (gm, lo, hi) == log_mean_ci(samples[x]) and 0 < lo < gm < hi
        mean, half = mean_ci(samples[x])
        assert mean - half < 0                                   # the linear interval would reach below zero
    with pytest.raises(ValueError, match="positive"):
        ci_points({1: [0.0, 1.0]}, log=True)


def test_censored_median_matches_kaplan_meier():
    """Steps to target with unreached runs (inf) censored at the budget (60): the censored median equals the
    Kaplan-Meier median (inf where it stays above 1/2) on 500 random sets of 1-7 runs (seed 0), and the hand
    cases hold; -inf (nothing within a budget) sorts first."""
    inf = float("inf")
    assert censored_median([10, inf, inf]) == inf
    assert censored_median([10, 20, inf]) == 20
    assert censored_median([inf, 30]) == 30
    assert censored_median([-inf, 0.7, 0.8]) == 0.7 and censored_median([-inf, -inf, 0.8]) == -inf
    with pytest.raises(ValueError, match="values"):
        censored_median([])
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 8))
        steps = [inf if rng.random() < 0.4 else int(rng.choice([0, 10, 20, 30, 40, 50, 60])) for _ in range(n)]
        times = [min(s, 60) for s in steps]
        km = _kaplan_meier_median(times, [s < inf for s in steps])
        assert censored_median(steps) == (inf if km is None else km), steps
