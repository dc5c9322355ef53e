"""The impairment sweeps' points agree with their closed forms and baselines (what the plots show)."""

import numpy as np

import pytest

from deft6g.benchmarks.impairment_sweeps import (MISALIGN_KINDS, LinkSweeps, design_misalign_point,
                                                 misalign_point, truncation_point)
from deft6g.optim import design_aircomp
from deft6g.phy import FadingChannel


def test_truncation_point_matches_theory_and_baselines():
    """N = 1, K = 8, 10 dB, g = 0.3, 2e4 realisations (seed 0): Monte Carlo within 0.1 dB of the closed forms,
    participation within 0.01 of e^{-0.3}, the exact peak-budget optimum (Cao et al.) below truncated
    inversion; the threshold-free baselines are cached per (SNR, seed)."""
    cfg, refs = LinkSweeps(trunc_devices=8, trunc_realisations=20000), {}
    row = truncation_point(cfg, dict(snr_db=10.0, threshold=0.3, seed=0), refs)
    assert abs(row["peak_db"] - row["peak_theory_db"]) < 0.1
    assert abs(row["average_db"] - row["average_theory_db"]) < 0.1
    assert abs(row["participation"] - np.exp(-0.3)) < 0.01
    assert row["optimal_db"] < row["peak_db"] and np.isfinite(row["full_median_db"])
    assert list(refs) == [(10.0, 0)]


def test_misalignment_point_matches_closed_form():
    """Uplink Monte Carlo (ZF, N = 8, K = 4, 200 channels x 400 reals, seed 1) within 0.3 dB of the closed
    form at phase std 0.5 rad, and the phase error costs more than 5 dB against none."""
    cfg = LinkSweeps(misalign_realisations=200, payload_reals=400)
    rows = [misalign_point(cfg, dict(num_rx_ant=8, num_devices=4, phase_std=s, seed=1)) for s in (0.0, 0.5)]
    assert all(abs(r["mc_db"] - r["theory_db"]) < 0.3 for r in rows)
    assert rows[1]["mc_db"] > rows[0]["mc_db"] + 5


def _excess_theory(param, std, num_devices, num_symbols):
    """MSE added to an aligned design (a^H h_k b_k = 1) by one transmit error, from the per-device error
    E|m - 1|^2 of m = (1 + eps) e^{j(phi + l delta)}: amplitude K sigma_a^2; phase 2K(1 - e^{-sigma^2/2})
    (E|e^{j phi} - 1|^2 for Gaussian phi); drift 2K(1 - rho_bar), rho_bar = mean over l < L of e^{-l^2 sigma^2/2}."""
    if param == "amplitude_std":
        return num_devices * std ** 2
    if param == "phase_std":
        return 2 * num_devices * (1 - np.exp(-std ** 2 / 2))
    return 2 * num_devices * (1 - np.mean(np.exp(-(np.arange(num_symbols) * std) ** 2 / 2)))


@pytest.mark.parametrize("param, std", [("amplitude_std", 0.3), ("phase_std", 0.5), ("drift_std", 0.003)])
def test_misalignment_sweep_points_match_theory(param, std):
    """Each misalignment sweep of `deft6g link` (ZF, N = 8, K = 4, 10 dB, 400 channels x 400 reals, L = 200
    symbols, seed 2): the uplink Monte Carlo MSE minus the error-free point of the same seed (same channels,
    payload and noise) is the closed-form excess (0.36, 0.940, 0.452) within 12% (1600 error draws: relative
    standard error about 3.5% for the amplitude error, less for the others); the point's `theory_db` column
    adds exactly that excess."""
    cfg = LinkSweeps(misalign_realisations=400, payload_reals=400)
    base = misalign_point(cfg, dict(num_rx_ant=8, num_devices=4, phase_std=0.0, seed=2))
    row = misalign_point(cfg, {"num_rx_ant": 8, "num_devices": 4, param: std, "seed": 2})
    assert list(row) == ["num_rx_ant", "num_devices", param, "seed", "mc_db", "theory_db"]
    excess = _excess_theory(param, std, 4, 200)
    lin = lambda db: 10 ** (db / 10)                                            # noqa: E731
    np.testing.assert_allclose(lin(row["mc_db"]) - lin(base["mc_db"]), excess, rtol=0.12)
    np.testing.assert_allclose(lin(row["theory_db"]) - lin(base["theory_db"]), excess, rtol=1e-6)


def test_design_misalignment_point_shifts_aligned_medians_by_theory():
    """`deft6g design`'s misalignment sweeps (closed-form expectation, median over channels): for aligned
    designs (ZF, MRC) every realisation's MSE rises by the same excess, so the median does too, exactly:
    K sigma_a^2, 2K(1 - e^{-sigma^2/2}) and 2K(1 - rho_bar) with L = 500 (N = 8, K = 6, 10 dB, 20 channels)."""
    H = FadingChannel("rayleigh", 8, 6, precision="double")(20, seed=3).numpy()
    designs = {m: design_aircomp(H, 1.0, 0.1, m, progress=False) for m in ("zf", "mrc")}
    base = design_misalign_point(designs, H, 0.1, dict(phase_std=0.0, seed=0), 500)
    for param, _, _, _ in MISALIGN_KINDS.values():
        for std in (0.2, 0.004):
            row = design_misalign_point(designs, H, 0.1, {param: std, "seed": 0}, 500)
            for m in designs:
                np.testing.assert_allclose(10 ** (row[f"{m}_db"] / 10) - 10 ** (base[f"{m}_db"] / 10),
                                           _excess_theory(param, std, 6, 500), rtol=1e-9)


def test_sweep_grids_that_would_run_nothing_are_refused_naming_the_key():
    from deft6g.benchmarks.beamforming import DesignConfig
    from deft6g.benchmarks.impairment_sweeps import DesignSweeps
    from deft6g.benchmarks.link import LinkConfig
    with pytest.raises(ValueError, match="impairments.pilot_snr_db"):
        LinkSweeps(pilot_snr_db=[])
    with pytest.raises(ValueError, match="impairments.num_seeds"):
        DesignSweeps(num_seeds=0)
    for config, name in ((LinkConfig, "LinkSweeps"), (DesignConfig, "DesignSweeps")):
        with pytest.raises(ValueError, match=f"`impairments` must be a {name} or None"):
            config(impairments={"num_seeds": 3})
        assert config(impairments=None).impairments is None


def test_link_sweeps_warns_and_writes_the_sweeps_alone(tmp_path):
    """The deprecated link_sweeps (before the sweeps became stages of LinkStudy) still writes their tables and
    plots alone and returns their summary."""
    from deft6g.benchmarks.impairment_sweeps import link_sweep_stages, link_sweeps
    with pytest.warns(DeprecationWarning, match="link_sweeps"):
        text = link_sweeps(tmp_path, quick=True, seed=3)
    assert text.startswith("Truncated channel inversion") and (tmp_path / "mse_vs_pilot_snr.png").exists()
    for stage in link_sweep_stages():
        rows = (tmp_path / stage.file).read_text().splitlines()[1:]
        assert rows and {int(r.split(",")[stage.key.index("seed")]) for r in rows} == {3, 4, 5}, stage.file
