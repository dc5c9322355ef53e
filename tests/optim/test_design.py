"""AirComp designs: the dual-certified ZF bound, closed forms, monotone MMSE and SCA, status policy, NaN safety."""

import importlib

import cvxpy as cp
import numpy as np
import pytest

import deft6g.optim as optim
import deft6g.phy as phy
from deft6g.optim import ZfSdr


@pytest.fixture(scope="module")
def channels(crandn):
    return crandn(np.random.default_rng(5), 6, 6, 5)                   # 6 realisations, N = 6, K = 5


@pytest.fixture(scope="module")
def designs(channels):
    power = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    return power, {m: optim.design_aircomp(channels, power, 0.1, method=m, seed=1)
                   for m in optim.METHODS}


def test_mse_is_recomputed_and_budgets_hold(channels, designs):
    power, ds = designs
    for m, d in ds.items():
        np.testing.assert_allclose(d.mse, phy.aircomp_mse(channels, d.a, d.b, 0.1), rtol=1e-12)
        assert np.all(np.abs(d.b) ** 2 <= power * (1 + 1e-6)), m
        assert d.ok.all(), (m, d.status)


@pytest.mark.parametrize("n, k", [(1, 4), (2, 6), (4, 4), (6, 3), (3, 8)])
def test_zf_bound_below_every_aligned_design(crandn, rng, n, k):
    """sigma^2 sum_k lambda_k / (P_k lambda_max(sum lambda_k h_k h_k^H)) <= every aligned MSE (weak duality,
    exact for any lambda >= 0), checked against the SDR design, the closed forms and 200 random aligned
    directions per channel (seed 1234, 5 channels, no tolerance beyond 1e-12 rounding)."""
    H = crandn(rng, 5, n, k)
    power = rng.uniform(0.5, 2.0, size=(5, k))
    bound = optim.design_aircomp(H, power, 0.3, "sdr", seed=0).zf_lower_bound
    for m in optim.ALIGNED:
        d = optim.design_aircomp(H, power, 0.3, m, seed=0)
        assert np.all(bound <= d.mse * (1 + 1e-12)), m
    U = crandn(rng, 5, 200, n)
    a = optim.best_aligned(H, U, power)
    assert np.all(bound <= 0.3 * np.sum(np.abs(a) ** 2, -1) * (1 + 1e-12))


@pytest.mark.parametrize("solver, rtol", [("SCS", 1e-4), ("CLARABEL", 1e-6)])
def test_dual_bound_equals_primal_sdr_optimum(crandn, rng, solver, rtol):
    """Strong duality: the certified dual value equals the primal SDR optimum tr X within the solver's
    tolerance (SCS at eps 1e-6: 1e-4 relative; Clarabel at 1e-7 gaps: 1e-6), N = 4, K = 7, seed 1234."""
    sdr = ZfSdr(4, 7, solvers=(solver,))
    for _ in range(3):
        H, power = crandn(rng, 4, 7), rng.uniform(0.5, 2.0, 7)
        sol = sdr.solve(H, power)
        assert sol.status == "optimal" and sol.solver == solver
        bound = optim.dual_bound(H, power, sol.duals)
        assert bound <= sol.value * (1 + rtol)
        np.testing.assert_allclose(bound, sol.value, rtol=rtol)


@pytest.mark.parametrize("n, k", [(1, 5), (4, 7), (8, 3), (6, 12)])
def test_barrier_sdr_matches_cvxpy(crandn, rng, n, k):
    """The NumPy barrier method on the K-dimensional dual: converged, value and certified bound equal to
    Clarabel's optimum (rtol 1e-6), X primal feasible (h_k^H X h_k >= 1/P_k up to 1e-6), inactive devices
    get multiplier 0 and no constraint (4 channels each, seed 1234)."""
    H, power = crandn(rng, 4, n, k), rng.uniform(0.5, 2.0, (4, k))
    active = np.ones((4, k), bool)
    active[1, 0] = False
    X, duals, value, converged = optim.sdr_barrier(H, power, active)
    assert converged.all() and duals[1, 0] == 0
    sdr = ZfSdr(n, k, solvers=("CLARABEL",))
    reference = [sdr.solve(H[i], power[i], active[i]).value for i in range(4)]
    np.testing.assert_allclose(value, reference, rtol=1e-6)
    np.testing.assert_allclose(optim.dual_bound(H, power, duals), reference, rtol=1e-6)
    gains = np.einsum("bnk,bnm,bmk->bk", H.conj(), X, H).real * power
    assert np.all(gains[active] >= 1 - 1e-6)


