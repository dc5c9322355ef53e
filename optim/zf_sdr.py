r"""Semidefinite relaxation (SDR) of zero-forcing AirComp beamforming, built once with CVXPY Parameters.

ZF problem (Zhu & Huang; Yang et al.): :math:`\min_a \|a\|^2` s.t. :math:`|a^H h_k|^2 \ge 1/P_k`, whose
optimum times :math:`\sigma^2` is the best aligned MSE. With :math:`X = a a^H` relaxed to :math:`X \succeq 0`
it becomes :math:`\min \mathrm{tr} X` s.t. :math:`h_k^H X h_k \ge 1/P_k`, solved here in the equivalent
real form: :math:`Y \in \mathbb{S}^{2N}_+`, :math:`h_k^H X h_k = \tfrac12 \mathrm{tr}(Y Q_k)` with
:math:`Q_k = \tilde h_k \tilde h_k^T + (J\tilde h_k)(J\tilde h_k)^T`, :math:`\tilde h = [\Re h; \Im h]`, and
:math:`\mathrm{tr}X = \tfrac12 \mathrm{tr} Y` (a maximiser can always be taken with the complex structure,
since every :math:`Q_k` commutes with the rotation J).
"""

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

SOLVER_ORDER = ("SCS", "CLARABEL")
SOLVER_OPTIONS = {"SCS": dict(eps_abs=1e-6, eps_rel=1e-6, max_iters=20000),
                  "CLARABEL": dict(tol_gap_abs=1e-7, tol_gap_rel=1e-7, tol_feas=1e-7)}


@dataclass
class SdrSolution:
    """X [N, N] complex (the relaxed a a^H); value = tr X (nan when failed); duals [K]; status; solver."""
    X: np.ndarray
    value: float
    duals: np.ndarray
    status: str
    solver: str


def real_form(h):
    """Q = h~ h~^T + (J h~)(J h~)^T for complex h [N]; Q [2N, 2N] real."""
    hr = np.concatenate([h.real, h.imag])
    jh = np.concatenate([-h.imag, h.real])
    return np.outer(hr, hr) + np.outer(jh, jh)


class ZfSdr:
    """The ZF SDR for N antennas and K devices, compiled once (DPP) and re-solved per channel.

    `solve(H, power)` with H [N, K] complex and power [K] (> 0) returns an `SdrSolution`. A device with
    `active[k] = False` is left out (its constraint becomes 0 >= 0). Solvers are tried in
    `SOLVER_ORDER` (warm-started); an inaccurate or failed solve moves to the next; if all fail the
    status says so and X, value are NaN.
    """

    def __init__(self, num_rx_ant, num_devices, solvers=SOLVER_ORDER):
        self.N, self.K = num_rx_ant, num_devices
        self.Y = cp.Variable((2 * self.N, 2 * self.N), PSD=True)
        self.Q = [cp.Parameter((2 * self.N, 2 * self.N), PSD=True) for _ in range(self.K)]
        self.target = cp.Parameter(self.K, nonneg=True)
        self.constraints = [cp.trace(self.Y @ self.Q[k]) / 2 >= self.target[k] for k in range(self.K)]
        self.problem = cp.Problem(cp.Minimize(cp.trace(self.Y) / 2), self.constraints)
        assert self.problem.is_dcp(dpp=True)
        installed = set(cp.installed_solvers())
        self.solvers = [s for s in solvers if s in installed]
        if not self.solvers:
            raise ValueError(f"none of the solvers {solvers} is installed (have {sorted(installed)})")

    def solve(self, H, power, active=None):
        active = np.ones(self.K, bool) if active is None else np.asarray(active, bool)
        # scale the data near 1 for the solver: Q' = Q / q, target' = (1 / P) / m, so X = X' m / q
        q = np.max(np.abs(H) ** 2)
        targets = np.where(active, 1.0 / np.broadcast_to(np.asarray(power, float), (self.K,)), 0.0)
        m = targets.max()
        for k in range(self.K):
            self.Q[k].value = real_form(H[:, k]) / q
        self.target.value = targets / m
        tried = []
        for solver in self.solvers:
            try:
                self.problem.solve(solver=solver, warm_start=True, **SOLVER_OPTIONS.get(solver, {}))
            except cp.SolverError as err:
                tried.append(f"{solver}: error {err}")
                continue
            if self.problem.status == cp.OPTIMAL:
                Y = self.Y.value * m / q
                X = (Y[:self.N, :self.N] + Y[self.N:, self.N:]) / 2 + 1j * (Y[self.N:, :self.N] - Y[:self.N, self.N:]) / 2
                duals = np.array([c.dual_value for c in self.constraints], float).ravel()
                return SdrSolution(X, float(np.trace(X).real), duals, cp.OPTIMAL, solver)
            tried.append(f"{solver}: {self.problem.status}")
        nan = np.full((self.N, self.N), np.nan)
        return SdrSolution(nan, float("nan"), np.full(self.K, np.nan), "failed (" + "; ".join(tried) + ")", "")


def candidate_directions(X, num_draws, rng):
    """Principal eigenvector of X plus `num_draws` Gaussian randomisations u = X^{1/2} z, z ~ CN(0, I).

    Output [1 + num_draws, N] complex.
    """
    w, V = np.linalg.eigh(X)
    w = np.clip(w, 0.0, None)
    z = (rng.standard_normal((num_draws, len(w))) + 1j * rng.standard_normal((num_draws, len(w)))) / np.sqrt(2)
    draws = (z * np.sqrt(w)) @ V.T
    return np.vstack([V[:, -1][None, :], draws])
