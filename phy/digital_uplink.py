"""Digital multi-device uplink: every device alone on its own resource (TDMA/OFDMA), summed at the server."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sionna.phy import Block

from .checks import as_tensor, check_dim
from .digital_link import DigitalLink
from .rng import reseed

ACCESS_SCHEMES = ("tdma", "ofdma")


@dataclass
class UplinkResult:
    """f_hat [..., L]: the server's sum; x_hat [..., K, L]: per-device payloads; agg_mse: mean squared error
    of f_hat per real entry; ber, bler; channel_uses: symbols of all K devices together (orthogonal)."""
    f_hat: tf.Tensor
    x_hat: tf.Tensor
    agg_mse: float
    ber: float
    bler: float
    channel_uses: int


class DigitalUplink(Block):
    r"""The digital baseline of AirComp: K devices send quantised, LDPC-coded QAM payloads one at a time.

    Access "tdma": device k uses all F subcarriers in its own slot; "ofdma": device k uses subcarriers
    k, k+K, ... (flat channels make both the same). Each device's link is a `DigitalLink`; the server
    dequantises and sums. Channel uses are K times one link's, the latency to compare with AirComp's
    ceil(L/2).

    Parameters: access ("tdma" | "ofdma"); the `DigitalLink` parameters as keyword arguments.

    Input
    -----
    x : [..., K, L] float; H : [..., N, K] or [..., F, N, K] complex; noise_var : scalar (linear, per antenna);
    power : scalar or [K] (P_k, linear); seed : None | int

    Output
    ------
    UplinkResult
    """

    def __init__(self, access="tdma", precision=None, **link_kwargs):
        super().__init__(precision=precision)
        if access not in ACCESS_SCHEMES:
            raise ValueError(f"`access` must be one of {ACCESS_SCHEMES}, got {access!r}")
        self.access = access
        self.link = DigitalLink(precision=precision, **link_kwargs)

    def channel_uses(self, num_devices, num_reals):
        return num_devices * self.link.channel_uses(num_reals)

    def call(self, x, H, noise_var, power=1.0, seed=None):
        x = tf.cast(as_tensor(x, "x", min_rank=2), self.rdtype)
        H = tf.cast(as_tensor(H, "H", min_rank=2), self.cdtype)
        n_dev = x.shape[-2]
        check_dim(H, -1, n_dev, "H", "K (devices in x)")
        ofdm = H.shape.rank == x.shape.rank + 1
        h = tf.experimental.numpy.moveaxis(H, -1, -3 if ofdm else -2)          # [..., K, (F,) N]
        if ofdm and self.access == "ofdma":
            f = H.shape[-3]
            idx = (np.arange(n_dev)[:, None] + n_dev * np.arange(max(1, f // n_dev))[None, :]) % f
            pick = tf.one_hot(idx, f, dtype=self.cdtype)                        # [K, F', F]
            h = tf.einsum("...kfn,kgf->...kgn", h, pick)                         # [..., K, F', N]
        p = tf.cast(as_tensor(power, "power"), self.rdtype)
        if p.shape.rank:
            check_dim(p, -1, n_dev, "power", "K (devices in x)")
        reseed(seed)
        res = self.link(x, h, noise_var, p)
        f_hat = tf.reduce_sum(res.x_hat, axis=-2)
        agg_mse = float(tf.reduce_mean((f_hat - tf.reduce_sum(x, axis=-2)) ** 2))
        return UplinkResult(f_hat=f_hat, x_hat=res.x_hat, agg_mse=agg_mse, ber=res.ber, bler=res.bler,
                            channel_uses=n_dev * res.channel_uses)
