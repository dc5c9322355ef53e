"""TensorBoard scalars written live: one run (a subfolder of the log folder) per study point or Flower job.

Events are written with `tf.summary.write` and the scalars plugin's metadata, so TensorBoard shows them as
scalars and deft6g needs no `tensorboard` package; every `write` flushes, so `tensorboard --logdir DIR` shows a
long run while it runs. A value that is not a finite number (NaN: not measured this round, e.g. validation
accuracy between evaluations; text columns) is left out. A run restarted from its first step (`fresh`: a point
re-run after an interruption) first deletes the event files it left in its own folder, so a reader sees each
step once; other runs' folders are never touched.
"""

import math
import numbers
import re
from pathlib import Path

EVENTS_GLOB = "events.out.tfevents.*"


def run_name(point, keys):
    """A readable folder name for one run: "key=value" for each of `keys` of the dict `point`, joined by ","
    (e.g. "scheme=aircomp,snr_db=0,num_rx_ant=2,..."); numbers in their shortest form (0.0 -> "0", inf ->
    "inf"), characters other than letters, digits and "._+-" replaced by "-" (no path separators)."""
    def text(v):
        return f"{v:g}" if isinstance(v, float) else str(v)
    return ",".join(f"{k}={re.sub(r'[^A-Za-z0-9._+-]', '-', text(point[k]))}" for k in keys)


def check_log_dir(log_dir):
    """Raise ValueError (naming `log_dir`) when `log_dir` or its nearest existing parent is a file; returns a
    Path. Nothing is created: the folder is made by the first write."""
    path = Path(log_dir)
    first = next(p for p in (path, *path.parents) if p.exists())
    if not first.is_dir():
        raise ValueError(f"`log_dir` must be a folder, but {str(first)!r} is an existing file, got {str(log_dir)!r}")
    return path


class ScalarWriter:
    """Scalars of one TensorBoard run in `log_dir` / `run` (`run` None: `log_dir` itself).

    Parameters: log_dir -- the log folder (checked by `check_log_dir`); run -- the run's subfolder name
    (`run_name`); fresh -- delete this run's earlier event files first (a run restarted from step 0);
    skip -- keys of the written dicts never logged (e.g. a point's key); cumulative -- keys also logged as
    running sums over the writes, under "NAME_cumulative".
    The TensorFlow writer is opened by the first `write` and closed by `close` (or leaving a `with` block)."""

    def __init__(self, log_dir, run=None, fresh=False, skip=(), cumulative=()):
        self.folder = check_log_dir(log_dir) / (run or "")
        if fresh and self.folder.is_dir():
            for old in self.folder.glob(EVENTS_GLOB):
                old.unlink()
        self.skip, self.totals, self._writer = set(skip), {k: 0.0 for k in cumulative}, None

    def write(self, step, scalars, prefix=""):
        """Every finite number in the dict `scalars` (minus `skip`) as the float32 scalar "prefix/NAME" (or
        "NAME" without a prefix) at the integer `step`, plus the running sums of `cumulative`; then flush."""
        import tensorflow as tf
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata
        values = {k: v for k, v in scalars.items() if k not in self.skip}
        for k in self.totals:
            self.totals[k] += values[k]
            values[f"{k}_cumulative"] = self.totals[k]
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = tf.summary.create_file_writer(str(self.folder))
        scalar = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))  # TensorBoard's tag
        with self._writer.as_default():
            for name, value in values.items():
                if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
                    tf.summary.write(f"{prefix}/{name}" if prefix else name, tf.constant(float(value), tf.float32),
                                     step=int(step), metadata=scalar)
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_scalars(folder):
    """{tag: [(step, value), ...]} of every scalar in the event files directly in `folder` (one run), files in
    name order (their creation time), events in file order, so a step written twice appears twice; values as
    float (float32 written). Reads the records as `tf.compat.v1.train.summary_iterator` does (without its
    deprecation notice), no tensorboard package."""
    import tensorflow as tf
    from tensorflow.core.util.event_pb2 import Event
    out = {}
    for path in sorted(Path(folder).glob(EVENTS_GLOB)):
        for record in tf.data.TFRecordDataset(str(path)):
            event = Event.FromString(record.numpy())
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return out
