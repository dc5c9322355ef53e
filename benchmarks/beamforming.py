"""Beamforming / power-control benchmark (`deft6g design`): every design against the dual-certified ZF bound
(aligned designs only), speed of the compiled SDR design against rebuilding the problem per realisation, MSE vs
N, K, SNR and CSI error, and the impairment sweeps.

Every figure over channel realisations is computed per seed (a seed draws its own channels and
randomisation) for `num_seeds` seeds and reported as the mean over seeds with a 95% Student-t interval. MSEs of
aligned designs are heavy-tailed (ZF at N = K, anything at N = 1: the mean need not exist), so the
per-seed statistics are the median and the 10th/90th percentiles (`deft6g.experiment.percentiles`); the
mean is stored too and shown only beside them. SNR = P / sigma^2 per device (P = 1).
References: Zhu & Huang, "MIMO over-the-air computation for high-mobility multimodal sensing", IEEE IoT J.
2019 (ZF AirComp); Yang, Jiang, Shi, Ding, IEEE TWC 2020 (SDR + randomisation); Cao, Zhu, Xu, Huang,
IEEE TWC 2020 (threshold power control, used by "mmse")."""

import time
from dataclasses import dataclass, field, replace

import cvxpy as cp
import numpy as np

from deft6g.deprecation import warn_renamed
from deft6g.experiment import Stage, Study, line_plot, percentiles, run, run_stages, summarise, to_db
from deft6g.optim import ALIGNED, METHODS, ZfSdr, design_aircomp, dual_bound, real_form, sdr_barrier
from deft6g.phy import aircomp_mse, imperfect_csi, noise_var
from deft6g.rng import derive_seed

from .impairment_sweeps import (DesignSweepPoints, DesignSweeps, design_sweep_report, design_sweep_stages,
                                design_sweeps, rayleigh_channels)

STATS = ["mean_db", "median_db", "p10_db", "p90_db"]
# gap_*: empty (None) for designs that are not aligned
GAPS = ["gap_mean_db", "gap_median_db", "gap_p90_db"]
MAIN_TYPES = {"seed": int, "method": str, **dict.fromkeys(STATS + GAPS, float), "failed": int,
              "seconds_per_realisation": float}
SWEEP_TYPES = {"sweep": str, "num_rx_ant": int, "num_devices": int, "snr_db": float, "csi_error_var": float,
               "seed": int, "method": str, **dict.fromkeys(STATS, float)}
SWEEP_FIELDS = list(SWEEP_TYPES)
SPEED_TYPES = {"solver": str, "realisations": int, **dict.fromkeys(
    ["rebuild_s", "compiled_solve_s", "barrier_solve_s", "sdr_design_s", "round_call_s", "mmse_design_s", "ratio",
     "compiled_ratio", "max_value_mismatch", "max_bound_mismatch"], float)}
SWEEP_METHODS = ("sdr", "mmse", "mrc", "zf", "uniform")
# Sub-streams of a seed (`derive_seed`): the channels, the CSI error, the speed comparison's channels; the root seed
# itself seeds the designs' randomisation only, so no draw repeats the channels' random numbers.
CHANNELS, CSI_ERROR, SPEED_CHANNELS = range(1, 4)


@dataclass
class DesignConfig:
    """N, K, realisations per seed and SNR (P / sigma^2 per device, P = 1) of the main comparison; the number of
    seeds; the speed comparison's channel count; sweep grids (realisations per seed and point)."""
    num_rx_ant: int = 16
    num_devices: int = 20
    realisations: int = 500
    snr_db: float = 10.0
    num_seeds: int = 3
    speed_realisations: int = 30
    sweep_realisations: int = 60
    sweep_n: list = field(default_factory=lambda: [2, 4, 8, 16, 32])
    sweep_k: list = field(default_factory=lambda: [2, 5, 10, 20, 30])
    sweep_snr_db: list = field(default_factory=lambda: [-10, 0, 10, 20, 30])
    csi_error_var: list = field(default_factory=lambda: [0.0, 0.001, 0.01, 0.03, 0.1])
    solver: str = "SCS"
    seed: int = 0
    impairments: DesignSweeps = field(default_factory=DesignSweeps)    # the impairment sweeps; None: not run

    def __post_init__(self):
        if self.impairments is not None and not isinstance(self.impairments, DesignSweeps):
            raise ValueError(f"`impairments` must be a DesignSweeps or None, got {self.impairments!r}")

    @classmethod
    def quick(cls):
        return cls(num_rx_ant=4, num_devices=6, realisations=8, speed_realisations=4, sweep_realisations=4,
                   sweep_n=[2, 4], sweep_k=[2, 4], sweep_snr_db=[0, 20], csi_error_var=[0.0, 0.1],
                   impairments=DesignSweeps.quick())

    def seed_values(self):
        return [self.seed + i for i in range(self.num_seeds)]


