"""Seed statistics: the mean with a Student-t confidence interval, paired differences, the paired equivalence
test (TOST), log-space intervals for positive heavy-tailed figures, the median of censored figures, grouped
summaries."""

import logging

import numpy as np
from scipy import stats

_log = logging.getLogger(__name__)


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


def tost(a, b, margin, alpha=0.05):
    r"""Paired two one-sided tests (TOST) of equivalence of `a` and `b` within +-`margin`.

    With d = a - b per pair (one pair per seed; n >= 2), mean m, standard error se = s / sqrt(n) and
    t = t_{1-alpha, n-1}: the two one-sided nulls d <= -margin and d >= +margin are both rejected at level
    `alpha` exactly when the (1 - 2 alpha) interval m +- t se lies inside (-margin, +margin).
    p = max(P[T >= (m + margin)/se], P[T <= (m - margin)/se]), T ~ Student's t with n - 1 degrees of freedom.

    Input
    -----
    a, b : [n] array-like, finite, same length
    margin : float > 0, in the units of a and b (e.g. 0.01 for one accuracy point)
    alpha : float in (0, 0.5)

    Output
    ------
    dict: n, diff (m), low, high (the 1 - 2 alpha interval), p (the larger one-sided p-value), margin,
    verdict ("equivalent" if p < alpha, else "not shown": a failed TOST does not show a difference either)
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"`a` and `b` must pair up with at least 2 pairs, got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("`a` and `b` must be finite")
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"`margin` must be a finite number > 0, got {margin!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"`alpha` must be in (0, 0.5), got {alpha!r}")
    d = a - b
    n, m = d.size, float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n))
    if se == 0.0:
        p = 0.0 if abs(m) < margin else 1.0
        low = high = m
    else:
        p = float(max(stats.t.sf((m + margin) / se, n - 1), stats.t.cdf((m - margin) / se, n - 1)))
        half = float(stats.t.ppf(1 - alpha, n - 1) * se)
        low, high = m - half, m + half
    return {"n": n, "diff": m, "low": low, "high": high, "p": p, "margin": float(margin),
            "verdict": "equivalent" if p < alpha else "not shown"}


def log_mean_ci(values, confidence=0.95):
    """(geometric mean, low, high) of positive `values`: the Student-t interval of the mean of log(values),
    mapped back, so the interval is positive and fits a log axis (a linear +-CI of a heavy-tailed positive
    figure can run below zero). One value gives (value, NaN, NaN)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"`values` must be a non-empty list of positive finite numbers, got {values!r}")
    m, half = mean_ci(np.log(x), confidence)
    return float(np.exp(m)), float(np.exp(m - half)), float(np.exp(m + half))


def ci_points(samples, log=False, confidence=0.95):
    """A curve's points for `line_plot` from its samples per x: {x: [values]} -> [(x, mean, half-width)] sorted by
    x (`mean_ci`), or with `log` [(x, geometric mean, (low, high))] (`log_mean_ci`: the interval computed in log
    space, its lower bound positive, for a log axis)."""
    if log:
        return [(x, m, (lo, hi)) for x, v in sorted(samples.items()) for m, lo, hi in [log_mean_ci(v, confidence)]]
    return [(x, *mean_ci(v, confidence)) for x, v in sorted(samples.items())]


def censored_median(values):
    """The lower median of `values`, in which censored entries are +inf (never reached: steps or channel uses to a
    target) or -inf (nothing within a budget) and sort as such, never imputed: with every censored entry after
    the observed ones, this is the Kaplan-Meier median, the smallest value by which half of the runs (rounded
    up) had reached the target, and +inf when fewer did. [n] floats (n >= 1) -> float."""
    x = np.sort(np.asarray(values, np.float64).ravel())
    if x.size == 0 or np.any(np.isnan(x)):
        raise ValueError(f"`values` must be a non-empty list of numbers or +-inf, got {values!r}")
    return float(x[(x.size - 1) // 2])


def to_db(x):
    """10 log10(x) [dB] of a positive power or ratio, as a float (a table's figure).

    >>> from deft6g.experiment import to_db
    >>> to_db(0.01), to_db(2.0)
    (-20.0, 3.010299956639812)
    """
    return float(10 * np.log10(x))


def percentiles(values, q=(10, 50, 90)):
    """Percentiles of `values` (for heavy-tailed figures whose mean does not converge)."""
    return [float(v) for v in np.percentile(np.asarray(values, np.float64), q)]


def summarise(rows, by, values, confidence=0.95):
    """Group `rows` (dicts, values may be strings as read from CSV) by the columns `by` and give, per group,
    the group's columns, `n` (its rows), and for each column v of `values` `v_mean` and `v_ci` (half-width of
    the `confidence` interval) over the group's finite values, and `v_skipped`, the number of non-finite
    values (NaN, +-inf: a failed or diverged run) left out; a one-line warning names their row numbers
    (0-based, in `rows`). With one finite value v_ci is NaN, with none v_mean is NaN too. A value that is not
    a number raises ValueError naming the row and column. Groups keep the order of first appearance."""
    groups = {}
    for i, r in enumerate(rows):
        groups.setdefault(tuple(r[k] for k in by), []).append((i, r))
    out = []
    for key, members in groups.items():
        s = dict(zip(by, key))
        s["n"] = len(members)
        for v in values:
            x = np.array([_number(m[v], i, v) for i, m in members], np.float64)
            finite = np.isfinite(x)
            if not finite.all():
                skipped = [i for (i, _), ok in zip(members, finite) if not ok]
                _log.warning("summarise: left out %d non-finite `%s` value(s) of group %s, rows %s", len(skipped),
                             v, dict(zip(by, key)), skipped)
            s[f"{v}_mean"], s[f"{v}_ci"] = mean_ci(x[finite], confidence) if finite.any() else (np.nan, np.nan)
            s[f"{v}_skipped"] = int((~finite).sum())
        out.append(s)
    return out


def _number(value, row, column):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {row} of `rows`: `{column}` is {value!r}, not a number") from None
