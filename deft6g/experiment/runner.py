"""The one experiment runner: run independent points, store each as it finishes, skip finished ones.

A point is a dict of the store's key columns. `run_points` calls `fn(point)` for every point not yet in the
store, appends the row(s) it returns at once, and shows progress: a tqdm bar on a terminal, one line per
finished point otherwise. A point that raises is logged with its traceback and retried once; if it fails
again the others still run, and a PointsFailed error lists the failures at the end.
"""

import sys
import time
import traceback

from tqdm import tqdm


class PointsFailed(RuntimeError):
    """Some points raised twice; `failures` is a list of (point, traceback text)."""

    def __init__(self, failures):
        self.failures = failures
        names = ", ".join(_label(p) for p, _ in failures[:5])
        super().__init__(f"{len(failures)} point(s) failed twice: {names}; finished points are saved")


def _label(point):
    return " ".join(f"{k}={v}" for k, v in point.items())


def run_points(points, fn, store, desc="points", log=print, retries=1, describe=None):
    """Run `fn` on every point of `points` (dicts of `store`'s key columns) not yet done in `store`.

    fn(point) -> dict or list of dicts: the finished row(s), each holding the store's fields.
    describe(point, rows) -> str: the line printed per finished point when stdout is not a terminal
    (default: the point's key). Returns the number of points run now.
    """
    todo = [p for p in points if not store.done(p)]
    if len(todo) < len(points):
        log(f"{desc}: {len(points) - len(todo)} of {len(points)} already finished, skipped")
    if not todo:
        return 0
    tty = sys.stdout.isatty()
    bar = tqdm(total=len(todo), desc=desc, unit="pt", disable=not tty)
    failures = []
    for i, point in enumerate(todo, 1):
        t0 = time.time()
        for attempt in range(retries + 1):
            try:
                result = fn(point)
                break
            except KeyboardInterrupt:
                bar.close()
                raise
            except Exception:                                     # noqa: BLE001 -- reported, retried
                text = traceback.format_exc()
                log(f"{desc}: point {_label(point)} failed (attempt {attempt + 1}):\n{text}")
                if attempt == retries:
                    failures.append((point, text))
                    result = None
        if result is not None:
            for row in result if isinstance(result, list) else [result]:
                store.add(row)
            if not tty:
                text = describe(point, result) if describe else _label(point)
                log(f"[{i}/{len(todo)}] {desc}: {text} ({time.time() - t0:.1f} s)")
        bar.update(1)
    bar.close()
    if failures:
        raise PointsFailed(failures)
    return len(todo)
