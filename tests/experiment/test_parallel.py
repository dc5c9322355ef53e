"""run_points on Ray: a 2-worker run equals the serial one, an interrupted run resumes without recomputing
finished points, a failing or crashing point is reported and retried without losing the others, and a
missing Ray is reported with the install command. One local Ray instance (2 CPUs) serves the module."""

import csv
import json
import os
import sys
from pathlib import Path

import pytest

from deft6g.experiment import PointsFailed, RayUnavailable, ResultStore, run_points

FIELDS = ["p", "seed", "value", "pid", "threads"]


@pytest.fixture(scope="module")
def ray_2():
    ray = pytest.importorskip("ray")
    from deft6g.experiment import start_ray
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])     # toy point functions travel by value
    start_ray(2)
    yield ray
    ray.shutdown()


def _store(path):
    return ResultStore(path, FIELDS, ["p", "seed"])


class Toy:
    """value = p^2 + seed; touches calls/<p>.<pid>.<n> per call, so tests count computations across processes.
    fail: p values that raise ValueError; crash: p values whose first call kills the worker process."""

    def __init__(self, calls, fail=(), crash=()):
        self.calls, self.fail, self.crash = Path(calls), set(fail), set(crash)

    def __call__(self, pt):
        self.calls.mkdir(exist_ok=True)
        n = len(list(self.calls.glob(f"{pt['p']}.*")))
        (self.calls / f"{pt['p']}.{os.getpid()}.{n}").touch()
        if pt["p"] in self.crash and n == 0:
            os._exit(1)
        if pt["p"] in self.fail:
            raise ValueError(f"boom at p={pt['p']}")
        return {**pt, "value": pt["p"] ** 2 + pt["seed"], "pid": os.getpid(),
                "threads": os.environ.get("TF_NUM_INTRAOP_THREADS", "unset")}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _calls(path, p):
    return len(list(Path(path).glob(f"{p}.*")))


def test_interrupted_run_resumes_without_recomputing_finished_points(ray_2, tmp_path):
    """The driver is interrupted (Ctrl-C) after 3 rows are written; re-running computes only the points
    that were not in the store, and the store ends with every point once."""
    points = [{"p": i, "seed": 1} for i in range(8)]
    written = []

    def stop_after_three(point, row):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(point["p"])
        return row

    with pytest.raises(KeyboardInterrupt):
        run_points(points, Toy(tmp_path / "calls"), _store(tmp_path / "r.csv"), log=lambda *_: None,
                   write=stop_after_three, workers=2)
    assert [int(r["p"]) for r in _store(tmp_path / "r.csv").rows()] == written
    before = {p: _calls(tmp_path / "calls", p) for p in range(8)}
    assert run_points(points, Toy(tmp_path / "calls"), _store(tmp_path / "r.csv"), log=lambda *_: None,
                      workers=2) == 5
    rows = _store(tmp_path / "r.csv").rows()
    assert sorted(int(r["p"]) for r in rows) == list(range(8))
    assert all(int(r["value"]) == int(r["p"]) ** 2 + 1 for r in rows)
    for p in written:                                             # finished before the interruption: not rerun
        assert _calls(tmp_path / "calls", p) == before[p] == 1


def test_failing_and_crashing_points_are_retried_and_reported(ray_2, tmp_path):
    """p=1 raises every time: reported with its traceback on both attempts, listed in PointsFailed; p=2
    kills its worker on the first call: retried on a fresh worker and finished; the other points are kept."""
    logs = []
    with pytest.raises(PointsFailed, match="1 point") as err:
        run_points([{"p": i, "seed": 0} for i in range(5)], Toy(tmp_path / "calls", fail={1}, crash={2}),
                   _store(tmp_path / "r.csv"), log=logs.append, workers=2)
    assert [p["p"] for p, _ in err.value.failures] == [1]
    assert "ValueError: boom at p=1" in err.value.failures[0][1]
    assert sum("p=1 seed=0 failed" in line and "Traceback" in line for line in logs) == 2
    assert any("p=2 seed=0 failed (attempt 1)" in line and "worker died" in line for line in logs)
    assert sorted(int(r["p"]) for r in _store(tmp_path / "r.csv").rows()) == [0, 2, 3, 4]
    assert _calls(tmp_path / "calls", 2) == 2


def test_group_runs_on_one_worker_with_one_thread(ray_2, tmp_path):
    """Points sharing the `group` columns run in one worker process (so they can share cached work); every
    worker limits TensorFlow's intra-op pool to its one CPU."""
    points = [{"p": i, "seed": s} for s in range(3) for i in range(3)]
    run_points(points, Toy(tmp_path / "calls"), _store(tmp_path / "r.csv"), log=lambda *_: None, group=["seed"],
               workers=2)
    rows = _store(tmp_path / "r.csv").rows()
    assert len(rows) == 9 and {r["threads"] for r in rows} == {"1"}
    for s in range(3):
        assert len({r["pid"] for r in rows if r["seed"] == str(s)}) == 1


