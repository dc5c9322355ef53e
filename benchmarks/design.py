"""Beamforming / power-control benchmark: gap to the SDR bound, baselines, DPP re-solve vs rebuild speed,
MSE vs N, K and SNR, and the imperfect-CSI penalty (`deft6g design`)."""

import json
import time
from dataclasses import asdict, dataclass, field

import cvxpy as cp
import numpy as np
from tqdm import tqdm

from deft6g.optim import ALIGNED, METHODS, ZfSdr, design_aircomp
from deft6g.optim.zf_sdr import SOLVER_OPTIONS, real_form
from deft6g.phy import UplinkChannel, aircomp_mse, imperfect_csi

from deft6g.experiment import ResultStore, line_plot, prepare_output

SWEEP_FIELDS = ["sweep", "num_rx_ant", "num_devices", "snr_db", "csi_error_var", "method", "mse_db"]
SWEEP_METHODS = ("sdr", "mmse", "mrc", "zf", "uniform")


@dataclass
class DesignConfig:
    """N, K, realisations and SNR (P / sigma^2 per device, P = 1) of the main comparison; sweep grids."""
    num_rx_ant: int = 16
    num_devices: int = 20
    realisations: int = 1000
    snr_db: float = 10.0
    speed_realisations: int = 30
    sweep_realisations: int = 50
    sweep_n: list = field(default_factory=lambda: [2, 4, 8, 16, 32])
    sweep_k: list = field(default_factory=lambda: [2, 5, 10, 20, 30])
    sweep_snr_db: list = field(default_factory=lambda: [-10, 0, 10, 20, 30])
    csi_error_var: list = field(default_factory=lambda: [0.0, 0.001, 0.01, 0.03, 0.1])
    solver: str = "SCS"
    seed: int = 0

    @classmethod
    def quick(cls):
        return cls(num_rx_ant=4, num_devices=6, realisations=8, speed_realisations=4, sweep_realisations=4,
                   sweep_n=[2, 4], sweep_k=[2, 4], sweep_snr_db=[0, 20], csi_error_var=[0.0, 0.1])


def naive_sdr(H, power, solver):
    """The baseline: build and solve a fresh CVXPY problem (constants, no Parameters) for one channel."""
    n, k = H.shape
    Y = cp.Variable((2 * n, 2 * n), PSD=True)
    problem = cp.Problem(cp.Minimize(cp.trace(Y) / 2),
                         [cp.trace(Y @ real_form(H[:, j])) / 2 >= 1.0 / power for j in range(k)])
    problem.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
    return problem.value


def speed(cfg, H):
    """Seconds per realisation: compiled DPP problem re-solved (warm start) vs rebuilt every time."""
    sdr = ZfSdr(cfg.num_rx_ant, cfg.num_devices, solvers=(cfg.solver,))
    sdr.solve(H[0], np.ones(cfg.num_devices))                                   # compile once (counted apart)
    t0 = time.perf_counter()
    fast = [sdr.solve(h, np.ones(cfg.num_devices)).value for h in H]
    t_fast = (time.perf_counter() - t0) / len(H)
    t0 = time.perf_counter()
    naive = [naive_sdr(h, 1.0, cfg.solver) for h in H]
    t_naive = (time.perf_counter() - t0) / len(H)
    return dict(solver=cfg.solver, realisations=len(H), dpp_s=t_fast, rebuild_s=t_naive, ratio=t_naive / t_fast,
                max_value_mismatch=float(np.max(np.abs(np.array(fast) - np.array(naive)) / np.array(naive))))


def _db(x):
    return float(10 * np.log10(x))


def sweeps(cfg, store):
    noise = lambda snr: 10 ** (-snr / 10)                                      # noqa: E731
    points = [("N", n, cfg.num_devices, cfg.snr_db, 0.0) for n in cfg.sweep_n]
    points += [("K", cfg.num_rx_ant, k, cfg.snr_db, 0.0) for k in cfg.sweep_k]
    points += [("SNR", cfg.num_rx_ant, cfg.num_devices, s, 0.0) for s in cfg.sweep_snr_db]
    points += [("CSI", cfg.num_rx_ant, cfg.num_devices, cfg.snr_db, e) for e in cfg.csi_error_var]
    for sweep, n, k, snr, ev in tqdm(points, desc="design sweeps"):
        key = dict(sweep=sweep, num_rx_ant=n, num_devices=k, snr_db=snr, csi_error_var=ev)
        if all(store.done(key | dict(method=m)) for m in SWEEP_METHODS):
            continue
        H = UplinkChannel("rayleigh", n, k, precision="double")(cfg.sweep_realisations, seed=cfg.seed).numpy()
        H_design = imperfect_csi(H, ev, seed=cfg.seed + 1) if ev > 0 else H
        sdr = design_aircomp(H_design, 1.0, noise(snr), "sdr", seed=cfg.seed, progress=False)
        for m in SWEEP_METHODS:
            d = sdr if m == "sdr" else design_aircomp(H_design, 1.0, noise(snr), m, seed=cfg.seed, progress=False,
                                                      init=sdr if m == "mmse" else None)
            store.add(key | dict(method=m, mse_db=_db(np.mean(aircomp_mse(H, d.a, d.b, noise(snr))))))


