"""Task-oriented AirComp design: equal importances give the MSE design, the power budget holds, and the
importance-weighted MSE falls by the closed-form factor; the power split is the minimiser."""

import numpy as np
import pytest

from deft6g.optim import design_aircomp, power_split, task_oriented_design
from deft6g.phy import FadingChannel


def _channels(n, k, count=6, seed=0):
    return FadingChannel("rayleigh", n, k, precision="double")(count, seed=seed).numpy()


@pytest.mark.parametrize("method", ["zf", "uniform", "mmse"])
def test_equal_importance_is_the_mse_design(method):
    """w_d all equal (any scale): p_d = 1 and sigma_eff^2 = sigma^2 exactly, so the design is
    design_aircomp's at the same noise: a, b equal for every dimension to 1e-12 for the closed forms; for
    "mmse" (SCS solves, warm-started from the previous solve) the MSE agrees to 1e-3 relative."""
    H = _channels(4, 3)
    task = task_oriented_design(H, 1.0, 0.1, np.full(5, 7.0), method, seed=3)
    mse = design_aircomp(H, 1.0, 0.1, method, seed=3)
    np.testing.assert_array_equal(task.power_split, np.ones(5))
    assert task.noise_var_eff == 0.1
    if method != "mmse":
        np.testing.assert_allclose(task.a, np.repeat(mse.a[:, None], 5, 1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(task.b, np.repeat(mse.b[:, None], 5, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(task.weighted_mse, mse.mse, rtol=1e-10 if method != "mmse" else 1e-3)
    np.testing.assert_allclose(task.weighted_mse, task.base.mse, rtol=1e-10)


@pytest.mark.parametrize("method", ["mmse", "zf"])
def test_power_budget_holds_on_average_over_dimensions(method):
    """mean_d |b_{d,k}|^2 <= P_k (1 + 1e-6) for per-device budgets P = (0.5, 1, 2) and skewed importances."""
    H = _channels(2, 3, count=8, seed=1)
    power = np.array([0.5, 1.0, 2.0])
    task = task_oriented_design(H, power, 0.05, [10.0, 1.0, 0.1, 3.0], method, seed=0)
    assert np.all(np.mean(np.abs(task.b) ** 2, axis=-2) <= power * (1 + 1e-6))
    np.testing.assert_allclose(task.power_split.mean(), 1.0, rtol=1e-12)


def test_aligned_design_gains_the_closed_form_factor():
    """ZF is aligned (no misalignment, a independent of sigma), so the importance-weighted MSE is the MSE
    design's times mean(sqrt w)^2 / mean(w), exactly (closed form in the module docstring)."""
    H = _channels(4, 4, seed=2)
    w = np.array([9.0, 1.0, 1.0, 0.25, 4.0])
    task = task_oriented_design(H, 1.0, 0.2, w, "zf")
    mse = design_aircomp(H, 1.0, 0.2, "zf").mse
    ratio = np.mean(np.sqrt(w)) ** 2 / np.mean(w)
    np.testing.assert_allclose(task.weighted_mse, ratio * mse, rtol=1e-10)
    assert ratio < 0.9


def test_power_split_minimises_the_weighted_noise():
    """sum_d w_d / p_d over mean(p) = 1: the closed-form split is no worse than 20,000 random feasible
    splits (Dirichlet draws; seed 0), and equals a fine grid's minimiser for D = 2 to 1e-3."""
    w = np.array([5.0, 1.0, 0.5])
    p, _ = power_split(w)
    best = np.sum(w / p)
    rand = 3 * np.random.default_rng(0).dirichlet(np.ones(3), 20_000)
    assert np.all(np.sum(w / rand, axis=1) >= best - 1e-12)
    grid = np.linspace(1e-3, 2 - 1e-3, 200_001)
    w2 = np.array([4.0, 1.0])
    p_grid = grid[np.argmin(w2[0] / grid + w2[1] / (2 - grid))]
    assert power_split(w2)[0][0] == pytest.approx(p_grid, abs=1e-3)


def test_bad_importance_raises():
    with pytest.raises(ValueError, match="`importance`"):
        power_split([1.0, -1.0])
    with pytest.raises(ValueError, match="`importance`"):
        power_split(np.ones((2, 2)))
    with pytest.raises(ValueError, match="`noise_var`"):
        task_oriented_design(_channels(2, 2, count=1), 1.0, -1.0, [1.0, 1.0], "zf")
