"""Link-level benchmark: AirComp MSE vs SNR (receivers, N, K, channel models) against the digital baseline,
and the speed of the vectorised TF Monte-Carlo core against the same maths in plain NumPy."""

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from deft6g.optim import align, closed_form_design, mrc_direction
from deft6g.phy import DigitalUplink, UplinkChannel, aircomp_channel_uses, aircomp_mse, empirical_mse, reseed
from deft6g.phy.channels import FLAT_MODELS

from deft6g.experiment import ResultStore, line_plot, mean_ci, percentiles, prepare_output, run_points

# AirComp: the MSE over channel realisations is heavy-tailed (aligned designs: infinite mean at N = K and N = 1),
# so the median and the 10/90 percentiles are reported; the mean and its 95% CI only where the variance is
# finite (ZF with N >= K + 2: MSE = sigma^2 1^T (H^H H)^{-1} 1, inverse-Wishart moments), else blank.
AIRCOMP_FIELDS = ["model", "num_rx_ant", "num_devices", "receiver", "snr_db", "mse_median", "mse_p10", "mse_p90",
                  "mse_mean", "mse_mean_ci", "nmse_db", "channel_uses"]
DIGITAL_FIELDS = ["model", "num_rx_ant", "num_devices", "snr_db", "nmse_db", "ber", "bler", "channel_uses"]


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
    digital_realisations: int = 8
    digital_setting: list = field(default_factory=lambda: [8, 8])
    speed_batch: int = 1000           # speed test: N = 16, K = 20, 64 symbols per realisation
    speed_repeats: int = 5
    seed: int = 0

    @classmethod
    def quick(cls):
        return cls(snr_db=[0, 10, 20], antennas_devices=[[4, 4], [8, 8]], models=["rayleigh", "tdl-a"],
                   realisations=100, num_subcarriers=8, payload_reals=200, digital_realisations=2,
                   speed_batch=200, speed_repeats=2)


def _label(point):
    return f"{point['model']} {point['receiver']} N={point['num_rx_ant']} K={point['num_devices']} {point['snr_db']} dB"


def _nmse_db(mse, num_devices):
    """NMSE = MSE / E|f|^2 with E|f|^2 = K for K unit-variance payloads, in dB."""
    return float(10 * np.log10(mse / num_devices))


