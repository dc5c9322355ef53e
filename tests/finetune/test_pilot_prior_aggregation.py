"""The radio aggregators estimate each round's channel with the round's devices' large-scale gains as the LMMSE
prior, and their per-device error variances reach the digital uplink's robust detector."""

import numpy as np
import pytest

import deft6g.phy as phy
from deft6g.finetune import AirCompAggregator, DigitalAggregator

GAIN_DB = np.array([-20.0, -10.0, 0.0, 5.0])


def test_round_prior_is_the_gain_of_the_participating_devices():
    """path_gain_db spanning 25 dB, devices [3, 0] of 4 (tau = 2 pilots at 0 dB): the round's error variance is
    beta_k / (1 + 2 beta_k) for those two devices, in their order (closed form)."""
    agg = AirCompAggregator(4, 2, 0.0, seed=0, path_gain_db=GAIN_DB)
    rc = agg.round_channel(0, np.array([3, 0]))
    beta = 10 ** (GAIN_DB[[3, 0]] / 10)
    assert rc.pilot_uses == 2
    np.testing.assert_allclose(rc.error_var, beta / (1 + 2 * beta), rtol=1e-6)


def test_rayleigh_estimate_is_the_scalar_prior_bit_for_bit():
    """Rayleigh (unit gains): the round's estimate is exactly `PilotCsi(tau)` with the scalar unit prior on the
    same channel and seed, and its error variance 1 / (1 + tau rho) for every device."""
    agg = AirCompAggregator(4, 2, -10.0, seed=3)
    H, H_est, _, error_var = agg.round_channel(5)
    ref, e = phy.PilotCsi(4)(H, -10.0, seed=agg.round_seed(5, "pilots"))
    assert np.array_equal(H_est, ref.numpy())
    np.testing.assert_array_equal(error_var, np.full(4, e.numpy(), np.float64))


def test_digital_uplink_takes_per_device_error_variances():
    """Equal per-device error variances give the scalar's results exactly (S P e = the sum of the S largest); a
    vector of the wrong length names `error_var`; the digital aggregator runs on a near-far channel."""
    H = phy.FadingChannel("rayleigh", 2, 4)(3, seed=1).numpy()
    x = np.random.default_rng(0).normal(size=(3, 4, 200)).astype(np.float32)
    H_est, e = phy.PilotCsi(4)(H, 0.0, seed=2)
    up = phy.DigitalUplink(8, link="abstract")
    scalar = up(x, H, 1.0, seed=3, H_est=H_est.numpy(), error_var=float(e))
    vector = up(x, H, 1.0, seed=3, H_est=H_est.numpy(), error_var=np.full(4, float(e)))
    assert np.array_equal(scalar.mcs, vector.mcs) and np.array_equal(scalar.f_hat.numpy(), vector.f_hat.numpy())
    with pytest.raises(ValueError, match="`error_var`"):
        up(x, H, 1.0, H_est=H_est.numpy(), error_var=np.full(3, 0.1))
    res = DigitalAggregator(4, 2, 10.0, seed=0, path_gain_db=GAIN_DB)(x[0], 0)
    assert res.pilot_uses == 4 and res.mean.shape == (200,)
