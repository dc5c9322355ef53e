"""Multi-user MIMO reception at the server: linear detection (Sionna's ZF / LMMSE equalisers) and its SINR."""

import numpy as np
import tensorflow as tf
from sionna.phy.mimo import lmmse_equalizer, zf_equalizer

DETECTORS = ("lmmse", "zf")


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
