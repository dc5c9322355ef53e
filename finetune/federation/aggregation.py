"""How K devices' update vectors reach the server: ideal averaging, MIMO AirComp, digital orthogonal access, or
one-bit over-the-air aggregation (OBDA, a majority vote of signs).

Every aggregator maps updates [K, L] (float32, one row per device) and FedAvg weights [K] (w_k >= 0, summing
to 1; None: equal), optionally with the devices' indices [K] among the aggregator's (partial participation:
the radio aggregators use those devices' channels and send K pilots), to an estimate of their weighted mean
sum_k w_k u_k [L] (OBDA: a scaled sign of it) and reports the round's aggregation MSE (mean squared error per entry against the true weighted mean) and channel uses.
SNR = P / sigma^2 per device (P = 1, noise variance per receive antenna), in dB.

Every radio round is counted whole (docs/design.md §8): the server estimates the channel from tau = K orthogonal
pilots per subcarrier sent at the link's SNR (`PilotCsi`, LMMSE with each device's large-scale gain as its prior,
`FadingChannel.large_scale_gain`: the server knows these slowly varying averages; the design, the MCS choice and
the detection use the estimate, the MCS choices and the detection also its per-device error variance), AirComp's per-device statistics travel up through the digital link (`ControlLink`: whole blocks,
the MCS the SINR supports, CRC; a device whose statistics fail is dropped for the round and the FedAvg weights
renormalised over the rest), and the downlink messages (AirComp's and OBDA's per-device transmit factors, who
stays silent; digital's MCS and group grants) go down at `downlink_snr_db` (default: the uplink's) in their own
column; a device that misses its downlink message stays silent. `genie=True` gives the labelled genie: perfect
CSI (or the explicit `csi_error` model), free side information and downlink.
"""

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from deft6g.optim import design_aircomp, select_devices, truncated_inversion
from deft6g.phy import DROP_MODELS, FACTOR_BITS, FLAT_MODELS, GRANT_BITS, MCS_TABLE, STATS_BITS, AirCompUplink, ControlLink, \
    DigitalUplink, FadingChannel, OBDAUplink, PilotCsi, aircomp_channel_uses, imperfect_csi, noise_var, pilot_channel_uses
from deft6g.rng import derive_seed


@dataclass
class Aggregate:
    """mean [L] float32: the server's estimate of the devices' mean update; agg_mse: per-entry MSE against
    the true mean; channel_uses: uplink symbols spent this round (payload + pilots + side information);
    devices: how many devices were heard; per_device [K, L] | None: each device's update as the server
    received it (None when the link delivers only the sum, as AirComp does); payload_uses, pilot_uses,
    side_info_uses: the parts of channel_uses; downlink_uses: the server's downlink symbols (not in
    channel_uses); energy [K] | None: each device's transmit energy this round [P x channel uses]; nmse:
    ||mean - true||^2 / ||true||^2 (NaN when the true mean is 0); participants [K] bool | None: the devices
    the server aggregated (dropped ones: outage, failed side information)."""
    mean: np.ndarray
    agg_mse: float
    channel_uses: int
    devices: int
    per_device: np.ndarray = None
    payload_uses: int = 0
    pilot_uses: int = 0
    side_info_uses: int = 0
    downlink_uses: int = 0
    energy: np.ndarray = None
    nmse: float = float("nan")
    participants: np.ndarray = None


def _nmse(mean, true):
    energy = float(np.sum(np.square(true)))
    return float(np.sum(np.square(mean - true)) / energy) if energy > 0 else float("nan")


def _renormalised(w, keep):
    """FedAvg weights over the devices in `keep` [K] bool (zeros elsewhere; all zero when none is kept)."""
    w = np.where(keep, w, 0.0)
    return w / w.sum() if w.sum() > 0 else w


def _check_updates(updates, num_devices=None):
    u = np.asarray(updates, np.float32)
    if u.ndim != 2 or not np.all(np.isfinite(u)):
        raise ValueError(f"`updates` must be a finite [K, L] array, got shape {u.shape}")
    if num_devices is not None and u.shape[0] != num_devices:
        raise ValueError(f"`updates` has {u.shape[0]} rows, the aggregator serves {num_devices} devices")
    return u


