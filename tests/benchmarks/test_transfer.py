"""`deft6g transfer --quick`: writes its files, accounts channel uses as the link defines them, and resumes."""

import csv
import math

from deft6g.benchmarks.cli import main


def test_transfer_quick_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
    """2 seeds x (random, vocab, 2 neighbour prompts, 2 digital SNRs, 1 analog SNR, 1 bit width) runs. Digital
    runs spend at least one transmission of every codeword (ceil(payload / 576 info bits) x 600 QPSK symbols, rate
    1/2, n = 1200) and exactly that when nothing failed; analog runs spend ceil(L / 2) = 256 symbols for the
    8 x 64 prompt of random-bert."""
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["transfer", "--quick", "--out", str(out)]) == 0
    for name in ("sources.csv", "choices.csv", "runs.csv", "summary.csv", "timing.json", "config.json",
                 "curves_bbc_business_tech.png", "snr_bbc_business_tech.png", "bits_bbc_business_tech.png"):
        assert (out / name).exists(), name
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 2 * 8
    for r in runs:
        if r["link"] == "digital":
            once = math.ceil(int(r["payload_bits"]) / 576) * 600
            assert int(r["payload_bits"]) == 8 * 64 * int(r["num_bits"])
            assert int(r["channel_uses"]) >= once
            assert (int(r["channel_uses"]) == once) == (float(r["bler"]) == 0.0)
        elif r["link"] == "analog":
            assert int(r["channel_uses"]) == 256
    text = capsys.readouterr().out
    assert "similarity choice = oracle" in text and "steps to target" in text
    before = (out / "runs.csv").read_text()
    assert main(["transfer", "--quick", "--out", str(out)]) == 0
    assert (out / "runs.csv").read_text() == before
