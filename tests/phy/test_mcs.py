"""MCS table at low SNR: repeated NR MCS 2 entries, their combining, thresholds, sizes and selection."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import binom
from sionna.phy.mapping import Demapper

import deft6g.phy as phy
from deft6g.phy.mcs import measure_bler

REPEATED = [e for e in phy.MCS_TABLE if e.repetition > 1]
BASE = next(e for e in phy.MCS_TABLE if e.index == 2 and e.repetition == 1)


def test_low_snr_entries_are_nr_mcs_2_repeated_down_to_minus_10_db():
    assert [e.repetition for e in REPEATED] == [16, 8, 4, 2]
    assert all((e.index, e.num_bits_per_symbol, e.rate_x1024) == (2, 2, 308) for e in REPEATED)
    assert min(e.threshold_db for e in phy.MCS_TABLE) <= -10.0


@pytest.mark.parametrize("e", phy.MCS_TABLE, ids=lambda e: f"mcs{e.index}x{e.repetition}")
def test_channel_uses_and_bits_per_use_by_hand(e):
    """k = round(R 1200) bits incl. the CRC24A, n / m symbols sent r times: e.g. NR MCS 2 x 8 carries
    361 - 24 = 337 payload bits in 8 x 600 = 4800 channel uses, 0.0702 bit per use."""
    k_info = int(round(e.rate_x1024 / 1024 * 1200)) - 24
    uses = e.repetition * 1200 // e.num_bits_per_symbol
    assert e.info_bits() == k_info and e.symbols_per_block() == uses
    assert e.bits_per_use() == pytest.approx(k_info / uses, rel=1e-12)
    if e.index == 2 and e.repetition == 8:
        assert (k_info, uses) == (337, 4800)


def test_block_codec_sends_whole_repeated_blocks():
    """C = 3 blocks at r = 4: 3 x 4 x 600 symbols, block c's four copies equal and in a row; noise-free decoding."""
    codec = phy.BlockCodec(2, 308 / 1024, repetition=4)
    assert (codec.k_info, codec.symbols_per_block) == (337, 2400)
    info = tf.cast(tf.random.uniform([2, 3, codec.k_info], 0, 2, tf.int32), tf.float32)
    x = codec.encode(info)
    assert x.shape == (2, 3 * 2400)
    copies = tf.reshape(x, [2, 3, 4, 600]).numpy()
    np.testing.assert_array_equal(copies, np.broadcast_to(copies[:, :, :1], copies.shape))
    assert not np.array_equal(copies[:, 0, 0], copies[:, 1, 0])
    info_hat, ok = codec(x, 1e-3)
    assert bool(tf.reduce_all(ok)) and bool(tf.reduce_all(info_hat == info))


def test_qpsk_combining_equals_the_sum_of_the_copies_llrs(rng):
    """Chase combining: for Gray QPSK the APP LLR is linear in y / N, so the LLRs demapped from the
    maximum-ratio combined symbol equal the sum of the r = 3 copies' LLRs (unequal variances per copy,
    float64, Sionna `Demapper` as the reference)."""
    codec = phy.BlockCodec(2, None, codeword_length=48, precision="double", repetition=3)   # C = 2 blocks below
    y = rng.normal(size=(5, 2 * 3 * 24)) + 1j * rng.normal(size=(5, 2 * 3 * 24))
    no = rng.uniform(0.2, 3.0, size=y.shape)
    x_c, no_c = codec.combine(tf.constant(y), tf.constant(no))
    assert x_c.shape == no_c.shape == (5, 2 * 24)
    demap = Demapper("app", "qam", 2, precision="double")
    per_copy = tf.reshape(demap(tf.constant(y), tf.constant(no)), [5, 2, 3, 48])
    np.testing.assert_allclose(demap(x_c, no_c).numpy(), tf.reduce_sum(per_copy, 2).numpy().reshape(5, -1),
                               rtol=1e-10, atol=1e-10)
    inv = (1 / no).reshape(5, 2, 3, 24).sum(2).reshape(5, -1)
    np.testing.assert_allclose(no_c.numpy(), 1 / inv, rtol=1e-12)


def test_a_noise_free_copy_dominates_the_combination(rng):
    """A copy with no = 0 (ZF without noise) gives the combined symbol exactly, without overflow (float32)."""
    codec = phy.BlockCodec(2, None, codeword_length=48, repetition=2)
    a = (rng.choice([-1, 1], 24) + 1j * rng.choice([-1, 1], 24)) / np.sqrt(2)
    y = tf.constant(np.concatenate([a, 5 * a[::-1]])[None], tf.complex64)
    x_c, no_c = codec.combine(y, tf.constant([[0.0] * 24 + [1.0] * 24]))
    np.testing.assert_allclose(x_c.numpy(), a[None], rtol=1e-6)
    assert np.all(np.isfinite(no_c.numpy())) and np.all(no_c.numpy() < 1e-30)


