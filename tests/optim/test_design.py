"""AirComp designs: bounds, closed forms, monotone MMSE, power budgets, errors."""

import numpy as np
import pytest

import deft6g.optim as optim
import deft6g.phy as phy
from tests.conftest import crandn


@pytest.fixture(scope="module")
def channels():
    return crandn(np.random.default_rng(5), 6, 6, 5)                   # 6 realisations, N = 6, K = 5


@pytest.fixture(scope="module")
def designs(channels):
    power = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    return power, {m: optim.design_aircomp(channels, power, 0.1, method=m, seed=1, progress=False)
                   for m in optim.METHODS}


def test_mse_is_recomputed_and_budgets_hold(channels, designs):
    power, ds = designs
    for m, d in ds.items():
        np.testing.assert_allclose(d.mse, phy.aircomp_mse(channels, d.a, d.b, 0.1), rtol=1e-12)
        assert np.all(np.abs(d.b) ** 2 <= power * (1 + 1e-6)), m
        assert d.ok.all(), (m, d.status)


def test_sdr_bound_below_every_aligned_design(designs):
    """The SDR optimum relaxes min ||a||^2 s.t. |a^H h_k|^2 >= 1/P_k, so sigma^2 x it bounds every aligned MSE."""
    _, ds = designs
    bound = ds["sdr"].lower_bound
    for m in ("sdr", "mrc", "zf", "best-direction"):
        assert np.all(bound <= ds[m].mse * (1 + 1e-5)), m


def test_mmse_starts_at_sdr_and_never_increases(designs):
    _, ds = designs
    hist = np.array(ds["mmse"].history)
    assert hist[0] == pytest.approx(np.mean(ds["sdr"].mse), rel=1e-9)
    assert np.all(np.diff(hist) <= 1e-12 * hist[0])
    assert np.all(ds["mmse"].mse <= ds["sdr"].mse * (1 + 1e-9))


def test_single_device_sdr_is_mrc_closed_form(rng):
    """K = 1: min ||a||^2 s.t. |a^H h|^2 >= 1/P is a = h / (sqrt(P) ||h||^2), MSE = sigma^2 / (P ||h||^2)."""
    h = crandn(rng, 3, 4, 1)
    d = optim.design_aircomp(h, 2.0, 0.3, method="sdr", seed=0, progress=False)
    norm2 = np.sum(np.abs(h[..., 0]) ** 2, -1)
    np.testing.assert_allclose(d.mse, 0.3 / (2.0 * norm2), rtol=1e-5)
    np.testing.assert_allclose(d.lower_bound, 0.3 / (2.0 * norm2), rtol=1e-4)
    direction = d.a / np.linalg.norm(d.a, axis=-1, keepdims=True)
    overlap = np.abs(np.einsum("bn,bn->b", direction.conj(), h[..., 0])) / np.sqrt(norm2)
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_single_antenna_sdr_is_inversion_bounded_by_weakest(rng):
    """N = 1: the aligned optimum inverts every channel with |a|^2 = max_k 1/(P_k |h_k|^2)."""
    h = crandn(rng, 4, 1, 6)
    d = optim.design_aircomp(h, 1.0, 0.2, method="sdr", seed=0, progress=False)
    expected = 0.2 * np.max(1.0 / np.abs(h[:, 0, :]) ** 2, axis=-1)
    np.testing.assert_allclose(d.mse, expected, rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.einsum("bn,bnk->bk", d.a.conj(), h) * d.b), 1.0, rtol=1e-9)


def test_same_seed_same_design(channels):
    d1 = optim.design_aircomp(channels[:2], 1.0, 0.1, seed=4, progress=False)
    d2 = optim.design_aircomp(channels[:2], 1.0, 0.1, seed=4, progress=False)
    np.testing.assert_array_equal(d1.a, d2.a)


def test_imperfect_csi_degrades_mse_monotonically():
    """Design on H_hat = H + E, evaluate on H: mean MSE grows with the error variance (seed 8, 40 channels)."""
    H = phy.UplinkChannel("rayleigh", 4, 4, precision="double")(40, seed=8).numpy()
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
    (dict(noise_var=-0.1), "`noise_var` must be finite and non-negative"),
    (dict(H=np.array([[1.0, 0.0], [1.0, 0.0]])), "all-zero column"),
    (dict(H=np.full((2, 2), np.inf)), "`H` contains non-finite"),
])
def test_design_errors(kwargs, match):
    args = dict(H=np.ones((2, 2)) + 0j, power=1.0, noise_var=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        optim.design_aircomp(**args)


def test_sca_never_increases_and_stays_feasible(rng):
    """Each SCA step solves a QP whose feasible set contains the last iterate and sits inside the ZF set."""
    H = crandn(rng, 6, 9)
    start = optim.design_aircomp(H[None], 1.0, 0.1, "sdr", seed=0, sca_iter=0, progress=False)
    a, history, status = optim.ZfSca(6, 9).refine(H, np.ones(9), start.a[0])
    assert status == "optimal" and len(history) > 1
    assert np.all(np.diff(history) <= 1e-12 * history[0])
    assert np.all(np.abs(a.conj() @ H) ** 2 >= 1.0 - 1e-6)
    np.testing.assert_allclose(history[-1], np.vdot(a, a).real, rtol=1e-9)
