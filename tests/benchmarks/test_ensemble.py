"""`deft6g ensemble --quick`: the CSVs hold every point, the pool keeps its budget, a pool of one is its own
single prompt under every rule, pools of several sizes share the fresh members, warm and fresh runs take the
same training steps, every choice is made on validation (scrambled test labels change no choice), the drift
stream drifts and the i.i.d. stream holds the same texts, and a re-run resumes."""

import csv

import numpy as np
import pytest
from scipy import stats

from deft6g.benchmarks.cli import main
from deft6g.benchmarks.ensemble import (ACC, EnsembleConfig, EnsembleStudy, drift_counts, run_stream,
                                        stream_indices)
from deft6g.finetune import load_dataset, train_test_split


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quick_ensemble_study(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["ensemble", "--quick", "--out", str(out)]) == 0
    cfg = EnsembleConfig.quick()
    rows = read(out / "results.csv")
    per_stream = len(cfg.pool_sizes) + 1                       # fresh: every pool size; warm: the default one
    assert len(rows) == len(cfg.datasets) * len(cfg.streams) * len(cfg.seeds) * per_stream * cfg.chunks
    hidden, tokens = 64, cfg.num_tokens                         # random-bert
    for r in rows:
        k, members, classes = int(r["pool_size"]), int(r["members"]), 2 if r["dataset"] == "rotten_tomatoes" else 5
        assert members == min(int(r["step"]), k)
        assert int(r["pool_bytes"]) == members * 4 * (tokens * hidden + hidden * classes + classes)
        assert int(r["examples_seen"]) == int(r["step"]) * cfg.datasets[r["dataset"]][1]
        assert all(0.0 <= float(r[c]) <= 1.0 for c in ACC)
        if members == 1:                                        # one member: every rule and choice is that member
            for t in ("acc", "cur"):
                assert len({r[c] for c in ACC if c.startswith(t) and c != f"{t}_newest"}) == 1
    fresh = {}
    for r in rows:
        if r["init"] == "fresh":
            fresh.setdefault((r["dataset"], r["stream"], r["seed"], r["step"]), set()).add(r["acc_newest"])
    assert all(len(v) == 1 for v in fresh.values())            # the pools share each chunk's fresh member
    choices = read(out / "choices.csv")
    chosen = {}
    for c in choices:
        key = tuple(c[k] for k in ("dataset", "stream", "seed", "init", "pool_size", "step", "target"))
        chosen.setdefault(key + (c["candidate"].split(":")[0],), []).append(int(c["chosen"]))
    assert all(sum(v) == 1 for v in chosen.values())           # one rule and one member chosen per grid
    assert len(chosen) == 2 * 2 * len(rows)                    # (rule, member) x (acc, cur) per row
    speed = read(out / "speed.csv")
    assert {(int(r["pool_size"]), r["mode"]) for r in speed} == {
        (k, m) for k in cfg.speed_pool_sizes for m in ("one_by_one", "shared", "batched")}
    assert len(read(out / "reference.csv")) == len(cfg.datasets) * len(cfg.seeds)
    for name in ("accuracy_vs_examples_rotten_tomatoes_drift_cur.png", "accuracy_vs_pool_size_bbc_news_iid.png",
                 "inference_speed.png"):
        assert (out / name).is_file()
    printed = capsys.readouterr().out
    assert "batched pool inference vs one forward per prompt" in printed
    assert "ensemble minus single chosen on validation (cur, stream mean)" in printed
    assert main(["ensemble", "--quick", "--out", str(out)]) == 0
    assert "already finished, skipped" in capsys.readouterr().out
    assert len(read(out / "results.csv")) == len(rows) and len(read(out / "choices.csv")) == len(choices)

    # warm and fresh runs take the same optimizer steps, counted by the trainer: one pass of ceil(n_train / 32)
    # batches per chunk and epoch; the warm member's lineage holds its parents' steps, the matched control as many
    steps = {}
    for r in rows:
        n_train = cfg.datasets[r["dataset"]][1] - round(cfg.heldout_fraction * cfg.datasets[r["dataset"]][1])
        assert int(r["train_steps"]) == int(r["step"]) * cfg.epochs * -(-n_train // cfg.batch_size)
        steps.setdefault((r["dataset"], r["stream"], r["seed"], r["step"]), set()).add((r["init"], r["train_steps"]))
    assert all({i for i, _ in v} == {"fresh", "warm"} and len({s for _, s in v}) == 1 for v in steps.values())
    matched = read(out / "matched.csv")
    assert len(matched) == len(cfg.datasets) * len(cfg.streams) * len(cfg.seeds)
    for m in matched:
        last = {r["init"]: int(r["member_steps"]) for r in rows if r["dataset"] == m["dataset"] and
                r["stream"] == m["stream"] and r["seed"] == m["seed"] and int(r["step"]) == cfg.chunks}
        assert int(m["steps"]) == last["warm"] > last["fresh"]


def test_choices_never_read_test_labels(tmp_path, monkeypatch):
    """Scrambling the test labels (shifted by one class and permuted, seed 5; validation, stream and texts
    untouched) leaves every choice and its validation score as it was, while the test scores change. The
    reference run is the second in the process: the first one's float32 logits differ at the 1e-7 level (traces
    built on first use), enough to flip near-ties of the random model."""
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    setup = EnsembleStudy().setup(EnsembleConfig.quick())
    point = dict(dataset="bbc_news", stream="drift", seed=1)
    run_stream(setup, point)
    first = run_stream(setup, point)
    d = setup.dataset("bbc_news")
    y = d["y"].copy()
    d["y"][d["test"]] = np.random.default_rng(5).permutation((y[d["test"]] + 1) % d["classes"])
    try:
        second = run_stream(setup, point)
    finally:
        d["y"][:] = y
    assert first.sides["choices.csv"] == second.sides["choices.csv"]
    assert any(a[c] != b[c] for a, b in zip(first.rows, second.rows) for c in ACC)


def test_drift_stream_drifts_and_the_iid_stream_holds_the_same_texts():
    """Rotten Tomatoes at the default sizes (8 chunks of 160, 4 phases, share 0.9): every drift chunk holds
    exactly its phase's class counts (144 of the favoured class), the label mix of consecutive phases differs
    by total variation 0.8, and a chi-square test of homogeneity across phases rejects (p < 1e-100); the i.i.d.
    stream holds the same texts, its phases do not differ (p > 0.001, seed 0), and neither stream touches the
    validation or test split."""
    cfg = EnsembleConfig()
    data = load_dataset("rotten_tomatoes")
    train, test = train_test_split(len(data), 0.2, seed=0)
    counts, mixes = drift_counts(2, cfg.chunks, 160, cfg.drift_phases, cfg.drift_share)
    np.testing.assert_array_equal(counts[:, 0], [144, 144, 16, 16, 144, 144, 16, 16])
    drift = stream_indices(data.y, train, counts, "drift", seed=0)
    iid = stream_indices(data.y, train, counts, "iid", seed=0)
    np.testing.assert_array_equal(np.sort(drift.ravel()), np.sort(iid.ravel()))
    assert len(np.unique(drift)) == drift.size and not np.isin(drift, test).any()
    hist = lambda idx: np.stack([np.bincount(data.y[c], minlength=2) for c in idx])   # noqa: E731
    np.testing.assert_array_equal(hist(drift), counts)
    phase = np.arange(cfg.chunks) * cfg.drift_phases // cfg.chunks
    for h, rejects in ((hist(drift), True), (hist(iid), False)):
        table = np.stack([h[phase == p].sum(0) for p in range(cfg.drift_phases)])
        p = stats.chi2_contingency(table)[1]
        assert (p < 1e-100) if rejects else (p > 1e-3)
    mix = hist(drift)[::2] / 160
    np.testing.assert_allclose(0.5 * np.abs(np.diff(mix, axis=0)).sum(1), 0.8)
    with pytest.raises(ValueError, match="`drift_share`"):
        stream_indices(data.y, train[:500], counts, "drift", seed=0)
    with pytest.raises(ValueError, match="`drift_phases`"):
        EnsembleConfig(drift_phases=9)
    with pytest.raises(ValueError, match="`streams`"):
        EnsembleConfig(streams=["shuffled"])
