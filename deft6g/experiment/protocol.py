"""The study protocol and the command registry: a study is one short class, the engine owns its lifecycle.

A study supplies what only it knows, as Sionna's `sim_ber` asks only for the Monte-Carlo function and FedJAX's
`run_federated_experiment` only for the model and the algorithm:

- `name`, `description`: its subcommand and its line in `deft6g --help`;
- `config(quick)`: its configuration, a dataclass (`quick`: the small variant for smoke tests; its `validate()`,
  if it has one, runs before the output folder is touched);
- `points(cfg)`: every point, a list of dicts holding the `key` columns (and any other column of its row known
  before it runs, e.g. a setting computed here; the row gets the point's columns);
- `setup(cfg)`: what the points share (data, models), built once per process, lazily, and never pickled;
- `run_point(setup, point)`: the point's row (the columns of `types` other than the key);
- `summary(cfg, rows)` and `plot(out, cfg, rows)`: the printed table and the plots (optional), and `derive(cfg,
  rows)`: what those hooks and `tables` share, computed once, which they get as `rows` (optional; default the
  rows themselves);
- optional too: `tables(cfg, rows)` (files derived from the rows: CSV, JSON or text, e.g. choices made on
  validation), `describe(point, row)` (the progress line of a finished point), `group` (key columns whose
  points go to one worker, in order) and `prepare(setup, points)` (work done here before the points, e.g.
  filling the on-disk caches the workers read);
- a study of several tables returns them from `stages()` (a list of `Stage`: its file, key, types, points and
  point function, each stage's points may depend on the rows of the stages before it) instead of giving `key`,
  `types`, `points` and `run_point`; its hooks then get `rows` as {file: rows}. A stage's points may also
  fill side tables (`Stage.sides`): their `run_point` returns `PointRows(rows, sides)`; stages that declare
  the same file, key and types fill one table in turn; a `Tuning` among them makes choices on validation
  (tuning.csv, chosen.json) that the stages after it use.

A `fresh` study starts its tables afresh in every run, for figures compared within one invocation.

`run(study, out)` does the rest: the guarded output folder (`prepare_output`, config.json), a typed resumable
`ResultStore` (results.csv: rows come back with the types they were written with), `run_points` (serially or on
Ray workers), timing.json, the derived tables, summary.txt and the plots. Every `deft6g` subcommand is a
`Command` of the registry; `register_study(study)` adds a study's (so a study written outside the library is a
subcommand too), and installed packages add theirs through the entry-point group `deft6g.studies` (each entry
point names a Study instance or class)."""

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path

from ..deprecation import warn_renamed
from .runner import point_label, run_points
from .store import (ResultStore, canonical, load_json, prepare_output, write_json_atomic, write_table,
                    write_text_atomic)
from .tuning import TUNING_TYPES, tuner, tuning_store

ENTRY_POINT_GROUP = "deft6g.studies"


@dataclass(frozen=True)
class Stage:
    """One resumable table of a study with several (`Study.stages`). file: its name in the output folder; key,
    types: as Study's; points(cfg, done) -> its points, from the configuration and `done` {file: typed rows} of
    the stages before it; run_point(setup, point) -> the point's row(s) (a Ray worker calls `study.stages()` of
    its copy of the study, so that must give the same stages); describe(point, row): its progress line
    (default: the point); group: key columns whose points go to one worker, in order; here: run in this
    process one point at a time even with workers (e.g. a timed stage); sides: {file: (key, types)} of the side
    tables its points also fill, resumable like the stage's own; retries: how often a failed point runs again
    (`run_points`; 0 for an expensive timed run); own_workers: its points start Ray workers of their own (a
    benchmark of workers), whose CPU this process cannot count: timing.json's cpu_s is null once such a point
    ran. run_point returns the point's row, a non-empty list of rows, or with sides `PointRows`. A stage without
    points writes no table, nor side tables (their rows: empty lists)."""
    file: str
    key: list
    types: dict
    points: object
    run_point: object
    describe: object = None
    group: list = None
    here: bool = False
    sides: dict = None
    retries: int = 1
    own_workers: bool = False


