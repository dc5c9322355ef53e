"""`design_aircomp`: receive beamformer a and transmit scalars b for MIMO AirComp, per realisation."""

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from deft6g.phy import aircomp_mse
from deft6g.phy.checks import as_tensor
from deft6g.phy.rng import np_rng, reseed

from .aligned import align, best_single_direction, check_channel_and_power, mmse_receiver, mrc_direction, \
    phase_compensated_full_power, zf_direction
from .zf_sca import ZfSca
from .zf_sdr import ZfSdr, candidate_directions

METHODS = ("sdr", "mmse", "mrc", "zf", "best-direction", "uniform")


@dataclass
class AirCompDesign:
    """A design for every realisation.

    a [..., N], b [..., K] complex; mse [...] = `aircomp_mse(H, a, b, noise_var)` recomputed on the H given;
    status [...] str ("optimal", "closed form", or what failed); lower_bound [...] (sdr and mmse:
    sigma^2 x SDR optimum, a certified lower bound on every aligned design's MSE); history: the mmse
    iterations' mean MSE (non-increasing); eta [...]: the optimal denoising factor (`power_control`).
    """
    a: np.ndarray
    b: np.ndarray
    mse: np.ndarray
    status: np.ndarray
    method: str
    lower_bound: np.ndarray = None
    history: list = field(default_factory=list)
    eta: np.ndarray = None

    @property
    def ok(self):
        """True where the design is what `method` promises (no solver failure)."""
        return ~np.char.startswith(self.status.astype(str), "failed")


def best_threshold_b(H, a, power):
    """Optimal b for fixed a: b_k = conj(g_k)/|g_k| min(1/|g_k|, sqrt(P_k)), g_k = a^H h_k (channel inversion
    when the budget allows it, full power otherwise). Shapes: H [B, N, K], a [B, N], power [B, K]."""
    g = np.einsum("bn,bnk->bk", a.conj(), H)
    mag = np.abs(g)
    return np.conj(g) / mag * np.minimum(1.0 / mag, np.sqrt(power))


def _sdr(H, power, nv, num_draws, progress, sca_iter):
    batch, n, k = H.shape
    sdr, sca = ZfSdr(n, k), ZfSca(n, k)
    rng = np_rng()
    a = np.zeros((batch, n), complex)
    bound = np.full(batch, np.nan)
    status = np.empty(batch, object)
    for i in tqdm(range(batch), desc="SDR", disable=not progress or batch < 2, leave=False):
        sol = sdr.solve(H[i], power[i])
        status[i] = sol.status
        if sol.status != "optimal":               # fall back to the MRC direction, and say so
            cands = tf.constant(mrc_direction(tf.constant(H[i:i + 1])).numpy())
        else:
            bound[i] = nv[i] * sol.value
            cands = tf.constant(candidate_directions(sol.X, num_draws, rng))
            status[i] = f"optimal ({sol.solver})"
        Hc = tf.constant(np.broadcast_to(H[i], (cands.shape[0], n, k)))
        ac, _ = align(Hc, cands, tf.constant(power[i]))
        a[i] = ac.numpy()[np.argmin(np.sum(np.abs(ac.numpy()) ** 2, axis=-1))]
        if sca_iter:
            a[i], _, _ = sca.refine(H[i], power[i], a[i], max_iter=sca_iter)
        if sol.status != "optimal":
            status[i] = f"failed: {sol.status}; MRC direction used"
    return a, bound, status


def design_aircomp(H, power, noise_var, method="sdr", seed=None, num_draws=50, sca_iter=30, max_iter=100,
                   tol=1e-9, progress=True, init=None):
    r"""Design a [..., N] and b [..., K] for the AirComp uplink (DESIGN.md §3) on each channel realisation.

    Input
    -----
    H : [..., N, K] complex; power : scalar or [..., K] (P_k, linear, > 0); noise_var : scalar or [...]
    (sigma^2 per receive antenna, linear, >= 0); method : "sdr" (ZF SDR, Gaussian randomisation with
    `num_draws` draws, then up to `sca_iter` SCA steps), "mmse" (alternating optimisation of a and b from
    the SDR design, monotone), "mrc" / "zf" / "best-direction" (aligned closed forms), "uniform" (full
    power with the channel phase pre-compensated along the MRC direction, MMSE receiver);
    seed : re-seeds the library RNG (randomisation); max_iter, tol: mmse stopping rule;
    init : an "sdr" AirCompDesign of the same H to start "mmse" from (skips re-solving the SDRs).

    Output
    ------
    AirCompDesign; every b satisfies |b_k|^2 <= P_k (1 + 1e-6).
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    Ht, pt = check_channel_and_power(H, power, tf.complex128)
    nvt = tf.cast(as_tensor(noise_var, "noise_var"), tf.float64)
    if bool(tf.reduce_any(nvt < 0)):
        raise ValueError(f"`noise_var` must be finite and non-negative, got {noise_var!r}")
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
        a, bound, status = init.a.reshape(batch, n), init.lower_bound.reshape(batch), init.status.reshape(batch)
        b = best_threshold_b(Hb, a, P)
    elif method in ("sdr", "mmse"):
        a, bound, status = _sdr(Hb, P, nv, num_draws, progress, sca_iter)
        a = align(tf.constant(Hb), tf.constant(a), tf.constant(P))[0].numpy()     # exact rescaling
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
    b = b * np.minimum(1.0, np.sqrt(P) / np.maximum(np.abs(b), 1e-300))     # rounding guard only
    mse = aircomp_mse(Hb, a, b, nv)
    shape = lambda x, *tail: x.reshape(lead + list(tail))                    # noqa: E731
    return AirCompDesign(a=shape(a, n), b=shape(b, k), mse=shape(mse), status=shape(status.astype(str)),
                         method=method, lower_bound=None if bound is None else shape(bound), history=history)


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
