"""Truncated channel inversion against the exponential law of Rayleigh |h|^2 and its closed-form MSE."""

import numpy as np
import pytest

import deft6g.optim as optim
import deft6g.phy as phy


@pytest.mark.parametrize("threshold", [0.1, 0.5, 2.0])
def test_participation_is_exponential_ccdf(crandn, rng, threshold):
    """P(device transmits) = P(|h|^2 >= g) = e^{-g} for |h|^2 ~ Exp(1): 2e5 device draws (seed 1234);
    binomial standard error <= 0.0011, tolerance 0.005."""
    h = crandn(rng, 20000, 1, 10)
    d = optim.truncated_inversion(h, 1.0, 0.1, threshold)
    np.testing.assert_allclose(np.mean(d.b != 0), np.exp(-threshold), atol=0.005)
    np.testing.assert_allclose(optim.participation_probability(threshold), np.exp(-threshold), rtol=1e-15)


@pytest.mark.parametrize("budget", optim.BUDGETS)
def test_mean_mse_matches_closed_form(crandn, rng, budget):
    """Mean MSE over 1e5 Rayleigh realisations (N = 1, K = 8, SNR 10 dB, g = 0.3, seed 1234) within 2% of
    `truncation_mse` (peak: K(1-p) + sum_m Binom(m) m e^{mg} E1(mg) / snr; average: K(1-p) + E1(g) / snr).
    The per-realisation MSE is at most K + 1/(snr g), so the relative standard error is below 0.5%."""
    h = crandn(rng, 100000, 1, 8)
    d = optim.truncated_inversion(h, 1.0, 0.1, 0.3, budget)
    np.testing.assert_allclose(np.mean(d.mse), optim.truncation_mse(8, 10.0, 0.3, budget), rtol=0.02)


def test_closed_form_by_numerical_integration():
    """The peak-budget noise term m e^{m g} E1(m g) is E[1 / (g + Y)], Y ~ Exp(rate m): checked by quadrature
    of the whole expectation for K = 3, g = 0.4, snr = 5 (rtol 1e-8)."""
    from scipy.integrate import quad
    from scipy.stats import binom
    K, g, snr = 3, 0.4, 5.0
    p = np.exp(-g)
    noise = sum(binom.pmf(m, K, p) * quad(lambda y: m * np.exp(-m * y) / (g + y), 0, np.inf)[0]
                for m in range(1, K + 1)) / snr
    np.testing.assert_allclose(optim.truncation_mse(K, snr, g), K * (1 - p) + noise, rtol=1e-8)


def test_structure_and_budgets(crandn, rng):
    """Participants arrive aligned (a^H h_k b_k = 1), silent devices send b = 0; MSE = #silent + sigma^2/eta;
    peak: |b_k|^2 <= P_k in every realisation with equality for the weakest participant; average:
    E|b_k|^2 = P over 1e5 realisations within 3% (|b|^2 has a heavy but finite tail above g = 0.2)."""
    H = crandn(rng, 500, 4, 6)
    power = rng.uniform(0.5, 2.0, size=(500, 6))
    d = optim.truncated_inversion(H, power, 0.05, 0.3)
    c = np.einsum("bn,bnk->bk", d.a.conj(), H) * d.b
    on = d.b != 0
    np.testing.assert_allclose(c[on], 1.0, atol=1e-9)
    np.testing.assert_allclose(d.mse, np.sum(~on, -1) + 0.05 / d.eta, rtol=1e-9)
    np.testing.assert_allclose(d.mse, phy.aircomp_mse(H, d.a, d.b, 0.05), rtol=1e-12)
    assert np.all(np.abs(d.b) ** 2 <= power * (1 + 1e-9))
    np.testing.assert_allclose(np.max(np.abs(d.b) ** 2 / power, -1), 1.0, rtol=1e-9)
    h = crandn(rng, 100000, 1, 4)
    avg = optim.truncated_inversion(h, 2.0, 0.1, 0.2, "average")
    np.testing.assert_allclose(np.mean(np.abs(avg.b) ** 2), 2.0, rtol=0.03)


def test_zero_threshold_is_full_inversion(crandn, rng):
    """g = 0 under the peak budget is the aligned design (channel inversion of every device) for N = 1."""
    h = crandn(rng, 50, 1, 5)
    d = optim.truncated_inversion(h, 1.0, 0.1, 0.0)
    a, b = optim.closed_form_design(h, 1.0, "mrc")
    np.testing.assert_allclose(d.mse, phy.aircomp_mse(h, a, b, 0.1), rtol=1e-9)
    assert optim.truncation_mse(5, 10.0, 0.0) == np.inf


def test_best_threshold_beats_a_dense_grid():
    """`best_truncation_threshold` is no worse than brute force over 20,000 thresholds in [1e-4, 30]."""
    for budget in optim.BUDGETS:
        g, mse = optim.best_truncation_threshold(20, 10.0, budget)
        grid = np.logspace(-4, np.log10(30), 20000)
        brute = min(optim.truncation_mse(20, 10.0, x, budget) for x in grid)
        assert mse <= brute + 1e-9 and 1e-4 < g < 30
        np.testing.assert_allclose(mse, optim.truncation_mse(20, 10.0, g, budget), rtol=1e-12)


def test_nobody_transmits_and_errors(crandn, rng):
    h = crandn(rng, 4, 1, 3)
    d = optim.truncated_inversion(h, 1.0, 0.1, 1e6)
    np.testing.assert_array_equal(d.mse, 3.0)
    assert np.all(d.a == 0) and np.all(np.isnan(d.eta)) and set(d.status) == {"nobody transmits"}
    with pytest.raises(ValueError, match="`threshold`"):
        optim.truncated_inversion(h, 1.0, 0.1, -1.0)
    with pytest.raises(ValueError, match="`threshold`"):
        optim.truncated_inversion(h, 1.0, 0.1, 0.0, "average")
    with pytest.raises(ValueError, match="`budget`"):
        optim.truncated_inversion(h, 1.0, 0.1, 0.1, "mean")
    with pytest.raises(ValueError, match="N = 1"):
        optim.truncated_inversion(crandn(rng, 4, 2, 3), 1.0, 0.1, 0.1, "average")
    with pytest.raises(ValueError, match="`noise_var`"):
        optim.truncated_inversion(h, 1.0, -0.1, 0.1)