def test_mmse_is_not_bounded_by_the_zf_bound():
    """"mmse" trades misalignment for noise, so it is no aligned design: it carries no ZF bound, refuses a gap,
    and does go below the bound (N = 4, K = 8, SNR 0 dB, 20 Rayleigh channels, seed 3)."""
    H = phy.FadingChannel("rayleigh", 4, 8, precision="double")(20, seed=3).numpy()
    sdr = optim.design_aircomp(H, 1.0, 1.0, "sdr", seed=0)
    mmse = optim.design_aircomp(H, 1.0, 1.0, "mmse", seed=0, init=sdr)
    assert mmse.zf_lower_bound is None and np.all(np.isfinite(sdr.gap_db())) and np.all(sdr.gap_db() >= 0)
    with pytest.raises(ValueError, match="aligned designs"):
        mmse.gap_db()
    assert np.mean(mmse.mse < sdr.zf_lower_bound) > 0.5


def test_mmse_starts_at_sdr_and_never_increases(designs):
    _, ds = designs
    hist = np.array(ds["mmse"].history)
    assert hist[0] == pytest.approx(np.mean(ds["sdr"].mse), rel=1e-9)
    assert np.all(np.diff(hist) <= 1e-12 * hist[0])
    assert np.all(ds["mmse"].mse <= ds["sdr"].mse * (1 + 1e-9))


def test_single_device_sdr_is_mrc_closed_form(crandn, rng):
    """K = 1: min ||a||^2 s.t. |a^H h|^2 >= 1/P is a = h / (sqrt(P) ||h||^2), MSE = sigma^2 / (P ||h||^2)."""
    h = crandn(rng, 3, 4, 1)
    d = optim.design_aircomp(h, 2.0, 0.3, method="sdr", seed=0)
    norm2 = np.sum(np.abs(h[..., 0]) ** 2, -1)
    np.testing.assert_allclose(d.mse, 0.3 / (2.0 * norm2), rtol=1e-9)
    np.testing.assert_allclose(d.zf_lower_bound, 0.3 / (2.0 * norm2), rtol=1e-9)
    direction = d.a / np.linalg.norm(d.a, axis=-1, keepdims=True)
    overlap = np.abs(np.einsum("bn,bn->b", direction.conj(), h[..., 0])) / np.sqrt(norm2)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_single_antenna_sdr_is_inversion_bounded_by_weakest(crandn, rng):
    """N = 1: the aligned optimum inverts every channel with |a|^2 = max_k 1/(P_k |h_k|^2); the dual bound is
    exact there (lambda on the weakest device)."""
    h = crandn(rng, 4, 1, 6)
    d = optim.design_aircomp(h, 1.0, 0.2, method="sdr", seed=0)
    expected = 0.2 * np.max(1.0 / np.abs(h[:, 0, :]) ** 2, axis=-1)
    np.testing.assert_allclose(d.mse, expected, rtol=1e-6)
    np.testing.assert_allclose(d.zf_lower_bound, expected, rtol=1e-3)
    np.testing.assert_allclose(np.abs(np.einsum("bn,bnk->bk", d.a.conj(), h) * d.b), 1.0, rtol=1e-9)


def test_same_seed_same_design_and_one_compiled_problem(channels):
    d1 = optim.design_aircomp(channels[:2], 1.0, 0.1, seed=4)
    d2 = optim.design_aircomp(channels[:2], 1.0, 0.1, seed=4)
    np.testing.assert_array_equal(d1.a, d2.a)
    assert ZfSdr.compiled(6, 5) is ZfSdr.compiled(6, 5)                  # kept across calls (and rounds)


