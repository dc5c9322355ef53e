"""The `deft6g` command line: quick runs write their files, and re-runs resume instead of recomputing."""

import csv
import json

import pytest

from deft6g.benchmarks.cli import build_parser, main
from deft6g.experiment import ResultStore


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("study", "finetune", "link", "design"))


def test_link_quick_writes_results_and_resumes(tmp_path, capsys):
    main(["link", "--quick", "--out", str(tmp_path)])
    for name in ("aircomp.csv", "digital.csv", "obda.csv", "matched.csv", "speed.json", "config.json",
                 "nmse_vs_snr_rayleigh.png", "matched_nmse_rayleigh.png"):
        assert (tmp_path / name).exists(), name
    rows = list(csv.DictReader((tmp_path / "aircomp.csv").open()))
    assert len(rows) == 2 * 2 * 2 * 2 * 3                     # models x (N, K) x receivers x (pilots, genie) x SNRs
    assert len(list(csv.DictReader((tmp_path / "matched.csv").open()))) == 2 * 2 * 3     # rayleigh x receivers x SNRs
    by_snr = {float(r["snr_db"]): float(r["mse_median"]) for r in rows if r["model"] == "rayleigh"
              and r["receiver"] == "mrc" and r["num_rx_ant"] == "8" and r["csi"] == "genie"}
    # aligned designs with perfect CSI: MSE = sigma^2 ||a||^2 scales exactly with the noise variance
    assert by_snr[0.0] / by_snr[20.0] == pytest.approx(100.0, rel=1e-4)
    assert json.loads((tmp_path / "speed.json").read_text())["ratio"] > 0
    choice = list(csv.DictReader((tmp_path / "obda_choice.csv").open()))     # 2 settings x 3 SNRs, 6 thresholds
    assert len(choice) == 6 * 6 and sum(r["chosen"] == "True" for r in choice) == 6
    trunc = list(csv.DictReader((tmp_path / "truncation.csv").open()))       # the physics sweeps are stages
    assert len(trunc) == 4 * 3 and (tmp_path / "mse_vs_pilot_snr.png").exists()  # thresholds x seeds
    before = {name: (tmp_path / name).read_text() for name in ("aircomp.csv", "speed.json", "obda_choice.csv",
                                                               "truncation.csv", "pilot_csi.csv")}
    main(["link", "--quick", "--out", str(tmp_path)])
    assert {name: (tmp_path / name).read_text() for name in before} == before   # nothing recomputed or re-timed
    assert json.loads((tmp_path / "timing.json").read_text())["points_run"] == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "Truncated channel inversion" in printed
    summary, tail = printed.rsplit("this run: ", 1)                  # summary.txt, then the run's time
    assert summary.endswith((tmp_path / "summary.txt").read_text()) and tail.startswith("0 points run in ")


def test_design_quick(tmp_path, capsys):
    main(["design", "--quick", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "main.json").read_text())
    assert summary["methods"]["sdr"]["mean_gap_to_bound_db"] >= -1e-6
    assert summary["speed"]["max_value_mismatch"] < 1e-3      # DPP re-solve and rebuild agree
    assert (tmp_path / "mse_vs_snr.png").exists() and (tmp_path / "subcarrier_gain_vs_delay_spread.png").exists()
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "Designs on pilot CSI" in printed                # the impairment sweeps too
    assert (tmp_path / "summary.txt").read_text() in printed


def test_design_study_runs_its_stages_resumes_an_interrupted_run_and_derives_main_json(tmp_path):
    """DesignStudy on a tiny grid: main.csv, speed.csv, sweeps.csv in that order; cut main.csv after 3 rows and
    sweeps.csv after 5 (an interruption), a re-run runs only the missing points and gives the same rows (wall
    times aside); main.json's per-method median is the mean over seeds of main.csv's medians (computed here)."""
    from dataclasses import replace
    import numpy as np
    from deft6g.benchmarks.beamforming import METHODS, DesignConfig, DesignStudy
    from deft6g.benchmarks.impairment_sweeps import design_sweep_stages
    from deft6g.experiment import run
    cfg = replace(DesignConfig.quick(), realisations=4, num_seeds=2, speed_realisations=2, sweep_realisations=2,
                  sweep_n=[2], sweep_k=[2], sweep_snr_db=[20], csi_error_var=[0.0], impairments=None)
    lines = []
    _, rows = run(DesignStudy(), tmp_path, replace(cfg), log=lines.append)
    order = [line.split(": ")[1] for line in lines if line.startswith("[")]
    assert order == sorted(order, key=["main.csv", "speed.csv", "sweeps.csv"].index) and len(set(order)) == 3
    assert list(rows)[:3] == ["main.csv", "speed.csv", "sweeps.csv"]
    assert list(rows)[3:] == [stage.file for stage in design_sweep_stages()]             # no impairment sweeps
    assert all(rows[f] == [] and not (tmp_path / f).exists() for f in list(rows)[3:])
    assert len(rows["main.csv"]) == 2 * len(METHODS) and len(rows["speed.csv"]) == 1 and len(rows["sweeps.csv"]) == 40
    main = json.loads((tmp_path / "main.json").read_text())
    for m in METHODS:
        medians = [r["median_db"] for r in rows["main.csv"] if r["method"] == m]
        assert main["methods"][m]["median_db"][0] == pytest.approx(np.mean(medians), rel=1e-12)
    for name, keep in (("main.csv", 3), ("sweeps.csv", 5)):
        path = tmp_path / name
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:keep + 1]))
    _, again = run(DesignStudy(), tmp_path, replace(cfg), log=lambda m: None)
    assert json.loads((tmp_path / "timing.json").read_text())["points_run"] == (2 * len(METHODS) - 3) + (40 - 5)
    timed = {"seconds_per_realisation"}
    key = {"main.csv": ("seed", "method"), "sweeps.csv": ("sweep", "num_rx_ant", "num_devices", "snr_db",
                                                          "csi_error_var", "seed", "method")}
    for name, columns in key.items():
        by = lambda table: {tuple(r[c] for c in columns): {k: v for k, v in r.items() if k not in timed}  # noqa: E731
                            for r in table}
        assert by(again[name]) == by(rows[name])


