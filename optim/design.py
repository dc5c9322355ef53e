r"""`design_aircomp`: receive beamformer a and transmit scalars b for MIMO AirComp, per realisation.

Statuses follow the policy of `deft6g.optim.solver_status`. Here: "closed form" (mrc, zf, best-direction,
uniform); "optimal (barrier)" where the batched NumPy barrier method (`sdr_barrier`) reached a relative
duality gap of 1e-7, else the outcome of CVXPY's `ZfSdr` (solvers `ZfSdr.SOLVERS`): "optimal (SOLVER)",
"inaccurate (SOLVER)" (its X seeds the randomisation and its multipliers still give a valid, possibly looser
bound, because `zf_lower_bound` is certified from the dual, `dual_bound`, never read off the primal value),
or "failed (barrier: not converged; SOLVER: what; ...): MRC direction used" (`zf_lower_bound` NaN,
`AirCompDesign.ok` False exactly here). The SCA refinement (`zf_sca`) appends "; SCA converged",
"; SCA max_iter" or "; SCA stopped at iteration i: reason" (the last feasible iterate is kept, so the design
stays aligned and feasible).
"""

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from deft6g.checks import check_noise_var
from deft6g.phy import aircomp_mse
from deft6g.rng import np_rng, reseed

from .aligned import align, best_single_direction, check_channel_and_power, mmse_receiver, mrc_direction, \
    phase_compensated_full_power, zf_direction
from .sdr_barrier import sdr_barrier
from .zf_sca import zf_sca
from .zf_sdr import ZfSdr, candidate_directions, dual_bound

METHODS = ("sdr", "mmse", "mrc", "zf", "best-direction", "uniform")
"""The AirComp receive designs `design_aircomp` accepts."""
ALIGNED = ("sdr", "mrc", "zf", "best-direction")          # ZF-constrained: a^H h_k b_k = 1 for every k
"""The designs that align every device exactly (a^H h_k b_k = 1): their MSE has the certified ZF lower bound."""


@dataclass
class AirCompDesign:
    r"""An AirComp design (receive vector a, transmit scalars b) for every channel realisation [...].

    Parameters
    ----------
    a : [..., N], complex128 -- receive beamformer (the denoising factor folded in)
    b : [..., K], complex128 -- transmit scalars, :math:`|b_k|^2 \le P_k`
    mse : [...], float64 -- `aircomp_mse(H, a, b, noise_var)` recomputed on the H given (linear)
    status : [...], str -- per `deft6g.optim.solver_status` ("closed form", "optimal (SOLVER)", ...)
    method : str -- the method that made it ("sdr", "mmse", ..., "power_control", "truncated-peak", ...)
    zf_lower_bound : None | [...], float64 -- "sdr" only: :math:`\sigma^2` x the SDR dual value, a certified
        lower bound on the MSE of every *aligned* (zero-forcing) design on that channel; "mmse" and "uniform"
        are not aligned and may go below it
    history : list of float -- "mmse": the mean MSE after each sweep (non-increasing); else empty
    eta : None | [...], float64 -- the denoising factor :math:`\eta` where the method has one
        (`power_control`, `truncated_inversion`; NaN where nobody transmits)

    Example
    -------
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=6, precision="double")(5, seed=0)
    >>> d = optim.design_aircomp(H.numpy(), 1.0, 0.1, "sdr", seed=0)
    >>> d.gap_db().round(2)            # [...] dB above the certified bound (>= 0)
    array([0.  , 0.  , 0.  , 0.42, 0.  ])
    """
    a: np.ndarray
    b: np.ndarray
    mse: np.ndarray
    status: np.ndarray
    method: str
    zf_lower_bound: np.ndarray = None
    history: list = field(default_factory=list)
    eta: np.ndarray = None

    @property
    def ok(self):
        """True where the design is what `method` promises (no solver failure, no fallback)."""
        return ~np.char.startswith(self.status.astype(str), "failed")

    def gap_db(self):
        """10 log10(mse / zf_lower_bound) [...] for an aligned design with a bound; raises otherwise."""
        if self.method not in ALIGNED or self.zf_lower_bound is None:
            raise ValueError(f"the ZF bound applies to aligned designs that carry it, not to {self.method!r}")
        return 10 * np.log10(self.mse / self.zf_lower_bound)


