"""`deft6g connect --quick`: writes its CSV and plots into the output folder, prints the summary, resumes."""

import csv

from deft6g.benchmarks.cli import main
from deft6g.benchmarks.connect import ConnectConfig, points


def test_connect_quick_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["connect", "--quick", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(points(ConnectConfig.quick()))
    for name in ("config.json", "accuracy_vs_snr_bbc_news-M2.png", "accuracy_vs_channel_uses_bbc_news-M2.png"):
        assert (out / name).exists(), name
    air = [r for r in rows if r["scheme"] == "noise-aware"]
    assert air and all(float(r["payload_uses"]) == 2.0 for r in air)        # ceil(D / 2), D = 4
    text = capsys.readouterr().out
    assert "noise-aware - naive" in text and "random-bert" in text
    before = (out / "results.csv").read_text()
    assert main(["connect", "--quick", "--out", str(out)]) == 0
    assert (out / "results.csv").read_text() == before                         # resumed: nothing recomputed
