"""The study protocol and the command registry: a study written outside the library, in one short class, is a
`deft6g` subcommand that runs, resumes and parallelises like the built-in ones."""

import csv
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy.special import erfc

from deft6g.benchmarks.cli import build_parser, main
from deft6g.experiment import (COMMANDS, Command, OutputFolderError, PointRows, Stage, Study, Tuning, register_command,
                               register_study, run)
from deft6g.experiment import protocol


@dataclass
class BerConfig:
    snr_db: list = field(default_factory=lambda: [0.0, 4.0, 8.0])
    bits: int = 200_000
    seeds: list = field(default_factory=lambda: [0, 1])


class BpskBer(Study):
    """The bit error rate of BPSK over AWGN, by Monte Carlo (the shape of Sionna's sim_ber)."""
    name = "toy_ber"
    description = "BPSK bit error rate over AWGN against its closed form"
    key = ["snr_db", "seed"]
    types = {"snr_db": float, "seed": int, "ber": float, "errors": int}
    setups = 0                                     # how many times setup ran in this process

    def config(self, quick=False):
        return BerConfig(snr_db=[0.0, 4.0], bits=50_000) if quick else BerConfig()

    def points(self, cfg):
        return [{"snr_db": s, "seed": seed} for seed in cfg.seeds for s in cfg.snr_db]

    def setup(self, cfg):
        type(self).setups += 1
        return {"bits": cfg.bits}

    def run_point(self, setup, point):
        rng = np.random.default_rng(point["seed"])
        x = 1.0 - 2.0 * rng.integers(0, 2, setup["bits"])
        sigma = math.sqrt(0.5 * 10 ** (-point["snr_db"] / 10))      # Es/N0 = SNR, real noise of N0/2
        errors = int(np.sum(np.sign(x + sigma * rng.standard_normal(setup["bits"])) != x))
        return {"ber": errors / setup["bits"], "errors": errors}

    def summary(self, cfg, rows):
        return "\n".join(f"{r['snr_db']:g} dB seed {r['seed']}: BER {r['ber']:.4g}" for r in rows)


