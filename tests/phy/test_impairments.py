"""CSI from pilots and transmit misalignment against their closed forms (module docstring of phy/impairments.py)."""

import numpy as np
import pytest
import tensorflow as tf

import deft6g.optim as optim
import deft6g.phy as phy


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_pilot_error_has_lmmse_variance(crandn, rng, beta):
    """E = H - H_hat has per-entry variance beta / (1 + tau rho beta), H_hat has beta - that, and they are
    uncorrelated. 1e5 entries (tau = K = 10, rho = 0 dB, seed 1234): relative standard error of a variance
    estimate 1/sqrt(1e5) = 0.32%; tolerance 1.5% (4.7 sigma); correlation below 0.02 x beta."""
    H = np.sqrt(beta) * crandn(rng, 1000, 10, 10)
    H_hat, ev = phy.PilotCsi(num_pilots=10, channel_var=beta, precision="double")(H, 0.0, seed=7)
    E = H - H_hat
    expected = beta / (1 + 10 * beta)
    np.testing.assert_allclose(ev, expected, rtol=1e-12)
    np.testing.assert_allclose(np.mean(np.abs(E) ** 2), expected, rtol=0.015)
    np.testing.assert_allclose(np.mean(np.abs(H_hat) ** 2), beta - expected, rtol=0.015)
    assert abs(np.mean(np.conj(H_hat) * E)) < 0.02 * beta


def test_pilot_snr_per_realisation_and_helper(crandn, rng):
    """A pilot SNR per realisation [B] broadcasts over N, K; `pilot_error_var` gives the same closed form;
    more pilot energy, smaller error (each of 2e4 entries per SNR, tolerance 5%)."""
    H = crandn(rng, 2, 5000, 4)
    snr_db = np.array([-5.0, 15.0])
    H_hat, ev = phy.PilotCsi(num_pilots=4, precision="double")(H, snr_db, seed=1)
    np.testing.assert_allclose(ev, phy.pilot_error_var(snr_db, 4), rtol=1e-12)
    np.testing.assert_allclose(ev, 1 / (1 + 4 * 10 ** (snr_db / 10)), rtol=1e-12)
    err = np.mean(np.abs(H - H_hat) ** 2, axis=(1, 2))
    np.testing.assert_allclose(err, ev, rtol=0.05)


def test_pilot_csi_seeded_and_checked(crandn, rng):
    H = crandn(rng, 3, 4, 2)
    csi = phy.PilotCsi(num_pilots=2)
    np.testing.assert_array_equal(csi(H, 5.0, seed=3)[0], csi(H, 5.0, seed=3)[0])
    assert csi(H, 5.0)[0].dtype == np.complex64
    with pytest.raises(ValueError, match="`num_pilots`"):
        phy.PilotCsi(num_pilots=1)(H, 5.0)
    with pytest.raises(ValueError, match="`channel_var`"):
        phy.PilotCsi(num_pilots=2, channel_var=0.0)
    with pytest.raises(ValueError, match="`num_pilots`"):
        phy.PilotCsi(num_pilots=0)


def _monte_carlo_mse(crandn, H, a, b, nv, misalignment, num_symbols, seed):
    """Empirical E|f_hat - f|^2: CN(0,1) symbols s, misaligned x = m s sent, f = sum_k s_k (NumPy reference
    of the receiver: a^H (H diag(b) x + n))."""
    rng = np.random.default_rng(seed)
    s = crandn(rng, H.shape[0], H.shape[-1], num_symbols)
    x = misalignment(s, seed=seed).numpy()
    noise = np.sqrt(nv) * crandn(rng, H.shape[0], num_symbols, H.shape[1])
    f_hat = np.einsum("bn,bnk,bk,bkl->bl", a.conj(), H, b, x) + np.einsum("bn,bln->bl", a.conj(), noise)
    return np.mean(np.abs(f_hat - s.sum(axis=1)) ** 2)