@dataclass
class PointRows:
    """What the run_point of a stage with side tables returns: rows, the point's row (dict) or rows (non-empty
    list) of the stage's table, and sides, {side file: row, rows or None (none)}. The point's columns are added to
    every row; side rows go to their tables first (one already there, from an interrupted run, is skipped), so
    a point counts as finished only once its side rows are saved."""
    rows: object
    sides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Tuning:
    """Choices made on validation among a study's stages (`Study.stages`), before the stages after it: the tuning
    stage of docs/design.md §8. choose(cfg, shared, tune) makes them, keeping what later stages need (e.g. on
    the study: a worker gets the study as it is when its stage starts); shared.setup() -> this process's setup
    (`shared` is picklable: a worker builds its own); tune(name, grid, run, seeds=(0,), fixed=None, rule=RULE)
    -> Choice is `deft6g.experiment.tune` into the resumable table `file` (its run's own columns: `types`;
    chosen.json beside it), with the run's log and parallel options (`deft6g.experiment.tuning.tuner`)."""
    choose: object
    types: dict = field(default_factory=dict)
    file: str = "tuning.csv"


@dataclass(frozen=True, eq=False)
class StudyResult:
    """What `run` and every `run_*` return. config: the run's configuration; rows: its typed rows (results.csv's,
    or {file: rows} for a study with stages); derived: what `Study.derive` made of them, the input of the summary,
    the derived tables and the plots (the rows themselves for a study that derives nothing); timing: timing.json's
    {seconds, points_run, cpu_s}; folder: the output folder (Path).

    It unpacks and indexes as (config, rows). A `run_*` whose result was another tuple (or main.json's dict)
    before 0.1.0 unpacks and indexes as that one for one release (`with_legacy`), with a DeprecationWarning."""

    config: object
    rows: object
    derived: object
    timing: dict
    folder: Path
    legacy: tuple = field(default=None, repr=False)     # (function name, what it used to return)

    def with_legacy(self, function, value):
        """This result, unpacking and indexing as `value` (what `function` returned before 0.1.0), warning."""
        return replace(self, legacy=(function, value))

    def _items(self):
        if self.legacy is None:
            return self.config, self.rows
        function, value = self.legacy
        warn_renamed(f"unpacking or indexing the result of {function} as before 0.1.0", "its attributes (.config, "
                     ".rows[file], .derived, .timing)", stacklevel=4)
        return value

    def __iter__(self):
        return iter(self._items())

    def __getitem__(self, index):
        return self._items()[index]


def _as_list(rows):
    """A run_point's row(s) as a list: a dict is one row, None none."""
    return [] if rows is None else rows if isinstance(rows, list) else [rows]


def _with_point(point, rows):
    """`rows` (a dict, a list of dicts or None) with the point's columns added."""
    return None if rows is None else [{**point, **r} for r in rows] if isinstance(rows, list) else {**point, **rows}


