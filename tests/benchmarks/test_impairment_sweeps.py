"""The impairment sweeps' points agree with their closed forms and baselines (what the plots show)."""

import numpy as np

from deft6g.benchmarks.impairment_sweeps import LinkSweeps, _misalign_point, _truncation_point


def test_truncation_point_matches_theory_and_baselines():
    """N = 1, K = 8, 10 dB, g = 0.3, 2e4 realisations (seed 0): Monte Carlo within 0.1 dB of the closed forms,
    participation within 0.01 of e^{-0.3}, the exact peak-budget optimum (Cao et al.) below truncated
    inversion; the threshold-free baselines are cached per (SNR, seed)."""
    cfg, refs = LinkSweeps(trunc_devices=8, trunc_realisations=20000), {}
    row = _truncation_point(cfg, dict(snr_db=10.0, threshold=0.3, seed=0), refs)
    assert abs(row["peak_db"] - row["peak_theory_db"]) < 0.1
    assert abs(row["average_db"] - row["average_theory_db"]) < 0.1
    assert abs(row["participation"] - np.exp(-0.3)) < 0.01
    assert row["optimal_db"] < row["peak_db"] and np.isfinite(row["full_median_db"])
    assert list(refs) == [(10.0, 0)]


def test_misalignment_point_matches_closed_form():
    """Uplink Monte Carlo (ZF, N = 8, K = 4, 200 channels x 400 reals, seed 1) within 0.3 dB of the closed
    form at phase std 0.5 rad, and the phase error costs more than 5 dB against none."""
    cfg = LinkSweeps(misalign_realisations=200, payload_reals=400)
    rows = [_misalign_point(cfg, dict(num_rx_ant=8, num_devices=4, phase_std=s, seed=1)) for s in (0.0, 0.5)]
    assert all(abs(r["mc_db"] - r["theory_db"]) < 0.3 for r in rows)
    assert rows[1]["mc_db"] > rows[0]["mc_db"] + 5
