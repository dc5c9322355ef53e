"""`deft6g ensemble --quick`: the CSVs hold every point, the pool keeps its budget, a pool of one is its own
single prompt under every rule, pools of several sizes share the fresh members, and a re-run resumes."""

import csv

from deft6g.benchmarks.cli import main
from deft6g.benchmarks.ensemble import ACC, EnsembleConfig


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
    assert len(rows) == len(cfg.datasets) * len(cfg.seeds) * per_stream * cfg.chunks
    hidden, tokens = 64, cfg.num_tokens                         # random-bert
    for r in rows:
        k, members, classes = int(r["pool_size"]), int(r["members"]), 2 if r["dataset"] == "rotten_tomatoes" else 5
        assert members == min(int(r["step"]), k)
        assert int(r["pool_bytes"]) == members * 4 * (tokens * hidden + hidden * classes + classes)
        assert int(r["examples_seen"]) == int(r["step"]) * cfg.datasets[r["dataset"]][1]
        assert all(0.0 <= float(r[c]) <= 1.0 for c in ACC)
        if members == 1:                                        # one member: every rule is that member
            assert len({r[c] for c in ACC if c != "acc_newest"}) == 1
    fresh = {}
    for r in rows:
        if r["init"] == "fresh":
            fresh.setdefault((r["dataset"], r["seed"], r["step"]), set()).add(r["acc_newest"])
    assert all(len(v) == 1 for v in fresh.values())            # the pools share each chunk's fresh member
    speed = read(out / "speed.csv")
    assert {(int(r["pool_size"]), r["mode"]) for r in speed} == {
        (k, m) for k in cfg.speed_pool_sizes for m in ("one_by_one", "shared", "batched")}
    assert len(read(out / "reference.csv")) == len(cfg.datasets) * len(cfg.seeds)
    for name in ("accuracy_vs_examples_rotten_tomatoes_fresh.png", "accuracy_vs_pool_size_bbc_news.png",
                 "inference_speed.png"):
        assert (out / name).is_file()
    printed = capsys.readouterr().out
    assert "batched pool inference vs one forward per prompt" in printed and "mean minus: best" in printed
    assert main(["ensemble", "--quick", "--out", str(out)]) == 0
    assert "already finished, skipped" in capsys.readouterr().out
    assert len(read(out / "results.csv")) == len(rows)