@pytest.fixture
def toy():
    BpskBer.setups = 0
    study = BpskBer()
    register_study(study)
    yield study
    COMMANDS.pop(study.name)


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_study_registered_outside_the_library_is_a_subcommand_that_runs_and_resumes(toy, tmp_path, capsys):
    """`deft6g toy_ber --quick` runs the toy study through the engine: every BER within 4 standard errors of
    Q(sqrt(2 SNR)), setup built once, typed rows, config.json / timing.json / summary.txt written; a second run
    runs nothing (no setup either) and prints the same summary; the built-in subcommands come first in --help."""
    out = tmp_path / "ber"
    assert main(["toy_ber", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 dB seed 0: BER" in printed and f"results in {out}" in printed
    assert BpskBer.setups == 1
    rows = read(out / "results.csv")
    assert [(float(r["snr_db"]), int(r["seed"])) for r in rows] == [(0.0, 0), (4.0, 0), (0.0, 1), (4.0, 1)]
    for r in rows:
        p = 0.5 * erfc(math.sqrt(10 ** (float(r["snr_db"]) / 10)))
        assert abs(float(r["ber"]) - p) < 4 * math.sqrt(p * (1 - p) / 50_000)
    assert json.loads((out / "config.json").read_text())["command"] == "toy_ber"
    assert json.loads((out / "timing.json").read_text())["points_run"] == 4
    assert main(["toy_ber", "--quick", "--out", str(out)]) == 0
    assert BpskBer.setups == 1 and json.loads((out / "timing.json").read_text())["points_run"] == 0
    again = capsys.readouterr().out
    assert "toy_ber: 4 of 4 already finished, skipped" in again
    timing = json.loads((out / "timing.json").read_text())
    assert again.endswith((out / "summary.txt").read_text() + f"this run: 0 points run in {timing['seconds']:,.0f} s "
                          f"wall, {timing['cpu_s']:,.0f} CPU-s (timing.json)\nresults in {out}\n")   # then its time
    assert "this run: 4 points run in" in printed
    assert [x for x in again.splitlines() if "BER" in x] == [x for x in printed.splitlines() if "BER" in x]
    names = list(build_parser()._subparsers._group_actions[0].choices)
    assert names[0] == "study" and names[-1] == "toy_ber"


def test_run_returns_typed_rows_and_refuses_a_folder_of_another_configuration(toy, tmp_path):
    from deft6g.experiment import OutputFolderError
    cfg, rows = run(toy, tmp_path / "ber", quick=True, log=lambda m: None)
    assert isinstance(rows[0]["ber"], float) and isinstance(rows[0]["errors"], int) and isinstance(rows[0]["seed"], int)
    assert (tmp_path / "ber" / "summary.txt").read_text() == toy.summary(cfg, rows) + "\n"
    with pytest.raises(OutputFolderError):
        run(toy, tmp_path / "ber", cfg=BerConfig(bits=1000), log=lambda m: None)


class BerWithHooks(BpskBer):
    """The toy study with the optional hooks: work before the points, a progress line, the mean BER per SNR derived
    once for a derived table and the summary, a group."""
    name = "toy_ber_hooks"
    group = ["seed"]
    prepared = []
    derived = []

    def prepare(self, setup, points):
        type(self).prepared.append((setup["bits"], [(p["snr_db"], p["seed"]) for p in points]))

    def describe(self, point, row):
        return f"{point['snr_db']:g} dB seed {point['seed']}: {row['errors']} errors"

    def derive(self, cfg, rows):
        type(self).derived.append(len(rows))
        by_snr = {}
        for r in rows:
            by_snr.setdefault(r["snr_db"], []).append(r["ber"])
        return {"rows": rows, "mean_ber": {s: float(np.mean(v)) for s, v in by_snr.items()}}

    def tables(self, cfg, rows):
        return {"mean_ber.csv": (["snr_db", "ber", "closed_form"], [
            {"snr_db": s, "ber": b, "closed_form": 0.5 * erfc(math.sqrt(10 ** (s / 10)))}
            for s, b in rows["mean_ber"].items()])}

    def summary(self, cfg, rows):
        return f"{len(rows['rows'])} rows; " + ", ".join(f"{s:g} dB: {b:.4f}" for s, b in rows["mean_ber"].items())


def test_the_optional_hooks_prepare_describe_tables_and_group(tmp_path):
    """prepare gets this process's setup and the points left (and is not called when none is left); each
    finished point's progress line is describe's; the derived table is written (its mean BERs within 4 standard
    errors of the closed form); derive runs once per run and the table and the summary get what it returned;
    timing.json counts CPU seconds; a group of non-key columns is refused."""
    BerWithHooks.prepared, BerWithHooks.derived = [], []
    lines = []
    cfg, rows = run(BerWithHooks(), tmp_path / "ber", quick=True, log=lines.append)
    assert BerWithHooks.prepared == [(50_000, [(0.0, 0), (4.0, 0), (0.0, 1), (4.0, 1)])]
    progress = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in lines if line.startswith("[")]
    assert progress == [f"{r['snr_db']:g} dB seed {r['seed']}: {r['errors']} errors" for r in rows]
    table = read(tmp_path / "ber" / "mean_ber.csv")
    assert [float(r["snr_db"]) for r in table] == [0.0, 4.0]
    for r in table:
        p = float(r["closed_form"])
        assert abs(float(r["ber"]) - p) < 4 * math.sqrt(p * (1 - p) / 100_000)
    assert json.loads((tmp_path / "ber" / "timing.json").read_text())["cpu_s"] > 0
    summary = (tmp_path / "ber" / "summary.txt").read_text()
    assert BerWithHooks.derived == [4] and summary == "4 rows; " + ", ".join(
        f"{float(r['snr_db']):g} dB: {float(r['ber']):.4f}" for r in table) + "\n"
    run(BerWithHooks(), tmp_path / "ber", quick=True, log=lines.append)
    assert len(BerWithHooks.prepared) == 1 and BerWithHooks.derived == [4, 4]   # nothing left: no prepare
    for group in (["ber"], "seed"):                           # not key columns; a string, not a list
        bad = BerWithHooks()
        bad.group = group
        with pytest.raises(TypeError, match="group"):
            run(bad, tmp_path / "bad", quick=True, log=lines.append)
    escaping = BerWithHooks()
    escaping.tables = lambda cfg, rows: {"../mean_ber.csv": (["snr_db"], [])}
    with pytest.raises(ValueError, match="plain file name"):
        run(escaping, tmp_path / "escaping", quick=True, log=lines.append)
    assert not (tmp_path / "mean_ber.csv").exists()


class TimedBer(BpskBer):
    """The toy study with a cpu_s column, as studies whose points report their own CPU seconds have."""
    name = "toy_ber_timed"
    types = {**BpskBer.types, "cpu_s": float}

    def run_point(self, setup, point):
        return {**super().run_point(setup, point), "cpu_s": 100.0}


def test_timing_counts_the_cpu_seconds_of_the_points_run_on_workers(tmp_path, monkeypatch):
    """With workers, timing.json's cpu_s adds the rows' cpu_s (4 points of 100 s each, run here by a stand-in
    for the Ray runner, which passes every row through `write` as run_points does) to this process's own; run
    serially, the rows' seconds are this process's and are not added again."""
    def ray_stand_in(points, fn, store, write=None, **options):
        assert options["workers"] == 2
        for p in points:
            store.add(write(p, fn(p)))
        return len(points)

    monkeypatch.setattr(protocol, "run_points", ray_stand_in)
    run(TimedBer(), tmp_path / "ray", quick=True, log=lambda m: None, workers=2)
    assert 400 <= json.loads((tmp_path / "ray" / "timing.json").read_text())["cpu_s"] < 410
    monkeypatch.undo()
    run(TimedBer(), tmp_path / "serial", quick=True, log=lambda m: None)
    assert json.loads((tmp_path / "serial" / "timing.json").read_text())["cpu_s"] < 10


class BerInSubprocess(BpskBer):
    """The toy study whose points also spend 0.3 CPU seconds each in a subprocess (as `isolated` runs do)."""
    name = "toy_ber_subprocess"
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"

    def run_point(self, setup, point):
        subprocess.run([sys.executable, "-c", self.busy], check=True)
        return super().run_point(setup, point)


def test_timing_counts_the_cpu_seconds_of_subprocesses(tmp_path):
    """4 points, each waiting for a subprocess that burns 0.3 CPU seconds: cpu_s holds at least their 1.2 s."""
    run(BerInSubprocess(), tmp_path / "sub", quick=True, log=lambda m: None)
    assert json.loads((tmp_path / "sub" / "timing.json").read_text())["cpu_s"] >= 1.2


class BerStages(BpskBer):
    """The toy study in two tables: ber.csv as before, then refine.csv, one longer run (4x the bits, timed here)
    at the SNR whose mean BER of the first table is nearest 1e-2 (a point chosen from the rows before it)."""
    name = "toy_ber_stages"

    def stages(self):
        return [Stage("ber.csv", self.key, self.types, lambda cfg, done: self.points(cfg), self.run_point),
                Stage("refine.csv", ["snr_db"], {"snr_db": float, "first_ber": float, "ber": float},
                      self.refine_points, self.refine, here=True)]

    @staticmethod
    def refine_points(cfg, done):
        """The point carries a column known before it runs: the first table's mean BER there."""
        mean = {s: float(np.mean([r["ber"] for r in done["ber.csv"] if r["snr_db"] == s])) for s in cfg.snr_db}
        best = min(mean, key=lambda s: abs(math.log(mean[s] / 1e-2)))
        return [{"snr_db": best, "first_ber": mean[best]}]

    def refine(self, setup, point):
        return {"ber": self.run_point({"bits": 4 * setup["bits"]}, {**point, "seed": 99})["ber"]}

    def tables(self, cfg, rows):
        return {"closed_form.json": {f"{s:g}": 0.5 * erfc(math.sqrt(10 ** (s / 10))) for s in cfg.snr_db},
                "snr_db.json": cfg.snr_db, "refined.md": f"refined at {rows['refine.csv'][0]['snr_db']:g} dB\n"}

    def summary(self, cfg, rows):
        return f"{len(rows['ber.csv'])} + {len(rows['refine.csv'])} rows"


def test_a_study_of_several_tables_runs_its_stages_in_order_and_resumes(tmp_path, monkeypatch):
    """Two stages: the second's point comes from the first's rows (4 dB: mean BER 0.0125 in theory, nearer 1e-2
    than 0 dB's 0.079), its BER within 4 standard errors of the closed form; the `here` stage never gets the
    workers; timing's cpu_s is unknown (null) when a table without cpu_s ran on workers; a JSON file derived;
    the hooks see {file: rows}; a point's own columns reach its row; derived JSON (a dict, a list) and text files;
    one setup for both stages; a re-run runs nothing. Stage files must be distinct plain names, not the engine's
    own (config.json), and a study with stages has at least one."""
    seen = []

    def stand_in(points, fn, store, write=None, **options):
        seen.append((store.path.name, options.get("workers")))
        todo = [p for p in points if not store.done(p)]
        for p in todo:
            store.add(write(p, fn(p)))
        return len(todo)

    monkeypatch.setattr(protocol, "run_points", stand_in)
    BerStages.setups = 0
    cfg, rows = run(BerStages(), tmp_path / "ber", quick=True, log=lambda m: None, workers=2)
    assert seen == [("ber.csv", 2), ("refine.csv", None)] and BerStages.setups == 1
    assert json.loads((tmp_path / "ber" / "timing.json").read_text())["cpu_s"] is None   # workers' CPU unknown
    assert list(rows) == ["ber.csv", "refine.csv"] and len(rows["ber.csv"]) == 4
    refined = rows["refine.csv"]
    p = 0.5 * erfc(math.sqrt(10 ** 0.4))
    assert [r["snr_db"] for r in refined] == [4.0] and abs(refined[0]["ber"] - p) < 4 * math.sqrt(p * (1 - p) / 200_000)
    first = [r["ber"] for r in rows["ber.csv"] if r["snr_db"] == 4.0]
    assert refined[0]["first_ber"] == pytest.approx(np.mean(first), rel=1e-12)    # the point's own column kept
    closed = json.loads((tmp_path / "ber" / "closed_form.json").read_text())
    assert closed["4"] == pytest.approx(p, rel=1e-12)
    assert json.loads((tmp_path / "ber" / "snr_db.json").read_text()) == [0.0, 4.0]      # JSON list, text file
    assert (tmp_path / "ber" / "refined.md").read_text() == "refined at 4 dB\n"
    assert (tmp_path / "ber" / "summary.txt").read_text() == "4 + 1 rows\n"
    run(BerStages(), tmp_path / "ber", quick=True, log=lambda m: None)
    assert json.loads((tmp_path / "ber" / "timing.json").read_text())["points_run"] == 0
    twice = BerStages()
    twice.stages = lambda: [Stage("a.csv", ["seed"], {"seed": int}, None, None),    # one table, two shapes
                            Stage("a.csv", ["seed"], {"seed": int, "ber": float}, None, None)]
    with pytest.raises(TypeError, match="file"):
        run(twice, tmp_path / "twice", quick=True)
    engine = BerStages()                                         # the engine's own files are not tables
    engine.stages = lambda: [Stage("config.json", ["seed"], {"seed": int}, None, None)]
    with pytest.raises(TypeError, match="plain file name"):
        run(engine, tmp_path / "engine", quick=True)
    none = BerStages()
    none.stages = lambda: []
    with pytest.raises(TypeError, match="non-empty"):
        run(none, tmp_path / "none", quick=True)
    assert Study.summary(BerStages(), cfg, rows) == "toy_ber_stages: 4 rows in ber.csv, 1 rows in refine.csv"


def test_run_stages_runs_the_named_stages_alone_and_resumes(tmp_path, toy):
    """run_stages writes the named stage's table alone (beside config.json: no timing, derived tables or summary),
    its rows those of the whole study's run of that stage; a rerun builds no setup (nothing left). A later stage
    sees an earlier one's table in the folder, and is refused naming it when the table is missing; a folder of
    another configuration is refused; a file that no stage writes, a tuning's, a stage after a tuning and a
    plain string are refused; a study without stages runs its results.csv."""
    _, whole = run(BerStages(), tmp_path / "whole", quick=True, log=lambda m: None)
    BerStages.setups = 0
    alone = tmp_path / "alone"
    rows = protocol.run_stages(BerStages(), alone, ["ber.csv"], quick=True, log=lambda m: None)
    assert sorted(p.name for p in alone.iterdir() if not p.name.startswith(".")) == ["ber.csv", "config.json"]
    assert rows == {"ber.csv": whole["ber.csv"]} and BerStages.setups == 1
    assert protocol.run_stages(BerStages(), alone, ["ber.csv"], quick=True) == rows
    assert BerStages.setups == 1
    refined = protocol.run_stages(BerStages(), alone, ["refine.csv"], quick=True, log=lambda m: None)
    assert refined["refine.csv"] == whole["refine.csv"]                   # chosen from ber.csv in the folder
    with pytest.raises(ValueError, match="refine.csv needs the table ber.csv"):
        protocol.run_stages(BerStages(), tmp_path / "empty", ["refine.csv"], quick=True, log=lambda m: None)
    with pytest.raises(OutputFolderError):
        protocol.run_stages(BerStages(), alone, ["ber.csv"], BerConfig(bits=1000))
    with pytest.raises(ValueError, match=r"no stage .* writing \['nope.csv'\]"):
        protocol.run_stages(BerStages(), alone, ["ber.csv", "nope.csv"], quick=True)
    with pytest.raises(ValueError, match="tuning.csv"):
        protocol.run_stages(BerTuned(), tmp_path / "tuned", ["tuning.csv"], quick=True)
    with pytest.raises(ValueError, match="after the tuning stage"):
        protocol.run_stages(BerTuned(), tmp_path / "tuned", ["ber.csv"], quick=True)
    with pytest.raises(TypeError, match="list of table file names"):
        protocol.run_stages(BerStages(), alone, "ber.csv", quick=True)
    plain = protocol.run_stages(toy, tmp_path / "plain", ["results.csv"], quick=True, log=lambda m: None)
    assert plain == {"results.csv": run(toy, tmp_path / "plain_whole", quick=True, log=lambda m: None)[1]}


def test_a_stage_without_points_writes_no_table(tmp_path):
    """A stage whose configuration gives it no points (an optional part switched off) writes no file, nor its side
    tables; the hooks get empty lists for them, the stages around it run, and a rerun writes none either."""
    study = BerStages()
    study.refine_points = lambda cfg, done: []
    study.tables = lambda cfg, rows: {}
    _, rows = run(study, tmp_path, quick=True, log=lambda m: None)
    assert rows["refine.csv"] == [] and len(rows["ber.csv"]) == 4
    assert not (tmp_path / "refine.csv").exists() and (tmp_path / "summary.txt").read_text() == "4 + 0 rows\n"
    _, again = run(study, tmp_path, quick=True, log=lambda m: None)                  # a rerun: still no table
    assert again == rows and not (tmp_path / "refine.csv").exists()
    blocks = BerBlocks()                                                             # nor side tables
    blocks.points = lambda cfg: []
    _, rows = run(blocks, tmp_path / "blocks", quick=True, log=lambda m: None)
    assert rows == {"ber.csv": [], "blocks.csv": [], "worst.csv": []}
    assert sorted(f.name for f in (tmp_path / "blocks").glob("*.csv")) == []


class BerBlocks(BpskBer):
    """The toy study with side tables: each point's bits in 4 blocks, blocks.csv holding every block's errors,
    worst.csv the worst block of the 0 dB points only (None at the others); ber.csv the point's row as before."""
    name = "toy_ber_blocks"
    block_types = {"snr_db": float, "seed": int, "block": int, "errors": int}

    def stages(self):
        return [Stage("ber.csv", self.key, self.types, lambda cfg, done: self.points(cfg), self.blocks,
                      sides={"blocks.csv": (["snr_db", "seed", "block"], self.block_types),
                             "worst.csv": (["snr_db", "seed"], self.block_types)})]

    def blocks(self, setup, point):
        rng = np.random.default_rng(point["seed"])
        sigma = math.sqrt(0.5 * 10 ** (-point["snr_db"] / 10))
        errors = []
        for _ in range(4):
            x = 1.0 - 2.0 * rng.integers(0, 2, setup["bits"] // 4)
            errors.append(int(np.sum(np.sign(x + sigma * rng.standard_normal(x.size)) != x)))
        worst = int(np.argmax(errors))
        return PointRows({"ber": sum(errors) / setup["bits"], "errors": sum(errors)},
                         {"blocks.csv": [{"block": b, "errors": e} for b, e in enumerate(errors)],
                          "worst.csv": {"block": worst, "errors": errors[worst]} if point["snr_db"] == 0 else None})

    def summary(self, cfg, rows):
        return Study.summary(self, cfg, rows)


def test_a_stage_fills_side_tables_resumably(tmp_path, monkeypatch):
    """Side rows carry the point's columns and add up to the point's row; None adds none. They are saved before
    the point's own row: a run killed while writing the first ber.csv row leaves that point's 4 block rows and
    no ber.csv row, and the next run re-runs the point without doubling them, to the rows of an uninterrupted
    run. Refused: a point returning rows of a table not in its `sides` or no row of its own, points repeating a
    key, `sides` not {file: (key, types)}, a side or derived table named like another table."""
    clean = run(BerBlocks(), tmp_path / "clean", quick=True, log=lambda m: None)[1]
    blocks, ber = clean["blocks.csv"], clean["ber.csv"]
    assert list(clean) == ["ber.csv", "blocks.csv", "worst.csv"] and len(blocks) == 4 * len(ber)
    for r in ber:
        mine = [b["errors"] for b in blocks if (b["snr_db"], b["seed"]) == (r["snr_db"], r["seed"])]
        assert len(mine) == 4 and sum(mine) == r["errors"]
    assert [(w["snr_db"], w["errors"]) for w in clean["worst.csv"]] == [
        (0.0, max(b["errors"] for b in blocks if (b["snr_db"], b["seed"]) == (0.0, seed))) for seed in (0, 1)]

    add = protocol.ResultStore.add

    def killed(store, row):
        if store.path.name == "ber.csv":
            raise KeyboardInterrupt
        add(store, row)

    monkeypatch.setattr(protocol.ResultStore, "add", killed)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(BerBlocks(), out, quick=True, log=lambda m: None)
    assert len(read(out / "blocks.csv")) == 4 and not read(out / "ber.csv")
    monkeypatch.undo()
    assert run(BerBlocks(), out, quick=True, log=lambda m: None)[1] == clean
    assert (out / "blocks.csv").read_text() == (tmp_path / "clean" / "blocks.csv").read_text()

    def refused(name, run_point=None, points=None, sides=None, tables=None):
        study = BerBlocks()
        if run_point:
            study.blocks = run_point
        if points or sides:
            every = points or (lambda cfg, done: study.points(cfg))
            study.stages = lambda: [Stage("ber.csv", study.key, study.types, every, study.blocks, sides=sides)]
        if tables:
            study.tables = tables
        return run(study, tmp_path / name, quick=True, log=lambda m: None)

    with pytest.raises(ValueError, match="other.csv"):
        refused("stray", lambda setup, p: PointRows({"ber": 0.0, "errors": 0}, {"other.csv": {"block": 0}}))
    with pytest.raises(ValueError, match="no row of its own"):
        refused("empty", lambda setup, p: PointRows([], {}))
    with pytest.raises(ValueError, match="repeat snr_db=0 seed=0"):                 # 0 and 0.0: one key
        refused("twice", points=lambda cfg, d: [{"snr_db": 0.0, "seed": 0}, {"snr_db": 0, "seed": 0}])
    with pytest.raises(TypeError, match="`sides` of ber.csv"):
        refused("bad", sides={"b.csv": ["seed"]})
    with pytest.raises(TypeError, match="plain file name of its own .*, got 'ber.csv'"):
        refused("clash", sides={"ber.csv": (["seed"], {"seed": int})})
    with pytest.raises(TypeError, match="plain file name of its own .*, got 'ber.csv'"):      # as its own side
        refused("itself", sides={"ber.csv": (BerBlocks.key, BerBlocks.types)})
    for name in ("worst.csv", "summary.txt"):
        with pytest.raises(ValueError, match="derived table"):
            refused(f"derived_{name}", tables=lambda cfg, rows, name=name: {name: ([], [])})


class BerRun:
    """A tuning run of BerTuned, picklable for workers: the BER of one SNR with one validation seed; raises
    KeyboardInterrupt (a Ctrl-C) instead of its run number `stop_at` when that is set."""

    def __init__(self, study, shared):
        self.study, self.shared = study, shared

    def __call__(self, setting, seed):
        if BerTuned.stop_at == BerTuned.tuning_runs:
            raise KeyboardInterrupt
        BerTuned.tuning_runs += 1
        ber = self.study.run_point(self.shared.setup(), {**setting, "seed": seed})["ber"]
        return -abs(math.log(ber / 1e-2)), {"ber": ber}


class BerTuned(BpskBer):
    """The toy study with a tuning stage: the SNR whose validation BER (seeds 100, 101) is nearest 1e-2 is chosen
    on tuning.csv (a Tuning), then two stages fill ber.csv in turn at that SNR: seeds 0 and 1, then seed 2 + the
    number of the first stage's rows (the second stage's points come from the first's rows)."""
    name = "toy_ber_tuned"
    tuning_runs, stop_at = 0, None

    def __init__(self):
        self.snr_db = None

    def stages(self):
        return [Tuning(self.choose, {"ber": float}),
                Stage("ber.csv", self.key, self.types, lambda cfg, done: self.at_choice([0, 1]), self.run_point),
                Stage("ber.csv", self.key, self.types, self.more, self.run_point)]

    def more(self, cfg, done):
        return self.at_choice([2 + sum(r["seed"] < 2 for r in done["ber.csv"])])

    def at_choice(self, seeds):
        return [{"snr_db": self.snr_db, "seed": s} for s in seeds]

    def choose(self, cfg, shared, tune):
        self.snr_db = tune("snr", {"snr_db": cfg.snr_db}, BerRun(self, shared), seeds=(100, 101)).setting["snr_db"]

    def summary(self, cfg, rows):
        return Study.summary(self, cfg, rows)


def test_a_tuning_stage_chooses_on_validation_before_the_stages_that_use_it(tmp_path, monkeypatch):
    """A run cut (Ctrl-C) in its third tuning run keeps the first two in tuning.csv; the next run, on 2 workers
    (a stand-in for the Ray runner that runs a pickled copy of every point function, as a worker does), runs the
    2 missing candidates only, chooses 4 dB (BER 0.0125 in theory, nearer 1e-2 than 0 dB's 0.079; chosen.json),
    and two stages fill ber.csv in turn at 4 dB, their workers' copies of the study carrying the choice (timing
    counts the tuning runs as points, their CPU time on workers unknown); a re-run runs nothing. Refused: a
    Tuning whose file is a table's or chosen.json, or whose types name tuning.csv's own columns, or without a
    callable choose."""
    import pickle
    from deft6g.experiment import tuning
    out = tmp_path / "tuned"
    BerTuned.setups, BerTuned.tuning_runs, BerTuned.stop_at = 0, 0, 2
    with pytest.raises(KeyboardInterrupt):
        run(BerTuned(), out, quick=True, log=lambda m: None)
    assert len(read(out / "tuning.csv")) == 2
    BerTuned.stop_at = None

    def workers(points, fn, store, write=None, **options):
        assert options["workers"] == 2
        todo = [p for p in points if not store.done(p)]
        for p in todo:
            result = pickle.loads(pickle.dumps(fn))(p)
            store.add(write(p, result) if write else result)
        return len(todo)

    monkeypatch.setattr(protocol, "run_points", workers)
    monkeypatch.setattr(tuning, "run_points", workers)
    study = BerTuned()
    _, rows = run(study, out, quick=True, log=lambda m: None, workers=2)
    assert BerTuned.tuning_runs == 4 and study.snr_db == 4.0
    assert sorted((r["seed"], json.loads(r["setting"])["snr_db"]) for r in rows["tuning.csv"]) == [
        (100, 0.0), (100, 4.0), (101, 0.0), (101, 4.0)]
    assert json.loads((out / "chosen.json").read_text())["snr"]["setting"] == {"snr_db": 4.0}
    assert [(r["snr_db"], r["seed"]) for r in rows["ber.csv"]] == [(4.0, 0), (4.0, 1), (4.0, 4)]
    timing = json.loads((out / "timing.json").read_text())       # 2 tuning runs + 3 points; the workers' CPU unknown
    assert timing["points_run"] == 5 and timing["cpu_s"] is None
    monkeypatch.undo()
    again = BerTuned()
    run(again, out, quick=True, log=lambda m: None)
    assert BerTuned.tuning_runs == 4 and again.snr_db == 4.0
    assert json.loads((out / "timing.json").read_text())["points_run"] == 0
    nothing = lambda cfg, shared, tune: None                                         # noqa: E731
    for name, tuned in (("file", Tuning(nothing, {}, "ber.csv")), ("chosen", Tuning(nothing, {}, "chosen.json")),
                        ("seed", Tuning(nothing, {"seed": int})), ("choose", Tuning(None))):
        bad = BerTuned()
        bad.stages = lambda tuned=tuned: [tuned, *BerTuned.stages(bad)[1:]]
        with pytest.raises(TypeError, match="Tuning"):
            run(bad, tmp_path / f"bad_{name}", quick=True)


class FreshBer(BpskBer):
    """The toy study, started afresh by every run (as a benchmark of ratios within one invocation is)."""
    name = "toy_ber_fresh"
    fresh = True


def test_a_fresh_study_runs_every_point_again(tmp_path):
    """A fresh study's second run into the same folder runs all its points again (and keeps no row of the first:
    the same rows, once); a resumable study's second run runs none."""
    for study, again in ((FreshBer(), 4), (BpskBer(), 0)):
        out = tmp_path / study.name
        first = run(study, out, quick=True, log=lambda m: None)[1]
        second = run(study, out, quick=True, log=lambda m: None)[1]
        assert second == first and json.loads((out / "timing.json").read_text())["points_run"] == again


def test_the_setup_is_not_pickled_with_the_point_function(toy):
    """A Ray worker gets the study and its config and builds its own setup."""
    import pickle
    task = protocol.StudyTask(toy, toy.config(True))
    task({"snr_db": 0.0, "seed": 0})
    clone = pickle.loads(pickle.dumps(task))
    assert not clone.has_setup and task.has_setup
    assert clone({"snr_db": 4.0, "seed": 1}) == task({"snr_db": 4.0, "seed": 1})


class BerLambda(BpskBer):
    """The toy study in one stage whose point function is a lambda (not picklable), counting stages() calls."""
    name = "toy_ber_lambda"
    calls = []

    def stages(self):
        type(self).calls.append(1)
        return [Stage("ber.csv", self.key, self.types, lambda cfg, done: self.points(cfg),
                      lambda setup, point: self.run_point(setup, point))]


def test_a_stage_point_function_is_looked_up_once_per_process_and_not_pickled():
    """StudyTask calls study.stages() once for its point function, not per point (4 points here); a task that has
    run points pickles (a Ray worker's copy: its cached lambda is left behind) and looks it up again itself."""
    import pickle
    BerLambda.calls = []
    study = BerLambda()
    task = protocol.StudyTask(study, study.config(True), 0)
    rows = [task({"snr_db": s, "seed": 0}) for s in (0.0, 2.0, 4.0, 6.0)]
    assert len(BerLambda.calls) == 1 and [r["snr_db"] for r in rows] == [0.0, 2.0, 4.0, 6.0]
    clone = pickle.loads(pickle.dumps(task))
    assert clone({"snr_db": 0.0, "seed": 0}) == rows[0] and len(BerLambda.calls) == 2


def test_a_configuration_is_validated_before_the_output_folder_is_touched(tmp_path):
    """A configuration whose validate() raises leaves no folder behind, so the corrected run is not refused as
    another configuration's folder."""
    study = BpskBer()
    bad = study.config(True)
    bad.validate = lambda: (_ for _ in ()).throw(ValueError("`bits` must be positive"))
    with pytest.raises(ValueError, match="`bits` must be positive"):
        run(study, tmp_path / "ber", bad, log=lambda m: None)
    assert not (tmp_path / "ber").exists()
    assert len(run(study, tmp_path / "ber", quick=True, log=lambda m: None)[1]) == 4


def test_registry_refuses_duplicates_and_studies_that_break_the_protocol(toy):
    with pytest.raises(ValueError, match="toy_ber"):
        register_study(BpskBer())
    register_study(BpskBer(), replace=True)
    with pytest.raises(TypeError, match="Study"):
        register_study(object())
    bad = BpskBer()
    bad.name = "toy-ber"
    with pytest.raises(TypeError, match="identifier"):
        register_study(bad)
    bad = BpskBer()
    bad.key = ["snr"]
    with pytest.raises(TypeError, match="key"):
        register_study(bad)
    with pytest.raises(TypeError, match="Command"):
        register_command("toy")
    with pytest.raises(ValueError, match="study"):
        register_command(Command("study", "another main job", lambda args: 0))


def test_installed_packages_add_studies_through_entry_points(monkeypatch):
    """An entry point of the group deft6g.studies naming a Study class becomes a subcommand."""

    class EntryPoint:
        def load(self):
            return BpskBer

    monkeypatch.setattr(protocol, "entry_points", lambda group: [EntryPoint()] if group == "deft6g.studies" else [])
    try:
        assert "toy_ber" in build_parser()._subparsers._group_actions[0].choices
    finally:
        COMMANDS.pop("toy_ber", None)
