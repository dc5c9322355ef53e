"""Multi-user MIMO reception at the server: linear detection (Sionna's ZF / LMMSE equalisers) and its SINR."""

import numpy as np
import tensorflow as tf
from sionna.phy.mimo import lmmse_equalizer, zf_equalizer

DETECTORS = ("lmmse", "zf")
"""Multi-user MIMO detectors: linear MMSE and zero forcing."""


def equalize(y, h, noise_var, detector="lmmse", precision=None):
    r"""Detect S streams from N antennas with Sionna's `lmmse_equalizer` (interference whitened) or `zf_equalizer`.

    The post-detection SINR of unit-energy symbols is 1 / no_eff:
    LMMSE :math:`1/[(I + H^H H/\sigma^2)^{-1}]_{kk} - 1`, ZF :math:`1/(\sigma^2 [(H^H H)^{-1}]_{kk})`.

    Input
    -----
    y : [..., N], tf.complex
        Received samples
    h : [..., N, S], tf.complex
        Channels with each stream's transmit amplitude folded in (batch dimensions broadcast against y's,
        so one h serves many symbols)
    noise_var : float or tf.float
        Noise variance per antenna, linear, > 0
    detector : "lmmse" (default) | "zf"
        ZF needs S <= N
    precision : None (default) | "single" | "double"

    Output
    ------
    x_hat : [..., S], tf.complex
        Unbiased symbol estimates
    no_eff : [..., S], tf.float
        The variance of their error
    """
    if detector not in DETECTORS:
        raise ValueError(f"`detector` must be one of {DETECTORS}, got {detector!r}")
    n = h.shape[-2]
    nv = noise_var if isinstance(noise_var, tf.Tensor) else tf.constant(noise_var, h.dtype.real_dtype)
    s = tf.cast(nv, h.dtype) * tf.eye(n, dtype=h.dtype)
    if detector == "lmmse":
        return lmmse_equalizer(y, h, s, whiten_interference=True, precision=precision)
    return zf_equalizer(y, h, s, precision=precision)


def mismatched_sinr(h, h_est, noise_var, detector="lmmse", design_noise_var=None):
    r"""Post-detection SINR of S streams when the linear detector is built from an estimate and meets the true
    channel: W = (\hat H \hat H^H + \sigma^2 I)^{-1} \hat H (LMMSE) or \hat H (\hat H^H \hat H)^{-1} (ZF), G = W^H H,

    .. math:: \mathrm{SINR}_k = rac{|G_{kk}|^2}{\sum_{j 
e k} |G_{kj}|^2 + \sigma^2 \|w_k\|^2}

    (scale-free, so it holds for the unbiased equalisers of `equalize`; with h_est = h it is
    `post_detection_sinr`).

    Input
    -----
    h, h_est : [..., N, S], complex NumPy -- true channels and the estimate the detector uses
    noise_var : float -- per antenna, linear, > 0
    detector : "lmmse" | "zf"
    design_noise_var : None | float -- the noise variance the LMMSE filter assumes (default `noise_var`; a
        robust detector adds the estimation error's power to it)

    Output
    ------
    sinr : [..., S], np.float64 -- linear
    """
    if detector not in DETECTORS:
        raise ValueError(f"`detector` must be one of {DETECTORS}, got {detector!r}")
    h, he = np.asarray(h, np.complex128), np.asarray(h_est, np.complex128)
    if h.shape != he.shape:
        raise ValueError(f"`h_est` must have the shape of `h` {h.shape}, got {he.shape}")
    he_h = np.conj(np.swapaxes(he, -1, -2))
    if detector == "lmmse":
        assumed = noise_var if design_noise_var is None else design_noise_var
        w = np.linalg.solve(he @ he_h + assumed * np.eye(h.shape[-2]), he)
    else:
        w = he @ np.linalg.inv(he_h @ he)
    g = np.conj(np.swapaxes(w, -1, -2)) @ h                                        # [..., S, S]
    power = np.abs(g) ** 2
    signal = np.diagonal(power, axis1=-2, axis2=-1)
    noise = noise_var * np.sum(np.abs(w) ** 2, axis=-2)
    return signal / (power.sum(-1) - signal + noise)