class Study:
    """The protocol (module docstring). Class attributes: name, description, key (the point's columns), types
    {column: type} of every results.csv column, key included, in file order; group (optional): key columns
    whose equal values send points to one worker, one after the other (`run_points`' group); fresh (optional,
    False): every run starts its tables afresh instead of resuming them (a benchmark whose figures are ratios
    measured within one invocation)."""

    name = ""
    description = ""
    key = []
    types = {}
    group = None
    fresh = False          # True: every run starts its tables afresh (e.g. timings compared within one invocation)

    def config(self, quick=False):
        """The configuration: a dataclass (its fields are recorded in config.json); `quick`: the small variant."""
        raise NotImplementedError

    def stages(self):
        """The tables of a study of several, in run order (a list of `Stage`, at least one, and `Tuning` entries);
        None (default): one, results.csv, from `key`, `types`, `points`, `run_point`, `describe` and `group`. This
        process builds one setup for all of them; a Ray worker builds its own for each stage it serves."""
        return None

    def points(self, cfg):
        """Every point: a list of dicts holding the `key` columns (and any other known column of its row)."""
        raise NotImplementedError

    def setup(self, cfg):
        """What the points share (data, models), built once per process (default: None, nothing)."""
        return None

    def run_point(self, setup, point):
        """The row of `point`: a dict of the `types` columns other than the key."""
        raise NotImplementedError

    def prepare(self, setup, points):
        """Work done in this process before `points` (the ones not yet finished; of each stage in turn, told apart
        by their columns) run, with this process's setup (e.g. filling on-disk caches that workers read). Called
        only when overridden and something is left."""

    def describe(self, point, row):
        """The progress line of a finished point (default: its key columns, as `run_points` labels a point)."""
        return point_label(point)

    def derive(self, cfg, rows):
        """What `tables`, `summary` and `plot` share, computed once after the run from `rows` (results.csv's rows,
        or {file: rows} for a study with stages); they get it as their `rows` (default: the rows themselves), e.g.
        {**rows, "matched": a table the three of them read}."""
        return rows

    def tables(self, cfg, rows):
        """Files derived from the rows: {file name: (fields, list of row dicts)} (a tuple) for a CSV table,
        {file name: str} for a text file (e.g. a Markdown table), {file name: dict or list} for a JSON file
        (default: none)."""
        return {}

    def summary(self, cfg, rows):
        """The text printed after a run (default: the number of rows, per table for a study with stages; per entry
        of what `derive` returns, when it is overridden)."""
        if isinstance(rows, dict):
            return f"{self.name}: " + ", ".join(f"{len(r)} rows in {file}" for file, r in rows.items())
        return f"{self.name}: {len(rows)} rows"

    def plot(self, out, cfg, rows):
        """Write the study's plots into `out` (default: none)."""


class PointTask:
    """Base of a study's point function, picklable for Ray workers. The setup the points share (data, models;
    `build_setup()`, the subclass's) is built on first use in each process and never pickled: a worker builds
    its own. On pickling `_setup` is dropped, a `log` attribute travels as print (a worker prints its own) and
    the per-process caches named in CACHES (dict attributes) travel empty. `share_setup(other)` hands this
    task's setup to `other`, a task of a later stage in the same process."""

    CACHES = ()
    _setup = None

    def build_setup(self):
        raise NotImplementedError

    def setup(self):
        if self._setup is None:
            self._setup = self.build_setup()
        return self._setup

    @property
    def has_setup(self):
        """Whether this process has built (or been handed) the setup."""
        return self._setup is not None

    def share_setup(self, other):
        other._setup = self._setup
        return other

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k != "_setup"}
        if "log" in state:
            state["log"] = print
        return {**state, **{name: {} for name in self.CACHES}}


class StudyTask(PointTask):
    """run_points' point function of a protocol Study: point -> point + run_point's row (of stage number `stage`
    of `study.stages()`, or of the study itself when None)."""

    CACHES = ("_run_point",)

    def __init__(self, study, cfg, stage=None):
        self.study, self.cfg, self.stage, self._run_point = study, cfg, stage, {}

    def build_setup(self):
        return self.study.setup(self.cfg)

    def __call__(self, point):
        if not self._run_point:                            # looked up once per process (stages() builds a list)
            self._run_point[0] = (self.study.run_point if self.stage is None
                                  else self.study.stages()[self.stage].run_point)
        result = self._run_point[0](self.setup(), point)
        if isinstance(result, PointRows):
            return PointRows(_with_point(point, result.rows), {f: _with_point(point, r) for f, r in
                                                               (result.sides or {}).items()})
        return _with_point(point, result)


ENGINE_FILES = ("config.json", "timing.json", "summary.txt")      # what `run` writes itself


def _plain_file_name(name):
    """Whether `name` names a file of its own inside the output folder (no path separator, not "." or "..", not
    one of the engine's ENGINE_FILES)."""
    return (isinstance(name, str) and name not in ("", ".", "..", *ENGINE_FILES) and "/" not in name
            and "\\" not in name)


