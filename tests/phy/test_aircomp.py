"""AirComp MSE and estimate against the model of docs/design.md §3."""

import numpy as np
import pytest
import tensorflow as tf

import deft6g.phy as phy


def mse_reference(H, a, b, nv):
    """Direct loop over devices: sum_k |a^H h_k b_k - 1|^2 + nv ||a||^2."""
    out = np.zeros(H.shape[:-2])
    for idx in np.ndindex(*H.shape[:-2]):
        ah = np.conj(a[idx]) @ H[idx]
        out[idx] = sum(abs(ah[k] * b[idx][k] - 1) ** 2 for k in range(H.shape[-1]))
        out[idx] += (nv[idx] if np.ndim(nv) else nv) * np.vdot(a[idx], a[idx]).real
    return out


@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (8, 20)])
def test_mse_matches_numpy_rederivation(crandn, rng, shape):
    n, k = shape
    H, a, b = crandn(rng, 5, n, k), crandn(rng, 5, n), crandn(rng, 5, k)
    nv = rng.uniform(0.01, 2.0, size=5)
    got = phy.aircomp_mse(H, a, b, nv)
    assert isinstance(got, np.ndarray) and got.shape == (5,)
    np.testing.assert_allclose(got, mse_reference(H, a, b, nv), rtol=1e-12)


def test_mse_tensor_in_tensor_out(crandn, rng):
    H, a, b = crandn(rng, 2, 4, 3), crandn(rng, 2, 4), crandn(rng, 2, 3)
    got = phy.aircomp_mse(tf.constant(H, tf.complex64), tf.constant(a, tf.complex64), tf.constant(b, tf.complex64), 0.5)
    assert isinstance(got, tf.Tensor) and got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), mse_reference(H, a, b, 0.5), rtol=1e-5)


def test_estimate_empirical_mse_within_2_percent(crandn, rng):
    """Seed 1234; 2e5 Gaussian symbols: the relative std of the sample mean of |e|^2 is 0.22%, tolerance 2%."""
    n, k, length = 4, 6, 200_000
    H, a, b = crandn(rng, n, k), crandn(rng, n), crandn(rng, k)
    s = crandn(rng, k, length)
    f_hat = phy.aircomp_estimate(s, H, a, b, 0.3, seed=7)
    empirical = np.mean(np.abs(f_hat - s.sum(axis=0)) ** 2)
    assert empirical == pytest.approx(phy.aircomp_mse(H, a, b, 0.3), rel=0.02)


def test_estimate_exact_sum_without_noise_when_aligned(crandn, rng):
    H, a = crandn(rng, 3, 4, 5), crandn(rng, 3, 4)
    b = 1.0 / np.einsum("bn,bnk->bk", np.conj(a), H)
    s = crandn(rng, 3, 5, 11)
    f_hat = phy.aircomp_estimate(s, H, a, b, 0.0)
    np.testing.assert_allclose(f_hat, s.sum(axis=-2), atol=1e-12)
    np.testing.assert_allclose(phy.aircomp_mse(H, a, b, 0.0), 0.0, atol=1e-20)


def test_same_seed_same_noise(crandn, rng):
    H, a, b, s = crandn(rng, 2, 2), crandn(rng, 2), crandn(rng, 2), crandn(rng, 2, 5)
    np.testing.assert_array_equal(phy.aircomp_estimate(s, H, a, b, 1.0, seed=3),
                                  phy.aircomp_estimate(s, H, a, b, 1.0, seed=3))


def test_channel_uses_counts_two_reals_per_symbol():
    assert [phy.aircomp_channel_uses(n) for n in (1, 2, 3, 1000)] == [1, 1, 2, 500]


def test_channel_uses_count_every_resource_element_and_the_side_information():
    """Hand counts. OFDM, L = 100 reals over F = 8 subcarriers: 13 reals per subcarrier -> 7 symbols each ->
    56 resource elements (the former count, ceil(L/2) = 50, missed the padding). Side information, K = 4
    devices x (mean, std) x 32 bits at 1 bit per use: 4 x 64 = 256; per subcarrier (2F = 16 reals per
    device): 4 x 512 = 2048. Flat, L = 1000, K = 3: 500 + 3 x 64; 16-bit statistics at 4 bits per use: 3 x 8."""
    assert phy.aircomp_channel_uses(100, num_subcarriers=8) == 56
    assert phy.aircomp_channel_uses(100, num_devices=4, num_subcarriers=8) == 56 + 256
    assert phy.aircomp_channel_uses(100, num_devices=4, num_subcarriers=8, stats_per_subcarrier=True) == 56 + 2048
    assert phy.aircomp_channel_uses(1000, num_devices=3) == 500 + 192
    assert phy.aircomp_channel_uses(1000, num_devices=3, side_info_bits=16, side_info_bits_per_use=4.0) == 500 + 24
    with pytest.raises(ValueError, match="`num_subcarriers` must be an integer >= 1"):
        phy.aircomp_channel_uses(10, num_subcarriers=0)
    with pytest.raises(ValueError, match="`side_info_bits_per_use` must be > 0"):
        phy.aircomp_channel_uses(10, num_devices=2, side_info_bits_per_use=0)


