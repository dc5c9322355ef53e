"""The result store and output folders under faults: torn and NUL-padded tails, canonical NumPy keys, folders
without config.json, provenance and version changes, torn side files, NaN in results."""

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deft6g.experiment import (OutputFolderError, ResultStore, load_json, prepare_output, summarise,
                               write_json_atomic)
from deft6g.experiment.store import canonical, provenance

FIELDS, KEY = ["p", "seed", "value"], ["p", "seed"]


def _store(path):
    return ResultStore(path, FIELDS, KEY)


def test_torn_last_row_is_dropped_with_a_warning_and_rerun(tmp_path, caplog):
    """A row cut before its line break (0.84563 cut to 0.8456) is not done; the next add starts a new line."""
    path = tmp_path / "results.csv"
    store = _store(path)
    store.add({"p": 0.0, "seed": 0, "value": 0.5})
    store.add({"p": 0.1, "seed": 0, "value": 0.84563})
    path.write_bytes(path.read_bytes()[:-3])                         # "0.1,0,0.8456"
    caplog.set_level("WARNING")
    again = _store(path)
    assert [m for m in caplog.messages if "dropped a torn last row '0.1,0,0.8456'" in m] == caplog.messages
    assert len(caplog.messages) == 1 and "\n" not in caplog.messages[0]
    assert not again.done({"p": 0.1, "seed": 0}) and again.rows() == [{"p": "0.0", "seed": "0", "value": "0.5"}]
    again.add({"p": 0.1, "seed": 0, "value": 0.84563})
    again.add({"p": 0.2, "seed": 0, "value": 0.7})
    assert path.read_bytes() == b"p,seed,value\r\n0.0,0,0.5\r\n0.1,0,0.84563\r\n0.2,0,0.7\r\n"


def test_nul_padded_tail_is_no_phantom_row(tmp_path, caplog):
    path = tmp_path / "results.csv"
    _store(path).add({"p": 1, "seed": 0, "value": 3})
    with path.open("ab") as f:
        f.write(b"\0" * 40)
    caplog.set_level("WARNING")
    again = _store(path)
    assert len(again.rows()) == 1 and "40 bytes" in caplog.text
    assert path.read_bytes() == b"p,seed,value\r\n1,0,3\r\n"


def test_damage_followed_by_complete_rows_is_refused(tmp_path):
    """A glued row (what the old store made of a torn row) in the middle is not silently dropped."""
    path = tmp_path / "results.csv"
    path.write_text("p,seed,value\r\n0,0,0.84521,0,0.5\r\n2,0,0.6\r\n")
    with pytest.raises(OutputFolderError, match="line 2 is damaged"):
        _store(path)


