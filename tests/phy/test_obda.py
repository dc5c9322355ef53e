"""One-bit over-the-air aggregation (OBDA): the majority vote, its error law Q(|S| / (sigma ||a||)), truncation,
energy and channel uses."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import norm

import deft6g.phy as phy
from deft6g.optim import truncated_inversion


def _mrc_gains(H):
    """Independent NumPy re-derivation of the effective gains u^H h_k, u the normalised MRC direction."""
    u = np.sum(H / np.linalg.norm(H, axis=0), axis=1)
    return (u / np.linalg.norm(u)).conj() @ H


def test_noiseless_vote_is_the_majority_of_the_heard_devices(crandn, rng):
    """Noise-free, truncated inversion on a Rayleigh draw (N = 4, K = 7): the devices with |u^H h_k|^2 below the
    threshold are silent (b_k = 0, no energy), the rest arrive aligned (a^H h_k b_k = 1, |b_k|^2 <= P = 1), the
    received sum is exactly the sum of the heard devices' signs (double precision, 1e-9) and the vote its sign.
    The threshold sits between the 2nd and 3rd weakest gains, so 5 devices vote (odd: no ties)."""
    n, k, length = 4, 7, 1000
    H = crandn(rng, n, k)
    gain = np.abs(_mrc_gains(H)) ** 2
    threshold = float(np.mean(np.sort(gain)[1:3]))
    heard = gain >= threshold
    d = truncated_inversion(H, 1.0, 0.0, threshold)
    updates = rng.normal(size=(k, length))
    res = phy.OBDAUplink(precision="double")(updates, H, d.a, d.b, 0.0, seed=1)

    assert heard.sum() == 5
    np.testing.assert_array_equal(res.transmitted.numpy(), heard)
    np.testing.assert_array_equal(d.b[~heard], 0.0)
    np.testing.assert_allclose((d.a.conj() @ H * d.b)[heard], 1.0, atol=1e-12)
    assert np.all(np.abs(d.b) ** 2 <= 1.0 + 1e-12)
    total = np.sign(updates[heard]).sum(0)
    np.testing.assert_allclose(res.received.numpy(), total, atol=1e-9)
    np.testing.assert_array_equal(res.vote.numpy(), np.sign(total))
    np.testing.assert_allclose(res.energy.numpy(), np.abs(d.b) ** 2 * length / 2, rtol=1e-12)


def test_tie_rule_zero_signs_and_energy_on_an_exactly_aligned_channel():
    """h = 1, a = 1, b = 1 (exact arithmetic): an even split votes 0, so does an entry nobody sends (sign(0) = 0);
    energy = |b_k|^2 x (non-zero signs) / 2."""
    updates = np.array([[2.0, -0.5, 0.0, 3.0],
                        [-1.0, -2.0, 0.0, 0.0]])
    res = phy.OBDAUplink(precision="double")(updates, np.ones((1, 2)), np.ones(1), np.ones(2), 0.0)
    np.testing.assert_array_equal(res.vote.numpy(), [0.0, -1.0, 0.0, 1.0])
    np.testing.assert_allclose(res.energy.numpy(), [1.5, 1.0])
    np.testing.assert_array_equal(res.transmitted.numpy(), [True, True])


@pytest.mark.parametrize("length", [1, 7, 8])
def test_channel_uses_are_ceil_half_the_entries(length):
    """ceil(L/2) channel uses per round, every device's energy at most P ceil(L/2) (L/2 when all signs are sent)."""
    res = phy.OBDAUplink()(np.ones((3, length)), np.ones((2, 3)), np.full(2, 0.5), np.ones(3), 0.1, seed=0)
    assert res.channel_uses == int(np.ceil(length / 2)) == phy.aircomp_channel_uses(length)
    np.testing.assert_allclose(res.energy.numpy(), length / 2)


