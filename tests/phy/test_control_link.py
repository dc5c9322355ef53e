"""Control messages over the digital link: whole blocks at the SNR's MCS, block errors at the calibrated BLER,
estimated CSI, outage far below the lowest threshold."""

import numpy as np
import pytest

import deft6g.phy as phy
from deft6g.phy import CONTROL_TABLE, MCS_TABLE, ControlLink


def _flat(k, gain=1.0):
    """N = 1, K devices each with channel `gain`: the SINR is the SNR times |gain|^2 exactly."""
    return np.full((1, k), gain, np.complex64)


def test_whole_blocks_at_the_best_mcs():
    """30 dB: the top entry (256-QAM R = 885/1024: k = round(1037.1) = 1037, 1013 payload bits, 150 symbols per
    block); a 64-bit message takes one whole block (150 uses), a 2,000-bit one two blocks (300)."""
    top = max(CONTROL_TABLE, key=lambda e: e.bits_per_use())
    assert top.info_bits() == 1013 and top.symbols_per_block() == 150
    res = ControlLink()(np.array([64, 2000]), _flat(2), snr_db=30.0, seed=0)
    assert list(res.uses) == [150, 300] and res.channel_uses == 450 and res.delivered.all()
    assert all(CONTROL_TABLE[j] == top for j in res.mcs)


def test_low_snr_needs_repetition_and_far_below_it_is_outage():
    """-30 dB: the lowest QPSK entry repeated r = 1024 times (threshold -1.3 - 30.1 = -31.4 dB) is the only one
    that qualifies: one block of 1024 x 600 = 614,400 uses; at -40 dB no entry qualifies (outage, no uses)."""
    res = ControlLink()(64, _flat(3), snr_db=-30.0, seed=0)
    assert [CONTROL_TABLE[j].repetition for j in res.mcs] == [1024] * 3
    assert list(res.uses) == [614_400] * 3 and res.delivered.all()
    out = ControlLink()(64, _flat(3), snr_db=-40.0, seed=0)
    assert list(out.mcs) == [-1] * 3 and out.channel_uses == 0 and not out.delivered.any()


def test_extrapolated_repetitions_follow_the_calibrated_law():
    """The calibrated repetitions 2..16 of MCS_TABLE lie within 0.15 dB of theta_1 - 10 log10 r (chase combining),
    the law by which CONTROL_TABLE extends them; the table is ordered by payload bits per channel use."""
    base = next(e for e in MCS_TABLE if e.repetition == 1)
    for e in MCS_TABLE:
        if e.index == base.index and e.repetition > 1:
            assert e.threshold_db == pytest.approx(base.threshold_db - 10 * np.log10(e.repetition), abs=0.15)
    assert max(e.repetition for e in CONTROL_TABLE) == phy.MAX_CONTROL_REPETITION
    rates = [e.bits_per_use() for e in CONTROL_TABLE]
    assert rates == sorted(rates)


def test_block_failures_follow_the_calibrated_bler():
    """K = 4,000 one-block messages at exactly an entry's 10%-BLER threshold (N = 1, |h| = 1, perfect CSI):
    the failure fraction is 0.10 within 4 binomial standard deviations (0.019); 1 dB above, the probit gives a
    few per cent at most."""
    e = next(x for x in CONTROL_TABLE if x.index == 9)
    res = ControlLink()(64, _flat(4000), snr_db=e.threshold_db, seed=3)
    assert all(CONTROL_TABLE[j] == e for j in res.mcs)
    assert abs((~res.delivered).mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / 4000)
    above = ControlLink()(64, _flat(4000), snr_db=e.threshold_db + 1.0, seed=3)
    assert (~above.delivered).mean() < 0.1 * 0.5


def test_estimated_csi_picks_the_mcs_and_the_true_channel_decides():
    """N = 4, K = 2,000 Rayleigh devices at 10 dB: with a noisy estimate (error variance 0.3) the MCS follows
    |h_est|^2 while the block sees |h_est^H h|^2 / |h_est|^2 < |h|^2, so more messages fail than with perfect CSI
    (same seeds); perfect CSI fails about 10% at most (each device sits at or above its entry's threshold)."""
    H = phy.FadingChannel("rayleigh", 4, 2000)(1, seed=1).numpy()[0]
    H_est = phy.imperfect_csi(H, 0.3, seed=2)
    perfect = ControlLink()(64, H, None, 10.0, seed=5)
    noisy = ControlLink()(64, H, H_est, 10.0, seed=5)
    assert (~perfect.delivered).mean() <= 0.1
    assert (~noisy.delivered).mean() > (~perfect.delivered).mean() + 0.05


def test_inactive_devices_send_nothing_and_bad_input_names_the_argument():
    res = ControlLink()(64, _flat(3), snr_db=10.0, active=[True, False, True], seed=0)
    assert res.uses[1] == 0 and res.mcs[1] == -1 and not res.delivered[1] and res.delivered[[0, 2]].all()
    with pytest.raises(ValueError, match="`num_bits`"):
        ControlLink()(0, _flat(3), snr_db=0.0)
    with pytest.raises(ValueError, match="`H_est`"):
        ControlLink()(8, _flat(3), _flat(2), snr_db=0.0)
    with pytest.raises(ValueError, match="`active`"):
        ControlLink()(8, _flat(3), snr_db=0.0, active=[True])
    with pytest.raises(ValueError, match="`snr_db`"):
        ControlLink()(8, _flat(3), snr_db=float("nan"))
    assert phy.pilot_channel_uses(8, 16) == 128
