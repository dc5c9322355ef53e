"""Monte-Carlo AirComp error: the empirical MSE of a design over drawn payloads and noise."""

import numpy as np
import tensorflow as tf

from .aircomp import effective_gains
from deft6g.rng import tf_rng


def complex_normal(shape, dtype=tf.complex64):
    """i.i.d. CN(0, 1) samples from the library RNG.

    Input
    -----
    shape : [...] int, list or tensor
    dtype : tf.complex64 (default) | tf.complex128

    Output
    ------
    z : shape, dtype -- unit variance per complex sample (1/2 per real dimension)
    """
    xy = tf_rng().normal(tf.concat([shape, [2]], 0), stddev=np.sqrt(0.5), dtype=dtype.real_dtype)
    return tf.complex(xy[..., 0], xy[..., 1])


def empirical_mse(H, a, b, noise_var, num_symbols):
    r"""Empirical :math:`\frac1L\sum_l |\hat f_l - f_l|^2` over L fresh CN(0,1) payload vectors per realisation.

    The receiver noise enters as :math:`a^H n \sim \mathcal{CN}(0, \sigma^2\|a\|^2)`, the exact law of the
    beamformed noise, drawn once per symbol instead of once per antenna (N times fewer draws).
    Input
    -----
    H : [B, N, K], tf.complex
        Channels (validated; one complex dtype for H, a, b)
    a : [B, N], tf.complex
    b : [B, K], tf.complex
    noise_var : scalar, float
        :math:`\sigma^2`, linear, per receive antenna
    num_symbols : int
        L payload vectors per realisation

    Output
    ------
    mse : [B], tf.float
        An unbiased estimate of `aircomp_mse(H, a, b, noise_var)`
    """
    batch, n_dev = tf.shape(H)[0], tf.shape(H)[-1]
    s = complex_normal(tf.stack([batch, n_dev, num_symbols]), H.dtype)        # [B, K, L]
    misalign = effective_gains(H, a) * b - 1                                   # [B, K]
    signal_err = tf.linalg.matvec(s, misalign, transpose_a=True)              # [B, L]
    noise_std = tf.sqrt(tf.cast(noise_var, H.dtype.real_dtype) * tf.reduce_sum(tf.abs(a) ** 2, axis=-1))
    noise = complex_normal(tf.stack([batch, num_symbols]), H.dtype) * tf.cast(noise_std, H.dtype)[:, None]
    return tf.reduce_mean(tf.abs(signal_err + noise) ** 2, axis=-1)
