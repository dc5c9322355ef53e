r"""Uniform scalar quantiser of real payloads to bits (the digital baseline's source coder), with per-block
ranges and optional error feedback on the device.

A payload of L reals is cut into C = ceil(L / b) blocks of `block_size` b reals (the last one shorter when b
does not divide L; default b = L, one block). Block c is quantised over its own range [lo_c, hi_c] with
:math:`2^q` levels, step :math:`\Delta_c = (hi_c - lo_c) / (2^q - 1)`. Writing an entry as
:math:`x = lo_c + (n + p)\Delta_c` with integer n and fractional position :math:`p \in [0, 1)`, nearest
rounding sends n or n + 1, whichever is closer (error at most :math:`\Delta_c / 2`); stochastic rounding sends
n + 1 with probability p, so :math:`E[\hat x] = x` and :math:`Var[\hat x] = \Delta_c^2 p (1 - p)`.

Side information: each block's (lo_c, hi_c) as two float32, :attr:`Quantizer.RANGE_BITS` = 64 bits per block.
float32 because (i) at the default precision lo and hi are float32 already, so they travel losslessly and the
server rebuilds exactly the grid the device used (error feedback relies on this: the device's residual is the
server's error); (ii) float16 rounds a range end by up to :math:`2^{-11}|lo|`, which exceeds the 16-bit step
:math:`(hi - lo) / 65535` whenever |lo| is not much smaller than the span, and it holds magnitudes under
6.1e-5 (typical LoRA updates) only as subnormals with fewer significant bits; (iii) it is the 64-bit header
the digital uplink already sends per device. The overhead is 64 / (b q) bits per payload bit (6.25 % at
b = 256, q = 4).

Error feedback (`ErrorFeedback`): device k keeps the residual :math:`e_k` (0 at first) and sends
:math:`Q(u_k + e_k)`, then stores :math:`e_k \leftarrow (u_k + e_k) - Q(u_k + e_k)`. Summed over T rounds,
:math:`\sum_t Q_t = \sum_t u_t - e_T`: the accumulated error is the last residual only (at most
:math:`\Delta/2` per entry with nearest rounding), where without feedback it adds up over the rounds.
"""

import tensorflow as tf
from sionna.phy import Object

from deft6g.checks import as_tensor, check_count
from deft6g.rng import tf_rng

MAX_BITS = 16


