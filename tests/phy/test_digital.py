"""Digital baseline: quantiser, uncoded BER against QAM theory, CRC, MU-MIMO detection, AMC, the uplink and D2D."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import erfc
from sionna.phy.nr.utils import decode_mcs_index

import deft6g.phy as phy
from deft6g.phy.mcs import NR_MCS_TABLE_INDEX, measure_bler



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


def test_quantizer_respects_double_precision(rng):
    """A payload spanning 1e-9 around 1.0 (below float32's resolution, 6e-8): in double precision the
    16-bit quantiser's error stays within half a step, Delta / 2 = 1e-9 / 65535 / 2."""
    x = 1.0 + 1e-9 * rng.uniform(0, 1, size=(2, 1000))
    qz = phy.Quantizer(16, precision="double")
    bits, lo, hi = qz.quantize(x)
    assert bits.dtype == lo.dtype == tf.float64
    x_hat = qz.dequantize(bits, lo, hi).numpy()
    assert np.abs(x_hat - x).max() <= 1e-9 / 65535 / 2 * 1.001
    single = phy.Quantizer(16, precision="single")
    assert np.abs(single.dequantize(*single.quantize(x)).numpy() - x).max() > 5e-10    # float32: all 1.0


@pytest.mark.parametrize("m, snr_db", [(2, 0.0), (2, 6.0), (4, 6.0), (4, 12.0)])
def test_uncoded_ber_matches_qam_theory(rng, m, snr_db):
    """AWGN (h = 1, N = 1), 8e5 bits, seed 1234; uniform payloads give i.i.d. uniform bits; tolerance 6%."""
    link = phy.DigitalLink(num_bits=8, num_bits_per_symbol=m, code_rate=None, codeword_length=1200)
    x = rng.integers(0, 256, size=(40, 2500)).astype(np.float32)
    x[:, 0], x[:, 1] = 0, 255                                   # pin each payload's range to the 8-bit grid
    res = link(x, tf.ones([40, 1], tf.complex64), 10 ** (-snr_db / 10), 1.0)
    assert res.ber == pytest.approx(ber_theory(m, 10 ** (snr_db / 10)), rel=0.06)


def test_ldpc_error_free_at_high_snr_and_channel_uses_by_hand(rng):
    link = phy.DigitalLink(num_bits=8, num_bits_per_symbol=4, code_rate=0.5)
    x = rng.normal(size=(20, 600)).astype(np.float32)
    res = link(x, tf.ones([20, 1], tf.complex64), 10 ** (-12 / 10), 1.0)
    assert res.bit_errors == 0 and res.block_errors == 0 and res.blocks == 20 * 9 and bool(tf.reduce_all(res.valid))
    # 64 header + 600 x 8 = 4864 bits; k = 600 holds 576 payload bits + CRC24: 9 blocks of 300 16-QAM symbols
    assert res.channel_uses == link.channel_uses(600) == 9 * 300


def test_ldpc_beats_uncoded_at_same_snr(rng):
    x = rng.normal(size=(20, 600)).astype(np.float32)
    h = tf.ones([20, 1], tf.complex64)
    coded = phy.DigitalLink(num_bits_per_symbol=2, code_rate=0.5)(x, h, 10 ** (-2 / 10))
    uncoded = phy.DigitalLink(num_bits_per_symbol=2, code_rate=None)(x, h, 10 ** (-2 / 10))
    assert coded.ber < 1e-3 < 0.01 < uncoded.ber


def test_crc_flags_every_corrupted_block(rng):
    """Uncoded blocks (hard decisions) with 1-5 flipped bits in a random half of 200 blocks: CRC24A detects
    every error pattern of weight <= 3 and all others but a 2^-24 fraction; intact blocks pass unchanged."""
    codec = phy.BlockCodec(2, None)
    info = rng.integers(0, 2, size=(200, 1, codec.k_info)).astype(np.float32)
    sym = codec.encode(info).numpy().reshape(200, -1)
    bad = rng.random(200) < 0.5
    for b in np.nonzero(bad)[0]:
        pos = rng.choice(sym.shape[1], size=rng.integers(1, 6), replace=False)
        sym[b, pos] = -sym[b, pos].real + 1j * sym[b, pos].imag          # flip the first bit of those symbols
    out, ok = codec.decode(tf.constant(sym), 1e-3)
    np.testing.assert_array_equal(ok.numpy()[:, 0], ~bad)
    np.testing.assert_array_equal(out.numpy()[~bad], info[~bad])


def test_uplink_never_uses_a_corrupted_block(rng):
    """256-QAM rate 0.86 at 25 dB on a 4 x 4 channel (one group, which an outage target of 0.99 admits) fails some
    blocks; every entry marked valid equals the sent quantised value exactly and the sum averages only those (seed 5)."""
    x = rng.normal(size=(3, 4, 400)).astype(np.float32)
    H = phy.FadingChannel("rayleigh", 4, 4)(3, seed=5)
    up = phy.DigitalUplink(8, mcs=(8, 885 / 1024), outage_target=0.99)
    res = up(x, H, 10 ** (-25 / 10), seed=5)
    valid = res.valid.numpy()
    assert res.bler > 0.1 and 0 < valid.mean() < 1
    qz = up.quantizer
    bits, lo, hi = qz.quantize(x)
    sent = qz.dequantize(bits, lo.numpy().astype(np.float32), hi.numpy().astype(np.float32)).numpy()
    np.testing.assert_array_equal(res.x_hat.numpy()[valid], sent[valid])
    heard = valid.sum(1)
    mean = np.where(heard > 0, (sent * valid).sum(1) / np.maximum(heard, 1), 0.0)
    np.testing.assert_allclose(res.f_hat.numpy(), 4 * mean, rtol=1e-5, atol=1e-5)


def test_noiseless_adaptive_uplink_is_bit_exact(rng):
    """40 dB, N = 8, K = 4, LMMSE + AMC: no bit error, every entry delivered, x_hat = the quantised payload."""
    x = rng.normal(size=(2, 4, 500)).astype(np.float32)
    H = phy.FadingChannel("rayleigh", 8, 4)(2, seed=2)
    up = phy.DigitalUplink(8)
    res = up(x, H, 1e-4, seed=2)
    assert res.bit_errors == 0 and res.block_errors == 0 and bool(tf.reduce_all(res.valid))
    assert (res.mcs >= 0).all() and (res.groups == 1).all()
    bits, lo, hi = up.quantizer.quantize(x)
    sent = up.quantizer.dequantize(bits, lo.numpy().astype(np.float32), hi.numpy().astype(np.float32))
    np.testing.assert_array_equal(res.x_hat.numpy(), sent.numpy())


@pytest.mark.parametrize("n, k", [(4, 4), (6, 4)])
def test_zf_recovers_symbols_exactly_without_noise(crandn, rng, n, k):
    H = crandn(rng, 50, n, k)
    s = crandn(rng, 50, 7, k)
    y = np.einsum("bnk,btk->btn", H, s)
    x_hat, no_eff = phy.equalize(tf.constant(y), tf.constant(H)[:, None], 0.0, "zf", precision="double")
    np.testing.assert_allclose(x_hat.numpy(), s, atol=1e-9)
    assert np.all(no_eff.numpy() == 0)


@pytest.mark.parametrize("snr_db", [-5.0, 10.0, 25.0])
def test_post_detection_sinr_matches_closed_forms(crandn, rng, snr_db):
    """LMMSE: 1/[(I + SNR H^H H)^-1]_kk - 1; ZF: SNR / [(H^H H)^-1]_kk; 200 channels N = 6, K = 4, NumPy float64."""
    H = crandn(rng, 200, 6, 4)
    snr = 10 ** (snr_db / 10)
    gram = np.conj(np.swapaxes(H, -1, -2)) @ H
    lmmse = 1 / np.real(np.diagonal(np.linalg.inv(np.eye(4) + snr * gram), axis1=-2, axis2=-1)) - 1
    zf = snr / np.real(np.diagonal(np.linalg.inv(gram), axis1=-2, axis2=-1))
    for det, ref in (("lmmse", lmmse), ("zf", zf)):
        got = phy.post_detection_sinr(tf.constant(H), 1 / snr, det, precision="double").numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-8)
    assert np.all(lmmse >= zf)