def _stats(mse):
    """mean, median, 10th and 90th percentile of the MSEs [dB]."""
    p10, p50, p90 = percentiles(mse, (10, 50, 90))
    return dict(mean_db=to_db(np.mean(mse)), median_db=to_db(p50), p10_db=to_db(p10), p90_db=to_db(p90))


def _designs(H_design, nv, seed, methods):
    """{method: (AirCompDesign, seconds per realisation)}; "mmse" starts from the "sdr" design and its time
    includes the SDR design's."""
    out = {}
    t0 = time.perf_counter()
    sdr = design_aircomp(H_design, 1.0, nv, "sdr", seed=seed)
    out["sdr"] = (sdr, (time.perf_counter() - t0) / len(H_design))
    for m in methods:
        if m == "sdr":
            continue
        t0 = time.perf_counter()
        d = design_aircomp(H_design, 1.0, nv, m, seed=seed, init=sdr if m == "mmse" else None)
        extra = out["sdr"][1] if m == "mmse" else 0.0
        out[m] = (d, (time.perf_counter() - t0) / len(H_design) + extra)
    return out


class _MainPoint:
    """A main-comparison point (seed, method), part of a process's setup: every method is designed on the seed's
    channels at its first method's call and kept for the others (the stage's group=["seed"])."""

    def __init__(self, cfg):
        self.cfg, self.cache = cfg, {}

    def __call__(self, p):
        cfg, nv = self.cfg, noise_var(self.cfg.snr_db)
        if p["seed"] not in self.cache:
            H = rayleigh_channels(cfg.num_rx_ant, cfg.num_devices, cfg.realisations, derive_seed(p["seed"], CHANNELS))
            designs = _designs(H, nv, p["seed"], METHODS)
            bound = designs["sdr"][0].zf_lower_bound
            self.cache = {p["seed"]: {}}
            for m, (d, seconds) in designs.items():
                gap = 10 * np.log10(d.mse / bound) if m in ALIGNED else None
                self.cache[p["seed"]][m] = dict(
                    seed=p["seed"], method=m, **_stats(d.mse), failed=int(np.sum(~d.ok)),
                    seconds_per_realisation=seconds,
                    gap_mean_db=None if gap is None else float(np.mean(gap)),      # None: the bound does not apply
                    gap_median_db=None if gap is None else percentiles(gap, (50,))[0],
                    gap_p90_db=None if gap is None else percentiles(gap, (90,))[0])
        return self.cache[p["seed"]][p["method"]]


def main_points(cfg, done=None):
    """The main comparison's points (main.csv, one row per seed and method): every method on `realisations`
    channels per seed."""
    return [dict(seed=s, method=m) for s in cfg.seed_values() for m in METHODS]


def naive_sdr(H, power, solver):
    """The baseline: build and solve a fresh CVXPY problem (constants, no Parameters) for one channel, with
    the compiled problem's solver options."""
    n, k = H.shape
    Y = cp.Variable((2 * n, 2 * n), PSD=True)
    problem = cp.Problem(cp.Minimize(cp.trace(Y) / 2),
                         [cp.trace(Y @ real_form(H[:, j])) / 2 >= 1.0 / power for j in range(k)])
    problem.solve(solver=solver, **ZfSdr.SOLVER_OPTIONS.get(solver, {}))
    return problem.value


