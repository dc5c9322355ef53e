"""Device selection on the MSE of the mean: greedy and DC (Yang et al. 2020) against exhaustive search."""

import itertools

import cvxpy as cp
import numpy as np
import pytest

import deft6g.optim as optim
import deft6g.phy as phy
from deft6g.optim import ZfSdr
from deft6g.rng import reseed

# (N, K, noise_var, mse_target, spread of the large-scale gains [dB]): regimes where 3..8 devices survive
CASES = [(2, 8, 0.1, 0.04, 10.0), (3, 8, 0.1, 0.02, 20.0), (2, 6, 0.1, 0.03, 20.0), (1, 6, 0.1, 0.03, 10.0)]


def exhaustive(H, noise_var, mse_target):
    """(largest s with a subset found feasible, largest s not certified infeasible) over all 2^K - 1 subsets.

    Feasible: the SDR design over the subset has sigma^2 ||a||^2 / s^2 <= target. Certified infeasible:
    sigma^2 x the dual bound / s^2 > target (no aligned design can meet it)."""
    n, k = H.shape
    upper = 0
    for s in range(k, 0, -1):
        subsets = list(itertools.combinations(range(k), s))
        active = np.zeros((len(subsets), k), bool)
        for j, subset in enumerate(subsets):
            active[j, list(subset)] = True
        reseed(0)
        a, _, bound, _ = optim.sdr_design(np.repeat(H[None], len(subsets), 0), np.ones((len(subsets), k)),
                                          active=active)
        upper = upper or (s if np.any(noise_var * bound / s ** 2 <= mse_target) else 0)
        if np.any(noise_var * np.sum(np.abs(a) ** 2, -1) / s ** 2 <= mse_target):
            return s, upper
    return 0, upper


@pytest.fixture(scope="module")
def comparison(crandn):
    """Greedy, DC and exhaustive search on 12 channels (3 per case of CASES, seed 7)."""
    rng = np.random.default_rng(7)
    rows = []
    for n, k, nv, target, spread in CASES:
        for _ in range(3):
            H = crandn(rng, n, k) * 10 ** (-rng.uniform(0, spread, k) / 20)
            best, upper = exhaustive(H, nv, target)
            sel = {m: optim.select_devices(H, 1.0, nv, target, method=m, seed=0) for m in optim.SELECTORS}
            rows.append((H, nv, target, best, upper, sel))
    return rows


def test_selections_meet_the_mean_target_and_respect_the_certified_maximum(comparison):
    """Every selection reports the MSE of the mean of its own design (recomputed here), meets the target
    whenever exhaustive search found any feasible set, and never exceeds the largest set size that the dual
    bound leaves possible."""
    for H, nv, target, best, upper, sel in comparison:
        for m, s in sel.items():
            idx = s.selected
            mean = phy.aircomp_mse(H[:, idx], s.design.a, s.design.b[idx], nv) / len(idx) ** 2
            assert s.mean_mse == pytest.approx(float(mean), rel=1e-9) and s.met == (mean <= target)
            assert np.all(s.design.b[s.dropped] == 0) and sorted(idx + s.dropped) == list(range(H.shape[1]))
            assert len(idx) <= max(upper, 1), (m, len(idx), upper)
            assert s.met == (best > 0), (m, best, s.status)


def test_greedy_and_dc_against_exhaustive_search(comparison):
    """How often each finds the largest feasible set of exhaustive search (K <= 8, 12 channels, seed 7).
    Measured: greedy 12/12, DC 12/12; asserted: at least 10/12 each, and never more than exhaustive found."""
    found = {m: 0 for m in optim.SELECTORS}
    for *_, best, upper, sel in comparison:
        for m, s in sel.items():
            found[m] += (len(s.selected) == best) if best else (not s.met)
    print(f"largest feasible set found: {found} of {len(comparison)}")
    assert all(v >= 10 for v in found.values()), found


def test_all_kept_when_target_is_loose(crandn, rng):
    H = crandn(rng, 4, 3)
    for m in optim.SELECTORS:
        sel = optim.select_devices(H, 1.0, 0.01, mse_target=10.0, method=m)
        assert sel.selected == [0, 1, 2] and sel.dropped == [] and sel.met


def test_dc_failure_falls_back_to_greedy(crandn, monkeypatch, rng):
    """No DC solver answering: the greedy selection is returned and the status says so."""
    H = crandn(rng, 2, 4)

    def broken(self, problem):
        return optim.Solve("failed", "", "CLARABEL: solver_error", None)
    monkeypatch.setattr(optim.DcPrograms, "solve", broken)
    sel = optim.select_devices(H, 1.0, 0.1, 0.05, method="dc", seed=0)
    greedy = optim.select_devices(H, 1.0, 0.1, 0.05, method="greedy", seed=0)
    assert sel.status.startswith("failed (DC: CLARABEL: solver_error): greedy selection used")
    assert sel.selected == greedy.selected and sel.method == "greedy"


@pytest.mark.parametrize("kwargs, match", [(dict(mse_target=0.0), "`mse_target` must be a positive"),
                                           (dict(method="best"), "`method` must be one of")])
def test_selection_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optim.select_devices(**(dict(H=np.ones((2, 2)) + 0j, power=1.0, noise_var=0.1, mse_target=0.1) | kwargs))


def test_greedy_without_sdr_drops_the_weakest_device(crandn, monkeypatch, no_barrier, rng):
    """Barrier unconverged and every CVXPY solver raising: the MRC fallback designs each set, the weakest
    P_k ||h_k||^2 is dropped first, and the status names the failure (device 2 scaled down by 30 dB, N = 3,
    K = 4, target 0.02)."""
    H = crandn(rng, 3, 4) * np.array([1.0, 1.0, 10 ** -1.5, 1.0])

    def broken(*args, **kwargs):
        raise cp.SolverError("boom")
    monkeypatch.setattr(ZfSdr.compiled(3, 4).problem, "solve", broken)
    sel = optim.select_devices(H, 1.0, 0.1, 0.02, seed=0)
    assert 2 in sel.dropped and sel.status.startswith("failed (barrier: not converged; SCS: error boom")
