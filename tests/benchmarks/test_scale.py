"""`deft6g scale`: ratios to the first run and the data-path summary by hand, one in-process run of each data
path on the random smoke-test model (same batches, float16 vs float32 activations) with its per-round
TensorBoard scalars, a model entry (its own length, block and texts; the cache size against the real token
count), the summary and the plot."""

import pytest

from deft6g.benchmarks.scale import (ScaleConfig, batching_headroom, data_path_summary, measure, model_config,
                                     plot_scale, prepare_model_cache, summary, with_ratios)
from deft6g.experiment import read_scalars
from deft6g.finetune import data_split, load_dataset, load_study_model, tokenize


def test_ratios_and_summary_by_hand():
    rows = with_ratios([{"num_devices": 8, "per_round": 8, "round_s": 2.0, "ms_per_example": 2.0,
                         "peak_rss_mb": 1000.0},
                        {"num_devices": 512, "per_round": 8, "round_s": 2.2, "ms_per_example": 3.0,
                         "peak_rss_mb": 1100.0}])
    assert rows[0]["round_s_ratio"] == 1.0 and rows[1]["round_s_ratio"] == pytest.approx(1.1)
    assert rows[1]["peak_rss_mb_ratio"] == pytest.approx(1.1) and rows[1]["ms_per_example_ratio"] == 1.5
    data = [{"data": "padded-float32", "seed": s, "peak_rss_mb": m, "accuracy": a}
            for s, m, a in [(0, 3000.0, 0.80), (1, 3200.0, 0.81), (2, 3100.0, 0.79)]]
    data += [{"data": "ragged-float16", "seed": s, "peak_rss_mb": m, "accuracy": a}
             for s, m, a in [(0, 1000.0, 0.801), (1, 1100.0, 0.809), (2, 900.0, 0.792)]]
    s = data_path_summary(data)
    assert s["rss_ratio"] == pytest.approx(3100 / 1000)
    diffs = [0.001, -0.001, 0.002]
    assert s["accuracy_diff"][0] == pytest.approx(sum(diffs) / 3)
    assert s["tost"] == "equivalent"                    # differences of +-0.2 points, margin 1 point


def test_measure_both_data_paths_on_the_smoke_model(tmp_path, monkeypatch):
    """random-bert, 64 training texts on 4 devices, 2 per round: both data paths run and report finite times and
    memory; the test accuracy of float16 and float32 activations differs by at most one text of 32 (the same
    batches; the inputs differ by float16 rounding only)."""
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path))
    cfg = ScaleConfig(model="random-bert", train_examples=64, test_examples=32, rounds=2, local_steps=1,
                      batch_size=8, seeds=[0])
    got = {d: measure(cfg, 4, 2, data=d, evaluate_test=True, log_dir=tmp_path / "events")
           for d in ("ragged-float16", "padded-float32")}
    for res in got.values():
        assert res["round_s"] > 0 and res["peak_rss_mb"] > 0 and 0 <= res["accuracy"] <= 1
        assert 2 <= res["examples"] <= 2 * 8            # 2 sampled devices, one step of at most 8 texts each
        assert res["ms_per_example"] == pytest.approx(1e3 * res["round_s"] / res["examples"], rel=0.5)
    assert abs(got["ragged-float16"]["accuracy"] - got["padded-float32"]["accuracy"]) <= 1 / 32 + 1e-9
    for d, res in got.items():            # --log-dir: the per-round scalars whose medians the run reports
        logged = read_scalars(tmp_path / "events" / f"num_devices=4,per_round=2,data={d},seed=0,test=True")
        assert sorted(logged) == ["devices", "examples", "loss", "round_s"]
        assert all([step for step, _ in v] == [0, 1] for v in logged.values())
        assert res["round_s"] == pytest.approx(logged["round_s"][1][1], rel=1e-6)        # median of round 1 alone
        assert res["examples"] == logged["examples"][1][1] and 1 <= logged["devices"][0][1] <= 2
    rows = with_ratios([{"num_devices": 4, "per_round": 2, **got["ragged-float16"]},
                        {"num_devices": 8, "per_round": 2, **got["padded-float32"]}])
    plot_scale(tmp_path / "scale.png", cfg, rows)
    assert (tmp_path / "scale.png").stat().st_size > 10_000

    # a model entry: its own sequence length, block and number of texts; its float16 cache holds exactly the real
    # (unpadded) tokens of its training texts, 64 halves each
    mcfg = model_config(cfg, ["random-bert", "bbc_news", 24, 2, 48])
    assert (mcfg.dataset, mcfg.max_length, mcfg.block, mcfg.train_examples) == ("bbc_news", 24, 2, 48)
    prepare_model_cache(mcfg)
    res = measure(mcfg, 4, 2)
    data = load_dataset("bbc_news")
    fit = data_split(data.y, 48, cfg.test_examples).fit
    tokens = int(tokenize(load_study_model("random-bert")[1], data.subset(fit).x, 24)["attention_mask"].sum())
    assert 48 < tokens <= 48 * 24 and res["cache_mb"] == pytest.approx(tokens * 64 * 2 / 2 ** 20)
    assert res["tokens_mean"] == pytest.approx(tokens / len(fit)) == 24      # BBC paragraphs fill every position
    assert 0.1 < res["params_m"] < 5
    models = with_ratios([{"model": "random-bert", "dataset": "bbc_news", "max_length": 24, "block": 2, "train_examples": 48,
                           "num_devices": 4, "per_round": 2, **res}], ref=rows[0])
    assert models[0]["peak_rss_mb_ratio"] == pytest.approx(res["peak_rss_mb"] / rows[0]["peak_rss_mb"])
    # batching headroom: 4 devices' steps of 8 of the 64 texts one after another and as one batch of 32 texts
    head = batching_headroom(cfg, 4, repeats=2)
    assert head["sequential_s"] > 0 and head["batched_s"] > 0
    assert head["headroom"] == pytest.approx(head["sequential_s"] / head["batched_s"])
    assert 32 <= head["tokens"] <= 32 * cfg.max_length
    with pytest.raises(ValueError, match="`batching` 9 x batch_size 8"):
        batching_headroom(cfg, 9)                                       # 72 texts of 64
    text = summary(cfg, rows, models, [{"data": d, "seed": 0, **got[d]} for d in got],
                   [{"per_round": 4, "batch_size": 8, **head}])
    assert f"random-bert ({res['params_m']:.0f} M parameters) on bbc_news (48 training texts of" in text
    assert f"4 devices' local steps of 8 texts: {head['sequential_s']:.3f} s one after another" in text
    plot_scale(tmp_path / "scale_models.png", cfg, rows, models)
    assert (tmp_path / "scale_models.png").stat().st_size > (tmp_path / "scale.png").stat().st_size


