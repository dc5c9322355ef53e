"""Link-level benchmark: AirComp MSE vs SNR (receivers, N, K, channel models) against the digital baseline,
and the speed of the vectorised TF Monte-Carlo core against the same maths in plain NumPy."""

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf

from deft6g.optim import align, closed_form_design, mrc_direction
from deft6g.phy import FLAT_MODELS, DigitalUplink, FadingChannel, aircomp_channel_uses, aircomp_mse, empirical_mse
from deft6g.rng import reseed

from deft6g.experiment import ResultStore, line_plot, mean_ci, percentiles, prepare_output, run_points

# AirComp: the MSE over channel realisations is heavy-tailed (aligned designs: infinite mean at N = K and N = 1),
# so the median and the 10/90 percentiles are reported; the mean and its 95% CI only where the variance is
# finite (ZF with N >= K + 2: MSE = sigma^2 1^T (H^H H)^{-1} 1, inverse-Wishart moments), else blank.
AIRCOMP_FIELDS = ["model", "num_rx_ant", "num_devices", "receiver", "snr_db", "mse_median", "mse_p10", "mse_p90",
                  "mse_mean", "mse_mean_ci", "nmse_db", "channel_uses"]
# Digital: one row per (model, N, K, scheme, SNR, seed), averaged over `digital_realisations` channels; the
# channel-use advantage of AirComp is the digital channel uses over AirComp's for the same payload, with
# AirComp's standardisation side information (`advantage`) and without it (`advantage_payload`).
DIGITAL_FIELDS = ["model", "num_rx_ant", "num_devices", "scheme", "snr_db", "seed", "nmse_db", "ber", "bler",
                  "delivered", "groups", "channel_uses", "aircomp_channel_uses", "advantage", "advantage_payload"]
# The fair baseline (MU-MIMO LMMSE + AMC + CRC), its TDMA special case, and the earlier fixed QPSK 1/2 TDMA one
# (bit-true always: rate 1/2 is not in the calibrated MCS table).
DIGITAL_SCHEMES = {"mu-mimo-amc": dict(mcs="adaptive", detector="lmmse", streams="auto"),
                   "tdma-amc": dict(mcs="adaptive", streams=1),
                   "tdma-qpsk-1/2": dict(mcs=(2, 0.5), streams=1, link="bits")}


@dataclass
class LinkConfig:
    """What `deft6g link` runs. SNR = P / sigma^2 per device [dB], P = 1 for every device."""
    snr_db: list = field(default_factory=lambda: [-10, -5, 0, 5, 10, 15, 20, 25, 30])
    antennas_devices: list = field(default_factory=lambda: [[4, 4], [8, 8], [16, 8], [16, 20]])
    models: list = field(default_factory=lambda: ["rayleigh", "correlated", "tdl-a", "cdl-c"])
    receivers: list = field(default_factory=lambda: ["mrc", "zf"])
    realisations: int = 2000          # channel matrices per point (OFDM models: realisations / F draws of F)
    num_subcarriers: int = 16
    payload_reals: int = 500          # per device, for the digital comparison and the channel-use count
    digital_realisations: int = 4     # channels per digital point
    digital_link: str = "abstract"    # adaptive schemes: calibrated BLER ("abstract") or bit-true ("bits")
    digital_num_seeds: int = 3
    digital_snr_db: list = field(default_factory=lambda: [-5, 0, 5, 10, 15, 20, 25])
    digital_settings: list = field(default_factory=lambda: [[8, 8], [16, 20]])
    digital_schemes: list = field(default_factory=lambda: list(DIGITAL_SCHEMES))
    speed_batch: int = 1000           # speed test: N = 16, K = 20, 64 symbols per realisation
    speed_repeats: int = 5
    seed: int = 0

    @classmethod
    def quick(cls):
        return cls(snr_db=[0, 10, 20], antennas_devices=[[4, 4], [8, 8]], models=["rayleigh", "tdl-a"],
                   realisations=100, num_subcarriers=8, digital_realisations=2, digital_snr_db=[0, 10, 20],
                   digital_schemes=["mu-mimo-amc", "tdma-amc"], speed_batch=200, speed_repeats=2)


