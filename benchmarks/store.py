"""Resumable result files: each finished point is appended to a CSV at once, and skipped on re-runs."""

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path


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
                    raise ValueError(f"{self.path} has columns {reader.fieldnames}, expected {self.fields}; "
                                     "use another output folder")
                self._rows = list(reader)
        else:
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        self._done = {self._key(r) for r in self._rows}

    def _key(self, row):
        return tuple(str(row[k]) for k in self.key)

    def done(self, row):
        return self._key(row) in self._done

    def add(self, row):
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


def prepare_run(out_dir, cfg):
    """Create `out_dir` and record the run's configuration dataclass `cfg` in config.json; return the Path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, sort_keys=True))
    return out
