"""Measurements in a fresh interpreter: `isolated(function, ...)` runs a function in a subprocess of its own, so
that what it measures (peak memory, import and trace time) is its own, not the calling process's; and
`peak_rss_mb`, a process's own peak resident memory."""

import json
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path


def peak_rss_mb():
    """This process's peak resident memory [MB of 2^20 bytes]: VmHWM of /proc/self/status (Linux), the high-water
    mark of this program's own address space. Not getrusage's ru_maxrss (the fallback where /proc is missing):
    Linux carries that across fork and exec, so a subprocess would report its parent's peak whenever the
    parent's was higher."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource                     # here: POSIX only, and needed only where /proc is missing
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def _json_value(value):
    """What JSON cannot hold natively: NumPy arrays and scalars, as their Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def isolated(function, *args, **kwargs):
    """`function(*args, **kwargs)` run in a fresh Python interpreter; returns its result.

    function : a module-level function (pickled by reference: the subprocess imports its module)
    args, kwargs : picklable (configuration dataclasses, arrays, ...)
    Returns the result as JSON gives it back (dicts, lists, str, int, float, bool, None; NumPy arrays and scalars
    as their Python values): what a results row holds. Raises RuntimeError with the end of the subprocess's
    stderr when it fails."""
    with tempfile.TemporaryDirectory(prefix="deft6g-isolated-") as tmp:
        job, result = Path(tmp) / "job.pkl", Path(tmp) / "result.json"
        job.write_bytes(pickle.dumps((function, args, kwargs)))
        res = subprocess.run([sys.executable, "-c", _CHILD, str(job), str(result)], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        if res.returncode or not result.is_file():
            name = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"
            raise RuntimeError(f"{name} failed in its subprocess (exit code {res.returncode}):\n{res.stderr[-3000:]}")
        return json.loads(result.read_text())


# the child's program: not `-m` this module, which the package has already imported (runpy would warn, and fail
# under PYTHONWARNINGS=error)
_CHILD = "import sys; from deft6g.experiment.isolation import _main; _main(*sys.argv[1:])"


def _main(job, result):
    function, args, kwargs = pickle.loads(Path(job).read_bytes())
    Path(result).write_text(json.dumps(function(*args, **kwargs), default=_json_value))
