"""Seed statistics: the mean with a Student-t confidence interval, paired differences, grouped summaries."""

import numpy as np
from scipy import stats


def mean_ci(values, confidence=0.95):
    """(mean, half-width) of the `confidence` interval of the mean of `values` (1-D, finite), from Student's
    t with n - 1 degrees of freedom: half = t_{(1+c)/2, n-1} * s / sqrt(n), s the sample std (ddof 1).
    One value gives half-width NaN (no interval exists)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"`values` must be a non-empty list of finite numbers, got {values!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}")
    if x.size == 1:
        return float(x[0]), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def paired_ci(a, b, confidence=0.95):
    """(mean, half-width) of the paired difference a - b (same length: one pair per seed)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must pair up (one value per seed each), got shapes {a.shape} and {b.shape}")
    return mean_ci(a - b, confidence)


def percentiles(values, q=(10, 50, 90)):
    """Percentiles of `values` (for heavy-tailed figures whose mean does not converge)."""
    return [float(v) for v in np.percentile(np.asarray(values, np.float64), q)]


def summarise(rows, by, values, confidence=0.95):
    """Group `rows` (dicts, values may be strings as read from CSV) by the columns `by` and give, per group,
    the group's columns, `n`, and for each column v of `values` `v_mean` and `v_ci` (half-width of the
    `confidence` interval, NaN for n = 1). Groups keep the order of first appearance."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, members in groups.items():
        s = dict(zip(by, key))
        s["n"] = len(members)
        for v in values:
            s[f"{v}_mean"], s[f"{v}_ci"] = mean_ci([float(m[v]) for m in members], confidence)
        out.append(s)
    return out
