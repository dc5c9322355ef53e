"""Link-level benchmark: AirComp, digital and OBDA with every channel use counted, at equal SNR and at equal
quality, and the speed of the vectorised TF Monte-Carlo core against the same maths in plain NumPy.

Every radio arm pays for its overheads (docs/design.md §8), as `deft6g.finetune`'s aggregators do: the server
estimates the channel from tau = K orthogonal pilots per subcarrier sent at the link's SNR (`PilotCsi`, tau F
channel uses per realisation); AirComp's statistics (each device's mean and std, 64 bits) go up through the
digital control link (`ControlLink`, whole blocks at the MCS the estimated SINR supports, CRC) and each device's
transmit factor (64 bits) comes down at the downlink SNR (= the uplink's), digital's grants (16 bits) and OBDA's
factors likewise; downlink uses are a column of their own, not in `channel_uses`. Designs, scheduling, MCS and
detection use the estimate; MSEs and block errors are those of the true channel. The "genie" AirComp rows
(perfect CSI, free side information and downlink) are the labelled reference.

Dropped devices. An AirComp device whose statistics fail is dropped: the server designs over the K' devices whose
statistics arrived and scales its estimate by K / K' to estimate the sum of all K payloads, as the digital server
estimates it by K x the mean over the devices that delivered; a device that misses its transmit factor stays
silent while the server still counts it. Both arms' NMSE is against the sum of all K devices (a dropped device
costs its share), so neither gains from losing devices; `dropped` reports the fraction, and `nmse_kept_db` the
AirComp NMSE against the sum over the kept devices only.

Choices are made on validation draws (seeds disjoint from the reported ones), never on the reported draws. OBDA's
truncation threshold: per (model, N, K, SNR) the threshold of `obda_thresholds` with the lowest mean sign-error rate
(ties: the larger), every candidate's score in obda_tuning.csv / obda_choice.csv. Digital's (scheme, bits) at equal
quality: per (model, N, K, SNR, receiver) the option of fewest uplink channel uses whose validation NMSE (the median
of the per-channel NMSE pooled over the validation draws) meets AirComp's median NMSE, every option in
digital_tuning.csv / digital_choice.csv; matched.csv reports that option's reported draws.

Seeds: every random draw has its own sub-stream of the run's seed (`deft6g.rng.derive_seed`, the streams named
below), so AirComp's, the reported and the validation draws, and within a draw its channels, payload, pilots, noise
and control messages, never share random numbers; the same seed gives the same numbers.
"""

import time
from dataclasses import dataclass, field, replace

import numpy as np
import tensorflow as tf

from deft6g.deprecation import warn_renamed
from deft6g.optim import align, closed_form_design, mrc_direction, truncated_inversion
from deft6g.phy import FACTOR_BITS, FLAT_MODELS, GRANT_BITS, STATS_BITS, ControlLink, DigitalUplink, FadingChannel, \
    OBDAUplink, PilotCsi, aircomp_channel_uses, aircomp_mse, empirical_mse, noise_var, pilot_channel_uses
from deft6g.rng import derive_seed, reseed

from deft6g.experiment import Stage, Study, ci_points, line_plot, mean_ci, percentiles, run, to_db

from .impairment_sweeps import LinkSweepPoints, LinkSweeps, link_sweep_report, link_sweep_stages, link_sweeps

NOT_REACHED = "not reached"

COST_FIELDS = ["channel_uses", "payload_uses", "pilot_uses", "side_info_uses", "downlink_uses", "energy", "latency_ms"]
# AirComp: the MSE over channel realisations is heavy-tailed (aligned designs: infinite mean at N = K and N = 1),
# so the median and the 10/90 percentiles are reported; the mean and its 95% CI only where the variance is
# finite (genie ZF with N >= K + 2: MSE = sigma^2 1^T (H^H H)^{-1} 1, inverse-Wishart moments), else blank.
# csi: "pilots" (every overhead counted) or "genie". Costs: means over realisations; energy per device and
# realisation [P x channel uses]; latency of the uplink channel uses at `bandwidth_hz`.
AIRCOMP_FIELDS = ["model", "num_rx_ant", "num_devices", "receiver", "csi", "snr_db", "mse_median", "mse_p10",
                  "mse_p90", "mse_mean", "mse_mean_ci", "nmse_db", "nmse_p10_db", "nmse_p90_db", "nmse_kept_db",
                  "dropped", "silent"] + COST_FIELDS
# Digital: one row per (model, N, K, scheme, bits, SNR, seed) over `digital_realisations` channels (seed: the draw's,
# `draw_seeds`); NMSE per realisation from f_hat against the true sum (nmse_channels: the list, linear, JSON), its
# median and 10/90 percentiles; dropped: the scheduler's outage. digital.csv: the reported draws, digital_tuning.csv:
# the validation draws (key: the first 7 columns).
DIGITAL_FIELDS = ["model", "num_rx_ant", "num_devices", "scheme", "num_bits", "snr_db", "seed", "nmse_db",
                  "nmse_p10_db", "nmse_p90_db", "nmse_channels", "ber", "bler", "delivered", "dropped",
                  "groups"] + COST_FIELDS
# digital_choice.csv: per (model, N, K, SNR, receiver) every digital option's validation NMSE (median over the pooled
# channels of the validation draws, dB) and mean uplink uses against AirComp's median NMSE, and the one chosen.
DIGITAL_CHOICE_FIELDS = ["model", "num_rx_ant", "num_devices", "snr_db", "receiver", "scheme", "num_bits",
                         "target_nmse_db", "val_nmse_db", "val_uses", "val_channels", "meets", "chosen"]
# Sub-streams of the run's seed (`derive_seed(cfg.seed, ...)`): AirComp's draw (one per run, its channels shared by
# the receivers and SNRs), the digital and OBDA draws of the reported and validation splits (draw i of a split is
# the same for both arms: paired channels), the speed test, the majority-vote reference.
AIRCOMP_DRAW, REPORTED, VALIDATION, SPEED, MAJORITY = range(1, 6)
# Sub-streams of a draw's seed (`derive_seed(draw seed, part)`): its parts. DOWNLINK: the transmit factors (AirComp,
# OBDA) and grants (digital); STATISTICS: AirComp's statistics through the control uplink.
CHANNELS, PAYLOAD, PILOTS, NOISE, STATISTICS, DOWNLINK = range(1, 7)
# OBDA: sign-error rate per entry against the sign of the true sum at the truncation threshold `threshold` (linear,
# on |u^H h_k|^2); silent: devices truncated or without a factor. obda.csv: the reported seeds at the threshold
# chosen on validation (key: the first 5 columns); obda_tuning.csv: the validation seeds at every threshold of the
# grid (key: the first 6).
OBDA_FIELDS = ["model", "num_rx_ant", "num_devices", "snr_db", "seed", "threshold", "sign_error", "silent"] \
    + COST_FIELDS