TIMES = {"train_s", "link_s", "eval_s", "wall_s"}


def test_two_worker_study_equals_serial_row_for_row(ray_2, tmp_path, tiny_study):
    """A quick study (random-bert, 6 points: centralised, ideal, AirComp and digital at 0 and 20 dB) run on 2
    Ray workers gives the serial run's results.csv and rounds.csv, wall-time columns aside: text and integer
    columns exactly, floats within ray_speedup.FLOAT_RTOL (float32 statistics depend at about 1e-7 on the
    order of points in a process)."""
    from deft6g.benchmarks.ray_speedup import ROUND_RTOL, compare_rows
    from deft6g.benchmarks.study import POINT_KEY, run_study
    from deft6g.benchmarks.study_config import load_config
    cfg = load_config(tiny_study)
    serial = run_study(tmp_path / "serial", cfg, log=lambda *_: None).rows["results.csv"]
    parallel = run_study(tmp_path / "ray", cfg, log=lambda *_: None, workers=2).rows["results.csv"]
    assert len(serial) == 6
    assert compare_rows(serial, parallel, POINT_KEY, TIMES) == (True, [])
    exact = set(serial[0]) - {"accuracy", "channel_uses"}                  # accuracy and channel uses: exactly
    assert compare_rows(serial, parallel, POINT_KEY, exact, rtol=0.0) == (True, [])
    rounds = [read_csv(tmp_path / d / "rounds.csv") for d in ("serial", "ray")]
    assert len(rounds[0]) == 6 * 2
    assert compare_rows(*rounds, POINT_KEY + ["round"], set(), column_rtol=ROUND_RTOL) == (True, [])


def test_two_worker_connect_equals_serial_row_for_row(ray_2, tmp_path, monkeypatch):
    """`deft6g connect --quick` (random-bert, 16 points: references; AirComp (two designs) and digital at 0 and
    20 dB, each trained on the ideal sum and noise-aware) on 2 Ray workers gives the serial run's results.csv,
    row for row, CPU time aside; the features are computed once, by the driver, into the shared cache folder."""
    from deft6g.benchmarks.connect import ConnectConfig, points, run_connect
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    quiet = lambda *_: None                                                                  # noqa: E731
    serial = run_connect(tmp_path / "serial", quick=True, log=quiet).rows
    cache = lambda: {f: f.stat().st_mtime_ns for f in (tmp_path / "cache").rglob("*.npz")}  # noqa: E731
    cached = cache()
    parallel = run_connect(tmp_path / "ray", quick=True, log=quiet, workers=2).rows
    assert len(serial) == len(points(ConnectConfig.quick())) == 16
    strip = lambda rows: sorted(tuple((k, v) for k, v in r.items() if k != "cpu_s") for r in rows)  # noqa: E731
    assert strip(parallel) == strip(serial)
    assert cached and cache() == cached                     # the workers load the features, never recompute them


def test_two_worker_emulator_study_equals_serial_row_for_row(ray_2, tmp_path, monkeypatch):
    """`deft6g emulator --quick` (random-bert, 2 seeds) with its training points on 2 Ray workers (one seed per
    worker, each distilling that seed's emulator) gives the serial run's results.csv, CPU time aside, floats
    within ray_speedup.FLOAT_RTOL (the distillation MSE differs at about 1e-8 across processes)."""
    from deft6g.benchmarks.emulator_study import (RESULT_FIELDS, RESULT_KEY, EmulatorStudyConfig, run_emulator_study,
                                                  study_points)
    quiet = lambda *_: None                                                                  # noqa: E731
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache-serial"))
    run_emulator_study(tmp_path / "serial", quick=True, log=quiet)
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache-ray"))                 # the workers distil anew
    run_emulator_study(tmp_path / "ray", quick=True, log=quiet, workers=2)
    rows = [ResultStore(tmp_path / d / "results.csv", RESULT_FIELDS, RESULT_KEY).rows() for d in ("serial", "ray")]
    assert len(rows[0]) == len(study_points(EmulatorStudyConfig.quick())) >= 4
    from deft6g.benchmarks.ray_speedup import compare_rows
    assert compare_rows(rows[0], rows[1], RESULT_KEY, {"train_s", "distill_s"}) == (True, [])


