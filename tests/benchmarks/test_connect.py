"""`deft6g connect --quick`: writes its CSVs and plots into the output folder, prints the summary, resumes; both
training protocols are run and labelled; its choices are made on validation, never on test labels."""

import csv
from dataclasses import replace

import numpy as np
import pytest

from deft6g.benchmarks import connect
from deft6g.benchmarks.cli import main
from deft6g.benchmarks.connect import AIR_SCHEMES, TRAININGS, ConnectConfig, points, run_connect


def _csv(path):
    return list(csv.DictReader(path.open()))


def test_connect_quick_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["connect", "--quick", "--out", str(out)]) == 0
    rows = _csv(out / "results.csv")
    cfg = ConnectConfig.quick()
    assert len(rows) == len(points(cfg)) == 4 + 2 * len(cfg.snr_db) * 3
    for name in ("config.json", "choices.csv", "accuracy_vs_snr_bbc_news-M2_ideal.png",
                 "accuracy_vs_snr_bbc_news-M2_noise-aware.png", "accuracy_vs_channel_uses_bbc_news-M2.png"):
        assert (out / name).exists(), name
    # every radio arm at every SNR, once trained on the ideal sum and once noise-aware, labelled as such
    radio = {(r["scheme"], r["training"], float(r["snr_db"])) for r in rows if r["num_rx_ant"] != "0"}
    assert radio == {(s, t, snr) for s in (*AIR_SCHEMES, "digital-q4") for t in TRAININGS for snr in cfg.snr_db}
    assert {r["training"] for r in rows if r["num_rx_ant"] == "0"} == {"ideal"}
    air = [r for r in rows if r["scheme"] == "aircomp"]
    assert air and all(float(r["payload_uses"]) == 2.0 for r in air)        # ceil(D / 2), D = 4
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    grid = _csv(out / "choices.csv")
    singles = [c for c in grid if c["choice"] == "best single view"]
    assert [c["candidate"] for c in singles] == ["single-0", "single-1"] and sum(c["chosen"] == "True"
                                                                                for c in singles) == 1
    assert {(c["training"], float(c["snr_db"])) for c in grid if c["candidate"] == "digital-q4"} == \
        {(t, snr) for t in TRAININGS for snr in cfg.snr_db}
    text = capsys.readouterr().out
    assert "trained noise-aware at its own SNR" in text and "best single view on validation" in text
    assert "random-bert" in text
    before = (out / "results.csv").read_text()
    assert main(["connect", "--quick", "--out", str(out)]) == 0
    assert (out / "results.csv").read_text() == before                         # resumed: nothing recomputed


def test_choices_never_read_test_labels(tmp_path, monkeypatch, capsys):
    """The same (smaller) quick study run twice, the second time with the test labels permuted: every test
    accuracy may change, but choices.csv (best single view, digital quantiser) and every row's validation
    accuracy stay the same -- no selection reads a test label. Fails if best_single ranks by test accuracy."""
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    small = replace(ConnectConfig.quick(), snr_db=[0.0], epochs=1)
    monkeypatch.setattr(ConnectConfig, "quick", classmethod(lambda cls: small))
    said = []
    run_connect(tmp_path / "plain", quick=True, log=said.append)
    assert any("features" in line for line in said) and capsys.readouterr().out == ""      # the caller's log
    quiet = lambda *_: None                                                                  # noqa: E731
    load = connect.load_multiview

    def scrambled(*args, **kwargs):
        d = load(*args, **kwargs)
        d.y_test = np.random.default_rng(7).permutation(d.y_test)
        return d

    monkeypatch.setattr(connect, "load_multiview", scrambled)                # the name the study calls
    run_connect(tmp_path / "scrambled", quick=True, log=quiet)
    assert (tmp_path / "plain" / "choices.csv").read_text() == (tmp_path / "scrambled" / "choices.csv").read_text()
    plain, mixed = (_csv(tmp_path / d / "results.csv") for d in ("plain", "scrambled"))
    assert [r["val_accuracy"] for r in plain] == [r["val_accuracy"] for r in mixed]
    assert [r["accuracy"] for r in plain] != [r["accuracy"] for r in mixed]          # the scrambling bites


def test_best_single_view_is_chosen_on_validation():
    """Rows where the view best on validation (single-1) is the worse on test: single-1 is chosen."""
    rows = [dict(task="t", scheme=f"single-{m}", training="ideal", seed=s, accuracy=acc, val_accuracy=val)
            for m, acc, val in ((0, 0.9, 0.5), (1, 0.6, 0.7)) for s in (0, 1)]
    assert connect.best_single(rows, "t") == "single-1"


def test_bad_validation_fraction_names_the_key():
    for bad in (0.0, 1.0, "0.1", True):
        with pytest.raises(ValueError, match="`validation_fraction` must be a number in \\(0, 1\\)"):
            ConnectConfig(validation_fraction=bad)


def test_trainings_select_the_views_and_bad_values_name_the_key():
    """The default runs every radio arm noise-aware only (the fair view); a view not asked for has no rows."""
    cfg = ConnectConfig()
    assert {p["training"] for p in points(cfg) if p["num_rx_ant"]} == {"noise-aware"}
    both = replace(cfg, trainings=["ideal", "noise-aware"])
    radio = [p for p in points(both) if p["num_rx_ant"]]
    assert len(radio) == 2 * len([p for p in points(cfg) if p["num_rx_ant"]])
    for bad in ([], ["noisy"], ["ideal", "ideal"], "ideal"):
        with pytest.raises(ValueError, match="`trainings` must be a non-empty list"):
            ConnectConfig(trainings=bad)


def test_config_file_replaces_keys_and_refuses_bad_ones(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('trainings = ["ideal"]\nsnr_db = [0.0]\n')
    from deft6g.experiment import load_flat_config
    cfg = load_flat_config(ConnectConfig(), path)
    assert (cfg.trainings, cfg.snr_db, cfg.seeds) == (["ideal"], [0.0], ConnectConfig().seeds)
    for text, key in (('trainings = ["noisy"]\n', "trainings"), ("epoch = 3\n", "epoch"), ('epochs = "3"\n', "epochs")):
        path.write_text(text)
        assert main(["connect", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
        assert f"deft6g connect: configuration error: configuration key '{key}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
