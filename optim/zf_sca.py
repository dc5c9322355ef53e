r"""Successive convex approximation (SCA) of the ZF AirComp problem, started from a feasible design.

:math:`\min \|a\|^2` s.t. :math:`|a^H h_k|^2 \ge 1/P_k`. In real form :math:`x = [\Re a; \Im a]`,
:math:`|a^H h_k|^2 = x^T Q_k x` is convex, so its tangent at :math:`x_t` is a global under-estimator:
:math:`x^T Q_k x \ge 2 (Q_k x_t)^T x - x_t^T Q_k x_t`. Replacing each constraint by the tangent gives a
QP whose feasible set contains :math:`x_t` and lies inside the original one, so every iterate is feasible
and :math:`\|a\|^2` never increases (a majorisation-minimisation scheme converging to a KKT point).
The QP is compiled once (DPP) and re-solved with new tangents.
"""

import cvxpy as cp
import numpy as np

from .zf_sdr import real_form

QP_SOLVERS = ("CLARABEL", "SCS")


class ZfSca:
    """SCA refinement for N antennas and K devices. `refine(H, power, a0)` -> (a, history of ||a||^2, status)."""

    def __init__(self, num_rx_ant, num_devices):
        self.N, self.K = num_rx_ant, num_devices
        self.x = cp.Variable(2 * num_rx_ant)
        self.G = cp.Parameter((2 * num_rx_ant, num_devices))
        self.d = cp.Parameter(num_devices)
        self.problem = cp.Problem(cp.Minimize(cp.sum_squares(self.x)), [2 * self.G.T @ self.x >= self.d])
        assert self.problem.is_dcp(dpp=True)
        self.solvers = [s for s in QP_SOLVERS if s in cp.installed_solvers()]

    def refine(self, H, power, a0, max_iter=30, tol=1e-6):
        Q = np.stack([real_form(H[:, k]) for k in range(self.K)])              # [K, 2N, 2N]
        scale = np.sqrt(np.max(np.abs(H) ** 2))                                # x' = x * scale keeps data O(1)
        Q = Q / scale ** 2
        x = np.concatenate([a0.real, a0.imag]) * scale
        target = 1.0 / np.broadcast_to(np.asarray(power, float), (self.K,))
        history, status = [float(x @ x) / scale ** 2], "optimal"
        for _ in range(max_iter):
            Qx = Q @ x                                                          # [K, 2N]
            self.G.value = Qx.T
            self.d.value = Qx @ x + target
            solved = False
            for solver in self.solvers:
                try:
                    self.problem.solve(solver=solver)
                except cp.SolverError:
                    continue
                if self.problem.status == cp.OPTIMAL:
                    solved = True
                    break
            if not solved:
                status = f"sca stopped: {self.problem.status}"
                break
            x_new = self.x.value
            # guard against solver tolerance: rescale onto the original feasible set
            x_new = x_new * np.sqrt(np.max(target / np.einsum("i,kij,j->k", x_new, Q, x_new)))
            if x_new @ x_new > x @ x:                                          # no progress within tolerance
                break
            x = x_new
            history.append(float(x @ x) / scale ** 2)
            if history[-2] - history[-1] <= tol * history[-2]:
                break
        x = x / scale
        return x[:self.N] + 1j * x[self.N:], history, status
