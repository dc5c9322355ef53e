"""deft6g.experiment.ScalarWriter: TensorBoard scalars read back with TensorFlow's own event reader, flushed at
every write, NaN and text left out, running sums, a restarted run without doubled steps, readable run names, a
file given as the log folder refused by name."""

import math

import numpy as np
import pytest

from deft6g.experiment import ScalarWriter, read_scalars, run_name


def _raw(folder):
    """{(tag, step): [values]} straight from tf.compat.v1.train.summary_iterator, with the plugin name checked."""
    import tensorflow as tf
    out = {}
    for path in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                assert v.metadata.plugin_data.plugin_name == "scalars"       # shown by TensorBoard's scalars tab
                out.setdefault((v.tag, event.step), []).append(float(tf.make_ndarray(v.tensor)))
    return out


def test_each_write_is_on_disk_at_once_as_float32_scalars(tmp_path):
    """Every finite number of a row at its step, rounded to float32, readable before the writer is closed
    (flushed: TensorBoard shows a running job); NaN, text and `skip` keys absent; the cumulative sum is the
    running total of the rows written so far."""
    rows = [{"seed": 3, "loss": 0.1 + r / 3, "uses": 1000 + r, "acc": math.nan if r == 1 else 0.5 + r / 7,
             "ids": "0 1", "n": np.int64(2)} for r in range(3)]
    writer = ScalarWriter(tmp_path, "run", skip=["seed"], cumulative=["uses"])
    for r, row in enumerate(rows):
        writer.write(r, row)
        found = _raw(tmp_path / "run")                                   # read while the writer is open
        assert ("loss", r) in found
    writer.close()
    want = {}
    for r, row in enumerate(rows):
        for k in ("loss", "uses", "acc", "n"):
            if math.isfinite(row[k]):
                want[(k, r)] = [float(np.float32(row[k]))]
        want[("uses_cumulative", r)] = [float(sum(1000 + i for i in range(r + 1)))]
    assert found == want


def test_prefix_names_the_group(tmp_path):
    with ScalarWriter(tmp_path) as writer:
        writer.write(1, {"nmse": 0.25}, prefix="train")
    assert _raw(tmp_path) == {("train/nmse", 1): [0.25]}


def test_a_restarted_run_replaces_its_events_and_leaves_other_runs_alone(tmp_path):
    """A run interrupted after steps 0 and 1, restarted `fresh` from step 0: the folder holds each step once
    (the new values), and the neighbouring run's file is untouched."""
    with ScalarWriter(tmp_path, "a") as first:
        for step in (0, 1):
            first.write(step, {"loss": 1.0 + step})
    with ScalarWriter(tmp_path, "b") as other:
        other.write(0, {"loss": 9.0})
    with ScalarWriter(tmp_path, "a", fresh=True) as again:
        for step in (0, 1, 2):
            again.write(step, {"loss": 0.5 + step})
    assert read_scalars(tmp_path / "a") == {"loss": [(0, 0.5), (1, 1.5), (2, 2.5)]}
    assert read_scalars(tmp_path / "b") == {"loss": [(0, 9.0)]}
    with ScalarWriter(tmp_path, "b") as resumed:                        # not fresh: a reader sees both writes
        resumed.write(0, {"loss": 8.0})
    assert read_scalars(tmp_path / "b") == {"loss": [(0, 9.0), (0, 8.0)]}


def test_run_names_are_readable_folder_names():
    point = {"scheme": "aircomp", "snr_db": 0.0, "num_rx_ant": 2, "link": "a/b c", "seed": 1, "x": float("inf"),
             "y": -2.5}
    assert run_name(point, ["scheme", "snr_db", "num_rx_ant", "link", "seed", "x", "y"]) == \
        "scheme=aircomp,snr_db=0,num_rx_ant=2,link=a-b-c,seed=1,x=inf,y=-2.5"


def test_a_file_as_log_folder_is_refused_by_name(tmp_path):
    (tmp_path / "f").write_text("")
    for bad in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(ValueError, match="log_dir.*existing file"):
            ScalarWriter(bad)
    ScalarWriter(tmp_path / "new" / "runs")                              # creates nothing until a write
    assert not (tmp_path / "new").exists()
