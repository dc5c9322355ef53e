"""PromptLink: a quantised prompt crosses a D2D link bit-exactly when the channel is clean; its bit errors, block
errors, retransmissions and analog noise match an independent NumPy count or a closed form."""

import numpy as np
import pytest

from deft6g.phy import PromptLink


def np_quantise(x, q):
    """NumPy re-derivation of the uniform quantiser over each row's [min, max]: (ints, lo, hi, step)."""
    lo, hi = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    step = (hi - lo) / (2 ** q - 1)
    return np.round((x - lo) / step).astype(np.int64), lo, hi, step


def popcount(a):
    return np.unpackbits(a.astype(">u4").view(np.uint8)).sum()


@pytest.mark.parametrize("q", [1, 3, 8])
def test_clean_link_delivers_the_quantised_prompt(q, rng):
    """At 60 dB SNR nothing fails: x_hat is the NumPy-quantised prompt (to float32 rounding, 1e-6 of the
    range), |x_hat - x| <= step/2, no bit or block errors, and the channel uses are ceil(Lq/k_info) n/m."""
    x = rng.normal(0, 0.05, (3, 8, 24)).reshape(3, -1).astype(np.float32)       # 3 prompts of 8 x 24
    link = PromptLink(num_bits=q, codeword_length=600, code_rate=0.5, num_bits_per_symbol=2)
    res = link(x, noise_var=1e-6, power=1.0, seed=1)
    ints, lo, hi, step = np_quantise(x.astype(np.float64), q)
    expected = lo + ints * step
    x_hat = res.x_hat.numpy()
    assert np.allclose(x_hat, expected, atol=1e-6 * float((hi - lo).max()))
    assert np.all(np.abs(x_hat - x) <= step / 2 + 1e-6 * (hi - lo))
    assert (res.bit_errors, res.block_errors, res.dropped_blocks, res.dropped_reals) == (0, 0, 0, 0)
    assert res.payload_bits == 192 * q and res.bits == 3 * 192 * q
    blocks = int(np.ceil(192 * q / (300 - 24)))
    assert res.blocks == 3 * blocks and res.transmissions == 3 * blocks
    assert np.all(res.channel_uses == blocks * 300) and link.channel_uses(192) == blocks * 300


def test_noisy_bit_errors_match_reported_ber_and_rayleigh_theory(rng):
    """Uncoded QPSK, one send, decoded bits kept: bit errors counted from x_hat alone (re-quantised, XOR,
    popcount) equal the link's count, and the BER matches the Rayleigh-fading QPSK closed form
    P_b = (1 - sqrt(g / (1 + g))) / 2 with g = E_b/N_0 = P / (2 sigma^2) = 5 (10 dB SNR): 2,000 prompts, one
    channel each, seed 7, tolerance 10 % (the channel draws dominate: relative standard error about 4 %)."""
    x = rng.normal(size=(2000, 64)).astype(np.float32)
    link = PromptLink(num_bits=8, code_rate=None, codeword_length=536, num_bits_per_symbol=2, max_transmissions=1,
                      on_failure="keep")
    res = link(x, noise_var=0.1, power=1.0, seed=7)
    ints, lo, _, step = np_quantise(x.astype(np.float64), 8)
    got = np.round((res.x_hat.numpy() - lo) / step).astype(np.int64)
    assert popcount(got ^ ints) == res.bit_errors
    assert res.bits == 2000 * 512 and res.ber == res.bit_errors / res.bits
    g = 1.0 / (2 * 0.1)
    assert res.ber == pytest.approx(0.5 * (1 - np.sqrt(g / (1 + g))), rel=0.10)
    assert res.bler > res.ber          # a 536-bit block fails when any of its bits does


def test_retransmissions_and_drops_are_counted(rng):
    """LDPC rate 1/2, 16-QAM at 8 dB over Rayleigh with up to 3 sends: every block either succeeded once or was
    dropped, so transmissions = (blocks - dropped) + CRC failures, and channel uses add up per send; dropped
    entries equal `fill` and delivered ones are within step/2 of x (the CRC lets no error through)."""
    x = rng.normal(size=(60, 400)).astype(np.float32)
    fill = np.full(x.shape, 123.0, np.float32)
    link = PromptLink(num_bits=8, num_bits_per_symbol=4, code_rate=0.5, codeword_length=1200, max_transmissions=3)
    res = link(x, noise_var=10 ** (-0.8), power=1.0, seed=3, fill=fill)
    assert 0 < res.dropped_blocks < res.blocks and res.block_errors > 0
    assert res.transmissions == res.blocks - res.dropped_blocks + res.block_errors
    assert res.channel_uses.sum() == res.transmissions * 300
    x_hat = res.x_hat.numpy()
    lost = x_hat == 123.0
    assert lost.sum() == res.dropped_reals > 0
    _, _, _, step = np_quantise(x.astype(np.float64), 8)
    assert np.all((np.abs(x_hat - x) <= step / 2 + 1e-5)[~lost])
    assert res.bit_errors == 0 and res.bits == res.payload_bits * 60 - 8 * res.dropped_reals


def test_analog_noise_matches_mrc_closed_form(rng):
    """Analog, N = 4 Rayleigh antennas, sigma^2 / P = 0.01: the error of each standardised real has variance
    sigma^2 / (P ||h||^2) and E[1 / ||h||^2] = 1 / (N - 1) (inverse Gamma(N, 1)), so the mean squared error over
    4,000 prompts is 0.01 / 3 (seed 5, tolerance 5 %; relative standard error about 1 %). A noise-free link
    returns the prompt to float32 rounding; channel uses are ceil(L / 2)."""
    x = rng.normal(0.3, 2.0, (4000, 33)).astype(np.float32)
    link = PromptLink(mode="analog", num_rx_ant=4)
    clean = link(x, noise_var=0.0, seed=5)
    assert np.allclose(clean.x_hat.numpy(), x, atol=1e-4)
    assert np.all(clean.channel_uses == 17) and np.isnan(clean.ber)
    res = link(x, noise_var=0.01, power=1.0, seed=5)
    z_err = (res.x_hat.numpy() - x) / x.std(axis=1, keepdims=True)
    assert np.mean(z_err ** 2) == pytest.approx(0.01 / 3, rel=0.05)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`mode`"):
        PromptLink(mode="semaphore")
    with pytest.raises(ValueError, match="`on_failure`"):
        PromptLink(on_failure="retry")
    with pytest.raises(ValueError, match="`model`.*tdl-a"):
        PromptLink(model="tdl-a")
    with pytest.raises(ValueError, match="`max_transmissions`"):
        PromptLink(max_transmissions=0)
    with pytest.raises(ValueError, match="must exceed the 24 CRC bits"):
        PromptLink(codeword_length=40, code_rate=0.5)
    with pytest.raises(ValueError, match=r"`x` must have shape \[B, L\]"):
        PromptLink()(np.zeros((2, 3, 4)), 0.1)
    with pytest.raises(ValueError, match="`noise_var`"):
        PromptLink()(np.zeros((2, 3)), -0.1)
