r"""Successive convex approximation (SCA) of the ZF AirComp problem, started from a feasible design.

:math:`\min \|a\|^2` s.t. :math:`|a^H h_k|^2 \ge t_k = 1/P_k`. The constraint function is convex, so its
tangent at :math:`a_t` is a global under-estimator: :math:`|a^H h_k|^2 \ge 2\Re(c_k^H a) - |g_k|^2` with
:math:`g_k = h_k^H a_t`, :math:`c_k = h_k g_k`. Replacing each constraint by the tangent gives a QP whose
feasible set contains :math:`a_t` and lies inside the original one, so every iterate is feasible and
:math:`\|a\|^2` never increases (a majorisation-minimisation scheme converging to a KKT point).

Each QP is a least-distance problem, :math:`\min \|x\|^2` s.t. :math:`G x \ge d` in the real form
:math:`x = [\Re a; \Im a]`, :math:`G_k = 2[\Re c_k; \Im c_k]^T`, :math:`d_k = |g_k|^2 + t_k`. Its dual is a
K-dimensional non-negative least-squares problem (Lawson & Hanson, *Solving Least Squares Problems*, ch. 23):
:math:`u = \arg\min_{u \ge 0} \|E u - f\|` with :math:`E = [G^T; d^T]`, :math:`f = e_{2N+1}`; then
:math:`r = E u - f` and :math:`x = -r_{1:2N} / r_{2N+1}` (r = 0 would mean an infeasible QP, impossible here
since :math:`a_t` is feasible). It is solved in NumPy/SciPy (`scipy.optimize.nnls`), no modelling layer.
"""

import numpy as np
from scipy.optimize import nnls


def zf_sca(H, power, a0, max_iter=30, tol=1e-6):
    r"""Refine a feasible ZF design.

    Input
    -----
    H : [N, K], complex128
    power : scalar or [K], float -- P_k, linear, > 0
    a0 : [N], complex -- a start; rescaled onto :math:`|a^H h_k|^2 \ge 1/P_k` first
    max_iter : int; tol : float -- stop when ||a||^2 falls by less than `tol` relative

    Output
    ------
    a : [N], complex128 -- feasible, :math:`\|a\|^2` no larger than at the start
    history : list of float -- :math:`\|a\|^2` per accepted iterate (non-increasing)
    status : str -- "converged", "max_iter" or "stopped at iteration i: reason" (a is then the last feasible
        iterate)
    """
    k = H.shape[1]
    target = 1.0 / np.broadcast_to(np.asarray(power, float), (k,))
    scale = np.sqrt(np.max(np.abs(H) ** 2))                                # keep the data O(1)
    Hs = H / scale
    a = a0 * scale
    a = a * np.sqrt(np.max(target / np.abs(a.conj() @ Hs) ** 2))           # onto the feasible set (exact)
    history = [float(np.vdot(a, a).real) / scale ** 2]
    status = "max_iter"
    f = np.zeros(2 * H.shape[0] + 1)
    f[-1] = 1.0
    for it in range(1, max_iter + 1):
        g = Hs.conj().T @ a                                                # [K] = h_k^H a_t
        c = Hs * g                                                         # [N, K]
        E = np.vstack([2 * c.real, 2 * c.imag, (np.abs(g) ** 2 + target)[None]])
        try:
            u, _ = nnls(E, f)
        except RuntimeError as err:                                        # NNLS iteration limit
            status = f"stopped at iteration {it}: {err}"
            break
        r = E @ u - f
        if not np.all(np.isfinite(r)) or r[-1] >= 0:
            status = f"stopped at iteration {it}: tangent QP reported infeasible (r = {r[-1]:.3g})"
            break
        x = -r[:-1] / r[-1]
        a_new = x[:len(x) // 2] + 1j * x[len(x) // 2:]
        gains = np.abs(a_new.conj() @ Hs) ** 2
        if np.any(gains == 0):
            status = f"stopped at iteration {it}: a step left a device with zero gain"
            break
        a_new = a_new * np.sqrt(np.max(target / gains))                    # rounding guard: exact feasibility
        if np.vdot(a_new, a_new).real >= np.vdot(a, a).real:               # no progress within rounding
            status = "converged"
            break
        a = a_new
        history.append(float(np.vdot(a, a).real) / scale ** 2)
        if history[-2] - history[-1] <= tol * history[-2]:
            status = "converged"
            break
    return a / scale, history, status
