r"""The ZF SDR solved through its K-dimensional dual by a batched barrier (interior-point) method in NumPy.

The SDR :math:`\min \mathrm{tr}X` s.t. :math:`h_k^H X h_k \ge t_k = 1/P_k`, :math:`X \succeq 0` (`zf_sdr`) has
the dual :math:`\max_{\lambda \ge 0} t^T\lambda` s.t. :math:`M(\lambda) = \sum_k \lambda_k h_k h_k^H \preceq I`:
K unknowns and one N x N LMI. Path following on the self-concordant barrier
:math:`F_\tau(\lambda) = -\tau t^T\lambda - \log\det(I - M(\lambda)) - \sum_k \log\lambda_k` (Boyd &
Vandenberghe, *Convex Optimization*, 11.2-11.6): gradient :math:`-\tau t_k + h_k^H S h_k - 1/\lambda_k` and
Hessian :math:`|h_k^H S h_l|^2 + \delta_{kl}/\lambda_k^2` with :math:`S = (I - M)^{-1}`; damped Newton steps
:math:`1/(1+\delta)` (:math:`\delta` the Newton decrement) never leave the domain, so no line search is
needed and every realisation of a batch moves in lock step. On the central path :math:`X = S/\tau` is
primal feasible (:math:`h_k^H X h_k = t_k + 1/(\tau\lambda_k)`) and the duality gap is
:math:`(N + K)/\tau`; :math:`\tau` grows tenfold per centring until the gap is below `tol` relative.
The bound used downstream is `zf_sdr.dual_bound` of the returned multipliers (certified whatever the
accuracy); CVXPY's `ZfSdr` solves the same problem and is the fallback and the test reference.
"""

import numpy as np


def sdr_barrier(H, power, active=None, tol=1e-7, max_newton=400):
    """Solve the ZF SDR for a batch.

    Input
    -----
    H : [B, N, K], complex128
    power : [B, K], float64 -- P_k, linear, > 0
    active : None | [B, K], bool -- inactive devices get no constraint and multiplier 0
    tol : float -- relative duality gap; max_newton : int -- Newton steps in all

    Output
    ------
    X : [B, N, N], complex128 -- primal, feasible up to rounding
    duals : [B, K], float64 -- >= 0
    value : [B], float64 -- tr X
    converged : [B], bool -- finite and gap <= tol; the rest should go to another solver ("optimal (barrier)"
        in the policy of `solver_status`)
    """
    batch, n, k = H.shape
    active = np.ones((batch, k), bool) if active is None else np.asarray(active, bool)
    q = np.max(np.abs(H) ** 2 * active[:, None, :], axis=(-2, -1))              # data scaling, as `ZfSdr`
    t = np.where(active, 1.0 / power, 0.0)
    m = np.max(t, axis=-1)
    G = H * active[:, None, :] / np.sqrt(q)[:, None, None]
    t = t / m[:, None]
    lam = np.where(active, 0.5 / np.linalg.eigvalsh(G @ G.conj().transpose(0, 2, 1))[:, -1:], 1.0)
    nu = n + active.sum(-1)
    tau = nu / np.sum(t * lam, axis=-1)
    eye = np.eye(n)
    pair = active[:, :, None] & active[:, None, :]
    done = np.zeros(batch, bool)
    for _ in range(max_newton):
        try:
            L = np.linalg.cholesky(eye - (G * lam[:, None, :]) @ G.conj().transpose(0, 2, 1))
        except np.linalg.LinAlgError:                                          # left the domain (rounding)
            break
        Linv_G = np.linalg.solve(L, G)                                          # L^{-1} G
        A = Linv_G.conj().transpose(0, 2, 1) @ Linv_G                           # G^H S G [B, K, K]
        grad = np.where(active, -tau[:, None] * t + A.diagonal(0, 1, 2).real - 1.0 / lam, 0.0)
        hess = np.where(pair, np.abs(A) ** 2, 0.0) + np.eye(k) * np.where(active, 1.0 / lam ** 2, 1.0)[:, :, None]
        step = -np.linalg.solve(hess, grad[..., None])[..., 0]
        dec = np.sqrt(np.maximum(-np.sum(grad * step, axis=-1), 0.0))          # Newton decrement
        lam = lam + step / (1.0 + dec)[:, None]
        centred = dec < 1e-6
        done = centred & (nu / tau <= tol * np.sum(t * lam, axis=-1))
        if np.all(done | ~np.isfinite(dec)):
            break
        tau = np.where(centred & ~done, 10.0 * tau, tau)
    try:
        L = np.linalg.cholesky(eye - (G * lam[:, None, :]) @ G.conj().transpose(0, 2, 1))
        Linv = np.linalg.solve(L, np.broadcast_to(eye, (batch, n, n)).astype(complex))
        S = Linv.conj().transpose(0, 2, 1) @ Linv
    except np.linalg.LinAlgError:
        done, S = np.zeros(batch, bool), np.full((batch, n, n), np.nan, complex)
    ok = done & np.all(np.isfinite(lam), axis=-1) & np.all(np.isfinite(S), axis=(-2, -1))
    X = S / tau[:, None, None] * (m / q)[:, None, None]                        # undo the scaling
    duals = np.where(active, lam, 0.0)
    return X, duals, np.trace(X, axis1=-2, axis2=-1).real, ok
