"""How K devices' update vectors reach the server: ideal averaging, MIMO AirComp, digital orthogonal access, or
one-bit over-the-air aggregation (OBDA, a majority vote of signs).

Every aggregator maps updates [K, L] (float32, one row per device) and FedAvg weights [K] (w_k >= 0, summing
to 1; None: equal) to an estimate of their weighted mean sum_k w_k u_k [L] (OBDA: a scaled sign of it) and
reports the round's aggregation MSE (mean squared error per entry against the true weighted mean) and channel uses.
SNR = P / sigma^2 per device (P = 1, noise variance per receive antenna), in dB.
"""

from dataclasses import dataclass

import numpy as np

from deft6g.optim import design_aircomp, select_devices, truncated_inversion
from deft6g.phy import FLAT_MODELS, MCS_TABLE, AirCompUplink, DigitalUplink, FadingChannel, OBDAUplink, \
    aircomp_channel_uses, imperfect_csi


@dataclass
class Aggregate:
    """mean [L] float32: the server's estimate of the devices' mean update; agg_mse: per-entry MSE against
    the true mean; channel_uses: symbols spent this round; devices: how many devices were heard;
    per_device [K, L] | None: each device's update as the server received it (None when the link delivers
    only the sum, as AirComp does)."""
    mean: np.ndarray
    agg_mse: float
    channel_uses: int
    devices: int
    per_device: np.ndarray = None


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

    def __call__(self, updates, round_index, weights=None):
        u = _check_updates(updates)
        w = fedavg_weights(weights, u.shape[0])
        return Aggregate((w @ u.astype(np.float64)).astype(np.float32), 0.0, 0, int(np.count_nonzero(w)), per_device=u)


class _RadioAggregator:
    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", seed=0, **channel_kwargs):
        if not np.isfinite(snr_db):
            raise ValueError(f"`snr_db` must be finite, got {snr_db}")
        self.num_devices, self.snr_db, self.seed = num_devices, float(snr_db), int(seed)
        self.noise_var = 10.0 ** (-self.snr_db / 10.0)
        self.channel = FadingChannel(channel, num_rx_ant, num_devices, **channel_kwargs)

    def _round_seed(self, round_index):
        return (self.seed * 1_000_003 + 7919 * round_index) % (2 ** 31)

    def _draw(self, round_index):
        """One channel per round: [N, K] (flat) or [F, N, K] (OFDM)."""
        return self.channel(1, seed=self._round_seed(round_index))[0].numpy()