def test_mcs_table_is_nr_table_2_and_ordered():
    for e in phy.MCS_TABLE:
        m, r = decode_mcs_index(e.index, NR_MCS_TABLE_INDEX, is_pusch=True)
        assert int(m) == e.num_bits_per_symbol and float(r) == pytest.approx(e.code_rate)
    thr = [e.threshold_db for e in phy.MCS_TABLE]
    rate = [e.bits_per_use() for e in phy.MCS_TABLE]
    assert thr == sorted(thr) and rate == sorted(rate)


def test_amc_picks_higher_rates_at_higher_sinr():
    sinr_db = np.arange(-15.0, 30.0, 0.5)
    idx = phy.select_mcs(phy.effective_sinr(10 ** (sinr_db / 10)[:, None, None]))[:, 0]
    assert idx[0] == -1 and idx[-1] == len(phy.MCS_TABLE) - 1 and np.all(np.diff(idx) >= 0)
    for i, j in zip(idx, sinr_db):                                      # the chosen entry's threshold is met
        assert i < 0 or phy.MCS_TABLE[i].threshold_db <= j


def test_measured_bler_at_a_tabulated_threshold():
    """16-QAM R = 490/1024 (NR index 7), bit-true over AWGN (seed 1234): BLER <= 10 % at the stored
    threshold (300 blocks, +3 standard deviations: 0.152) and above 30 % one dB below it (100 blocks)."""
    e = next(e for e in phy.MCS_TABLE if e.index == 7)
    codec = phy.BlockCodec(e.num_bits_per_symbol, e.code_rate)
    assert measure_bler(codec, e.threshold_db, 300) <= 0.152
    assert measure_bler(codec, e.threshold_db - 1.0, 100) > 0.3