class Quantizer(Object):
    r"""Uniform q-bit quantiser of each block of a payload over the block's own range [min, max], the range
    sent as side information (see the module docstring).

    Nearest rounding has error at most :math:`\Delta/2` (variance :math:`\Delta^2/12` for uniform fractions)
    with :math:`\Delta = (hi - lo)/(2^q - 1)`; stochastic rounding is unbiased with variance
    :math:`\Delta^2 p (1 - p)` at fractional position p.

    Parameters
    ----------
    num_bits : int
        q, bits per real (1..16)
    stochastic : bool
        Unbiased stochastic rounding (from the library RNG) instead of nearest
    block_size : None (default) | int
        b, reals per range block; None: the whole payload is one block (lo, hi then have no block dimension)
    precision : None (default) | "single" | "double"
        Sionna's convention: the dtype of payloads, ranges and bits

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> x = np.random.default_rng(0).normal(size=(2, 1000)).astype(np.float32)    # [..., L = 1000]
    >>> q = phy.Quantizer(8)
    >>> bits, lo, hi = q.quantize(x)                  # bits [..., 8 L], lo, hi [...]
    >>> bits.shape, lo.shape
    (TensorShape([2, 8000]), TensorShape([2]))
    >>> x_hat = q.dequantize(bits, lo, hi)
    >>> step = (hi - lo)[:, None] / 255
    >>> bool(np.max(np.abs(x_hat - x) / step) <= 0.5)      # nearest rounding: at most half a step, (hi - lo) / 510
    True
    >>> q = phy.Quantizer(4, stochastic=True, block_size=256)
    >>> bits, lo, hi = q.quantize(x)                  # lo, hi [..., ceil(L / 256)]
    >>> lo.shape, q.side_info_bits(1000)              # 64 ceil(L / 256)
    (TensorShape([2, 4]), 256)
    """

    RANGE_BITS = 64                     # one block's (lo, hi) as two float32

    def __init__(self, num_bits, stochastic=False, block_size=None, precision=None):
        super().__init__(precision=precision)
        self.num_bits = check_count(num_bits, "num_bits")
        if self.num_bits > MAX_BITS:
            raise ValueError(f"`num_bits` must be an integer in 1..{MAX_BITS}, got {num_bits!r}")
        self.stochastic = bool(stochastic)
        self.block_size = None if block_size is None else check_count(block_size, "block_size")
        self._levels = float(2 ** self.num_bits - 1)
        self._weights = tf.constant([2.0 ** (self.num_bits - 1 - i) for i in range(self.num_bits)], self.rdtype)

    def num_blocks(self, num_reals):
        """C, range blocks of a payload of `num_reals` reals: ceil(L / b), 1 when `block_size` is None."""
        num_reals = check_count(num_reals, "num_reals")
        return 1 if self.block_size is None else -(-num_reals // self.block_size)

    def side_info_bits(self, num_reals):
        """Side-information bits of a payload of `num_reals` reals: `RANGE_BITS` (two float32) per block."""
        return self.RANGE_BITS * self.num_blocks(num_reals)

    def _per_entry(self, t, num_reals):
        """Per-block values t [..., C] (or [...] for one whole-payload block) -> per entry [..., L]."""
        if self.block_size is None:
            return t[..., None]
        return tf.repeat(t, self.block_size, axis=-1)[..., :num_reals]

    def quantize(self, x):
        """Quantise each block of each payload over its own range.

        Input
        -----
        x : [..., L], tf.float
            Payloads (finite)

        Output
        ------
        bits : [..., L q], tf.float (the quantiser's precision)
            0/1, q bits per real, most significant bit first
        lo, hi : [...] (block_size None) or [..., C], tf.float
            Each block's minimum and maximum, the side information `dequantize` needs
        """
        x = tf.cast(as_tensor(x, "x", min_rank=1), self.rdtype)
        num_reals = tf.shape(x)[-1]
        if self.block_size is None:
            lo, hi = tf.reduce_min(x, axis=-1), tf.reduce_max(x, axis=-1)
        else:
            pad = -num_reals % self.block_size          # the last real repeated: the last block's range is kept
            padded = tf.concat([x, tf.repeat(x[..., -1:], pad, axis=-1)], -1)
            blocks = tf.reshape(padded, tf.concat([tf.shape(x)[:-1], [-1, self.block_size]], 0))
            lo, hi = tf.reduce_min(blocks, axis=-1), tf.reduce_max(blocks, axis=-1)
        span = self._per_entry(tf.maximum(hi - lo, tf.cast(1e-30, self.rdtype)), num_reals)
        u = (x - self._per_entry(lo, num_reals)) / span * self._levels
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
        lo, hi : [...] (block_size None) or [..., C], tf.float
            The blocks' ranges from `quantize`

        Output
        ------
        x_hat : [..., L], tf.float (the quantiser's precision)
        """
        groups = tf.reshape(tf.cast(bits, self.rdtype), tf.concat([tf.shape(bits)[:-1], [-1, self.num_bits]], 0))
        ints = tf.reduce_sum(groups * self._weights, axis=-1)
        lo, hi = tf.cast(lo, self.rdtype), tf.cast(hi, self.rdtype)
        num_reals = tf.shape(ints)[-1]
        return self._per_entry(lo, num_reals) + ints / self._levels * self._per_entry(hi - lo, num_reals)


class ErrorFeedback:
    r"""Error feedback on the devices: quantise :math:`u_k + e_k` and keep the new residual
    :math:`e_k = (u_k + e_k) - Q(u_k + e_k)` (see the module docstring).

    Parameters
    ----------
    quantizer : Quantizer
        The devices' quantiser (its precision is the residual's)

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> u = np.random.default_rng(0).normal(size=(3, 100)).astype(np.float32)      # [K = 3, L = 100]
    >>> ef = phy.ErrorFeedback(phy.Quantizer(4))
    >>> sent = [ef.quantizer.dequantize(*ef.quantize(u)) for _ in range(10)]      # Q(u + e), 10 rounds
    >>> ef.residual.shape                                                          # e [K, L]
    TensorShape([3, 100])
    >>> error = np.sum(sent, axis=0) - 10 * u                      # sum_t Q_t - sum_t u_t = -e_T, not 10 errors
    >>> bool(np.allclose(error, -ef.residual, atol=1e-5))
    True
    >>> ef.reset()                                                 # e = 0 again
    """

    def __init__(self, quantizer):
        if not isinstance(quantizer, Quantizer):
            raise TypeError(f"`quantizer` must be a Quantizer, got {type(quantizer).__name__}")
        self.quantizer = quantizer
        self.residual = None

    def reset(self):
        """Forget every device's residual (the next `quantize` starts from e = 0)."""
        self.residual = None

    def quantize(self, u):
        """Quantise the devices' payloads plus their residuals and store the new residuals.

        Input
        -----
        u : [K, L], tf.float
            One payload per device (the same K and L at every call until `reset`)

        Output
        ------
        bits, lo, hi : as `Quantizer.quantize` of u + e
            bits [K, L q]; lo, hi [K] or [K, C]
        """
        q = self.quantizer
        u = tf.cast(as_tensor(u, "u"), q.rdtype)
        if u.shape.rank != 2:
            raise ValueError(f"`u` must have shape [K, L], got {u.shape.as_list()}")
        if self.residual is not None and u.shape != self.residual.shape:
            raise ValueError(f"`u` must have the residual's shape {self.residual.shape.as_list()} (call reset() to "
                             f"change K or L), got {u.shape.as_list()}")
        v = u if self.residual is None else u + self.residual
        bits, lo, hi = q.quantize(v)
        self.residual = v - q.dequantize(bits, lo, hi)
        return bits, lo, hi
