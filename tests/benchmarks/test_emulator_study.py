"""`deft6g emulator`: the server's vocabulary and distillation choice use no device data, the TOST verdict, the
configuration file; the study's emulator mode sends the same compressed, aligned emulator."""

import math

import numpy as np
import pytest

from deft6g.benchmarks.emulator_study import (EmulatorStudyConfig, _middles, _Setup, load_emulator_config,
                                              summary_rows)
from deft6g.experiment import ConfigError
from deft6g.experiment import tost

TINY = dict(model="random-bert", distill_texts=[12, 24], distill_lrs=[1e-4, 3e-3], validation_texts=6,
            train_examples=64, test_examples=16, distill_steps=3, seeds=[0, 1], variants=["full", "drop+vocab"])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))


def test_vocabulary_and_distillation_choice_do_not_depend_on_device_data(cache, monkeypatch):
    """Two setups whose devices hold different texts (64 vs 32 training texts) and, for the second, scrambled
    labels (train and test, seed 0 permutation): the same vocabulary, equal to the public corpus's tokens
    (`public_vocabulary` of BBC news, independent of any device), the same "+ vocabulary" package, and the same
    distillation grid with the same validation MSEs and choice (the lowest validation MSE). Under the previous
    code the vocabulary was the union of the devices' tokens and changed with them."""
    import deft6g.finetune as F
    from deft6g.finetune.peft import data as recipe_module
    from deft6g.finetune import public_vocabulary
    from deft6g.finetune.federation.emulator_builder import package_digest
    a = _Setup(EmulatorStudyConfig(**TINY))
    real = F.load_dataset

    def scrambled(name):
        d = real(name)
        return d if name != "rotten_tomatoes" else type(d)(**{**vars(d), "y": np.random.default_rng(0).permutation(d.y)})

    monkeypatch.setattr(recipe_module, "load_dataset", scrambled)      # the name the data recipe calls
    b = _Setup(EmulatorStudyConfig(**{**TINY, "train_examples": 32}))
    assert not np.array_equal(a.y_test, b.y_test) or not np.array_equal(a.y_train[:32], b.y_train)
    np.testing.assert_array_equal(a.builder.vocab_ids, b.builder.vocab_ids)
    np.testing.assert_array_equal(a.builder.vocab_ids, public_vocabulary(a.tok, real("bbc_news").x))
    device_ids = a.x_train["input_ids"][a.x_train["attention_mask"].astype(bool)]
    assert not np.isin(device_ids, a.builder.vocab_ids).all()        # not the devices' union: some become [UNK]
    assert package_digest(a.builder.package("drop+vocab", False, 0)[0]) == \
        package_digest(b.builder.package("drop+vocab", False, 0)[0])
    rows_a, rows_b = ([r for m in _middles(s.cfg) for r in s.builder.tune(m == "low rank")[1]] for s in (a, b))
    assert len(rows_a) == 4 and rows_a == rows_b
    chosen = [r for r in rows_a if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val_mse_after"] == min(r["val_mse_after"] for r in rows_a)
    assert len({r["val_mse_before"] for r in rows_a}) == 1            # one validation set for every grid point


def _rows(diffs, full=0.70):
    """results.csv rows (typed): the full model at `full` per seed, the emulator at full + diff."""
    emu = [{"variant": v, "distill": False, "step_cpu_s": 1.0} for v in ("full", "drop")]
    rows = [{"variant": "full", "distill": False, "seed": s, "plug_accuracy": full, "emulator_accuracy": full,
             "mse_before": math.nan, "mse_after": math.nan} for s in range(len(diffs))]
    rows += [{"variant": "drop", "distill": False, "seed": s, "plug_accuracy": full + d, "emulator_accuracy": full + d,
              "mse_before": math.nan, "mse_after": math.nan} for s, d in enumerate(diffs)]
    return emu, rows


def test_summary_reports_the_paired_tost_verdict():
    """10 seeds whose plug-in accuracy differs from the full model's by -0.3 +- 0.3 points (seeded normal draws):
    the summary's TOST row equals deft6g.experiment.tost of the pairs (margin 0.01) and says "equivalent"; 3
    seeds at -0.5, -2.0, +0.9 points (mean within 1 point) say "not shown"; the full model has no verdict."""
    diffs = -0.003 + 0.003 * np.random.default_rng(0).standard_normal(10)
    full, drop = summary_rows(*_rows(diffs), margin=0.01)
    want = tost(0.70 + diffs, np.full(10, 0.70), 0.01)
    assert full["tost_verdict"] == "" and np.isnan(full["tost_p"])
    assert drop["tost_verdict"] == want["verdict"] == "equivalent"
    assert (drop["tost_low"], drop["tost_high"], drop["tost_p"]) == pytest.approx((want["low"], want["high"], want["p"]))
    _, drop = summary_rows(*_rows([-0.005, -0.020, 0.009]), margin=0.01)
    assert drop["tost_verdict"] == "not shown" and abs(drop["vs_full_mean"]) < 0.01


def test_config_file_keys_are_checked(tmp_path):
    """A TOML file replaces top-level keys (configs/emulator_paper.toml: 10 seeds and the
    full distillation grid, of which the default scores a part; the rest default); an unknown
    key, a value of another type and an impossible value raise ConfigError naming the key."""
    from pathlib import Path
    paper = load_emulator_config(Path(__file__).parents[2] / "configs" / "emulator_paper.toml")
    assert paper.seeds == list(range(10))
    assert (paper.distill_lrs, paper.distill_texts) == ([1e-4, 1e-3, 3e-3], [2000, 4000])
    assert set(EmulatorStudyConfig().distill_lrs) < set(paper.distill_lrs)
    for text, key in (("seedz = [0, 1]", "seedz"), ('seeds = "0"', "seeds"), ("distill_lrs = [-1.0]", "distill_lrs"),
                      ("seeds = [0]", "seeds"), ("equivalence_margin = 2.0", "equivalence_margin")):
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"configuration key '{key}'"):
            load_emulator_config(path)


