"""Device selection for MIMO AirComp (Yang et al.): the largest device set whose ZF design meets an MSE target."""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from .aligned import align, check_channel_and_power
from .design import AirCompDesign
from .zf_sdr import ZfSdr, candidate_directions
from deft6g.phy import aircomp_mse
from deft6g.phy.rng import np_rng, reseed


@dataclass
class Selection:
    """selected / dropped: device indices; design: the aligned design over the selected devices (b is 0 for
    dropped ones, mse over the selected sum); met: whether mse <= mse_target."""
    selected: list
    dropped: list
    design: AirCompDesign
    met: bool


def select_devices(H, power, noise_var, mse_target, num_draws=50, seed=None):
    r"""Greedy selection with the ZF SDR: drop the device whose constraint binds hardest until the target holds.

    Each step solves the SDR over the active devices (one compiled problem; a dropped device's constraint
    becomes 0 >= 0), rounds by randomisation to an aligned design, and stops when
    :math:`\sigma^2\|a\|^2 \le` `mse_target`; otherwise it drops the active device with the largest dual
    variable (the largest marginal MSE cost of keeping it). Input: H [N, K]; power scalar or [K];
    noise_var scalar; mse_target > 0. Output: Selection.
    """
    Ht, pt = check_channel_and_power(H, power, tf.complex128)
    if Ht.shape.rank != 2:
        raise ValueError(f"`H` must have shape [N, K] (one realisation), got {Ht.shape.as_list()}")
    if not np.isfinite(mse_target) or mse_target <= 0:
        raise ValueError(f"`mse_target` must be a positive number, got {mse_target!r}")
    if not np.isfinite(noise_var) or noise_var < 0:
        raise ValueError(f"`noise_var` must be finite and non-negative, got {noise_var!r}")
    reseed(seed)
    H = Ht.numpy()
    n, k = H.shape
    P = np.broadcast_to(pt.numpy(), (k,)).astype(float)
    sdr = ZfSdr(n, k)
    active = np.ones(k, bool)
    while True:
        sol = sdr.solve(H, P, active)
        if sol.status != "optimal":
            raise RuntimeError(f"SDR failed during device selection: {sol.status}")
        idx = np.flatnonzero(active)
        cands = candidate_directions(sol.X, num_draws, np_rng())
        a_all, _ = align(tf.constant(np.broadcast_to(H[:, idx], (len(cands), n, len(idx)))), tf.constant(cands),
                         tf.constant(P[idx]))
        a = a_all.numpy()[np.argmin(np.sum(np.abs(a_all.numpy()) ** 2, -1))]
        b_sel = 1.0 / (a.conj() @ H[:, idx])
        mse = float(aircomp_mse(H[:, idx], a, b_sel, noise_var))
        if mse <= mse_target or active.sum() == 1:
            break
        active[idx[np.argmax(sol.duals[idx])]] = False
    b = np.zeros(k, complex)
    b[idx] = b_sel
    design = AirCompDesign(a=a, b=b, mse=np.asarray(mse), status=np.asarray(f"optimal ({sol.solver})"),
                           method="sdr-selection", lower_bound=np.asarray(noise_var * sol.value))
    return Selection(selected=idx.tolist(), dropped=np.flatnonzero(~active).tolist(), design=design,
                     met=mse <= mse_target)