class _SpeedPoint:
    """The speed comparison's one point {"solver"} (speed.csv, one row): seconds per realisation, measured in
    this run on the same `speed_realisations` channels: rebuilding the SDR per channel in CVXPY; the compiled
    CVXPY SDR re-solved; the batched barrier method (`sdr_barrier`); the whole "sdr" design (barrier SDR,
    randomisation, SCA, bound) on the batch and one channel per call (as each federated round calls it); the
    "mmse" design (sdr design + alternation). ratio = rebuild / sdr design; mismatches: compiled value and the
    barrier's certified bound against the rebuilt optimum."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, p):
        cfg = self.cfg
        n, k, nv = cfg.num_rx_ant, cfg.num_devices, noise_var(cfg.snr_db)
        H = rayleigh_channels(n, k, cfg.speed_realisations, derive_seed(cfg.seed, SPEED_CHANNELS))
        design_aircomp(H[:1], 1.0, nv, "sdr", seed=0)   # compile once (counted apart)
        sdr = ZfSdr.compiled(n, k, solvers=(cfg.solver,))
        t0 = time.perf_counter()
        sols = [sdr.solve(h, np.ones(k)) for h in H]
        t_compiled = (time.perf_counter() - t0) / len(H)
        t0 = time.perf_counter()
        naive = np.array([naive_sdr(h, 1.0, cfg.solver) for h in H])
        t_naive = (time.perf_counter() - t0) / len(H)
        t0 = time.perf_counter()
        _, duals, _, _ = sdr_barrier(H, np.ones((len(H), k)))
        t_barrier = (time.perf_counter() - t0) / len(H)
        designs = _designs(H, nv, cfg.seed, ("sdr", "mmse"))
        t0 = time.perf_counter()
        for i in range(len(H)):
            design_aircomp(H[i:i + 1], 1.0, nv, "sdr", seed=i)
        t_round = (time.perf_counter() - t0) / len(H)
        values = np.array([s.value for s in sols])
        bounds = dual_bound(H, np.ones(k), duals)
        return dict(p, realisations=len(H), rebuild_s=t_naive, compiled_solve_s=t_compiled,
                    barrier_solve_s=t_barrier,
                    sdr_design_s=designs["sdr"][1], round_call_s=t_round, mmse_design_s=designs["mmse"][1],
                    ratio=t_naive / designs["sdr"][1], compiled_ratio=t_naive / t_compiled,
                    max_value_mismatch=float(np.max(np.abs(values - naive) / naive)),
                    max_bound_mismatch=float(np.max(np.abs(bounds - naive) / naive)))


class _SweepPoint:
    """A sweep point (sweep, N, K, SNR, CSI error, seed, method), part of a process's setup: every method is
    designed on the point's channels at its first method's call and kept for the others (the stage's
    group=SWEEP_FIELDS[:6])."""

    def __init__(self, cfg):
        self.cfg, self.cache = cfg, {}

    def __call__(self, p):
        key = tuple(p[c] for c in SWEEP_FIELDS[:6])
        if key not in self.cache:
            n, k, snr, ev, seed = p["num_rx_ant"], p["num_devices"], p["snr_db"], p["csi_error_var"], p["seed"]
            H = rayleigh_channels(n, k, self.cfg.sweep_realisations, derive_seed(seed, CHANNELS))
            H_design = imperfect_csi(H, ev, seed=derive_seed(seed, CSI_ERROR)) if ev > 0 else H
            nv = noise_var(snr)
            self.cache = {key: {m: _stats(aircomp_mse(H, d.a, d.b, nv))
                                for m, (d, _) in _designs(H_design, nv, seed, SWEEP_METHODS).items()}}
        return p | self.cache[key][p["method"]]


def sweep_points(cfg, done=None):
    """The sweeps' points: median (and percentiles) of the MSE per seed vs N, K, SNR and CSI error (sweeps.csv)."""
    grid = [("N", n, cfg.num_devices, cfg.snr_db, 0.0) for n in cfg.sweep_n]
    grid += [("K", cfg.num_rx_ant, k, cfg.snr_db, 0.0) for k in cfg.sweep_k]
    grid += [("SNR", cfg.num_rx_ant, cfg.num_devices, s, 0.0) for s in cfg.sweep_snr_db]
    grid += [("CSI", cfg.num_rx_ant, cfg.num_devices, cfg.snr_db, e) for e in cfg.csi_error_var]
    return [dict(sweep=sw, num_rx_ant=n, num_devices=k, snr_db=s, csi_error_var=e, seed=seed, method=m)
            for sw, n, k, s, e in grid for seed in cfg.seed_values() for m in SWEEP_METHODS]


def sweeps(cfg, out, **parallel):
    """Run (or resume) the sweeps' stage alone into the folder `out` (sweeps.csv); returns its rows."""
    return run_stages(DesignStudy(), out, ["sweeps.csv"], cfg, **parallel)["sweeps.csv"]


def main_comparison(cfg, out, **parallel):
    """Deprecated (removed in 0.2.0): the main comparison's stage alone; `run_design` runs every stage."""
    warn_renamed("deft6g.benchmarks.beamforming.main_comparison(cfg, out)", "run_design (or the stage 'main.csv' "
                 "of DesignStudy)")
    return run_stages(DesignStudy(), out, ["main.csv"], cfg, **parallel)["main.csv"]


def speed(cfg, out):
    """Deprecated (removed in 0.2.0): the speed comparison's stage alone (its row); `run_design` runs every
    stage."""
    warn_renamed("deft6g.benchmarks.beamforming.speed(cfg, out)", "run_design (or the stage 'speed.csv' of "
                 "DesignStudy)")
    return dict(run_stages(DesignStudy(), out, ["speed.csv"], cfg)["speed.csv"][0])


