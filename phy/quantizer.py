"""Uniform scalar quantiser of real payloads to bits (the digital baseline's source coder)."""

import tensorflow as tf
from sionna.phy import Object

from deft6g.checks import check_count
from deft6g.rng import tf_rng


class Quantizer(Object):
    r"""Uniform q-bit quantiser over each payload's own range [min, max] (sent as side information).

    Nearest rounding has error variance :math:`\Delta^2/12` with :math:`\Delta = (hi - lo)/(2^q - 1)`;
    stochastic rounding is unbiased.

    Parameters
    ----------
    num_bits : int
        q, bits per real (1..24)
    stochastic : bool
        Unbiased stochastic rounding (from the library RNG) instead of nearest
    precision : None (default) | "single" | "double"
        Sionna's convention: the dtype of payloads, ranges and bits

    Example
    -------
    >>> q = Quantizer(8)
    >>> bits, lo, hi = q.quantize(x)          # x [..., L] -> bits [..., 8 L]
    >>> x_hat = q.dequantize(bits, lo, hi)    # |x_hat - x| <= (hi - lo) / 510
    """

    def __init__(self, num_bits, stochastic=False, precision=None):
        super().__init__(precision=precision)
        self.num_bits = check_count(num_bits, "num_bits")
        if self.num_bits > 24:
            raise ValueError(f"`num_bits` must be <= 24, got {num_bits}")
        self.stochastic = bool(stochastic)
        self._levels = float(2 ** self.num_bits - 1)
        self._weights = tf.constant([2.0 ** (self.num_bits - 1 - i) for i in range(self.num_bits)], self.rdtype)

    def quantize(self, x):
        """Quantise each payload over its own range.

        Input
        -----
        x : [..., L], tf.float
            Payloads

        Output
        ------
        bits : [..., L q], tf.float (the quantiser's precision)
            0/1, q bits per real, most significant bit first
        lo, hi : [...], tf.float
            Each payload's minimum and maximum, the side information `dequantize` needs
        """
        x = tf.cast(x, self.rdtype)
        lo, hi = tf.reduce_min(x, axis=-1), tf.reduce_max(x, axis=-1)
        span = tf.maximum(hi - lo, tf.cast(1e-30, self.rdtype))[..., None]
        u = (x - lo[..., None]) / span * self._levels
        if self.stochastic:
            u = tf.floor(u + tf_rng().uniform(tf.shape(u), dtype=self.rdtype))
        else:
            u = tf.round(u)
        ints = tf.cast(tf.clip_by_value(u, 0.0, self._levels), tf.int32)
        shifts = tf.range(self.num_bits - 1, -1, -1, dtype=tf.int32)
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(ints[..., None], shifts), 1)
        return tf.reshape(tf.cast(bits, self.rdtype), tf.concat([tf.shape(x)[:-1], [-1]], 0)), lo, hi

    def dequantize(self, bits, lo, hi):
        """Invert `quantize`: the reals at the quantisation levels the bits name.

        Input
        -----
        bits : [..., L q], float or int
            0/1, most significant bit first
        lo, hi : [...], tf.float
            The payloads' ranges from `quantize`

        Output
        ------
        x_hat : [..., L], tf.float (the quantiser's precision)
        """
        groups = tf.reshape(tf.cast(bits, self.rdtype), tf.concat([tf.shape(bits)[:-1], [-1, self.num_bits]], 0))
        ints = tf.reduce_sum(groups * self._weights, axis=-1)
        lo, hi = tf.cast(lo, self.rdtype), tf.cast(hi, self.rdtype)
        return lo[..., None] + ints / self._levels * (hi - lo)[..., None]
