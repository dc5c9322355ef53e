"""`deft6g parallel`: a study and a design sweep run serially and on N Ray workers on this machine: wall time,
speed-up (serial / parallel) and whether the rows are identical (wall-time columns aside).

Both runs of a job start from an empty temporary folder (removed afterwards); the study's frozen activations
are computed and cached on disk before either run is timed, so both load them (each Ray worker loads them
itself). The parallel time counts the workers' start (Python, TensorFlow, the study's model and data per
worker) but not the one-off start of the local Ray instance, which is reported apart (`ray_start_s`). The
serial run uses TensorFlow's default thread pools; each worker has one thread. speedup.csv is resumable: a
finished job is not timed again.
"""

import contextlib
import io
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from deft6g.experiment import ConfigError, Stage, Study, available_cores, run, start_ray

from .beamforming import SWEEP_FIELDS, DesignConfig, sweeps
from .study import POINT_KEY, FederatedStudy, run_study
from .study_config import build_config, load_config

TYPES = {"job": str, "points": int, "workers": int, "cores": int, "serial_s": float, "parallel_s": float,
         "ray_start_s": float, "speedup": float, "identical": bool, "differing_columns": str}
FIELDS = list(TYPES)
STUDY_TIMES = {"train_s", "link_s", "eval_s", "wall_s"}      # wall-time columns: not compared
QUICK_STUDY = {"model": {"name": "random-bert"}, "data": {"train_examples": 64, "test_examples": 32},
               "federated": {"devices": 2, "rounds": 2, "local_steps": 1}, "seeds": [0],
               "channel": {"snr_db": [0.0, 20.0], "num_rx_ant": [2]}, "digital": {"snr_db": [0.0, 20.0]}}


def _study_config(quick):
    """The study's --quick configuration (pretrained MiniLM, 256/128 texts, 2 seeds: 12 points), or a
    random-bert one with 5 points for smoke tests (ideal; AirComp and digital at 0 and 20 dB)."""
    return build_config(QUICK_STUDY) if quick else load_config(None, quick=True)


def _design_config(quick):
    """The design sweeps (N, K, SNR, CSI error) on the quick grid (N = 4, K = 6 and 2 values of each) with 40
    channels per seed and point, 3 seeds: 24 groups of 5 methods (120 points); --quick: 4 channels."""
    return DesignConfig.quick() if quick else replace(DesignConfig.quick(), sweep_realisations=40)


# Float columns computed in different processes agree only up to float32 rounding: a point's aggregation
# statistics (agg_mse, lora_bias) and distillation MSE depend at about 1e-7 relative on which points ran before it
# in the same process (TensorFlow's thread pools and kernel choices), so rows count as equal within this tolerance.
FLOAT_RTOL = 1e-5
# One round's aggregation error is the least reproducible float: with near-far drops the AirComp design works on
# channels spanning some 50 dB, and that ill-conditioning amplifies float32 rounding differences between processes
# to about 1e-3 relative (measured 1.1e-3 on the tiny UMi study; accuracy and channel uses stay within FLOAT_RTOL).
ROUND_RTOL = {"agg_mse": 1e-2, "nmse": 1e-2}


def compare_rows(serial, parallel, key, skip, rtol=FLOAT_RTOL, column_rtol=None):
    """(identical, ["column (max relative difference)" for each column that differs by more than its tolerance])
    between two lists of CSV rows matched by `key`, columns in `skip` aside. Text columns must match exactly;
    numeric ones within `column_rtol[column]` (if given) or `rtol` relative (NaN equals NaN)."""
    column_rtol = column_rtol or {}
    a = {tuple(str(r[k]) for k in key): r for r in serial}
    b = {tuple(str(r[k]) for k in key): r for r in parallel}
    if a.keys() != b.keys():
        return False, ["<points>"]
    diff = {}
    for k in a:
        for c in a[k]:
            if c in skip or str(a[k][c]) == str(b[k][c]):
                continue
            try:
                x, y = float(a[k][c]), float(b[k][c])
            except (TypeError, ValueError):
                diff[c] = math.inf
                continue
            if x == y or (math.isnan(x) and math.isnan(y)):
                continue
            d = abs(x - y) / max(abs(x), abs(y)) if not (math.isnan(x) or math.isnan(y)) else math.inf
            if d > column_rtol.get(c, rtol):
                diff[c] = max(diff.get(c, 0.0), d)
    return not diff, [f"{c} ({d:.1e})" for c, d in sorted(diff.items())]


