"""Quantiser: unbiased stochastic rounding, nearest rounding, per-block ranges, side information, error feedback."""

import numpy as np
import pytest
import tensorflow as tf

import deft6g.phy as phy
from deft6g.rng import reseed, tf_rng


def numpy_quantize(x, num_bits, uniform=None):
    """Independent re-derivation of the whole-payload quantiser in float32: ints = round((x - lo) / span
    (2^q - 1)) (half to even, as tf.round), or floor(. + U) for stochastic rounding; q bits MSB first."""
    x = np.asarray(x, np.float32)
    levels = np.float32(2 ** num_bits - 1)
    lo, hi = x.min(-1), x.max(-1)
    span = np.maximum(hi - lo, np.float32(1e-30))[..., None]
    u = (x - lo[..., None]) / span * levels
    u = np.round(u) if uniform is None else np.floor(u + uniform)
    ints = np.clip(u, 0, levels).astype(np.int64)
    bits = (ints[..., None] >> np.arange(num_bits - 1, -1, -1)) & 1
    return bits.reshape(*x.shape[:-1], -1), lo, hi


@pytest.mark.parametrize("num_bits", [1, 2, 4, 8])
def test_stochastic_rounding_is_unbiased_with_bernoulli_variance(num_bits):
    """x = lo + (n + p) Delta: Q(x) = x + Delta (B - p), B ~ Bernoulli(p), so E = x and Var = Delta^2 p (1 - p).
    1e5 draws per entry (seed 1234). Mean: within 3 standard errors per entry. Variance: the mean square about
    the known x within 4 of its standard errors sqrt((mu4 - sigma^4) / n), mu4 = Delta^4 p (1-p) (1 - 3p + 3p^2)
    (normal approximation, 6 interior entries x 4 bit widths; at p = 1/2 every draw gives exactly Delta^2 / 4)."""
    n = 100_000
    delta = 1.0 / (2 ** num_bits - 1)
    p = np.array([0.05, 0.25, 0.5, 0.7, 0.9, 0.97])
    cells = np.minimum(np.arange(len(p)) * 7, 2 ** num_bits - 2)
    x = np.concatenate([[0.0, 1.0], (cells + p) * delta]).astype(np.float32)    # range pinned to [0, 1]
    qz = phy.Quantizer(num_bits, stochastic=True)
    x_hat = qz.dequantize(*qz.quantize(np.tile(x, (n, 1)))).numpy().astype(np.float64)
    np.testing.assert_array_equal(x_hat[:, :2], np.tile([0.0, 1.0], (n, 1)))   # grid points are exact
    frac = (x[2:].astype(np.float64) / delta) % 1.0                             # p of the float32 payload
    var = delta ** 2 * frac * (1 - frac)
    mean, m2 = x_hat[:, 2:].mean(0), np.mean((x_hat[:, 2:] - x[2:]) ** 2, axis=0)
    assert np.all(np.abs(mean - x[2:]) <= 3 * np.sqrt(var / n)), (mean - x[2:]) / np.sqrt(var / n)
    mu4 = delta ** 4 * frac * (1 - frac) * (1 - 3 * frac + 3 * frac ** 2)
    assert np.all(np.abs(m2 - var) <= 4 * np.sqrt((mu4 - var ** 2) / n) + 1e-6 * var), m2 / var


@pytest.mark.parametrize("num_bits", [1, 2, 4])
def test_nearest_rounding_picks_the_nearest_level(rng, num_bits):
    """Brute force: x_hat is the closest of the 2^q levels lo + j Delta (float64 argmin), |error| <= Delta / 2."""
    x = rng.normal(size=(20, 300)).astype(np.float32)
    qz = phy.Quantizer(num_bits)
    bits, lo, hi = qz.quantize(x)
    x_hat = qz.dequantize(bits, lo, hi).numpy()
    lo, hi = lo.numpy().astype(np.float64)[:, None], hi.numpy().astype(np.float64)[:, None]
    delta = (hi - lo) / (2 ** num_bits - 1)
    grid = lo[..., None] + delta[..., None] * np.arange(2 ** num_bits)                 # [20, 1, 2^q]
    nearest = np.take_along_axis(grid, np.abs(grid - x[..., None]).argmin(-1)[..., None], -1)[..., 0]
    np.testing.assert_allclose(x_hat, nearest, atol=1e-6)
    assert np.all(np.abs(x_hat - x) <= delta / 2 * (1 + 1e-5) + 1e-7)