def best_threshold_b(H, a, power):
    r"""The MSE-optimal transmit scalars for a fixed receive vector: the threshold rule.

    :math:`b_k = \frac{g_k^*}{|g_k|} \min(1/|g_k|, \sqrt{P_k})`, :math:`g_k = a^H h_k`: channel inversion when the
    budget allows it, full power with the phase compensated otherwise. A device with :math:`g_k = 0` contributes
    :math:`|0 - 1|^2` whatever it sends, so :math:`b_k = 0` (least power). The denoising factor of
    `power_control` is this rule with :math:`a = 1/\sqrt\eta`.

    Input
    -----
    H : [B, N, K], complex; a : [B, N], complex; power : [B, K], float (P_k, linear)

    Output
    ------
    b : [B, K], complex
    """
    g = np.einsum("bn,bnk->bk", a.conj(), H)
    mag = np.abs(g)
    safe = np.where(mag > 0, mag, 1.0)
    return np.where(mag > 0, np.conj(g) / safe * np.minimum(1.0 / safe, np.sqrt(power)), 0.0)


def best_aligned(H, U, power, count=None):
    """Among candidate directions U [B, D, N], the aligned a of least norm per realisation: [B, N], or with
    an int `count` the `count` best in increasing norm, [B, count, N] (NaN rows where fewer are usable).

    The aligned design along u is a = t u with t^2 = max_k 1 / (P_k |u^H h_k|^2). A candidate that is not
    finite, zero, or orthogonal to some h_k has no aligned design and is skipped; a realisation with no usable
    candidate raises RuntimeError. H [B, N, K], power [B, K] (P_k = inf leaves device k unconstrained).
    """
    gains = np.abs(np.einsum("bdn,bnk->bdk", U.conj(), H)) ** 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gains = np.where(np.isinf(power)[:, None, :], np.inf, gains)        # an unconstrained device
        t2 = np.max(1.0 / (power[:, None, :] * gains), axis=-1)              # [B, D]
        cost = t2 * np.sum(np.abs(U) ** 2, axis=-1)
    cost = np.where(np.isfinite(cost) & (cost > 0), cost, np.inf)
    order = np.argsort(cost, axis=-1, kind="stable")[:, :count or 1]        # [B, count]
    usable = np.isfinite(np.take_along_axis(cost, order, -1))
    if not np.all(usable[:, 0]):
        raise RuntimeError(f"no candidate direction can be aligned for realisations {np.flatnonzero(~usable[:, 0])}")
    scale = np.sqrt(np.where(usable, np.take_along_axis(t2, order, -1), np.nan))
    a = np.take_along_axis(U, order[..., None], 1) * scale[..., None]
    return a if count else a[:, 0]


def round_sdr(H, X, power, active=None, num_draws=50, sca_iter=100, sca_starts=3):
    r"""Gaussian randomisation of SDR solutions, refined by SCA: the aligned receive vectors of the SDR pipeline.

    Candidates are the principal eigenvector of X and `num_draws` draws :math:`X^{1/2} z`,
    :math:`z \sim \mathcal{CN}(0, I)` (`candidate_directions`, from the library RNG); where X is not finite (a
    failed SDR) the MRC direction over the active devices is the only one. The `sca_starts` candidates of least
    aligned norm (`best_aligned`) are refined by `zf_sca` (at most `sca_iter` steps) and the best result kept
    (3 starts cut the mean gap to the bound from 0.54 to 0.45 dB at N = 16, K = 20).

    Input
    -----
    H : [B, N, K], complex128 -- channels
    X : [B, N, N], complex128 -- SDR solutions (Hermitian PSD), NaN where the SDR failed
    power : [B, K], float64 -- P_k, linear, > 0
    active : None | [B, K], bool -- devices to align on (None: all); the others get no constraint
    num_draws : int -- randomisations per realisation
    sca_iter : int -- SCA steps per start (0: no refinement)
    sca_starts : int -- SCA starts per realisation

    Output
    ------
    a : [B, N], complex128 -- aligned on the active devices: :math:`|a^H h_k|^2 \ge 1/P_k`
    sca : [B], object -- `zf_sca`'s status of the kept start, None where `sca_iter` is 0

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", 4, 6, precision="double")(5, seed=0).numpy()     # [B = 5, N = 4, K = 6]
    >>> P = np.ones((5, 6))
    >>> X, duals, _, ok = optim.sdr_barrier(H, P)
    >>> a, sca = optim.round_sdr(H, X, P)
    >>> bool(np.all(np.abs(np.einsum("bn,bnk->bk", a.conj(), H)) ** 2 >= 1 / P * (1 - 1e-9))), sca[0]   # aligned
    (True, 'converged')
    """
    batch, n, k = H.shape
    active = np.ones((batch, k), bool) if active is None else np.asarray(active, bool)
    solved = np.all(np.isfinite(X), axis=(-2, -1))
    U = np.full((batch, 1 + num_draws, n), np.nan, complex)                    # NaN candidates are skipped
    U[solved] = candidate_directions(X[solved], num_draws, np_rng())
    if not solved.all():
        unit = H[~solved] / np.linalg.norm(H[~solved], axis=-2, keepdims=True)     # MRC over the active devices
        U[~solved, 0] = np.einsum("bnk,bk->bn", unit, active[~solved])
    starts = best_aligned(H, U, np.where(active, power, np.inf), max(sca_starts, 1))   # P = inf: no constraint
    a = starts[:, 0].copy()
    sca = np.full(batch, None, object)
    for i in range(batch if sca_iter else 0):
        best = np.inf
        for a0 in starts[i][np.all(np.isfinite(starts[i]), axis=-1)]:
            refined, history, status = zf_sca(H[i][:, active[i]], power[i][active[i]], a0, max_iter=sca_iter)
            if history[-1] < best:
                best, a[i], sca[i] = history[-1], refined, status
    return a, sca


