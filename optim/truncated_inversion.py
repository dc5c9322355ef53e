r"""Truncated channel inversion (Zhu, Xu, Huang, IEEE TWC 2020): weak devices stay silent, the others invert.

Along a receive direction u (:math:`\|u\| = 1`; u = 1 for N = 1, else the normalised MRC direction) device k
sees the gain :math:`g_k = u^H h_k`. Devices with :math:`|g_k|^2 \ge g_{th}` transmit
:math:`b_k = \sqrt\eta / g_k`, the others send nothing; the server uses :math:`a = u / \sqrt\eta`, so every
participant arrives aligned and the MSE of the sum is (number excluded) + :math:`\sigma^2/\eta`: a higher
threshold excludes more devices but allows a larger :math:`\eta` (less noise). Two budgets:

- "peak" (the library's convention, :math:`|b_k|^2 \le P_k` in every realisation):
  :math:`\eta = \min_{k \in S} P_k |g_k|^2`, S the participants. For N = 1, Rayleigh fading with mean gain
  :math:`\beta` and equal P, the gains above the threshold are :math:`g_{th} + \mathrm{Exp}` (memoryless), the
  weakest of m participants is :math:`g_{th} + \mathrm{Exp}(m/\beta)`, and with :math:`p = e^{-g_{th}/\beta}`

  .. math:: \mathbb E[\mathrm{MSE}] = K(1-p) + \frac{\sigma^2}{P\beta}\sum_{m=1}^K \binom Km p^m (1-p)^{K-m}\,
            m\, e^{m\gamma} E_1(m\gamma), \qquad \gamma = g_{th}/\beta.

- "average" (Zhu, Xu, Huang: :math:`\mathbb E|b_k|^2 \le P` over Rayleigh fading, N = 1): a fixed
  :math:`\eta = \rho_0 = P\beta / E_1(\gamma)`, since :math:`\mathbb E[1/|h|^2;\ |h|^2 \ge g_{th}] = E_1(\gamma)/\beta`;
  then :math:`\mathbb E[\mathrm{MSE}] = K(1-p) + \sigma^2 E_1(\gamma)/(P\beta)`.

:math:`E_1` is the exponential integral; the participation probability is :math:`p = e^{-g_{th}/\beta}`
(the complementary CDF of the exponential law of :math:`|h|^2`). Threshold 0 under "peak" is full channel
inversion (the aligned design), whose mean MSE is infinite for N = 1.
"""

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import exp1
from scipy.stats import binom
import tensorflow as tf

from deft6g.checks import check_noise_var
from deft6g.phy import aircomp_mse

from .aligned import check_channel_and_power
from .design import AirCompDesign

BUDGETS = ("peak", "average")
"""Power budgets of truncated channel inversion: per-symbol peak or average."""


def _check_threshold(threshold, budget):
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {BUDGETS}, got {budget!r}")
    if isinstance(threshold, bool) or not np.isscalar(threshold) or not np.isfinite(threshold) or threshold < 0 \
            or (budget == "average" and threshold == 0):
        need = "> 0 (E_1(0) is infinite)" if budget == "average" else ">= 0"
        raise ValueError(f"`threshold` must be a finite number {need}, got {threshold!r}")
    return float(threshold)


