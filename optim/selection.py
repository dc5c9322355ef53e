r"""Device selection for MIMO AirComp: a large device set S whose aligned design meets a target on the MSE of
the *mean*, :math:`\mathrm{MSE}(S)/|S|^2 \le \gamma` (Yang, Jiang, Shi, Ding, "Federated learning via
over-the-air computation", IEEE TWC 19(3), 2020).

With :math:`a = c\,m`, the best aligned design over S meets the target iff some m satisfies
:math:`\|m\|^2 \le \tau_k |m^H h_k|^2` for all :math:`k \in S`, :math:`\tau_k = \gamma |S|^2 P_k / \sigma^2`.
Two selectors:

- "greedy": solve the ZF SDR over the active devices, round it (`sdr_design`), stop when the target holds,
  else drop the device with the largest SDR multiplier (the largest marginal cost of keeping it; if the
  SDR failed, `sdr_design`'s MRC fallback is used and the device with the weakest P_k ||h_k||^2 goes).
- "dc" (Yang et al., Alg. 1, difference-of-convex programming): lift :math:`M = m m^H` and
  (1) sparsity: for k = 0, 1, ... solve
  :math:`\min_{x \ge 0, M \succeq 0} \|x\|_1 - |||x|||_k + \mathrm{tr}M - \|M\|_2` s.t.
  :math:`\mathrm{tr}M - \tau_i h_i^H M h_i \le x_i`, :math:`\mathrm{tr}M \ge 1` (:math:`|||x|||_k`: the sum of the
  k largest entries; :math:`\tau_i` with :math:`|S| = K - k`) by DCA -- linearise the concave parts at the
  last iterate and re-solve the convex SDP -- until the objective is 0 (x k-sparse, M rank one);
  (2) feasibility: order devices by :math:`x_i`, and for s = K, K-1, ... test the first s with the DC
  program :math:`\min \mathrm{tr}M - \|M\|_2` s.t. :math:`\mathrm{tr}M - \tau_i h_i^H M h_i \le 0`,
  :math:`\mathrm{tr}M \ge 1`; the first s with a rank-one solution is selected. Its direction seeds the
  final aligned design (refined by SCA), whose MSE decides `met`.

Both DC programs are compiled once per (N, K) (DPP: the channel terms and the linearisation points are
Parameters) and solved in the real form of `zf_sdr`.
"""

from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import tensorflow as tf

from deft6g.checks import check_noise_var
from deft6g.phy import aircomp_mse
from deft6g.rng import reseed

from .aligned import check_channel_and_power
from .design import AirCompDesign, round_sdr, sdr_design
from .solver_status import compiled_per_shape, installed, solve_in_order
from .zf_sdr import real_form

SELECTORS = ("greedy", "dc")
"""Device-selection algorithms: greedy SDR and the DC programme."""


@dataclass
class Selection:
    """The devices selected and the aligned design over them.

    Parameters
    ----------
    selected : list of int -- indices of the selected devices S (at least one)
    dropped : list of int -- indices of the others
    design : AirCompDesign -- the aligned design over S: a [N], b [K] (0 for dropped devices), mse (the MSE of
        the *sum* over S, linear), zf_lower_bound (sigma^2 x the SDR dual bound over S; NaN for "dc")
    mean_mse : float -- design.mse / |S|^2, the MSE of the mean
    met : bool -- mean_mse <= mse_target
    method : str -- "greedy" or "dc"
    status : str -- per `deft6g.optim.solver_status`; "failed (DC: ...): greedy selection used; ..." when the
        DC programs could not be solved
    """
    selected: list
    dropped: list
    design: AirCompDesign
    mean_mse: float
    met: bool
    method: str
    status: str


