r"""Semidefinite relaxation (SDR) of zero-forcing AirComp beamforming, compiled once per shape, and its dual bound.

ZF problem (Zhu & Huang; Yang et al.): :math:`\min_a \|a\|^2` s.t. :math:`|a^H h_k|^2 \ge 1/P_k`, whose
optimum times :math:`\sigma^2` is the best aligned MSE. With :math:`X = a a^H` relaxed to :math:`X \succeq 0`
it becomes :math:`\min \mathrm{tr} X` s.t. :math:`h_k^H X h_k \ge 1/P_k`, solved here in the equivalent
real form: :math:`Y \in \mathbb{S}^{2N}_+`, :math:`h_k^H X h_k = \tfrac12 \mathrm{tr}(Y Q_k)` with
:math:`Q_k = \tilde h_k \tilde h_k^T + (J\tilde h_k)(J\tilde h_k)^T`, :math:`\tilde h = [\Re h; \Im h]`, and
:math:`\mathrm{tr}X = \tfrac12 \mathrm{tr} Y` (a maximiser can always be taken with the complex structure,
since every :math:`Q_k` commutes with the rotation J). The K constraints are one Parameter matrix acting on
vec(Y), so re-solving costs one sparse product in CVXPY plus the solver.

Dual certificate. For any :math:`\lambda \ge 0` with :math:`\mu = \lambda_{\max}(\sum_k \lambda_k h_k h_k^H) > 0`
and any aligned a: :math:`\|a\|^2 \ge a^H (\sum_k \lambda_k h_k h_k^H) a / \mu = \sum_k \lambda_k |a^H h_k|^2 / \mu
\ge \sum_k \lambda_k / (P_k \mu)`. So :math:`\sum_k \lambda_k/(P_k\mu)` (the SDR dual objective at the
dual-feasible point :math:`\lambda/\mu`) bounds every aligned design whatever the solver's accuracy, and
equals the SDR optimum at the dual optimum (strong duality: both problems are strictly feasible).
`dual_bound` evaluates it in NumPy from the solver's multipliers.
"""

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from .solver_status import compiled_per_shape, installed, solve_in_order


@dataclass
class SdrSolution:
    """One solve of `ZfSdr`.

    Parameters
    ----------
    X : [N, N], complex128
        The relaxed :math:`a a^H` (NaN when failed)
    value : float
        tr X (NaN when failed)
    duals : [K], float64
        Multipliers >= 0, unscaled: only their direction matters to `dual_bound` (NaN when failed)
    status : str
        The outcome of `solver_status.solve_in_order`: "optimal", "inaccurate" (only OPTIMAL_INACCURATE was
        reached; X and duals are still used) or "failed (SOLVER: what; ...)"
    solver : str
        The solver whose answer is returned ("" when failed); a design reports "status (solver)"
    """
    X: np.ndarray
    value: float
    duals: np.ndarray
    status: str
    solver: str


def real_form(h):
    r"""The real form :math:`Q = \tilde h \tilde h^T + (J\tilde h)(J\tilde h)^T` of :math:`h h^H` (module docstring).

    Input
    -----
    h : [N], complex

    Output
    ------
    Q : [2N, 2N], float64 -- :math:`h^H X h = \tfrac12 \mathrm{tr}(Y Q)` for the real form Y of X
    """
    hr = np.concatenate([h.real, h.imag])
    jh = np.concatenate([-h.imag, h.real])
    return np.outer(hr, hr) + np.outer(jh, jh)


def dual_bound(H, power, duals):
    r"""Certified lower bound on :math:`\min \|a\|^2` s.t. :math:`|a^H h_k|^2 \ge 1/P_k` (module docstring).

    Input: H [..., N, K] complex; power [..., K] or scalar (> 0); duals [..., K] (any sign or scale; clipped
    at 0). Output [...] float64: sum_k lambda_k / P_k / lambda_max(sum_k lambda_k h_k h_k^H); NaN where the
    duals are not finite or all zero. Multiply by sigma^2 for an MSE bound.
    """
    lam = np.clip(np.asarray(duals, float), 0.0, None)
    M = np.einsum("...nk,...k,...mk->...nm", H, lam, H.conj())
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.linalg.eigvalsh(np.nan_to_num(M))[..., -1]
        bound = np.sum(lam / np.asarray(power, float), axis=-1) / mu
    return np.where(np.all(np.isfinite(duals), axis=-1) & (mu > 0), bound, np.nan)


