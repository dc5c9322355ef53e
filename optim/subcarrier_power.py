r"""Power allocation across OFDM subcarriers for AirComp under a per-device total power budget (CVXPY).

On subcarrier f the server uses a unit-norm receive direction :math:`u_f` (u = 1 for N = 1, else the
normalised MRC or ZF direction of that subcarrier's channel); device k sees :math:`g_{kf} = u_f^H h_{kf}` and
inverts it, :math:`b_{kf} = \sqrt{\eta_f} / g_{kf}`, with :math:`a_f = u_f / \sqrt{\eta_f}`: every device arrives
aligned and subcarrier f costs :math:`\sigma^2 / \eta_f`. Device k spends :math:`\eta_f / |g_{kf}|^2` on
subcarrier f out of its total budget :math:`P_k` (summed over the F subcarriers of one OFDM symbol):

.. math:: \min_{\eta > 0} \sum_f \frac{\sigma^2}{\eta_f} \quad \text{s.t.} \quad
          \sum_f \frac{\eta_f}{|g_{kf}|^2} \le P_k \quad \forall k,

a convex problem. For K = 1 it has the closed form :math:`\eta_f \propto |g_f|`, MSE
:math:`\sigma^2 (\sum_f 1/|g_f|)^2 / P`. The uniform baseline gives every device :math:`P_k / F` per subcarrier
(:math:`\eta^u_f = \min_k P_k |g_{kf}|^2 / F`). Solved for a whole batch at once in the scaled variable
:math:`x = \eta / \eta^u` (x = 1 is feasible, so the allocation never loses to uniform power), with one
CVXPY problem compiled per (batch, K, F) and re-solved with new Parameter values.
"""

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from deft6g.checks import check_noise_var
from deft6g.phy import aircomp_mse

from .aligned import check_channel_and_power
from .design import AirCompDesign

from .solver_status import compiled_per_shape, installed, solve_in_order

DIRECTIONS = ("mrc", "zf")


@dataclass
class SubcarrierDesign(AirCompDesign):
    """An `AirCompDesign` over F subcarriers.

    Parameters
    ----------
    a : [..., F, N], complex128; b : [..., F, K], complex128 -- per subcarrier
    mse : [...], float64 -- summed over the F subcarriers (linear)
    eta : [..., F], float64 -- the denoising factor per subcarrier
    status, method -- as `AirCompDesign` ("closed form" for uniform power)
    duals : None | [..., K], float64 -- budget multipliers of the scaled problem (> 0: that device's total
        budget is met with equality; NaN when the solve failed; None for uniform power)
    """
    duals: np.ndarray = None


class SubcarrierPower:
    r"""The scaled allocation problem for `batch` realisations, K devices and F subcarriers, built once (DPP).

    `solve(weights, coeffs)` with weights [B, F] (objective weight of 1/x_f, >= 0) and coeffs [B, K, F]
    (constraint :math:`\sum_f c_{kf} x_f \le 1`, >= 0) returns a `solver_status.Solve` whose value is
    (x [B, F], duals [B, K]), or None when every solver in `solvers` fails (the policy of `solver_status`).
    `SubcarrierPower.compiled(batch, K, F)` keeps the last 8 shapes built, so repeated calls re-solve.
    """

    SOLVERS = ("CLARABEL", "SCS")
    SOLVER_OPTIONS = {"CLARABEL": dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9),
                      "SCS": dict(eps_abs=1e-7, eps_rel=1e-7, max_iters=50000)}

    def __init__(self, batch, num_devices, num_subcarriers, solvers=SOLVERS):
        B, K, F = batch, num_devices, num_subcarriers
        self.shape = (B, K, F)
        self.x = cp.Variable((B, F), pos=True)
        self.weights = cp.Parameter((B, F), nonneg=True)
        self.coeffs = cp.Parameter((B * K, F), nonneg=True)
        repeat = sp.kron(sp.eye(B), np.ones((K, 1)), format="csr")           # row b*K + k picks realisation b
        self.constraint = cp.sum(cp.multiply(self.coeffs, repeat @ self.x), axis=1) <= 1
        self.problem = cp.Problem(cp.Minimize(cp.sum(cp.multiply(self.weights, cp.inv_pos(self.x)))),
                                  [self.constraint])
        assert self.problem.is_dcp(dpp=True)
        self.solvers = installed(solvers)

    def solve(self, weights, coeffs):
        B, K, F = self.shape
        self.weights.value = weights
        self.coeffs.value = coeffs.reshape(B * K, F)
        return solve_in_order(self.problem, self.solvers, options=self.SOLVER_OPTIONS, warm_start=True,
                              read=lambda: (self.x.value.copy(), self.constraint.dual_value.reshape(B, K)))

    @compiled_per_shape
    def compiled(cls, batch, num_devices, num_subcarriers):
        """The problem for this shape, built on first use and kept (`compiled_per_shape`: the 8 most recent)."""
        return cls(batch, num_devices, num_subcarriers)


