"""Subcarrier power allocation against its K = 1 closed form, brute force and an independent SciPy solve."""

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

import deft6g.optim as optim
import deft6g.phy as phy


def _usage(design):
    """Total transmit power per device, summed over subcarriers: [..., K]."""
    return np.sum(np.abs(design.b) ** 2, axis=-2)


def test_single_device_closed_form(crandn, rng):
    """K = 1: eta_f = P |g_f| / sum_j 1/|g_j|, MSE = sigma^2 (sum_f 1/|g_f|)^2 / P (Cauchy-Schwarz), budget
    met with equality; uniform power gives sigma^2 F sum_f 1/(P |g_f|^2). MSE rtol 1e-6 (Clarabel, tol 1e-9);
    eta rtol 1e-4 (the objective is flat at its minimum, so the argmin is only as accurate as its square root)."""
    h = crandn(rng, 30, 8, 1, 1)
    P, nv = 8.0, 0.2
    d = optim.allocate_subcarrier_power(h, P, nv)
    mag = np.abs(h[..., 0, 0])
    np.testing.assert_allclose(d.mse, nv * np.sum(1 / mag, -1) ** 2 / P, rtol=1e-6)
    np.testing.assert_allclose(d.eta, P * mag / np.sum(1 / mag, -1, keepdims=True), rtol=1e-4)
    np.testing.assert_allclose(_usage(d)[..., 0], P, rtol=1e-9)
    u = optim.uniform_subcarrier_power(h, P, nv)
    np.testing.assert_allclose(u.mse, nv * 8 * np.sum(1 / (P * mag ** 2), -1), rtol=1e-12)


def _brute_force_two_subcarriers(g2, P, nv):
    """min_eta sigma^2 (1/eta_1 + 1/eta_2) s.t. eta_1 w_k1 + eta_2 w_k2 <= P_k, w = 1/|g|^2: eta_2 is the
    largest feasible for each eta_1; dense grid over eta_1, then a bounded refinement."""
    w = 1 / g2                                                                  # [F = 2, K]
    top = np.min(P / w[0])

    def mse(e1):
        e2 = np.min((P - e1 * w[0]) / w[1])
        return nv * (1 / e1 + 1 / e2) if e2 > 0 else np.inf
    grid = np.linspace(top * 1e-4, top * (1 - 1e-9), 20001)
    i = int(np.argmin([mse(e) for e in grid]))
    res = minimize_scalar(mse, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, 20000)]), method="bounded",
                          options=dict(xatol=1e-14))
    return res.fun


def test_matches_brute_force_and_resolves(crandn, rng):
    """F = 2, K = 3, N = 1, unequal budgets: optimal MSE equals the 1-D brute force (rtol 1e-6), for two
    batches of channels solved by the *same* compiled problem (new Parameter values, no rebuild)."""
    P = np.array([1.0, 2.0, 0.5])
    for _ in range(2):
        h = crandn(rng, 10, 2, 1, 3)
        d = optim.allocate_subcarrier_power(h, P, 0.1)
        brute = [_brute_force_two_subcarriers(np.abs(h[i, :, 0, :]) ** 2, P, 0.1) for i in range(10)]
        np.testing.assert_allclose(d.mse, brute, rtol=1e-6)
    assert optim.SubcarrierPower.compiled.cache_info().hits >= 1


def test_matches_scipy_and_beats_uniform(crandn, rng):
    """N = 4, K = 5, F = 6, MRC directions: the optimum equals an independent SLSQP solve in log eta
    (rtol 1e-4), is never worse than uniform power, keeps every budget, and every device with a positive
    multiplier spends its budget exactly (rtol 1e-6); at least one device per realisation does."""
    H = crandn(rng, 8, 6, 4, 5)
    P = rng.uniform(3.0, 9.0, size=(8, 5))
    d = optim.allocate_subcarrier_power(H, P, 0.05)
    u = optim.uniform_subcarrier_power(H, P, 0.05)
    assert np.all(d.mse <= u.mse * (1 + 1e-9)) and np.mean(d.mse < u.mse * 0.99) > 0.5
    usage = _usage(d)
    assert np.all(usage <= P * (1 + 1e-9))
    np.testing.assert_allclose(np.max(usage / P, -1), 1.0, rtol=1e-9)
    binding = d.duals > 1e-4 * d.duals.max(-1, keepdims=True)
    np.testing.assert_allclose(usage[binding], P[binding], rtol=1e-6)
    w = np.abs(np.einsum("bfn,bfnk->bfk", d.a.conj() * np.sqrt(d.eta)[..., None], H)) ** -2   # 1/|g_kf|^2
    for i in range(8):
        cons = dict(type="ineq", fun=lambda t, i=i: P[i] - w[i].T @ np.exp(t))
        start = np.log(u.eta[i])
        res = minimize(lambda t: np.sum(np.exp(-t)), start, constraints=[cons], method="SLSQP",
                       options=dict(ftol=1e-14, maxiter=1000))
        np.testing.assert_allclose(d.mse[i], 0.05 * res.fun, rtol=1e-4)


def test_zf_direction_aligns_every_device(crandn, rng):
    """With ZF directions all devices see |g_kf| = 1/||u_f^raw||, so equal budgets reduce to the K = 1 closed
    form; each subcarrier's design is aligned (a_f^H h_kf b_kf = 1) and the MSE is sigma^2 sum_f 1/eta_f."""
    H = crandn(rng, 5, 4, 6, 3)
    d = optim.allocate_subcarrier_power(H, 4.0, 0.1, direction="zf")
    c = np.einsum("bfn,bfnk,bfk->bfk", d.a.conj(), H, d.b)
    np.testing.assert_allclose(c, 1.0, atol=1e-9)
    np.testing.assert_allclose(d.mse, 0.1 * np.sum(1 / d.eta, -1), rtol=1e-9)
    np.testing.assert_allclose(d.mse, np.sum(phy.aircomp_mse(H, d.a, d.b, 0.1), -1), rtol=1e-12)
    g = np.abs(np.einsum("bfn,bfnk->bfk", d.a.conj() * np.sqrt(d.eta)[..., None], H))[..., 0]
    np.testing.assert_allclose(d.mse, 0.1 * np.sum(1 / g, -1) ** 2 / 4.0, rtol=1e-6)


def test_errors(crandn, rng):
    with pytest.raises(ValueError, match="`direction`"):
        optim.allocate_subcarrier_power(crandn(rng, 2, 2, 2, 2), 1.0, 0.1, direction="mmse")
    with pytest.raises(ValueError, match="N >= K"):
        optim.allocate_subcarrier_power(crandn(rng, 2, 2, 2, 3), 1.0, 0.1, direction="zf")
    with pytest.raises(ValueError, match=r"\[..., F, N, K\]"):
        optim.uniform_subcarrier_power(crandn(rng, 2, 2), 1.0, 0.1)
    with pytest.raises(ValueError, match="`noise_var`"):
        optim.uniform_subcarrier_power(crandn(rng, 2, 2, 2, 2), 1.0, -1.0)
