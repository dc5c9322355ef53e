"""run_points on Ray under faults: GPU shares the cluster cannot hold are refused before any point runs, a
cluster whose workers never start ends after `ray_timeout`, a crash mid-group keeps the group's finished points
and fails only the crashing point; the CLI refuses bad --worker-gpus / --ray-timeout values. One local Ray
instance (2 CPUs, 1 logical GPU: Ray places GPU shares by its resource count, no device is used) serves the
module."""

import os
import sys
from pathlib import Path

import pytest

from deft6g.experiment import PointsFailed, ResultStore, run_points
from deft6g.experiment import runner
from deft6g.experiment.runner import RayClusterError

FIELDS = ["p", "seed", "value"]


@pytest.fixture(scope="module")
def ray_gpu():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])     # the point functions travel by value
    import logging
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             object_store_memory=256 * 2**20)
    yield ray
    ray.shutdown()


def _store(path):
    return ResultStore(path, FIELDS, ["p", "seed"])


class Point:
    """value = p^2 + seed; touches calls/<p>.<seed>.<n> per call (computations counted across processes);
    crash: p values whose every call kills the worker process (as an out-of-memory kill would)."""

    def __init__(self, calls, crash=()):
        self.calls, self.crash = Path(calls), set(crash)

    def __call__(self, pt):
        self.calls.mkdir(exist_ok=True)
        n = len(list(self.calls.glob(f"{pt['p']}.{pt['seed']}.*")))
        (self.calls / f"{pt['p']}.{pt['seed']}.{n}").touch()
        if pt["p"] in self.crash:
            os._exit(1)
        return {**pt, "value": pt["p"] ** 2 + pt["seed"]}


def _calls(path, p, seed=0):
    return len(list(Path(path).glob(f"{p}.{seed}.*")))


def test_gpu_shares_beyond_the_cluster_are_refused_before_any_work(ray_gpu, tmp_path):
    """1 GPU: 2 workers of 1 GPU (room for 1) and 2 workers of 2 GPUs (room for none) raise RayClusterError
    naming --worker-gpus and the cluster's GPUs, before any point runs; 2 workers of 0.5 run every point."""
    points = [{"p": i, "seed": 0} for i in range(4)]
    for workers, gpus, room in ((2, 1.0, 1), (2, 2.0, 0)):
        with pytest.raises(RayClusterError, match=rf"--worker-gpus {gpus:g}: .* 1 GPU\(s\).*room for {room} "):
            run_points(points, Point(tmp_path / "calls"), _store(tmp_path / "r.csv"), log=lambda *_: None,
                       workers=workers, worker_gpus=gpus)
        assert not (tmp_path / "calls").exists() and not _store(tmp_path / "r.csv").rows()
    assert run_points(points, Point(tmp_path / "calls"), _store(tmp_path / "r.csv"), log=lambda *_: None, workers=2,
                      worker_gpus=0.5) == 4
    assert sorted(int(r["p"]) for r in _store(tmp_path / "r.csv").rows()) == [0, 1, 2, 3]


def test_workers_that_never_start_end_the_run_after_ray_timeout(ray_gpu, tmp_path, monkeypatch):
    """The cluster check is bypassed (as if a node left after it): 2 workers of 1 GPU on 1 GPU, so one never
    starts and its group never runs. The run ends with RayClusterError naming --ray-timeout instead of waiting
    forever; whatever the started worker finished is saved, each point once, with its value (on a loaded machine
    neither worker may have started within the 3 s, so the count of workers that never started is 1 or 2)."""
    monkeypatch.setattr(runner, "check_cluster", lambda workers, address, gpus: (ray_gpu, 2))
    points = [{"p": i, "seed": s} for s in range(2) for i in range(2)]
    with pytest.raises(RayClusterError, match=r"no progress for 3 s \(--ray-timeout\): [12] Ray worker\(s\) with "
                                              r"points to run never started; the cluster has 2 CPU\(s\) .* 1 GPU\(s\)"):
        run_points(points, Point(tmp_path / "calls"), _store(tmp_path / "r.csv"), log=lambda *_: None,
                   group=["seed"], workers=2, worker_gpus=1.0, ray_timeout=3.0)
    rows = _store(tmp_path / "r.csv").rows()
    assert len({(r["p"], r["seed"]) for r in rows}) == len(rows) <= 2
    assert all(int(r["value"]) == int(r["p"]) ** 2 + int(r["seed"]) for r in rows)


def test_crash_mid_group_keeps_finished_points_and_fails_alone(ray_gpu, tmp_path):
    """One group of 5 points (same seed), p=2 kills its worker on every call (as an out-of-memory point would):
    p=0 and p=1, finished before the crash, are stored and never recomputed; p=3 and p=4 run on a fresh worker;
    only p=2 is listed in PointsFailed, after its retry."""
    logs = []
    with pytest.raises(PointsFailed, match="1 point") as err:
        run_points([{"p": i, "seed": 0} for i in range(5)], Point(tmp_path / "calls", crash={2}),
                   _store(tmp_path / "r.csv"), log=logs.append, group=["seed"], workers=2)
    assert [p["p"] for p, _ in err.value.failures] == [2]
    assert sum("p=2 seed=0 failed" in line and "worker died" in line for line in logs) == 2
    assert sorted(int(r["p"]) for r in _store(tmp_path / "r.csv").rows()) == [0, 1, 3, 4]
    assert [_calls(tmp_path / "calls", p) for p in range(5)] == [1, 1, 2, 1, 1]


def test_cli_refuses_bad_gpu_shares_and_timeouts_and_gpus_the_cluster_lacks(ray_gpu, tmp_path, capsys):
    """--worker-gpus -1, 1.5 or 'half' and --ray-timeout 0 are argparse errors (exit 2) naming the option;
    --ray-timeout reaches run_points' keywords (default 600 s); --workers 2 --worker-gpus 1 on this 1-GPU cluster
    exits 2 naming --worker-gpus and the cluster's GPUs, before the output folder is made."""
    from deft6g.benchmarks.cli import build_parser, main, parallel_options
    parser = build_parser()
    for option, bad in (("--worker-gpus", "-1"), ("--worker-gpus", "1.5"), ("--worker-gpus", "half"),
                        ("--ray-timeout", "0"), ("--ray-timeout", "-5")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["design", option, bad])
        assert exit_.value.code == 2
        assert f"argument {option}: must be" in capsys.readouterr().err
    assert parallel_options(parser.parse_args(["design"]))["ray_timeout"] == 600.0
    assert parallel_options(parser.parse_args(["design", "--ray-timeout", "30", "--worker-gpus", "2"])) == {
        "workers": 1, "ray_address": None, "worker_gpus": 2.0, "ray_timeout": 30.0}
    assert main(["design", "--workers", "2", "--worker-gpus", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--worker-gpus 1:" in err and "1 GPU(s)" in err and "room for 1 " in err
    assert not (tmp_path / "out").exists()