class AirCompAggregator(_RadioAggregator):
    """MIMO AirComp: a fresh channel per round, a and b designed per round by `design_aircomp` (per
    subcarrier for TDL/CDL, the payload spread over subcarriers) from a possibly imperfect estimate
    (`csi_error` variance), optional device selection down to `mse_target` (per-entry MSE of the mean of
    the selected devices' standardised payloads, `select_devices`); the server de-normalises (`AirCompUplink`)."""
    name = "aircomp"

    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", method="sdr", csi_error=0.0,
                 select=False, mse_target=None, seed=0, **channel_kwargs):
        super().__init__(num_devices, num_rx_ant, snr_db, channel, seed, **channel_kwargs)
        if select and (mse_target is None or mse_target <= 0):
            raise ValueError("device selection needs a positive `mse_target`")
        if csi_error < 0:
            raise ValueError(f"`csi_error` must be >= 0, got {csi_error}")
        self.method, self.csi_error, self.select, self.mse_target = method, float(csi_error), bool(select), mse_target
        self.uplink = AirCompUplink()

    def __call__(self, updates, round_index, weights=None):
        u = _check_updates(updates, self.num_devices)
        k, n_real = u.shape
        fed_w = fedavg_weights(weights, k)
        seed = self._round_seed(round_index)
        H = self._draw(round_index)
        H_est = imperfect_csi(H, self.csi_error, seed=seed + 1) if self.csi_error else H
        weights = fed_w
        if self.select:
            if H.ndim != 2:
                raise ValueError("device selection is implemented for flat channels (one H per round)")
            sel = select_devices(H_est, 1.0, self.noise_var, self.mse_target, seed=seed)
            a, b = sel.design.a, sel.design.b
            weights = np.zeros(k)
            weights[sel.selected] = fed_w[sel.selected] / fed_w[sel.selected].sum()
        else:
            d = design_aircomp(H_est, 1.0, self.noise_var, self.method, seed=seed)
            a, b = d.a, d.b
        est = self.uplink(_spread(u, H).astype(np.float32), H, a, b, self.noise_var,
                          weights=weights.astype(np.float32), seed=seed + 2, over_subcarriers=H.ndim == 3).numpy()
        mean = est.reshape(-1)[:n_real]                   # OFDM: [F, chunk] back to payload order
        true = fed_w @ u.astype(np.float64)
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - true) ** 2)),
                         int(aircomp_channel_uses(n_real, num_devices=k, num_subcarriers=H.shape[0] if H.ndim == 3 else 1)),
                         int(np.count_nonzero(weights)))


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
    size of the sign update) are chosen on validation by the study.
    """
    name = "obda"

    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", threshold=0.1, server_lr=1e-3,
                 csi_error=0.0, seed=0, **channel_kwargs):
        super().__init__(num_devices, num_rx_ant, snr_db, channel, seed, **channel_kwargs)
        if isinstance(threshold, bool) or not np.isscalar(threshold) or not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"`threshold` must be a finite number >= 0 (linear gain), got {threshold!r}")
        if isinstance(server_lr, bool) or not np.isscalar(server_lr) or not np.isfinite(server_lr) or server_lr <= 0:
            raise ValueError(f"`server_lr` must be a finite number > 0, got {server_lr!r}")
        if not csi_error >= 0:
            raise ValueError(f"`csi_error` must be >= 0, got {csi_error}")
        self.threshold, self.server_lr, self.csi_error = float(threshold), float(server_lr), float(csi_error)
        self.uplink = OBDAUplink()

    def __call__(self, updates, round_index, weights=None):
        u = _check_updates(updates, self.num_devices)
        k, n_real = u.shape
        fed_w = fedavg_weights(weights, k)
        seed = self._round_seed(round_index)
        H = self._draw(round_index)
        H_est = imperfect_csi(H, self.csi_error, seed=seed + 1) if self.csi_error else H
        voters = fed_w > 0
        d = truncated_inversion(H_est[..., voters], 1.0, self.noise_var, self.threshold)
        a, b = d.a, np.zeros(H.shape[:-2] + (k,), complex)
        b[..., voters] = d.b
        res = self.uplink(_spread(u, H).astype(np.float32), H, a, b, self.noise_var, seed=seed + 2)
        mean = self.server_lr * res.vote.numpy().reshape(-1)[:n_real]
        true = fed_w @ u.astype(np.float64)
        heard = res.transmitted.numpy().reshape(-1, k).any(axis=0)
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - true) ** 2)),
                         int(aircomp_channel_uses(n_real, num_subcarriers=H.shape[0] if H.ndim == 3 else 1)),
                         int(np.count_nonzero(heard)))


class DigitalAggregator(_RadioAggregator):
    """The fair digital baseline (`DigitalUplink`): each device quantises its update (`num_bits` per real);
    the server's N antennas receive up to N devices at once (multi-user MIMO, `detector` "lmmse" or "zf",
    the number of orthogonal groups chosen per round, `streams="auto"`); each device's MCS adapts to its
    post-detection SINR (`mcs="adaptive"`, NR MCS table 2 with measured 10 %-BLER thresholds;
    `mcs="fixed"` gives every device `num_bits_per_symbol` and `code_rate`); every block carries a CRC24A
    and a failed block is dropped. Each entry of the mean is the FedAvg-weighted mean over the devices that
    delivered it (weights renormalised over them; 0 where no device did); `per_device` holds that mean in
    place of the entries a device lost, so `weights @ per_device == mean`; `devices` counts the devices that
    delivered at least one entry.

    `link`: "abstract" draws each block's CRC failure from its MCS's calibrated BLER at the device's
    SINR (no LDPC decoding; the default for the adaptive table), "bits" simulates every bit with Sionna's
    LDPC decoder (`num_iter` iterations; the default for a fixed MCS outside the table, seconds per round
    at L = 20k on a CPU).
    """
    name = "digital"

    def __init__(self, num_devices, num_rx_ant, snr_db, channel="rayleigh", num_bits=8, num_bits_per_symbol=2,
                 code_rate=0.5, num_iter=20, seed=0, *, mcs="adaptive", detector="lmmse", streams="auto",
                 link=None, **channel_kwargs):
        super().__init__(num_devices, num_rx_ant, snr_db, channel, seed, **channel_kwargs)
        if mcs not in ("adaptive", "fixed"):
            raise ValueError(f"`mcs` must be 'adaptive' or 'fixed', got {mcs!r}")
        fixed = (num_bits_per_symbol, code_rate)
        in_table = mcs == "adaptive" or any(e.num_bits_per_symbol == fixed[0] and code_rate is not None
                                            and abs(e.code_rate - code_rate) < 1e-6 for e in MCS_TABLE)
        self.uplink = DigitalUplink(num_bits, "adaptive" if mcs == "adaptive" else fixed, detector, streams,
                                    link or ("abstract" if in_table else "bits"), num_iter=num_iter)

    def __call__(self, updates, round_index, weights=None):
        u = _check_updates(updates, self.num_devices)
        w = fedavg_weights(weights, u.shape[0])
        H = self._draw(round_index)
        res = self.uplink(u, H, self.noise_var, 1.0, seed=self._round_seed(round_index) + 3)
        x_hat, valid = res.x_hat.numpy().astype(np.float64), res.valid.numpy()
        wv = w[:, None] * valid
        heard = wv.sum(0)
        mean = np.where(heard > 0, (wv * x_hat).sum(0) / np.where(heard > 0, heard, 1.0), 0.0)
        per_device = np.where(valid, x_hat, mean).astype(np.float32)
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - w @ u.astype(np.float64)) ** 2)),
                         int(res.channel_uses), int(res.devices), per_device=per_device)


SCHEMES = ("ideal", "aircomp", "digital", "obda")


def make_aggregator(scheme, num_devices, num_rx_ant=1, snr_db=0.0, seed=0, channel=None, aircomp=None,
                    digital=None, obda=None):
    """The aggregator of `scheme` ("ideal", "aircomp", "digital" or "obda") for `num_devices` devices and a
    server with `num_rx_ant` antennas at `snr_db` (P / sigma^2 per device, dB). channel: keyword arguments of
    the channel (model, num_subcarriers for the OFDM models); aircomp / digital / obda: keyword arguments of
    AirCompAggregator / DigitalAggregator / OBDAAggregator (method, csi_error, select, mse_target / num_bits,
    ... / threshold, server_lr, csi_error)."""
    if scheme not in SCHEMES:
        raise ValueError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "ideal":
        return IdealAggregator()
    channel = dict(channel or {})
    model = channel.pop("model", "rayleigh")
    if model in FLAT_MODELS:
        channel.pop("num_subcarriers", None)
    if scheme == "aircomp":
        return AirCompAggregator(num_devices, num_rx_ant, snr_db, model, seed=seed, **(aircomp or {}), **channel)
    if scheme == "obda":
        return OBDAAggregator(num_devices, num_rx_ant, snr_db, model, seed=seed, **(obda or {}), **channel)
    return DigitalAggregator(num_devices, num_rx_ant, snr_db, model, seed=seed, **(digital or {}), **channel)