def plot_sweeps(out, rows, cfg):
    axes = {"N": ("num_rx_ant", "antennas N"), "K": ("num_devices", "devices K"),
            "SNR": ("snr_db", "SNR = P / sigma^2 per device [dB]"),
            "CSI": ("csi_error_var", "CSI error variance (designed on H + E, evaluated on H)")}
    fixed = {"N": f"K={cfg.num_devices}, {cfg.snr_db:g} dB", "K": f"N={cfg.num_rx_ant}, {cfg.snr_db:g} dB",
             "SNR": f"N={cfg.num_rx_ant}, K={cfg.num_devices}",
             "CSI": f"N={cfg.num_rx_ant}, K={cfg.num_devices}, {cfg.snr_db:g} dB"}
    for sweep, (col, label) in axes.items():
        sel = [r for r in rows if r["sweep"] == sweep]
        if not sel:
            continue
        curves = {}
        for s in summarise(sel, [col, "method"], ["median_db"]):
            curves.setdefault(s["method"], []).append((s[col], s["median_db_mean"], s["median_db_ci"]))
        line_plot(out / f"mse_vs_{sweep.lower()}.png", curves, label, "median MSE of the sum [dB]",
                  f"AirComp MSE vs {label.split(' [')[0].split(' (')[0]} (Rayleigh, {fixed[sweep]})", logx=sweep == "N",
                  xticks=cfg.sweep_n if sweep == "N" else None,
                  note=f"median over {cfg.sweep_realisations} channels per seed; mean and 95% CI over {cfg.num_seeds} "
                       f"seeds")


def impairment_sweeps(cfg, out, quick):
    """Deprecated (removed in 0.2.0): the design sweeps alone (`design_sweeps`, itself deprecated); `run_design`
    runs them as stages."""
    warn_renamed("deft6g.benchmarks.beamforming.impairment_sweeps(cfg, out, quick)",
                 "run_design (the sweeps are stages of DesignStudy)")
    print(design_sweeps(out, cfg.num_rx_ant, cfg.num_devices, cfg.snr_db, quick=quick, seed=cfg.seed))


def main_table(cfg, rows, speed):
    """main.json: the main comparison's per-method mean and 95% CI over seeds of every statistic (rows: main.csv's)
    with the speed comparison's row."""
    main = dict(N=cfg.num_rx_ant, K=cfg.num_devices, realisations=cfg.realisations, num_seeds=cfg.num_seeds,
                snr_db=cfg.snr_db, failed=int(sum(r["failed"] for r in rows if r["method"] == "sdr")),
                speed=dict(speed), methods={})
    stats = STATS + GAPS + ["seconds_per_realisation"]
    for m in METHODS:
        mine = [r for r in rows if r["method"] == m]
        values = [v for v in stats if mine[0][v] is not None]
        s = summarise(mine, ["method"], values)[0]
        main["methods"][m] = {v: [s[f"{v}_mean"], s[f"{v}_ci"]] for v in values}
        main["methods"][m]["mean_gap_to_bound_db"] = s.get("gap_mean_db_mean")          # None: not aligned
    return main


class DesignStudy(Study):
    """The benchmark on the protocol (`deft6g.experiment.Study`), its tables in turn: main.csv (the main
    comparison, on workers by seed), speed.csv (timed, here), sweeps.csv (on workers by sweep point) and the
    impairment sweeps' tables (`impairment_sweeps.design_sweep_stages`; cfg.impairments = None leaves them out);
    main.json and the plots derived. `run_design` runs it (its command-line entry is in deft6g.benchmarks.cli)."""
    name = "design"

    def config(self, quick=False):
        return DesignConfig.quick() if quick else DesignConfig()

    def stages(self):
        return [Stage("main.csv", ["seed", "method"], MAIN_TYPES, main_points, self.main_point, self.describe_main,
                      group=["seed"]),
                Stage("speed.csv", ["solver"], SPEED_TYPES, lambda cfg, done: [dict(solver=cfg.solver)],
                      self.speed_point, here=True),
                Stage("sweeps.csv", SWEEP_FIELDS[:7], SWEEP_TYPES, sweep_points, self.sweep_point, self.describe_sweep,
                      group=SWEEP_FIELDS[:6]),
                *design_sweep_stages()]

    def setup(self, cfg):
        return {"main": _MainPoint(cfg), "speed": _SpeedPoint(cfg), "sweeps": _SweepPoint(cfg),
                "impairments": cfg.impairments and DesignSweepPoints(cfg.impairments, cfg.num_rx_ant, cfg.num_devices,
                                                                     cfg.snr_db)}

    def main_point(self, setup, point):
        return setup["main"](point)

    def speed_point(self, setup, point):
        return setup["speed"](point)

    def sweep_point(self, setup, point):
        return setup["sweeps"](point)

    @staticmethod
    def describe_main(p, r):
        return f"seed {p['seed']} {p['method']}: median {r['median_db']:.2f} dB"

    @staticmethod
    def describe_sweep(p, r):
        return (f"{p['sweep']} N={p['num_rx_ant']} K={p['num_devices']} SNR={p['snr_db']} CSI={p['csi_error_var']} "
                f"seed {p['seed']} {p['method']}: median {r['median_db']:.2f} dB")

    def derive(self, cfg, rows):
        return {**rows, "main": main_table(cfg, rows["main.csv"], rows["speed.csv"][0]),
                "impairments": cfg.impairments and design_sweep_report(cfg.impairments, cfg.num_rx_ant,
                                                                       cfg.num_devices, cfg.snr_db, rows)}

    def tables(self, cfg, rows):
        return {"main.json": rows["main"]}

    def summary(self, cfg, rows):
        return summary(rows["main"]) + ("\n" + rows["impairments"][0] if rows["impairments"] else "")

    def plot(self, out, cfg, rows):
        plot_sweeps(out, rows["sweeps.csv"], cfg)
        if rows["impairments"]:
            rows["impairments"][1].draw(out)


