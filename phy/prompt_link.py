"""Device-to-device prompt link: a learned prompt sent digitally (quantiser, CRC, 5G LDPC, QAM, ARQ) or analog."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sionna.phy import Block
from sionna.phy.channel import AWGN

from .block_codec import CRC_BITS, BlockCodec
from .channels import FLAT_MODELS, FadingChannel
from .error_rates import ErrorRates, error_rate
from deft6g.checks import as_tensor, check_count, check_noise_var, check_nonnegative
from .payload import pack, standardise, unpack
from .quantizer import Quantizer
from deft6g.rng import reseed

MODES = ("digital", "analog")
FAILURE_POLICIES = ("drop", "keep")


@dataclass
class PromptLinkResult(ErrorRates):
    """What one D2D prompt transmission delivered and cost (B independent prompts).

    Counts are summed over the B prompts; analog transmissions set every count to 0.

    Parameters
    ----------
    x_hat : [B, L], tf.float
        The received prompts (digital: dequantised, dropped entries replaced by `fill`)
    payload_bits : int
        Quantised bits of one prompt, L q (digital; 0 for analog)
    bit_errors : int
        Errors among the delivered info bits (bits of dropped blocks are not delivered)
    bits : int
        Delivered info bits
    block_errors : int
        CRC failures among all codeword transmissions (retransmissions included)
    transmissions : int
        Codeword transmissions (retransmissions included)
    blocks : int
        Distinct codewords (B times per prompt)
    dropped_blocks : int
        Codewords still failing after the last attempt (0 with `on_failure="keep"`)
    dropped_reals : int
        Prompt entries replaced by `fill`
    channel_uses : [B], np.int64
        Symbols each prompt's transmission spent, retransmissions included

    Note
    ----
    The properties `ber` (bit_errors / bits), `bler` (block_errors / transmissions; `ErrorRates`) and `drop_rate`
    (dropped_blocks / blocks) are NaN for analog transmissions.
    """
    BLER_OVER = "transmissions"

    x_hat: tf.Tensor
    payload_bits: int
    bit_errors: int
    bits: int
    block_errors: int
    transmissions: int
    blocks: int
    dropped_blocks: int
    dropped_reals: int
    channel_uses: np.ndarray

    @property
    def drop_rate(self):
        """Fraction of codewords dropped after the last attempt (NaN for analog)."""
        return error_rate(self.dropped_blocks, self.blocks)


class PromptLink(Block):
    r"""Send a real payload (a soft prompt, flattened) from one device to another over a flat fading channel.

    Digital: the payload is quantised (`Quantizer`, q bits per real over its own range [lo, hi], sent once
    as noise-free side information), cut into codewords of :math:`k - 24` info bits and sent by `BlockCodec`
    (CRC24A, 5G LDPC of rate k/n or uncoded, Gray QAM), received by MRC with the post-combining noise
    :math:`\sigma^2 / (P\|h\|^2)` given to the demapper. A codeword whose CRC fails is re-sent (ARQ) over a fresh channel draw, up to
    `max_transmissions` sends in all; one that still fails is dropped (`on_failure="drop"`: its entries
    become `fill`) or used as decoded (`"keep"`). Block fading: one channel per transmission attempt,
    shared by all codewords sent in it.

    Analog: the payload is standardised (mean and std as side information), packed two reals per unit-power
    complex symbol (`pack`, ceil(L/2) channel uses), sent with power P and received by MRC; the per-real
    error variance is :math:`\mathrm{std}^2 \sigma^2 / (P \|h\|^2)`.

    Parameters
    ----------
    mode : "digital" (default) | "analog"
        How the prompt is sent
    num_bits : int
        q, quantiser bits per real, 1..24 (digital; default 8)
    num_bits_per_symbol : int
        m, bits per QAM symbol (2: QPSK, 4: 16-QAM; default 2)
    code_rate : None | float in (0, 1)
        LDPC code rate (default 0.5; None: uncoded)
    codeword_length : int
        n, coded bits per codeword, a multiple of m (default 1200)
    max_transmissions : int
        Sends per codeword, >= 1 (1: no retransmission; default 4)
    on_failure : "drop" (default) | "keep"
        What the receiver does with a codeword that still fails after the last send
    model : "rayleigh" (default) | "correlated"
        Flat-fading channel model (`FadingChannel` with K = 1)
    num_rx_ant : int
        N, antennas of the receiving device (default 1)
    num_iter : int
        LDPC belief-propagation iterations (default 20)
    precision : None (default) | "single" | "double"
        Sionna's convention

    Input
    -----
    x : [B, L], tf.float
        B independent payloads of L reals
    noise_var : float
        :math:`\sigma^2`, linear, per receive antenna (per complex dimension), >= 0; a scalar
    power : float
        P, linear transmit power, >= 0, a scalar (default 1); SNR = P / `noise_var`
    seed : None (default) | int
        Re-seeds the library RNG before the first channel draw
    fill : float | [B, L], tf.float
        What the receiver puts in place of dropped entries (default 0)

    Output
    ------
    result : `PromptLinkResult`
        The received prompts, error counts and channel uses

    Example
    -------
    >>> import tensorflow as tf
    >>> import deft6g.phy as phy
    >>> link = phy.PromptLink("digital", num_bits=8, num_bits_per_symbol=2, code_rate=0.5, num_rx_ant=2)
    >>> res = link(tf.random.normal([4, 100]), noise_var=0.1, seed=0)    # 4 prompts, SNR 10 dB
    >>> res.payload_bits, link.num_blocks(100), link.channel_uses(100)   # 800 bits: 2 x 600 QPSK symbols
    (800, 2, 1200)
    >>> res.x_hat.shape, res.channel_uses.shape
    (TensorShape([4, 100]), (4,))
    >>> phy.PromptLink("analog")(tf.random.normal([4, 100]), 0.1, seed=0).channel_uses    # ceil(100 / 2)
    array([50, 50, 50, 50])
    """

    def __init__(self, mode="digital", num_bits=8, num_bits_per_symbol=2, code_rate=0.5, codeword_length=1200,
                 max_transmissions=4, on_failure="drop", model="rayleigh", num_rx_ant=1, num_iter=20,
                 precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
        if on_failure not in FAILURE_POLICIES:
            raise ValueError(f"`on_failure` must be one of {FAILURE_POLICIES}, got {on_failure!r}")
        if model not in FLAT_MODELS:
            raise ValueError(f"`model` must be a flat-fading model {FLAT_MODELS}, got {model!r}")
        self.mode, self.on_failure = mode, on_failure
        self.max_transmissions = check_count(max_transmissions, "max_transmissions")
        self.channel = FadingChannel(model, check_count(num_rx_ant, "num_rx_ant"), 1, precision=precision)
        self._awgn = AWGN(precision=self.precision)
        self.quantizer = Quantizer(num_bits)
        self.codec = BlockCodec(num_bits_per_symbol, code_rate, codeword_length, num_iter, precision=precision)
        self.k_info, self.crc_bits = self.codec.k_info, CRC_BITS

    def num_blocks(self, num_reals):
        """Codewords one payload of `num_reals` reals needs (digital)."""
        return int(np.ceil(num_reals * self.quantizer.num_bits / self.k_info))

    def channel_uses(self, num_reals):
        """Symbols of one error-free transmission of `num_reals` reals (no retransmission)."""
        if self.mode == "analog":
            return int(np.ceil(num_reals / 2))
        return self.num_blocks(num_reals) * self.codec.symbols_per_block

    def call(self, x, noise_var, power=1.0, seed=None, fill=0.0):
        x = tf.cast(as_tensor(x, "x", min_rank=2), self.rdtype)
        if x.shape.rank != 2:
            raise ValueError(f"`x` must have shape [B, L], got {x.shape.as_list()}")
        nv = check_noise_var(noise_var, self.rdtype)
        p = check_nonnegative(tf.cast(as_tensor(power, "power"), self.rdtype), "power")
        if nv.shape.rank or p.shape.rank:
            raise ValueError(f"`noise_var` and `power` must be scalars, got shapes {nv.shape.as_list()}, "
                             f"{p.shape.as_list()}")
        reseed(seed)
        if self.mode == "analog":
            return self._analog(x, nv, p)
        return self._digital(x, nv, p, fill)

    def _receive(self, symbols, nv, p):
        """One transmission of symbols [B, S] over a fresh channel; MRC output and its noise: ([B, S], [B, S])."""
        h = self.channel(symbols.shape[0])[..., 0]                                   # [B, N]
        sqrt_p = tf.cast(tf.sqrt(p), self.cdtype)
        y = self._awgn(h[:, None, :] * sqrt_p * symbols[..., None], nv)              # [B, S, N]
        energy = tf.reduce_sum(tf.abs(h) ** 2, axis=-1, keepdims=True)               # [B, 1]
        x_eq = tf.reduce_sum(tf.math.conj(h)[:, None, :] * y, -1) / (sqrt_p * tf.cast(energy, self.cdtype))
        return x_eq, tf.broadcast_to(nv / (p * energy), tf.shape(x_eq, tf.int64))

    def _analog(self, x, nv, p):
        z, mean, std = standardise(x)
        s_hat, _ = self._receive(pack(z), nv, p)
        x_hat = unpack(s_hat, x.shape[-1]) * std[:, None] + mean[:, None]
        uses = np.full(x.shape[0], self.channel_uses(x.shape[-1]), np.int64)
        return PromptLinkResult(x_hat, 0, 0, 0, 0, 0, 0, 0, 0, uses)

    def _digital(self, x, nv, p, fill):
        num, q = x.shape
        bits, lo, hi = self.quantizer.quantize(x)                                   # [B, L q]
        nbits = bits.shape[-1]
        c = self.num_blocks(q)
        info = tf.reshape(tf.pad(bits, [[0, 0], [0, c * self.k_info - nbits]]), [num, c, self.k_info])
        symbols = self.codec.encode(info)                                            # [B, C n / m]
        got = tf.zeros_like(info)
        pending = tf.ones([num, c], tf.bool)
        uses, sends, failures = np.zeros(num, np.int64), 0, 0
        for attempt in range(self.max_transmissions):
            x_eq, no_eff = self._receive(symbols, nv, p)
            info_hat, valid = self.codec.decode(x_eq, no_eff)                         # [B, C, k_info], [B, C]
            last = attempt == self.max_transmissions - 1
            take = pending & valid if not (last and self.on_failure == "keep") else pending
            got = tf.where(take[..., None], info_hat, got)
            sent = pending.numpy()
            uses += sent.sum(axis=1) * self.codec.symbols_per_block
            sends += int(sent.sum())
            failures += int(np.sum(sent & ~valid.numpy()))
            pending = pending & ~valid
            if not bool(tf.reduce_any(pending)):
                break
        dropped = pending.numpy() if self.on_failure == "drop" else np.zeros([num, c], bool)
        rx_bits = tf.reshape(got, [num, -1])[:, :nbits]
        x_hat = self.quantizer.dequantize(rx_bits, lo, hi)
        bit_block = np.arange(nbits) // self.k_info                                # block of every bit
        lost_bits = dropped[:, bit_block]                                           # [B, L q]
        lost = lost_bits.reshape(num, q, self.quantizer.num_bits).any(axis=-1)      # [B, L]
        x_hat = tf.where(lost, tf.cast(tf.broadcast_to(fill, x_hat.shape), x_hat.dtype), x_hat)
        errors = (rx_bits.numpy() != bits.numpy()) & ~lost_bits
        return PromptLinkResult(x_hat=x_hat, payload_bits=nbits, bit_errors=int(errors.sum()),
                                bits=int((~lost_bits).sum()), block_errors=failures, transmissions=sends,
                                blocks=num * c, dropped_blocks=int(dropped.sum()), dropped_reals=int(lost.sum()),
                                channel_uses=uses)
