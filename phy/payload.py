"""Real device payloads <-> unit-variance complex channel symbols (docs/design.md §3)."""

import tensorflow as tf


def standardise(x, over_subcarriers=False):
    """Standardise each device's payload.

    Input
    -----
    x : [..., K, L] or, with `over_subcarriers`, [..., F, K, L], tf.float
        Payloads; statistics per device over L (over all its F x L reals with `over_subcarriers`, so the side
        information is 2 reals per device instead of 2F)
    over_subcarriers : bool

    Output
    ------
    z : shape of x, tf.float
        Zero-mean, unit-variance per device
    mean, std : [..., K] (over_subcarriers: [..., 1, K]), tf.float
        The side information, sent once, noise-free

    No absolute floor is added to the variance, so a payload of any scale (std 1e-7 as well as 1e3) is
    standardised exactly; a constant payload (std 0) gives z = 0 and std = 0 (its mean alone carries it).
    """
    axes = [-3, -1] if over_subcarriers else [-1]
    mean = tf.reduce_mean(x, axis=axes, keepdims=True)
    var = tf.reduce_mean((x - mean) ** 2, axis=axes, keepdims=True)
    safe_std = tf.sqrt(tf.where(var > 0, var, tf.ones_like(var)))          # no NaN gradient at var = 0
    z = (x - mean) / safe_std
    std = tf.where(var > 0, safe_std, tf.zeros_like(var))
    return z, mean[..., 0], std[..., 0]


def pack(z):
    r"""Pack reals two per complex symbol with unit variance: :math:`s_i = (z_{2i} + j z_{2i+1}) / \sqrt2`.

    Input
    -----
    z : [..., L], tf.float
        Standardised reals; an odd L is padded with one zero

    Output
    ------
    s : [..., ceil(L/2)], tf.complex

    Example
    -------
    >>> import tensorflow as tf
    >>> import deft6g.phy as phy
    >>> z = tf.constant([[1.0, -1.0, 0.5]])          # [1, L = 3]: padded to 4 reals, 2 symbols
    >>> s = phy.pack(z)
    >>> s.numpy()                                    # (z_0 + j z_1) / sqrt(2), (z_2 + j 0) / sqrt(2)
    array([[0.70710677-0.70710677j, 0.35355338+0.j        ]], dtype=complex64)
    >>> phy.unpack(s, 3).numpy().round(6)            # == z (up to float32 rounding)
    array([[ 1. , -1. ,  0.5]], dtype=float32)
    """
    n = z.shape[-1]
    if n % 2:
        z = tf.concat([z, tf.zeros_like(z[..., :1])], axis=-1)
    pairs = tf.reshape(z, tf.concat([tf.shape(z)[:-1], [-1, 2]], axis=0))
    pairs = pairs / tf.sqrt(tf.constant(2.0, z.dtype))
    return tf.complex(pairs[..., 0], pairs[..., 1])


def unpack(s, num_reals):
    """Inverse of `pack`.

    Input
    -----
    s : [..., M], tf.complex
    num_reals : int
        L <= 2M, the reals to keep

    Output
    ------
    z : [..., L], tf.float
    """
    s = s * tf.cast(tf.sqrt(2.0), s.dtype)
    pairs = tf.stack([tf.math.real(s), tf.math.imag(s)], axis=-1)
    flat = tf.reshape(pairs, tf.concat([tf.shape(s)[:-1], [-1]], axis=0))
    return flat[..., :num_reals]


def payload_correlation(x):
    r"""Correlation matrix of the devices' standardised payloads, the `payload_cov` of `aircomp_mse`.

    Input
    -----
    x : [..., K, L], tf.float
        Payloads, L >= 2 reals per device

    Output
    ------
    C : [..., K, K], tf.float
        :math:`C_{jk} = \frac1L \sum_l z_{jl} z_{kl}` for the standardised z of `standardise` (unit diagonal; a
        constant payload has a zero row)

    Packing two reals per complex symbol keeps it: E[s_j s_k^*] = C_jk when
    the reals of one device are exchangeable.
    """
    z, _, _ = standardise(x)
    return tf.matmul(z, z, transpose_b=True) / tf.cast(tf.shape(z)[-1], z.dtype)