def select_devices(H, power, noise_var, mse_target, method="greedy", num_draws=50, seed=None):
    r"""Select devices so that the aligned design's MSE of the mean, MSE / |S|^2, is at most `mse_target`.

    Input
    -----
    H : [N, K], complex -- one channel realisation
    power : scalar or [K], float -- P_k, linear, > 0
    noise_var : scalar, float -- sigma^2 per receive antenna, linear, >= 0
    mse_target : float -- > 0, target MSE of the mean of unit-variance payloads (linear)
    method : "greedy" | "dc" -- the selector (module docstring)
    num_draws : int -- SDR randomisations of each rounding (`round_sdr`)
    seed : None | int -- re-seeds the library RNG

    Output
    ------
    Selection -- at least one device is always kept; `met` says whether the target holds

    Example
    -------
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=1, num_devices=8, precision="double")(1, seed=0)[0]  # [1, 8]
    >>> sel = optim.select_devices(H.numpy(), 1.0, 0.1, mse_target=0.03, method="greedy", seed=0)
    >>> sel.selected, sel.met, round(sel.mean_mse, 4)          # all 8 devices: MSE of the mean 0.486
    ([0, 1, 3, 4, 5, 7], True, 0.0229)
    """
    Ht, pt = check_channel_and_power(H, power, tf.complex128)
    if Ht.shape.rank != 2:
        raise ValueError(f"`H` must have shape [N, K] (one realisation), got {Ht.shape.as_list()}")
    if not np.isfinite(mse_target) or mse_target <= 0:
        raise ValueError(f"`mse_target` must be a positive number, got {mse_target!r}")
    noise_var = float(check_noise_var(noise_var, tf.float64))
    if method not in SELECTORS:
        raise ValueError(f"`method` must be one of {SELECTORS}, got {method!r}")
    reseed(seed)
    H = Ht.numpy()
    P = np.broadcast_to(pt.numpy(), (H.shape[1],)).astype(float)
    if method == "dc":
        try:
            return _dc(H, P, noise_var, mse_target, num_draws)
        except _DcFailed as err:
            sel = _greedy(H, P, noise_var, mse_target, num_draws)
            sel.status = f"failed (DC: {err}): greedy selection used; {sel.status}"
            return sel
    return _greedy(H, P, noise_var, mse_target, num_draws)


def _result(H, P, noise_var, mse_target, a, idx, method, status, bound=np.nan):
    """Selection over devices idx with receive vector a (aligned on them: b_k = 1 / (a^H h_k))."""
    k = H.shape[1]
    b = np.zeros(k, complex)
    b[idx] = 1.0 / (a.conj() @ H[:, idx])
    mse = float(aircomp_mse(H[:, idx], a, b[idx], noise_var))           # the sum over the selected devices
    design = AirCompDesign(a=a, b=b, mse=np.asarray(mse), status=np.asarray(status), method="sdr-selection",
                           zf_lower_bound=np.asarray(noise_var * bound))
    mean = mse / len(idx) ** 2
    return Selection(selected=[int(i) for i in idx], dropped=[int(i) for i in np.setdiff1d(np.arange(k), idx)],
                     design=design, mean_mse=mean, met=bool(mean <= mse_target), method=method, status=status)


def _greedy(H, P, noise_var, mse_target, num_draws):
    active = np.ones(H.shape[1], bool)
    while True:
        a, duals, bound, status = sdr_design(H[None], P[None], num_draws, active=active[None])
        idx = np.flatnonzero(active)
        sel = _result(H, P, noise_var, mse_target, a[0], idx, "greedy", status[0], bound[0])
        if sel.met or len(idx) == 1:
            return sel
        # the largest multiplier; without one (SDR failed, status says so) the weakest P_k ||h_k||^2
        cost = duals[0] if np.all(np.isfinite(duals[0])) else 1.0 / (P * np.sum(np.abs(H) ** 2, axis=0))
        active[idx[np.argmax(cost[idx])]] = False


class _DcFailed(RuntimeError):
    pass