def _gains(H, total_power, noise_var, direction):
    """Validate; return (H [B, F, N, K], u [B, F, N] unit norm, g [B, F, K], P [B, K], nv [B], lead shape)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"`direction` must be one of {DIRECTIONS}, got {direction!r}")
    if np.ndim(H) < 3:
        raise ValueError(f"`H` must have shape [..., F, N, K], got shape {np.shape(H)}")
    Ht, pt = check_channel_and_power(H, total_power, None)
    H = Ht.numpy().astype(complex)
    lead, (F, N, K) = H.shape[:-3], H.shape[-3:]
    P = np.broadcast_to(pt.numpy().astype(float), lead + (K,)).reshape(-1, K)
    nv = check_noise_var(noise_var, tf.float64).numpy()
    nv = np.broadcast_to(nv, lead).reshape(-1)
    H = H.reshape((-1, F, N, K))
    if direction == "zf" and 1 < N < K:
        raise ValueError(f"`direction` 'zf' needs N >= K antennas, got N = {N}, K = {K}")
    if N == 1:
        u = np.ones(H.shape[:-1], complex)
    elif direction == "mrc":
        u = np.sum(H / np.linalg.norm(H, axis=-2, keepdims=True), axis=-1)
    else:
        gram = np.conj(np.swapaxes(H, -1, -2)) @ H
        u = (H @ np.linalg.solve(gram, np.ones(H.shape[:-2] + (K, 1))))[..., 0]   # u^H h_k = 1 for every k
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    g = np.einsum("bfn,bfnk->bfk", u.conj(), H)
    return H, u, g, P, nv, lead


def _design(H, u, g, eta, nv, lead, status, method):
    """Aligned per-subcarrier design for eta [B, F]: a [..., F, N], b [..., F, K], total MSE over F [...]."""
    a = u / np.sqrt(eta)[..., None]
    b = np.sqrt(eta)[..., None] / g
    mse = np.sum(aircomp_mse(H, a, b, nv[:, None]), axis=-1)
    F, N, K = H.shape[1:]
    return SubcarrierDesign(a=a.reshape(lead + (F, N)), b=b.reshape(lead + (F, K)), mse=mse.reshape(lead),
                         status=np.full(lead, status, dtype=object), method=method, eta=eta.reshape(lead + (F,)))


def uniform_subcarrier_power(H, total_power, noise_var, direction="mrc"):
    """Every device spends P_k / F on each subcarrier; channel inversion per subcarrier (the baseline).

    Input
    -----
    H : [..., F, N, K], complex
    total_power : scalar or [..., K], float -- P_k over the F subcarriers, linear, > 0
    noise_var : scalar or [...], float -- per antenna, per subcarrier, linear, >= 0
    direction : "mrc" (default) | "zf" -- u_f (zf needs N >= K)

    Output
    ------
    SubcarrierDesign -- a [..., F, N], b [..., F, K], mse [...] (sum over subcarriers), eta [..., F]

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("tdl-a", 2, 4, num_subcarriers=16, precision="double")(10, seed=0).numpy()
    >>> uniform = optim.uniform_subcarrier_power(H, 1.0, 0.1)
    >>> gain_db = 10 * np.log10(uniform.mse / optim.allocate_subcarrier_power(H, 1.0, 0.1).mse)   # [10]: the saving
    >>> bool(np.all(gain_db >= 0)), round(float(np.mean(gain_db)), 1)
    (True, 0.2)
    """
    H, u, g, P, nv, lead = _gains(H, total_power, noise_var, direction)
    eta = np.min(P[:, None, :] * np.abs(g) ** 2, axis=-1) / H.shape[1]
    return _design(H, u, g, eta, nv, lead, "closed form", f"uniform-{direction}")


def allocate_subcarrier_power(H, total_power, noise_var, direction="mrc"):
    """The MSE-optimal allocation of each device's total power across subcarriers (module docstring).

    Input and output as `uniform_subcarrier_power`; status (`solver_status` policy) "optimal (SOLVER)",
    "inaccurate (SOLVER)", or "failed (...): uniform power used" (the uniform allocation, duals NaN). All realisations go into one
    solve; `.duals` [..., K] are the budget multipliers of the scaled problem (> 0: budget met with equality).
    """
    H, u, g, P, nv, lead = _gains(H, total_power, noise_var, direction)
    B, F, _, K = H.shape
    eta_u = np.min(P[:, None, :] * np.abs(g) ** 2, axis=-1) / F               # [B, F]
    inv = 1.0 / eta_u
    weights = inv / inv.sum(-1, keepdims=True)                                # per-realisation scaling
    coeffs = eta_u[:, None, :] / (P[:, :, None] * np.abs(np.swapaxes(g, 1, 2)) ** 2)   # [B, K, F]
    got = SubcarrierPower.compiled(B, K, F).solve(weights, coeffs)
    if got.value is None:
        duals = np.full((B, K), np.nan)
        design = _design(H, u, g, eta_u, nv, lead, f"{got.status}: uniform power used", "subcarrier")
    else:
        x, duals = got.value
        x = x / np.max(np.sum(coeffs * x[:, None, :], -1), -1, keepdims=True)  # solver slack: onto the budget
        design = _design(H, u, g, eta_u * x, nv, lead, got.status, "subcarrier")
    design.duals = duals.reshape(lead + (K,))
    return design
