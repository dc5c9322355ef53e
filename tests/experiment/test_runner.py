"""The shared runner and store: resume without recomputation, failures isolated, folders guarded."""

import json
import sys
import time

import pytest

from deft6g.environment import MemoryReleaser, release_memory
from deft6g.experiment import runner
from deft6g.experiment import OutputFolderError, PointsFailed, ResultStore, prepare_output, run_points


def _store(tmp_path):
    return ResultStore(tmp_path / "r.csv", ["p", "seed", "value"], ["p", "seed"])


def test_rerun_skips_finished_points_and_keys_are_canonical(tmp_path):
    calls = []

    def fn(pt):
        calls.append(pt["p"])
        return {**pt, "value": pt["p"] * 2}

    points = [{"p": float(i), "seed": 0} for i in range(4)]
    assert run_points(points[:2], fn, _store(tmp_path), log=lambda *_: None) == 2
    assert run_points(points, fn, _store(tmp_path), log=lambda *_: None) == 2
    assert calls == [0.0, 1.0, 2.0, 3.0]
    assert _store(tmp_path).done({"p": "3", "seed": "0"})          # 3.0 written, "3" read: the same point


def test_boolean_keys_resume(tmp_path):
    """True is written to the CSV as "True": a re-run reads it back as the same point (and not as 1.0)."""
    store = ResultStore(tmp_path / "b.csv", ["distill", "seed", "value"], ["distill", "seed"])
    store.add({"distill": True, "seed": 1, "value": 0})
    again = ResultStore(tmp_path / "b.csv", ["distill", "seed", "value"], ["distill", "seed"])
    assert again.done({"distill": True, "seed": 1}) and again.done({"distill": "True", "seed": "1"})
    assert not again.done({"distill": 1.0, "seed": 1}) and not again.done({"distill": False, "seed": 1})


def test_failing_point_is_retried_reported_and_others_finish(tmp_path):
    attempts, logs = {}, []

    def fn(pt):
        attempts[pt["p"]] = attempts.get(pt["p"], 0) + 1
        if pt["p"] == 1:
            raise RuntimeError("boom")
        return {**pt, "value": 0}

    with pytest.raises(PointsFailed, match="1 point") as err:
        run_points([{"p": i, "seed": 0} for i in range(3)], fn, _store(tmp_path), log=logs.append)
    assert attempts == {0: 1, 1: 2, 2: 1}
    assert "RuntimeError: boom" in err.value.failures[0][1]
    assert sum("failed" in line for line in logs) == 2
    assert len(_store(tmp_path).rows()) == 2


def test_a_point_of_several_rows_is_stored_whole_or_not_at_all(tmp_path, monkeypatch):
    """A point returning 3 rows, interrupted (Ctrl-C, simulated) in the fsync of its write: the file holds all 3
    rows; a runner adding one row at a time kept the first alone, and its point then counted as finished."""
    from deft6g.experiment import store as store_module
    store = ResultStore(tmp_path / "r.csv", ["p", "step"], ["p"])

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_points([{"p": 0}], lambda point: [{**point, "step": s} for s in range(3)], store, log=lambda m: None)
    monkeypatch.undo()
    assert [r["step"] for r in ResultStore(tmp_path / "r.csv", ["p", "step"], ["p"]).rows()] == ["0", "1", "2"]


def test_output_folder_refuses_another_configuration(tmp_path):
    prepare_output(tmp_path, "link", {"seed": 0, "snr_db": [0, 10]})
    prepare_output(tmp_path, "link", {"seed": 0, "snr_db": [0, 10]})                 # same: resumes
    with pytest.raises(OutputFolderError, match="seed: 0 there, 1 now"):
        prepare_output(tmp_path, "link", {"seed": 1, "snr_db": [0, 10]})
    with pytest.raises(OutputFolderError, match="command"):
        prepare_output(tmp_path, "design", {"seed": 0, "snr_db": [0, 10]})
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seed"] == 0


def _rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status; glibc's malloc_trim")
def test_release_memory_returns_a_fragmented_heap_to_the_system():
    """200 MB of 1 kB blocks (malloc'd, not Python's small-object pool) with every 16th kept: freeing the rest
    leaves the heap's free pages resident (glibc trims only the heap's top); release_memory hands back most of
    them (15/16 of 200 MB are free, in 15 kB holes: 3 of every ~4 pages are whole free pages)."""
    blocks = [bytes(1024) + bytes([i % 256]) for i in range(200_000)]
    kept = blocks[::16]                                          # noqa: F841 -- pins the heap's holes
    del blocks
    before = _rss_mb()
    assert release_memory()
    assert before - _rss_mb() > 100


def test_the_serial_runner_releases_memory_after_slow_points(tmp_path, monkeypatch):
    """The C heap is trimmed after every point that takes long next to a release (what stops a long serial
    study's resident memory from creeping up point by point)."""
    calls = []
    monkeypatch.setattr(runner, "release_memory", lambda: calls.append(1))
    points = [{"p": float(i), "seed": 0} for i in range(3)]
    run_points(points, lambda pt: {**pt, "value": 1.0}, _store(tmp_path), log=lambda *_: None)
    assert len(calls) == 3


def test_the_serial_runner_releases_memory_at_most_a_twentieth_of_the_time(tmp_path, monkeypatch):
    """Instant points and a release that takes 50 ms: one release (after the first point), not one per point,
    since the next may come only after 1 s (20 x 50 ms) of work."""
    calls = []
    monkeypatch.setattr(runner, "release_memory", lambda: (time.sleep(0.05), calls.append(1)))
    points = [{"p": float(i), "seed": 0} for i in range(6)]
    run_points(points, lambda pt: {**pt, "value": 1.0}, _store(tmp_path), log=lambda *_: None)
    assert len(calls) == 1


def test_memory_releaser_spends_at_most_its_share_of_the_time():
    """A fake clock: a release costs 1 s; with share 0.25 the next one waits for 4 s of work after it (5 s of
    releases in 25 s)."""
    now, calls = [0.0], []

    def release():
        calls.append(now[0])
        now[0] += 1.0

    releaser = MemoryReleaser(release, share=0.25, clock=lambda: now[0])
    for _ in range(20):                                   # 20 units of work, 1 s each
        now[0] += 1.0
        releaser()
    assert calls == [1.0, 6.0, 11.0, 16.0, 21.0]              # each ends 1 s later; the next comes 4 s after that
    with pytest.raises(ValueError, match="share"):
        MemoryReleaser(release, share=0)