class DcPrograms:
    """The two convex sub-problems of the DC selection for N antennas and K devices (real form, DPP).

    Data: C [K, 4N^2], row i = tau_i vec(Q_i) / 2 (so tau_i h_i^H M h_i = C_i vec(Y)); rows of devices left
    out of step 2 are vec(I) / 2, which makes their constraint 0 <= 0. Linearisation points: w [K] (the
    subgradient of |||x|||_k: 1 on the k largest x_i) and v [4N^2] = vec(Q(u)) / 2 for the top eigenvector u
    of the last M (the subgradient of ||M||_2). `DcPrograms.compiled(N, K)` keeps one instance per shape (the 8
    most recent).
    """

    SOLVERS = ("CLARABEL", "SCS")

    def __init__(self, num_rx_ant, num_devices):
        n, k = num_rx_ant, num_devices
        d = 2 * n
        self.Y = cp.Variable((d, d), PSD=True)
        self.x = cp.Variable(k, nonneg=True)
        self.C = cp.Parameter((k, d * d))
        self.w = cp.Parameter(k, nonneg=True)
        self.v = cp.Parameter(d * d)
        vec, tr = cp.vec(self.Y, order="C"), cp.trace(self.Y) / 2
        rank_gap = tr - self.v @ vec                                     # tr M - u^H M u >= tr M - ||M||_2
        self.sparse = cp.Problem(cp.Minimize(cp.sum(self.x) - self.w @ self.x + rank_gap),
                                 [tr - self.C @ vec <= self.x, tr >= 1])
        self.feasible = cp.Problem(cp.Minimize(rank_gap), [tr - self.C @ vec <= 0, tr >= 1])
        assert self.sparse.is_dcp(dpp=True) and self.feasible.is_dcp(dpp=True)
        self.solvers = installed(self.SOLVERS)

    @compiled_per_shape
    def compiled(cls, num_rx_ant, num_devices):
        """The programs for this shape, built on first use and kept (`compiled_per_shape`: the 8 most recent)."""
        return cls(num_rx_ant, num_devices)

    def solve(self, problem):
        """Solve `problem` (`sparse` or `feasible`) under the policy of `solver_status`; an INFEASIBLE certificate
        is an answer. Returns a `Solve` whose value is (Y [2N, 2N], x [K] or None)."""
        return solve_in_order(problem, self.solvers, infeasible_ok=True,
                              read=lambda: (self.Y.value.copy(), self.x.value.copy() if problem is self.sparse else None))


def _dca(prog, problem, k_sparse, max_iter=30, tol=1e-7):
    """DCA on `problem` (prog.sparse or prog.feasible): returns (objective, M [N, N], x [K] or None, status)."""
    n = prog.Y.shape[0] // 2
    prog.w.value = np.zeros(prog.x.shape[0])
    prog.v.value = np.zeros(prog.Y.shape[0] ** 2)
    last, status = np.inf, None
    for _ in range(max_iter):
        got = prog.solve(problem)
        if got.outcome == "infeasible":
            return np.inf, None, None, got.status
        if got.value is None:
            raise _DcFailed(got.tried)
        if status is None or got.outcome == "inaccurate":                # an inaccurate solve stays reported
            status = got.status
        Y, x = got.value
        M = (Y[:n, :n] + Y[n:, n:]) / 2 + 1j * (Y[n:, :n] - Y[:n, n:]) / 2
        w, V = np.linalg.eigh(M)
        top = np.sort(x)[::-1][:k_sparse].sum() if x is not None else 0.0
        objective = (np.sum(x) - top if x is not None else 0.0) + np.trace(M).real - w[-1]
        if objective <= 1e-6 or last - objective <= tol:
            return objective, M, x, status
        last = objective
        prog.v.value = real_form(V[:, -1]).ravel() / 2
        if x is not None:
            prog.w.value = np.isin(np.arange(len(x)), np.argsort(x)[::-1][:k_sparse]).astype(float)
    return objective, M, x, status


def _dc(H, P, noise_var, mse_target, num_draws):
    n, k = H.shape
    prog = DcPrograms.compiled(n, k)
    q = np.max(np.abs(H) ** 2)
    Q = np.stack([real_form(H[:, i] / np.sqrt(q)).ravel() / 2 for i in range(k)])   # [K, 4N^2]
    tau = lambda s: mse_target * s ** 2 * P * q / max(noise_var, 1e-300)          # noqa: E731
    eye = np.eye(2 * n).ravel() / 2
    # step 1: sparsity inducing, k_sparse = 0, 1, ... devices allowed to violate
    x = np.zeros(k)
    for k_sparse in range(k):
        prog.C.value = tau(k - k_sparse)[:, None] * Q
        objective, _, x_new, _ = _dca(prog, prog.sparse, k_sparse)
        if x_new is not None:
            x = x_new
        if objective <= 1e-6:
            break
    # step 2: feasibility detection over prefixes of the devices ordered by x
    order = np.argsort(x, kind="stable")
    for s in range(k, 0, -1):
        idx = np.sort(order[:s])
        keep = np.isin(np.arange(k), idx)
        prog.C.value = np.where(keep[:, None], tau(s)[:, None] * Q, eye[None, :])
        objective, M, _, status = _dca(prog, prog.feasible, 0)
        if M is None:
            continue
        a, sca = round_sdr(H[None][:, :, idx], M[None], P[None, idx], num_draws=num_draws)
        sel = _result(H, P, noise_var, mse_target, a[0], idx, "dc", f"{status}; SCA {sca[0]}")
        if sel.met or s == 1:
            return sel
    raise _DcFailed("no device set passed the feasibility step")          # unreachable: s = 1 returns
