r"""Task-oriented AirComp design: weight the D real dimensions of a payload by their importance for the task.

A payload of D standardised real dimensions crosses one channel realisation (docs/design.md §3); dimension d is
sent with a power factor :math:`p_d` (transmit :math:`b_k\sqrt{p_d}`, receive :math:`a/\sqrt{p_d}`), so its
error variance per real entry is

.. math:: e_d = \underbrace{\textstyle\sum_k |a^H h_k b_k - 1|^2}_{M(a, b)} + \sigma^2\|a\|^2 / p_d .

With importances :math:`\omega_d > 0` (e.g. a head's loss sensitivity to dimension d) the design minimises
:math:`J = \sum_d \omega_d e_d` under the per-device budget :math:`|b_k|^2 \le P_k` and the average power
over the dimensions :math:`\frac1D\sum_d p_d \le 1` (so every device's mean transmit power per channel use
is still at most :math:`P_k`). For fixed (a, b), Cauchy-Schwarz gives
:math:`p_d = D\sqrt{\omega_d}/\sum_j\sqrt{\omega_j}` and

.. math:: J = \Omega\,[M(a, b) + \sigma_{\rm eff}^2\|a\|^2], \quad
   \Omega = \sum_d \omega_d,\quad
   \sigma_{\rm eff}^2 = \sigma^2 \frac{(\frac1D\sum_d\sqrt{\omega_d})^2}{\frac1D\sum_d\omega_d} \le \sigma^2,

so the joint optimum is the MSE design (`design_aircomp`) at the effective noise variance
:math:`\sigma_{\rm eff}^2` with that power split. Equal importances give :math:`p_d = 1`,
:math:`\sigma_{\rm eff}^2 = \sigma^2`: exactly the MSE design. For aligned designs (M = 0, a independent of
sigma) the importance-weighted MSE falls by the factor :math:`\sigma_{\rm eff}^2/\sigma^2`.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from deft6g.checks import check_noise_var
from deft6g.phy import aircomp_mse

from .design import AirCompDesign, design_aircomp


@dataclass
class TaskOrientedDesign:
    r"""A per-dimension design for every realisation.

    Parameters
    ----------
    a : [..., D, N], complex128
        Dimension d's receive vector (power split included)
    b : [..., D, K], complex128
        Dimension d's transmit scalars (power split included)
    power_split : [D], float64
        p_d, mean 1
    noise_var_eff : scalar or [...], float64
        :math:`\sigma_{\rm eff}^2`, linear
    dimension_mse : [..., D], float64
        e_d, per real entry of the standardised payload
    weighted_mse : [...], float64
        :math:`\sum_d w_d e_d / \sum_d w_d`
    base : AirCompDesign
        The design at :math:`\sigma_{\rm eff}^2` it was built from (a [..., N], b [..., K]); its `status`
        follows `solver_status`
    """
    a: np.ndarray
    b: np.ndarray
    power_split: np.ndarray
    noise_var_eff: np.ndarray
    dimension_mse: np.ndarray
    weighted_mse: np.ndarray
    base: AirCompDesign


def power_split(importance):
    """p_d = D sqrt(w_d) / sum_j sqrt(w_j) for importances w [D] (finite, > 0); returns (p [D], sigma_eff^2 /
    sigma^2 = mean(sqrt w)^2 / mean(w), a scalar in (0, 1])."""
    w = np.asarray(importance, dtype=np.float64)
    if w.ndim != 1 or w.size < 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"`importance` must be a 1-D array of finite values > 0 (one per dimension), "
                         f"got {importance!r}")
    if np.all(w == w[0]):                                # exactly the MSE design, free of rounding
        return np.ones(w.size), 1.0
    root = np.sqrt(w)
    return w.size * root / root.sum(), float(np.mean(root) ** 2 / np.mean(w))


def dimension_mse(H, a, b, noise_var, split):
    """e_d [..., D] of a base design (a [..., N], b [..., K]) sent with power split p [D]: the misalignment
    sum_k |a^H h_k b_k - 1|^2 plus sigma^2 ||a||^2 / p_d (noise_var sigma^2 scalar or [...], linear)."""
    misalignment = np.asarray(aircomp_mse(H, a, b, 0.0))
    noise = np.asarray(noise_var) * np.sum(np.abs(a) ** 2, axis=-1)
    return misalignment[..., None] + noise[..., None] / np.asarray(split)


def task_oriented_design(H, power, noise_var, importance, method="mmse", seed=None, **design_kwargs):
    r"""Importance-weighted AirComp design of a D-dimensional payload on each channel realisation.

    Input
    -----
    H : [..., N, K] complex; power : scalar or [..., K] (P_k, linear, > 0); noise_var : scalar or [...]
    (sigma^2 per receive antenna, linear; SNR = P / sigma^2 per device); importance : [D] (w_d > 0, any
    scale); method, seed, design_kwargs : passed to `design_aircomp`.

    Output
    ------
    TaskOrientedDesign; the mean over d of |b_{d,k}|^2 is at most P_k (1 + 1e-6).
    """
    split, ratio = power_split(importance)
    nv = check_noise_var(noise_var, tf.float64).numpy()
    nv_eff = nv * ratio
    base = design_aircomp(H, power, nv_eff, method, seed=seed, **design_kwargs)
    root = np.sqrt(split)
    a = base.a[..., None, :] / root[:, None]
    b = base.b[..., None, :] * root[:, None]
    e = dimension_mse(np.asarray(H), base.a, base.b, nv, split)
    w = split ** 2                                       # proportional to the importances
    return TaskOrientedDesign(a=a, b=b, power_split=split, noise_var_eff=nv_eff, dimension_mse=e,
                              weighted_mse=np.sum(e * w, axis=-1) / w.sum(), base=base)
