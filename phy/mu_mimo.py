"""Multi-user MIMO reception at the server: linear detection (Sionna's ZF / LMMSE equalisers) and its SINR."""

import numpy as np
import tensorflow as tf
from sionna.phy.mimo import lmmse_equalizer, zf_equalizer

DETECTORS = ("lmmse", "zf")


def equalize(y, h, noise_var, detector="lmmse", precision=None):
    r"""Detect S streams from N antennas with Sionna's `lmmse_equalizer` (interference whitened) or `zf_equalizer`.

    Input: y [..., N] complex received samples; h [..., N, S] complex channels with each stream's transmit
    amplitude folded in (batch dimensions broadcast against y's, so one h serves many symbols);
    noise_var > 0, the noise variance per antenna (linear); detector "lmmse" | "zf" (ZF needs S <= N).
    Output: x_hat [..., S] unbiased symbol estimates and no_eff [..., S] the variance of their error, so that
    the post-detection SINR of unit-energy symbols is 1 / no_eff:
    LMMSE :math:`1/[(I + H^H H/\sigma^2)^{-1}]_{kk} - 1`, ZF :math:`1/(\sigma^2 [(H^H H)^{-1}]_{kk})`.
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
    """Post-detection SINR [..., S] (linear) of the S streams of h [..., N, S] (see `equalize`)."""
    h = tf.convert_to_tensor(h)
    _, no_eff = equalize(tf.zeros(tf.shape(h)[:-1], h.dtype), h, noise_var, detector, precision)
    return 1.0 / no_eff


def balanced_groups(num_devices, num_groups):
    """Split devices 0..K-1 into `num_groups` contiguous groups whose sizes differ by at most one."""
    return np.array_split(np.arange(num_devices), num_groups)