def test_nearest_rounding_error_within_half_step_at_16_bits(rng):
    """q = 16 (the maximum): Delta = span / 65535, |error| <= Delta / 2 up to float32 rounding (2e-7 of the span)."""
    x = rng.uniform(-3, 5, size=(4, 5000)).astype(np.float32)
    qz = phy.Quantizer(16)
    bits, lo, hi = qz.quantize(x)
    err = np.abs(qz.dequantize(bits, lo, hi).numpy() - x)
    span = (hi - lo).numpy()[:, None]
    assert np.all(err <= span / 65535 / 2 + 2e-7 * span)


def test_default_block_size_reproduces_the_whole_payload_quantiser_bit_for_bit(rng):
    """block_size None: the bits, lo and hi equal the NumPy re-derivation exactly, for nearest rounding and for
    stochastic rounding given the same uniforms (the library RNG re-seeded to 7, one draw of x's shape)."""
    x = (rng.normal(size=(3, 5, 257)) * np.array([1e-4, 1.0, 30.0])[:, None, None]).astype(np.float32)
    x[0, 0] = 2.5                                                                     # a constant payload
    for stochastic in (False, True):
        reseed(7)
        uniform = tf_rng().uniform(x.shape, dtype=tf.float32).numpy() if stochastic else None
        reseed(7)
        bits, lo, hi = phy.Quantizer(4, stochastic=stochastic).quantize(x)
        ref_bits, ref_lo, ref_hi = numpy_quantize(x, 4, uniform)
        assert bits.shape == (3, 5, 257 * 4) and lo.shape == hi.shape == (3, 5)
        np.testing.assert_array_equal(bits.numpy(), ref_bits)
        np.testing.assert_array_equal(lo.numpy(), ref_lo)
        np.testing.assert_array_equal(hi.numpy(), ref_hi)
    one_block = phy.Quantizer(4, block_size=257).quantize(x)                # b >= L: one block, lo [3, 5, 1]
    np.testing.assert_array_equal(one_block[0].numpy(), numpy_quantize(x, 4)[0])
    np.testing.assert_array_equal(one_block[1].numpy()[..., 0], ref_lo)


@pytest.mark.parametrize("stochastic", [False, True])
def test_per_block_ranges_each_block_within_its_own_step(rng, stochastic):
    """L = 1000 in blocks of 64 (C = 16, the last of 40 reals), block c scaled by 10^(c mod 4 - 2): lo, hi are
    each block's min and max; each entry's error is at most Delta_c / 2 (nearest) or below Delta_c (stochastic);
    with nearest rounding the bits equal the whole-payload quantiser applied to each block on its own."""
    num_reals, size, q = 1000, 64, 4
    scale = np.repeat(10.0 ** (np.arange(16) % 4 - 2), size)[:num_reals]
    x = (rng.normal(size=(2, num_reals)) * scale).astype(np.float32)
    qz = phy.Quantizer(q, stochastic=stochastic, block_size=size)
    bits, lo, hi = qz.quantize(x)
    assert bits.shape == (2, num_reals * q) and lo.shape == hi.shape == (2, 16)
    starts = np.arange(0, num_reals, size)
    np.testing.assert_array_equal(lo.numpy(), np.minimum.reduceat(x, starts, axis=-1))
    np.testing.assert_array_equal(hi.numpy(), np.maximum.reduceat(x, starts, axis=-1))
    delta = np.repeat(((hi - lo).numpy() / (2 ** q - 1)), size, axis=-1)[:, :num_reals]
    err = np.abs(qz.dequantize(bits, lo, hi).numpy() - x)
    bound = delta * (1 + 1e-5) if stochastic else delta / 2 * (1 + 1e-5)
    assert np.all(err <= bound)
    if not stochastic:
        per_block = np.concatenate([phy.Quantizer(q).quantize(x[:, s:s + size])[0].numpy() for s in starts], -1)
        np.testing.assert_array_equal(bits.numpy(), per_block)
    assert qz.num_blocks(num_reals) == 16 and qz.side_info_bits(num_reals) == 16 * 64
    assert phy.Quantizer(q).side_info_bits(num_reals) == 64


