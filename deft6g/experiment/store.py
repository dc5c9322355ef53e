"""Resumable result files and guarded output folders.

Each finished point is appended to a CSV at once (flushed and fsync'd) and skipped on re-runs; an output
folder records the command and configuration that wrote it, and refuses a run with another one.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np


class OutputFolderError(ValueError):
    """The output folder holds results of another command or configuration."""


class ResultStore:
    """An append-only CSV keyed by some of its columns.

    Parameters: path (CSV file, created with a header), fields (column names), key (the columns that
    identify a point). `done(row)` tells whether a point with that key is already on disk; `add(row)`
    appends one row and flushes it to disk before returning, so an interruption loses at most the point
    in progress.
    """

    def __init__(self, path, fields, key):
        self.path, self.fields, self.key = Path(path), list(fields), list(key)
        missing = set(self.key) - set(self.fields)
        if missing:
            raise ValueError(f"`key` columns {sorted(missing)} are not in `fields`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rows = []
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != self.fields:
                    raise OutputFolderError(f"{self.path} has columns {reader.fieldnames}, expected {self.fields}; "
                                            "use another output folder")
                self._rows = list(reader)
        else:
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        self._done = {self._key(r) for r in self._rows}

    def _key(self, row):
        return tuple(_canonical(row[k]) for k in self.key)

    def done(self, row):
        return self._key(row) in self._done

    def add(self, row):
        missing = [k for k in self.fields if k not in row]
        if missing:
            raise ValueError(f"row for {self.path.name} lacks columns {missing}")
        row = {k: row[k] for k in self.fields}
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)
            f.flush()
            os.fsync(f.fileno())
        self._rows.append({k: str(v) for k, v in row.items()})
        self._done.add(self._key(row))

    def rows(self):
        """All rows on disk, values as strings (as a CSV reader gives them)."""
        return list(self._rows)


def _canonical(value):
    """One spelling per key value: 10, 10.0 and "10.0" are the same point, and so are True and "True"."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def prepare_output(out_dir, command, config):
    """Create `out_dir` for `command` (its name) run with `config` (a JSON-serialisable dict) and record
    both in config.json. A folder that already holds another command's or configuration's results
    raises OutputFolderError naming the first keys that differ. Returns the folder as a Path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    record = {"command": command, "config": json.loads(json.dumps(config, default=str))}
    text = json.dumps(record, indent=2, sort_keys=True)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if old != record:
            diff = _differences(old, record) if isinstance(old, dict) else ["config.json is not a deft6g record"]
            raise OutputFolderError(f"{out} holds results of another run ({'; '.join(diff[:3])}); "
                                    "use another --out or remove the folder")
        return out
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return out


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
    """Write `rows` (dicts) to the CSV `path` with columns `fields`, atomically (a temporary file renamed
    over it), for tables recomputed from the result store such as summaries."""
    path = Path(path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