def _run_job(job, work, workers, quick, log):
    """(points, serial_s, parallel_s, identical, differing columns) of one job, run fresh in `work`."""
    quiet = lambda *_: None                                        # noqa: E731
    if job == "study":
        cfg = _study_config(quick)
        FederatedStudy(log).setup(cfg)                           # activations cached before either run
        run, key, skip = (lambda out, w: run_study(out, cfg, log=quiet, workers=w).rows["results.csv"]), POINT_KEY, \
            STUDY_TIMES
    else:
        cfg = _design_config(quick)
        run, key, skip = (lambda out, w: sweeps(cfg, out, workers=w)), SWEEP_FIELDS[:7], set()
    times, rows = [], []
    for w in (1, workers):
        log(f"{job}: {'serial' if w == 1 else f'{w} Ray workers'} ...")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):          # the runs' own progress lines
            rows.append(run(work / f"workers_{w}", w))
        times.append(time.perf_counter() - t0)
    identical, cols = compare_rows(*rows, key, skip, column_rtol=ROUND_RTOL)
    return len(rows[0]), times[0], times[1], identical, cols


@dataclass
class ParallelConfig:
    workers: int = 2            # Ray workers of the parallel runs (>= 2)
    quick: bool = False         # smaller jobs (`_study_config`, `_design_config`)

    def validate(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 2:
            raise ConfigError(f"configuration key 'workers' (--workers) must be an int >= 2 to compare with the "
                              f"serial run, got {self.workers!r}")


class ParallelStudy(Study):
    """The benchmark on the protocol (`deft6g.experiment.Study`): speedup.csv, one point per job (the study, the
    design sweep), each timed here, one after the other; the setup starts the local Ray instance once and times
    it. Its stage has `own_workers`: timing.json's cpu_s is null in a run that timed a job (the Ray workers' CPU is
    not this process's). `run_speedup` runs it."""
    name = "parallel"

    def __init__(self, log=print):
        self.log = log

    def __getstate__(self):
        return {**self.__dict__, "log": print}

    def config(self, quick=False):
        return ParallelConfig(quick=quick)

    def stages(self):
        return [Stage("speedup.csv", ["job"], TYPES, self.jobs, self.run_point, self.describe, here=True,
                      own_workers=True)]

    @staticmethod
    def jobs(cfg, done):
        return [{"job": "study"}, {"job": "design"}]

    def setup(self, cfg):
        t0 = time.perf_counter()
        start_ray(cfg.workers)
        return {"cfg": cfg, "ray_start_s": time.perf_counter() - t0}

    def run_point(self, setup, point):
        cfg = setup["cfg"]
        with tempfile.TemporaryDirectory(prefix="deft6g-parallel-") as work:       # fresh runs: nothing to skip
            points, serial_s, parallel_s, identical, cols = _run_job(point["job"], Path(work), cfg.workers, cfg.quick,
                                                                     self.log)
        return dict(points=points, workers=cfg.workers, cores=available_cores(), serial_s=round(serial_s, 1),
                    parallel_s=round(parallel_s, 1), ray_start_s=round(setup["ray_start_s"], 1),
                    speedup=round(serial_s / parallel_s, 3), identical=identical, differing_columns=" ".join(cols))

    def describe(self, point, row):
        return (f"{point['job']}: serial {row['serial_s']} s, {row['workers']} workers {row['parallel_s']} s, "
                f"speed-up {row['speedup']:.2f}x, identical rows: {row['identical']}")

    def summary(self, cfg, rows):
        return summary(rows["speedup.csv"], cfg.quick)


def run_speedup(out_dir="results/parallel", workers=2, quick=False, log=print, config=None):
    """Time the study and the design sweep serially and on `workers` Ray workers (a local instance with
    `workers` CPUs), into `out_dir` (`deft6g.experiment.run`) with `config` (a ParallelConfig; None: from
    `workers` and `quick`); returns the `StudyResult` (.rows["speedup.csv"]: the rows)."""
    result = run(ParallelStudy(log), out_dir, ParallelConfig(workers, quick) if config is None else config, log=log)
    return result.with_legacy("run_speedup", result.rows["speedup.csv"])


def summary(rows, quick=False):
    lines = [f"{'job':<8}{'points':>8}{'workers':>9}{'cores':>7}{'serial s':>10}{'Ray s':>9}{'speed-up':>10}"
             f"{'identical rows':>16}"]
    for r in rows:
        lines.append(f"{r['job']:<8}{r['points']:>8}{r['workers']:>9}{r['cores']:>7}{r['serial_s']:>10.1f}"
                     f"{r['parallel_s']:>9.1f}{r['speedup']:>9.2f}x{str(r['identical']):>16}"
                     + (f"  differ, max rel.: {r['differing_columns']}" if r["differing_columns"] else ""))
    start = max((r["ray_start_s"] for r in rows), default=math.nan)
    lines.append(f"Ray s: the parallel run including its workers' start (Python, TensorFlow, the study's model per "
                 f"worker); starting the local Ray instance took {start:.1f} s more. Identical: every column but wall "
                 f"times; float columns within a relative {FLOAT_RTOL:.0e} (the aggregation error within "
                 f"{ROUND_RTOL['agg_mse']:.0e}). Study: " + ("a small random-bert study; design: the quick N/K/SNR/CSI "
                                                             "sweeps." if quick else
                                                             "the --quick study (pretrained MiniLM); design: the quick "
                                                             "N/K/SNR/CSI sweeps with 40 channels per seed and point."))
    return "\n".join(lines)