def _stages(study):
    """study.stages(), or the one stage (results.csv) of a study without them."""
    stages = study.stages()
    if stages is not None:
        return stages
    return [Stage("results.csv", study.key, study.types, lambda cfg, done: study.points(cfg), study.run_point,
                  study.describe, study.group)]


def _table_files(entries):
    """The file names of every resumable table of `entries` (stages, their side tables, tunings and chosen.json)."""
    files = set()
    for e in entries:
        files |= {e.file, "chosen.json"} if isinstance(e, Tuning) else {e.file, *(e.sides or {})}
    return files


def _check_distinct(study, stage, points):
    """Raise ValueError naming the first point of `stage` whose key (as the store compares it) repeats."""
    seen = set()
    for p in points:
        key = tuple(canonical(p[k]) for k in stage.key)
        if key in seen:
            raise ValueError(f"study {study.name!r}: the points of {stage.file} repeat {point_label(p)} (a "
                             f"configuration list with a repeated value?)")
        seen.add(key)


def _cpu_seconds():
    """User + system CPU seconds of this process and of its finished, waited-for subprocesses."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def check_study(study):
    """Raise TypeError naming what is missing when `study` does not follow the protocol."""
    if not isinstance(study, Study):
        raise TypeError(f"a study must be an instance of deft6g.experiment.Study, got {type(study).__name__}")
    if not isinstance(study.name, str) or not study.name.isidentifier():
        raise TypeError(f"Study.name must be a non-empty identifier (its subcommand), got {study.name!r}")
    entries = _stages(study)
    if (not isinstance(entries, list) or not entries or not all(isinstance(s, (Stage, Tuning)) for s in entries)
            or not any(isinstance(s, Stage) for s in entries)):
        raise TypeError(f"study {study.name!r}: `stages()` must return a non-empty list of Stage (and Tuning), got "
                        f"{entries!r}")
    stages = [s for s in entries if isinstance(s, Stage)]
    tables = [(s.file, "stage", s.key, s.types) for s in stages]
    for s in stages:
        if not isinstance(s.sides or {}, dict) or not all(isinstance(t, tuple) and len(t) == 2 for t in
                                                           (s.sides or {}).values()):
            raise TypeError(f"study {study.name!r}: `sides` of {s.file} must be a dict {{file: (key, types)}}, got "
                            f"{s.sides!r}")
        tables += [(file, "side", *table) for file, table in (s.sides or {}).items()]
    declared = {}
    for file, role, key, types in tables:
        shape = (role, list(key), list(types.items()))                  # the columns in their order
        if not _plain_file_name(file) or declared.setdefault(file, shape) != shape:
            raise TypeError(f"study {study.name!r}: a table's file must be a plain file name of its own (stages that "
                            f"fill one table or side table in turn declare the same key and types), got {file!r}")
        if not key or not set(key) <= set(types):
            raise TypeError(f"study {study.name!r}: `key` {key!r} of {file} must be a non-empty list of `types` "
                            f"columns {list(types)!r}")
    tunings = {}
    for t in entries:
        if isinstance(t, Tuning) and (not _plain_file_name(t.file) or t.file in declared or t.file == "chosen.json"
                                      or not callable(t.choose) or not isinstance(t.types, dict)
                                      or set(t.types) & set(TUNING_TYPES)
                                      or tunings.setdefault(t.file, list(t.types.items())) != list(t.types.items())):
            raise TypeError(f"study {study.name!r}: a Tuning needs a callable `choose`, a plain file name of its own "
                            f"(not chosen.json) and `types` of its run's own columns (not {list(TUNING_TYPES)}, one "
                            f"set per file), got {t.file!r} with {t.types!r}")
    for s in stages:
        if s.group is not None and not (isinstance(s.group, (list, tuple)) and set(s.group) <= set(s.key)):
            raise TypeError(f"study {study.name!r}: `group` {s.group!r} of {s.file} must be a list of `key` columns "
                            f"{s.key!r}")


def run(study, out, cfg=None, quick=False, log=print, **parallel):
    """Run (or resume; a `fresh` study starts its tables afresh) `study` into the folder `out` and return (cfg,
    rows): results.csv's rows, or for a study with `stages` {file: rows} of every stage.

    cfg: its configuration (default `study.config(quick)`); parallel: workers, ray_address, worker_gpus,
    ray_timeout of `run_points`. Writes config.json, results.csv or each stage's table (typed, one row per
    point, resumable), timing.json (of this invocation: seconds, points run now (tuning runs included) and
    cpu_s, the CPU seconds of this process and of the subprocesses it waited for, e.g. `isolated` runs, plus,
    for a table whose rows carry their own `cpu_s`, those of the points run on workers; null when points of a
    table without `cpu_s`, or tuning runs, ran on workers, or points of an `own_workers` stage ran), the
    derived tables, summary.txt and the plots."""
    check_study(study)
    cfg = study.config(quick) if cfg is None else cfg
    if callable(getattr(cfg, "validate", None)):
        cfg.validate()                                  # bad input is refused before the folder is touched
    folder = prepare_output(out, study.name, asdict(cfg))
    t0, cpu0 = time.time(), _cpu_seconds()
    staged, stages = study.stages() is not None, _stages(study)
    if study.fresh:
        for name in _table_files(stages):
            (folder / name).unlink(missing_ok=True)
    done, ran, worker_cpu, untimed = _run_stages(study, cfg, folder, list(enumerate(stages)), staged, log, parallel)
    cpu_s = None if untimed else round(_cpu_seconds() - cpu0 + worker_cpu, 3)
    timing = {"seconds": round(time.time() - t0, 3), "points_run": ran, "cpu_s": cpu_s}
    write_json_atomic(folder / "timing.json", timing)
    rows = done if staged else done["results.csv"]
    derived = study.derive(cfg, rows)
    for name, table in study.tables(cfg, derived).items():
        tuned = any(isinstance(s, Tuning) for s in stages)
        if not _plain_file_name(name) or name in done or (tuned and name == "chosen.json"):
            raise ValueError(f"study {study.name!r}: a derived table's file name must be a plain file name, not one "
                             f"of the resumable tables {list(done)}, {list(ENGINE_FILES)} or chosen.json, got "
                             f"{name!r}")
        if isinstance(table, tuple):
            write_table(folder / name, *table)
        elif isinstance(table, str):
            write_text_atomic(folder / name, table)
        else:
            write_json_atomic(folder / name, table, indent=2)
    write_text_atomic(folder / "summary.txt", study.summary(cfg, derived) + "\n")
    study.plot(folder, cfg, derived)
    return StudyResult(cfg, rows, derived, timing, folder)


def run_stages(study, out, files, cfg=None, quick=False, log=print, **parallel):
    """Run (or resume) only the stages of `study` whose tables are `files` (a list of file names; in the study's
    order, with one setup in this process) into the folder `out`; {file: typed rows} of each and of its side
    tables. The folder is guarded as `run`'s (config.json, its lock; a `fresh` study's named tables start
    afresh), but no timing, derived tables or summary are written. A named stage sees the rows of the stages
    before it that run with it or whose tables the folder holds; one that needs another table, or comes after a
    Tuning (whose choices only `run` makes), is refused. cfg, quick, parallel: as `run`'s."""
    check_study(study)
    if isinstance(files, (str, bytes)) or not files or not all(isinstance(f, str) for f in files):
        raise TypeError(f"run_stages: `files` must be a non-empty list of table file names, got {files!r}")
    cfg = study.config(quick) if cfg is None else cfg
    if callable(getattr(cfg, "validate", None)):
        cfg.validate()
    stages = _stages(study)
    numbered = [(i, s) for i, s in enumerate(stages) if s.file in files and not isinstance(s, Tuning)]
    missing = sorted(set(files) - {s.file for _, s in numbered})
    if missing:
        raise ValueError(f"study {study.name!r} has no stage (other than a tuning) writing {missing} (side tables "
                         f"are filled by their stage: name its table)")
    earlier = stages[:numbered[-1][0]]
    tuned = [s.file for s in earlier if isinstance(s, Tuning)]
    if tuned:
        raise ValueError(f"study {study.name!r}: {numbered[-1][1].file} comes after the tuning stage {tuned[0]}, "
                         f"whose choices only a whole run makes (`run`)")
    folder = prepare_output(out, study.name, asdict(cfg))
    if study.fresh:
        for name in _table_files([s for _, s in numbered]):
            (folder / name).unlink(missing_ok=True)
    before = {}                                       # earlier stages' tables in the folder, as run() would see them
    for stage in earlier:
        if stage.file in files:
            continue
        for file, (key, types) in {stage.file: (stage.key, stage.types), **(stage.sides or {})}.items():
            if (folder / file).exists():
                before[file] = ResultStore(folder / file, list(types), list(key), types=types).rows()
    return _run_stages(study, cfg, folder, numbered, study.stages() is not None, log, parallel, before)[0]