def plot_sweeps(out, rows):
    axes = {"N": ("num_rx_ant", "antennas N"), "K": ("num_devices", "devices K"),
            "SNR": ("snr_db", "SNR = P / sigma^2 per device [dB]"), "CSI": ("csi_error_var", "CSI error variance")}
    for sweep, (col, label) in axes.items():
        curves = {}
        for r in rows:
            if r["sweep"] == sweep:
                curves.setdefault(r["method"], []).append((float(r[col]), float(r["mse_db"])))
        if curves:
            line_plot(out / f"mse_vs_{sweep.lower()}.png", curves, label, "mean MSE [dB]", f"AirComp MSE vs {label}")


def impairment_sweeps(cfg, out, quick):
    """Design methods vs pilot SNR and vs transmit phase error, subcarrier power allocation vs delay spread:
    separate CSV/PNG files, summary printed (benchmarks/impairment_sweeps.py)."""
    from .impairment_sweeps import design_sweeps
    print(design_sweeps(out, cfg.num_rx_ant, cfg.num_devices, cfg.snr_db, quick=quick, seed=cfg.seed))


def run_design(out_dir="results/design", quick=False, seed=0):
    cfg = DesignConfig.quick() if quick else DesignConfig()
    cfg.seed = seed
    out = prepare_output(out_dir, "design", asdict(cfg))
    noise_var = 10 ** (-cfg.snr_db / 10)
    H = UplinkChannel("rayleigh", cfg.num_rx_ant, cfg.num_devices, precision="double")(cfg.realisations,
                                                                                       seed=seed).numpy()
    main_path = out / "main.json"
    if main_path.exists():
        main = json.loads(main_path.read_text())
    else:
        t0 = time.perf_counter()
        sdr = design_aircomp(H, 1.0, noise_var, "sdr", seed=seed)
        t_sdr = time.perf_counter() - t0
        designs = {"sdr": sdr, "mmse": design_aircomp(H, 1.0, noise_var, "mmse", init=sdr)}
        designs |= {m: design_aircomp(H, 1.0, noise_var, m) for m in METHODS if m not in designs}
        bound = sdr.zf_lower_bound
        main = dict(N=cfg.num_rx_ant, K=cfg.num_devices, realisations=cfg.realisations, snr_db=cfg.snr_db,
                    sdr_seconds_per_realisation=t_sdr / cfg.realisations,
                    failed=int(np.sum(~sdr.ok)), mean_bound_db=_db(np.mean(bound)),
                    methods={m: dict(mean_mse_db=_db(np.mean(d.mse)),
                                     mean_gap_to_bound_db=float(np.mean(10 * np.log10(d.mse / bound)))
                                     if m in ALIGNED else None)
                             for m, d in designs.items()})
        main["speed"] = speed(cfg, H[:cfg.speed_realisations])
        main_path.write_text(json.dumps(main, indent=2))
    store = ResultStore(out / "sweeps.csv", SWEEP_FIELDS, SWEEP_FIELDS[:-1])
    sweeps(cfg, store)
    plot_sweeps(out, store.rows())
    impairment_sweeps(cfg, out, quick)
    return main


def summary(main):
    lines = [f"N={main['N']} K={main['K']}, {main['realisations']} Rayleigh realisations, SNR {main['snr_db']} dB; "
             f"SDR bound {main['mean_bound_db']:.2f} dB (failed solves: {main['failed']})",
             f"{'method':<16}{'mean MSE [dB]':>14}{'gap to bound [dB]':>19}"]
    for m, v in main["methods"].items():
        gap = "n/a (not aligned)" if v["mean_gap_to_bound_db"] is None else f"{v['mean_gap_to_bound_db']:.2f}"
        lines.append(f"{m:<16}{v['mean_mse_db']:>14.2f}{gap:>19}")
    s = main["speed"]
    lines.append(f"SDR per realisation ({s['solver']}): DPP re-solve {1e3 * s['dpp_s']:.1f} ms, rebuild "
                 f"{1e3 * s['rebuild_s']:.1f} ms, speed-up {s['ratio']:.2f}x (over {s['realisations']} channels)")
    return "\n".join(lines)
