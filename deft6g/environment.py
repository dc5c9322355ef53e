"""The process environment the TensorFlow stack needs, set when deft6g is imported (docs/design.md §5).

Variables, each set only when the user has not exported it (a user's value always wins):

- ``TF_USE_LEGACY_KERAS=1``: HF transformers' TF model classes are Keras 2 models (tf-keras). TensorFlow
  binds ``tf.keras`` to Keras 2 or Keras 3 once, when TensorFlow itself is first imported, and never again;
  imported without this variable, ``tf.keras`` is Keras 3, and Keras 3 optimisers and layers cannot be
  mixed with the HF models. So it must be in the environment before anything imports TensorFlow, which is
  why deft6g sets it at import rather than where a model is built.
- ``TF_CPP_MIN_LOG_LEVEL=2``: TensorFlow's C++ code logs errors only (0 = all, 1 = no INFO, 2 = no
  WARNING, 3 = no ERROR).
- ``TRANSFORMERS_NO_ADVISORY_WARNINGS=1``: no advisory notices from transformers.

One Python warning is filtered (message "IProgress not found"): HF's hub client imports ``tqdm.auto``, which in
Jupyter without ipywidgets warns that it cannot draw progress bars; deft6g shows none.

Offline mode for the model hub is *not* set here: the packaged model is loaded with
``local_files_only=True`` (`deft6g.finetune.load_fomo`), so importing deft6g does not stop a user's own
code from downloading hub models.

The first import of TensorFlow is filtered too: its shared libraries log while they load, before absl's
logging is initialised, where ``TF_CPP_MIN_LOG_LEVEL`` does not apply (a CPU-only machine gets absl's
"All log messages before absl::InitializeLog() ..." notice and cudart_stub's "Could not find cuda drivers"
twice). While that import runs, file descriptor 2 is captured; afterwards every captured line is written
back to stderr except absl-format lines (``I0000 00:00:1796291483.455729  123 file.cc:31] ...``) of a severity below
``TF_CPP_MIN_LOG_LEVEL`` (I = 0, W = 1, E = 2, F = 3) and, when that level is at least 1, absl's
pre-initialisation notice. Python warnings and errors raised by the import pass through unchanged.
"""

import contextlib
import ctypes
import gc
import os
import re
import sys
import tempfile
import time
import warnings

DEFAULTS = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
_ABSL_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [^ \]]+:\d+\] ")   # seconds: epoch before init
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}


def min_log_level():
    """TensorFlow's C++ log level, ``TF_CPP_MIN_LOG_LEVEL`` as an int (0 when unset or not a number)."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    return int(value) if value.strip().isdigit() else 0


def is_load_noise(line, level):
    """True when the captured stderr line (bytes) is a native log line below `level` (an int, as
    `min_log_level`), or absl's pre-initialisation notice and `level` >= 1."""
    if level >= 1 and line.rstrip(b"\r\n") == _ABSL_NOTICE:
        return True
    match = _ABSL_LINE.match(line)
    return match is not None and _SEVERITY[match.group(1)] < level


@contextlib.contextmanager
def filtered_stderr():
    """Capture file descriptor 2 for the duration of the block, then write back what `is_load_noise` keeps."""
    try:
        saved = os.dup(2)
    except OSError:                    # no stderr to filter
        yield
        return
    if sys.stderr is not None:
        sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            level = min_log_level()
            kept = b"".join(line for line in capture.read().splitlines(keepends=True)
                            if not is_load_noise(line, level))
            if kept:
                os.write(2, kept)


class QuietTensorFlowImport:
    """A `sys.meta_path` finder that finds nothing itself: on the first import of ``tensorflow`` it takes
    itself off `sys.meta_path` and runs that module's loader inside `filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec
        spec = find_spec(name)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader

        def exec_module(module):
            del loader.exec_module     # the loader's own method again
            with filtered_stderr():
                loader.exec_module(module)

        loader.exec_module = exec_module
        return spec


def set_environment():
    """Set `DEFAULTS` where unset, filter tqdm's notice, and filter TensorFlow's first import unless it has already
    happened."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore", message="IProgress not found")
    if "tensorflow" not in sys.modules and not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())


def release_memory():
    """Collect Python's garbage and hand the C heap's free pages back to the system (glibc's malloc_trim; a
    no-op where the C library has none). TensorFlow frees a point's tensors, traced graphs and gradient buffers
    into glibc's heaps, which otherwise keep them resident: without this a serial study's resident memory
    creeps up by tens of MB per point. -> whether the C library trimmed (bool)."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(trim(0))


class MemoryReleaser:
    """Calls `release` (default `release_memory`) after units of work, but so that it takes at most `share` of
    the time: it runs only once the time since its last run is at least `1 / share` times what that run took.
    Collecting garbage in a process that holds TensorFlow takes about 0.2 s, so a study of 20-100 s points
    releases after each of them, and a benchmark of sub-second points about every 4 s (share 0.05).
    Calling it -> whether it released (bool)."""

    def __init__(self, release=None, share=0.05, clock=time.perf_counter):
        if not 0 < share <= 1:
            raise ValueError(f"share must lie in (0, 1], got {share}")
        self.release, self.share, self.clock = release or release_memory, share, clock
        self._last, self._cost = None, 0.0

    def __call__(self):
        now = self.clock()
        if self._last is not None and now - self._last < self._cost / self.share:
            return False
        self.release()
        self._last = self.clock()
        self._cost = self._last - now
        return True


def quiet_stack():
    """Import TensorFlow, Sionna and transformers' TF classes and start TensorFlow's runtime with the
    process's stderr (fd 2) sent to /dev/null: their C++ code prints CUDA, oneDNN and absl notices before
    any log level applies. Python warnings raised later still show."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    set_environment()                                   # the TensorFlow environment first
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import sionna.phy  # noqa: F401
        import tensorflow as tf
        import transformers  # noqa: F401
        from transformers import TFBertModel  # noqa: F401
        tf.config.list_physical_devices()
        tf.constant(0.0) + 1.0
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
