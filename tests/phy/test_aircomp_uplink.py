"""The differentiable AirComp uplink for real payloads."""

import numpy as np
import pytest
import tensorflow as tf

import deft6g.phy as phy


def _design(crandn, rng, n, k):
    H, a = crandn(rng, n, k), crandn(rng, n)
    b = 0.8 / np.einsum("n,nk->k", np.conj(a), H)      # misaligned on purpose: a^H h_k b_k = 0.8
    return H, a, b


def test_pack_unpack_roundtrip_and_unit_variance(rng):
    z = tf.constant(rng.normal(size=(3, 100_001)))
    s = phy.pack(z)
    assert s.shape == (3, 50_001)
    assert float(tf.reduce_mean(tf.abs(s) ** 2)) == pytest.approx(1.0, rel=0.02)
    np.testing.assert_allclose(phy.unpack(s, 100_001).numpy(), z.numpy(), atol=1e-12)


def test_real_sum_error_is_std2_times_mse(crandn, rng):
    """Equal device stds sigma: error variance per real = sigma^2 * aircomp_mse (seed 1234, 4e5 reals, tol 3%)."""
    n, k, length, sigma = 4, 5, 400_000, 3.0
    H, a, b = _design(crandn, rng, n, k)
    x = rng.normal(size=(k, length))
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * sigma + rng.normal(size=(k, 1))
    f_hat = phy.AirCompUplink(precision="double")(x, H, a, b, 0.2, seed=5)
    err = np.mean((f_hat.numpy() - x.sum(0)) ** 2)
    assert err == pytest.approx(sigma ** 2 * phy.aircomp_mse(H, a, b, 0.2), rel=0.03)


def test_weighted_sum_is_exact_without_noise(crandn, rng):
    H, a = crandn(rng, 3, 4), crandn(rng, 3)
    b = 1.0 / np.einsum("n,nk->k", np.conj(a), H)
    x = rng.normal(size=(2, 4, 9)) * np.array([1.0, 2.0, 0.5, 4.0])[:, None]
    w = np.array([0.1, 0.2, 0.3, 0.4])
    f_hat = phy.AirCompUplink(precision="double")(x, H, a, b, 0.0, weights=w)
    np.testing.assert_allclose(f_hat.numpy(), np.einsum("k,bkl->bl", w, x), atol=1e-9)


