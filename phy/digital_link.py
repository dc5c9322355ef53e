"""Digital point-to-point link: quantise -> 5G LDPC -> QAM -> SIMO channel -> MRC -> demap -> decode."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sionna.phy import Block
from sionna.phy.channel import AWGN
from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
from sionna.phy.mapping import Demapper, Mapper

from .checks import as_tensor, check_count, check_nonnegative
from .quantizer import Quantizer


@dataclass
class LinkResult:
    """What a digital transmission delivered and cost.

    x_hat [..., L] float: dequantised payloads; bit_errors / bits: info-bit errors and count;
    block_errors / blocks: codeword errors and count; channel_uses: symbols spent per link (int).
    """
    x_hat: tf.Tensor
    bit_errors: int
    bits: int
    block_errors: int
    blocks: int
    channel_uses: int

    @property
    def ber(self):
        return self.bit_errors / max(self.bits, 1)

    @property
    def bler(self):
        return self.block_errors / max(self.blocks, 1)


class DigitalLink(Block):
    r"""Send real payloads bit-exactly over a single-antenna-transmitter, N-antenna-receiver link.

    Each payload is quantised (`Quantizer`), cut into LDPC codewords (Sionna `LDPC5GEncoder`, k info
    bits, n coded bits; `code_rate=None` sends uncoded bits), mapped to unit-energy Gray QAM (Sionna
    `Mapper`), sent with power P through h, received with the noise of Sionna `AWGN`, combined by MRC
    (:math:`\hat x = h^H y / (\sqrt{P}\|h\|^2)`, the LMMSE direction for one stream) and demapped with the
    post-combining noise :math:`\sigma^2 / (P\|h\|^2)` (Sionna `Demapper`, "app"), decoded and
    dequantised. With OFDM channels symbol i uses subcarrier i mod F (frequency-first fill).

    Parameters
    ----------
    num_bits : int -- quantiser bits per real; stochastic_rounding : bool
    num_bits_per_symbol : int -- QAM order m (2: QPSK, 4: 16-QAM, ...)
    code_rate : None | float in (0, 1) -- LDPC rate; codeword_length : int n (multiple of m)
    num_iter : int -- belief-propagation iterations

    Input
    -----
    x : [..., L] float; h : [..., N] or [..., F, N] complex; noise_var : scalar (per receive antenna);
    power : scalar or [...] (transmit power P, linear; SNR = P / noise_var)

    Output
    ------
    LinkResult
    """

    def __init__(self, num_bits=8, num_bits_per_symbol=4, code_rate=0.5, codeword_length=1200,
                 stochastic_rounding=False, num_iter=20, precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        self.quantizer = Quantizer(num_bits, stochastic_rounding)
        self.m = check_count(num_bits_per_symbol, "num_bits_per_symbol")
        self.n = check_count(codeword_length, "codeword_length")
        if self.n % self.m:
            raise ValueError(f"`codeword_length` must be a multiple of num_bits_per_symbol={self.m}, got {self.n}")
        if code_rate is None:
            self.k, self._encoder, self._decoder = self.n, None, None
        else:
            if not 0.0 < code_rate < 1.0:
                raise ValueError(f"`code_rate` must lie in (0, 1) or be None, got {code_rate!r}")
            self.k = int(round(code_rate * self.n))
            self._encoder = LDPC5GEncoder(self.k, self.n, precision=self.precision)
            self._decoder = LDPC5GDecoder(self._encoder, hard_out=True, num_iter=num_iter, precision=self.precision)
        self._mapper = Mapper("qam", self.m, precision=self.precision)
        self._demapper = Demapper("app", "qam", self.m, hard_out=self._encoder is None, precision=self.precision)
        self._awgn = AWGN(precision=self.precision)

    def channel_uses(self, num_reals):
        """Symbols one link spends on `num_reals` reals."""
        return self.num_blocks(num_reals) * self.n // self.m

    def num_blocks(self, num_reals):
        return int(np.ceil(num_reals * self.quantizer.num_bits / self.k))

    def call(self, x, h, noise_var, power=1.0):
        x = tf.cast(as_tensor(x, "x", min_rank=1), self.rdtype)
        h = tf.cast(as_tensor(h, "h", min_rank=1), self.cdtype)
        nv = check_nonnegative(tf.cast(as_tensor(noise_var, "noise_var"), self.rdtype), "noise_var")
        p = check_nonnegative(tf.cast(as_tensor(power, "power"), self.rdtype), "power")
        num_reals = x.shape[-1]
        lead = tf.shape(x)[:-1]
        bits, lo, hi = self.quantizer.quantize(x)                              # [..., L q]
        blocks = self.num_blocks(num_reals)
        pad = blocks * self.k - bits.shape[-1]
        info = tf.reshape(tf.pad(bits, [[0, 0]] * (bits.shape.rank - 1) + [[0, pad]]),
                          tf.concat([lead, [blocks, self.k]], 0))
        code = info if self._encoder is None else self._encoder(info)           # [..., C, n]
        symbols = self._mapper(tf.reshape(code, tf.concat([lead, [-1]], 0)))    # [..., S]
        num_sym = symbols.shape[-1]
        gains = self._per_symbol_channel(h, num_sym, h.shape.rank == x.shape.rank + 1)                          # [..., S, N]
        p_c = tf.cast(p, self.cdtype)[..., None, None] if p.shape.rank else tf.cast(p, self.cdtype)
        y = self._awgn(gains * tf.sqrt(p_c) * symbols[..., None], nv)          # [..., S, N]
        energy = tf.reduce_sum(tf.abs(gains) ** 2, axis=-1)                     # [..., S]
        p_r = p[..., None] if p.shape.rank else p
        x_eq = tf.reduce_sum(tf.math.conj(gains) * y, axis=-1) / tf.cast(tf.sqrt(p_r) * energy, self.cdtype)
        no_eff = nv / (p_r * energy)
        soft = self._demapper(x_eq, no_eff)
        rx_code = tf.reshape(soft, tf.concat([lead, [blocks, self.n]], 0))
        rx_info = rx_code if self._decoder is None else self._decoder(rx_code)
        rx_bits = tf.reshape(rx_info, tf.concat([lead, [-1]], 0))[..., :bits.shape[-1]]
        x_hat = self.quantizer.dequantize(rx_bits, lo, hi)
        errors = tf.not_equal(rx_info, info)
        bit_err = tf.not_equal(rx_bits, bits)
        return LinkResult(x_hat=x_hat,
                          bit_errors=int(tf.reduce_sum(tf.cast(bit_err, tf.int64))),
                          bits=int(tf.size(bits)),
                          block_errors=int(tf.reduce_sum(tf.cast(tf.reduce_any(errors, axis=-1), tf.int64))),
                          blocks=int(tf.size(info) // self.k),
                          channel_uses=num_sym)

    @staticmethod
    def _per_symbol_channel(h, num_sym, ofdm):
        """h [..., N] or [..., F, N] -> [..., S, N]: symbol i on subcarrier i mod F."""
        if ofdm:
            reps = int(np.ceil(num_sym / h.shape[-2]))
            return tf.tile(h, [1] * (h.shape.rank - 2) + [reps, 1])[..., :num_sym, :]
        return h[..., None, :]