def post_detection_sinr(h, noise_var, detector="lmmse", precision=None):
    """Post-detection SINR of the S streams of h (see `equalize`).

    Input
    -----
    h : [..., N, S], tf.complex; noise_var : float (linear, per antenna); detector : "lmmse" | "zf";
    precision : None | "single" | "double"

    Output
    ------
    sinr : [..., S], tf.float -- linear
    """
    h = tf.convert_to_tensor(h)
    _, no_eff = equalize(tf.zeros(tf.shape(h)[:-1], h.dtype), h, noise_var, detector, precision)
    return 1.0 / no_eff


def balanced_groups(num_devices, num_groups):
    """Split devices 0..K-1 into `num_groups` contiguous groups whose sizes differ by at most one."""
    return np.array_split(np.arange(num_devices), num_groups)


def channel_aware_groups(h, num_groups):
    r"""Split the K devices of each realisation into G groups that keep devices with correlated channels apart.

    Greedy correlation-based grouping (in the spirit of the semi-orthogonal user selection of Yoo and
    Goldsmith, IEEE JSAC 2006): the devices are visited in decreasing channel energy
    :math:`\sum_f \|h_{f,k}\|^2`, and each joins the group, among those not yet full, whose members it is least
    correlated with: the smallest :math:`\max_{j \in g} \rho^2_{kj}`, with the squared normalised correlation
    averaged over subcarriers,

    .. math::
        \rho^2_{kj} = \frac{1}{F} \sum_f \frac{|h_{f,k}^H h_{f,j}|^2}{\|h_{f,k}\|^2 \|h_{f,j}\|^2}

    (an empty group costs 0; ties go to the lowest group index). Group g has the size of
    `balanced_groups(K, G)[g]` (sizes differ by at most one, larger groups first), so only the membership depends
    on the channel. Two devices at :math:`\rho^2` share a group at a zero-forcing SINR loss of
    :math:`1 - \rho^2` each.

    Input
    -----
    h : [B, F, N, K], complex NumPy
        Channels (transmit amplitudes folded in; F = 1 for flat fading)
    num_groups : int
        G, between 1 and K

    Output
    ------
    groups : list of G [B, S_g], np.int64
        The device indices of group g in each realisation, in increasing order
    """
    h = np.asarray(h)
    if h.ndim != 4 or not np.iscomplexobj(h):
        raise ValueError(f"`h` must be a complex [B, F, N, K] array, got dtype {h.dtype} and shape {h.shape}")
    n_real, k = h.shape[0], h.shape[-1]
    if not (isinstance(num_groups, (int, np.integer)) and 1 <= num_groups <= k):
        raise ValueError(f"`num_groups` must be an integer between 1 and K = {k}, got {num_groups!r}")
    sizes = np.array([len(g) for g in balanced_groups(k, num_groups)])
    gram = np.einsum("bfnk,bfnj->bfkj", h.conj(), h)
    energy = np.real(np.einsum("bfkk->bfk", gram))                                  # [B, F, K]
    scale = np.maximum(energy[..., :, None] * energy[..., None, :], np.finfo(float).tiny)
    rho2 = np.mean(np.abs(gram) ** 2 / scale, axis=1)                               # [B, K, K]
    order = np.argsort(-energy.sum(1), axis=-1, kind="stable")                      # [B, K], strongest first
    group = np.full((n_real, k), -1)
    free = np.tile(sizes, (n_real, 1))                                              # [B, G]
    rows = np.arange(n_real)
    for d in order.T:
        member = group[..., None] == np.arange(num_groups)                          # [B, K, G]
        cost = np.max(np.where(member, rho2[rows, d][..., None], 0.0), axis=1)      # [B, G]
        g = np.argmin(np.where(free > 0, cost, np.inf), axis=-1)
        group[rows, d] = g
        free[rows, g] -= 1
    by_group = np.argsort(group, axis=-1, kind="stable")                            # [B, K], group by group
    return np.split(by_group, np.cumsum(sizes)[:-1], axis=-1)