def fedavg_weights(weights, num_devices):
    """Validated FedAvg weights [K] float64 (None: 1/K each)."""
    if weights is None:
        return np.full(num_devices, 1.0 / num_devices)
    w = np.asarray(weights, np.float64)
    if w.shape != (num_devices,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-5):
        raise ValueError(f"`weights` must be {num_devices} non-negative numbers summing to 1, got {weights!r}")
    return w


class IdealAggregator:
    """Noise-free FedAvg: the weighted mean, no channel."""
    name = "ideal"

    def __call__(self, updates, round_index, weights=None, devices=None):
        u = _check_updates(updates)
        w = fedavg_weights(weights, u.shape[0])
        return Aggregate((w @ u.astype(np.float64)).astype(np.float32), 0.0, 0, int(np.count_nonzero(w)), per_device=u,
                         nmse=0.0, participants=w > 0)


class NoisyAggregator:
    """The control of "does accuracy follow the aggregation error alone?": the ideal weighted mean plus white
    Gaussian noise of normalised MSE `nmse` (per entry, variance nmse ||true||^2 / L), e.g. the NMSE AirComp
    measured at its lowest SNR; no channel, no channel uses. Seeded per round."""
    name = "noisy"

    def __init__(self, nmse, seed=0):
        if isinstance(nmse, bool) or not np.isscalar(nmse) or not np.isfinite(nmse) or nmse < 0:
            raise ValueError(f"`nmse` must be a finite number >= 0, got {nmse!r}")
        self.nmse, self.seed = float(nmse), int(seed)

    def __call__(self, updates, round_index, weights=None, devices=None):
        u = _check_updates(updates)
        w = fedavg_weights(weights, u.shape[0])
        true = w @ u.astype(np.float64)
        rng = np.random.default_rng(derive_seed(self.seed, round_index))
        mean = true + rng.normal(0.0, np.sqrt(self.nmse * np.sum(true ** 2) / true.size), true.shape)
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - true) ** 2)), 0, int(np.count_nonzero(w)),
                         nmse=_nmse(mean, true), participants=w > 0)


# The draws of one radio round, each from its own sub-stream derive_seed(seed, round, ROUND_STREAMS.index(name)).
ROUND_STREAMS = ("channel", "pilots", "design", "uplink", "side_info", "downlink")


class RoundChannel(NamedTuple):
    """A radio round's channel as drawn and as the server estimates it (`_RadioAggregator.round_channel`)."""
    H: np.ndarray               # the true channel [N, k] (flat) or [F, N, k] (OFDM) of the round's devices
    H_est: np.ndarray           # the server's estimate, same shape (the truth for a genie)
    pilot_uses: int             # uplink channel uses of the pilots (0 for a genie)
    error_var: object           # the estimate's per-entry error variance: float, or [k] float64 per device