def run_design(out_dir="results/design", quick=False, seed=None, log=print, config=None, **parallel):
    """Run (or resume) the benchmark, its impairment sweeps included, into `out_dir` (`deft6g.experiment.run`)
    with `config` (a DesignConfig; None: the default or `quick` one), its seed replaced by `seed` when given.
    Returns the `StudyResult`: .derived["main"] is main.json's content (what this returned before 0.1.0),
    summary.txt holds the printed summary. parallel: workers, ray_address, worker_gpus of
    `deft6g.experiment.run_points` for the main comparison and the sweeps (the speed comparison runs here)."""
    cfg = config if config is not None else DesignConfig.quick() if quick else DesignConfig()
    result = run(DesignStudy(), out_dir, cfg if seed is None else replace(cfg, seed=seed), log=log, **parallel)
    return result.with_legacy("run_design", result.derived["main"])


def summary(main):
    def cell(v, key, width, scale=1.0):
        if key not in v:
            return f"{'n/a':>{width}}"
        mean, ci = v[key]
        return f"{scale * mean:>{width - 7}.2f} +-{scale * ci:>4.2f}" if ci == ci else f"{scale * mean:>{width}.2f}"

    lines = [f"N={main['N']} K={main['K']}, {main['realisations']} Rayleigh realisations x {main['num_seeds']} seeds, "
             f"SNR {main['snr_db']} dB; failed SDR solves: {main['failed']}. Mean over seeds +- 95% CI of per-seed "
             f"statistics; the gap to the (dual-certified) ZF bound is shown for aligned designs only.",
             f"{'method':<16}{'median [dB]':>16}{'p10 [dB]':>10}{'p90 [dB]':>10}{'mean [dB]':>11}"
             f"{'gap mean [dB]':>17}{'gap p90 [dB]':>14}{'ms/realis.':>16}"]
    for m, v in main["methods"].items():
        lines.append(f"{m:<16}{cell(v, 'median_db', 16)}{v['p10_db'][0]:>10.2f}{v['p90_db'][0]:>10.2f}"
                     f"{v['mean_db'][0]:>11.2f}{cell(v, 'gap_mean_db', 17)}"
                     f"{'n/a' if 'gap_p90_db' not in v else format(v['gap_p90_db'][0], '.2f'):>14}"
                     f"{cell(v, 'seconds_per_realisation', 16, 1e3)}")
    s = main["speed"]
    lines.append(f"Per realisation ({s['solver']}, {s['realisations']} channels, all timed in one run): "
                 f"rebuilding the SDR {1e3 * s['rebuild_s']:.1f} ms; compiled SDR solve "
                 f"{1e3 * s['compiled_solve_s']:.1f} ms ({s['compiled_ratio']:.2f}x); barrier SDR "
                 f"{1e3 * s['barrier_solve_s']:.2f} ms; whole sdr design {1e3 * s['sdr_design_s']:.1f} ms, speed-up "
                 f"{s['ratio']:.2f}x over rebuilding ({1e3 * s['round_call_s']:.1f} ms per one-channel call, as in "
                 f"a federated round); mmse design {1e3 * s['mmse_design_s']:.1f} ms")
    return "\n".join(lines)
