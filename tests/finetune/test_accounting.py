"""Every channel use of a radio round is counted: pilots for every arm, AirComp's statistics up through the
control link in whole blocks (a failed one drops its device), downlink messages in their own column."""

import numpy as np
import pytest

from deft6g.finetune import AirCompAggregator, DigitalAggregator, NoisyAggregator, OBDAAggregator, make_aggregator
from deft6g.phy import CONTROL_TABLE, ControlResult

K, N, L = 4, 2, 400


def _updates(seed=0):
    return np.random.default_rng(seed).normal(0, 1, (K, L)).astype(np.float32)


@pytest.mark.parametrize("cls", [AirCompAggregator, OBDAAggregator, DigitalAggregator])
def test_pilots_are_charged_to_every_arm_and_the_genie_pays_none(cls):
    """tau = K orthogonal pilots on a flat channel: K pilot uses inside channel_uses; the genie: none."""
    res = cls(K, N, 10.0, seed=1)(_updates(), 0)
    assert res.pilot_uses == K
    assert res.channel_uses == res.payload_uses + res.pilot_uses + res.side_info_uses
    genie = cls(K, N, 10.0, seed=1, genie=True)(_updates(), 0)
    assert genie.pilot_uses == 0 and genie.side_info_uses == 0 and genie.downlink_uses == 0
    assert res.downlink_uses > 0 and res.energy.shape == (K,) and np.all(res.energy >= K)


def test_side_information_travels_in_whole_blocks_and_costs_more_at_low_snr():
    """AirComp's 64-bit statistics: each device's side-information uses are whole blocks of its MCS (a multiple of
    the entry's symbols per block); at -20 dB they need repetition and exceed the payload; the round's uplink
    total at -20 dB exceeds the one at 20 dB."""
    low, high = (AirCompAggregator(K, N, snr, seed=3) for snr in (-20.0, 20.0))
    seen = {}

    def spy(agg):
        send = agg.control

        def wrapped(*args, **kwargs):
            res = send(*args, **kwargs)
            seen.setdefault(id(agg), []).append(res)
            return res
        agg.control = wrapped
    spy(low)
    r_low, r_high = low(_updates(), 0), high(_updates(), 0)
    stats = seen[id(low)][0]
    for d in range(K):
        if stats.mcs[d] >= 0:
            assert stats.uses[d] % CONTROL_TABLE[stats.mcs[d]].symbols_per_block() == 0
    assert r_low.side_info_uses == stats.channel_uses > r_low.payload_uses
    assert r_low.channel_uses > r_high.channel_uses


class _FailFirst:
    """A control link whose uplink statistics message of device 0 always fails its CRC; the downlink passes."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, num_bits, *args, **kwargs):
        res = self.inner(num_bits, *args, **kwargs)
        self.calls += 1
        if self.calls == 1:                                     # the statistics, sent first
            res = ControlResult(res.delivered & (np.arange(K) != 0), res.mcs, res.uses, res.channel_uses)
        return res


def test_a_device_whose_statistics_fail_is_dropped_and_the_rest_are_aggregated():
    """A forced CRC failure of device 0's statistics (40 dB): the round equals the round in which device 0 had
    FedAvg weight 0 (same seeds: the K - 1 aggregate with renormalised weights, bit for bit), it is close to the
    remaining devices' weighted mean and far from the K-device one, and device 0 is not a participant."""
    u = _updates(5)
    u[0] += 5.0                                                 # device 0 stands apart
    w = np.array([0.4, 0.2, 0.2, 0.2], np.float32)
    forced = AirCompAggregator(K, N, 40.0, seed=2)
    forced.control = _FailFirst(forced.control)
    got = forced(u, 0, w)
    w_rest = np.array([0.0, 1 / 3, 1 / 3, 1 / 3], np.float32)
    ref = AirCompAggregator(K, N, 40.0, seed=2)(u, 0, w_rest)
    np.testing.assert_array_equal(got.mean, ref.mean)
    assert not got.participants[0] and got.participants[1:].all() and got.devices == K - 1
    rest = w_rest @ u
    assert np.mean((got.mean - rest) ** 2) < 1e-3 * np.mean(rest ** 2)
    assert np.mean((got.mean - w @ u) ** 2) > 0.5


@pytest.mark.parametrize("genie", [False, True])
def test_aircomp_admission_silences_devices_below_the_mean_snr_threshold(genie):
    """Device 0 at a path gain of -30 dB: at 40 dB its mean SNR is 10 dB, so admit_snr_db = 20 leaves it silent
    (pilots only: no statistics, no payload) and the round equals the round in which it had FedAvg weight 0 (bit
    for bit); admit_snr_db = 5 admits it (the same round as admitting every device); bad thresholds name the key."""
    u, w = _updates(6), np.array([0.4, 0.2, 0.2, 0.2], np.float32)
    gains = [-30.0, 0.0, 0.0, 0.0]
    make = lambda admit: AirCompAggregator(K, N, 40.0, seed=2, genie=genie, path_gain_db=gains,  # noqa: E731
                                           admit_snr_db=admit)
    strict = make(20.0)
    got = strict(u, 0, w)
    np.testing.assert_array_equal(strict.admitted(), [False, True, True, True])
    ref = make(None)(u, 0, np.array([0.0, 1 / 3, 1 / 3, 1 / 3], np.float32))
    np.testing.assert_array_equal(got.mean, ref.mean)
    assert not got.participants[0] and got.devices == K - 1
    assert got.energy[0] == (0 if genie else K) < got.energy[1]          # device 0 sent its K pilots only
    loose, every = make(5.0)(u, 0, w), make(None)(u, 0, w)
    np.testing.assert_array_equal(loose.mean, every.mean)
    assert loose.participants.all() and loose.channel_uses == every.channel_uses
    for bad in (float("nan"), True, "10"):
        with pytest.raises(ValueError, match="`admit_snr_db`"):
            make(bad)


def test_noisy_control_adds_gaussian_noise_at_the_asked_nmse():
    """NoisyAggregator(nmse=0.1): the measured NMSE of a 40,000-entry mean is 0.1 within 3% (chi-square spread
    about 0.7%); no channel uses."""
    u = np.random.default_rng(0).normal(0, 1, (K, 40_000)).astype(np.float32)
    res = NoisyAggregator(0.1, seed=3)(u, 0)
    assert res.nmse == pytest.approx(0.1, rel=0.03) and res.channel_uses == 0
    assert make_aggregator("noisy", K, noisy={"nmse": 0.1}, seed=3)(u, 0).nmse == res.nmse
    with pytest.raises(ValueError, match="`nmse`"):
        NoisyAggregator(-1.0)


def test_bad_link_arguments_name_the_key():
    with pytest.raises(ValueError, match="`num_pilots`"):
        AirCompAggregator(K, N, 0.0, num_pilots=K - 1)
    with pytest.raises(ValueError, match="`csi_error`"):
        AirCompAggregator(K, N, 0.0, csi_error=0.1)
    with pytest.raises(ValueError, match="`downlink_snr_db`"):
        OBDAAggregator(K, N, 0.0, downlink_snr_db=float("inf"))
