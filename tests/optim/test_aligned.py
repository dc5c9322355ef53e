"""Closed-form directions and receivers against their defining properties."""

import numpy as np
import pytest
import tensorflow as tf

import deft6g.optim as optim
import deft6g.phy as phy


def test_zf_direction_aligns_every_device(crandn, rng):
    H = crandn(rng, 5, 8, 4)
    u = optim.zf_direction(tf.constant(H)).numpy()
    np.testing.assert_allclose(np.einsum("bn,bnk->bk", u.conj(), H), 1.0, atol=1e-6)


def test_aligned_design_meets_budgets_with_equality_for_the_weakest(crandn, rng):
    H, P = crandn(rng, 5, 4, 6), rng.uniform(0.5, 2.0, size=(5, 6))
    a, b = optim.closed_form_design(H, P, "mrc")
    np.testing.assert_allclose(np.einsum("bn,bnk->bk", a.conj(), H) * b, 1.0, atol=1e-10)
    slack = np.abs(b) ** 2 / P
    assert np.all(slack <= 1 + 1e-9)
    np.testing.assert_allclose(slack.max(-1), 1.0, rtol=1e-9)


def test_best_direction_is_the_brute_force_best_channel_direction(crandn, rng):
    H = crandn(rng, 3, 4, 5)
    a, b = optim.closed_form_design(H, 1.0, "best-direction")
    got = phy.aircomp_mse(H, a, b, 1.0)
    for i in range(3):
        mses = []
        for j in range(5):                                    # sigma^2 = P = 1, ||u|| = 1: MSE = max_k 1/|u^H h_k|^2
            u = H[i, :, j] / np.linalg.norm(H[i, :, j])
            mses.append(np.max(1.0 / np.abs(u.conj() @ H[i]) ** 2))
        np.testing.assert_allclose(got[i], min(mses), rtol=1e-9)


def test_mmse_receiver_is_stationary_and_beats_perturbations(crandn, rng):
    """a = (G G^H + sigma^2 I)^{-1} G 1 minimises the MSE for fixed b: random perturbations only increase it."""
    H, b = crandn(rng, 1, 4, 3), crandn(rng, 1, 3)
    a = optim.mmse_receiver(tf.constant(H), tf.constant(b), tf.constant(0.2, tf.float64)).numpy()
    base = phy.aircomp_mse(H, a, b, 0.2)[0]
    for _ in range(20):
        d = 1e-3 * crandn(rng, 1, 4)
        assert phy.aircomp_mse(H, a + d, b, 0.2)[0] > base


@pytest.mark.parametrize("method", ["zf", "mrc"])
def test_design_in_single_precision_matches_double(method):
    """N = 16, K = 20 Rayleigh (seed 0, 500 channels), SNR 0 dB: the complex64 design has the complex128 MSE.

    Designs are computed in complex128 whatever the input precision; tolerance 1e-4 relative on the median and
    1e-3 on every realisation (float32 rounding of H, a and b). Before the fix the ZF median was 93.2 in
    complex64 against 27.9 in complex128 (one realisation 3e4x off).
    """
    H = phy.FadingChannel("rayleigh", 16, 20, precision="double")(500, seed=0)
    mses = {}
    for dtype in (tf.complex64, tf.complex128):
        Hc = tf.cast(H, dtype)
        a, b = optim.closed_form_design(Hc, 1.0, method)
        assert a.dtype == dtype and b.dtype == dtype
        mses[dtype] = phy.aircomp_mse(H, tf.cast(a, tf.complex128), tf.cast(b, tf.complex128), 1.0).numpy()
    assert np.median(mses[tf.complex64]) == pytest.approx(np.median(mses[tf.complex128]), rel=1e-4)
    np.testing.assert_allclose(mses[tf.complex64], mses[tf.complex128], rtol=1e-3)


def test_zf_direction_wide_channel_is_least_squares(crandn, rng):
    """N < K: u minimises ||H^H u - 1|| (normal equations H H^H u = H 1, checked with NumPy lstsq, rtol 1e-6)."""
    H = crandn(rng, 3, 4, 7)
    u = optim.zf_direction(tf.constant(H)).numpy()
    for i in range(3):
        ref = np.linalg.lstsq(H[i].conj().T, np.ones(7), rcond=None)[0]
        np.testing.assert_allclose(u[i], ref, rtol=1e-6)


def test_align_refuses_a_direction_orthogonal_to_a_channel():
    """u^H h_2 = 0: no aligned design exists (formerly a = inf, b = NaN, silently)."""
    H = np.array([[1.0, 0.0], [0.0, 1.0]], complex)
    u = np.array([1.0, 0.0], complex)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`u` is orthogonal to a channel"):
        optim.align(tf.constant(H), tf.constant(u), tf.constant(1.0, tf.float64))


def test_uniform_is_phase_compensated_full_power_with_mmse_receiver():
    """N = 1, K = 10, SNR 10 dB, 2000 Rayleigh channels (NumPy seed 0).

    Closed form: b_k = sqrt(P) h_k^*/|h_k|, a = sqrt(P) sum|h_k| / (P sum|h_k|^2 + sigma^2), MSE =
    sum_k (a sqrt(P) |h_k| - 1)^2 + sigma^2 a^2 (rtol 1e-9 per realisation). Mean MSE 2.00 (without phase
    pre-compensation it was 9.02); the exact power control (`power_control`) reaches 0.735.
    """
    rng = np.random.default_rng(0)
    H = (rng.normal(size=(2000, 1, 10)) + 1j * rng.normal(size=(2000, 1, 10))) / np.sqrt(2)
    d = optim.design_aircomp(H, 1.0, 0.1, "uniform")
    np.testing.assert_allclose(np.abs(d.b), 1.0, rtol=1e-12)
    h = np.abs(H[:, 0, :])
    a = h.sum(-1) / (np.sum(h ** 2, -1) + 0.1)
    np.testing.assert_allclose(d.mse, np.sum((a[:, None] * h - 1) ** 2, -1) + 0.1 * a ** 2, rtol=1e-9)
    assert np.mean(d.mse) == pytest.approx(2.00, abs=0.02)
    assert np.mean(optim.power_control(H[:, 0, :], 1.0, 0.1).mse) == pytest.approx(0.735, abs=0.01)


def test_full_power_arrives_in_phase_along_the_mrc_direction(crandn, rng):
    """N = 4, K = 6, budgets P_k in [0.5, 2]: |b_k|^2 = P_k and u^H h_k b_k = sqrt(P_k) |u^H h_k| (real, > 0)."""
    H, P = crandn(rng, 5, 4, 6), rng.uniform(0.5, 2.0, size=(5, 6))
    b = optim.aligned.phase_compensated_full_power(tf.constant(H), tf.constant(P)).numpy()
    g = np.einsum("bn,bnk->bk", optim.mrc_direction(tf.constant(H)).numpy().conj(), H)
    np.testing.assert_allclose(np.abs(b) ** 2, P, rtol=1e-12)
    np.testing.assert_allclose(g * b, np.sqrt(P) * np.abs(g), rtol=1e-12)