def test_torn_header_is_rewritten_and_foreign_file_refused(tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes(b"p,se")
    assert _store(path).rows() == [] and path.read_bytes() == b"p,seed,value\r\n"
    path.write_bytes(b"not ours")
    with pytest.raises(OutputFolderError, match="CSV header"):
        _store(path)


def test_the_rows_of_one_point_are_written_together(tmp_path, monkeypatch):
    """A point's three rows go to the file in one write: a Ctrl-C in its fsync (simulated) leaves all three, where
    a row at a time left the first one alone, a point that then counted as finished with two rows missing; a
    bad row among them is refused before any is written."""
    from deft6g.experiment import store as store_module
    store = ResultStore(tmp_path / "r.csv", ["point", "step", "x"], ["point"], types={"point": int, "step": int,
                                                                                         "x": float})
    rows = [{"point": 0, "step": s, "x": 0.5 * s} for s in range(3)]

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.add(rows)
    monkeypatch.undo()
    assert ResultStore(tmp_path / "r.csv", ["point", "step", "x"], ["point"]).rows() == [
        {"point": "0", "step": str(s), "x": repr(0.5 * s)} for s in range(3)]
    with pytest.raises(ValueError, match="'x'"):
        store.add([{"point": 1, "step": 0, "x": 1.0}, {"point": 1, "step": 1, "x": "one"}])
    assert len(ResultStore(tmp_path / "r.csv", ["point", "step", "x"], ["point"]).rows()) == 3


def test_numpy_scalar_keys_resume(tmp_path):
    """np.float32(0.1) is written "0.1": it, 0.1, np.float64(0.1) and "0.1" are one point, before and after a
    reload; float(np.float32(0.1)) = 0.10000000149011612 is written as that decimal, another point."""
    path = tmp_path / "results.csv"
    store = _store(path)
    store.add({"p": np.float32(0.1), "seed": np.int64(2), "value": np.float32(0.25)})
    for s in (store, _store(path)):
        for p in (np.float32(0.1), 0.1, np.float64(0.1), "0.1"):
            assert s.done({"p": p, "seed": 2}) and s.done({"p": p, "seed": "2.0"})
        assert not s.done({"p": float(np.float32(0.1)), "seed": 2})
    assert canonical(np.float32(1e-8)) == canonical(1e-8) == "1e-08"
    assert canonical(np.True_) == canonical("True") != canonical(1)


rows_strategy = st.lists(st.tuples(st.integers(-5, 5), st.text(alphabet='ab,"\n\r é0.', max_size=8)),
                         min_size=1, max_size=6, unique_by=lambda r: r[0])


@settings(deadline=None, derandomize=True, max_examples=150)
@given(rows=rows_strategy, cut=st.floats(0, 1, exclude_max=True), nuls=st.integers(0, 20),
       more=st.integers(0, 2))
def test_reload_keeps_exactly_the_finished_rows(tmp_path_factory, rows, cut, nuls, more):
    """Any rows (quoted commas, quotes, line breaks, multi-byte text), the last one cut at any byte offset of
    its line (or kept whole) and then NUL bytes appended: a reload keeps exactly the rows written whole, the
    file holds exactly their bytes, and further adds and reloads keep every finished row."""
    path = tmp_path_factory.mktemp("prop") / "r.csv"
    store = _store(path)
    starts = []
    for p, text in rows:
        starts.append(path.stat().st_size)
        store.add({"p": p, "seed": 0, "value": text})
    data = path.read_bytes()
    whole = cut == 0 and nuls == 0
    offset = len(data) if whole else starts[-1] + int(cut * (len(data) - starts[-1]))
    path.write_bytes(data[:offset] + b"\0" * nuls)
    finished = rows if whole else rows[:-1]
    expect = [{"p": str(p), "seed": "0", "value": t} for p, t in finished]
    again = _store(path)
    assert again.rows() == expect and path.read_bytes() == data[:len(data) if whole else starts[-1]]
    assert again.done({"p": rows[-1][0], "seed": 0}) == whole
    for i in range(more):
        again.add({"p": 100 + i, "seed": 0, "value": f"x{i}"})
        expect.append({"p": str(100 + i), "seed": "0", "value": f"x{i}"})
    assert _store(path).rows() == expect


def test_folder_with_results_but_no_config_is_refused(tmp_path):
    """A finished `link` folder whose config.json was deleted is not adopted by a run with --seed 5."""
    out = prepare_output(tmp_path / "link", "link", {"seed": 0})
    _store(out / "aircomp.csv").add({"p": 0, "seed": 0, "value": 1})
    (out / "config.json").unlink()
    with pytest.raises(OutputFolderError, match="holds result files .*aircomp.csv.* but no config.json"):
        prepare_output(out, "link", {"seed": 5})
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "study.toml").write_text("")              # not a result file
    prepare_output(tmp_path / "fresh", "link", {"seed": 5})


