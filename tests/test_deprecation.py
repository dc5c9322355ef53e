"""The migration path (deft6g.deprecation): every name, module and configuration key renamed or moved before 0.1.0
still works, returns what replaced it and warns naming the replacement; a file giving an old key beside its new
one is refused naming both."""

import importlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

import deft6g.benchmarks.beamforming as beamforming
import deft6g.benchmarks.cli as cli
import deft6g.benchmarks.link as link
import deft6g.benchmarks.study as study
import deft6g.benchmarks.study_config as study_config
import deft6g.benchmarks.transfer as transfer
import deft6g.finetune as ft
from deft6g.benchmarks.emulator_study import EmulatorStudyConfig, load_emulator_config
from deft6g.benchmarks.peft_methods import FinetuneConfig
from deft6g.benchmarks.scale import ScaleConfig
import deft6g.environment
import deft6g.experiment
from deft6g.experiment import ConfigError, ResultStore, StudyResult
from deft6g.deprecation import REMOVED_IN
from deft6g.finetune import FedAdamServer, FedAvgServer, FederatedDEFT

# deft6g.finetune's modules before they were grouped into subpackages, and where each is now.
MOVED = {**{m: f"peft.{m}" for m in ["activation_store", "architecture", "block_runner", "cost", "data", "fomo",
                                     "peft_model", "peft_saving", "training", "tuners"]},
         **{m: f"federation.{m}" for m in ["aggregation", "distillation", "emulator", "emulator_builder",
                                           "emulator_package", "federated", "server_optimizers"]},
         **{m: f"techniques.{m}" for m in ["aircomp_connection", "multiview", "multiview_model",
                                           "prompt_ensemble", "prompt_pool", "prompt_transfer"]},
         "tuners.lora": "peft.tuners.lora"}


@pytest.mark.parametrize("module", [study, study_config])
@pytest.mark.parametrize("old, new", [("SCHEMES", "STUDY_SCHEMES"), ("PEFT_METHODS", "STUDY_PEFT_METHODS")])
def test_renamed_study_constants(module, old, new):
    with pytest.warns(DeprecationWarning, match=rf"{module.__name__}\.{old} .*{REMOVED_IN}.*\.{new}"):
        value = getattr(module, old)
    assert value is getattr(module, new)
    with pytest.raises(AttributeError, match="NO_SUCH_NAME"):
        module.NO_SUCH_NAME


@pytest.mark.parametrize("module, old, new, where", [
    (study_config, "load_flat_config", deft6g.experiment.load_flat_config, "deft6g.experiment"),
    (cli, "quiet_stack", deft6g.environment.quiet_stack, "deft6g.environment")])
def test_moved_functions_are_read_from_their_new_home(module, old, new, where):
    with pytest.warns(DeprecationWarning, match=rf"{module.__name__}\.{old} .*{REMOVED_IN}.*use {where}\.{old}$"):
        assert getattr(module, old) is new