def test_sign_error_probability_matches_q_of_sum_over_noise_std(crandn, rng):
    """Fixed signs with sum S per entry (|S| = 1, 3, 5 of K = 5 aligned devices, both signs of S), N = 2,
    truncated inversion at threshold 0 (everyone heard), noise such that sigma ||a|| = 1.5. Theory (module
    docstring): r = S + z, z ~ N(0, sigma^2 ||a||^2), P(vote != sign S) = Q(|S| / (sigma ||a||)) = 0.2525,
    0.0228, 4.3e-4. Seed 7, 60,000 entries per |S|; tolerance 4 binomial standard deviations."""
    n, k, per_s, sigma_eff = 2, 5, 60_000, 1.5
    H = crandn(rng, n, k)
    d = truncated_inversion(H, 1.0, 0.0, 0.0)
    noise_var = sigma_eff ** 2 / np.sum(np.abs(d.a) ** 2)
    blocks, sums = [], []
    for s_abs in (1, 3, 5):
        plus = (k + s_abs) // 2                                 # `plus` devices +1, the others -1: sum s_abs
        col = np.array([1.0] * plus + [-1.0] * (k - plus))
        flip = rng.choice([-1.0, 1.0], size=per_s)
        blocks.append(col[:, None] * flip)
        sums.append(s_abs * flip)
    updates, total = np.concatenate(blocks, axis=1), np.concatenate(sums)
    res = phy.OBDAUplink(precision="double")(updates, H, d.a, d.b, noise_var, seed=7)
    wrong = res.vote.numpy() != np.sign(total)
    for i, s_abs in enumerate((1, 3, 5)):
        p = norm.sf(s_abs / sigma_eff)
        p_hat = wrong[i * per_s:(i + 1) * per_s].mean()
        assert abs(p_hat - p) <= 4 * np.sqrt(p * (1 - p) / per_s), (s_abs, p_hat, p)
    z = res.received.numpy() - total                            # the noise itself: N(0, sigma_eff^2)
    assert np.std(z) == pytest.approx(sigma_eff, rel=0.01)


@pytest.mark.parametrize("precision, rdtype", [("single", tf.float32), ("double", tf.float64)])
def test_shapes_dtypes_batching_and_graph_mode(crandn, rng, precision, rdtype):
    """H [B, N, K] with updates [K, L] broadcasts to B votes; the same seed gives the same vote, eager and in a
    tf.function."""
    b_, n, k, length = 3, 2, 4, 9
    H = crandn(rng, b_, n, k)
    d = truncated_inversion(H, 1.0, 0.1, 0.2)
    updates = rng.normal(size=(k, length))
    uplink = phy.OBDAUplink(precision=precision)
    res = uplink(updates, H, d.a, d.b, 0.1, seed=3)
    assert res.vote.shape == res.received.shape == (b_, length) and res.vote.dtype == rdtype
    assert res.transmitted.shape == res.energy.shape == (b_, k) and res.energy.dtype == rdtype
    assert set(np.unique(res.vote.numpy())) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(uplink(updates, H, d.a, d.b, 0.1, seed=3).vote.numpy(), res.vote.numpy())

    @tf.function
    def graph(x):
        out = uplink(x, H, d.a, d.b, 0.1, seed=3)
        return out.vote, out.energy
    vote, energy = graph(tf.constant(updates, rdtype))
    np.testing.assert_array_equal(vote.numpy(), res.vote.numpy())
    np.testing.assert_allclose(energy.numpy(), res.energy.numpy())


def test_bad_input_names_the_argument():
    H, a, b = np.ones((2, 3)), np.ones(2), np.ones(3)
    uplink = phy.OBDAUplink()
    with pytest.raises(ValueError, match="`updates` contains non-finite"):
        uplink(np.array([[1.0, np.nan]] * 3), H, a, b, 0.1)
    with pytest.raises(ValueError, match="`updates` must have K"):
        uplink(np.ones((4, 5)), H, a, b, 0.1)
    with pytest.raises(ValueError, match="`updates` must have L >= 1"):
        uplink(np.ones((3, 0)), H, a, b, 0.1)
    with pytest.raises(ValueError, match="`b` must have K"):
        uplink(np.ones((3, 5)), H, a, np.ones(2), 0.1)
    with pytest.raises(ValueError, match="`noise_var` must be non-negative"):
        uplink(np.ones((3, 5)), H, a, b, -0.1)
