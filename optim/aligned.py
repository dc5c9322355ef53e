r"""Aligned (zero-forcing) AirComp designs from a receive direction, and the closed-form directions.

For a receive direction u, the aligned design scales a = t u so that channel inversion
:math:`b_k = 1 / (a^H h_k)` meets every budget :math:`|b_k|^2 \le P_k`:
:math:`t = \max_k 1 / (\sqrt{P_k} |u^H h_k|)`, giving MSE = :math:`\sigma^2 t^2 \|u\|^2`.
Closed forms are vectorised over realisations (TF ops; NumPy in gives NumPy out).
"""

import tensorflow as tf

from deft6g.phy.aircomp import effective_gains
from deft6g.checks import as_tensor, check_dim, check_nonnegative, is_tensor, to_output


def check_channel_and_power(H, power, cdtype=None):
    """Validate a channel and a power budget.

    Input
    -----
    H : [..., N, K], complex -- no all-zero column
    power : scalar or [..., K], float -- P_k, linear, > 0
    cdtype : None | tf.complex64 | tf.complex128 -- None: the precision of H

    Output
    ------
    H : [..., N, K], cdtype; power : scalar or [..., K], cdtype.real_dtype
    """
    H = as_tensor(H, "H", min_rank=2)
    cdtype = cdtype or (tf.complex128 if H.dtype in (tf.float64, tf.complex128) else tf.complex64)
    H = tf.cast(H, cdtype)
    if H.shape[-1] == 0 or H.shape[-2] == 0:
        raise ValueError(f"`H` must have N >= 1 and K >= 1, got shape {H.shape.as_list()}")
    if tf.executing_eagerly() and bool(tf.reduce_any(tf.reduce_sum(tf.abs(H) ** 2, axis=-2) == 0)):
        raise ValueError("`H` has an all-zero column: that device cannot reach the server")
    p = tf.cast(as_tensor(power, "power"), cdtype.real_dtype)
    if p.shape.rank:
        check_dim(p, -1, H.shape[-1], "power", "K (columns of H)")
    check_nonnegative(p, "power")
    if tf.executing_eagerly() and bool(tf.reduce_any(p == 0)):
        raise ValueError("`power` must be positive for every device, got a zero budget")
    return H, p


def _checked_positive(x, message):
    """x, after asserting x > 0 (raises tf.errors.InvalidArgumentError with `message`, eager and graph)."""
    with tf.control_dependencies([tf.debugging.assert_positive(x, message=message)]):
        return tf.identity(x)


def align(H, u, power):
    r"""Aligned design along a receive direction u: :math:`a^H h_k b_k = 1`, :math:`|b_k|^2 \le P_k`.

    No aligned design exists along a u orthogonal to some h_k (u^H h_k = 0): that raises
    `tf.errors.InvalidArgumentError` (eager and graph) instead of returning inf/NaN.

    Input
    -----
    H : [..., N, K], tf.complex; u : [..., N], tf.complex; power : scalar or [..., K], tf.float (linear)

    Output
    ------
    a : [..., N], tf.complex; b : [..., K], tf.complex

    Example
    -------
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=3, precision="double")(2, seed=0)   # [2, 4, 3]
    >>> a, b = optim.align(H, optim.mrc_direction(H), tf.constant(1.0, tf.float64))
    >>> bool(np.allclose(phy.effective_gains(H, a) * b, 1.0))               # a^H h_k b_k = 1 for every k
    True
    >>> np.max(np.abs(b) ** 2, axis=-1)                                      # the weakest device at full power
    array([1., 1.])
    """
    g = _checked_positive(tf.abs(effective_gains(H, u)),                       # [..., K]
                          "`u` is orthogonal to a channel h_k (u^H h_k = 0): no aligned design exists along it")
    t = tf.reduce_max(1.0 / (tf.sqrt(tf.broadcast_to(power, tf.shape(g))) * g), axis=-1)
    a = u * tf.cast(t, u.dtype)[..., None]
    return a, 1.0 / effective_gains(H, a)


def mrc_direction(H):
    r"""The MRC direction, the sum of the normalised channels :math:`u = \sum_k h_k / \|h_k\|`.

    Input
    -----
    H : [..., N, K], tf.complex

    Output
    ------
    u : [..., N], tf.complex
    """
    norms = tf.sqrt(tf.reduce_sum(tf.abs(H) ** 2, axis=-2, keepdims=True))
    return tf.reduce_sum(H / tf.cast(norms, H.dtype), axis=-1)


def zf_direction(H):
    r"""The ridge solution of :math:`H^H u = 1` (:math:`u^H h_k = 1` for all k), shape [..., N], dtype of H.

    :math:`u = H (H^H H + \lambda I_K)^{-1} 1 = (H H^H + \lambda I_N)^{-1} H 1`; the smaller of the two Gram
    matrices is factorised (K x K when N >= K: minimum norm; N x N when N < K: least squares), in complex128
    whatever the input precision, with :math:`\lambda = 10^{-9}\,\mathrm{tr}(H^H H) / \min(N, K)` so that
    rank-deficient channels stay solvable. (A ridge of 1e-9 relative lies below float32 resolution: solved in
    complex64 the median aligned MSE at N = 16, K = 20 came out 3.3x too large.)
    """
    n, k = H.shape[-2], H.shape[-1]                                             # static N, K
    H64 = tf.cast(H, tf.complex128)
    ones = tf.ones(tf.concat([tf.shape(H)[:-2], [k]], 0), tf.complex128)
    if n < k:
        gram, rhs, m = tf.matmul(H64, H64, adjoint_b=True), tf.linalg.matvec(H64, ones), n    # [..., N, N]
    else:
        gram, rhs, m = tf.matmul(H64, H64, adjoint_a=True), ones, k                            # [..., K, K]
    ridge = 1e-9 * tf.linalg.trace(gram) / m
    x = tf.linalg.solve(gram + ridge[..., None, None] * tf.eye(m, dtype=tf.complex128), rhs[..., None])[..., 0]
    return tf.cast(x if n < k else tf.linalg.matvec(H64, x), H.dtype)