def test_imperfect_csi_degrades_mse_monotonically():
    """Design on H_hat = H + E, evaluate on H: mean MSE grows with the error variance (seed 8, 40 channels)."""
    H = phy.FadingChannel("rayleigh", 4, 4, precision="double")(40, seed=8).numpy()
    means = []
    for ev in (0.0, 0.01, 0.1):
        d = optim.design_aircomp(phy.imperfect_csi(H, ev, seed=9), 1.0, 0.01, method="zf")
        means.append(np.mean(phy.aircomp_mse(H, d.a, d.b, 0.01)))
    assert means[0] < means[1] < means[2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="foo"), "`method` must be one of"),
    (dict(power=0.0), "`power` must be positive"),
    (dict(power=-1.0), "`power` must be non-negative"),
    (dict(power=np.ones(3)), r"`power` must have K \(columns of H\) = 2"),
    (dict(noise_var=-0.1), "`noise_var` must be non-negative and finite"),
    (dict(H=np.array([[1.0, 0.0], [1.0, 0.0]])), "all-zero column"),
    (dict(H=np.full((2, 2), np.inf)), "`H` contains non-finite"),
])
def test_design_errors(kwargs, match):
    args = dict(H=np.ones((2, 2)) + 0j, power=1.0, noise_var=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        optim.design_aircomp(**args)


def test_threshold_b_with_a_zero_gain_sends_nothing():
    """a orthogonal to h_2: device 2 adds |0 - 1|^2 = 1 whatever it sends, so b_2 = 0 (was NaN); device 1 is
    inverted. MSE = (|g_1 b_1 - 1|^2 = 0) + 1 + sigma^2 ||a||^2."""
    H = np.array([[[1.0, 0.0], [0.0, 1.0]]], complex)
    a = np.array([[0.5, 0.0]], complex)
    b = optim.best_threshold_b(H, a, np.array([[9.0, 9.0]]))
    np.testing.assert_allclose(b, [[2.0, 0.0]])
    np.testing.assert_allclose(phy.aircomp_mse(H, a, b, 0.1), [1.0 + 0.1 * 0.25])


def test_best_aligned_skips_candidates_without_an_aligned_design():
    """NaN, zero and orthogonal candidates (the old argmin returned the NaN one) are skipped; the best usable
    one is scaled to t^2 = max_k 1/(P_k |u^H h_k|^2); none usable raises."""
    H = np.eye(2, dtype=complex)[None]
    U = np.array([[[np.nan, np.nan], [0, 0], [1, 0], [1, 1], [3, 1]]], complex)
    a = optim.best_aligned(H, U, np.ones((1, 2)))
    np.testing.assert_allclose(a, [[1.0, 1.0]])                          # ||a||^2 = 2 < 10 for [3, 1]
    top = optim.best_aligned(H, U, np.ones((1, 2)), count=3)                # the SCA starts, best first
    np.testing.assert_allclose(top[0, :2], [[1.0, 1.0], [3.0, 1.0]])
    assert np.all(np.isnan(top[0, 2]))                                     # only two usable candidates
    with pytest.raises(RuntimeError, match="no candidate direction"):
        optim.best_aligned(H, U[:, :3], np.ones((1, 2)))


def test_sca_status_is_reported_and_the_design_kept(crandn, monkeypatch, rng):
    """A failing NNLS step stops SCA at the last feasible iterate and says so in `status` (was discarded)."""
    H = crandn(rng, 1, 4, 6)
    plain = optim.design_aircomp(H, 1.0, 0.1, "sdr", seed=0, sca_iter=0)

    def broken(*args, **kwargs):
        raise RuntimeError("Maximum number of iterations reached.")
    monkeypatch.setattr(importlib.import_module("deft6g.optim.zf_sca"), "nnls", broken)
    d = optim.design_aircomp(H, 1.0, 0.1, "sdr", seed=0)
    assert d.status[0].startswith("optimal (barrier); SCA stopped at iteration 1: Maximum number of iterations")
    assert d.ok.all()
    np.testing.assert_allclose(d.mse, plain.mse, rtol=1e-9)


def test_sdr_failure_falls_back_to_mrc_and_says_so(crandn, monkeypatch, no_barrier, rng):
    """Barrier unconverged and every CVXPY solver raising: status "failed (...): MRC direction used", ok False,
    bound NaN, still aligned."""
    H = crandn(rng, 2, 3, 5)
    sdr = ZfSdr.compiled(3, 5)

    def broken(*args, **kwargs):
        raise cp.SolverError("boom")
    monkeypatch.setattr(sdr.problem, "solve", broken)
    d = optim.design_aircomp(H, 1.0, 0.1, "sdr", seed=0)
    assert all(s.startswith("failed (barrier: not converged; SCS: error boom; CLARABEL: error boom): MRC "
                            "direction used") for s in d.status)
    assert not d.ok.any() and np.all(np.isnan(d.zf_lower_bound))
    np.testing.assert_allclose(np.abs(np.einsum("bn,bnk->bk", d.a.conj(), H) * d.b), 1.0, rtol=1e-9)


def test_inaccurate_solves_are_used_and_flagged(crandn, monkeypatch, no_barrier, rng):
    """OPTIMAL_INACCURATE from every solver: the last answer is used, status "inaccurate (CLARABEL)", and the
    bound stays below the aligned design (it is certified from the duals, not read off the primal)."""
    H = crandn(rng, 2, 3, 5)
    sdr = ZfSdr(3, 5)
    real_solve = sdr.problem.solve

    def inaccurate(*args, **kwargs):
        real_solve(*args, **kwargs)
        sdr.problem._status = cp.OPTIMAL_INACCURATE
    monkeypatch.setattr(sdr.problem, "solve", inaccurate)
    monkeypatch.setattr(ZfSdr, "compiled", classmethod(lambda cls, n, k, solvers=None: sdr))
    d = optim.design_aircomp(H, 1.0, 0.1, "sdr", seed=0)
    assert all(s.startswith("inaccurate (CLARABEL)") for s in d.status) and d.ok.all()
    assert np.all(d.zf_lower_bound <= d.mse)


def test_sca_step_matches_the_tangent_qp(crandn, rng):
    """One SCA step (NNLS dual of the least-distance QP) equals the QP solved by CVXPY/Clarabel, rescaled onto
    the ZF set as every iterate is (rtol 1e-5)."""
    H = crandn(rng, 5, 8)
    a0 = optim.design_aircomp(H[None], 1.0, 0.1, "mrc").a[0]
    a1, history, _ = optim.zf_sca(H, np.ones(8), a0, max_iter=1)
    g = H.conj().T @ a0
    x = cp.Variable(5, complex=True)
    cp.Problem(cp.Minimize(cp.sum_squares(x)), [2 * cp.real((H * g).conj().T @ x) >= np.abs(g) ** 2 + 1]).solve(
        solver="CLARABEL")
    expected = x.value * np.sqrt(np.max(1 / np.abs(x.value.conj() @ H) ** 2))
    np.testing.assert_allclose(a1, expected, rtol=1e-5)
    np.testing.assert_allclose(history[-1], np.sum(np.abs(expected) ** 2), rtol=1e-5)


def test_sca_never_increases_and_stays_feasible(crandn, rng):
    """Each SCA step solves a QP whose feasible set contains the last iterate and sits inside the ZF set."""
    H = crandn(rng, 6, 9)
    start = optim.design_aircomp(H[None], 1.0, 0.1, "sdr", seed=0, sca_iter=0)
    a, history, status = optim.zf_sca(H, np.ones(9), start.a[0])
    assert status == "converged" and len(history) > 1
    assert np.all(np.diff(history) <= 1e-12 * history[0])
    assert np.all(np.abs(a.conj() @ H) ** 2 >= 1.0 - 1e-9)
    np.testing.assert_allclose(history[-1], np.vdot(a, a).real, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_designs_accept_both_precisions(crandn, rng, dtype):
    """The designs take complex64 and complex128 channels and design in double precision: a complex64 channel
    gets the design of the same (rounded) channel in complex128 (MSE rtol 1e-9), `closed_form_design` returns
    a and b in the channel's precision, and `power_control` (N = 1) matches likewise (3 channels, seed 1234)."""
    H = crandn(rng, 3, 4, 5).astype(dtype)
    H128 = H.astype(np.complex128)
    for method in ("sdr", "mmse", "zf", "uniform"):
        got, ref = (optim.design_aircomp(h, 1.0, 0.1, method, seed=0) for h in (H, H128))
        assert got.a.dtype == np.complex128
        np.testing.assert_allclose(got.mse, ref.mse, rtol=1e-9)
    a, b = optim.closed_form_design(H, 1.0, "zf")
    assert a.dtype == b.dtype == dtype
    ref_a, ref_b = optim.closed_form_design(H128, 1.0, "zf")
    np.testing.assert_allclose(phy.aircomp_mse(H128, a, b, 0.1), phy.aircomp_mse(H128, ref_a, ref_b, 0.1),
                               rtol=1e-5 if dtype == np.complex64 else 1e-12)
    pc, pc_ref = (optim.power_control(h[:, 0, :], 1.0, 0.1) for h in (H, H128))
    np.testing.assert_allclose(pc.mse, pc_ref.mse, rtol=1e-9)
