"""Real device payloads <-> unit-variance complex channel symbols (DESIGN.md §3)."""

import tensorflow as tf


def standardise(x, eps=1e-12):
    """Standardise each device's payload over its last axis.

    Input: x [..., K, L] float. Output: (z, mean, std) with z [..., K, L] zero-mean, unit-variance per
    device, mean and std [..., K] (the side information sent once, noise-free).
    """
    mean = tf.reduce_mean(x, axis=-1)
    std = tf.sqrt(tf.reduce_mean((x - mean[..., None]) ** 2, axis=-1) + eps)
    return (x - mean[..., None]) / std[..., None], mean, std


def pack(z):
    """Pack reals two per complex symbol with unit variance: [..., L] float -> [..., ceil(L/2)] complex.

    s_i = (z_{2i} + j z_{2i+1}) / sqrt(2); an odd L is padded with one zero.
    """
    n = z.shape[-1]
    if n % 2:
        z = tf.concat([z, tf.zeros_like(z[..., :1])], axis=-1)
    pairs = tf.reshape(z, tf.concat([tf.shape(z)[:-1], [-1, 2]], axis=0))
    pairs = pairs / tf.sqrt(tf.constant(2.0, z.dtype))
    return tf.complex(pairs[..., 0], pairs[..., 1])


def unpack(s, num_reals):
    """Inverse of `pack`: [..., M] complex -> [..., num_reals] float."""
    s = s * tf.cast(tf.sqrt(2.0), s.dtype)
    pairs = tf.stack([tf.math.real(s), tf.math.imag(s)], axis=-1)
    flat = tf.reshape(pairs, tf.concat([tf.shape(s)[:-1], [-1]], axis=0))
    return flat[..., :num_reals]
