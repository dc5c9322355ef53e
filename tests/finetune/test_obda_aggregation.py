"""OBDAAggregator: server_lr x the majority vote of the heard devices' signs, truncation by the MRC gain,
channel uses, FedAvg weights."""

import numpy as np
import pytest

from deft6g.finetune.federation.aggregation import SCHEMES, OBDAAggregator, make_aggregator

NOISELESS_DB = 200.0          # noise variance 1e-20: the vote is the noiseless majority


def _mrc_gains(H):
    """Independent NumPy re-derivation of the truncation gains |u^H h_k|^2, u the normalised MRC direction."""
    u = np.sum(H / np.linalg.norm(H, axis=0), axis=1)
    return np.abs((u / np.linalg.norm(u)).conj() @ H) ** 2


def test_vote_of_the_devices_above_the_threshold(rng):
    """N = 4, K = 5, L = 11, noise-free: the threshold between the 2nd and 3rd weakest MRC gains of round 3's
    channel silences two devices; the estimate is exactly server_lr * sign(sum of the 3 heard devices' signs),
    agg_mse is its per-entry MSE against the FedAvg mean, ceil(11/2) = 6 channel uses."""
    k, length, lr = 5, 11, 0.01
    H = OBDAAggregator(k, 4, NOISELESS_DB, seed=4).draw_channel(3)
    gains = _mrc_gains(H)
    threshold = float(np.mean(np.sort(gains)[1:3]))
    heard = gains >= threshold
    updates = rng.normal(size=(k, length)).astype(np.float32)
    w = np.array([0.1, 0.3, 0.2, 0.15, 0.25])
    agg = make_aggregator("obda", k, 4, NOISELESS_DB, seed=4, obda=dict(threshold=threshold, server_lr=lr))
    out = agg(updates, 3, weights=w)
    expected = lr * np.sign(np.sign(updates[heard]).sum(0))
    assert heard.sum() == 3 and out.devices == 3
    np.testing.assert_array_equal(out.mean, expected.astype(np.float32))
    assert out.agg_mse == pytest.approx(np.mean((expected - w @ updates) ** 2), rel=1e-5)
    assert out.payload_uses == 6 and out.channel_uses == 6 + k and out.per_device is None   # + tau = K pilots
    np.testing.assert_array_equal(agg(updates, 3, weights=w).mean, out.mean)          # same seed, same round


def test_zero_weight_device_stays_silent_and_nobody_above_a_huge_threshold():
    """A device of FedAvg weight 0 does not vote (devices = K - 1; its large opposite update would cancel the
    majority); a threshold above every gain silences all: the estimate is 0."""
    k, length = 4, 6
    updates = np.array([[-1.0] * length, [1.0] * length, [1.0] * length, [-0.5] * length], np.float32)
    updates[0] *= 1e3
    w = np.array([0.0, 0.4, 0.4, 0.2])
    out = OBDAAggregator(k, 2, NOISELESS_DB, threshold=0.0, server_lr=0.5)(updates, 0, weights=w)
    assert out.devices == 3
    np.testing.assert_array_equal(out.mean, np.full(length, 0.5, np.float32))        # +1 +1 -1 of devices 1..3
    silent = OBDAAggregator(k, 2, NOISELESS_DB, threshold=1e9)(updates, 0)
    assert silent.devices == 0
    np.testing.assert_array_equal(silent.mean, np.zeros(length, np.float32))


def test_ofdm_spreads_the_signs_over_subcarriers(rng):
    """TDL-A with F = 4, L = 10: F ceil(ceil(L/F)/2) = 8 channel uses; K = 3 (odd), threshold 0: every entry is
    the plain majority of the three devices' signs."""
    k, length = 3, 10
    agg = make_aggregator("obda", k, 2, NOISELESS_DB, channel={"model": "tdl-a", "num_subcarriers": 4},
                          obda=dict(threshold=0.0, server_lr=1.0))
    updates = rng.normal(size=(k, length)).astype(np.float32)
    out = agg(updates, 1)
    assert agg.draw_channel(1).shape == (4, 2, k)
    assert out.payload_uses == 8 and out.devices == k
    np.testing.assert_array_equal(out.mean, np.sign(np.sign(updates).sum(0)))


def test_bad_arguments_name_the_argument():
    assert "obda" in SCHEMES
    with pytest.raises(ValueError, match="`threshold` must be a finite number >= 0"):
        OBDAAggregator(3, 2, 10.0, threshold=-0.1)
    with pytest.raises(ValueError, match="`threshold`"):
        make_aggregator("obda", 3, 2, 10.0, obda=dict(threshold=float("nan")))
    with pytest.raises(ValueError, match="`server_lr` must be a finite number > 0"):
        OBDAAggregator(3, 2, 10.0, server_lr=0.0)
    with pytest.raises(ValueError, match="`csi_error`"):
        OBDAAggregator(3, 2, 10.0, csi_error=-1.0)
    agg = OBDAAggregator(3, 2, 10.0)
    with pytest.raises(ValueError, match="`updates` must be a finite"):
        agg(np.array([[1.0, np.inf]] * 3), 0)
    with pytest.raises(ValueError, match="`updates` has 4 rows, the aggregator serves 3"):
        agg(np.ones((4, 5)), 0)
    with pytest.raises(ValueError, match="`weights`"):
        agg(np.ones((3, 5)), 0, weights=[0.5, 0.5])