class _RadioAggregator:
    """A fresh channel per round (`FadingChannel`; with a drop model and `keep_drop` the devices persist and
    only the small-scale fading is redrawn), its estimate from pilots (or the genie's), and the control link
    that carries side information and downlink messages (module docstring)."""

    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", seed=0, genie=False, num_pilots=None,
                 downlink_snr_db=None, csi_error=0.0, **channel_kwargs):
        if not np.isfinite(snr_db):
            raise ValueError(f"`snr_db` must be finite, got {snr_db}")
        if not csi_error >= 0:
            raise ValueError(f"`csi_error` must be >= 0, got {csi_error}")
        if csi_error and not genie:
            raise ValueError("`csi_error` (an explicit CSI error variance) needs `genie`=True; without it the CSI "
                             "comes from pilots at the link's SNR")
        self.num_devices, self.snr_db, self.seed = num_devices, float(snr_db), int(seed)
        self.noise_var = noise_var(self.snr_db)
        self.genie, self.csi_error = bool(genie), float(csi_error)
        self._own_pilots = num_pilots is None            # then tau = the round's devices
        self.num_pilots = num_devices if num_pilots is None else num_pilots
        if isinstance(self.num_pilots, bool) or not isinstance(self.num_pilots, int) or self.num_pilots < num_devices:
            raise ValueError(f"`num_pilots` must be an integer >= K = {num_devices} (orthogonal pilots), got "
                             f"{num_pilots!r}")
        self.downlink_snr_db = self.snr_db if downlink_snr_db is None else float(downlink_snr_db)
        if not np.isfinite(self.downlink_snr_db):
            raise ValueError(f"`downlink_snr_db` must be finite, got {downlink_snr_db!r}")
        self.channel = FadingChannel(channel, num_rx_ant, num_devices, **channel_kwargs)
        self.control = ControlLink()

    def round_seed(self, round_index, stream):
        """The seed of round `round_index`'s draw `stream` (one of ROUND_STREAMS):
        derive_seed(aggregator seed, round_index, the stream's position)."""
        if stream not in ROUND_STREAMS:
            raise ValueError(f"`stream` must be one of {ROUND_STREAMS}, got {stream!r}")
        return derive_seed(self.seed, round_index, ROUND_STREAMS.index(stream))

    def draw_channel(self, round_index):
        """One channel per round: [N, K] (flat) or [F, N, K] (OFDM). A kept drop is placed once, from the
        aggregator's seed."""
        if getattr(self.channel, "keep_drop", False) and self.channel.last_drop is None:
            self.channel.redrop(1, seed=derive_seed(self.seed))
        return self.channel(1, seed=self.round_seed(round_index, "channel"))[0].numpy()

    def _tau(self, k):
        """Pilot symbols per device in a round of k devices."""
        return k if self._own_pilots else self.num_pilots

    def _devices(self, devices):
        """The round's device indices [k] (None: all K), checked."""
        devices = np.arange(self.num_devices) if devices is None else np.asarray(devices)
        if (devices.ndim != 1 or devices.dtype.kind not in "iu" or len(np.unique(devices)) != len(devices)
                or not np.all((devices >= 0) & (devices < self.num_devices))):
            raise ValueError(f"`devices` must be distinct indices in [0, {self.num_devices}), got {devices!r}")
        return devices

    def round_channel(self, round_index, devices=None):
        """What round `round_index` of `devices` (indices [k]; None: all K) draws and the server learns of it:
        RoundChannel(H [..., N, k] (the columns of `devices`), the estimate, pilot channel uses, the estimate's
        per-entry error variance (float, or [k] per device)). The same round gives the same draw."""
        devices = self._devices(devices)
        H = self.draw_channel(round_index)[..., devices]
        return RoundChannel(H, *self._estimate(H, self.round_seed(round_index, "pilots"), devices))

    def _round(self, updates, round_index, weights, devices=None):
        """What every radio round starts from: (updates [k, L] float32, FedAvg weights [k]) + `round_channel`."""
        devices = self._devices(devices)
        u = _check_updates(updates, len(devices))
        return (u, fedavg_weights(weights, u.shape[0])) + tuple(self.round_channel(round_index, devices))

    def _estimate(self, H, seed, devices):
        """(H_est, pilot channel uses, per-entry error variance: float (genie) or [k] per device): LMMSE from
        pilots at the link's SNR with the `devices`' large-scale gains of this round's draw as their prior, or
        the genie's (perfect, or the explicit `csi_error` model) without pilots."""
        if self.genie:
            return (imperfect_csi(H, self.csi_error, seed=seed) if self.csi_error else H), 0, self.csi_error
        tau = self._tau(H.shape[-1])
        prior = self.channel.large_scale_gain                    # [K], or [1, K] for a drop (one per round)
        H_est, error_var = PilotCsi(tau, prior.reshape(-1)[devices])(H, self.snr_db, seed=seed)
        uses = pilot_channel_uses(tau, H.shape[0] if H.ndim == 3 else 1)
        return np.asarray(H_est), uses, np.asarray(error_var, np.float64)

    def _send(self, num_bits, H, H_est, error_var, snr_db, active, seed):
        """(delivered [K] bool, channel uses, uses per device [K]) of a control message to or from the `active`
        devices, the MCS chosen robustly to the estimate's `error_var` (float or [K]); the genie delivers
        everything for free."""
        if self.genie:
            return active.copy(), 0, np.zeros(len(active), np.int64)
        res = self.control(num_bits, H, H_est, snr_db, active=active, seed=seed, error_var=error_var)
        return res.delivered, res.channel_uses, res.uses