def test_channel_uses_by_hand(rng):
    """N = 4, K = 6, QPSK R = 602/1024 (k = 705 = 681 payload bits + CRC24, n = 1200): 64 + 300 x 8 = 2464 bits
    -> 4 blocks -> 2400 symbols per device. Two groups of 3 devices: 4800; TDMA: 14400; OFDM with F = 14:
    2408 per group (172 whole OFDM symbols)."""
    x = rng.normal(size=(1, 6, 300)).astype(np.float32)
    H = phy.FadingChannel("rayleigh", 4, 6)(1, seed=1)
    for streams, groups, uses in ((4, 2, 4800), (1, 6, 14400)):
        res = phy.DigitalUplink(8, mcs=(2, 602 / 1024), streams=streams, link="abstract")(x, H, 1e-3)
        assert res.channel_uses[0] == uses and res.groups[0] == groups
    Hf = phy.FadingChannel("tdl-b", 4, 6, num_subcarriers=14)(1, seed=1)
    up = phy.DigitalUplink(8, mcs=(2, 602 / 1024), streams=4, link="abstract")
    assert up(x, Hf, 1e-3).channel_uses[0] == 2 * 2408


def test_auto_grouping_beats_fixed_groupings():
    """Abstract link, 30 channels N = 4, K = 6 at 5 dB: the automatic group count's (outages, channel uses)
    is lexicographically no worse than full multiplexing (4 streams) or TDMA."""
    x = np.zeros((30, 6, 200), np.float32)
    H = phy.FadingChannel("rayleigh", 4, 6)(30, seed=3)
    runs = {s: phy.DigitalUplink(8, streams=s, link="abstract")(x, H, 10 ** -0.5, seed=3) for s in ("auto", 4, 1)}
    key = {s: list(zip((r.mcs < 0).sum(-1), r.channel_uses)) for s, r in runs.items()}
    assert all(a <= b for a, b in zip(key["auto"], key[4])) and all(a <= b for a, b in zip(key["auto"], key[1]))
    assert (runs["auto"].channel_uses < runs[1].channel_uses).any()