# obda_choice.csv: per (model, N, K, SNR) every threshold's mean validation sign-error rate and the one chosen.
OBDA_CHOICE_FIELDS = OBDA_FIELDS[:4] + ["threshold", "val_sign_error", "val_seeds", "chosen"]
# Equal quality: AirComp's median NMSE is the target; digital's option chosen on validation (digital_choice.csv) with
# its validation NMSE and, from its reported draws, its NMSE (median over the pooled channels, dB, median against
# median) and costs (means over the draws); NOT_REACHED in `scheme` when no option meets the target on validation
# (digital columns blank, never imputed).
MATCHED_FIELDS = ["model", "num_rx_ant", "num_devices", "snr_db", "receiver", "target_nmse_db", "aircomp_uses",
                  "aircomp_downlink_uses", "aircomp_energy", "scheme", "num_bits", "digital_val_nmse_db",
                  "digital_nmse_db", "digital_uses", "digital_downlink_uses", "digital_energy", "ratio",
                  "aircomp_latency_ms", "digital_latency_ms"]
# Column types of the result stores (`ResultStore(types=...)`): rows read back as they were written.
_SETTING_TYPES = {"model": str, "num_rx_ant": int, "num_devices": int}
AIRCOMP_TYPES = {**_SETTING_TYPES, "receiver": str, "csi": str, **dict.fromkeys(AIRCOMP_FIELDS[5:], float)}
DIGITAL_TYPES = {**_SETTING_TYPES, "scheme": str, "num_bits": int, "snr_db": float, "seed": int,
                 **dict.fromkeys(DIGITAL_FIELDS[7:], float), "nmse_channels": list}
OBDA_TYPES = {**_SETTING_TYPES, "snr_db": float, "seed": int, **dict.fromkeys(OBDA_FIELDS[5:], float)}
# The fair baseline (MU-MIMO LMMSE + AMC + CRC), its TDMA special case, and the earlier fixed QPSK 1/2 TDMA one
# (bit-true always: rate 1/2 is not in the calibrated MCS table; at `bit_true_bits` only).
DIGITAL_SCHEMES = {"mu-mimo-amc": dict(mcs="adaptive", detector="lmmse", streams="auto"),
                   "tdma-amc": dict(mcs="adaptive", streams=1),
                   "tdma-qpsk-1/2": dict(mcs=(2, 0.5), streams=1, link="bits")}
SNR_AXIS = "SNR = P / sigma^2 per device [dB]"


