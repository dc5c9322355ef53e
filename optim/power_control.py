r"""Optimal AirComp power control for a single-antenna server in a static channel (Cao, Zhu, Xu, Huang).

With denoising factor :math:`\eta` (receiver :math:`a = 1/\sqrt\eta`) the best transmit scalars are
:math:`b_k = \frac{h_k^*}{|h_k|}\min(\sqrt{P_k}, \sqrt\eta / |h_k|)`: devices with
:math:`q_k = P_k|h_k|^2 \le \eta` send at full power, the others invert their channel (threshold
structure). Sorting :math:`q_{(1)} \le \dots \le q_{(K)}`, on :math:`[q_{(i)}, q_{(i+1)}]` the MSE is
:math:`\sum_{j \le i} (\sqrt{q_{(j)}} x - 1)^2 + \sigma^2 x^2` with :math:`x = 1/\sqrt\eta`, a convex quadratic
minimised at :math:`x_i = \sum_{j\le i}\sqrt{q_{(j)}} / (\sum_{j \le i} q_{(j)} + \sigma^2)`; the optimum is the
best of these K minimisers clipped to their intervals -- exact, no grid search.
"""

import numpy as np
import tensorflow as tf

from deft6g.checks import check_noise_var
from deft6g.phy import aircomp_mse

from .aligned import check_channel_and_power
from .design import AirCompDesign, best_threshold_b


def optimal_denoising(q, noise_var):
    r"""The optimal denoising factor :math:`\eta` of the threshold policy (module docstring).

    Input
    -----
    q : [B, K], float64 -- :math:`P_k |h_k|^2`, > 0
    noise_var : [B], float64 -- sigma^2, linear

    Output
    ------
    eta : [B], float64
    """
    qs = np.sort(q, axis=-1)
    csum_sqrt, csum = np.cumsum(np.sqrt(qs), -1), np.cumsum(qs, -1)
    x = csum_sqrt / (csum + noise_var[:, None])                             # piece minimisers, i = 1..K
    lo = qs
    hi = np.concatenate([qs[:, 1:], np.full_like(qs[:, :1], np.inf)], axis=-1)
    eta = np.clip(1.0 / x ** 2, lo, hi)                                      # [B, K] candidates
    mse = np.stack([_mse_eta(q, e, noise_var) for e in eta.T], axis=-1)
    return eta[np.arange(len(eta)), np.argmin(mse, axis=-1)]


def _mse_eta(q, eta, noise_var):
    """MSE of the threshold policy at eta [B] for q [B, K]."""
    full = q < eta[:, None]
    return np.sum(np.where(full, (np.sqrt(q / eta[:, None]) - 1) ** 2, 0.0), -1) + noise_var / eta


def power_control(h, power, noise_var):
    r"""The exact MSE-optimal power control for a single-antenna server (N = 1), per realisation.

    Input
    -----
    h : [..., K], complex -- the devices' channels to the single server antenna
    power : scalar or [..., K], float -- P_k, linear, > 0
    noise_var : scalar or [...], float -- sigma^2, linear, >= 0 (SNR = P / sigma^2 per device)

    Output
    ------
    AirCompDesign -- a [..., 1] (:math:`1/\sqrt\eta`, real), b [..., K] (`best_threshold_b`, the threshold rule),
    mse [...], eta [...] (the optimal denoising factor), status "closed form", method "power_control"

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.optim as optim
    >>> rng = np.random.default_rng(0)
    >>> h = (rng.normal(size=(5, 4)) + 1j * rng.normal(size=(5, 4))) / np.sqrt(2)   # [B = 5, K = 4], Rayleigh
    >>> d = optim.power_control(h, 1.0, 0.1)
    >>> d.eta.shape, d.b.shape
    ((5,), (5, 4))
    """
    h = np.asarray(h)
    if h.ndim < 1:
        raise ValueError("`h` must have shape [..., K], got a scalar")
    Ht, pt = check_channel_and_power(h[..., None, :], power, None)
    H = Ht.numpy().astype(complex)
    lead, k = list(H.shape[:-2]), H.shape[-1]
    hb = H.reshape(-1, 1, k)
    P = np.broadcast_to(pt.numpy(), lead + [k]).reshape(-1, k).astype(float)
    nv = check_noise_var(noise_var, tf.float64).numpy()
    nv = np.broadcast_to(nv, lead).reshape(-1)
    eta = optimal_denoising(P * np.abs(hb[:, 0]) ** 2, nv)
    a = (1.0 / np.sqrt(eta))[:, None].astype(complex)
    b = best_threshold_b(hb, a, P)
    mse = aircomp_mse(hb, a, b, nv)
    return AirCompDesign(a=a.reshape(lead + [1]), b=b.reshape(lead + [k]), mse=mse.reshape(lead),
                         status=np.full(lead, "closed form"), method="power_control", eta=eta.reshape(lead))