def _label(point):
    return f"{point['model']} {point['receiver']} N={point['num_rx_ant']} K={point['num_devices']} {point['snr_db']} dB"


def _nmse_db(mse, num_devices):
    """NMSE = MSE / E|f|^2 with E|f|^2 = K for K unit-variance payloads, in dB."""
    return float(10 * np.log10(mse / num_devices))


def _channels(cfg, model, n, k, seed):
    channel = FadingChannel(model, n, k, num_subcarriers=cfg.num_subcarriers)
    H = channel(max(1, cfg.realisations // cfg.num_subcarriers) if channel.is_ofdm else cfg.realisations, seed=seed)
    return tf.reshape(H, [-1, n, k]) if H.shape.rank == 4 else H                 # realisations x subcarriers


class _AirCompPoint:
    """An AirComp point, picklable for Ray workers: the channel draw and design of its (model, N, K, receiver)
    is kept for that group's other SNRs (run_points group=AIRCOMP_FIELDS[:4])."""

    def __init__(self, cfg):
        self.cfg, self.designs = cfg, {}

    def __call__(self, p):
        cfg = self.cfg
        model, n, k, receiver = p["model"], p["num_rx_ant"], p["num_devices"], p["receiver"]
        if (model, n, k, receiver) not in self.designs:
            H = _channels(cfg, model, n, k, cfg.seed)
            self.designs = {(model, n, k, receiver): (H, *closed_form_design(H, 1.0, receiver))}
        H, a, b = self.designs[(model, n, k, receiver)]
        mse = aircomp_mse(H, a, b, 10 ** (-p["snr_db"] / 10)).numpy()
        p10, median, p90 = percentiles(mse, (10, 50, 90))
        mean, ci = mean_ci(mse) if receiver == "zf" and n >= k + 2 else ("", "")
        f = 1 if model in FLAT_MODELS else cfg.num_subcarriers
        return p | dict(mse_median=median, mse_p10=p10, mse_p90=p90, mse_mean=mean, mse_mean_ci=ci,
                        nmse_db=_nmse_db(median, k),
                        channel_uses=aircomp_channel_uses(cfg.payload_reals, num_devices=k, num_subcarriers=f))


def run_aircomp(cfg, store, **parallel):
    """One point per (model, N, K, receiver, SNR): MSE percentiles over the channel realisations (one channel
    draw and one design per (model, N, K, receiver), shared by its SNRs). NMSE = median MSE / K."""
    points = [dict(model=m, num_rx_ant=n, num_devices=k, receiver=r, snr_db=s) for m in cfg.models
              for n, k in cfg.antennas_devices for r in cfg.receivers for s in cfg.snr_db]
    run_points(points, _AirCompPoint(cfg), store, desc="AirComp points", group=AIRCOMP_FIELDS[:4], **parallel,
               describe=lambda p, row: f"{_label(p)}: median NMSE {row['nmse_db']:.1f} dB")


class _DigitalPoint:
    """A digital point, picklable for Ray workers (see `run_digital`)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, p):
        cfg = self.cfg
        n, k, seed = p["num_rx_ant"], p["num_devices"], p["seed"]
        x = tf.random.stateless_normal([cfg.digital_realisations, k, cfg.payload_reals], [seed, 1])
        H = FadingChannel(p["model"], n, k, num_subcarriers=cfg.num_subcarriers)(cfg.digital_realisations,
                                                                                 seed=seed)
        scheme = {"link": cfg.digital_link} | DIGITAL_SCHEMES[p["scheme"]]
        res = DigitalUplink(8, **scheme)(x, H, 10 ** (-p["snr_db"] / 10), seed=seed + 1)
        f = 1 if p["model"] in FLAT_MODELS else cfg.num_subcarriers
        air = aircomp_channel_uses(cfg.payload_reals, num_devices=k, num_subcarriers=f)
        uses = float(np.mean(res.channel_uses))
        return p | dict(nmse_db=_nmse_db(max(res.agg_mse, 1e-30), k), ber=res.ber, bler=res.bler,
                        delivered=float(tf.reduce_mean(tf.cast(res.valid, tf.float32))),
                        groups=float(np.mean(res.groups)), channel_uses=uses, aircomp_channel_uses=air,
                        advantage=uses / air,
                        advantage_payload=uses / aircomp_channel_uses(cfg.payload_reals, num_subcarriers=f))


def run_digital(cfg, store, **parallel):
    """One point per (model, N, K, scheme, SNR, seed): `digital_realisations` channels and unit-variance
    Gaussian payloads of `payload_reals` reals per device (`DigitalUplink`, 8-bit quantiser; adaptive schemes
    with `digital_link`: the channel uses do not depend on it, the drawn block failures do)."""
    points = [dict(model=m, num_rx_ant=n, num_devices=k, scheme=sc, snr_db=s, seed=cfg.seed + i)
              for m in cfg.models for n, k in cfg.digital_settings for sc in cfg.digital_schemes
              for s in cfg.digital_snr_db for i in range(cfg.digital_num_seeds)]
    run_points(points, _DigitalPoint(cfg), store, desc="digital points", **parallel,
               describe=lambda p, row: f"{p['model']} {p['scheme']} N={p['num_rx_ant']} K={p['num_devices']} "
                                       f"{p['snr_db']} dB seed {p['seed']}: {row['channel_uses']:.0f} uses "
                                       f"({row['advantage']:.1f}x AirComp), {row['delivered']:.3f} delivered")


def _mean_db(values_db):
    """Mean in the linear domain of dB values, in dB."""
    return float(10 * np.log10(np.mean(10 ** (np.asarray(values_db, float) / 10))))


def _digital_summary(cfg, dig_rows, bandwidth_hz=1e6):
    """Lines: per (model, scheme, N, K) the digital NMSE (mean over seeds) and AirComp's channel-use advantage
    (mean +- 95% CI over the seeds) at each digital SNR, and the digital latency at `bandwidth_hz` (one use per 1/B s)."""
    nmse = {}
    for r in dig_rows:
        key = (r["model"], r["scheme"], int(r["num_rx_ant"]), int(r["num_devices"]))
        nmse.setdefault(key, {}).setdefault(float(r["snr_db"]), []).append(float(r["nmse_db"]))
    lines = [f"Digital baseline ({cfg.payload_reals} reals/device, 8-bit): NMSE [dB] | AirComp's channel-use "
             f"advantage (digital uses / AirComp uses with side information; without it) | digital latency at "
             f"{bandwidth_hz / 1e6:g} MHz; mean +- 95% CI over {cfg.digital_num_seeds} seeds"]
    payload = _advantage(cfg, dig_rows, "advantage_payload")
    for key, pts in _advantage(cfg, dig_rows).items():
        cells = []
        for (snr, mean, ci), (_, mean_p, _) in zip(pts, payload[key]):
            uses = mean * aircomp_channel_uses(cfg.payload_reals, num_devices=key[3],
                                               num_subcarriers=1 if key[0] in FLAT_MODELS else cfg.num_subcarriers)
            cells.append(f"{snr:g} dB: {_mean_db(nmse[key][snr]):6.1f} | {mean:5.1f} +- {ci:4.1f}x "
                         f"({mean_p:5.1f}x payload only) | {uses / bandwidth_hz * 1e3:6.2f} ms")
        lines.append(f"  {key[0]:<11}{key[1]:<15}N{key[2]}K{key[3]:<4}" + "; ".join(cells))
    return lines


def _advantage(cfg, dig_rows, column="advantage"):
    """{(model, scheme, N, K): [(snr, mean, ci), ...]} of AirComp's channel-use advantage over the seeds."""
    by = {}
    for r in dig_rows:
        key = (r["model"], r["scheme"], int(r["num_rx_ant"]), int(r["num_devices"]))
        by.setdefault(key, {}).setdefault(float(r["snr_db"]), []).append(float(r[column]))
    return {key: [(s, *mean_ci(v)) for s, v in sorted(snrs.items())] for key, snrs in by.items()}


def _numpy_core(rng, batch, n, k, num_symbols, noise_var):
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
    noise = crandn(batch, num_symbols) * np.sqrt(noise_var * np.sum(np.abs(a) ** 2, -1))[:, None]
    return np.mean(np.abs(err + noise) ** 2, axis=-1)


def speed_test(cfg):
    """Realisations per second of the Monte-Carlo core, TF graph (complex64) vs plain NumPy (complex128)."""
    n, k, num_symbols, noise_var, batch = 16, 20, 64, 0.1, cfg.speed_batch
    channel = FadingChannel("rayleigh", n, k)

    @tf.function
    def tf_core():
        H = channel(batch)
        a, b = align(H, mrc_direction(H), tf.constant(1.0))
        return empirical_mse(H, a, b, noise_var, num_symbols)

    reseed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    results = {}
    for name, fn in [("tensorflow", lambda: tf_core().numpy()),
                     ("numpy", lambda: _numpy_core(rng, batch, n, k, num_symbols, noise_var))]:
        fn()                                                                     # warm-up / tracing
        start = time.perf_counter()
        mses = [fn() for _ in range(cfg.speed_repeats)]
        elapsed = time.perf_counter() - start
        results[name] = dict(realisations_per_s=batch * cfg.speed_repeats / elapsed,
                             mean_mse=float(np.mean(mses)))
    results["ratio"] = results["tensorflow"]["realisations_per_s"] / results["numpy"]["realisations_per_s"]
    results["setting"] = dict(N=n, K=k, symbols=num_symbols, noise_var=noise_var, batch=batch,
                              repeats=cfg.speed_repeats, threads="TF default (all cores)")
    results["channels"] = channel_speed(batch=max(1, batch // 40), num_subcarriers=cfg.num_subcarriers,
                                        repeats=cfg.speed_repeats, seed=cfg.seed)
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


def plot(cfg, out, air_rows, dig_rows):
    for model in cfg.models:
        curves = {}
        for r in air_rows:
            if r["model"] == model:
                curves.setdefault(f"AirComp {r['receiver'].upper()} N={r['num_rx_ant']} K={r['num_devices']} "
                                  f"({r['channel_uses']} uses)",
                                  []).append((float(r["snr_db"]), float(r["nmse_db"])))
        digital = {}
        for r in dig_rows:
            if r["model"] == model and r["scheme"] == "mu-mimo-amc":
                digital.setdefault((r["num_rx_ant"], r["num_devices"], float(r["snr_db"])), []).append(
                    float(r["nmse_db"]))
        for (n, k, snr), v in sorted(digital.items()):
            curves.setdefault(f"digital MU-MIMO+AMC+CRC N={n} K={k}", []).append(
                (snr, _mean_db(v)))
        line_plot(out / f"nmse_vs_snr_{model}.png", curves, "SNR = P / sigma^2 per device [dB]",
                  "NMSE of the sum [dB] (AirComp: median over channels)", f"AirComp vs digital, {model}",
                  note="digital: mean over seeds; dropped blocks dominate it (8-bit quantiser floor -43.3 dB); "
                       "AirComp N = K curves overlap")
        adv = {f"{scheme} N={n} K={k}": pts for (m, scheme, n, k), pts in _advantage(cfg, dig_rows).items()
               if m == model}
        line_plot(out / f"channel_use_advantage_{model}.png", adv, "SNR = P / sigma^2 per device [dB]",
                  "digital channel uses / AirComp channel uses", f"AirComp's channel-use advantage, {model}",
                  logy=True, hlines={"equal channel uses": 1.0},
                  note=f"{cfg.payload_reals} reals/device, 8 bits; digital: CRC, header, padding; AirComp: payload "
                       f"+ side info; 95% CI, {cfg.digital_num_seeds} seeds")


def impairment_sweeps(out, quick, seed):
    """Truncated inversion vs threshold, transmit amplitude error, phase error and phase drift (residual
    CFO/timing offset), CSI from pilots: separate CSV/PNG files, summary printed (benchmarks/impairment_sweeps.py)."""
    from .impairment_sweeps import link_sweeps
    print(link_sweeps(out, quick=quick, seed=seed))


def run_link(out_dir="results/link", quick=False, seed=0, **parallel):
    """Run the link benchmark into `out_dir` (CSV, JSON, PNG); finished points are kept across re-runs.
    parallel: workers, ray_address, worker_gpus of `deft6g.experiment.run_points` for the AirComp and digital
    points (the speed test and the impairment sweeps run here)."""
    cfg = LinkConfig.quick() if quick else LinkConfig()
    cfg.seed = seed
    out = prepare_output(out_dir, "link", asdict(cfg))
    air = ResultStore(out / "aircomp.csv", AIRCOMP_FIELDS, AIRCOMP_FIELDS[:5])
    dig = ResultStore(out / "digital.csv", DIGITAL_FIELDS, DIGITAL_FIELDS[:6])
    run_aircomp(cfg, air, **parallel)
    run_digital(cfg, dig, **parallel)
    speed = speed_test(cfg)
    (out / "speed.json").write_text(json.dumps(speed, indent=2))
    plot(cfg, out, air.rows(), dig.rows())
    impairment_sweeps(out, quick, seed)
    return cfg, air.rows(), dig.rows(), speed


def summary(cfg, air_rows, dig_rows, speed):
    """A short text table: NMSE at a few SNRs, channel uses, and the speed ratio."""
    lines = [f"{'model':<11}{'scheme':<26}" + "".join(f"{s:>8}" for s in cfg.snr_db) + "   ch.uses"]
    groups = {}
    for r in air_rows:
        groups.setdefault((r["model"], f"AirComp {r['receiver']} N{r['num_rx_ant']}K{r['num_devices']}"), []).append(r)
    for (model, scheme), rows in groups.items():
        by_snr = {float(r["snr_db"]): float(r["nmse_db"]) for r in rows}
        lines.append(f"{model:<11}{scheme:<26}" + "".join(f"{by_snr.get(float(s), float('nan')):8.1f}"
                                                          for s in cfg.snr_db) + f"{rows[0]['channel_uses']:>10}")
    lines += _digital_summary(cfg, dig_rows)
    tfs, nps = speed["tensorflow"]["realisations_per_s"], speed["numpy"]["realisations_per_s"]
    lines.append("NMSE in dB; AirComp: median over channel realisations (10/90 percentiles, and the mean where it "
                 "exists, in aircomp.csv); channel uses include the side information")
    lines.append(f"Monte-Carlo core (N=16, K=20, 64 symbols): TF {tfs:,.0f}/s, NumPy {nps:,.0f}/s, "
                 f"ratio {speed['ratio']:.2f}x")
    if "channels" in speed:
        ch = speed["channels"]
        lines.append(f"Channel generation per realisation (N={ch['setting']['N']}, K={ch['setting']['K']}, "
                     f"F={ch['setting']['F']}): " + ", ".join(f"{m} {v['s_per_realisation'] * 1e3:.1f} ms "
                                                          f"({v['ratio']:.2f}x)" for m, v in ch.items()
                                                          if m != "setting"))
    return "\n".join(lines)