class AirCompAggregator(_RadioAggregator):
    """MIMO AirComp: per round a channel, its estimate from pilots, each device's statistics (mean, std: 64
    bits) up through the control link (a device whose statistics fail is dropped and the weights renormalised
    over the rest), a and b designed over the remaining devices by `design_aircomp` from the estimate (per
    subcarrier for TDL/CDL/drops, the payload spread over subcarriers), optional device selection down to
    `mse_target` (per-entry MSE of the mean of the selected devices' standardised payloads, `select_devices`),
    each device's transmit factor down (a device that misses it stays silent, while the server still counts
    it), then the superposed payload; the server de-normalises (`AirCompUplink`). Energy per device: pilots,
    side information and ceil(L/2) payload symbols at |b_k c_k / c_max|^2 (mean over subcarriers).

    Admission (truncation by the large-scale gain): a device whose mean SNR, `snr_db` + 10 log10 of its large-scale
    gain (the prior the server keeps from long-term averages), is below `admit_snr_db` stays silent that round: it
    sends pilots but no statistics and no payload, and the FedAvg weights are renormalised over the admitted
    devices (its update is missing from the aggregate, which the NMSE counts). Aligned AirComp is limited by its
    weakest device, so this trades a missing update for a smaller noise floor; None admits every device."""
    name = "aircomp"

    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", method="sdr", csi_error=0.0,
                 select=False, mse_target=None, seed=0, genie=False, num_pilots=None, downlink_snr_db=None,
                 admit_snr_db=None, **channel_kwargs):
        super().__init__(num_devices, num_rx_ant, snr_db, channel, seed, genie, num_pilots, downlink_snr_db,
                         csi_error, **channel_kwargs)
        if select and (mse_target is None or mse_target <= 0):
            raise ValueError("device selection needs a positive `mse_target`")
        if admit_snr_db is not None and (isinstance(admit_snr_db, bool)
                                         or not isinstance(admit_snr_db, (int, float, np.integer, np.floating))
                                         or not np.isfinite(admit_snr_db)):
            raise ValueError(f"`admit_snr_db` must be a finite number [dB] or None, got {admit_snr_db!r}")
        self.method, self.select, self.mse_target = method, bool(select), mse_target
        self.admit_snr_db = None if admit_snr_db is None else float(admit_snr_db)
        self.uplink = AirCompUplink()

    def admitted(self, devices=None):
        """[k] bool: which of `devices` (None: all) have a mean SNR of at least `admit_snr_db` in the current
        draw (every device when `admit_snr_db` is None)."""
        devices = np.arange(self.num_devices) if devices is None else np.asarray(devices)
        if self.admit_snr_db is None:
            return np.ones(len(devices), bool)
        gain = np.asarray(self.channel.large_scale_gain, np.float64).reshape(-1)[devices]
        return self.snr_db + 10.0 * np.log10(gain) >= self.admit_snr_db

    def __call__(self, updates, round_index, weights=None, devices=None):
        u, fed_w, H, H_est, pilot_uses, error_var = self._round(updates, round_index, weights, devices)
        stream = functools.partial(self.round_seed, round_index)
        k, n_real = u.shape
        sending = (fed_w > 0) & self.admitted(devices)
        stats_ok, side_uses, side_per_device = self._send(STATS_BITS, H, H_est, error_var, self.snr_db, sending,
                                                          stream("side_info"))
        w = _renormalised(fed_w, stats_ok)
        f = H.shape[0] if H.ndim == 3 else 1
        payload_uses = aircomp_channel_uses(n_real, num_subcarriers=f)
        true = fed_w @ u.astype(np.float64)
        energy = (self._tau(k) if not self.genie else 0) + side_per_device.astype(np.float64)
        down_uses, heard = 0, np.zeros(k, bool)
        if not np.any(w > 0):                                    # nobody's statistics arrived: no update
            mean = np.zeros(n_real)
        else:
            kept = np.flatnonzero(w > 0)
            b = np.zeros(H.shape[:-2] + (k,), complex)
            if self.select:
                if H.ndim != 2:
                    raise ValueError("device selection is implemented for flat channels (one H per round)")
                sel = select_devices(H_est[:, kept], 1.0, self.noise_var, self.mse_target, seed=stream("design"))
                a, b[kept] = sel.design.a, sel.design.b
                w = _renormalised(w, np.isin(np.arange(k), kept[sel.selected]))
            else:
                d = design_aircomp(H_est[..., kept], 1.0, self.noise_var, self.method, seed=stream("design"))
                a, b[..., kept] = d.a, d.b
            told, down_uses, _ = self._send(FACTOR_BITS, H, H_est, error_var, self.downlink_snr_db, w > 0,
                                            stream("downlink"))
            b[..., ~told] = 0.0                                   # no factor received: the device stays silent
            heard = (w > 0) & told
            x = _spread(u, H).astype(np.float32)
            est = self.uplink(x, H, a, b, self.noise_var, weights=w.astype(np.float32), seed=stream("uplink"),
                              over_subcarriers=H.ndim == 3).numpy()
            mean = est.reshape(-1)[:n_real]                       # OFDM: [F, chunk] back to payload order
            c = w * u.std(axis=1)
            scale = c / c.max() if c.max() > 0 else c
            energy += payload_uses * np.mean(np.abs(b.reshape(-1, k)) ** 2, axis=0) * scale ** 2
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - true) ** 2)),
                         int(payload_uses + pilot_uses + side_uses), int(np.count_nonzero(heard)),
                         payload_uses=int(payload_uses), pilot_uses=int(pilot_uses), side_info_uses=int(side_uses),
                         downlink_uses=int(down_uses), energy=energy, nmse=_nmse(mean, true), participants=w > 0)


