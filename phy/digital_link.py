"""Digital point-to-point link: quantise -> CRC + 5G LDPC -> QAM -> SIMO channel -> combine -> decode -> CRC."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sionna.phy import Block

from deft6g.checks import as_tensor
from .digital_uplink import DigitalUplink
from .error_rates import ErrorRates


@dataclass
class LinkResult(ErrorRates):
    """What a digital transmission delivered and cost.

    Parameters
    ----------
    x_hat : [..., L], tf.float
        Dequantised payloads, 0 where not delivered
    valid : [..., L], tf.bool
        The entry's blocks and the header passed their CRC
    bit_errors : int
        Payload-bit errors before the CRC
    bits : int
        Payload bits transmitted
    block_errors : int
        CRC failures
    blocks : int
        Blocks transmitted
    channel_uses : int
        Symbols spent per link

    `ber` (bit_errors / bits) and `bler` (block_errors / blocks) are 0 when nothing was sent (`ErrorRates`).
    """
    EMPTY_BER = EMPTY_BLER = 0.0

    x_hat: tf.Tensor
    valid: tf.Tensor
    bit_errors: int
    bits: int
    block_errors: int
    blocks: int
    channel_uses: int


class DigitalLink(Block):
    r"""Send real payloads over a single-antenna-transmitter, N-antenna-receiver link with a fixed MCS.

    The one-device case of `DigitalUplink` (bit-true): the payload and its 64-bit range header are
    quantised (`Quantizer`), cut into CRC24A-protected LDPC blocks (`BlockCodec`: k - 24 payload bits,
    n coded bits; `code_rate=None` sends uncoded bits), mapped to unit-energy Gray QAM, sent with power P
    through h, combined by Sionna's LMMSE equaliser (for one stream the MRC direction, post-combining
    noise :math:`\sigma^2 / (P\|h\|^2)`), demapped, decoded and CRC-checked. With OFDM channels symbol i
    uses subcarrier i mod F.

    Parameters: num_bits, stochastic_rounding (quantiser); num_bits_per_symbol m; code_rate None | (0, 1);
    codeword_length n (a multiple of m); num_iter (belief-propagation iterations).

    Input
    -----
    x : [..., L] float; h : [..., N] or [..., F, N] complex; noise_var : float > 0 (per receive antenna);
    power : float (transmit power P, linear; SNR = P / noise_var)

    Output
    ------
    LinkResult

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> link = phy.DigitalLink(num_bits=8, num_bits_per_symbol=4, code_rate=0.5)      # 16-QAM, R = 1/2
    >>> h = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=1)(2, seed=0)[..., 0]   # [B = 2, N = 4]
    >>> x = np.random.default_rng(0).normal(size=(2, 1000)).astype(np.float32)        # [B, L]
    >>> res = link(x, h, noise_var=0.01)                                               # SNR 20 dB
    >>> res.bler, res.channel_uses      # ceil((64 + 8 x 1000) / 576) = 14 blocks of 300 symbols
    (0.0, 4200)
    """

    def __init__(self, num_bits=8, num_bits_per_symbol=4, code_rate=0.5, codeword_length=1200,
                 stochastic_rounding=False, num_iter=20, precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        self.uplink = DigitalUplink(num_bits, (num_bits_per_symbol, code_rate), streams=1, link="bits",
                                    codeword_length=codeword_length, num_iter=num_iter,
                                    stochastic_rounding=stochastic_rounding, precision=precision)
        self.quantizer = self.uplink.quantizer

    def num_blocks(self, num_reals):
        """Blocks for `num_reals` reals: ceil((64 + q L) / (k - 24))."""
        return int(self.uplink.blocks(num_reals))

    def channel_uses(self, num_reals):
        """Symbols one link spends on `num_reals` reals."""
        return int(self.uplink.symbols(num_reals))

    def call(self, x, h, noise_var, power=1.0):
        x = as_tensor(x, "x", min_rank=1)
        h = as_tensor(h, "h", min_rank=1)
        lead = x.shape[:-1].as_list()
        ofdm = h.shape.rank == x.shape.rank + 1
        flat_x = tf.reshape(x, [-1, 1, x.shape[-1]])
        flat_h = tf.reshape(h, [-1] + h.shape[-2 if ofdm else -1:].as_list())[..., None]
        res = self.uplink(flat_x, flat_h, noise_var, power)
        return LinkResult(x_hat=tf.reshape(res.x_hat, lead + [-1]), valid=tf.reshape(res.valid, lead + [-1]),
                          bit_errors=res.bit_errors, bits=res.bits, block_errors=res.block_errors,
                          blocks=res.blocks, channel_uses=int(np.max(res.channel_uses)))
