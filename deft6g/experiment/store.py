"""Resumable result files and guarded output folders.

Each finished point is appended to a CSV at once (flushed and fsync'd) and skipped on re-runs. A row counts
as finished only when its whole line, line break included, is on disk: reopening a store drops a torn last
row (cut by a crash, a kill or a full disk, or followed by the NUL bytes a file system leaves after a crash),
with a one-line warning, so that point runs again; damage followed by good rows is refused instead.

An output folder records the command and configuration that wrote it, and the versions that ran it, in
config.json; `prepare_output` refuses a run with another configuration, a folder holding CSV or JSON files
but no config.json, a folder another process is writing (an flock the kernel drops when that process ends,
however it ends), and, unless told otherwise, a folder written by other versions of deft6g or of its stack.
Side files are replaced atomically (`write_json_atomic`), and `load_json` treats a torn one as missing.
"""

import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

_log = logging.getLogger(__name__)

LOCK_NAME = ".deft6g.lock"
VERSIONED = ("deft6g", "tensorflow", "sionna-no-rt", "transformers", "cvxpy")
ALLOW_VERSION_CHANGE_ENV = "DEFT6G_ALLOW_VERSION_CHANGE"
_held = {}                                 # resolved folder -> open lock file descriptor, for the process's life


class OutputFolderError(ValueError):
    """The output folder holds results of another command, configuration or version, or is in use."""


COLUMN_TYPES = (int, float, bool, str, list, dict, np.ndarray)
ARRAYS_SUFFIX = ".arrays"          # results.csv's array files: results.arrays/<digest of key and place>-<column>.npy