def test_phase_error_mse_matches_closed_form(crandn, rng):
    """Aligned design (a^H h_k b_k = 1), phase error phi ~ N(0, 0.5^2): since E[e^{j phi}] = e^{-sigma^2/2},
    MSE = K (2 - 2 e^{-sigma^2/2}) + sigma_n^2 ||a||^2. Monte Carlo over 2e4 realisations x 8 symbols
    (seed 5) within 3% of it (relative standard error about 0.6%)."""
    H = crandn(rng, 20000, 8, 4)
    a, b = optim.closed_form_design(H, 1.0, "zf")
    nv, sigma = 0.05, 0.5
    mis = phy.TransmitMisalignment(phase_std=sigma, precision="double")
    theory = 4 * (2 - 2 * np.exp(-sigma ** 2 / 2)) + nv * np.sum(np.abs(a) ** 2, -1)
    np.testing.assert_allclose(mis.expected_mse(H, a, b, nv), theory, rtol=1e-9)
    np.testing.assert_allclose(_monte_carlo_mse(crandn, H, a, b, nv, mis, 8, seed=5), np.mean(theory), rtol=0.03)


def test_amplitude_and_drift_mse_matches_closed_form(crandn, rng):
    """A non-aligned design (MMSE receiver, Re c_k != 1) with amplitude error 0.2, phase 0.3 rad, drift 0.05
    rad/symbol over L = 16 symbols: Monte Carlo (2e4 realisations, seed 6) within 3% of
    sum_k [(1 + s_a^2)|c_k|^2 - 2 rho_bar Re c_k + 1] + sigma^2 ||a||^2, rho_bar computed here term by term."""
    H = crandn(rng, 20000, 4, 6)
    nv = 0.1
    b = np.full((20000, 6), 1.0 + 0j)
    a = optim.mmse_receiver(tf.constant(H), tf.constant(b), nv).numpy()
    mis = phy.TransmitMisalignment(amplitude_std=0.2, phase_std=0.3, drift_std=0.05, precision="double")
    rho = np.mean([np.exp(-(0.3 ** 2 + (l * 0.05) ** 2) / 2) for l in range(16)])
    c = np.einsum("bn,bnk->bk", a.conj(), H) * b
    theory = np.sum(1.04 * np.abs(c) ** 2 - 2 * rho * c.real + 1, -1) + nv * np.sum(np.abs(a) ** 2, -1)
    np.testing.assert_allclose(mis.expected_mse(H, a, b, nv, num_symbols=16), theory, rtol=1e-9)
    np.testing.assert_allclose(_monte_carlo_mse(crandn, H, a, b, nv, mis, 16, seed=6), np.mean(theory), rtol=0.03)


def test_uplink_option_matches_closed_form(crandn, rng):
    """`AirCompUplink(..., misalignment=...)` on real payloads (unit std): the error per real entry has
    variance `expected_mse` with L = ceil(500 / 2) symbols (2000 realisations, seed 8, tolerance 4%)."""
    H = crandn(rng, 2000, 8, 4)
    a, b = optim.closed_form_design(H, 1.0, "mrc")
    x = rng.normal(size=(2000, 4, 500))
    x = 3.0 + (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)     # std exactly 1 per device
    mis = phy.TransmitMisalignment(phase_std=0.4, drift_std=0.002, precision="double")
    f_hat = phy.AirCompUplink(precision="double")(x, H, a, b, 0.01, seed=8, misalignment=mis).numpy()
    np.testing.assert_allclose(np.mean((f_hat - x.sum(1)) ** 2),
                               np.mean(mis.expected_mse(H, a, b, 0.01, num_symbols=250)), rtol=0.04)


def test_misalignment_checks_and_graph_mode(crandn, rng):
    with pytest.raises(ValueError, match="`phase_std`"):
        phy.TransmitMisalignment(phase_std=-0.1)
    with pytest.raises(ValueError, match="`drift_std`"):
        phy.TransmitMisalignment(drift_std=float("nan"))
    mis = phy.TransmitMisalignment(phase_std=0.1)
    s = tf.constant(crandn(rng, 2, 3, 5), tf.complex64)
    assert tf.function(lambda s: mis(s))(s).shape == (2, 3, 5)
    np.testing.assert_allclose(np.abs(mis(s)), np.abs(s), rtol=1e-5)         # phase only: |m| = 1