def test_parallel_command_times_both_jobs_and_finds_identical_rows(ray_2, tmp_path, monkeypatch, capsys):
    """`deft6g parallel --quick --workers 2` end to end, on smaller jobs than its --quick ones (too slow for a
    test on 2 cores): a 2-point study (ideal and AirComp at 20 dB) and a 20-point design sweep (one seed, one
    value per sweep). speedup.csv has a row per job with identical rows and positive times; the table prints;
    timing.json's CPU time is null (the Ray workers' is not this process's) and says so; a re-run skips both
    jobs."""
    from dataclasses import replace
    from deft6g.benchmarks import ray_speedup
    from deft6g.benchmarks.beamforming import DesignConfig
    from deft6g.benchmarks.cli import main
    from deft6g.benchmarks.study_config import build_config
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    study = build_config({**ray_speedup.QUICK_STUDY, "schemes": ["ideal", "aircomp"],
                          "channel": {"snr_db": [20.0], "num_rx_ant": [2]}})
    design = replace(DesignConfig.quick(), num_seeds=1, sweep_n=[2], sweep_k=[2], sweep_snr_db=[20],
                     csi_error_var=[0.0])
    monkeypatch.setattr(ray_speedup, "_study_config", lambda quick: study)
    monkeypatch.setattr(ray_speedup, "_design_config", lambda quick: design)
    out = tmp_path / "out"
    assert main(["parallel", "--quick", "--workers", "2", "--out", str(out)]) == 0
    rows = {r["job"]: r for r in ResultStore(out / "speedup.csv", ray_speedup.FIELDS, ["job"]).rows()}
    assert set(rows) == {"study", "design"} and rows["study"]["points"] == "2" and rows["design"]["points"] == "20"
    for r in rows.values():
        assert r["identical"] == "True" and r["differing_columns"] == "" and r["workers"] == "2"
        assert float(r["serial_s"]) > 0 and float(r["parallel_s"]) > 0 and float(r["speedup"]) > 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "identical rows" in printed
    assert json.loads((out / "timing.json").read_text())["cpu_s"] is None      # its Ray workers' CPU is not ours
    assert "2 points run in" in printed and "CPU time unknown (points ran on Ray workers)" in printed
    assert main(["parallel", "--quick", "--workers", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 already finished, skipped" in printed and "0 points run in" in printed
    assert json.loads((out / "timing.json").read_text())["cpu_s"] >= 0             # nothing ran on workers


def test_parallel_compare_names_differing_columns():
    """ray_speedup.compare_rows: rows matched by key in any order; skipped columns ignored; a differing column
    is named with its largest relative difference; different point sets are not identical."""
    from deft6g.benchmarks.ray_speedup import compare_rows
    a = [{"k": "1", "v": "1.0", "t": "3"}, {"k": "2", "v": "2.0", "t": "4"}]
    assert compare_rows(a, a[::-1], ["k"], {"t"}) == (True, [])
    b = [{"k": "1", "v": "1.0", "t": "9"}, {"k": "2", "v": "2.5", "t": "4"}]
    assert compare_rows(a, b, ["k"], {"t"}) == (False, ["v (2.0e-01)"])
    assert compare_rows(a, b[:1], ["k"], {"t"}) == (False, ["<points>"])


def test_workers_option(capsys):
    """Every command on the shared runner takes the same options: no --workers runs serially here,
    `--workers` alone one worker per core (0 to run_points), `--workers N` N; --ray-address alone uses the
    cluster's CPUs. N < 1 or not a number is refused, naming --workers."""
    from deft6g.benchmarks.cli import parallel_options, build_parser
    parser = build_parser()
    for cmd in ("study", "design", "link", "connect", "ensemble", "transfer", "finetune", "emulator"):
        workers = lambda *argv: parallel_options(parser.parse_args([cmd, *argv]))["workers"]  # noqa: E731, B023
        assert workers() == 1 and workers("--workers") == 0 and workers("--workers", "3") == 3
        assert workers("--workers", "--quick") == 0 and workers("--ray-address", "auto") == 0
        assert parallel_options(parser.parse_args([cmd, "--ray-address", "auto", "--workers", "2"])) == {
            "workers": 2, "ray_address": "auto", "worker_gpus": 0.0, "ray_timeout": 600.0}
        for bad in ("0", "-1", "two"):
            with pytest.raises(SystemExit) as exit_:
                parser.parse_args([cmd, "--workers", bad])
            assert exit_.value.code == 2
            err = capsys.readouterr().err
            assert "argument --workers: must be a whole number >= 1" in err and repr(bad) in err


def test_workers_without_ray_say_how_to_install(monkeypatch, tmp_path, capsys):
    """`import ray` failing (simulated): the CLI exits with 2 and the install command, before any work, for
    `--workers N` and for `--workers` alone; run_points raises RayUnavailable; a negative worker count is
    refused naming `workers`."""
    from deft6g.benchmarks.cli import main
    monkeypatch.setitem(sys.modules, "ray", None)
    for argv in (["study", "--workers", "2"], ["connect", "--workers"], ["transfer", "--ray-address", "auto"]):
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        assert "pip install 'deft6g[ray]'" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
    with pytest.raises(RayUnavailable, match=r"deft6g\[ray\]"):
        run_points([{"p": 0, "seed": 0}], Toy(tmp_path / "calls"), _store(tmp_path / "r.csv"), workers=2)
    with pytest.raises(ValueError, match="`workers`.*-1"):
        run_points([{"p": 0, "seed": 0}], Toy(tmp_path / "calls"), _store(tmp_path / "r.csv"), workers=-1)
    with pytest.raises(SystemExit, match="2"):
        main(["design", "--workers", "-1", "--out", str(tmp_path / "out")])
    assert "--workers" in capsys.readouterr().err