def test_abstract_link_matches_bit_true_bler():
    """A fixed MCS at a SINR between its 10 % point and where it always decodes: the abstract link's block
    failures have the calibrated rate and the bit-true link's agree within 3 standard deviations (AWGN-like
    single-antenna channel h = 1, 16-QAM 490/1024 at its threshold, 2 x 150 blocks of 550 payload bits:
    64 + 10300 x 8 = 82464 bits, seed 4)."""
    e = next(e for e in phy.MCS_TABLE if e.index == 7)
    x = np.random.default_rng(4).normal(size=(2, 1, 10300)).astype(np.float32)
    H = np.ones((2, 1, 1), np.complex64)
    nv = 10 ** (-e.threshold_db / 10)
    res = {m: phy.DigitalUplink(8, mcs=(4, e.code_rate), link=m)(x, H, nv, seed=4) for m in ("bits", "abstract")}
    assert res["bits"].blocks == res["abstract"].blocks == 2 * 150
    sd = np.sqrt(0.1 * 0.9 / 300)
    assert res["abstract"].bler == pytest.approx(e.bler(e.threshold_db), abs=3 * sd)
    assert abs(res["bits"].bler - res["abstract"].bler) < 4.3 * sd


@pytest.mark.parametrize("model", ["rayleigh", "tdl-b"])
def test_uplink_sums_at_high_snr(rng, model):
    x = rng.normal(size=(2, 4, 300)).astype(np.float32)
    H = phy.FadingChannel(model, 4, 4, num_subcarriers=16)(2, seed=4)
    res = phy.DigitalUplink(10)(x, H, 1e-3)
    assert res.bit_errors == 0 and bool(tf.reduce_all(res.valid))
    np.testing.assert_allclose(res.f_hat.numpy(), x.sum(1), atol=4 * (x.max() - x.min()) / 1023)


def test_d2d_link_delivers_prompt_at_high_snr(rng):
    prompt = rng.normal(size=(4, 384)).astype(np.float32)
    res = phy.D2DLink("rayleigh", num_rx_ant=4, num_bits_per_symbol=2)(prompt, 1e-3, seed=9)
    assert res.ber == 0.0 and res.x_hat.shape == (4, 384)
    assert np.max(np.abs(res.x_hat.numpy() - prompt)) <= (prompt.max(1) - prompt.min(1)).max() / 255


def test_digital_errors():
    with pytest.raises(ValueError, match="`code_rate` must lie in"):
        phy.DigitalLink(code_rate=1.5)
    with pytest.raises(ValueError, match="`codeword_length` must be a multiple"):
        phy.DigitalLink(num_bits_per_symbol=4, codeword_length=1202)
    with pytest.raises(ValueError, match="`detector` must be one of"):
        phy.DigitalUplink(detector="ml")
    with pytest.raises(ValueError, match="`link` must be one of"):
        phy.DigitalUplink(link="sys")
    with pytest.raises(ValueError, match="`link`='abstract' needs an MCS of MCS_TABLE"):
        phy.DigitalUplink(mcs=(2, 0.5), link="abstract")
    with pytest.raises(ValueError, match="`mcs` must be 'adaptive'"):
        phy.DigitalUplink(mcs=5)
    with pytest.raises(ValueError, match="`codeword_length` must be 1200"):
        phy.DigitalUplink(codeword_length=600)
    with pytest.raises(ValueError, match="`noise_var` must be positive"):
        phy.DigitalLink()(np.ones((1, 8)), np.ones((1, 1), complex), 0.0)
    with pytest.raises(ValueError, match="`H` must have K"):
        phy.DigitalUplink()(np.ones((1, 3, 8)), np.ones((1, 2, 2), complex), 0.1)
    with pytest.raises(ValueError, match="`streams` must be <= N"):
        phy.DigitalUplink(streams=3, detector="zf")(np.ones((1, 3, 8)), np.ones((1, 2, 3), complex), 0.1)


