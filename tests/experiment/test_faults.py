"""Fault injection: runs killed with SIGKILL at seeded progress points (between rows, in the middle of writing a
row, with a NUL-filled tail as a crashed file system leaves) resume to exactly the rows of an uninterrupted
run; the folder lock refuses a second process and dies with its holder."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deft6g.experiment import OutputFolderError, ResultStore, prepare_output, run_points

# A toy study: 12 points, each row a deterministic function of its key (a quoted text column included).
TOY = """
import math
FIELDS, KEY = ["p", "seed", "label", "value"], ["p", "seed"]
POINTS = [{"p": p / 10, "seed": s} for s in range(2) for p in range(6)]
def point(pt):
    return {**pt, "label": f'p{pt["p"]}, "s{pt["seed"]}"', "value": math.sin(7 * pt["p"] + pt["seed"])}
"""

# Runs the toy study into argv[1] and holds still (touches argv[2], sleeps) at a progress point: with mode
# "after" once results.csv has argv[3] rows, with "half" after writing the first argv[4] fraction of the
# bytes of row argv[3] (fsync'd). The test then kills it with SIGKILL.
HOLD = TOY + """
import csv, io, os, pathlib, sys, time
from deft6g.experiment import ResultStore, prepare_output, run_points
out, gate, target, mode, frac = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), \\
    sys.argv[4], float(sys.argv[5])
add = ResultStore.add
def hold():
    gate.touch()
    while True:
        time.sleep(0.05)
def add_and_hold(self, row):
    if mode == "half" and len(self.rows()) + 1 == target:
        buf = io.StringIO(newline="")
        csv.DictWriter(buf, self.fields).writerow(row)
        with self.path.open("a", newline="") as f:
            f.write(buf.getvalue()[:int(frac * len(buf.getvalue()))])
            f.flush()
            os.fsync(f.fileno())
        hold()
    add(self, row)
    if mode == "after" and len(self.rows()) == target:
        hold()
ResultStore.add = add_and_hold
prepare_output(out, "toy", {"points": len(POINTS)})
run_points(POINTS, point, ResultStore(out / "results.csv", FIELDS, KEY), log=lambda *a: None)
"""


def _toy():
    names = {}
    exec(TOY, names)                                    # noqa: S102 -- the same definitions as the subprocess
    return names


def _run_until_held(args, gate, log):
    """Start `python -c args...`, wait until it touches `gate` (progress, not timing, decides), kill it."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 900                        # a generous bound for a slow machine
    while not gate.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    held = gate.exists()
    proc.kill()                                         # SIGKILL: no handler, no flush, no cleanup
    proc.wait(60)
    gate.unlink(missing_ok=True)
    assert held, f"the run ended before its progress point: {open(log).read()[-2000:]}"


def test_killed_toy_runs_resume_to_the_uninterrupted_rows(tmp_path, caplog):
    """Three SIGKILLs at seeded progress points (numpy seed 5: rows and cut fractions drawn), in the middle of a
    row (twice, once with 64 NUL bytes appended after the kill) and between rows, each followed by a resume;
    the last resume runs here. results.csv must equal, byte for byte, the file of an uninterrupted run."""
    toy = _toy()
    reference = tmp_path / "reference"
    prepare_output(reference, "toy", {"points": len(toy["POINTS"])})
    run_points(toy["POINTS"], toy["point"], ResultStore(reference / "results.csv", toy["FIELDS"], toy["KEY"]),
               log=lambda *a: None)

    rng = np.random.default_rng(5)
    targets = sorted(rng.choice(np.arange(1, len(toy["POINTS"]) + 1), 3, replace=False))
    faults = list(zip(targets, ["half", "after", "half"], rng.uniform(0.05, 0.95, 3), [0, 0, 64]))
    out, gate = tmp_path / "killed", tmp_path / "gate"
    results = out / "results.csv"
    for target, mode, frac, nuls in faults:
        _run_until_held([HOLD, str(out), str(gate), str(target), mode, str(frac)], gate, tmp_path / "stderr.txt")
        lines = results.read_bytes().split(b"\r\n")     # the header, the finished rows, then "" or a torn row
        assert len(lines) == 2 + (target if mode == "after" else target - 1) and bool(lines[-1]) == (mode == "half")
        if nuls:
            with results.open("ab") as f:
                f.write(b"\0" * nuls)
    caplog.set_level("WARNING")
    prepare_output(out, "toy", {"points": len(toy["POINTS"])})      # the killed holder left no stale lock
    store = ResultStore(results, toy["FIELDS"], toy["KEY"])
    assert any("dropped a torn last row" in m for m in caplog.messages)
    assert run_points(toy["POINTS"], toy["point"], store, log=lambda *a: None) == len(toy["POINTS"]) - targets[-1] + 1
    assert results.read_bytes() == (reference / "results.csv").read_bytes()