def _spread(u, H):
    """Updates [K, L] as the uplink sends them: [K, L] on a flat channel, [F, K, ceil(L/F)] (zero-padded) when H
    is [F, N, K] (OFDM: the payload spread over the F subcarriers)."""
    if H.ndim == 2:
        return u
    k, n_real = u.shape
    f = H.shape[0]
    chunk = int(np.ceil(n_real / f))
    return np.pad(u, [(0, 0), (0, f * chunk - n_real)]).reshape(k, f, chunk).transpose(1, 0, 2)


class OBDAAggregator(_RadioAggregator):
    """One-bit over-the-air aggregation (OBDA, Zhu et al. IEEE TWC 2021; `deft6g.phy.OBDAUplink`): signSGD with
    majority vote over the AirComp channel. Per round a fresh channel; truncated channel inversion
    (`deft6g.optim.truncated_inversion`, peak power P = 1) designed from a possibly imperfect estimate
    (`csi_error` variance): receive direction u = the normalised MRC direction (1 for N = 1), devices whose
    effective gain |u^H h_k|^2 is below `threshold` stay silent, the others pre-equalise to arrive aligned
    (per subcarrier on TDL/CDL channels, the payload spread over subcarriers as for AirComp). Each heard
    device sends the signs of its update (sign(0) = 0: nothing sent), the server takes the sign of the
    received sum, and the estimate is `mean = server_lr * vote` (vote in {-1, 0, +1}, 0 on an exact tie:
    the entry is not updated).

    The vote is unweighted (one device, one vote, as in signSGD with majority vote): FedAvg `weights` only
    decide who votes (a device of weight 0 stays silent) and the reference of `agg_mse`, the per-entry MSE
    against the true weighted mean. OBDA's estimate is biased by design (a scaled sign, not the mean), so
    its agg_mse does not vanish at high SNR; compare schemes by accuracy and channel uses.
    Channel uses: ceil(L/2) per round on a flat channel (`aircomp_channel_uses(L)`, F ceil(ceil(L/F)/2) on
    F subcarriers); signs need no side information. `devices`: how many devices were heard.

    `threshold` (g_th >= 0 on |u^H h_k|^2, linear; 0 inverts every channel) and `server_lr` (> 0, the step
    size of the sign update) are chosen on validation by the study. Pilots are counted in channel_uses and
    each voter's transmit factor (or "stay silent") goes down in the downlink column; a voter that misses it
    stays silent.
    """
    name = "obda"

    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", threshold=0.1, server_lr=1e-3,
                 csi_error=0.0, seed=0, genie=False, num_pilots=None, downlink_snr_db=None, **channel_kwargs):
        super().__init__(num_devices, num_rx_ant, snr_db, channel, seed, genie, num_pilots, downlink_snr_db,
                         csi_error, **channel_kwargs)
        if isinstance(threshold, bool) or not np.isscalar(threshold) or not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"`threshold` must be a finite number >= 0 (linear gain), got {threshold!r}")
        if isinstance(server_lr, bool) or not np.isscalar(server_lr) or not np.isfinite(server_lr) or server_lr <= 0:
            raise ValueError(f"`server_lr` must be a finite number > 0, got {server_lr!r}")
        self.threshold, self.server_lr = float(threshold), float(server_lr)
        self.uplink = OBDAUplink()

    def __call__(self, updates, round_index, weights=None, devices=None):
        u, fed_w, H, H_est, pilot_uses, error_var = self._round(updates, round_index, weights, devices)
        stream = functools.partial(self.round_seed, round_index)
        k, n_real = u.shape
        voters = fed_w > 0
        d = truncated_inversion(H_est[..., voters], 1.0, self.noise_var, self.threshold)
        a, b = d.a, np.zeros(H.shape[:-2] + (k,), complex)
        b[..., voters] = d.b
        told, down_uses, _ = self._send(FACTOR_BITS, H, H_est, error_var, self.downlink_snr_db, voters,
                                        stream("downlink"))
        b[..., ~told] = 0.0                                       # no factor received: the device stays silent
        res = self.uplink(_spread(u, H).astype(np.float32), H, a, b, self.noise_var, seed=stream("uplink"))
        mean = self.server_lr * res.vote.numpy().reshape(-1)[:n_real]
        true = fed_w @ u.astype(np.float64)
        heard = res.transmitted.numpy().reshape(-1, k).any(axis=0)
        payload_uses = aircomp_channel_uses(n_real, num_subcarriers=H.shape[0] if H.ndim == 3 else 1)
        energy = (0 if self.genie else self._tau(k)) + res.energy.numpy().reshape(-1, k).sum(axis=0)
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - true) ** 2)), int(payload_uses + pilot_uses),
                         int(np.count_nonzero(heard)), payload_uses=int(payload_uses), pilot_uses=int(pilot_uses),
                         downlink_uses=int(down_uses), energy=energy, nmse=_nmse(mean, true), participants=heard)