def test_gradient_matches_finite_differences(crandn, rng):
    """d f_hat / d x by autodiff vs central differences (double precision, fixed noise seed)."""
    H, a, b = _design(crandn, rng, 3, 2)
    x = tf.Variable(rng.normal(size=(2, 6)))
    uplink = phy.AirCompUplink(precision="double")
    probe = tf.constant(rng.normal(size=6))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(uplink(x, H, a, b, 0.1, seed=3) * probe)
    grad = tape.gradient(loss, x).numpy()
    numeric = np.zeros_like(grad)
    eps = 1e-6
    for idx in np.ndindex(*grad.shape):
        for sign in (1, -1):
            xp = x.numpy().copy()
            xp[idx] += sign * eps
            numeric[idx] += sign * float(tf.reduce_sum(uplink(xp, H, a, b, 0.1, seed=3) * probe)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_uplink_rejects_wrong_payload_device_count(crandn, rng):
    H, a, b = _design(crandn, rng, 3, 2)
    with pytest.raises(ValueError, match=r"`x` must have K"):
        phy.AirCompUplink()(np.ones((3, 8)), H, a, b, 0.1)
    with pytest.raises(ValueError, match=r"`weights` must have K"):
        phy.AirCompUplink()(np.ones((2, 8)), H, a, b, 0.1, weights=np.ones(3))


@pytest.mark.parametrize("sigma", [1e-7, 1e3])
def test_error_scales_with_payload_std_of_any_size(crandn, rng, sigma):
    """Equal device stds sigma (1e-7 and 1e3): error variance per real = sigma^2 * aircomp_mse (seed 1234,
    2e5 reals, tolerance 4%). An absolute eps of 1e-12 in the standardisation made it 100x at sigma = 1e-7."""
    n, k, length = 4, 5, 200_000
    H, a, b = _design(crandn, rng, n, k)
    x = rng.normal(size=(k, length))
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * sigma + 5.0
    f_hat = phy.AirCompUplink(precision="double")(x, H, a, b, 0.2, seed=5)
    err = np.mean((f_hat.numpy() - x.sum(0)) ** 2)
    assert err == pytest.approx(sigma ** 2 * phy.aircomp_mse(H, a, b, 0.2), rel=0.04)


def test_constant_payloads_are_exact_and_differentiable(crandn, rng):
    """Every payload constant (std 0): the sum is exact despite the noise, and gradients are finite."""
    H, a, b = _design(crandn, rng, 3, 2)
    x = tf.Variable(np.array([[1.5] * 6, [-0.25] * 6]))
    with tf.GradientTape() as tape:
        f_hat = phy.AirCompUplink(precision="double")(x, H, a, b, 0.5, seed=1)
        loss = tf.reduce_sum(f_hat)
    np.testing.assert_allclose(f_hat.numpy(), 1.25, atol=1e-12)
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
    z, _, std = phy.standardise(x)
    assert np.all(z.numpy() == 0) and np.all(std.numpy() == 0)


def test_correlated_real_payloads_follow_the_covariance_mse(crandn, rng):
    """Real payloads with correlation 0.8 between devices: error per real = std^2 * aircomp_mse(payload_cov=C)
    with C = `payload_correlation(x)` (seed 1234, 4e5 reals, tolerance 3%); the independent formula is
    more than 10% off for this misaligned design."""
    n, k, length = 4, 5, 400_000
    H, a, b = _design(crandn, rng, n, k)
    x = np.linalg.cholesky(0.2 * np.eye(k) + 0.8) @ rng.normal(size=(k, length))
    x = 2.0 * (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)     # equal stds 2
    C = phy.payload_correlation(tf.constant(x)).numpy()
    np.testing.assert_allclose(np.diag(C), 1.0, rtol=1e-12)
    f_hat = phy.AirCompUplink(precision="double")(x, H, a, b, 0.2, seed=5)
    err = np.mean((f_hat.numpy() - x.sum(0)) ** 2)
    assert err == pytest.approx(4.0 * phy.aircomp_mse(H, a, b, 0.2, payload_cov=C), rel=0.03)
    assert abs(err / (4.0 * phy.aircomp_mse(H, a, b, 0.2)) - 1) > 0.1


def test_statistics_once_per_device_over_subcarriers(crandn, rng):
    """OFDM payload x [F = 2, K = 3, L' = 1e5] with per-subcarrier offsets; `over_subcarriers` standardises each
    device once over its F x L' reals (mean/std = NumPy over the flattened payload, to 1e-12). The symbols of
    one subcarrier then keep that subcarrier's offset, common to all devices: with equal device stds sigma the
    error per real on subcarrier f is sigma^2 * aircomp_mse(H_f, a_f, b_f, payload_cov=C_f), C_f = E[s s^H] on
    f (seed 1234, tolerance 4% per subcarrier); without noise and with aligned designs the sum is exact."""
    f, n, k, length = 2, 3, 3, 100_000
    H, a = crandn(rng, f, n, k), crandn(rng, f, n)
    b = 0.8 / np.einsum("fn,fnk->fk", np.conj(a), H)
    x = rng.normal(size=(f, k, length)) + np.array([[0.5], [-0.5]])[:, :, None]     # subcarrier offsets
    flat = np.moveaxis(x, 0, 1).reshape(k, -1)
    x = x / flat.std(-1)[None, :, None] * 2.0                                       # sigma = 2 per device
    flat = np.moveaxis(x, 0, 1).reshape(k, -1)
    z, mean, std = phy.standardise(tf.constant(x), over_subcarriers=True)
    np.testing.assert_allclose(mean.numpy()[0], flat.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(std.numpy()[0], flat.std(-1), rtol=1e-12)
    uplink = phy.AirCompUplink(precision="double")
    f_hat = uplink(x, H, a, b, 0.2, seed=5, over_subcarriers=True).numpy()
    err = np.mean((f_hat - x.sum(1)) ** 2, axis=-1)                                  # [F]
    C = np.einsum("fkl,fjl->fkj", z.numpy(), z.numpy()) / length                    # E[s s^H] per subcarrier
    np.testing.assert_allclose(err, 4.0 * phy.aircomp_mse(H, a, b, 0.2, payload_cov=C), rtol=0.04)
    exact = uplink(x, H, a, 1.0 / np.einsum("fn,fnk->fk", np.conj(a), H), 0.0, over_subcarriers=True).numpy()
    np.testing.assert_allclose(exact, x.sum(1), atol=1e-9)
    with pytest.raises(ValueError, match="`x` must be"):
        uplink(x[0], H[0], a[0], b[0], 0.2, over_subcarriers=True)