@pytest.mark.parametrize("dtype", [tf.complex64, tf.complex128])
def test_empirical_mse_is_unbiased_in_both_precisions(crandn, rng, dtype):
    """`empirical_mse` against `aircomp_mse`: 40 random designs (N = 3, K = 5, noise 0.3), L = 20,000 symbols
    each (library seed 1234). |e|^2 is exponential, so each estimate has relative std 1/sqrt(L) = 0.7%:
    tolerance 4% per design, 0.5% on the mean ratio (4.5 standard errors)."""
    H, a, b = (tf.constant(crandn(rng, 40, *s), dtype) for s in ((3, 5), (3,), (5,)))
    got = phy.empirical_mse(H, a, b, 0.3, 20_000)
    assert got.dtype == dtype.real_dtype and got.shape == (40,)
    expected = phy.aircomp_mse(H, a, b, 0.3).numpy()
    np.testing.assert_allclose(got.numpy(), expected, rtol=0.04)
    assert np.mean(got.numpy() / expected) == pytest.approx(1.0, abs=0.005)
    assert phy.complex_normal([3], dtype).dtype == dtype


def test_mse_with_payload_covariance_matches_monte_carlo(crandn, rng):
    """Correlated payloads s = L w (w ~ CN(0, I), C = L L^H with correlation 0.6 between all devices):
    E|f_hat - f|^2 = d^T C d^* + sigma^2 ||a||^2, d_k = a^H h_k b_k - 1. Seed 1234, 2e5 symbols (relative std
    of the estimate 0.22%), tolerance 2%. The independent-payload formula is off here by more than 10%."""
    n, k, length = 4, 5, 200_000
    H, a, b = crandn(rng, n, k), crandn(rng, n), crandn(rng, k)
    C = 0.4 * np.eye(k) + 0.6
    s = np.linalg.cholesky(C) @ crandn(rng, k, length)
    f_hat = phy.aircomp_estimate(s, H, a, b, 0.3, seed=7)
    empirical = np.mean(np.abs(f_hat - s.sum(axis=0)) ** 2)
    assert empirical == pytest.approx(phy.aircomp_mse(H, a, b, 0.3, payload_cov=C), rel=0.02)
    assert abs(empirical / phy.aircomp_mse(H, a, b, 0.3) - 1) > 0.1
    np.testing.assert_allclose(phy.aircomp_mse(H, a, b, 0.3, payload_cov=np.eye(k)), phy.aircomp_mse(H, a, b, 0.3),
                               rtol=1e-12)
    d = np.conj(a) @ H * b - 1                         # identical payloads: C = 1 1^T gives |sum_k d_k|^2
    np.testing.assert_allclose(phy.aircomp_mse(H, a, b, 0.3, payload_cov=np.ones((k, k))),
                               abs(d.sum()) ** 2 + 0.3 * np.vdot(a, a).real, rtol=1e-12)
    with pytest.raises(ValueError, match=r"`payload_cov` must have K \(columns of H\) = 5"):
        phy.aircomp_mse(H, a, b, 0.3, payload_cov=np.eye(4))


@pytest.mark.parametrize("kwargs, match", [
    (dict(b=np.ones(4)), r"`b` must have K \(columns of H\) = 3"),
    (dict(a=np.ones(5)), r"`a` must have N \(rows of H\) = 2"),
    (dict(noise_var=-1.0), r"`noise_var` must be non-negative"),
    (dict(H=np.full((2, 3), np.nan)), r"`H` contains non-finite"),
    (dict(H=np.ones((2, 0))), r"K >= 1"),
    (dict(H=np.ones(3)), r"`H` must have at least 2 dimensions"),
    (dict(noise_var=np.ones((2, 2))), r"`noise_var` must be a scalar"),
])
def test_bad_designs_raise_naming_the_argument(kwargs, match):
    args = dict(H=np.ones((2, 3)), a=np.ones(2), b=np.ones(3), noise_var=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        phy.aircomp_mse(**args)


def test_estimate_rejects_payload_with_wrong_device_count():
    with pytest.raises(ValueError, match=r"`s` must have K"):
        phy.aircomp_estimate(np.ones((4, 7)), np.ones((2, 3)), np.ones(2), np.ones(3), 0.1)


@pytest.mark.parametrize("dtype, atol", [(np.complex64, 1e-5), (np.complex128, 1e-12)])
def test_mse_and_gains_keep_the_input_precision(crandn, rng, dtype, atol):
    """`aircomp_mse` and `effective_gains` in single and double precision: complex64 in gives float32 / complex64
    out, complex128 gives float64 / complex128, and both equal the double-precision NumPy formula
    sum_k |a^H h_k b_k - 1|^2 + sigma^2 ||a||^2 within the precision's rounding (atol 1e-5 / 1e-12, seed 1234)."""
    H, a, b = (crandn(rng, 4, *s).astype(dtype) for s in ((3, 5), (3,), (5,)))
    H64, a64, b64 = (x.astype(np.complex128) for x in (H, a, b))
    g = np.einsum("bn,bnk->bk", a64.conj(), H64)
    mse = phy.aircomp_mse(H, a, b, 0.2)
    assert mse.dtype == np.finfo(dtype).dtype
    np.testing.assert_allclose(mse, np.sum(np.abs(g * b64 - 1) ** 2, -1) + 0.2 * np.sum(np.abs(a64) ** 2, -1),
                               atol=10 * atol)
    gains = phy.effective_gains(tf.constant(H), tf.constant(a))
    assert gains.dtype == tf.as_dtype(dtype)
    np.testing.assert_allclose(gains.numpy(), g, atol=atol)