class ResultStore:
    """An append-only CSV keyed by some of its columns, its rows typed by declared column types.

    Parameters
    ----------
    path : str or Path
        CSV file, created with a header (UTF-8)
    fields : list of str
        Column names
    key : list of str
        The columns that identify a point; key values are compared in their canonical form (see `canonical`)
    types : dict or None
        {column: type} for every column of `fields`, each of int, float, bool, str (text as written), list or
        dict (JSON text, written with json.dumps) or np.ndarray (not a key column: a bool, integer, float or
        complex array saved as a .npy file in the folder `<table stem>.arrays` beside the table, named by the
        row's key and its place among the rows of that key, its cell the file's path relative to the table's
        folder; the file is written, atomically and fsync'd, before the row). An empty cell (a None or ""
        written) reads as None in an int, float, bool, list, dict or np.ndarray column and as "" in a str
        column; "nan" and "inf" read as floats. None: no types, every value reads as its CSV text (a str)

    `done(row)` tells whether a point with that key is already on disk; `add(row)` appends one row, or the rows of
    one point (a list), in one write flushed to disk (fsync) before returning, so an interruption loses at most the
    point in progress, and an interrupt (Ctrl-C, an exception) never keeps part of a point's rows (a write cut
    short itself, by SIGKILL or a power loss during it or a full disk, can leave a prefix of them); with `types` it
    first checks that every value reads back as its column's type, and a list or dict value as itself (no tuples,
    only str keys), ValueError naming the column otherwise.
    `rows()` gives the rows as a reload reads them, typed by `types`. Opening a file whose last row is torn (no
    line break at its end, NUL bytes, a cut quoted field or a wrong column count) truncates the file before
    that row and logs a warning: the point runs again. A damaged row followed by complete rows, a header other
    than `fields`, or (with `types`) a cell that does not read as its column's type raises OutputFolderError.
    """

    def __init__(self, path, fields, key, types=None):
        self.path, self.fields, self.key = Path(path), list(fields), list(key)
        missing = set(self.key) - set(self.fields)
        if missing:
            raise ValueError(f"`key` columns {sorted(missing)} are not in `fields`")
        self.types = None if types is None else _check_types(types, self.fields)
        arrays = [k for k in self.key if self.types and self.types[k] is np.ndarray]
        if arrays:
            raise ValueError(f"`key` columns {arrays} are declared np.ndarray; a key column holds a value, not an "
                             "array")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows = self._load() if self.path.exists() else None
        if self._rows is None:
            with self.path.open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(self.fields)
                f.flush()
                os.fsync(f.fileno())
            self._rows = []
        self._count = {}                          # key -> how many rows have it (the rows of one point share it)
        self._counted([self._key(r) for r in self._rows])

    def _load(self):
        """The complete rows on disk (typed by `types`), after cutting a torn tail off the file; None when the
        file holds no complete header (empty, or a torn prefix of the header: it is rewritten)."""
        data = self.path.read_bytes()
        text = data.decode("utf-8", errors="surrogateescape")
        records = _records(text)
        header_line = _csv_line(self.fields)
        if not records or not records[0][1].endswith("\n"):
            if header_line.startswith(text.rstrip("\0")):
                if data:
                    _log.warning("%s: rewrote a torn header", self.path)
                return None
            raise OutputFolderError(f"{self.path} does not start with a CSV header; use another output folder")
        if records[0][0] != self.fields:
            raise OutputFolderError(f"{self.path} has columns {records[0][0]}, expected {self.fields}; "
                                    "use another output folder")
        good = [_complete(rec, raw, len(self.fields)) for rec, raw in records]
        end = len(good) if all(good) else good.index(False)
        if any(good[end:]):
            line = 1 + sum(raw.count("\n") for _, raw in records[:end])
            raise OutputFolderError(f"{self.path}: line {line} is damaged and complete rows follow it; repair or "
                                    "remove the file (a torn last row alone is dropped and re-run)")
        rows = []
        for i, (rec, _) in enumerate(records[1:end]):
            try:
                rows.append(self._typed(dict(zip(self.fields, rec))))
            except ValueError as err:
                raise OutputFolderError(f"{self.path}, row {i + 1}: {err}; use another output folder") from None
        if end < len(records):
            kept = "".join(raw for _, raw in records[:end])
            size = len(kept.encode("utf-8", errors="surrogateescape"))
            with self.path.open("r+b") as f:
                f.truncate(size)
                f.flush()
                os.fsync(f.fileno())
            _log.warning("%s: dropped a torn last row %r (%d bytes: an interrupted write); its point runs again",
                         self.path, text[len(kept):][:60], len(data) - size)
        return rows

    def _typed(self, texts):
        """A row of CSV texts {column: str} read with the declared types (as they are without types)."""
        if self.types is None:
            return texts
        return {k: self._read_array(v, k) if self.types[k] is np.ndarray else _read(v, self.types[k], k)
                for k, v in texts.items()}

    def _read_array(self, text, column):
        """The array whose .npy file the cell `text` of `column` names (None for an empty cell)."""
        if text == "":
            return None
        path = self.path.parent / text
        if Path(text).is_absolute() or ".." in Path(text).parts or not path.is_file():
            raise ValueError(f"column {column!r} names the array file {text!r}, which is not in {self.path.parent}")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"column {column!r}: the array file {text!r} does not read as one ({err})") from None

    def _save_array(self, key, nth, array, column):
        """Save `array` (numeric) of `column` of the `nth` row with `key` beside the table, atomically; its cell text
        (the path relative to the table's folder)."""
        digest = hashlib.sha1(repr((key, nth)).encode()).hexdigest()[:16]
        relative = f"{self.path.stem}{ARRAYS_SUFFIX}/{digest}-{column}.npy"
        path = self.path.parent / relative
        if not path.parent.is_dir():
            path.parent.mkdir()
            _fsync_folder(self.path.parent)                 # the new folder's entry survives a crash
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        _fsync_folder(path.parent)                          # the rename too, before the row that names the file
        return relative

    def _counted(self, keys):
        for k in keys:
            self._count[k] = self._count.get(k, 0) + 1

    def _key(self, row):
        return tuple(canonical(row[k]) for k in self.key)

    def done(self, row):
        return self._key(row) in self._count

    def add(self, rows):
        """Append `rows` (a row dict, or a list of the row dicts of one point), all checked before any is
        written, in one write."""
        rows = rows if isinstance(rows, list) else [rows]
        arrays = [k for k in self.fields if self.types and self.types[k] is np.ndarray]
        cells, typed = [], []
        for row in rows:
            missing = [k for k in self.fields if k not in row]
            if missing:
                raise ValueError(f"row for {self.path.name} lacks columns {missing}")
            bad = [k for k in arrays if row[k] is not None and not (isinstance(row[k], np.ndarray)
                                                                    and row[k].dtype.kind in "biufc")]
            if bad:
                raise ValueError(f"row for {self.path.name}: column {bad[0]!r} is declared np.ndarray (a numeric "
                                 f"array), got {row[bad[0]]!r:.80}")
            cells.append({k: "" if k in arrays else _cell(row[k], self.types and self.types[k], k)
                          for k in self.fields})
            try:
                typed.append({**self._typed(cells[-1]),
                              **{k: None if row[k] is None else row[k].copy() for k in arrays}})
            except ValueError as err:
                raise ValueError(f"row for {self.path.name}: {err}") from None
        keys = [self._key(t) for t in typed]
        for i, (row, cell) in enumerate(zip(rows, cells)):     # the arrays first: a row on disk has its files
            nth = self._count.get(keys[i], 0) + keys[:i].count(keys[i])       # rows of one point share its key
            cell.update({k: self._save_array(keys[i], nth, row[k], k) for k in arrays if row[k] is not None})
        text = io.StringIO(newline="")
        csv.DictWriter(text, self.fields).writerows(cells)
        with self.path.open("a", newline="", encoding="utf-8") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self._rows += typed
        self._counted(keys)

    def rows(self):
        """All rows on disk, typed by `types` (without types: values as strings, as a CSV reader gives them)."""
        return list(self._rows)


