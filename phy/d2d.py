"""Device-to-device (D2D) link: one device sends a payload (e.g. a learned prompt) to another."""

import tensorflow as tf
from sionna.phy import Block

from .channels import FadingChannel
from .digital_link import DigitalLink


class D2DLink(Block):
    r"""A digital D2D link over a fresh channel per realisation, built from `FadingChannel` and `DigitalLink`.

    Parameters
    ----------
    model : str -- channel model (see `CHANNEL_MODELS`); num_rx_ant : int -- receiving device's antennas
    channel_kwargs : dict -- extra `FadingChannel` arguments; the other keywords go to `DigitalLink`

    Input
    -----
    x : [B, L] float (B independent transmissions); noise_var : scalar; power : scalar (SNR = P / noise_var);
    seed : None | int

    Output
    ------
    LinkResult (x_hat [B, L]; valid [B, L]: the entry's CRC-protected blocks decoded -- entries that are not
    valid are 0 and must not be used; BER, BLER, channel uses of one transmission)
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