def _run_stages(study, cfg, folder, numbered, staged, log, parallel, before=None):
    """Run (or resume) the (number, stage) pairs `numbered` of `_stages(study)` in order into `folder`, with one
    setup in this process for all; (done: {file: typed rows}, points run now (tuning runs included), the CPU
    seconds carried by rows run on workers, untimed: whether points without a `cpu_s` of their own ran on
    workers, or points of a stage with `own_workers` ran); before: {file: rows} of earlier stages not run here."""
    done, ran, worker_cpu, untimed = dict(before or {}), 0, [], False
    task = StudyTask(study, cfg, 0 if staged else None)          # one setup in this process for all stages
    for number, stage in numbered:
        if isinstance(stage, Tuning):
            store = tuning_store(folder / stage.file, stage.types)
            had = len(store.rows())
            stage.choose(cfg, task, tuner(store, log, **parallel))
            done[stage.file] = store.rows()
            now = len(done[stage.file]) - had                      # its runs carry no cpu_s of their own
            untimed |= bool(now) and (parallel.get("workers", 1) != 1 or parallel.get("ray_address") is not None)
            ran += now
            continue
        try:
            points = stage.points(cfg, done)
        except KeyError as e:
            if before is None or e.args[0] not in _table_files(_stages(study)):
                raise
            raise ValueError(f"study {study.name!r}: stage {stage.file} needs the table {e.args[0]} of an earlier "
                             f"stage, which is neither run with it nor in {folder}") from e
        if not points and not (folder / stage.file).exists():
            done[stage.file] = []                         # a stage without points writes no table
            for side in stage.sides or {}:
                done.setdefault(side, [])                 # nor side tables
            continue
        store = ResultStore(folder / stage.file, list(stage.types), list(stage.key), types=stage.types)
        sides = {file: ResultStore(folder / file, list(types), list(key), types=types)
                 for file, (key, types) in (stage.sides or {}).items()}
        task = task.share_setup(StudyTask(study, cfg, number if staged else None))
        _check_distinct(study, stage, points)
        todo = [p for p in points if not store.done(p)]
        if todo and type(study).prepare is not Study.prepare:   # (no setup built here for a study without it)
            study.prepare(task.setup(), todo)
        options = {} if stage.here else parallel
        on_workers = options.get("workers", 1) != 1 or options.get("ray_address") is not None

        def write(point, rows, on_workers=on_workers, timed="cpu_s" in stage.types, sides=sides, file=stage.file):
            side_rows = rows.sides if isinstance(rows, PointRows) else {}
            rows = rows.rows if isinstance(rows, PointRows) else rows
            stray = set(side_rows) - set(sides)
            if stray or not _as_list(rows):
                raise ValueError(f"study {study.name!r}: point {point_label(point)} of {file} returned "
                                 + (f"rows of {sorted(stray)}, not of its `sides` {list(sides)}" if stray else
                                    "no row of its own (it would never count as finished)"))
            for side, new in side_rows.items():
                new = [row for row in _as_list(new) if not sides[side].done(row)]
                if new:
                    sides[side].add(new)
            if on_workers and timed:
                worker_cpu.extend(row["cpu_s"] for row in _as_list(rows) if row["cpu_s"] is not None)
            return rows

        now = run_points(points, task, store, desc=f"{study.name}: {stage.file}" if staged else study.name, log=log,
                         write=write, group=stage.group, describe=stage.describe, retries=stage.retries, **options)
        untimed |= bool(now) and (on_workers and "cpu_s" not in stage.types or stage.own_workers)
        ran += now
        done[stage.file] = store.rows()
        done |= {file: side.rows() for file, side in sides.items()}
    return done, ran, math.fsum(worker_cpu), untimed