def _fsync_folder(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_types(types, fields):
    if not isinstance(types, dict):
        raise TypeError(f"`types` must be a dict {{column: type}} or None, got {type(types).__name__}")
    missing, extra = [f for f in fields if f not in types], [c for c in types if c not in fields]
    if missing or extra:
        raise ValueError(f"`types` must declare exactly the columns of `fields`: missing {missing}, unknown {extra}")
    bad = {c: t for c, t in types.items() if t not in COLUMN_TYPES}
    if bad:
        raise ValueError(f"`types` of {sorted(bad)}: must be one of int, float, bool, str, list, dict, np.ndarray, "
                         f"got "
                         f"{[getattr(t, '__name__', t) for t in bad.values()]}")
    return dict(types)


def _cell(value, kind, column):
    """The CSV text of `value` as the csv module writes it ("" for None; a list or dict column: JSON)."""
    if value is None:
        return ""
    if kind in (list, dict):
        try:
            text = json.dumps(value)
        except TypeError as err:
            raise ValueError(f"column {column!r} is declared {kind.__name__} (JSON), got {value!r}: {err}") from None
        if not _json_exact(value):
            raise ValueError(f"column {column!r} is declared {kind.__name__} (JSON), got {value!r}, which reads back "
                             f"as {json.loads(text)!r} (JSON has no tuples and only str keys)")
        return text
    return repr(value) if type(value) is float else str(value)


def _json_exact(value):
    """Whether json.loads(json.dumps(value)) == value (NaN counted equal to NaN): only dicts with str keys, lists,
    str, numbers, bools and None, nested."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_exact(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    return value is None or isinstance(value, (str, int, float))


def _read(text, kind, column):
    """`text` (a CSV cell) as `kind`; ValueError naming `column` when it is not one."""
    if kind is str:
        return text
    if text == "":
        return None
    try:
        if kind is bool:
            return {"True": True, "False": False}[text]
        value = json.loads(text) if kind in (list, dict) else kind(text)
    except (ValueError, KeyError):
        value = None
    if not isinstance(value, kind):
        raise ValueError(f"column {column!r} is declared {kind.__name__}, got {text!r}")
    return value


def _csv_line(values):
    buf = io.StringIO(newline="")
    csv.writer(buf).writerow(values)
    return buf.getvalue()


def _records(text):
    """[(fields, raw text)] of the CSV records of `text`, in order; the raw texts add up to `text`. A record
    cut inside a quoted field (or other malformed quoting) ends the list with (None, rest of the text)."""
    lines = io.StringIO(text, newline="")
    consumed = [0]

    def feed():
        for line in lines:
            consumed[0] += len(line)
            yield line

    reader, out, start = csv.reader(feed(), strict=True), [], 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            return out
        except csv.Error:
            return out + [(None, text[start:])]
        out.append((rec, text[start:consumed[0]]))
        start = consumed[0]


def _complete(rec, raw, width):
    """Whether a record was written whole: parsed, `width` columns, ended by its line break, no NUL byte."""
    return rec is not None and len(rec) == width and raw.endswith("\n") and "\0" not in raw


def canonical(value):
    """The key spelling of `value`: the number its CSV text denotes, or that text.

    A value is compared as it is written to the CSV (str(value), as the csv module writes it) and read back: a
    text that parses as a float becomes repr(float(text)), any other text stays as it is. So 10, 10.0, "10.0"
    and np.int64(10) are one point; None and "" (an empty cell) are one point; 0.1, "0.1", np.float64(0.1) and np.float32(0.1) are one point (NumPy
    writes a float32 as the shortest decimal that rounds back to it, "0.1"), while float(np.float32(0.1)) =
    0.10000000149011612 is another (its CSV text is that longer decimal); True, np.True_ and "True" are one
    point, distinct from 1.

    Input
    -----
    value : any (number, NumPy scalar, bool, str)

    Output
    ------
    str
    """
    text = "" if value is None else str(value)
    try:
        return repr(float(text))
    except ValueError:
        return text


def write_json_atomic(path, obj, **dumps_args):
    """Write `obj` as JSON (json.dumps with `dumps_args`, e.g. indent=2) to `path` atomically: a temporary file
    in the same folder, fsync'd, renamed over `path`; a crash leaves the old file or the new one, never a torn
    one. Returns `path` as a Path."""
    return _replace(path, lambda f: f.write(json.dumps(obj, **dumps_args)))


def write_text_atomic(path, text):
    """Write the string `text` to `path` atomically (as `write_json_atomic`). Returns `path` as a Path."""
    return _replace(path, lambda f: f.write(text))


def load_json(path, default=None):
    """The JSON value in `path`; `default` when the file is missing, or when it is not valid JSON (a torn
    write of an older version: a one-line warning says so, and the caller recomputes or restarts it)."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        _log.warning("%s is not valid JSON (%s: a torn write?); it is rebuilt", path, err)
        return default


def _replace(path, write):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def provenance():
    """What ran this process: versions of deft6g and its stack (importlib.metadata, None when not installed),
    deft6g's git commit (short, "+dirty" with uncommitted changes; None outside a git checkout), and the
    thread counts TensorFlow will use (its TF_NUM_INTRAOP/INTEROP_THREADS variables, else os.cpu_count())."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cores = os.cpu_count()
    threads = {"intra_op": int(os.environ.get("TF_NUM_INTRAOP_THREADS") or cores),
               "inter_op": int(os.environ.get("TF_NUM_INTEROP_THREADS") or cores), "cpu_count": cores}
    return {"versions": versions, "git_commit": _git_commit(), "threads": threads}


def _git_commit():
    here = Path(__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10)

    try:
        if git("ls-files", "--error-unmatch", Path(__file__).name).returncode:   # not deft6g's own checkout
            return None
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "") if head.returncode == 0 else None


def prepare_output(out_dir, command, config, allow_version_change=None):
    """Create (or resume) the output folder of a run and hold its lock.

    The folder's lock file (.deft6g.lock, an fcntl.flock) is held by this process until it exits, so a second
    run into the same folder, from any process, is refused while this one lives; the kernel releases it when
    the process ends, even by SIGKILL, so no stale lock remains. config.json records `command`, `config` and
    the `provenance()` of the run (written atomically).

    Parameters
    ----------
    out_dir : str or Path
        The output folder (created if missing)
    command : str
        The command's name, e.g. "link"
    config : dict
        The run's configuration, JSON-serialisable (other values are stored as str)
    allow_version_change : bool or None
        Resume a folder written by other versions of deft6g, tensorflow, sionna-no-rt, transformers or cvxpy
        (or by a deft6g that recorded none); the change is appended to config.json's "version_changes".
        None: True when the environment variable DEFT6G_ALLOW_VERSION_CHANGE is 1 (the command line's way)

    Output
    ------
    Path
        The folder

    Raises OutputFolderError when another process holds the folder, when it holds results of another command
    or configuration (naming the first keys that differ; provenance is not part of this comparison), when it
    holds CSV or JSON files but no config.json, or when the versions differ and no override is given (naming
    each package and both versions).
    """
    if allow_version_change is None:
        allow_version_change = os.environ.get(ALLOW_VERSION_CHANGE_ENV, "") == "1"
    if not isinstance(allow_version_change, bool):
        raise TypeError(f"`allow_version_change` must be a bool or None, got {allow_version_change!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _lock(out)
    path = out / "config.json"
    record = {"command": command, "config": json.loads(json.dumps(config, default=str))}
    now = provenance()
    if not path.is_file():
        stray = sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix in (".csv", ".json"))
        if stray:
            raise OutputFolderError(f"{out} holds result files ({', '.join(stray[:3])}) but no config.json, so "
                                    "the run that wrote them is unknown; use another --out or remove the folder")
        write_json_atomic(path, {**record, "provenance": now}, indent=2, sort_keys=True)
        return out
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = None
    mine = {k: old.get(k) for k in record} if isinstance(old, dict) else None
    if mine != record:
        diff = _differences(mine, record) if isinstance(old, dict) else ["config.json is not a deft6g record"]
        raise OutputFolderError(f"{out} holds results of another run ({'; '.join(diff[:3])}); "
                                "use another --out or remove the folder")
    changes = old.get("version_changes", [])
    last = changes[-1]["to"] if changes else old.get("provenance", {}).get("versions")
    if last != now["versions"]:
        diff = _differences(last, now["versions"]) if isinstance(last, dict) else \
            ["no versions recorded (written before deft6g recorded them)"]
        if not allow_version_change:
            raise OutputFolderError(f"{out} was written with other versions ({'; '.join(diff)}); resuming would "
                                    "mix their results: use another --out, or pass allow_version_change=True "
                                    f"(command line: {ALLOW_VERSION_CHANGE_ENV}=1)")
        _log.warning("%s: resuming with other versions (%s), as allowed", out, "; ".join(diff))
        old["version_changes"] = changes + [{"from": last, "to": now["versions"], "git_commit": now["git_commit"]}]
        write_json_atomic(path, old, indent=2, sort_keys=True)
    return out


def _lock(out):
    """Take (or keep) this process's exclusive flock on `out`'s lock file; OutputFolderError if another
    process holds it. The lock file keeps the holder's process id, for the message."""
    key = out.resolve()
    if key in _held:
        return
    fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputFolderError(f"{out} is in use by another deft6g run (process {holder}); wait for it to end "
                                "or use another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = fd


def _differences(old, new, prefix=""):
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return diffs


def write_table(path, fields, rows):
    """Write `rows` (dicts) to the CSV `path` with columns `fields`, atomically (a temporary file, fsync'd,
    renamed over it), for tables recomputed from the result store such as summaries."""
    def write(f):
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    _replace(path, write)