def test_parallel_refuses_fewer_than_two_workers_before_any_work(tmp_path, capsys):
    assert main(["parallel", "--workers", "1", "--out", str(tmp_path / "one")]) == 2
    assert "configuration key 'workers' (--workers) must be an int >= 2" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()


def test_store_keeps_rows_and_rejects_foreign_file(tmp_path):
    path = tmp_path / "r.csv"
    store = ResultStore(path, ["a", "b", "v"], ["a", "b"])
    store.add(dict(a=1, b="x", v=0.5))
    again = ResultStore(path, ["a", "b", "v"], ["a", "b"])
    assert again.done(dict(a=1, b="x")) and not again.done(dict(a=2, b="x"))
    with pytest.raises(ValueError, match="has columns"):
        ResultStore(path, ["a", "v"], ["a"])


def test_parser_rejects_unknown_command():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nope"])


def test_finetune_quick_measures_methods_and_allocations(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    assert main(["finetune", "--quick", "--out", str(tmp_path)]) == 0
    methods = {r["method"]: r for r in csv.DictReader((tmp_path / "methods.csv").open())}
    assert set(methods) == {"linear_probe", "lora_top", "lora_top_nocache"}
    # trainable parameters: head 2 * (64 + 1); LoRA r=8 on query/value of the top block, hidden 64
    assert int(methods["linear_probe"]["trainable_params"]) == 130
    assert int(methods["lora_top"]["trainable_params"]) == 130 + 2 * 8 * (64 + 64)
    assert methods["lora_top"]["trainable_params"] == methods["lora_top_nocache"]["trainable_params"]
    assert all(float(r["samples_per_s"]) > 0 and float(r["peak_rss_mib"]) > 100 for r in methods.values())
    budgets = list(csv.DictReader((tmp_path / "budgets.csv").open()))
    assert {r["allocation"] for r in budgets} == {"allocated", "uniform"}
    for r in budgets:
        assert int(r["payload_bits"]) <= int(r["bits_budget"])
        assert r["status"] == "uniform" if r["allocation"] == "uniform" else r["status"].startswith("optimal")
    assert (tmp_path / "accuracy_vs_budget.png").is_file()
    assert "caching speed-up" in capsys.readouterr().out
    importance = json.loads((tmp_path / "importance.json").read_text())        # importance.csv's row, repeated
    assert importance == json.loads(next(csv.DictReader((tmp_path / "importance.csv").open()))["blocks"])
    assert len(importance) == len(json.loads(budgets[0]["sizes"])) and min(importance) > 0
    assert main(["finetune", "--quick", "--out", str(tmp_path)]) == 0          # resumed: nothing runs again
    assert json.loads((tmp_path / "timing.json").read_text())["points_run"] == 0


def test_link_refuses_a_folder_written_with_another_seed(tmp_path, capsys):
    """A folder holding seed-0 results is refused for --seed 1 (nothing is computed or overwritten)."""
    from dataclasses import asdict
    from deft6g.benchmarks.link import LinkConfig
    from deft6g.experiment import prepare_output
    prepare_output(tmp_path, "link", asdict(LinkConfig.quick()))
    before = (tmp_path / "config.json").read_text()
    assert main(["link", "--quick", "--seed", "1", "--out", str(tmp_path)]) == 2
    assert "seed: 0 there, 1 now" in capsys.readouterr().err
    assert (tmp_path / "config.json").read_text() == before and not (tmp_path / "aircomp.csv").exists()