@pytest.mark.parametrize("e", REPEATED, ids=lambda e: f"x{e.repetition}")
def test_low_snr_thresholds_hold_on_a_fresh_measurement(e):
    """Bit-true over AWGN (seed 1234): 0.5 dB above the stored 10 % threshold (calibrated BLER about 1 %) 100
    blocks fail fewer times than the 1 % quantile of Binomial(100, 0.1), 4, so the BLER is below 10 % (one-sided
    binomial test, level 1 %); 0.5 dB below it (about 50 %) 50 blocks fail more often than the 99 % quantile of
    Binomial(50, 0.1), 10, so it is above 10 %."""
    codec = phy.BlockCodec(e.num_bits_per_symbol, e.code_rate, repetition=e.repetition)
    assert measure_bler(codec, e.threshold_db + 0.5, 100) * 100 < binom.ppf(0.01, 100, 0.1)
    assert measure_bler(codec, e.threshold_db - 0.5, 50) * 50 > binom.ppf(0.99, 50, 0.1)


def test_repetition_gains_10_log10_r_db():
    """Independent of the table: the 8-fold repeated code at SNR s - 10 log10 8 fails as often as the
    unrepeated code at s (MRC of r copies of noise variance N has variance N / r). s = -1.6 dB, mid-waterfall
    (BLER about 0.4, where it moves most per dB: about 1 per dB); 200 blocks each (seed 1234); they agree within
    3 standard deviations of a difference of two binomial proportions, 3 sqrt(2 x 0.25 / 200) = 0.15, i.e.
    the gain is 10 log10 8 = 9.03 dB within about 0.15 dB."""
    s = -1.6
    base = measure_bler(phy.BlockCodec(2, 308 / 1024), s, 200)
    repeated = measure_bler(phy.BlockCodec(2, 308 / 1024, repetition=8), s - 10 * np.log10(8), 200)
    assert 0.1 < base < 0.9 and abs(repeated - base) < 0.15, (base, repeated)


def test_stored_gains_match_10_log10_r():
    """The calibrated thresholds (each rounded up to 0.1 dB from a 300-block-per-point probit fit) sit
    10 log10 r below NR MCS 2's within 0.2 dB."""
    for e in REPEATED:
        assert e.threshold_db == pytest.approx(BASE.threshold_db - 10 * np.log10(e.repetition), abs=0.2)


def test_selection_uses_repeated_entries_at_low_snr():
    """Flat fading: -10 dB selects NR MCS 2 x 8, 0.1 dB below the lowest threshold is outage, and at every SINR
    of a -20..30 dB sweep the choice is, by brute force, the qualifying entry with the most bits per use."""
    def pick(sinr_db):
        return phy.select_mcs(phy.effective_sinr(10 ** (np.asarray(sinr_db, float) / 10)[:, None, None]))[:, 0]

    table = phy.MCS_TABLE
    lowest = min(e.threshold_db for e in table)
    got = pick([-10.0, lowest - 0.1, lowest])
    assert (table[got[0]].index, table[got[0]].repetition) == (2, 8)
    assert got[1] == -1 and table[got[2]].threshold_db == lowest
    sweep = np.arange(-20.0, 30.0, 0.05)
    rate = np.array([e.bits_per_use() for e in table])
    for j, g in zip(pick(sweep), sweep):
        ok = np.array([e.threshold_db <= g + 1e-9 for e in table])
        assert (j == -1) if not ok.any() else rate[j] == rate[ok].max()


def test_digital_uplink_sends_repeated_blocks_at_minus_9_db():
    """One device, h = 1, -9 dB (1.4 dB above NR MCS 2 x 8's threshold, below x 4's): AMC chooses x 8; the
    64 + 30 x 8 = 304 bits fill one block of 337, sent as 8 x 600 = 4800 channel uses, decoded bit-true (seed 3)."""
    x = np.random.default_rng(3).normal(size=(1, 1, 30)).astype(np.float32)
    up = phy.DigitalUplink(8)
    res = up(x, np.ones((1, 1, 1), np.complex64), 10 ** 0.9, seed=3)
    e = phy.MCS_TABLE[int(res.mcs[0, 0])]
    assert (e.index, e.repetition) == (2, 8)
    assert res.channel_uses[0] == 4800 and res.blocks == 1 and res.block_errors == 0 and bool(tf.reduce_all(res.valid))


def test_fixed_mcs_is_the_unrepeated_entry():
    """A fixed (m, R) names the unrepeated entry: its calibrated BLER drives the abstract link."""
    up = phy.DigitalUplink(8, mcs=(2, 308 / 1024), link="abstract")
    assert up.table == (BASE,) and up.symbols(30) == 600


def test_repetition_errors():
    with pytest.raises(ValueError, match="`repetition`"):
        phy.BlockCodec(2, 0.5, repetition=0)
    with pytest.raises(ValueError, match="`repetition`"):
        phy.Mcs(2, 2, 308, -1.3, 0.4, repetition=0)


def test_effective_sinr_is_not_floored_above_the_lowest_control_entry():
    """A codeword over 8 subcarriers all at -50 dB has an effective SINR of -50 dB for every entry (EESM of equal
    SINRs is that SINR), not Sionna's default floor of -30 dB, so no device that weak qualifies for the 1024x
    control entry (-31.4 dB)."""
    from deft6g.phy.control_link import CONTROL_TABLE
    from deft6g.phy.mcs import effective_sinr, select_mcs
    sinr = np.full((1, 8), 1e-5)                                   # [batch, F], -50 dB
    eff = effective_sinr(sinr[None], CONTROL_TABLE)                # [J, 1, 1, ...]
    np.testing.assert_allclose(10 * np.log10(np.asarray(eff).ravel()), -50.0, atol=1e-6)
    assert select_mcs(eff, CONTROL_TABLE).ravel()[0] == -1         # outage