def sdr_design(H, power, num_draws=50, sca_iter=100, active=None, progress=False, sca_starts=3):
    """The "sdr" pipeline: ZF SDR for the whole batch (`sdr_barrier`; CVXPY's `ZfSdr`, compiled once per shape,
    for any realisation it leaves unconverged), then `round_sdr` (Gaussian randomisation, SCA from the
    `sca_starts` best candidates) and the dual-certified bound.

    Input
    -----
    H : [B, N, K], complex128; power : [B, K] (P_k, linear, > 0); num_draws, sca_iter, sca_starts : see
    `round_sdr`; active : None | [B, K], bool -- a device left out gets b = 0 later and no constraint;
    progress : bool -- a progress bar over the CVXPY fallback solves

    Output
    ------
    a : [B, N], complex128 -- aligned for the active devices
    duals : [B, K], float64 -- the SDR multipliers, 0 for inactive devices, NaN where the SDR failed
    bound : [B], float64 -- `dual_bound`: a certified lower bound on ||a||^2 of every design aligned on the
        active devices (multiply by sigma^2 for an MSE bound)
    status : [B], object -- per `deft6g.optim.solver_status` (module docstring)
    """
    batch, n, k = H.shape
    active = np.ones((batch, k), bool) if active is None else np.asarray(active, bool)
    X, duals, _, converged = sdr_barrier(H, power, active)
    status = np.where(converged, "optimal (barrier)", "").astype(object)
    duals[~converged] = np.nan
    rest = np.flatnonzero(~converged)
    for i in tqdm(rest, desc="SDR (CVXPY fallback)", disable=not progress or len(rest) < 2, leave=False):
        sol = ZfSdr.compiled(n, k).solve(H[i], power[i], active[i])
        if sol.status.startswith("failed"):
            status[i] = f"failed (barrier: not converged; {sol.status[len('failed ('):]}: MRC direction used"
        else:
            X[i], duals[i], status[i] = sol.X, sol.duals, f"{sol.status} ({sol.solver})"
    X[~np.all(np.isfinite(duals), axis=-1)] = np.nan
    a, sca = round_sdr(H, X, power, active, num_draws, sca_iter, sca_starts)
    status = np.array([s if t is None else f"{s}; SCA {t}" for s, t in zip(status, sca)], object)
    return a, duals, dual_bound(H, power, duals), status


