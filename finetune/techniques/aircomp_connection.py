r"""Neural connections over the air (DEFT technique 2): the server layer's input sum_m W_m z_m sent by M devices.

Each of M devices holds a payload :math:`x_m \in \mathbb{R}^D` per example (its projection
:math:`W_m z_m`); the server needs :math:`s = \sum_m x_m`. Three connections deliver it for a block of B
examples (one channel realisation per block):

- `IdealConnection`: the noise-free sum (the upper reference).
- `AirCompConnection`: MIMO AirComp (`deft6g.phy.aircomp_estimate`). Per-dimension power normalisation:
  device m sends :math:`\sqrt{p_d}\,(x_{m,d} - \mu_{m,d}) / c_d` with :math:`c_d = \max_m
  \sigma_{m,d}`, so every real entry has variance at most :math:`p_d` (the power split, mean 1); two
  dimensions share one unit-variance complex symbol (`pack`), so an example costs ceil(D/2) channel uses
  with all devices transmitting at once. The server computes :math:`\hat f = a^H y`, unpacks, divides by
  :math:`\sqrt{p_d}`, multiplies by :math:`c_d` and adds :math:`\sum_m \mu_{m,d}`: its error in
  dimension d has variance :math:`c_d^2 (\sum_k |a^H h_k b_k - 1|^2 \rho_{k,d}^2 + \sigma^2\|a\|^2/p_d)`,
  :math:`\rho_{k,d} = \sigma_{k,d}/c_d \le 1` (`aircomp_mse` per dimension when all devices have equal
  spread). Statistics: in training, the batch's (differentiable, like batch normalisation); in
  deployment, the training set's, sent once (2 D reals per device: side information). The design (a, b)
  is `deft6g.optim.design_aircomp` (MSE design, p = 1) or, with `importance`,
  `deft6g.optim.task_oriented_design` (its power split p and the MSE design at the effective noise).
  SNR = P / sigma^2 per device with P = 1. The estimate is differentiable in the payloads.
- `DigitalConnection`: each device quantises its B x D payload and sends it digitally
  (`deft6g.phy.DigitalUplink`: multi-user MIMO groups, adaptive MCS, CRC; dropped blocks are not used);
  the server sums the delivered payloads. Not differentiable: noise-aware training (`train_multiview`) draws
  which entries arrive once for the whole run (`delivered`; with the abstract link they do not depend on the
  payload values), quantises every batch as the devices would and sums what arrived (`deliver`), and passes
  the gradient straight through as if the sum were ideal.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from deft6g.checks import check_count
from deft6g.optim import design_aircomp, power_split, task_oriented_design
from deft6g.phy import (DigitalUplink, FadingChannel, aircomp_channel_uses, aircomp_estimate, noise_var, pack,
                        unpack)
from deft6g.phy.digital_uplink import delivered_sum


def _check_payloads(x, num_devices, width):
    """x [..., B, M, D] (tensor or array) with M = num_devices and D = width, else a ValueError naming `x`."""
    shape = tuple(x.shape)
    if len(shape) < 3 or shape[-2] != num_devices or shape[-1] != width:
        raise ValueError(f"`x` must have shape [..., B, {num_devices} devices, {width} dimensions], got {list(shape)}")


def side_info_channel_uses(reals_per_device, num_devices, bits=32, bits_per_use=1.0):
    """Channel uses of side information sent once: each of `num_devices` devices sends `reals_per_device`
    reals of `bits` bits on its own resource at `bits_per_use` information bits per channel use (the
    convention of `deft6g.phy.aircomp_channel_uses`: float32 at QPSK rate 1/2)."""
    return check_count(num_devices, "num_devices") * int(np.ceil(reals_per_device * bits / bits_per_use))


class IdealConnection:
    """The noise-free sum: x [B, M, D] -> s [B, D]; no channel uses."""
    name = "ideal"

    def __call__(self, x):
        return tf.reduce_sum(x, axis=1)


@dataclass
class ChannelBlocks:
    """Channel realisations and their designs, one per block: H [T, N, M], a [T, N], b [T, M] complex64;
    split [D] float32 (the per-dimension power factors p_d, mean 1); mse [T] (the design's predicted error
    variance of the standardised sum per real entry, averaged over the dimensions: mean_d e_d)."""
    H: np.ndarray
    a: np.ndarray
    b: np.ndarray
    split: np.ndarray
    mse: np.ndarray

    def __len__(self):
        return len(self.H)

    def __getitem__(self, t):
        """(H, a, b, split) of block(s) t (an index or a slice): the arguments of an `AirCompConnection` call."""
        return self.H[t], self.a[t], self.b[t], self.split


def payload_stats(x):
    """Per-dimension normalisation of payloads x [..., B, M, D]: (mean [..., M, D], scale c [..., D] = the
    largest std over the devices), both over the B examples; a dimension constant on every device gets
    scale 1 (its mean alone carries it). Differentiable (TF), without a NaN gradient at std 0."""
    mean = tf.reduce_mean(x, axis=-3)
    var = tf.reduce_mean((x - mean[..., None, :, :]) ** 2, axis=-3)
    std = tf.where(var > 0, tf.sqrt(tf.where(var > 0, var, tf.ones_like(var))), tf.zeros_like(var))
    scale = tf.reduce_max(std, axis=-2)
    return mean, tf.where(scale > 0, scale, tf.ones_like(scale))


class AirCompConnection:
    r"""MIMO AirComp connection of `num_devices` devices' `width`-dim payloads to an N-antenna server.

    Parameters
    ----------
    num_devices : int M; num_rx_ant : int N; width : int D; snr_db : float (P / sigma^2 per device, P = 1)
    method : a `design_aircomp` method ("mmse", "sdr", "zf", ...); channel : a `FadingChannel` flat model
    importance : None | [D] -- per-dimension importance (> 0) for the task-oriented design; None: MSE design

    `draw(num_blocks, seed)` draws channels and designs (`ChannelBlocks`). `connection(x, H, a, b, split,
    stats=None, seed=None)` maps payloads x [..., B, M, D] (float32 or float64) to the server's estimate of
    sum_m x_m, [..., B, D] of x's dtype, one channel realisation per leading index (H [..., N, M],
    a [..., N], b [..., M], split [D]); stats: (mean [M, D], scale [D]) fixed normalisation statistics (e.g.
    `payload_stats` of the training payloads), None: each block's own; seed re-seeds the library RNG
    before the noise (None: continue the stream).
    """
    name = "aircomp"

    def __init__(self, num_devices, num_rx_ant, width, snr_db, method="mmse", channel="rayleigh", importance=None):
        self.num_devices = check_count(num_devices, "num_devices")
        self.num_rx_ant = check_count(num_rx_ant, "num_rx_ant")
        self.width = check_count(width, "width")
        if not np.isfinite(snr_db):
            raise ValueError(f"`snr_db` must be finite, got {snr_db!r}")
        self.snr_db, self.method = float(snr_db), method
        self.noise_var = noise_var(self.snr_db)
        self.channel = FadingChannel(channel, self.num_rx_ant, self.num_devices)
        self.importance = None
        self.set_importance(importance)

    def set_importance(self, importance):
        """Use the task-oriented design with importances [D] (> 0); None: the MSE design."""
        if importance is not None:
            importance = np.asarray(importance, np.float64)
            if importance.shape != (self.width,):
                raise ValueError(f"`importance` must have shape [{self.width}] (one per dimension), "
                                 f"got {list(importance.shape)}")
            power_split(importance)                                        # validates the values
        self.importance = importance

    def draw(self, num_blocks, seed):
        """`num_blocks` fresh channel realisations and their designs -> ChannelBlocks."""
        H = self.channel(check_count(num_blocks, "num_blocks"), seed=seed).numpy().astype(np.complex128)
        if self.importance is None:
            design = design_aircomp(H, 1.0, self.noise_var, self.method, seed=seed)
            split, mse = np.ones(self.width), design.mse
        else:
            task = task_oriented_design(H, 1.0, self.noise_var, self.importance, self.method, seed=seed)
            design, split, mse = task.base, task.power_split, task.dimension_mse.mean(-1)
        c64 = lambda v: np.asarray(v, np.complex64)                     # noqa: E731
        return ChannelBlocks(c64(H), c64(design.a), c64(design.b), split.astype(np.float32), np.asarray(mse))

    def __call__(self, x, H, a, b, split, stats=None, seed=None):
        _check_payloads(x, self.num_devices, self.width)
        x = tf.convert_to_tensor(x)
        if x.dtype not in (tf.float32, tf.float64):
            x = tf.cast(x, tf.float32)
        cdtype = tf.complex128 if x.dtype == tf.float64 else tf.complex64
        mean, scale = payload_stats(x) if stats is None else (tf.cast(v, x.dtype) for v in stats)
        mean, scale = mean[..., None, :, :], scale[..., None, :]                         # broadcast over B
        root = tf.sqrt(tf.cast(split, x.dtype))                                          # [D]
        s = pack((x - mean) / scale[..., None, :] * root)                                # [..., B, M, ceil(D/2)]
        H = tf.cast(H, cdtype)[..., None, :, :]                                          # [..., 1, N, M]
        a, b = (tf.cast(v, cdtype)[..., None, :] for v in (a, b))
        f_hat = aircomp_estimate(s, H, a, b, self.noise_var, seed=seed)                  # [..., B, ceil(D/2)]
        return unpack(f_hat, self.width) / root * scale + tf.reduce_sum(mean, axis=-2)

    def channel_uses(self, num_examples=1):
        """Payload channel uses of `num_examples` examples: ceil(D / 2) each (all devices at once)."""
        return check_count(num_examples, "num_examples") * aircomp_channel_uses(self.width)

    def side_info_reals(self):
        """Reals each device sends once to undo its per-dimension normalisation (mean, std): 2 D."""
        return 2 * self.width


class DigitalConnection:
    """Digital transmission of each device's payloads (`DigitalUplink`: quantiser, multi-user MIMO groups,
    adaptive MCS with CRC; link "abstract" draws block failures from the calibrated BLER, "bits" decodes).

    Parameters: num_devices M, num_rx_ant N, width D, snr_db (P / sigma^2 per device, P = 1), num_bits
    (quantiser bits per real), channel (flat model), link, uplink_kwargs (more `DigitalUplink` options).
    `draw(num_blocks, seed)` -> H [T, N, M]. `connection(x, H, seed)`: x [T, B, M, D] (T blocks of B
    examples) -> (estimate [T, B, D] NumPy, channel uses [T] of all devices, header bits included).
    `delivered(H, num_examples, seed)` and `deliver(x, valid)` split a call into the payload-independent part
    (which entries arrive) and the quantised sum of a block, for training.
    """
    name = "digital"

    def __init__(self, num_devices, num_rx_ant, width, snr_db, num_bits=8, channel="rayleigh", link="abstract",
                 **uplink_kwargs):
        self.num_devices = check_count(num_devices, "num_devices")
        self.width = check_count(width, "width")
        if not np.isfinite(snr_db):
            raise ValueError(f"`snr_db` must be finite, got {snr_db!r}")
        self.noise_var = noise_var(snr_db)
        self.channel = FadingChannel(channel, check_count(num_rx_ant, "num_rx_ant"), self.num_devices)
        self.uplink = DigitalUplink(num_bits=num_bits, link=link, **uplink_kwargs)

    def draw(self, num_blocks, seed):
        return self.channel(check_count(num_blocks, "num_blocks"), seed=seed).numpy()

    def __call__(self, x, H, seed=None):
        x = np.asarray(x, np.float32)
        if x.ndim != 4:
            raise ValueError(f"`x` must have shape [T blocks, B, {self.num_devices}, {self.width}], "
                             f"got {list(x.shape)}")
        _check_payloads(x[0], self.num_devices, self.width)
        t, b = x.shape[:2]
        flat = x.transpose(0, 2, 1, 3).reshape(t, self.num_devices, b * self.width)      # [T, M, B D]
        res = self.uplink(flat, H, self.noise_var, 1.0, seed=seed)
        return res.f_hat.numpy().reshape(t, b, self.width), np.asarray(res.channel_uses)

    def delivered(self, H, num_examples, seed=None):
        """Which payload entries reach the server when every device sends `num_examples` examples per block
        over H [T, N, M] (the call's scheduling, MCS, header and block CRC outcomes with the same `seed`).
        With link "abstract" these do not depend on the payload values. Returns valid [T, B, M, D] bool."""
        if self.uplink.link_model != "abstract":
            raise ValueError(f"`link` must be 'abstract' for `delivered` (with 'bits' the CRC outcomes depend on "
                             f"the payload), got {self.uplink.link_model!r}")
        t, b = len(H), check_count(num_examples, "num_examples")
        zeros = np.zeros((t, self.num_devices, b * self.width), np.float32)
        valid = self.uplink(zeros, H, self.noise_var, 1.0, seed=seed).valid.numpy()
        return valid.reshape(t, self.num_devices, b, self.width).transpose(0, 2, 1, 3)

    def deliver(self, x, valid):
        """The server's sum of one block: x [B, M, D] float32 (tensor or array; graph-safe), each device's B D
        payload quantised over its own range, the entries with valid [B, M, D] (from `delivered`) summed as the
        uplink does (`delivered_sum`). Equals the call's estimate for those outcomes. Returns [B, D] float32."""
        _check_payloads(x, self.num_devices, self.width)
        per_device = lambda t: tf.reshape(tf.transpose(t, [1, 0, 2]), [self.num_devices, -1])   # noqa: E731
        q = self.uplink.quantizer
        x_hat = q.dequantize(*q.quantize(per_device(tf.cast(x, tf.float32))))
        return tf.reshape(delivered_sum(x_hat, per_device(tf.convert_to_tensor(valid, tf.bool))), [-1, self.width])