@dataclass(frozen=True)
class Command:
    """A `deft6g` subcommand. handler(args) -> exit status or None (0) runs it; add_options(parser) adds its own
    options; outputs: the file kinds it writes (for --out's help); quick: what --quick runs; seed: it takes
    --seed; parallel: it takes the parallel options (parallel_note: what runs on workers)."""
    name: str
    description: str
    handler: object
    add_options: object = None
    outputs: str = ""
    quick: str = "a small grid for smoke tests"
    seed: bool = False
    parallel: bool = True
    parallel_note: str = ""


COMMANDS = {}
"""The command registry: subcommand name -> Command, in `deft6g --help` order (`register_command`)."""


def register_command(command, replace=False):
    """Add `command` (a Command) to the registry; a name already taken raises ValueError unless `replace`."""
    if not isinstance(command, Command):
        raise TypeError(f"`command` must be a Command, got {type(command).__name__}")
    if command.name in COMMANDS and not replace:
        raise ValueError(f"a command named {command.name!r} is already registered (pass replace=True)")
    COMMANDS[command.name] = command
    return command


def study_command(study):
    """The Command that runs `study` with `run` and prints its summary (--out, --quick, the parallel options)."""
    check_study(study)

    def handler(args):
        run(study, args.out, quick=args.quick, **parallel_options(args))
        print_summary(args.out)

    return Command(study.name, study.description, handler, outputs="CSV, JSON")


