"""Exact single-antenna power control against a brute-force search over the denoising factor."""

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

import deft6g.optim as optim
import deft6g.phy as phy


def brute_force_mse(h, power, nv):
    """min over eta of the MSE with the best b for that eta: dense log grid, then a bounded refinement."""
    q = power * np.abs(h) ** 2

    def mse(log_eta):
        eta = np.exp(log_eta)
        return np.sum(np.where(q < eta, (np.sqrt(q / eta) - 1) ** 2, 0.0)) + nv / eta
    grid = np.linspace(np.log(q.min()) - 5, np.log(q.max()) + 5, 20001)
    i = int(np.argmin([mse(g) for g in grid]))
    res = minimize_scalar(mse, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]), method="bounded",
                          options=dict(xatol=1e-12))
    return res.fun


@pytest.mark.parametrize("nv", [0.01, 0.3, 3.0])
def test_matches_brute_force(crandn, rng, nv):
    h = crandn(rng, 20, 6)
    power = rng.uniform(0.2, 3.0, size=(20, 6))
    d = optim.power_control(h, power, nv)
    brute = np.array([brute_force_mse(h[i], power[i], nv) for i in range(20)])
    np.testing.assert_allclose(d.mse, brute, rtol=1e-6)
    assert np.all(np.abs(d.b) ** 2 <= power * (1 + 1e-9))


def test_threshold_structure(crandn, rng):
    """q_k = P_k |h_k|^2 <= eta: full power; above: channel inversion, a h_k b_k = 1."""
    h, power = crandn(rng, 50, 8), 1.0
    d = optim.power_control(h, power, 0.5)
    q = power * np.abs(h) ** 2
    full = q <= d.eta[:, None]
    assert full.any() and (~full).any()
    np.testing.assert_allclose(np.abs(d.b[full]) ** 2, power, rtol=1e-9)
    aligned = (d.a * h * d.b)[~full]
    np.testing.assert_allclose(aligned, 1.0, atol=1e-9)


def test_matches_design_mse_definition(crandn, rng):
    h = crandn(rng, 5, 4)
    d = optim.power_control(h, 2.0, 0.1)
    np.testing.assert_allclose(d.mse, phy.aircomp_mse(h[:, None, :], d.a, d.b, 0.1), rtol=1e-12)


def test_power_control_errors():
    with pytest.raises(ValueError, match="all-zero column"):
        optim.power_control(np.array([1.0 + 0j, 0.0]), 1.0, 0.1)
    with pytest.raises(ValueError, match="`power` must be positive"):
        optim.power_control(np.ones(2) + 0j, [1.0, 0.0], 0.1)