class DigitalAggregator(_RadioAggregator):
    """The fair digital baseline (`DigitalUplink`): each device quantises its update (`num_bits` per real);
    the server's N antennas receive up to N devices at once (multi-user MIMO, `detector` "lmmse" or "zf",
    the number of orthogonal groups chosen per round, `streams="auto"`); each device's MCS adapts to its
    post-detection SINR (`mcs="adaptive"`, NR MCS table 2 with measured 10 %-BLER thresholds;
    `mcs="fixed"` gives every device `num_bits_per_symbol` and `code_rate`; `stochastic_rounding`: unbiased
    rounding, by default for widths below 8 bits); every block carries a CRC24A
    and a failed block is dropped. Each entry of the mean is the FedAvg-weighted mean over the devices that
    delivered it (weights renormalised over them; 0 where no device did); `per_device` holds that mean in
    place of the entries a device lost, so `weights @ per_device == mean`; `devices` counts the devices that
    delivered at least one entry.

    `link`: "abstract" draws each block's CRC failure from its MCS's calibrated BLER at the device's
    SINR (no LDPC decoding; the default for the adaptive table), "bits" simulates every bit with Sionna's
    LDPC decoder (`num_iter` iterations; the default for a fixed MCS outside the table, seconds per round
    at L = 20k on a CPU).

    Pilots are counted in channel_uses (the quantiser ranges already travel in each device's header); each
    scheduled device's grant (MCS and group, 16 bits) goes down in the downlink column, and a device that
    misses it stays silent (its entries are not delivered). Energy per device: pilots and the symbols of its
    stream.
    """
    name = "digital"

    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", num_bits=8, num_bits_per_symbol=2,
                 code_rate=0.5, num_iter=20, seed=0, *, mcs="adaptive", detector="lmmse", streams="auto",
                 link=None, stochastic_rounding=None, genie=False, num_pilots=None, downlink_snr_db=None,
                 csi_error=0.0, **channel_kwargs):
        super().__init__(num_devices, num_rx_ant, snr_db, channel, seed, genie, num_pilots, downlink_snr_db,
                         csi_error, **channel_kwargs)
        if mcs not in ("adaptive", "fixed"):
            raise ValueError(f"`mcs` must be 'adaptive' or 'fixed', got {mcs!r}")
        fixed = (num_bits_per_symbol, code_rate)
        in_table = mcs == "adaptive" or any(e.num_bits_per_symbol == fixed[0] and code_rate is not None
                                            and abs(e.code_rate - code_rate) < 1e-6 for e in MCS_TABLE)
        stochastic = num_bits < 8 if stochastic_rounding is None else bool(stochastic_rounding)
        self.uplink = DigitalUplink(num_bits, "adaptive" if mcs == "adaptive" else fixed, detector, streams,
                                    link or ("abstract" if in_table else "bits"), num_iter=num_iter,
                                    stochastic_rounding=stochastic)

    def __call__(self, updates, round_index, weights=None, devices=None):
        u, w, H, H_est, pilot_uses, error_var = self._round(updates, round_index, weights, devices)
        stream = functools.partial(self.round_seed, round_index)
        k, n_real = u.shape
        res = self.uplink(u, H, self.noise_var, 1.0, seed=stream("uplink"), H_est=H_est, error_var=error_var)
        mcs = np.asarray(res.mcs)
        told, down_uses, _ = self._send(GRANT_BITS, H, H_est, error_var, self.downlink_snr_db, mcs >= 0,
                                        stream("downlink"))
        x_hat, valid = res.x_hat.numpy().astype(np.float64), res.valid.numpy() & told[:, None]
        wv = w[:, None] * valid
        heard = wv.sum(0)
        mean = np.where(heard > 0, (wv * x_hat).sum(0) / np.where(heard > 0, heard, 1.0), 0.0)
        per_device = np.where(valid, x_hat, mean).astype(np.float32)
        true = w @ u.astype(np.float64)
        sent = np.where((mcs >= 0) & told, self.uplink.symbols(n_real, np.maximum(mcs, 0)), 0)
        energy = (0 if self.genie else self._tau(k)) + sent.astype(np.float64)
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - true) ** 2)),
                         int(res.channel_uses) + int(pilot_uses), int(valid.any(axis=1).sum()), per_device=per_device,
                         payload_uses=int(res.channel_uses), pilot_uses=int(pilot_uses), downlink_uses=int(down_uses),
                         energy=energy, nmse=_nmse(mean, true), participants=valid.any(axis=1))