def print_summary(out):
    """Print what a run into the folder `out` wrote: its summary.txt, the run's time (timing.json) and where the
    results are (what every `deft6g` command prints at its end)."""
    folder = Path(out)
    timing = load_json(folder / "timing.json")
    cpu = ("CPU time unknown (points ran on Ray workers)" if timing["cpu_s"] is None else
           f"{timing['cpu_s']:,.0f} CPU-s")
    print((folder / "summary.txt").read_text(encoding="utf-8"), end="")
    print(f"this run: {timing['points_run']} points run in {timing['seconds']:,.0f} s wall, {cpu} (timing.json)")
    print(f"results in {out}")


def parallel_options(args):
    """The run_points keywords of a command line's parallel options: no --workers (and no --ray-address): 1,
    serially here; --workers alone: 0, one worker per core (or per CPU of the cluster at --ray-address);
    --workers N: N."""
    workers = args.workers if args.workers is not None else 0 if args.ray_address else 1
    return {"workers": workers, "ray_address": args.ray_address, "worker_gpus": args.worker_gpus,
            "ray_timeout": args.ray_timeout}


def register_study(study, replace=False):
    """Register `study` (a Study) as the subcommand `deft6g <study.name>`; returns its Command."""
    return register_command(study_command(study), replace)


def load_entry_points():
    """Register the studies that installed packages declare in the entry-point group `deft6g.studies` (an
    entry point loads a Study instance or class); names already registered are left as they are. An entry
    point that fails to load or is not a study is skipped with a warning naming it, so one broken package does
    not break every command."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            study = ep.load()
            study = study() if isinstance(study, type) else study
            if getattr(study, "name", None) not in COMMANDS:
                register_study(study)
        except Exception as err:                         # a third-party package's error: report, go on
            warnings.warn(f"deft6g: the study entry point {getattr(ep, 'name', ep)!r} was skipped: {err}",
                          stacklevel=2)