HOLD_LOCK = """
import pathlib, sys, time
from deft6g.experiment import prepare_output
prepare_output(sys.argv[1], "design", {"seed": 0})
pathlib.Path(sys.argv[2]).touch()
while True:
    time.sleep(0.05)
"""

SECOND = """
import sys
from deft6g.experiment import OutputFolderError, prepare_output
try:
    prepare_output(sys.argv[1], "design", {"seed": 0})
except OutputFolderError as err:
    print(err)
    sys.exit(2)
"""


def test_folder_lock_refuses_a_second_process_and_dies_with_its_holder(tmp_path):
    """Two `design` runs into one folder: while the first process lives, a second process (and this one) is
    refused with a message naming the folder and the holder's pid; after SIGKILL the folder is free."""
    out, gate = tmp_path / "design", tmp_path / "gate"
    with open(tmp_path / "stderr.txt", "w") as err:
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(gate)], stderr=err)
    try:
        deadline = time.time() + 900
        while not gate.exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert gate.exists(), (tmp_path / "stderr.txt").read_text()[-2000:]
        second = subprocess.run([sys.executable, "-c", SECOND, str(out)], capture_output=True, text=True,
                                timeout=900)
        assert second.returncode == 2
        assert f"{out} is in use by another deft6g run (process {holder.pid})" in second.stdout
        with pytest.raises(OutputFolderError, match=f"{out} is in use"):
            prepare_output(out, "design", {"seed": 0})
    finally:
        holder.kill()
        holder.wait(60)
    assert prepare_output(out, "design", {"seed": 0}) == out          # the kernel released the lock
    assert prepare_output(out, "design", {"seed": 0}) == out          # this process holds it: re-entrant


# `deft6g study` on the tiny configuration, killed while writing its 3rd row of results.csv (half of it on disk).
HOLD_STUDY = """
import csv, io, os, pathlib, sys, time
from deft6g.experiment import ResultStore
from deft6g.benchmarks.cli import main
gate, add = pathlib.Path(sys.argv[1]), ResultStore.add
def half_then_hold(self, row):
    if self.path.name == "results.csv" and len(self.rows()) == 2:
        buf = io.StringIO(newline="")
        csv.DictWriter(buf, self.fields).writerow(row)
        with self.path.open("a", newline="") as f:
            f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
        gate.touch()
        while True:
            time.sleep(0.05)
    add(self, row)
ResultStore.add = half_then_hold
sys.exit(main(sys.argv[2:]))
"""


def test_study_killed_mid_row_resumes_without_duplicates(tmp_path, tiny_study, caplog, monkeypatch):
    """The real `deft6g study` (tests/conftest.py's 6-point tiny configuration), SIGKILLed with half of its 3rd
    results row on disk: the resumed run drops that row, keeps the 2 finished ones unchanged, re-runs the
    rest and ends with each of the 6 points once in results.csv and its 2 rounds once in rounds.csv.
    (tests/benchmarks/test_study.py checks that a resumed study's rows equal an uninterrupted run's.)"""
    from deft6g.benchmarks.ray_speedup import compare_rows
    from deft6g.benchmarks.study import POINT_KEY, RESULT_FIELDS, RESULT_TYPES, run_study, study_points
    from deft6g.benchmarks.study_config import load_config

    out, gate = tmp_path / "killed", tmp_path / "gate"
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    _run_until_held([HOLD_STUDY, str(gate), "study", "--config", str(tiny_study), "--out", str(out)], gate,
                    tmp_path / "stderr.txt")
    data = (out / "results.csv").read_bytes()
    assert data.count(b"\r\n") == 3 and not data.endswith(b"\n")     # header, 2 rows, half of the 3rd
    shutil.copy(out / "results.csv", tmp_path / "before.csv")           # read typed, as run_study returns rows
    before = ResultStore(tmp_path / "before.csv", RESULT_FIELDS, POINT_KEY, types=RESULT_TYPES).rows()[:2]
    caplog.clear()
    caplog.set_level("WARNING")
    rows = run_study(out, str(tiny_study), log=lambda m: None).rows["results.csv"]
    assert any("dropped a torn last row" in m for m in caplog.messages)
    n_points = len(study_points(load_config(tiny_study)))
    keys = [tuple(r[k] for k in POINT_KEY) for r in rows]
    assert len(rows) == n_points == len(set(keys))
    assert compare_rows(rows[:2], before, POINT_KEY, set(), rtol=0.0) == (True, [])    # NaN equals NaN here
    with (out / "rounds.csv").open(newline="") as f:
        rounds = [tuple(r[k] for k in POINT_KEY + ["round"]) for r in csv.DictReader(f)]
    assert len(rounds) == len(set(rounds)) == 2 * n_points
