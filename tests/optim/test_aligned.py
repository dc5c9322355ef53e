"""Closed-form directions and receivers against their defining properties."""

import numpy as np
import tensorflow as tf

import deft6g.optim as optim
import deft6g.phy as phy
from tests.conftest import crandn


def test_zf_direction_aligns_every_device(rng):
    H = crandn(rng, 5, 8, 4)
    u = optim.zf_direction(tf.constant(H)).numpy()
    np.testing.assert_allclose(np.einsum("bn,bnk->bk", u.conj(), H), 1.0, atol=1e-6)


def test_aligned_design_meets_budgets_with_equality_for_the_weakest(rng):
    H, P = crandn(rng, 5, 4, 6), rng.uniform(0.5, 2.0, size=(5, 6))
    a, b = optim.closed_form_design(H, P, "mrc")
    np.testing.assert_allclose(np.einsum("bn,bnk->bk", a.conj(), H) * b, 1.0, atol=1e-10)
    slack = np.abs(b) ** 2 / P
    assert np.all(slack <= 1 + 1e-9)
    np.testing.assert_allclose(slack.max(-1), 1.0, rtol=1e-9)


def test_best_direction_is_the_brute_force_best_channel_direction(rng):
    H = crandn(rng, 3, 4, 5)
    a, b = optim.closed_form_design(H, 1.0, "best-direction")
    got = phy.aircomp_mse(H, a, b, 1.0)
    for i in range(3):
        mses = []
        for j in range(5):                                    # sigma^2 = P = 1, ||u|| = 1: MSE = max_k 1/|u^H h_k|^2
            u = H[i, :, j] / np.linalg.norm(H[i, :, j])
            mses.append(np.max(1.0 / np.abs(u.conj() @ H[i]) ** 2))
        np.testing.assert_allclose(got[i], min(mses), rtol=1e-9)


def test_mmse_receiver_is_stationary_and_beats_perturbations(rng):
    """a = (G G^H + sigma^2 I)^{-1} G 1 minimises the MSE for fixed b: random perturbations only increase it."""
    H, b = crandn(rng, 1, 4, 3), crandn(rng, 1, 3)
    a = optim.mmse_receiver(tf.constant(H), tf.constant(b), tf.constant(0.2, tf.float64)).numpy()
    base = phy.aircomp_mse(H, a, b, 0.2)[0]
    for _ in range(20):
        d = 1e-3 * crandn(rng, 1, 4)
        assert phy.aircomp_mse(H, a + d, b, 0.2)[0] > base