def _channels(cfg, model, n, k, seed):
    channel = UplinkChannel(model, n, k, num_subcarriers=cfg.num_subcarriers)
    H = channel(max(1, cfg.realisations // cfg.num_subcarriers) if channel.is_ofdm else cfg.realisations, seed=seed)
    return tf.reshape(H, [-1, n, k]) if H.shape.rank == 4 else H                 # realisations x subcarriers


def run_aircomp(cfg, store):
    """One point per (model, N, K, receiver, SNR): MSE percentiles over the channel realisations (one channel
    draw and one design per (model, N, K, receiver), shared by its SNRs). NMSE = median MSE / K."""
    designs = {}

    def point(p):
        model, n, k, receiver = p["model"], p["num_rx_ant"], p["num_devices"], p["receiver"]
        if (model, n, k, receiver) not in designs:
            H = _channels(cfg, model, n, k, cfg.seed)
            designs[(model, n, k, receiver)] = (H, *closed_form_design(H, 1.0, receiver))
        H, a, b = designs[(model, n, k, receiver)]
        mse = aircomp_mse(H, a, b, 10 ** (-p["snr_db"] / 10)).numpy()
        p10, median, p90 = percentiles(mse, (10, 50, 90))
        mean, ci = mean_ci(mse) if receiver == "zf" and n >= k + 2 else ("", "")
        f = 1 if model in FLAT_MODELS else cfg.num_subcarriers
        return p | dict(mse_median=median, mse_p10=p10, mse_p90=p90, mse_mean=mean, mse_mean_ci=ci,
                        nmse_db=_nmse_db(median, k),
                        channel_uses=aircomp_channel_uses(cfg.payload_reals, num_devices=k, num_subcarriers=f))

    points = [dict(model=m, num_rx_ant=n, num_devices=k, receiver=r, snr_db=s) for m in cfg.models
              for n, k in cfg.antennas_devices for r in cfg.receivers for s in cfg.snr_db]
    run_points(points, point, store, desc="AirComp points",
               describe=lambda p, row: f"{_label(p)}: median NMSE {row['nmse_db']:.1f} dB")


def run_digital(cfg, store, bar):
    n, k = cfg.digital_setting
    uplink = DigitalUplink(num_bits=8, num_bits_per_symbol=2, code_rate=0.5)
    for model in cfg.models:
        for snr in cfg.snr_db:
            row = dict(model=model, num_rx_ant=n, num_devices=k, snr_db=snr)
            if not store.done(row):
                reseed(cfg.seed + 1)
                x = tf.random.stateless_normal([cfg.digital_realisations, k, cfg.payload_reals], [cfg.seed, 1])
                H = UplinkChannel(model, n, k, num_subcarriers=cfg.num_subcarriers)(cfg.digital_realisations)
                res = uplink(x, H, 10 ** (-snr / 10))
                store.add(row | dict(nmse_db=_nmse_db(max(res.agg_mse, 1e-30), k), ber=res.ber, bler=res.bler,
                                     channel_uses=res.channel_uses))
            bar.update(1)


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
    channel = UplinkChannel("rayleigh", n, k)

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
    return results


def plot(cfg, out, air_rows, dig_rows):
    for model in cfg.models:
        curves = {}
        for r in air_rows:
            if r["model"] == model:
                curves.setdefault(f"AirComp {r['receiver'].upper()} N={r['num_rx_ant']} K={r['num_devices']} "
                                  f"({r['channel_uses']} uses)",
                                  []).append((float(r["snr_db"]), float(r["nmse_db"])))
        for r in dig_rows:
            if r["model"] == model:
                curves.setdefault(f"digital N={r['num_rx_ant']} K={r['num_devices']} ({r['channel_uses']} uses)",
                                  []).append(
                    (float(r["snr_db"]), float(r["nmse_db"])))
        line_plot(out / f"nmse_vs_snr_{model}.png", curves, "SNR = P / sigma^2 per device [dB]",
                  "NMSE of the sum [dB] (AirComp: median over channels)", f"AirComp vs digital, {model}")


def impairment_sweeps(out, quick, seed):
    """Truncated inversion vs threshold, transmit phase error, CSI from pilots: separate CSV/PNG files, summary
    printed (benchmarks/impairment_sweeps.py)."""
    from .impairment_sweeps import link_sweeps
    print(link_sweeps(out, quick=quick, seed=seed))


def run_link(out_dir="results/link", quick=False, seed=0):
    """Run the link benchmark into `out_dir` (CSV, JSON, PNG); finished points are kept across re-runs."""
    cfg = LinkConfig.quick() if quick else LinkConfig()
    cfg.seed = seed
    out = prepare_output(out_dir, "link", asdict(cfg))
    air = ResultStore(out / "aircomp.csv", AIRCOMP_FIELDS, AIRCOMP_FIELDS[:5])
    dig = ResultStore(out / "digital.csv", DIGITAL_FIELDS, DIGITAL_FIELDS[:4])
    run_aircomp(cfg, air)
    with tqdm(total=len(cfg.models) * len(cfg.snr_db), desc="digital points") as bar:
        run_digital(cfg, dig, bar)
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
    for r in dig_rows:
        groups.setdefault((r["model"], f"digital N{r['num_rx_ant']}K{r['num_devices']}"), []).append(r)
    for (model, scheme), rows in groups.items():
        by_snr = {float(r["snr_db"]): float(r["nmse_db"]) for r in rows}
        lines.append(f"{model:<11}{scheme:<26}" + "".join(f"{by_snr.get(float(s), float('nan')):8.1f}"
                                                          for s in cfg.snr_db) + f"{rows[0]['channel_uses']:>10}")
    tfs, nps = speed["tensorflow"]["realisations_per_s"], speed["numpy"]["realisations_per_s"]
    lines.append("NMSE in dB; AirComp: median over channel realisations (10/90 percentiles, and the mean where it "
                 "exists, in aircomp.csv); channel uses include the side information")
    lines.append(f"Monte-Carlo core (N=16, K=20, 64 symbols): TF {tfs:,.0f}/s, NumPy {nps:,.0f}/s, "
                 f"ratio {speed['ratio']:.2f}x")
    return "\n".join(lines)