def test_study_emulator_mode_sends_the_compressed_aligned_emulator(cache, monkeypatch):
    """`deft6g study` in emulator mode (random-bert, a 2-point distillation grid of 3 steps): its device model is
    the EmulatorBuilder's distilled "drop+vocab+int8" package (seed 0): model.json's download equals that
    package's bits, the device's vocabulary is the public one, and the tuning grid is recorded."""
    import deft6g.finetune as F
    from deft6g.benchmarks import study
    from deft6g.benchmarks.study import FederatedStudy
    from deft6g.benchmarks.study_config import build_config
    from deft6g.finetune.federation.emulator_package import download_bits
    from deft6g.finetune.peft.fomo import model_key
    small = dict(distill_texts=[12], distill_lrs=[1e-4, 1e-3], validation_texts=6, distill_steps=3)
    monkeypatch.setattr(study, "EmulatorRecipe", lambda *a: F.EmulatorRecipe(*a, **small))
    cfg = build_config({"model": {"name": "random-bert"}, "schemes": ["ideal"], "seeds": [0, 1],
                        "data": {"train_examples": 64, "test_examples": 16},
                        "federated": {"mode": "emulator", "devices": 2, "rounds": 1, "local_steps": 1}})
    setup = FederatedStudy(lambda *_: None).setup(cfg)
    model, tok = F.load_study_model("random-bert")
    builder = F.EmulatorBuilder(model, tok, F.EmulatorRecipe(1, 1, 0.5), cfg.model.max_length,
                                model_key("random-bert"))
    package, _ = builder.package(F.COMPRESSED, True, 0)
    info = setup.emulator
    assert info["variant"] == F.COMPRESSED and info["download_bits"] == download_bits(package)
    assert info["download_bits_full"] > 4 * info["download_bits"]
    assert setup.device.base.config.vocab_size == info["vocab_size"] == builder.vocab_ids.size
    assert len(info["tuning"]) == 2 and sum(r["chosen"] for r in info["tuning"]) == 1


def test_log_dir_writes_each_training_round_and_changes_no_result(cache, tmp_path):
    """One training point (the full model, seed 0; 2 devices, 2 rounds of one step of 8 texts, ideal
    aggregation) run without and with a TensorBoard folder: the same results.csv row (timings aside), and the
    point's run holds steps 0 and 1 once each, with both devices heard and 2 x 8 training examples per round."""
    from deft6g.benchmarks.emulator_study import RESULT_KEY, EmulatorStudy
    from deft6g.experiment import read_scalars, run_name
    cfg = EmulatorStudyConfig(**{**TINY, "devices": 2, "rounds": 2, "local_steps": 1, "batch_size": 8})
    setup = _Setup(cfg)
    point = {"variant": "full", "distill": False, "seed": 0}
    plain = EmulatorStudy().train(setup, point)
    logged = EmulatorStudy(tmp_path / "events").train(setup, point)
    timing = {"train_s", "distill_s"}
    np.testing.assert_equal({k: v for k, v in logged.items() if k not in timing},      # NaN equals NaN here
                            {k: v for k, v in plain.items() if k not in timing})
    scalars = read_scalars(tmp_path / "events" / run_name(point, RESULT_KEY))
    assert scalars["devices"] == [(0, 2.0), (1, 2.0)] and scalars["examples"] == [(0, 16.0), (1, 16.0)]
    assert [step for step, _ in scalars["loss"]] == [0, 1] and all(0 < v < 10 for _, v in scalars["loss"])
