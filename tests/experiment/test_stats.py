"""Seed statistics against hand computations and SciPy's own interval."""

import numpy as np
import pytest
from scipy import stats

from deft6g.experiment import mean_ci, paired_ci, summarise


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