class ZfSdr:
    """The ZF SDR for N antennas and K devices, compiled once (DPP) and re-solved per channel.

    `ZfSdr.compiled(N, K)` returns the instance kept for that shape across calls (the 8 most recent shapes,
    `compiled_per_shape`, so every federated round re-uses one compiled problem). `solve(H, power, active=None)`
    with H [N, K] complex and power [K] (> 0) returns an `SdrSolution`; a device with `active[k] = False` is left
    out (its constraint becomes 0 >= 0, its dual 0). Solvers are tried in `SOLVERS`, never warm-started (the
    answer does not depend on earlier calls), under the policy of `solver_status`: the first OPTIMAL answer
    is returned; OPTIMAL_INACCURATE moves on to the next solver and is returned (status "inaccurate") only if
    no solver reaches OPTIMAL; if every solver fails the status says what each did and X, value are NaN.
    """

    SOLVERS = ("SCS", "CLARABEL")
    # Solver accuracy costs bound tightness, never validity: the bound is `dual_bound` of the multipliers.
    # Clarabel is the second solver, at tolerances where it reports OPTIMAL on this SDR.
    SOLVER_OPTIONS = {"SCS": dict(eps_abs=1e-6, eps_rel=1e-6, max_iters=20000),
                      "CLARABEL": dict(tol_gap_abs=1e-7, tol_gap_rel=1e-7, tol_feas=1e-7)}

    def __init__(self, num_rx_ant, num_devices, solvers=SOLVERS):
        self.num_rx_ant, self.num_devices = num_rx_ant, num_devices
        n, k = num_rx_ant, num_devices
        self.Y = cp.Variable((2 * n, 2 * n), PSD=True)
        self.C = cp.Parameter((k, 4 * n ** 2))                      # row k: vec(Q_k) / 2, data-scaled
        self.target = cp.Parameter(k, nonneg=True)
        self.constraint = self.C @ cp.vec(self.Y, order="C") >= self.target
        self.problem = cp.Problem(cp.Minimize(cp.trace(self.Y) / 2), [self.constraint])
        assert self.problem.is_dcp(dpp=True)
        self.solvers = installed(solvers)

    @compiled_per_shape
    def compiled(cls, num_rx_ant, num_devices, solvers=SOLVERS):
        """The problem for this shape and `solvers` (a tuple), built on first use and kept (`compiled_per_shape`)."""
        return cls(num_rx_ant, num_devices, solvers)

    def solve(self, H, power, active=None):
        active = np.ones(self.num_devices, bool) if active is None else np.asarray(active, bool)
        # scale the data near 1 for the solver: Q' = Q / q, target' = (1 / P) / m, so X = X' m / q
        q = np.max(np.abs(H[:, active]) ** 2)
        targets = np.where(active, 1.0 / np.broadcast_to(np.asarray(power, float), (self.num_devices,)), 0.0)
        m = targets.max()
        hr = np.concatenate([H.real, H.imag]) / np.sqrt(q)                     # [2N, K]
        jh = np.concatenate([-H.imag, H.real]) / np.sqrt(q)
        self.C.value = (np.einsum("ik,jk->kij", hr, hr) + np.einsum("ik,jk->kij", jh, jh)).reshape(self.num_devices, -1) / 2
        self.target.value = targets / m
        got = solve_in_order(self.problem, self.solvers, options=self.SOLVER_OPTIONS,
                             read=lambda: (self.Y.value.copy(), self.constraint.dual_value.copy()))
        if got.value is None:
            nan = np.full((self.num_rx_ant, self.num_rx_ant), np.nan)
            return SdrSolution(nan, float("nan"), np.full(self.num_devices, np.nan), got.status, "")
        Y, duals = got.value
        Y = Y * (m / q)
        n = self.num_rx_ant
        X = (Y[:n, :n] + Y[n:, n:]) / 2 + 1j * (Y[n:, :n] - Y[:n, n:]) / 2
        duals = np.where(active, np.clip(np.ravel(duals), 0.0, None), 0.0)
        return SdrSolution(X, float(np.trace(X).real), duals, got.outcome, got.solver)


def candidate_directions(X, num_draws, rng):
    """Principal eigenvector of X plus `num_draws` Gaussian randomisations u = X^{1/2} z, z ~ CN(0, I).

    Input
    -----
    X : [B, N, N], complex -- Hermitian PSD
    num_draws : int
    rng : numpy.random.Generator -- e.g. `deft6g.rng.np_rng()`

    Output
    ------
    U : [B, 1 + num_draws, N], complex -- candidate receive directions (`best_aligned` picks among them)
    """
    w, V = np.linalg.eigh(X)
    w = np.clip(w, 0.0, None)
    z = (rng.standard_normal(X.shape[:1] + (num_draws, w.shape[-1]))
         + 1j * rng.standard_normal(X.shape[:1] + (num_draws, w.shape[-1]))) / np.sqrt(2)
    draws = np.einsum("bdn,bmn->bdm", z * np.sqrt(w)[:, None, :], V)
    return np.concatenate([V[:, None, :, -1], draws], axis=1)
