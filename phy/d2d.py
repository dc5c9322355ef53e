"""Device-to-device (D2D) link: one device sends a payload (e.g. a learned prompt) to another."""

import tensorflow as tf
from sionna.phy import Block

from .channels import FadingChannel
from .digital_link import DigitalLink


class D2DLink(Block):
    r"""A digital D2D link over a fresh channel per realisation, built from `FadingChannel` and `DigitalLink`.

    Each of the B transmissions draws its own channel h from the single-antenna sender to the N-antenna
    receiving device (`FadingChannel` with K = 1) and goes through `DigitalLink`: quantiser, CRC24A + 5G LDPC
    blocks, Gray QAM sent with power P, LMMSE (MRC) combining with post-combining noise
    :math:`\sigma^2 / (P\|h\|^2)`, decoding and CRC check. OFDM models (TDL/CDL) give h a subcarrier axis;
    symbol i then uses subcarrier i mod F.

    Parameters
    ----------
    model : str
        Channel model, one of `CHANNEL_MODELS` (default "rayleigh")
    num_rx_ant : int
        N, antennas of the receiving device (default 1)
    channel_kwargs : None (default) | dict
        Extra `FadingChannel` arguments (e.g. `path_gain_db`, `num_subcarriers`)
    precision : None (default) | "single" | "double"
        Sionna's convention, passed to the channel and the link
    **link_kwargs
        `DigitalLink` arguments: `num_bits` (quantiser bits per real, default 8), `num_bits_per_symbol`
        (default 4), `code_rate` (default 0.5; None: uncoded), `codeword_length` (default 1200),
        `stochastic_rounding`, `num_iter`

    Input
    -----
    x : [B, L], tf.float
        B independent payloads of L reals
    noise_var : float
        :math:`\sigma^2` > 0, linear, per receive antenna (per complex dimension)
    power : float
        P, linear transmit power (default 1); SNR = P / `noise_var`
    seed : None (default) | int
        Re-seeds the library RNG before the channel draw (the noise follows from it)

    Output
    ------
    result : `LinkResult`
        `x_hat` [B, L], tf.float and `valid` [B, L], tf.bool (the entry's CRC-protected blocks decoded; entries
        that are not valid are 0 and must not be used); bit and block errors summed over the B transmissions
        (`ber`, `bler`); `channel_uses`, the symbols of one transmission

    Example
    -------
    >>> import tensorflow as tf
    >>> import deft6g.phy as phy
    >>> link = phy.D2DLink("rayleigh", num_rx_ant=2, num_bits=8, num_bits_per_symbol=2, code_rate=0.5)
    >>> res = link(tf.random.normal([4, 100]), noise_var=0.1, seed=0)      # SNR 10 dB
    >>> res.x_hat.shape, res.channel_uses    # ceil((64 + 8 x 100) / 576) = 2 QPSK blocks of 600 symbols
    (TensorShape([4, 100]), 1200)
    """

    def __init__(self, model="rayleigh", num_rx_ant=1, channel_kwargs=None, precision=None, **link_kwargs):
        super().__init__(precision=precision)
        self.channel = FadingChannel(model, num_rx_ant, 1, precision=precision, **(channel_kwargs or {}))
        self.link = DigitalLink(precision=precision, **link_kwargs)

    def call(self, x, noise_var, power=1.0, seed=None):
        x = tf.convert_to_tensor(x)
        if x.shape.rank != 2:
            raise ValueError(f"`x` must have shape [B, L], got {x.shape.as_list()}")
        H = self.channel(x.shape[0], seed=seed)                                # [B, (F,) N, 1]
        return self.link(x, H[..., 0], noise_var, power)