def test_blocks_under_tf_function_and_double_precision(rng):
    """Graph mode gives the eager bits; precision="double" keeps float64 ranges and bits."""
    x = rng.normal(size=(3, 100))
    qz = phy.Quantizer(8, block_size=30, precision="double")
    bits, lo, hi = qz.quantize(x)
    assert bits.dtype == lo.dtype == hi.dtype == tf.float64 and lo.shape == (3, 4)
    graph = tf.function(qz.quantize)(tf.constant(x))
    np.testing.assert_array_equal(graph[0].numpy(), bits.numpy())
    x_hat = tf.function(qz.dequantize)(bits, lo, hi).numpy()
    assert np.all(np.abs(x_hat - x) <= np.repeat((hi - lo).numpy() / 255 / 2, 30, -1)[:, :100] * (1 + 1e-9))


@pytest.mark.parametrize("stochastic", [False, True])
def test_error_feedback_residual_and_bounded_accumulated_error(rng, stochastic):
    """K = 3 devices, L = 50, T = 20 rounds, q = 2. Each round the residual equals (u + e) - Q(u + e); summed over
    the rounds sum Q - sum u = -e_T, so |sum Q - sum u| <= Delta_max / 2 per entry (nearest) or < Delta_max
    (stochastic), Delta_max the largest step a device used. Without feedback the stochastic quantiser's errors add
    up (std ~ Delta sqrt(T / 6)) and break the Delta_max / 2 bound (seed 1234)."""
    k, num_reals, rounds, q = 3, 50, 20, 2
    qz = phy.Quantizer(q, stochastic=stochastic)
    ef = phy.ErrorFeedback(qz)
    sum_u, sum_q, sum_plain, delta_max = (np.zeros((k, num_reals)) for _ in range(4))
    for _ in range(rounds):
        u = rng.normal(size=(k, num_reals)).astype(np.float32)
        e = np.zeros_like(u) if ef.residual is None else ef.residual.numpy()
        bits, lo, hi = ef.quantize(u)
        sent = qz.dequantize(bits, lo, hi).numpy()
        np.testing.assert_array_equal(ef.residual.numpy(), (u + e) - sent)
        delta_max = np.maximum(delta_max, ((hi - lo).numpy() / (2 ** q - 1))[:, None])
        sum_u, sum_q = sum_u + u, sum_q + sent
        sum_plain = sum_plain + qz.dequantize(*qz.quantize(u)).numpy()
    np.testing.assert_allclose(sum_q - sum_u, -ef.residual.numpy(), atol=1e-4)
    bound = delta_max if stochastic else delta_max / 2
    assert np.all(np.abs(sum_q - sum_u) <= bound * (1 + 1e-5))
    if stochastic:
        assert np.any(np.abs(sum_plain - sum_u) > delta_max / 2)
    ef.reset()
    assert ef.residual is None
    u = rng.normal(size=(k, num_reals)).astype(np.float32)
    if not stochastic:
        np.testing.assert_array_equal(ef.quantize(u)[0].numpy(), qz.quantize(u)[0].numpy())


def test_bad_input_names_the_argument():
    for bad in (0, 17, 2.0, True):
        with pytest.raises(ValueError, match="`num_bits`"):
            phy.Quantizer(bad)
    assert phy.Quantizer(16).num_bits == 16
    for bad in (0, -4, 3.5):
        with pytest.raises(ValueError, match="`block_size`"):
            phy.Quantizer(8, block_size=bad)
    for bad in ([1.0, np.inf], [[0.0, np.nan, 1.0]], [-np.inf, 2.0]):
        with pytest.raises(ValueError, match="`x`"):
            phy.Quantizer(8).quantize(bad)
    with pytest.raises(ValueError, match="`num_reals`"):
        phy.Quantizer(8, block_size=4).side_info_bits(0)
    with pytest.raises(TypeError, match="`quantizer`"):
        phy.ErrorFeedback(8)
    ef = phy.ErrorFeedback(phy.Quantizer(4))
    with pytest.raises(ValueError, match="`u`"):
        ef.quantize(np.zeros(5))
    ef.quantize(np.ones((2, 5)))
    with pytest.raises(ValueError, match="`u`.*reset"):
        ef.quantize(np.ones((3, 5)))
    with pytest.raises(ValueError, match="`u`"):
        ef.quantize([[1.0, np.nan]])