def test_config_records_provenance_outside_the_equality_check(tmp_path):
    out = prepare_output(tmp_path, "link", {"seed": 0})
    record = json.loads((out / "config.json").read_text())
    now = provenance()
    assert {k: record["provenance"][k] for k in ("versions", "threads")} == {k: now[k] for k in ("versions", "threads")}
    commit = record["provenance"]["git_commit"]                   # None outside a git checkout
    assert record["config"] == {"seed": 0} and (commit is None or re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", commit))
    assert set(record["provenance"]["versions"]) == {"deft6g", "tensorflow", "sionna-no-rt", "transformers", "cvxpy"}
    assert record["provenance"]["versions"]["deft6g"] == "0.1.0"
    assert all(record["provenance"]["threads"][k] >= 1 for k in ("intra_op", "inter_op", "cpu_count"))
    record["provenance"]["git_commit"], record["provenance"]["threads"]["intra_op"] = "0000000", 99
    (out / "config.json").write_text(json.dumps(record))
    prepare_output(tmp_path, "link", {"seed": 0})                    # other commit or machine: resumes
    with pytest.raises(OutputFolderError, match="seed: 0 there, 5 now"):
        prepare_output(tmp_path, "link", {"seed": 5})


def test_version_change_is_refused_unless_allowed_and_recorded(tmp_path, monkeypatch, caplog):
    out = prepare_output(tmp_path, "link", {"seed": 0})
    record = json.loads((out / "config.json").read_text())
    record["provenance"]["versions"]["tensorflow"] = "2.0.0"
    (out / "config.json").write_text(json.dumps(record))
    now = provenance()["versions"]["tensorflow"]
    with pytest.raises(OutputFolderError, match=f"tensorflow: '2.0.0' there, '{now}' now.*allow_version_change"):
        prepare_output(tmp_path, "link", {"seed": 0})
    with pytest.raises(TypeError, match="`allow_version_change`"):
        prepare_output(tmp_path, "link", {"seed": 0}, allow_version_change="yes")
    monkeypatch.setenv("DEFT6G_ALLOW_VERSION_CHANGE", "1")
    caplog.set_level("WARNING")
    prepare_output(tmp_path, "link", {"seed": 0})
    monkeypatch.delenv("DEFT6G_ALLOW_VERSION_CHANGE")
    assert "tensorflow: '2.0.0' there" in caplog.text
    changes = json.loads((out / "config.json").read_text())["version_changes"]
    assert [(c["from"]["tensorflow"], c["to"]["tensorflow"]) for c in changes] == [("2.0.0", now)]
    prepare_output(tmp_path, "link", {"seed": 0})                    # the latest versions now: no override needed
    del record["provenance"]                                         # a folder of a version that recorded none
    (out / "config.json").write_text(json.dumps(record))
    with pytest.raises(OutputFolderError, match="no versions recorded"):
        prepare_output(tmp_path, "link", {"seed": 0})
    prepare_output(tmp_path, "link", {"seed": 0}, allow_version_change=True)


def test_side_files_are_atomic_and_a_torn_one_is_rebuilt(tmp_path, caplog):
    path = tmp_path / "importance.json"
    write_json_atomic(path, [0.5, 0.25], indent=2)
    assert load_json(path) == [0.5, 0.25] and [p.name for p in tmp_path.iterdir()] == ["importance.json"]
    path.write_text('[0.5, 0.2')                                     # torn by an older, non-atomic writer
    caplog.set_level("WARNING")
    assert load_json(path, []) == [] and "importance.json is not valid JSON" in caplog.text
    assert load_json(tmp_path / "missing.json") is None


def test_nan_in_a_results_file_is_skipped_and_counted(tmp_path, caplog):
    """accuracy (0.5, nan, 0.7) in one group: mean 0.6 and the t interval of (0.5, 0.7), 1 skipped, rows named;
    a group of NaN alone gives NaN; a value that is not a number names its row and column."""
    store = ResultStore(tmp_path / "results.csv", ["scheme", "seed", "acc"], ["scheme", "seed"])
    for scheme, seed, acc in [("a", 0, 0.5), ("a", 1, float("nan")), ("a", 2, 0.7), ("b", 0, float("nan"))]:
        store.add({"scheme": scheme, "seed": seed, "acc": acc})
    caplog.set_level("WARNING")
    a, b = summarise(ResultStore(tmp_path / "results.csv", ["scheme", "seed", "acc"], ["scheme", "seed"]).rows(),
                     ["scheme"], ["acc"])
    assert (a["n"], a["acc_skipped"], b["n"], b["acc_skipped"]) == (3, 1, 1, 1)
    assert a["acc_mean"] == pytest.approx(0.6) and a["acc_ci"] == pytest.approx(12.706204736 * 0.1, rel=1e-9)
    assert np.isnan(b["acc_mean"]) and np.isnan(b["acc_ci"])
    assert "rows [1]" in caplog.text and "rows [3]" in caplog.text
    with pytest.raises(ValueError, match="row 1 of `rows`: `acc` is 'oops'"):
        summarise([{"s": "a", "acc": "1"}, {"s": "a", "acc": "oops"}], ["s"], ["acc"])


TYPES = {"snr_db": float, "seed": int, "scheme": str, "ok": bool, "uses": int, "ber": float, "curve": list,
         "scores": dict}
TYPED_KEY = ["snr_db", "seed", "scheme"]
TYPED_ROWS = [
    {"snr_db": None, "seed": np.int64(0), "scheme": "ideal", "ok": True, "uses": 0, "ber": None, "curve": [[0, 0.5]],
     "scores": {"a": 0.25}},
    {"snr_db": np.float32(-6.0), "seed": 1, "scheme": "", "ok": np.False_, "uses": np.int64(1200),
     "ber": float("nan"), "curve": None, "scores": {}},
    {"snr_db": float("inf"), "seed": 2, "scheme": "digital, q8", "ok": False, "uses": 7, "ber": np.float64(1 / 3),
     "curve": [], "scores": {"b": [1, 2]}},
]
# what each row reads back as: the number its text denotes, None for an empty cell ("" in a str column)
TYPED_BACK = [
    {"snr_db": None, "seed": 0, "scheme": "ideal", "ok": True, "uses": 0, "ber": None, "curve": [[0, 0.5]],
     "scores": {"a": 0.25}},
    {"snr_db": -6.0, "seed": 1, "scheme": "", "ok": False, "uses": 1200, "ber": math.nan, "curve": None,
     "scores": {}},
    {"snr_db": math.inf, "seed": 2, "scheme": "digital, q8", "ok": False, "uses": 7, "ber": 1 / 3, "curve": [],
     "scores": {"b": [1, 2]}},
]


def _same(rows, want):
    """Rows equal value by value and type by type (NaN equal to NaN)."""
    assert len(rows) == len(want)
    for r, w in zip(rows, want):
        assert list(r) == list(w)
        for k in w:
            assert type(r[k]) is type(w[k]), (k, r[k], w[k])
            assert r[k] == w[k] or (isinstance(w[k], float) and math.isnan(w[k]) and math.isnan(r[k])), (k, r[k])


def test_typed_rows_read_back_with_their_declared_types(tmp_path):
    """Rows of every column type (NumPy scalars, None, NaN, inf, JSON lists and dicts, a str with a comma) read
    back with the declared types, the same before and after a reload; the file is byte for byte what a store
    without types writes for the same rows (JSON columns given as their json.dumps text), so declaring types
    changes no result file; keys match across None/"" and NumPy/Python numbers."""
    store = ResultStore(tmp_path / "typed.csv", list(TYPES), TYPED_KEY, types=TYPES)
    plain = ResultStore(tmp_path / "plain.csv", list(TYPES), TYPED_KEY)
    for row in TYPED_ROWS:
        store.add(row)
        plain.add({k: json.dumps(v) if TYPES[k] in (list, dict) and v is not None else v for k, v in row.items()})
    assert (tmp_path / "typed.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    again = ResultStore(tmp_path / "typed.csv", list(TYPES), TYPED_KEY, types=TYPES)
    for s in (store, again):
        _same(s.rows(), TYPED_BACK)
        assert s.done({"snr_db": "", "seed": "0", "scheme": "ideal"}) and s.done({"snr_db": None, "seed": 0,
                                                                                  "scheme": "ideal"})
        assert s.done({"snr_db": -6, "seed": np.int32(1), "scheme": ""})
        assert not s.done({"snr_db": 0.0, "seed": 0, "scheme": "ideal"})
    assert [r["scheme"] for r in plain.rows()] == ["ideal", "", "digital, q8"] and plain.rows()[0]["snr_db"] == ""


@pytest.mark.parametrize("column, value", [("uses", 2.5), ("uses", "3.0"), ("ok", 1), ("ok", "true"),
                                           ("snr_db", "high"), ("curve", {1, 2}), ("curve", {"a": 1}),
                                           ("scores", [1])])
def test_a_value_of_another_type_is_refused_before_it_is_written(tmp_path, column, value):
    store = ResultStore(tmp_path / "typed.csv", list(TYPES), TYPED_KEY, types=TYPES)
    before = (tmp_path / "typed.csv").read_bytes()
    with pytest.raises(ValueError, match=f"column '{column}' is declared {TYPES[column].__name__}"):
        store.add({**TYPED_ROWS[0], column: value})
    assert (tmp_path / "typed.csv").read_bytes() == before and store.rows() == []


@pytest.mark.parametrize("column, value, back", [("scores", {"v": {1: (2, 3)}}, "{'v': {'1': [2, 3]}}"),
                                                 ("curve", [(0, 0.5)], "[[0, 0.5]]"),
                                                 ("scores", {True: 1}, "{'true': 1}")])
def test_a_json_value_that_does_not_read_back_as_itself_is_refused(tmp_path, column, value, back):
    """A tuple or a non-str key reads back as a list or a str key: refused, naming the column and what it would
    read back as; the same value with lists and str keys is accepted and reads back equal."""
    store = ResultStore(tmp_path / "typed.csv", list(TYPES), TYPED_KEY, types=TYPES)
    with pytest.raises(ValueError, match=f"column '{column}' is declared .*reads back as {re.escape(back)}"):
        store.add({**TYPED_ROWS[0], column: value})
    assert store.rows() == []
    fixed = json.loads(json.dumps(value))
    store.add({**TYPED_ROWS[0], column: fixed})
    assert store.rows()[0][column] == fixed


def test_a_file_cell_of_another_type_is_refused_on_reload(tmp_path):
    path = tmp_path / "typed.csv"
    ResultStore(path, list(TYPES), TYPED_KEY, types=TYPES).add(TYPED_ROWS[2])
    path.write_text(path.read_text().replace(",7,", ",7.5,"))
    with pytest.raises(OutputFolderError, match="row 1: column 'uses' is declared int, got '7.5'"):
        ResultStore(path, list(TYPES), TYPED_KEY, types=TYPES)


ARRAY_TYPES = {"task": str, "seed": int, "prompt": np.ndarray, "accuracy": float}


def test_array_columns_are_npy_files_beside_the_table(tmp_path):
    """An np.ndarray column: each array is a .npy file in <stem>.arrays/ named by its row's key (and place among
    the rows of that key: the rows of one point), the cell its relative path; rows read back (before and after
    a reload) with arrays (complex ones too) bit-identical in dtype and shape, None as an empty cell; a key
    column of arrays, an object or non-array value, and a cell naming a missing or torn file are refused, naming
    the column; a refused row leaves no file behind."""
    path = tmp_path / "sources.csv"
    store = ResultStore(path, list(ARRAY_TYPES), ["task", "seed"], types=ARRAY_TYPES)
    prompt = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    store.add([{"task": "a", "seed": 0, "prompt": prompt, "accuracy": 0.5},
               {"task": "b", "seed": 0, "prompt": None, "accuracy": 0.25}])
    prompt[0, 0] = 99.0                                           # the store keeps its own copy
    files = sorted(p.name for p in (tmp_path / "sources.arrays").iterdir())
    assert len(files) == 1 and files[0].endswith("-prompt.npy")
    cell = path.read_text().splitlines()[1].split(",")[2]
    assert cell == f"sources.arrays/{files[0]}"
    for s in (store, ResultStore(path, list(ARRAY_TYPES), ["task", "seed"], types=ARRAY_TYPES)):
        back = s.rows()[0]["prompt"]
        assert back.dtype == np.float32 and back.shape == (4, 6) and back[0, 0] != 99.0
        np.testing.assert_array_equal(back[1:], prompt[1:])
        assert s.rows()[1]["prompt"] is None and s.done({"task": "a", "seed": 0})
    for bad in ([[1.0, 2.0]], np.array([{}], dtype=object), "x.npy"):
        with pytest.raises(ValueError, match="column 'prompt' is declared np.ndarray"):
            store.add({"task": "c", "seed": 0, "prompt": bad, "accuracy": 0.0})
    assert len(list((tmp_path / "sources.arrays").iterdir())) == 1 and len(store.rows()) == 2
    with pytest.raises(ValueError, match=r"`key` columns \['prompt'\] are declared np.ndarray"):
        ResultStore(tmp_path / "k.csv", list(ARRAY_TYPES), ["task", "prompt"], types=ARRAY_TYPES)
    twins = [np.full((2, 2), v, np.float64) for v in (1.0, 2.0)]          # two rows of one point share its key
    store.add([{"task": "d", "seed": 1, "prompt": a, "accuracy": 0.0} for a in twins])
    for s in (store, ResultStore(path, list(ARRAY_TYPES), ["task", "seed"], types=ARRAY_TYPES)):
        assert [r["prompt"][0, 0] for r in s.rows()[2:]] == [1.0, 2.0]
    signal = np.exp(1j * np.arange(3.0)).astype(np.complex64)             # complex baseband samples
    store.add({"task": "e", "seed": 0, "prompt": signal, "accuracy": 1.0})
    np.testing.assert_array_equal(ResultStore(path, list(ARRAY_TYPES), ["task", "seed"],
                                              types=ARRAY_TYPES).rows()[-1]["prompt"], signal)
    torn = tmp_path / "sources.arrays" / files[0]
    torn.write_bytes(torn.read_bytes()[:20])
    with pytest.raises(OutputFolderError, match="row 1: column 'prompt': the array file .* does not read as one"):
        ResultStore(path, list(ARRAY_TYPES), ["task", "seed"], types=ARRAY_TYPES)
    (tmp_path / "sources.arrays" / files[0]).unlink()
    with pytest.raises(OutputFolderError, match="row 1: column 'prompt' names the array file"):
        ResultStore(path, list(ARRAY_TYPES), ["task", "seed"], types=ARRAY_TYPES)


def test_declared_types_must_cover_the_columns():
    with pytest.raises(ValueError, match=r"missing \['value'\], unknown \['other'\]"):
        ResultStore("unused.csv", FIELDS, KEY, types={"p": float, "seed": int, "other": str})
    with pytest.raises(ValueError, match=r"`types` of \['value'\]: must be one of"):
        ResultStore("unused.csv", FIELDS, KEY, types={"p": float, "seed": int, "value": complex})
    with pytest.raises(TypeError, match="`types` must be a dict"):
        ResultStore("unused.csv", FIELDS, KEY, types=[float, int, str])