def test_the_scale_study_starts_afresh_with_ratios_to_its_reference_run(tmp_path, monkeypatch):
    """`run_scale --quick` with every measured run stubbed (round_s = K / 8 + participants / 100, peak RSS
    900 + K MB; the model entry's at 0.5 s and 700 MB): scale.csv holds the grid in order, the reference pair's
    ratios 1.0 and every other ratio its figure over the reference's; models.csv's ratios divide the same
    reference; data_path.csv a row per data path and seed; a second run into the folder measures everything again
    (fresh) to the same rows, once each; a run that fails is not tried again, and the others still run."""
    import json
    from deft6g.benchmarks import scale
    from deft6g.experiment import PointsFailed
    calls, fail = [], set()

    def stub(fn, cfg, **kw):
        calls.append((fn.__name__, cfg.model, kw.get("num_devices"), kw.get("per_round")))
        if (kw.get("num_devices"), kw.get("per_round")) in fail:
            raise RuntimeError("the run's subprocess failed")
        if fn is scale.batching_headroom:
            return {"sequential_s": 2.0, "batched_s": 1.0, "headroom": 2.0, "tokens": 100}
        k, m, own = kw["num_devices"], kw["per_round"], cfg.model == scale.ScaleConfig().model
        round_s = k / 8 + m / 100 if own else 0.5
        return {"round_s": round_s, "examples": 32 * m, "ms_per_example": 1e3 * round_s / (32 * m), "setup_s": 1.0,
                "accuracy": 0.75, "peak_rss_mb": 900.0 + k if own else 700.0, "cache_mb": 18.0, "tokens_mean": 27.0,
                "params_m": 22.7}

    monkeypatch.setattr(scale, "isolated", stub)
    monkeypatch.setattr(scale, "prepare_caches", lambda cfg: None)
    monkeypatch.setattr(scale, "prepare_model_cache", lambda cfg: None)
    result = scale.run_scale(tmp_path / "out", quick=True, log=lambda m: None)
    cfg, rows, models = result.config, result.rows["scale.csv"], result.rows["models.csv"]
    data, batching = result.rows["data_path.csv"], result.rows["batching.csv"]
    assert [[r["num_devices"], r["per_round"]] for r in rows] == cfg.grid
    ref = rows[0]
    assert (ref["round_s_ratio"], ref["peak_rss_mb_ratio"]) == (1.0, 1.0)
    for r in rows[1:] + models:
        assert r["round_s_ratio"] == r["round_s"] / ref["round_s"]
        assert r["peak_rss_mb_ratio"] == r["peak_rss_mb"] / ref["peak_rss_mb"]
        assert r["ms_per_example_ratio"] == r["ms_per_example"] / ref["ms_per_example"]
    assert [m["model"] for m in models] == [m[0] for m in cfg.models] and models[0]["round_s_ratio"] == 0.5 / 1.04
    assert [(d["data"], d["seed"]) for d in data] == [("padded-float32", 0), ("ragged-float16", 0)]
    assert batching[0]["headroom"] == 2.0
    header = (tmp_path / "out" / "scale.csv").read_text().splitlines()[0].split(",")
    assert header == list(scale.SCALE_TYPES)
    first = len(calls)
    again = scale.run_scale(tmp_path / "out", quick=True, log=lambda m: None)
    assert len(calls) == 2 * first and again.rows["scale.csv"] == rows and again.rows["models.csv"] == models
    assert json.loads((tmp_path / "out" / "timing.json").read_text())["points_run"] == first
    fail.add(tuple(cfg.grid[1]))
    with pytest.raises(PointsFailed):
        scale.run_scale(tmp_path / "failed", quick=True, log=lambda m: None)
    assert sum(c[2:] == tuple(cfg.grid[1]) for c in calls[2 * first:]) == 1      # not tried again
    assert (tmp_path / "failed" / "scale.csv").read_text().count("\n") == 3     # header, reference, third pair