@dataclass
class LinkConfig:
    """What `deft6g link` runs. SNR = P / sigma^2 per device [dB], P = 1 for every device; the downlink at the
    same SNR."""
    snr_db: list = field(default_factory=lambda: [-10, -5, 0, 5, 10, 15, 20, 25, 30])
    antennas_devices: list = field(default_factory=lambda: [[4, 4], [8, 8], [16, 8], [16, 20]])
    models: list = field(default_factory=lambda: ["rayleigh", "correlated", "tdl-a", "cdl-c"])
    receivers: list = field(default_factory=lambda: ["mrc", "zf"])
    realisations: int = 2000          # channel matrices per point (OFDM models: realisations / F draws of F)
    num_subcarriers: int = 16
    payload_reals: int = 500          # per device, for the digital and OBDA comparison and the channel-use count
    bandwidth_hz: float = 1e6         # latency = channel uses / bandwidth
    digital_realisations: int = 4     # channels per digital / OBDA point
    digital_link: str = "abstract"    # adaptive schemes: calibrated BLER ("abstract") or bit-true ("bits")
    digital_num_seeds: int = 3        # digital and OBDA points at every SNR of `snr_db`
    digital_validation_seeds: int = 3  # validation draws of `digital_realisations` channels per digital option
    digital_settings: list = field(default_factory=lambda: [[8, 8], [16, 20]])
    digital_models: list = field(default_factory=lambda: ["rayleigh", "tdl-a"])
    digital_schemes: list = field(default_factory=lambda: ["mu-mimo-amc", "tdma-amc"])
    digital_bits: list = field(default_factory=lambda: [1, 2, 4, 8])   # stochastic rounding below 8 bits
    bit_true_bits: list = field(default_factory=lambda: [8])           # widths of the bit-true scheme
    obda_thresholds: list = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0, 3.0])  # on |u^H h_k|^2
    obda_validation_seeds: int = 3    # validation channel draws of `digital_realisations` channels per OBDA point
    speed_batch: int = 1000           # speed test: N = 16, K = 20, 64 symbols per realisation
    speed_repeats: int = 5
    seed: int = 0
    impairments: LinkSweeps = field(default_factory=LinkSweeps)   # the physics sweeps; None: not run

    def __post_init__(self):
        t = self.obda_thresholds
        if (not isinstance(t, (list, tuple)) or not t or len(set(t)) < len(t)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < np.inf for v in t)):
            raise ValueError(f"`obda_thresholds` must be a non-empty list of distinct finite numbers >= 0 (linear), "
                             f"got {t!r}")
        if self.impairments is not None and not isinstance(self.impairments, LinkSweeps):
            raise ValueError(f"`impairments` must be a LinkSweeps or None, got {self.impairments!r}")
        for name, high in (("obda_validation_seeds", 2 ** 32), ("digital_validation_seeds", 2 ** 32),
                           ("digital_num_seeds", 2 ** 32)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high:
                raise ValueError(f"`{name}` must be an int in [1, {high}], got {v!r}")

    @classmethod
    def quick(cls):
        return cls(snr_db=[0, 10, 20], antennas_devices=[[8, 8], [16, 20]], models=["rayleigh", "tdl-a"],
                   realisations=100, num_subcarriers=8, digital_realisations=4,
                   digital_models=["rayleigh"], speed_batch=200, speed_repeats=2, impairments=LinkSweeps.quick())


def _label(point):
    return (f"{point['model']} {point['receiver']} {point['csi']} N={point['num_rx_ant']} K={point['num_devices']} "
            f"{point['snr_db']} dB")


def _channels(cfg, model, n, k, seed, draws):
    """[R, F, N, K] complex64 NumPy: R = `draws` channel draws of the draw seeded `seed` (its CHANNELS sub-stream),
    F = 1 on flat models."""
    channel = FadingChannel(model, n, k, num_subcarriers=cfg.num_subcarriers)
    H = channel(draws, seed=derive_seed(seed, CHANNELS)).numpy()
    return H if channel.is_ofdm else H[:, None]


def _payload(shape, seed):
    """Unit-variance Gaussian payloads (tf.float32 of `shape`) of the draw seeded `seed` (its PAYLOAD sub-stream)."""
    return tf.random.stateless_normal(shape, tf.constant([derive_seed(seed, PAYLOAD), 0], tf.int64))


def _control(num_bits, H, H_est, snr_db, active, seed):
    """Control messages of R realisations in one `ControlLink` call: devices take turns and a device's message
    depends only on its own channel, so R realisations of K devices are R K devices.

    H, H_est : [R, F, N, K] complex; active : [R, K] bool. Returns (delivered [R, K] bool, uses [R, K] int)."""
    r, k = H.shape[0], H.shape[-1]

    def devices(t):                                              # [R, F, N, K] -> [F, N, R K]
        return np.moveaxis(t, 0, -2).reshape(t.shape[1:-1] + (r * k,))
    res = ControlLink()(num_bits, devices(H), devices(H_est), snr_db=float(snr_db), active=active.reshape(-1),
                        seed=seed)
    return res.delivered.reshape(r, k), res.uses.reshape(r, k)


def _design_over(H_est, kept, receiver):
    """Aligned design of `receiver` over each row's kept devices, b_k = 0 for the others (a = 0, b = 0 where none is
    kept). Rows with the same number K' of kept devices are designed together on their kept columns
    (`closed_form_design` treats the devices alike, so the order of the columns does not matter).

    H_est : [M, N, K] complex; kept : [M, K] bool. Returns a [M, N], b [M, K] (the dtype of H_est)."""
    m, n, k = H_est.shape
    a, b = np.zeros((m, n), H_est.dtype), np.zeros((m, k), H_est.dtype)
    order = np.argsort(~kept, axis=-1, kind="stable")             # kept devices first
    count = kept.sum(-1)
    for c in np.unique(count[count > 0]):
        rows = np.flatnonzero(count == c)
        cols = order[rows, :c]
        a[rows], b_kept = closed_form_design(np.take_along_axis(H_est[rows], cols[:, None, :], -1), 1.0, receiver)
        b[rows[:, None], cols] = b_kept
    return a, b


def _costs(cfg, payload, pilot, side=0.0, downlink=0.0, energy=0.0):
    uses = payload + pilot + side
    return dict(channel_uses=uses, payload_uses=payload, pilot_uses=pilot, side_info_uses=side,
                downlink_uses=downlink, energy=energy, latency_ms=uses / cfg.bandwidth_hz * 1e3)


class _AirCompPoint:
    """An AirComp point, picklable for Ray workers: the channel draw of its (model, N, K, receiver) is kept for
    that group's other points (run_points group=AIRCOMP_FIELDS[:4])."""

    def __init__(self, cfg):
        self.cfg, self.channels = cfg, {}

    def __call__(self, p):
        cfg = self.cfg
        model, n, k, receiver, snr = p["model"], p["num_rx_ant"], p["num_devices"], p["receiver"], p["snr_db"]
        seed = derive_seed(cfg.seed, AIRCOMP_DRAW)
        if (model, n, k) not in self.channels:
            draws = cfg.realisations if model in FLAT_MODELS else max(1, cfg.realisations // cfg.num_subcarriers)
            self.channels = {(model, n, k): _channels(cfg, model, n, k, seed, draws)}
        H = self.channels[(model, n, k)]                                           # [R, F, N, K]
        r, f = H.shape[:2]
        rows, nv = H.reshape(-1, n, k), noise_var(snr)
        payload = aircomp_channel_uses(cfg.payload_reals, num_subcarriers=f)
        if p["csi"] == "genie":                                                    # perfect CSI, free overheads
            a, b = closed_form_design(rows, 1.0, receiver)
            kept = told = np.ones((r, k), bool)
            cost = dict(pilot=0.0)
        else:
            H_est = np.asarray(PilotCsi(k)(H, float(snr), seed=derive_seed(seed, PILOTS))[0])
            kept, side = _control(STATS_BITS, H, H_est, snr, np.ones((r, k), bool), derive_seed(seed, STATISTICS))
            a, b = _design_over(H_est.reshape(-1, n, k), np.repeat(kept, f, axis=0), receiver)
            told, down = _control(FACTOR_BITS, H, H_est, snr, kept, derive_seed(seed, DOWNLINK))
            b = b * np.repeat(told, f, axis=0)                                     # no factor: the device is silent
            cost = dict(pilot=float(pilot_channel_uses(k, f)), side=float(side.sum(-1).mean()),
                        downlink=float(down.sum(-1).mean()), energy=pilot_channel_uses(k, f) + side)
        k_kept = np.repeat(kept.sum(-1), f)                                        # [R F]
        scale = np.where(k_kept > 0, k / np.maximum(k_kept, 1), 0.0).astype(np.float32)
        mse = np.asarray(aircomp_mse(rows, a * scale[:, None], b, nv), np.float64)    # vs the sum of all K
        kept_cov = np.repeat(kept, f, axis=0)[:, None, :] * np.eye(k, dtype=np.float32)
        mse_kept = np.asarray(aircomp_mse(rows, a, b, nv, payload_cov=kept_cov), np.float64)
        p10, median, p90 = percentiles(mse / k, (10, 50, 90))
        m10, m50, m90 = percentiles(mse, (10, 50, 90))
        mean, ci = mean_ci(mse) if p["csi"] == "genie" and receiver == "zf" and n >= k + 2 else ("", "")
        b_energy = payload * np.mean(np.abs(b.reshape(r, f, k)) ** 2, axis=1)     # [R, K]
        energy = float(np.mean(cost.pop("energy", 0.0) + b_energy))
        return p | dict(mse_median=m50, mse_p10=m10, mse_p90=m90, mse_mean=mean, mse_mean_ci=ci, nmse_db=to_db(median),
                        nmse_p10_db=to_db(p10), nmse_p90_db=to_db(p90),
                        nmse_kept_db=to_db(np.median(mse_kept[k_kept > 0] / k_kept[k_kept > 0])),
                        dropped=float(1 - kept.mean()), silent=float(np.mean(kept & ~told)),
                        **_costs(cfg, float(payload), energy=energy, **cost))


def aircomp_points(cfg, done):
    """One point per (model, N, K, receiver, csi, SNR): NMSE percentiles over the channel realisations (one channel
    draw per (model, N, K), shared by its SNRs; pilots, statistics and factors drawn per SNR)."""
    return [dict(model=m, num_rx_ant=n, num_devices=k, receiver=r, csi=c, snr_db=s) for m in cfg.models
            for n, k in cfg.antennas_devices for r in cfg.receivers for c in ("pilots", "genie") for s in cfg.snr_db]


def _describe_aircomp(p, row):
    return (f"{_label(p)}: median NMSE {row['nmse_db']:.1f} dB, {row['channel_uses']:.0f} uses, "
            f"{row['dropped']:.3f} dropped")


class _DigitalPoint:
    """A digital point (see `digital_points`), picklable for Ray workers."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, p):
        cfg = self.cfg
        n, k, q, snr, seed = p["num_rx_ant"], p["num_devices"], p["num_bits"], p["snr_db"], p["seed"]
        x = _payload([cfg.digital_realisations, k, cfg.payload_reals], seed)
        H = _channels(cfg, p["model"], n, k, seed, cfg.digital_realisations)
        r, f = H.shape[:2]
        H = H if f > 1 else H[:, 0]
        H_est, error_var = (np.asarray(t) for t in PilotCsi(k)(H, float(snr), seed=derive_seed(seed, PILOTS)))
        scheme = {"link": cfg.digital_link} | DIGITAL_SCHEMES[p["scheme"]]
        uplink = DigitalUplink(q, stochastic_rounding=q < 8, **scheme)
        res = uplink(x, H, noise_var(snr), seed=derive_seed(seed, NOISE), H_est=H_est, error_var=float(error_var))
        mcs = np.asarray(res.mcs)
        told, down = _control(GRANT_BITS, H.reshape(r, f, n, k), H_est.reshape(r, f, n, k), snr, mcs >= 0,
                              derive_seed(seed, DOWNLINK))
        valid = res.valid.numpy() & told[..., None]                   # a device without its grant stays silent
        heard = valid.sum(-2)
        f_hat = k * np.where(heard > 0, (res.x_hat.numpy() * valid).sum(-2) / np.maximum(heard, 1), 0.0)
        nmse = np.maximum(np.mean((f_hat - x.numpy().sum(-2)) ** 2, axis=-1) / k, 1e-30)   # [R], E f^2 = K per entry
        p10, median, p90 = percentiles(nmse, (10, 50, 90))
        pilot = pilot_channel_uses(k, f)
        sent = np.where((mcs >= 0) & told, uplink.symbols(cfg.payload_reals, np.maximum(mcs, 0)), 0)
        return p | dict(nmse_db=to_db(median), nmse_p10_db=to_db(p10), nmse_p90_db=to_db(p90),
                        nmse_channels=nmse.tolist(), ber=res.ber, bler=res.bler,
                        delivered=float(valid.mean()), dropped=float(np.mean(mcs < 0)),
                        groups=float(np.mean(res.groups)),
                        **_costs(cfg, float(np.mean(res.channel_uses)), float(pilot),
                                 downlink=float(down.sum(-1).mean()), energy=float(np.mean(pilot + sent))))


def digital_points(cfg, split):
    """One point per (model, N, K, scheme, bits, SNR, draw) of `split` ("validation": digital_tuning.csv, what
    `digital_choice` chooses on; "reported": digital.csv): `digital_realisations` channels and unit-variance
    Gaussian payloads of `payload_reals` reals per device (`DigitalUplink` on the pilot estimate, quantiser of
    `digital_bits` widths with stochastic rounding below 8 bits; the bit-true scheme at `bit_true_bits`; adaptive
    schemes with `digital_link`: the channel uses do not depend on it, the drawn block failures do)."""
    count = cfg.digital_validation_seeds if split == "validation" else cfg.digital_num_seeds
    return [dict(model=m, num_rx_ant=n, num_devices=k, scheme=sc, num_bits=q, snr_db=s, seed=i)
            for m in cfg.digital_models for n, k in cfg.digital_settings for sc in cfg.digital_schemes
            for q in (cfg.bit_true_bits if DIGITAL_SCHEMES[sc].get("link") == "bits" else cfg.digital_bits)
            for s in cfg.snr_db for i in draw_seeds(cfg, split, count)]


def _describe_digital(p, row):
    return (f"{p['model']} {p['scheme']} {p['num_bits']}-bit N={p['num_rx_ant']} K={p['num_devices']} {p['snr_db']} "
            f"dB seed {p['seed']}: median NMSE {row['nmse_db']:.1f} dB, {row['channel_uses']:.0f} uses, "
            f"{row['delivered']:.3f} delivered")


class _OBDAPoint:
    """An OBDA point (see `obda_tuning_points`), picklable for Ray workers: the draws of its (model, N, K, SNR,
    seed) (channels, payloads, pilot estimate, factor delivery) are kept for that group's other thresholds, so
    every threshold of the grid meets the same channels and noise (run_points group=OBDA_FIELDS[:5])."""

    def __init__(self, cfg):
        self.cfg, self.draws = cfg, {}

    def _draw(self, model, n, k, snr, seed):
        key = (model, n, k, snr, seed)
        if key not in self.draws:
            cfg = self.cfg
            H = _channels(cfg, model, n, k, seed, cfg.digital_realisations)      # [R, F, N, K]
            r, f = H.shape[:2]
            chunk = -(-cfg.payload_reals // f)                            # the payload spread over the F subcarriers
            x = _payload([r, f, k, chunk], seed).numpy()
            H_est = np.asarray(PilotCsi(k)(H, float(snr), seed=derive_seed(seed, PILOTS))[0])
            told, down = _control(FACTOR_BITS, H, H_est, snr, np.ones((r, k), bool), derive_seed(seed, DOWNLINK))
            self.draws = {key: (H, x, H_est, told, down)}
        return self.draws[key]

    def __call__(self, p):
        cfg = self.cfg
        n, k, snr, seed = p["num_rx_ant"], p["num_devices"], p["snr_db"], p["seed"]
        H, x, H_est, told, down = self._draw(p["model"], n, k, snr, seed)
        f, nv = H.shape[1], noise_var(snr)
        d = truncated_inversion(H_est, 1.0, nv, float(p["threshold"]))
        b = np.asarray(d.b) * told[:, None, :]                         # no factor: the device is silent
        res = OBDAUplink()(x, H, np.asarray(d.a), b, nv, seed=derive_seed(seed, NOISE))
        sign_error = float(np.mean(res.vote.numpy() != np.sign(x.sum(-2))))
        pilot = pilot_channel_uses(k, f)
        energy = pilot + res.energy.numpy().sum(axis=1)                # [R, K]
        return p | dict(sign_error=sign_error, silent=float(1 - res.transmitted.numpy().any(axis=1).mean()),
                        **_costs(cfg, float(aircomp_channel_uses(cfg.payload_reals, num_subcarriers=f)), float(pilot),
                                 downlink=float(down.sum(-1).mean()), energy=float(energy.mean())))


def draw_seeds(cfg, split, count):
    """The seeds of the first `count` digital and OBDA draws of `split` ("reported" or "validation"):
    derive_seed(cfg.seed, REPORTED or VALIDATION, i), i < count. Draw i of a split is the same for both arms."""
    streams = dict(reported=REPORTED, validation=VALIDATION)
    if split not in streams:
        raise ValueError(f"`split` must be 'reported' or 'validation', got {split!r}")
    return [derive_seed(cfg.seed, streams[split], i) for i in range(count)]


def pooled(rows, key, candidate, summarise):
    """Rows pooled per group and candidate: {key(row): {candidate(row): summarise(that group's rows of that
    candidate)}}, candidates in ascending order. rows: dicts (CSV strings or numbers)."""
    by = {}
    for r in rows:
        by.setdefault(key(r), {}).setdefault(candidate(r), []).append(r)
    return {group: {c: summarise(v) for c, v in sorted(cands.items())} for group, cands in by.items()}


def choose_lowest(scores, cost, admit=None):
    """A choice on validation: per group of `scores` ({group: {candidate: summary}}, from `pooled`), the candidate of
    lowest cost(summary) among those that admit(group, summary) accepts (all when `admit` is None); ties within
    1e-12: the largest candidate. Returns {group: the chosen candidate, or None when none is admitted}."""
    out = {}
    for group, cands in scores.items():
        costs = {c: cost(v) for c, v in cands.items() if admit is None or admit(group, v)}
        best = min(costs.values(), default=None)
        out[group] = None if best is None else max(c for c, v in costs.items() if v <= best + 1e-12)
    return out


def _mean_sign_error(rows):
    return float(np.mean([r["sign_error"] for r in rows])), len(rows)


def majority_floor(num_devices, draws=200_000, seed=0):
    """OBDA's reference at high SNR: the sign-error rate per entry of the majority vote of all K = `num_devices`
    unit-Gaussian updates on a noise-free link against the sign of their sum, an even split counted 1/2 (noise breaks
    it either way); NumPy Monte Carlo over `draws` entries (standard error below 0.0012). Returns a probability."""
    x = np.random.default_rng(seed).standard_normal((draws, num_devices))
    votes = np.sign(x).sum(-1)
    return float(np.mean(np.where(votes == 0, 0.5, np.sign(votes) != np.sign(x.sum(-1)))))


def _describe_obda(p, row):
    return (f"{p['model']} OBDA N={p['num_rx_ant']} K={p['num_devices']} {p['snr_db']} dB seed {p['seed']} "
            f"threshold {p['threshold']:g}: sign errors {row['sign_error']:.4f}, {row['channel_uses']:.0f} uses")


def _obda_settings(cfg):
    return [dict(model=m, num_rx_ant=n, num_devices=k, snr_db=s) for m in cfg.digital_models
            for n, k in cfg.digital_settings for s in cfg.snr_db]


def obda_tuning_points(cfg, done=None):
    """OBDA per (model, N, K) of `digital_settings` x `digital_models` and every SNR of `snr_db`: `digital_realisations`
    channels and unit-variance Gaussian payloads per seed, truncated inversion on the pilot estimate, each device's
    factor down. The threshold is chosen on validation: every threshold of `obda_thresholds` runs on the validation
    seeds (these points, obda_tuning.csv), the one `obda_choice` picks on the reported seeds (`obda_points`)."""
    return [p | dict(seed=i, threshold=t) for p in _obda_settings(cfg)
            for i in draw_seeds(cfg, "validation", cfg.obda_validation_seeds) for t in cfg.obda_thresholds]


def obda_choice(tuning_rows):
    """The threshold of lowest mean validation sign-error rate per (model, N, K, SNR) of the obda_tuning.csv rows
    (`choose_lowest`): ({setting: threshold}, rows of OBDA_CHOICE_FIELDS, obda_choice.csv)."""
    scores = pooled(tuning_rows, _setting, lambda r: r["threshold"], _mean_sign_error)
    choice = choose_lowest(scores, lambda v: v[0])
    return choice, [dict(zip(OBDA_FIELDS[:4], key), threshold=t, val_sign_error=m, val_seeds=count,
                         chosen=t == choice[key]) for key, cands in scores.items() for t, (m, count) in cands.items()]


def obda_points(cfg, done):
    """The reported seeds of every OBDA setting at the threshold chosen on done["obda_tuning.csv"] (obda.csv)."""
    choice = obda_choice(done["obda_tuning.csv"])[0]
    return [p | dict(seed=i, threshold=choice[_setting(p)]) for p in _obda_settings(cfg)
            for i in draw_seeds(cfg, "reported", cfg.digital_num_seeds)]


def _setting(row):
    return row["model"], row["num_rx_ant"], row["num_devices"], float(row["snr_db"])


def _option(row):
    """A digital option as a candidate: (bits, scheme), so that of two options at equal cost the wider is chosen."""
    return row["num_bits"], row["scheme"]


def digital_summary(rows):
    """One digital option's draws pooled: nmse_db, the median of the per-channel NMSE of all `rows` (linear, then
    dB; not a mean of per-draw medians), channels (how many), and the means over the rows of channel_uses,
    downlink_uses and energy."""
    nmse = np.concatenate([r["nmse_channels"] for r in rows])
    return dict(nmse_db=to_db(np.median(nmse)), channels=len(nmse),
                **{c: float(np.mean([r[c] for r in rows])) for c in ("channel_uses", "downlink_uses", "energy")})


def digital_options(dig_rows):
    """{(model, N, K, SNR): {(bits, scheme): `digital_summary`}} of digital rows (one split)."""
    return pooled(dig_rows, _setting, _option, digital_summary)


def digital_choice(air_rows, tuning_rows):
    """Digital's option at equal quality, chosen on the validation draws `tuning_rows` only: per AirComp row with pilot
    CSI at a (model, N, K, SNR) with validation rows, the option of fewest mean uplink channel uses whose validation
    NMSE (`digital_summary`) is at most AirComp's median NMSE (ties: the wider, `choose_lowest`), or none.

    Returns rows of DIGITAL_CHOICE_FIELDS (digital_choice.csv): every option of every such point, `chosen` True on
    at most one per (model, N, K, SNR, receiver)."""
    scores = digital_options(tuning_rows)
    rows = []
    for r in air_rows:
        key = _setting(r)
        if r["csi"] != "pilots" or key not in scores:
            continue
        target = r["nmse_db"]
        chosen = choose_lowest({key: scores[key]}, lambda v: v["channel_uses"],
                               lambda _, v: v["nmse_db"] <= target)[key]
        rows += [dict(zip(DIGITAL_CHOICE_FIELDS[:4], key), receiver=r["receiver"], scheme=sc, num_bits=q,
                      target_nmse_db=target, val_nmse_db=v["nmse_db"], val_uses=v["channel_uses"],
                      val_channels=v["channels"], meets=v["nmse_db"] <= target, chosen=(q, sc) == chosen)
                 for (q, sc), v in scores[key].items()]
    return rows


def _choice_key(row):
    return _setting(row) + (row["receiver"],)


def matched_table(air_rows, dig_rows, choice_rows, bandwidth_hz=1e6):
    """Equal-quality view: for each AirComp row with pilot CSI that `choice_rows` (from `digital_choice`) cover, the
    chosen digital option's reported draws `dig_rows` (`digital_summary`: NMSE median over the pooled channels,
    mean costs) beside AirComp's and its validation NMSE, or NOT_REACHED when no option met the target on
    validation (digital columns blank, never imputed). Rows of MATCHED_FIELDS."""
    reported = digital_options(dig_rows)
    covered = {_choice_key(c) for c in choice_rows}
    chosen = {_choice_key(c): c for c in choice_rows if c["chosen"]}
    out = []
    for r in air_rows:
        key = _setting(r)
        if r["csi"] != "pilots" or _choice_key(r) not in covered:
            continue
        target, air_uses = r["nmse_db"], r["channel_uses"]
        row = dict(model=key[0], num_rx_ant=key[1], num_devices=key[2], snr_db=key[3], receiver=r["receiver"],
                   target_nmse_db=target, aircomp_uses=air_uses, aircomp_downlink_uses=r["downlink_uses"],
                   aircomp_energy=r["energy"], aircomp_latency_ms=air_uses / bandwidth_hz * 1e3,
                   scheme=NOT_REACHED, num_bits="", digital_val_nmse_db="", digital_nmse_db="", digital_uses="",
                   digital_downlink_uses="", digital_energy="", ratio="", digital_latency_ms="")
        if _choice_key(r) in chosen:
            c = chosen[_choice_key(r)]
            v = reported[key][(c["num_bits"], c["scheme"])]
            row |= dict(scheme=c["scheme"], num_bits=c["num_bits"], digital_val_nmse_db=c["val_nmse_db"],
                        digital_nmse_db=v["nmse_db"], digital_uses=v["channel_uses"],
                        digital_downlink_uses=v["downlink_uses"], digital_energy=v["energy"],
                        ratio=v["channel_uses"] / air_uses, digital_latency_ms=v["channel_uses"] / bandwidth_hz * 1e3)
        out.append(row)
    return out


def _numpy_core(rng, batch, n, k, num_symbols, nv):
    """Plain NumPy (complex128) twin of `_tf_core`: Rayleigh draws, MRC-aligned design, empirical MSE."""
    def crandn(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    H = crandn(batch, n, k)
    u = (H / np.linalg.norm(H, axis=1, keepdims=True)).sum(-1)
    t = np.max(1.0 / np.abs(np.matmul(u.conj()[:, None, :], H)[:, 0]), axis=-1)
    a = u * t[:, None]
    misalign = np.matmul(a.conj()[:, None, :], H)[:, 0] * (1.0 / np.matmul(a.conj()[:, None, :], H)[:, 0]) - 1
    s = crandn(batch, k, num_symbols)
    err = np.matmul(misalign[:, None, :], s)[:, 0]
    noise = crandn(batch, num_symbols) * np.sqrt(nv * np.sum(np.abs(a) ** 2, -1))[:, None]
    return np.mean(np.abs(err + noise) ** 2, axis=-1)


def speed_test(cfg):
    """Realisations per second of the Monte-Carlo core, TF graph (complex64) vs plain NumPy (complex128), and of
    the channel models (`channel_speed`): {"tensorflow", "numpy", "ratio", "setting", "channels"}."""
    n, k, num_symbols, nv, batch = 16, 20, 64, 0.1, cfg.speed_batch
    channel = FadingChannel("rayleigh", n, k)

    @tf.function
    def tf_core():
        H = channel(batch)
        a, b = align(H, mrc_direction(H), tf.constant(1.0))
        return empirical_mse(H, a, b, nv, num_symbols)

    seed = derive_seed(cfg.seed, SPEED)
    reseed(seed)
    rng = np.random.default_rng(seed)
    results = {}
    for name, fn in [("tensorflow", lambda: tf_core().numpy()),
                     ("numpy", lambda: _numpy_core(rng, batch, n, k, num_symbols, nv))]:
        fn()                                                                     # warm-up / tracing
        start = time.perf_counter()
        mses = [fn() for _ in range(cfg.speed_repeats)]
        elapsed = time.perf_counter() - start
        results[name] = dict(realisations_per_s=batch * cfg.speed_repeats / elapsed,
                             mean_mse=float(np.mean(mses)))
    results["ratio"] = results["tensorflow"]["realisations_per_s"] / results["numpy"]["realisations_per_s"]
    results["setting"] = dict(N=n, K=k, symbols=num_symbols, nv=nv, batch=batch,
                              repeats=cfg.speed_repeats, threads="TF default (all cores)")
    results["channels"] = channel_speed(batch=max(1, batch // 40), num_subcarriers=cfg.num_subcarriers,
                                        repeats=cfg.speed_repeats, seed=seed)
    return results


def channel_speed(models=("cdl-c", "umi", "uma", "rma"), num_rx_ant=16, num_devices=20, batch=100,
                  num_subcarriers=16, repeats=3, seed=0):
    """Generation time per realisation [s] of `FadingChannel` (eager, B realisations of K devices, N antennas,
    F subcarriers; one warm-up realisation each, then `repeats` timed calls), measured in one run, and each
    model's time over the first model's ("ratio"; the first is CDL-C: B x K independent links). A drop
    ("umi", "uma", "rma") has a fixed cost per call (topology, large-scale parameters), so its ratio falls
    as B grows: about 1.3-1.6x at B = 5, 0.8x at B = 50 (N = 16, K = 20, F = 16, 2 shared cores)."""
    reseed(seed)
    out = {}
    for model in models:
        channel = FadingChannel(model, num_rx_ant, num_devices, num_subcarriers=num_subcarriers)
        channel(1)                                                               # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            channel(batch)
        out[model] = dict(s_per_realisation=(time.perf_counter() - start) / (repeats * batch))
    for model in models:
        out[model]["ratio"] = out[model]["s_per_realisation"] / out[models[0]]["s_per_realisation"]
    out["setting"] = dict(N=num_rx_ant, K=num_devices, F=num_subcarriers, batch=batch, repeats=repeats)
    return out


def plot(cfg, out, air_rows, dig_rows, matched, obda_rows):
    """Per model: AirComp's NMSE vs SNR (pilot CSI, every (N, K)); for the models with digital points, AirComp against
    digital at its widest width at the digital (N, K) (all widths in digital.csv), digital channel uses over AirComp's
    at equal SNR (8 bits), the same ratio at matched NMSE, and OBDA's sign-error rate vs SNR at its threshold chosen
    on validation."""
    options = digital_options(dig_rows)
    for model in cfg.models:
        air = {}
        for r in air_rows:
            if r["model"] == model and r["csi"] == "pilots":
                air.setdefault((r["receiver"].upper(), r["num_rx_ant"], r["num_devices"]), []).append(
                    (r["snr_db"], r["nmse_db"]))
        drops = "a dropped device counts against the sum of all K"
        line_plot(out / f"nmse_vs_snr_{model}.png", {f"AirComp {rx} N={n} K={k}": v for (rx, n, k), v in air.items()},
                  SNR_AXIS, "NMSE of the sum [dB], median over channels",
                  f"AirComp, {model}, pilot CSI, every overhead counted",
                  note=f"median over {cfg.realisations} channel realisations; {drops}")
        if model not in cfg.digital_models:
            continue
        settings = {tuple(nk) for nk in cfg.digital_settings}
        curves = {f"AirComp {rx} N={n} K={k}": v for (rx, n, k), v in air.items() if (n, k) in settings}
        for (m, n, k, snr), opts in sorted(options.items()):
            for (q, sc), v in opts.items():
                if m == model and q == max(cfg.digital_bits) and sc in ("mu-mimo-amc", "tdma-amc"):
                    curves.setdefault(f"digital {sc} {q}-bit N={n} K={k}", []).append((snr, v["nmse_db"]))
        line_plot(out / f"nmse_vs_snr_{model}_digital.png", curves, SNR_AXIS,
                  "NMSE of the sum [dB], median over channels",
                  f"AirComp vs {max(cfg.digital_bits)}-bit digital, {model}, pilot CSI, every overhead counted",
                  note=f"AirComp: median of {cfg.realisations} channels; digital: median of its "
                       f"{cfg.digital_num_seeds} x {cfg.digital_realisations} reported channels; {drops}")
        signs, floors = {}, {}
        for r in obda_rows:
            if r["model"] == model:
                label = f"OBDA N={r['num_rx_ant']} K={r['num_devices']}"
                signs.setdefault(label, {}).setdefault((r["snr_db"], r["threshold"]), []).append(r["sign_error"])
                floors.setdefault(label, r["num_devices"])
        floor_seed = derive_seed(cfg.seed, MAJORITY)
        floors = {f"noise-free majority of {k} signs": (majority_floor(k, seed=floor_seed), float("nan"), label)
                  for label, k in floors.items()}
        line_plot(out / f"obda_sign_error_{model}.png",
                  {label: [(snr, m, half, f"g_th={t:g}") for (snr, t), v in sorted(pts.items())
                           for m, half in [mean_ci(v)]] for label, pts in signs.items()},
                  SNR_AXIS, "sign-error rate per entry (vs sign of the true sum)",
                  f"OBDA (one-bit majority vote), {model}, pilot CSI", hlines=floors,
                  note=f"mean and 95% CI over {cfg.digital_num_seeds} seeds; truncation threshold g_th on |u^H h_k|^2 "
                       f"chosen per point on {cfg.obda_validation_seeds} validation draws (obda_choice.csv)")
        air_uses = {(r["receiver"], *_setting(r)[1:]): r["channel_uses"] for r in air_rows
                    if r["model"] == model and r["csi"] == "pilots"}
        ratios = {}
        for r in dig_rows:
            key = ("mrc", *_setting(r)[1:])
            if r["model"] == model and r["num_bits"] == 8 and key in air_uses:
                ratios.setdefault(f"{r['scheme']} N={key[1]} K={key[2]}", {}).setdefault(key[3], []).append(
                    r["channel_uses"] / air_uses[key])
        line_plot(out / f"channel_use_advantage_{model}.png",
                  {label: ci_points(pts, log=True) for label, pts in ratios.items()},
                  SNR_AXIS, "digital uplink uses / AirComp MRC uplink uses",
                  f"Equal SNR: 8-bit digital vs AirComp, {model}",
                  logy=True, hlines={"equal channel uses": 1.0},
                  note=f"{cfg.payload_reals} reals/device; both with pilots, AirComp with its side information; "
                       f"geometric mean and 95% CI over {cfg.digital_num_seeds} seeds")
        matched_curves = {}
        for r in matched:
            if r["model"] == model and r["scheme"] != NOT_REACHED:
                matched_curves.setdefault(f"AirComp {r['receiver'].upper()} N={r['num_rx_ant']} K={r['num_devices']}",
                                          []).append((r["snr_db"], r["ratio"], f"{r['num_bits']}b {r['scheme']}"))
        missing = sorted({f"{r['receiver']} N={r['num_rx_ant']} K={r['num_devices']} {r['snr_db']:g} dB"
                          for r in matched if r["model"] == model and r["scheme"] == NOT_REACHED})
        line_plot(out / f"matched_nmse_{model}.png", matched_curves, SNR_AXIS,
                  "digital uplink uses / AirComp uplink uses", f"Equal quality (AirComp's median NMSE), {model}",
                  logy=True, hlines={"equal channel uses": 1.0},
                  note=f"digital: cheapest option (labels) meeting the target on {cfg.digital_validation_seeds} "
                       f"validation draws (digital_choice.csv), uses on reported draws; not reached: "
                       + (", ".join(missing) if missing else "none"))


def impairment_sweeps(out, quick, seed):
    """Deprecated (removed in 0.2.0): the link sweeps alone (`link_sweeps`, itself deprecated); `run_link` runs
    them as stages."""
    warn_renamed("deft6g.benchmarks.link.impairment_sweeps(out, quick, seed)",
                 "run_link (the sweeps are stages of LinkStudy)")
    print(link_sweeps(out, quick=quick, seed=seed))


SPEED_TYPES = {"core": str, "tensorflow": dict, "numpy": dict, "ratio": float, "setting": dict, "channels": dict}


class LinkStudy(Study):
    """The benchmark on the protocol (`deft6g.experiment.Study`), six tables in turn: aircomp.csv (on workers by
    channel draw), digital_tuning.csv and digital.csv (validation, then reported draws), obda_tuning.csv (on
    workers by draw) and obda.csv (at the thresholds chosen on the tuning rows), speed.csv (timed, here; speed.json
    is its row), then the physics sweeps' tables (`impairment_sweeps.link_sweep_stages`; cfg.impairments = None
    leaves them out); digital_choice.csv, obda_choice.csv, matched.csv, summary.md and the plots derived."""
    name = "link"

    def config(self, quick=False):
        return LinkConfig.quick() if quick else LinkConfig()

    def stages(self):
        digital = lambda split: (lambda cfg, done: digital_points(cfg, split))      # noqa: E731
        arm = lambda name: (lambda setup, point: setup[name](point))                 # noqa: E731 (its point class)
        return [Stage("aircomp.csv", AIRCOMP_FIELDS[:6], AIRCOMP_TYPES, aircomp_points, arm("aircomp"),
                      _describe_aircomp, group=AIRCOMP_FIELDS[:4]),
                Stage("digital_tuning.csv", DIGITAL_FIELDS[:7], DIGITAL_TYPES, digital("validation"), arm("digital"),
                      _describe_digital),
                Stage("digital.csv", DIGITAL_FIELDS[:7], DIGITAL_TYPES, digital("reported"), arm("digital"),
                      _describe_digital),
                Stage("obda_tuning.csv", OBDA_FIELDS[:6], OBDA_TYPES, obda_tuning_points, arm("obda"),
                      _describe_obda, group=OBDA_FIELDS[:5]),
                Stage("obda.csv", OBDA_FIELDS[:5], OBDA_TYPES, obda_points, arm("obda"), _describe_obda),
                Stage("speed.csv", ["core"], SPEED_TYPES, lambda cfg, done: [dict(core="monte_carlo")],
                      lambda setup, point: speed_test(setup["cfg"]), here=True),
                *link_sweep_stages()]

    def setup(self, cfg):
        return {"cfg": cfg, "aircomp": _AirCompPoint(cfg), "digital": _DigitalPoint(cfg), "obda": _OBDAPoint(cfg),
                "impairments": cfg.impairments and LinkSweepPoints(cfg.impairments)}

    def derive(self, cfg, rows):
        return {**rows, "extra": _extra(cfg, rows)}

    def tables(self, cfg, rows):
        extra = rows["extra"]
        return {"digital_choice.csv": (DIGITAL_CHOICE_FIELDS, extra["digital_choice"]),
                "obda_choice.csv": (OBDA_CHOICE_FIELDS, extra["obda_choice"]),
                "matched.csv": (MATCHED_FIELDS, extra["matched"]), "speed.json": extra["speed"],
                "summary.md": summary_markdown(rows["aircomp.csv"], extra)}

    def summary(self, cfg, rows):
        return summary(cfg, rows["aircomp.csv"], rows["digital.csv"], rows["extra"])

    def plot(self, out, cfg, rows):
        plot(cfg, out, rows["aircomp.csv"], rows["digital.csv"], rows["extra"]["matched"], rows["obda.csv"])
        if rows["extra"]["impairments"]:
            rows["extra"]["impairments"][1].draw(out)


def _extra(cfg, rows):
    """What `summary` prints beside the AirComp and digital rows, from the study's {file: rows}: speed (the speed
    test), obda (obda.csv's rows), obda_choice and digital_choice (the validation choices), matched (the
    equal-quality rows), impairments (the physics sweeps' summary text and figures; None without them)."""
    dig_choice = digital_choice(rows["aircomp.csv"], rows["digital_tuning.csv"])
    speed = {k: v for k, v in rows["speed.csv"][0].items() if k != "core"}
    return dict(speed=speed, obda=rows["obda.csv"], obda_choice=obda_choice(rows["obda_tuning.csv"])[1],
                digital_choice=dig_choice,
                matched=matched_table(rows["aircomp.csv"], rows["digital.csv"], dig_choice, cfg.bandwidth_hz),
                impairments=cfg.impairments and link_sweep_report(cfg.impairments, rows))


def run_link(out_dir="results/link", quick=False, seed=None, log=print, config=None, **parallel):
    """Run (or resume) the link benchmark, its physics sweeps included, into `out_dir` (`deft6g.experiment.run`:
    CSV, JSON, PNG) with `config` (a LinkConfig; None: the default or `quick` one), its seed replaced by `seed`
    when given. parallel: workers, ray_address, worker_gpus of `deft6g.experiment.run_points` for the AirComp,
    digital, OBDA and sweep points (the speed test runs here). Returns the `StudyResult`: .rows {file: rows},
    .derived["extra"] what `summary` prints beside them (`_extra`)."""
    cfg = config if config is not None else LinkConfig.quick() if quick else LinkConfig()
    result = run(LinkStudy(), out_dir, cfg if seed is None else replace(cfg, seed=seed), log=log, **parallel)
    rows = result.rows
    return result.with_legacy("run_link", (result.config, rows["aircomp.csv"], rows["digital.csv"],
                                           result.derived["extra"]))


def _fmt_uses(uses):
    return f"{uses / 1e3:.1f}k" if uses >= 1e4 else f"{uses:,.0f}"


def summary_markdown(air_rows, extra):
    """summary.md: per channel, N and K of the equal-quality comparison, a Markdown table over SNR of AirComp with
    pilots (median NMSE, uplink and downlink uses), its genie, the cheapest digital option meeting AirComp's NMSE
    (chosen on validation draws) and OBDA at its validated threshold; MRC receiver (ZF in matched.csv)."""
    air = {(*_setting(r)[:3], r["receiver"], r["csi"], r["snr_db"]): r for r in air_rows}
    obda = {}
    for r in extra["obda"]:
        obda.setdefault(_setting(r), []).append(r)
    groups = {}
    for r in extra["matched"]:
        if r["receiver"] == "mrc":
            groups.setdefault(_setting(r)[:3], []).append(r)
    out = []
    for (model, n, k), rows in groups.items():
        out += [f"**{model}, N = {n}, K = {k}** (MRC receiver; ZF in matched.csv)", "",
                "| SNR [dB] | AirComp, pilots: NMSE [dB] / uplink uses (downlink) | AirComp genie: NMSE [dB] / uses | "
                "cheapest digital meeting AirComp's NMSE: option / NMSE [dB] / uplink uses (downlink) / digital over "
                "AirComp | OBDA: sign-error rate / uplink uses (g_th) |", "|---:|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: r["snr_db"]):
            snr = r["snr_db"]
            pil, gen = air[model, n, k, "mrc", "pilots", snr], air.get((model, n, k, "mrc", "genie", snr))
            cells = [f"{snr:g}", f"{pil['nmse_db']:.1f} / {_fmt_uses(pil['channel_uses'])} "
                                 f"({_fmt_uses(pil['downlink_uses'])})",
                     "–" if gen is None else f"{gen['nmse_db']:.1f} / {_fmt_uses(gen['channel_uses'])}"]
            if r["scheme"] == NOT_REACHED:
                cells.append(NOT_REACHED)
            else:
                scheme = {"mu-mimo-amc": "MU-MIMO", "tdma-amc": "TDMA"}.get(r["scheme"], r["scheme"])
                cells.append(f"{scheme} {r['num_bits']}-bit / {r['digital_nmse_db']:.1f} / "
                             f"{_fmt_uses(r['digital_uses'])} ({_fmt_uses(r['digital_downlink_uses'])}) / "
                             f"{r['ratio']:.2f}x")
            o = obda.get((model, n, k, snr), [])
            cells.append("–" if not o else f"{np.mean([x['sign_error'] for x in o]):.3f} / "
                                           f"{_fmt_uses(np.mean([x['channel_uses'] for x in o]))} "
                                           f"({o[0]['threshold']:g})")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def summary(cfg, air_rows, dig_rows, extra):
    """A short text table: AirComp NMSE and costs per SNR, the equal-quality comparison, OBDA at its threshold chosen
    on validation, the speed ratio, the physics sweeps."""
    speed, bw = extra["speed"], cfg.bandwidth_hz
    lines = ["AirComp median NMSE [dB] | uplink channel uses (payload + pilots + side info) at "
             + ", ".join(f"{s:g}" for s in cfg.snr_db) + " dB; 'genie': perfect CSI, free side information"]
    groups = {}
    for r in air_rows:
        name = f"{r['receiver']} N{r['num_rx_ant']}K{r['num_devices']} {r['csi']}"
        groups.setdefault((r["model"], name), []).append(r)
    for (model, scheme), rows in groups.items():
        by_snr = {r["snr_db"]: r for r in rows}
        cells = [f"{by_snr[s]['nmse_db']:6.1f} | {_fmt_uses(by_snr[s]['channel_uses']):>6}"
                 for s in map(float, cfg.snr_db) if s in by_snr]
        dropped = max(r["dropped"] for r in rows)
        lines.append(f"  {model:<11}{scheme:<22}" + "; ".join(cells)
                     + (f"  (dropped <= {dropped:.3f})" if dropped else ""))
    lines.append(f"Equal quality (matched.csv): AirComp's median NMSE as the target; the cheapest digital (scheme, "
                 f"bits) meeting it on {cfg.digital_validation_seeds} validation draws (digital_choice.csv), its "
                 f"NMSE on validation -> on the reported draws (median over their channels); uplink channel uses, "
                 f"latency at {bw / 1e6:g} MHz, downlink uses")
    for r in extra["matched"]:
        head = (f"  {r['model']:<11}{r['receiver']} N{r['num_rx_ant']}K{r['num_devices']} {r['snr_db']:>5g} dB "
                f"target {r['target_nmse_db']:6.1f} dB: AirComp {_fmt_uses(r['aircomp_uses'])} "
                f"({r['aircomp_latency_ms']:.2f} ms, down {_fmt_uses(r['aircomp_downlink_uses'])})")
        if r["scheme"] == NOT_REACHED:
            lines.append(head + f" | digital {NOT_REACHED}")
        else:
            lines.append(head + f" | digital {r['scheme']} {r['num_bits']}-bit {r['digital_val_nmse_db']:.1f} -> "
                                f"{r['digital_nmse_db']:.1f} dB "
                                f"{_fmt_uses(r['digital_uses'])} ({r['digital_latency_ms']:.2f} ms, down "
                                f"{_fmt_uses(r['digital_downlink_uses'])}) = {r['ratio']:.1f}x")
    obda = {}
    for r in extra["obda"]:
        obda.setdefault(_setting(r)[:3], {}).setdefault(r["snr_db"], []).append(
            (r["sign_error"], r["channel_uses"], r["threshold"]))
    lines.append(f"OBDA (obda.csv): sign-error rate per entry vs the sign of the true sum | uplink uses, mean over "
                 f"{cfg.digital_num_seeds} seeds, at the truncation threshold chosen on {cfg.obda_validation_seeds} "
                 f"validation draws (g_th, obda_choice.csv)")
    for (model, n, k), pts in obda.items():
        lines.append(f"  {model:<11}N{n}K{k:<4}" + "; ".join(f"{s:g} dB: {np.mean(v, axis=0)[0]:.4f} | "
                                                         f"{_fmt_uses(np.mean(v, axis=0)[1])} (g_th {v[0][2]:g})"
                                                         for s, v in sorted(pts.items()))
                     + f"  (noise-free majority: {majority_floor(k, seed=derive_seed(cfg.seed, MAJORITY)):.3f})")
    tfs, nps = speed["tensorflow"]["realisations_per_s"], speed["numpy"]["realisations_per_s"]
    lines.append(f"Monte-Carlo core (N=16, K=20, 64 symbols): TF {tfs:,.0f}/s, NumPy {nps:,.0f}/s, "
                 f"ratio {speed['ratio']:.2f}x")
    if "channels" in speed:
        ch = speed["channels"]
        lines.append(f"Channel generation per realisation (N={ch['setting']['N']}, K={ch['setting']['K']}, "
                     f"F={ch['setting']['F']}): " + ", ".join(f"{m} {v['s_per_realisation'] * 1e3:.1f} ms "
                                                          f"({v['ratio']:.2f}x)" for m, v in ch.items()
                                                          if m != "setting"))
    if extra.get("impairments"):
        lines.append(extra["impairments"][0])
    return "\n".join(lines)