def test_mismatched_sinr_is_the_post_detection_sinr_with_perfect_csi_and_lower_with_an_estimate():
    """N = 4, S = 3, 200 Rayleigh channels at 5 dB: with h_est = h the hand formula equals Sionna's equaliser SINR
    (LMMSE and ZF, rtol 1e-5); with an estimate of error variance 0.2 every stream's mean SINR is lower."""
    H = phy.FadingChannel("rayleigh", 4, 3)(200, seed=4).numpy().astype(np.complex128)
    nv = 10 ** -0.5
    for det in ("lmmse", "zf"):
        want = phy.post_detection_sinr(tf.constant(H), nv, det, "double").numpy()
        np.testing.assert_allclose(phy.mismatched_sinr(H, H, nv, det), want, rtol=1e-5)
    H_est = phy.imperfect_csi(H, 0.2, seed=5)
    assert np.all(phy.mismatched_sinr(H, H_est, nv).mean(0) < phy.mismatched_sinr(H, H, nv).mean(0))


def test_uplink_with_estimated_csi_schedules_on_the_estimate_and_loses_more_blocks():
    """Abstract link, K = 4, N = 2, 8 dB, 40 rounds: with pilot CSI of error variance 1/(1 + 4 x 10^0.8) the MCS
    follows the estimate while the blocks see the mismatched detector's SINR, so more blocks fail than with
    perfect CSI (same seeds)."""
    H = phy.FadingChannel("rayleigh", 2, 4)(40, seed=6).numpy()
    H_est, _ = phy.PilotCsi(4)(H, 8.0, seed=7)
    x = np.random.default_rng(0).normal(size=(40, 4, 300)).astype(np.float32)
    up = phy.DigitalUplink(8, link="abstract")
    perfect = up(x, H, 10 ** -0.8, seed=1)
    noisy = up(x, H, 10 ** -0.8, seed=1, H_est=np.asarray(H_est))
    assert noisy.block_errors > perfect.block_errors
    with pytest.raises(ValueError, match="`H_est`"):
        up(x, H, 0.1, H_est=np.asarray(H_est)[:, :1])


def test_robust_detection_with_the_csi_error_variance_keeps_blocks_alive():
    """N = K = 8 at 20 dB with 8 pilots (error variance 1/801): scheduling and LMMSE detection on the estimate
    as if it were exact lose 65% of the blocks (measured; asserted > 30%): the residual interference of the
    error is invisible to the SINR prediction. Counting the error as noise (sigma^2 + S P e) brings the block
    error rate to 2.5% (asserted < 10%, the MCS target), at a few more channel uses."""
    H = phy.FadingChannel("rayleigh", 8, 8)(20, seed=1).numpy()
    x = np.random.default_rng(0).normal(size=(20, 8, 500)).astype(np.float32)
    H_est, e = phy.PilotCsi(8)(H, 20.0, seed=2)
    up = phy.DigitalUplink(8, link="abstract")
    naive = up(x, H, 0.01, seed=3, H_est=np.asarray(H_est))
    robust = up(x, H, 0.01, seed=3, H_est=np.asarray(H_est), error_var=float(e))
    assert naive.bler > 0.3 and robust.bler < 0.1
    with pytest.raises(ValueError, match="`error_var`"):
        up(x, H, 0.01, H_est=np.asarray(H_est), error_var=-1.0)