SCHEMES = ("ideal", "noisy", "aircomp", "digital", "obda")
"""The aggregation schemes `make_aggregator` builds."""


def make_aggregator(scheme, num_devices, num_rx_ant=1, snr_db=0.0, seed=0, channel=None, aircomp=None,
                    digital=None, obda=None, link=None, noisy=None):
    """The aggregator of `scheme` ("ideal", "noisy", "aircomp", "digital" or "obda") for `num_devices` devices
    and a server with `num_rx_ant` antennas at `snr_db` (P / sigma^2 per device, dB). channel: keyword
    arguments of the channel (model, num_subcarriers for the OFDM models, keep_drop for the drop models);
    link: keyword arguments every radio scheme takes (genie, num_pilots, downlink_snr_db); aircomp / digital /
    obda: keyword arguments of AirCompAggregator / DigitalAggregator / OBDAAggregator (method, csi_error,
    select, mse_target / num_bits, ... / threshold, server_lr, csi_error); noisy: of NoisyAggregator (nmse)."""
    if scheme not in SCHEMES:
        raise ValueError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "ideal":
        return IdealAggregator()
    if scheme == "noisy":
        return NoisyAggregator(seed=seed, **(noisy or {}))
    channel = {**(channel or {}), **(link or {})}
    model = channel.pop("model", "rayleigh")
    if model in FLAT_MODELS:
        channel.pop("num_subcarriers", None)
    if model not in DROP_MODELS:
        channel.pop("keep_drop", None)
    if scheme == "aircomp":
        return AirCompAggregator(num_devices, num_rx_ant, snr_db, model, seed=seed, **(aircomp or {}), **channel)
    if scheme == "obda":
        return OBDAAggregator(num_devices, num_rx_ant, snr_db, model, seed=seed, **(obda or {}), **channel)
    return DigitalAggregator(num_devices, num_rx_ant, snr_db, model, seed=seed, **(digital or {}), **channel)