def test_impairment_sweeps_wrappers_call_the_renamed_functions(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(beamforming, "design_sweeps", lambda *a, **k: calls.append(("design", a, k)) or "design done")
    monkeypatch.setattr(link, "link_sweeps", lambda *a, **k: calls.append(("link", a, k)) or "link done")
    cfg = beamforming.DesignConfig.quick()
    with pytest.warns(DeprecationWarning, match="use run_design"):
        beamforming.impairment_sweeps(cfg, tmp_path, True)
    with pytest.warns(DeprecationWarning, match="use run_link"):
        link.impairment_sweeps(tmp_path, True, 7)
    assert calls == [("design", (tmp_path, cfg.num_rx_ant, cfg.num_devices, cfg.snr_db), dict(quick=True, seed=cfg.seed)),
                     ("link", (tmp_path,), dict(quick=True, seed=7))]
    assert capsys.readouterr().out == "design done\nlink done\n"


def test_design_stage_functions_warn_and_run_their_stage_alone(tmp_path):
    """main_comparison and speed (before DesignStudy) warn and write the stage's table alone (beside the guarded
    folder's config.json): the same rows as the study's own run of that stage (wall times aside); so does
    `sweeps`, the sweeps' stage alone, into the same folder."""
    from dataclasses import replace
    from deft6g.experiment import run
    cfg = replace(beamforming.DesignConfig.quick(), realisations=2, num_seeds=1, speed_realisations=2,
                  sweep_realisations=1, sweep_n=[2], sweep_k=[2], sweep_snr_db=[20], csi_error_var=[0.0],
                  impairments=None)
    with pytest.warns(DeprecationWarning, match="main_comparison"):
        main = beamforming.main_comparison(cfg, tmp_path / "alone")
    with pytest.warns(DeprecationWarning, match="speed"):
        speed = beamforming.speed(cfg, tmp_path / "alone")
    _, rows = run(beamforming.DesignStudy(), tmp_path / "study", replace(cfg), log=lambda m: None)
    untimed = lambda r: {k: v for k, v in r.items() if k != "seconds_per_realisation"}     # noqa: E731
    assert sorted(map(str, map(untimed, main))) == sorted(map(str, map(untimed, rows["main.csv"])))
    assert set(speed) == set(rows["speed.csv"][0]) and speed["realisations"] == 2
    sweeps = beamforming.sweeps(cfg, tmp_path / "alone")                  # the sweeps' stage alone (not deprecated)
    assert sorted(map(str, sweeps)) == sorted(map(str, rows["sweeps.csv"])) and len(sweeps) == 4 * 5
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == [".deft6g.lock", "config.json", "main.csv",
                                                                       "speed.csv", "sweeps.csv"]


def test_design_sweeps_warns_and_runs_the_studys_sweep_stages_alone(tmp_path):
    """design_sweeps (before the sweeps became stages of DesignStudy) warns, writes the sweep tables alone and
    returns the summary text: the rows (to float rounding: the subcarrier allocation's CVXPY problem, built once
    per process, starts the second run warm) and text of the study's own run of those stages."""
    from dataclasses import replace
    from deft6g.benchmarks.impairment_sweeps import design_sweep_stages, design_sweeps
    from deft6g.experiment import run
    cfg = replace(beamforming.DesignConfig.quick(), realisations=2, num_seeds=1, speed_realisations=2,
                  sweep_realisations=1, sweep_n=[2], sweep_k=[2], sweep_snr_db=[20], csi_error_var=[0.0])
    with pytest.warns(DeprecationWarning, match="design_sweeps"):
        text = design_sweeps(tmp_path / "alone", cfg.num_rx_ant, cfg.num_devices, cfg.snr_db, quick=True)
    _, rows = run(beamforming.DesignStudy(), tmp_path / "study", replace(cfg), log=lambda m: None)
    for stage in design_sweep_stages():
        alone = ResultStore(tmp_path / "alone" / stage.file, list(stage.types), stage.key, types=stage.types).rows()
        assert len(alone) == len(rows[stage.file]) > 0, stage.file      # a solver warm-started by the first run:
        assert all(a == pytest.approx(b, rel=1e-9) for a, b in zip(alone, rows[stage.file])), stage.file  # 1e-15
    assert text in (tmp_path / "study" / "summary.txt").read_text()


def test_run_transfer_takes_cfg_as_the_deprecated_name_of_config(monkeypatch, tmp_path):
    """Every run_* takes `config`; run_transfer's old `cfg` warns and reaches the engine as the config, and both at
    once are refused."""
    seen = []

    def engine(study, out, config, **options):
        seen.append(config)
        return StudyResult(config, {"sources.csv": [], "choices.csv": [], "runs.csv": []}, None, {}, out)

    monkeypatch.setattr(transfer, "run", engine)
    marker = transfer.TransferConfig()
    with pytest.warns(DeprecationWarning, match=r"run_transfer\(config=...\)"):
        assert transfer.run_transfer(tmp_path, cfg=marker).config is marker
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transfer.run_transfer(tmp_path, config=marker)
    assert seen == [marker, marker]
    with pytest.raises(TypeError, match="`cfg`"):
        transfer.run_transfer(tmp_path, config=marker, cfg=marker)


class _Tables(dict):
    """{file: "<file>"} for any file: a fake engine's rows and derived results, each told apart by its name."""

    def __missing__(self, name):
        return f"<{name}>"


# What each run_* returned before 0.1.0, written out in its old order; `r`: the fake engine's StudyResult.
OLD_RESULTS = {
    "study.run_study": lambda r: (r.config, "<results.csv>"),
    "link.run_link": lambda r: (r.config, "<aircomp.csv>", "<digital.csv>", "<extra>"),
    "connect.run_connect": lambda r: (r.config, r.rows, 7.5),
    "emulator_study.run_emulator_study": lambda r: (r.config, "<summary>", 7.5, "<tuning.csv>"),
    "ensemble.run_ensemble": lambda r: (r.config, "<results.csv>", "<reference.csv>", "<speed.csv>", "<matched.csv>"),
    "scale.run_scale": lambda r: (r.config, "<scale.csv>", "<models.csv>", "<data_path.csv>", "<batching.csv>"),
    "transfer.run_transfer": lambda r: (r.config, "<sources.csv>", "<choices.csv>", "<runs.csv>"),
    "ray_speedup.run_speedup": lambda r: "<speedup.csv>",
}


@pytest.mark.parametrize("function", [*OLD_RESULTS, "peft_methods.run_finetune", "beamforming.run_design"])
def test_run_functions_return_a_study_result_that_still_unpacks_as_before(monkeypatch, tmp_path, function):
    """Every run_* returns the engine's StudyResult; unpacking or indexing it as before 0.1.0 gives the old tuple
    (run_design: main.json's dict) with a DeprecationWarning."""
    name, _, attribute = function.partition(".")
    module = importlib.import_module(f"deft6g.benchmarks.{name}")
    rows = _Tables({"importance.csv": [{"blocks": [0.5, 0.25]}]})
    monkeypatch.setattr(module, "run", lambda study, out, config=None, quick=False, **options: StudyResult(
        config or study.config(quick), rows, _Tables({"main": {"methods": "<methods>"}}), {"cpu_s": 7.5}, out))
    result = getattr(module, attribute)(tmp_path, quick=True, log=lambda m: None)
    assert isinstance(result, StudyResult) and result.rows is rows and result.folder == tmp_path
    with pytest.warns(DeprecationWarning, match=rf"result of {attribute} as before 0.1.0.*\.rows\[file\]"):
        if attribute == "run_design":
            assert result["methods"] == "<methods>"
        elif attribute == "run_finetune":
            cfg, methods, budgets, importance = result
            assert (cfg, methods, budgets) == (result.config, "<methods.csv>", "<budgets.csv>")
            np.testing.assert_array_equal(importance, [0.5, 0.25])
        else:
            assert list(result) == list(OLD_RESULTS[function](result))


def test_a_study_result_unpacks_as_config_and_rows_silently(tmp_path):
    """`run`'s own result (no legacy) unpacks and indexes as (config, rows) without a warning."""
    rows = [{"ber": 0.1}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = StudyResult("cfg", rows, None, {}, tmp_path)
        assert tuple(result) == ("cfg", rows) and result[1] is rows


@pytest.mark.parametrize("server, name", [(FedAvgServer(), "fedavg"), (FedAdamServer(0.01), "fedadam"),
                                          (object(), None)])
def test_server_optimizer_reads_the_name(server, name):
    fed = object.__new__(FederatedDEFT)           # the property reads only `server`
    fed.server = server
    with pytest.warns(DeprecationWarning, match=r"FederatedDEFT\.server "):
        assert fed.server_optimizer == name


def test_emulator_config_maps_old_keys(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text("distill_lr = 0.003\npublic_texts = 2000\nlora_rank = 4\nseeds = [0, 1]\n")
    with pytest.warns(FutureWarning) as caught:
        cfg = load_emulator_config(path)
    assert (cfg.distill_lrs, cfg.distill_texts, cfg.r, cfg.seeds) == ([0.003], [2000], 4, [0, 1])
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3
    assert "'distill_lr'" in messages[0] and "'distill_lrs' = [0.003]" in messages[0]
    assert "'lora_rank'" in messages[1] and "'r' = 4" in messages[1]
    assert "'public_texts'" in messages[2] and "'distill_texts' = [2000]" in messages[2]


def test_emulator_config_refuses_old_and_new_key_together(tmp_path):
    path = tmp_path / "both.toml"
    path.write_text("distill_lr = 0.003\ndistill_lrs = [0.001]\n")
    with pytest.raises(ConfigError, match="'distill_lr'.*'distill_lrs'"):
        load_emulator_config(path)


@pytest.mark.parametrize("cls, old", [(FinetuneConfig, "rank"), (ScaleConfig, "lora_rank"),
                                      (EmulatorStudyConfig, "lora_rank")])
def test_the_lora_rank_is_r_everywhere(cls, old):
    """The LoRA rank is `r` (HF peft's name) in every configuration; the old field name still builds and reads
    it, warning, and giving both is refused."""
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\({old}=\.\.\.\) .*{REMOVED_IN}.*\(r=\.\.\.\)"):
        cfg = cls(**{old: 4})
    assert cfg.r == 4 and cfg == cls(r=4)
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\.{old} .*{cls.__name__}\.r"):
        assert getattr(cfg, old) == 4
    with pytest.raises(TypeError, match=f"'{old}'.*'r'"):
        cls(**{old: 4, "r": 8})
    with pytest.raises(AttributeError, match="no_such_field"):
        cfg.no_such_field


@pytest.mark.parametrize("old, new", [(f"deft6g.finetune.{o}", f"deft6g.finetune.{n}") for o, n in MOVED.items()])
def test_moved_module_imports_as_itself(old, new, monkeypatch):
    """The first import of an old module path gives the moved module itself (its own name and spec) and warns
    once, naming the new path."""
    parent, _, child = old.rpartition(".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        importlib.import_module(parent)                     # an old parent path warns for itself
    monkeypatch.delitem(sys.modules, old, raising=False)     # as if never imported
    monkeypatch.delitem(vars(sys.modules[parent]), child, raising=False)
    with pytest.warns(DeprecationWarning) as caught:
        module = importlib.import_module(old)
    assert [str(w.message) for w in caught] == [f"{old} is deprecated and will be removed in deft6g {REMOVED_IN}; "
                                                f"use {new}"]
    assert module is importlib.import_module(new)
    assert module.__name__ == module.__spec__.name == new


def test_moved_module_reads_as_an_attribute_and_from_imports(monkeypatch):
    """`deft6g.finetune.fomo` (an attribute read) and `from deft6g.finetune.training import make_grad_fn` give the
    moved module and the very public object, warning once each; an unknown attribute still raises."""
    monkeypatch.delitem(sys.modules, "deft6g.finetune.fomo", raising=False)
    monkeypatch.delitem(vars(ft), "fomo", raising=False)
    with pytest.warns(DeprecationWarning, match=r"^deft6g\.finetune\.fomo .*; use deft6g\.finetune\.peft\.fomo$") \
            as caught:
        read = [ft.fomo, ft.fomo]
    assert read == [ft.peft.fomo] * 2 and len(caught) == 1
    monkeypatch.delitem(sys.modules, "deft6g.finetune.training", raising=False)
    monkeypatch.delitem(vars(ft), "training", raising=False)
    with pytest.warns(DeprecationWarning, match=r"; use deft6g\.finetune\.peft\.training$") as caught:
        from deft6g.finetune.training import make_grad_fn
    assert make_grad_fn is ft.make_grad_fn and len(caught) == 1
    with pytest.raises(AttributeError, match="NO_SUCH_NAME"):
        ft.NO_SUCH_NAME


def test_importing_finetune_does_not_warn():
    """Only the old module paths warn: `import deft6g.finetune` passes with DeprecationWarnings as errors."""
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", "import deft6g.finetune"], check=True)