def best_single_direction(H, power):
    """The one channel direction h_j / ||h_j|| whose aligned design has the smallest MSE (searched over j).

    Input
    -----
    H : [..., N, K], tf.complex; power : scalar or [..., K], tf.float (linear)

    Output
    ------
    u : [..., N], tf.complex
    """
    units = H / tf.cast(tf.sqrt(tf.reduce_sum(tf.abs(H) ** 2, axis=-2, keepdims=True)), H.dtype)
    gains = tf.abs(tf.einsum("...nj,...nk->...jk", tf.math.conj(units), H))  # |u_j^H h_k|
    p = tf.broadcast_to(power, tf.shape(gains)[:-1])[..., None, :] if power.shape.rank else power
    t2 = tf.reduce_max(1.0 / (p * gains ** 2), axis=-1)                       # [..., J]
    best = tf.argmin(t2, axis=-1)
    return tf.gather(tf.experimental.numpy.moveaxis(units, -1, -2), best, axis=-2, batch_dims=H.shape.rank - 2)


def closed_form_design(H, power, method):
    """Aligned design (a, b) along the direction of `method`: "mrc" | "zf" | "best-direction".

    The design is computed in complex128 whatever the input precision (aligned MSEs span many decades, and
    inverting a weak device's channel loses digits in single precision).

    Input
    -----
    H : [..., N, K], complex -- NumPy in, NumPy out
    power : scalar or [..., K], float -- P_k, linear, > 0
    method : "mrc" | "zf" | "best-direction"

    Output
    ------
    a : [..., N]; b : [..., K] -- in the precision of H

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=3)(2, seed=0).numpy()     # [2, 4, 3]
    >>> a, b = optim.closed_form_design(H, 1.0, "zf")
    >>> mse = phy.aircomp_mse(H, a, b, 0.1)
    >>> bool(np.allclose(mse, 0.1 * np.sum(np.abs(a) ** 2, axis=-1)))       # = 0.1 ||a||^2: aligned
    True
    """
    numpy_out = not is_tensor(H, power)
    H, p = check_channel_and_power(H, power)
    H64, p64 = tf.cast(H, tf.complex128), tf.cast(p, tf.float64)
    directions = {"mrc": mrc_direction, "zf": zf_direction,
                  "best-direction": lambda h: best_single_direction(h, p64)}
    if method not in directions:
        raise ValueError(f"`method` must be one of {sorted(directions)}, got {method!r}")
    a, b = (tf.cast(t, H.dtype) for t in align(H64, directions[method](H64), p64))
    return to_output(a, numpy_out), to_output(b, numpy_out)


def phase_compensated_full_power(H, power):
    """Full-power transmit scalars with the channel phase pre-compensated: b_k = sqrt(P_k) conj(g_k) / |g_k|.

    g_k = u^H h_k along the MRC direction u (N = 1: g_k = h_k), so that every device arrives in phase; pair it
    with `mmse_receiver`. A channel orthogonal to u raises `tf.errors.InvalidArgumentError`.

    Input
    -----
    H : [..., N, K], tf.complex; power : scalar or [..., K], float (linear)

    Output
    ------
    b : [..., K], dtype of H
    """
    g = effective_gains(H, mrc_direction(H))                                   # [..., K]
    mag = _checked_positive(tf.abs(g), "a channel h_k is orthogonal to the MRC direction")
    amplitude = tf.sqrt(tf.broadcast_to(tf.cast(power, mag.dtype), tf.shape(mag))) / mag
    return tf.math.conj(g) * tf.cast(amplitude, H.dtype)


def mmse_receiver(H, b, noise_var):
    r"""Optimal receive vector for fixed b (the MMSE receiver of the sum).

    Minimises :math:`\sum_k |a^H h_k b_k - 1|^2 + \sigma^2\|a\|^2`; with G = H diag(b):
    :math:`a = (G G^H + \sigma^2 I)^{-1} G 1`.

    Input
    -----
    H : [..., N, K], tf.complex; b : [..., K], tf.complex; noise_var : scalar or [...] (linear, per antenna)

    Output
    ------
    a : [..., N], tf.complex
    """
    G = H * b[..., None, :]
    n = tf.shape(H)[-2]
    nv = tf.cast(noise_var, H.dtype)
    nv = tf.reshape(nv, tf.concat([tf.shape(nv), [1, 1]], 0))
    A = tf.matmul(G, G, adjoint_b=True) + nv * tf.eye(n, dtype=H.dtype)
    return tf.linalg.solve(A, tf.reduce_sum(G, axis=-1)[..., None])[..., 0]