def truncated_inversion(H, power, noise_var, threshold, budget="peak", mean_gain=1.0):
    """Truncated channel inversion for every realisation (module docstring).

    Input
    -----
    H : [..., N, K], complex
    power : scalar or [..., K], float -- P_k, linear, > 0
    noise_var : scalar or [...], float -- sigma^2 per antenna, linear, >= 0
    threshold : float -- g_th >= 0 on |g_k|^2 (linear)
    budget : "peak" (default) | "average" -- "average" needs N = 1 and uses the Rayleigh mean gain
    mean_gain : float -- beta

    Output
    ------
    AirCompDesign -- a [..., N], b [..., K] (exactly 0 for a silent device), mse [...] (linear, an excluded
    device costs 1), eta [...] (NaN where nobody transmits: a = 0, MSE = K), status "closed form (BUDGET
    budget)" or "nobody transmits"

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> g_th, mse = optim.best_truncation_threshold(num_devices=8, snr=10.0)    # theory: E[MSE] at its best g_th
    >>> h = phy.FadingChannel("rayleigh", num_rx_ant=1, num_devices=8, precision="double")(20_000, seed=0)
    >>> d = optim.truncated_inversion(h.numpy(), 1.0, 0.1, g_th)               # h [B, 1, 8]
    >>> round(mse, 2), round(float(np.mean(d.mse)), 2)                          # theory, Monte Carlo
    (1.2, 1.19)
    """
    threshold = _check_threshold(threshold, budget)
    Ht, pt = check_channel_and_power(H, power, None)
    H = Ht.numpy().astype(complex)
    n, k = H.shape[-2:]
    P = np.broadcast_to(pt.numpy().astype(float), H.shape[:-2] + (k,))
    nv = check_noise_var(noise_var, tf.float64).numpy()
    if n == 1:
        u = np.ones(H.shape[:-2] + (1,), complex)
    else:
        u = np.sum(H / np.linalg.norm(H, axis=-2, keepdims=True), axis=-1)            # MRC direction
        u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    g = np.einsum("...n,...nk->...k", u.conj(), H)
    active = np.abs(g) ** 2 >= threshold
    if budget == "peak":
        eta = np.min(np.where(active, P * np.abs(g) ** 2, np.inf), axis=-1)
        eta = np.where(np.isinf(eta), np.nan, eta)
    else:
        if n != 1:
            raise ValueError(f"`budget` 'average' assumes |h_k|^2 ~ Exp(mean_gain), i.e. N = 1, got N = {n}")
        if not np.isfinite(mean_gain) or mean_gain <= 0:
            raise ValueError(f"`mean_gain` must be a positive number, got {mean_gain!r}")
        eta = np.min(P, axis=-1) * mean_gain / exp1(threshold / mean_gain)
        eta = np.where(active.any(-1), eta, np.nan)
    sqrt_eta = np.sqrt(np.nan_to_num(eta))[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(active, sqrt_eta / g, 0.0)
        a = np.where(sqrt_eta > 0, u / sqrt_eta, 0.0)
    mse = aircomp_mse(H, a, b, nv)
    status = np.where(np.isnan(eta), "nobody transmits", f"closed form ({budget} budget)")
    return AirCompDesign(a=a, b=b, mse=mse, status=status, method=f"truncated-{budget}", eta=eta)


def participation_probability(threshold, mean_gain=1.0):
    """P(|h|^2 >= g_th) = exp(-g_th / beta) for Rayleigh |h|^2 ~ Exp(mean beta); threshold scalar or array."""
    return np.exp(-np.asarray(threshold, float) / mean_gain)


def truncation_mse(num_devices, snr, threshold, budget="peak", mean_gain=1.0):
    r"""Expected MSE of truncated inversion for N = 1, i.i.d. Rayleigh (mean gain beta), equal power.

    Input: num_devices K; snr = P / sigma^2 (linear); threshold g_th (scalar) ; budget "peak" | "average".
    Output: float (linear; inf for "peak" at g_th = 0, full inversion). Formulas in the module docstring.
    """
    threshold = _check_threshold(threshold, budget)
    gamma, p = threshold / mean_gain, float(participation_probability(threshold, mean_gain))
    excluded = num_devices * (1 - p)
    if budget == "average":
        return excluded + exp1(gamma) / (snr * mean_gain)
    if gamma == 0:
        return float("inf")
    m = np.arange(1, num_devices + 1)
    x = m * gamma
    scaled_e1 = np.where(x < 500, np.exp(np.minimum(x, 500)) * exp1(x), 1 / x - 1 / x ** 2 + 2 / x ** 3)
    return float(excluded + np.sum(binom.pmf(m, num_devices, p) * m * scaled_e1) / (snr * mean_gain))


def best_truncation_threshold(num_devices, snr, budget="peak", mean_gain=1.0):
    """The threshold minimising `truncation_mse` (log-grid search, then a bounded refinement); (g_th, mse)."""
    grid = mean_gain * np.logspace(-4, 1.5, 221)
    mses = np.array([truncation_mse(num_devices, snr, g, budget, mean_gain) for g in grid])
    i = int(np.argmin(mses))
    lo, hi = np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)])
    res = minimize_scalar(lambda t: truncation_mse(num_devices, snr, np.exp(t), budget, mean_gain),
                          bounds=(lo, hi), method="bounded", options=dict(xatol=1e-10))
    return (float(np.exp(res.x)), float(res.fun)) if res.fun <= mses[i] else (float(grid[i]), float(mses[i]))
