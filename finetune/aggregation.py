"""How K devices' update vectors reach the server: ideal averaging, MIMO AirComp, or digital orthogonal access.

Every aggregator maps updates [K, L] (float32, one row per device) to an estimate of their mean [L] and
reports the round's aggregation MSE (mean squared error per entry against the true mean) and channel uses.
SNR = P / sigma^2 per device (P = 1, noise variance per receive antenna), in dB.
"""

from dataclasses import dataclass

import numpy as np

from deft6g.optim import design_aircomp, select_devices
from deft6g.phy import AirCompUplink, DigitalUplink, UplinkChannel, aircomp_channel_uses, imperfect_csi


@dataclass
class Aggregate:
    """mean [L] float32: the server's estimate of the devices' mean update; agg_mse: per-entry MSE against
    the true mean; channel_uses: symbols spent this round; devices: how many devices were heard."""
    mean: np.ndarray
    agg_mse: float
    channel_uses: int
    devices: int


def _check_updates(updates, num_devices=None):
    u = np.asarray(updates, np.float32)
    if u.ndim != 2 or not np.all(np.isfinite(u)):
        raise ValueError(f"`updates` must be a finite [K, L] array, got shape {u.shape}")
    if num_devices is not None and u.shape[0] != num_devices:
        raise ValueError(f"`updates` has {u.shape[0]} rows, the aggregator serves {num_devices} devices")
    return u


class IdealAggregator:
    """Noise-free FedAvg: the plain mean, no channel."""
    name = "ideal"

    def __call__(self, updates, round_index):
        u = _check_updates(updates)
        return Aggregate(u.mean(0), 0.0, 0, u.shape[0])


class _RadioAggregator:
    def __init__(self, num_devices, num_antennas, snr_db, channel="rayleigh", seed=0, **channel_kwargs):
        if not np.isfinite(snr_db):
            raise ValueError(f"`snr_db` must be finite, got {snr_db}")
        self.num_devices, self.snr_db, self.seed = num_devices, float(snr_db), int(seed)
        self.noise_var = 10.0 ** (-self.snr_db / 10.0)
        self.channel = UplinkChannel(channel, num_antennas, num_devices, **channel_kwargs)

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

    def __init__(self, num_devices, num_antennas, snr_db, channel="rayleigh", method="sdr", csi_error=0.0,
                 select=False, mse_target=None, seed=0, **channel_kwargs):
        super().__init__(num_devices, num_antennas, snr_db, channel, seed, **channel_kwargs)
        if select and (mse_target is None or mse_target <= 0):
            raise ValueError("device selection needs a positive `mse_target`")
        if csi_error < 0:
            raise ValueError(f"`csi_error` must be >= 0, got {csi_error}")
        self.method, self.csi_error, self.select, self.mse_target = method, float(csi_error), bool(select), mse_target
        self.uplink = AirCompUplink()

    def __call__(self, updates, round_index):
        u = _check_updates(updates, self.num_devices)
        k, n_real = u.shape
        seed = self._round_seed(round_index)
        H = self._draw(round_index)
        H_est = imperfect_csi(H, self.csi_error, seed=seed + 1) if self.csi_error else H
        weights = np.full(k, 1.0 / k)
        if self.select:
            if H.ndim != 2:
                raise ValueError("device selection is implemented for flat channels (one H per round)")
            sel = select_devices(H_est, 1.0, self.noise_var, self.mse_target, seed=seed)
            a, b = sel.design.a, sel.design.b
            weights = np.zeros(k)
            weights[sel.selected] = 1.0 / len(sel.selected)
        else:
            d = design_aircomp(H_est, 1.0, self.noise_var, self.method, seed=seed, progress=False)
            a, b = d.a, d.b
        if H.ndim == 3:                                   # OFDM: payload spread over F subcarriers
            f = H.shape[0]
            chunk = int(np.ceil(n_real / f))
            x = np.pad(u, [(0, 0), (0, f * chunk - n_real)]).reshape(k, f, chunk).transpose(1, 0, 2)
        else:
            x = u
        est = self.uplink(x.astype(np.float32), H, a, b, self.noise_var,
                          weights=weights.astype(np.float32), seed=seed + 2).numpy()
        mean = est.reshape(-1)[:n_real]                   # OFDM: [F, chunk] back to payload order
        true = u.mean(0)
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - true) ** 2)),
                         int(aircomp_channel_uses(n_real)), int(np.count_nonzero(weights)))


class DigitalAggregator(_RadioAggregator):
    """Digital baseline: each device quantises, LDPC-codes and QAM-maps its update alone on orthogonal
    resources (`DigitalUplink`, TDMA; LDPC belief propagation with `num_iter` iterations); bit errors
    corrupt the dequantised payloads; the server averages."""
    name = "digital"

    def __init__(self, num_devices, num_antennas, snr_db, channel="rayleigh", num_bits=8, num_bits_per_symbol=2,
                 code_rate=0.5, num_iter=20, seed=0, **channel_kwargs):
        super().__init__(num_devices, num_antennas, snr_db, channel, seed, **channel_kwargs)
        self.uplink = DigitalUplink("tdma", num_bits=num_bits, num_bits_per_symbol=num_bits_per_symbol,
                                    code_rate=code_rate, num_iter=num_iter)

    def __call__(self, updates, round_index):
        u = _check_updates(updates, self.num_devices)
        H = self._draw(round_index)
        res = self.uplink(u, H, self.noise_var, 1.0, seed=self._round_seed(round_index) + 3)
        mean = res.f_hat.numpy() / u.shape[0]
        return Aggregate(mean.astype(np.float32), float(np.mean((mean - u.mean(0)) ** 2)), int(res.channel_uses),
                         u.shape[0])


SCHEMES = ("ideal", "aircomp", "digital")