def design_aircomp(H, power, noise_var, method="sdr", seed=None, num_draws=50, sca_iter=100, max_iter=100,
                   tol=1e-6, progress=False, init=None):
    r"""Design a [..., N] and b [..., K] for the AirComp uplink (docs/design.md §3) on each channel realisation.

    Input
    -----
    H : [..., N, K], complex -- channels (any precision; designed in complex128)
    power : scalar or [..., K], float -- P_k, linear, > 0
    noise_var : scalar or [...], float -- :math:`\sigma^2` per receive antenna, linear, >= 0
        (SNR = P / sigma^2 per device)
    method : str -- "sdr" (ZF SDR, Gaussian randomisation with `num_draws` draws, then up to `sca_iter` SCA
        steps), "mmse" (alternating optimisation of a and b from the SDR design, monotone), "mrc" / "zf" /
        "best-direction" (aligned closed forms), "uniform" (full power with the channel phase pre-compensated
        along the MRC direction, MMSE receiver)
    seed : None | int -- re-seeds the library RNG (the randomisation)
    num_draws : int -- SDR randomisations per realisation
    sca_iter : int -- SCA steps per start (0: none)
    max_iter : int; tol : float -- the mmse stopping rule: relative decrease of the mean MSE per sweep (1e-6
        stops after about 20 sweeps at N = 16, K = 20 within 1e-4 dB of 1e-9's)
    progress : bool -- show a progress bar over the CVXPY fallback solves (silent by default)
    init : None | AirCompDesign -- an "sdr" design of the same H to start "mmse" from (skips the SDRs)

    Output
    ------
    AirCompDesign -- every b satisfies :math:`|b_k|^2 \le P_k (1 + 10^{-6})`; status per the module docstring.
    The SDR problem is compiled once per (N, K) per process and re-used by every later call.

    Example
    -------
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=16, num_devices=20, precision="double")(10, seed=0)
    >>> d = optim.design_aircomp(H.numpy(), 1.0, 0.1, "sdr", seed=0)
    >>> d.mse.shape, bool(d.ok.all())
    ((10,), True)
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    Ht, pt = check_channel_and_power(H, power, tf.complex128)
    nvt = check_noise_var(noise_var, tf.float64)
    lead = Ht.shape[:-2].as_list()
    n, k = Ht.shape[-2:]
    Hb = Ht.numpy().reshape(-1, n, k)
    batch = Hb.shape[0]
    P = np.broadcast_to(pt.numpy(), lead + [k]).reshape(batch, k).astype(float)
    try:
        nv = np.broadcast_to(nvt.numpy(), lead).reshape(batch).astype(float)
    except ValueError as err:
        raise ValueError(f"`noise_var` must be a scalar or have shape {lead}, got {nvt.shape.as_list()}") from err
    reseed(seed)
    bound, history = None, []
    status = np.full(batch, "closed form", object)
    if method == "mmse" and init is not None:
        if init.method != "sdr" or init.a.shape != tuple(lead + [n]):
            raise ValueError(f"`init` must be an 'sdr' design with a of shape {lead + [n]}")
        a, status = init.a.reshape(batch, n), init.status.reshape(batch)
        b = best_threshold_b(Hb, a, P)
    elif method in ("sdr", "mmse"):
        a, _, bound, status = sdr_design(Hb, P, num_draws, sca_iter, progress=progress)
        bound = bound * nv
        b = best_threshold_b(Hb, a, P)
    elif method == "uniform":
        b = phase_compensated_full_power(tf.constant(Hb), tf.constant(P)).numpy()
        a = mmse_receiver(tf.constant(Hb), tf.constant(b), tf.constant(nv)).numpy()
    else:
        H_tf, P_tf = tf.constant(Hb), tf.constant(P)
        u = {"mrc": mrc_direction, "zf": zf_direction,
             "best-direction": lambda h: best_single_direction(h, P_tf)}[method](H_tf)
        a, b = (t.numpy() for t in align(H_tf, u, P_tf))
    if method == "mmse":
        a, b, history = _alternate(Hb, a, b, P, nv, max_iter, tol)
        bound = None                                                         # not an aligned design
    b = b * np.minimum(1.0, np.sqrt(P) / np.maximum(np.abs(b), 1e-300))     # rounding guard only
    mse = aircomp_mse(Hb, a, b, nv)
    shape = lambda x, *tail: x.reshape(lead + list(tail))                    # noqa: E731
    return AirCompDesign(a=shape(a, n), b=shape(b, k), mse=shape(mse), status=shape(status.astype(str)),
                         method=method, zf_lower_bound=None if bound is None else shape(bound), history=history)


def _alternate(H, a, b, P, nv, max_iter, tol):
    """Block-coordinate descent on the full MSE: a <- MMSE receiver for b; b <- threshold rule for a.
    Each step is the exact minimiser over its block, so the MSE never increases."""
    history = [float(np.mean(aircomp_mse(H, a, b, nv)))]
    for _ in range(max_iter):
        a = mmse_receiver(tf.constant(H), tf.constant(b), tf.constant(nv)).numpy()
        b = best_threshold_b(H, a, P)
        history.append(float(np.mean(aircomp_mse(H, a, b, nv))))
        if history[-2] - history[-1] <= tol * history[-2]:
            break
    return a, b, history
