"""Digital baseline: quantiser, uncoded BER against QAM theory, LDPC at high SNR, the uplink and D2D link."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import erfc

import deft6g.phy as phy


def q_function(x):
    return 0.5 * erfc(x / np.sqrt(2))


def ber_theory(m, es_no):
    """Gray QAM over AWGN: QPSK Q(sqrt(Es/N0)); 16-QAM (3Q(a) + 2Q(3a) - Q(5a)) / 4 with a = sqrt(Es / (5 N0))."""
    if m == 2:
        return q_function(np.sqrt(es_no))
    a = np.sqrt(es_no / 5)
    return (3 * q_function(a) + 2 * q_function(3 * a) - q_function(5 * a)) / 4


def test_quantizer_error_variance_and_unbiased_stochastic_rounding(rng):
    x = tf.constant(rng.uniform(0, 1, size=(4, 50_000)), tf.float32)
    for stochastic in (False, True):
        qz = phy.Quantizer(4, stochastic=stochastic)
        x_hat = qz.dequantize(*qz.quantize(x))
        err = (x_hat - x).numpy()
        delta = 1 / 15
        if stochastic:   # E[error] = 0, Var = E[f(1-f)] delta^2 = delta^2 / 6 for uniform fractions f
            assert abs(err.mean()) < 1e-3
            assert np.mean(err ** 2) == pytest.approx(delta ** 2 / 6, rel=0.05)
        else:
            assert np.abs(err).max() <= delta / 2 + 1e-6
            assert np.mean(err ** 2) == pytest.approx(delta ** 2 / 12, rel=0.05)


@pytest.mark.parametrize("m, snr_db", [(2, 0.0), (2, 6.0), (4, 6.0), (4, 12.0)])
def test_uncoded_ber_matches_qam_theory(rng, m, snr_db):
    """AWGN (h = 1, N = 1), 1.6e6 bits, seed 21; uniform payloads give i.i.d. uniform bits; tolerance 6%."""
    link = phy.DigitalLink(num_bits=8, num_bits_per_symbol=m, code_rate=None, codeword_length=1200)
    x = rng.integers(0, 256, size=(80, 2500)).astype(np.float32)
    x[:, 0], x[:, 1] = 0, 255                                   # pin each payload's range to the 8-bit grid
    res = link(x, tf.ones([80, 1], tf.complex64), 10 ** (-snr_db / 10), 1.0)
    assert res.ber == pytest.approx(ber_theory(m, 10 ** (snr_db / 10)), rel=0.06)


def test_ldpc_error_free_at_high_snr(rng):
    link = phy.DigitalLink(num_bits=8, num_bits_per_symbol=4, code_rate=0.5)
    x = rng.normal(size=(20, 600)).astype(np.float32)
    res = link(x, tf.ones([20, 1], tf.complex64), 10 ** (-12 / 10), 1.0)
    assert res.bit_errors == 0 and res.block_errors == 0 and res.blocks == 20 * 8
    # 600 reals x 8 bits = 4800 info bits = 8 codewords of k = 600, 300 16-QAM symbols each
    assert res.channel_uses == link.channel_uses(600) == 8 * 300


def test_ldpc_beats_uncoded_at_same_snr(rng):
    x = rng.normal(size=(20, 600)).astype(np.float32)
    h = tf.ones([20, 1], tf.complex64)
    coded = phy.DigitalLink(num_bits_per_symbol=2, code_rate=0.5)(x, h, 10 ** (-2 / 10))
    uncoded = phy.DigitalLink(num_bits_per_symbol=2, code_rate=None)(x, h, 10 ** (-2 / 10))
    assert coded.ber < 1e-3 < 0.01 < uncoded.ber


def test_uplink_sums_and_counts_orthogonal_channel_uses(rng):
    x = rng.normal(size=(3, 4, 300)).astype(np.float32)
    H = phy.UplinkChannel("rayleigh", 4, 4)(3, seed=3)
    up = phy.DigitalUplink(num_bits=10, num_bits_per_symbol=2, code_rate=0.5)
    res = up(x, H, 1e-3)
    assert res.ber == 0.0
    np.testing.assert_allclose(res.f_hat.numpy(), x.sum(1), atol=4 * 4 * (x.max() - x.min()) / 1023)
    assert res.channel_uses == up.channel_uses(4, 300) == 4 * 5 * 600  # 3000 bits -> 5 codewords of 600 QPSK symbols


@pytest.mark.parametrize("access", ["tdma", "ofdma"])
def test_uplink_over_ofdm_channel(rng, access):
    x = rng.normal(size=(2, 4, 200)).astype(np.float32)
    H = phy.UplinkChannel("tdl-b", 2, 4, num_subcarriers=16)(2, seed=4)
    res = phy.DigitalUplink(access=access, num_bits_per_symbol=2)(x, H, 1e-3)
    assert res.ber == 0.0 and res.x_hat.shape == (2, 4, 200)


def test_d2d_link_delivers_prompt_at_high_snr(rng):
    prompt = rng.normal(size=(4, 384)).astype(np.float32)
    res = phy.D2DLink("rayleigh", num_rx_ant=4, num_bits_per_symbol=2)(prompt, 1e-3, seed=9)
    assert res.ber == 0.0
    assert np.max(np.abs(res.x_hat.numpy() - prompt)) <= (prompt.max(1) - prompt.min(1)).max() / 255


def test_digital_errors():
    with pytest.raises(ValueError, match="`code_rate` must lie in"):
        phy.DigitalLink(code_rate=1.5)
    with pytest.raises(ValueError, match="`codeword_length` must be a multiple"):
        phy.DigitalLink(num_bits_per_symbol=4, codeword_length=1202)
    with pytest.raises(ValueError, match="`access` must be one of"):
        phy.DigitalUplink(access="cdma")
    with pytest.raises(ValueError, match="`noise_var` must be non-negative"):
        phy.DigitalLink()(np.ones((1, 8)), np.ones((1, 1), complex), -1.0)
    with pytest.raises(ValueError, match="`H` must have K"):
        phy.DigitalUplink()(np.ones((1, 3, 8)), np.ones((1, 2, 2), complex), 0.1)
