r"""MIMO over-the-air computation (AirComp): the MSE of a design and the server's noisy estimate.

Notation (docs/design.md §3): K single-antenna devices, an N-antenna server. Device k sends
:math:`b_k s_k` with unit-variance :math:`s_k`; the server forms
:math:`\hat f = a^H (\sum_k h_k b_k s_k + n)`, :math:`n \sim \mathcal{CN}(0, \sigma^2 I_N)`, to estimate
:math:`f = \sum_k s_k`. SNR = P / sigma^2 per device.
"""

import numpy as np
import tensorflow as tf
from sionna.phy.channel import AWGN

from deft6g.checks import as_tensor, check_count, check_dim, check_noise_var, is_tensor, to_output
from deft6g.rng import reseed


def _complex_dtype(*tensors):
    """complex128 when any input is double precision, else complex64 (noise_var follows, not leads)."""
    double = any(t.dtype in (tf.float64, tf.complex128) for t in tensors)
    return tf.complex128 if double else tf.complex64


def validate_design(H, a, b, noise_var):
    """Check and convert an AirComp design; return (H, a, b, noise_var, numpy_out).

    H : [..., N, K] complex, a : [..., N], b : [..., K], noise_var : scalar or [...] (>= 0).
    Leading dimensions broadcast against each other; N and K must match exactly.
    """
    numpy_out = not is_tensor(H, a, b, noise_var)
    H = as_tensor(H, "H", min_rank=2)
    a = as_tensor(a, "a", min_rank=1)
    b = as_tensor(b, "b", min_rank=1)
    nv = check_noise_var(noise_var)
    cdtype = _complex_dtype(H, a, b)
    H, a, b = (tf.cast(t, cdtype) for t in (H, a, b))
    nv = tf.cast(nv, cdtype.real_dtype)
    n_ant, n_dev = H.shape[-2], H.shape[-1]
    if n_ant == 0 or n_dev == 0:
        raise ValueError(f"`H` must have N >= 1 antennas and K >= 1 devices, got shape {H.shape.as_list()}")
    check_dim(a, -1, n_ant, "a", "N (rows of H)")
    check_dim(b, -1, n_dev, "b", "K (columns of H)")
    lead = H.shape.rank - 2 if H.shape.rank is not None else None
    if lead is not None and nv.shape.rank is not None and nv.shape.rank > lead:
        raise ValueError(f"`noise_var` must be a scalar or have the leading shape of `H` {H.shape[:-2].as_list()}, "
                         f"got shape {nv.shape.as_list()}")
    return H, a, b, nv, numpy_out


def effective_gains(H, a):
    r"""Effective gains :math:`g_k = a^H h_k` of the devices after receive beamforming (no checks).

    Input
    -----
    H : [..., N, K], tf.complex
        Channels; column k is :math:`h_k`
    a : [..., N], tf.complex
        Receive beamformer (same dtype as H)

    Output
    ------
    g : [..., K], tf.complex
        :math:`a^H h_k` per device

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> H = np.array([[1, 1j], [0, 1]], np.complex64)          # [N = 2, K = 2]: h_1 = (1, 0), h_2 = (j, 1)
    >>> phy.effective_gains(H, np.ones(2, np.complex64)).numpy()   # |g_k b_k - 1| is device k's misalignment
    array([1.+0.j, 1.+1.j], dtype=complex64)
    """
    return tf.reduce_sum(tf.math.conj(a)[..., :, None] * H, axis=-2)


def aircomp_mse(H, a, b, noise_var, payload_cov=None):
    r"""MSE of the AirComp sum estimate, per realisation.

    .. math:: \mathrm{MSE} = d^T C\, d^* + \sigma^2 \|a\|^2, \quad d_k = a^H h_k b_k - 1, \quad C = E[s s^H]

    which for independent unit-variance payloads (C = I, the default) is
    :math:`\sum_k |a^H h_k b_k - 1|^2 + \sigma^2 \|a\|^2`.

    Which C applies: C = I holds for payloads that are independent across devices (independent data, or
    independent noise-like symbols). Federated updates are correlated across devices (they descend the same
    loss); for them pass `payload_cov`, the correlation matrix of the devices' standardised payloads (e.g.
    `payload_correlation(x)`; identical payloads: all ones). Aligned designs (d = 0) have the same MSE for every
    C; designs that leave a residual d (mmse, full power, power control at N = 1) do not.

    Input
    -----
    H : [..., N, K], complex
        Channels (NumPy in gives NumPy out; a TF tensor in gives a tensor)
    a : [..., N], complex
        Receive beamformer
    b : [..., K], complex
        Transmit scalars
    noise_var : scalar or [...], float
        :math:`\sigma^2`, linear, per receive antenna, >= 0
    payload_cov : None (default) | [..., K, K], float or complex
        C, Hermitian positive semidefinite, unit diagonal for standardised payloads

    Output
    ------
    mse : [...], float
        Linear; float32 for single-precision inputs, float64 when any of H, a, b is double

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> float(phy.aircomp_mse(np.ones((2, 3)), np.full(2, 0.5), np.ones(3), 0.1))   # aligned: 0.1 x ||a||^2
    0.05
    """
    H, a, b, nv, numpy_out = validate_design(H, a, b, noise_var)
    d = effective_gains(H, a) * b - 1                                              # [..., K]
    if payload_cov is None:
        misalignment = tf.reduce_sum(tf.abs(d) ** 2, axis=-1)
    else:
        numpy_out = numpy_out and not is_tensor(payload_cov)
        C = tf.cast(as_tensor(payload_cov, "payload_cov", min_rank=2), H.dtype)
        check_dim(C, -1, H.shape[-1], "payload_cov", "K (columns of H)")
        check_dim(C, -2, H.shape[-1], "payload_cov", "K (columns of H)")
        misalignment = tf.math.real(tf.reduce_sum(tf.linalg.matvec(C, tf.math.conj(d)) * d, axis=-1))
    noise = nv * tf.reduce_sum(tf.abs(a) ** 2, axis=-1)
    return to_output(misalignment + noise, numpy_out)


def aircomp_estimate(s, H, a, b, noise_var, seed=None):
    r"""Server estimate :math:`\hat f = a^H (\sum_k h_k b_k s_k + n)` of the sum of the payloads.

    The noise is drawn per antenna by Sionna's `AWGN`; the signal part is evaluated as
    (a^H H diag(b)) s, which costs N K + K L per realisation instead of N K L.

    Input
    -----
    s : [..., K, L], complex
        Payload symbols (unit variance for `aircomp_mse` to apply)
    H : [..., N, K], complex
        Channels
    a : [..., N], complex
        Receive beamformer
    b : [..., K], complex
        Transmit scalars
    noise_var : scalar or [...], float
        :math:`\sigma^2`, linear, per receive antenna
    seed : None (default) | int
        Re-seeds the library RNG (`deft6g.rng.reseed`) before the noise is drawn

    Output
    ------
    f_hat : [..., L], complex
        Estimate of :math:`\sum_k s_k` (NumPy in, NumPy out)

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> H, a, b = np.ones((2, 3)), np.full(2, 0.5), np.ones(3)        # N = 2, K = 3, aligned: a^H h_k b_k = 1
    >>> s = np.ones((3, 100_000))                                      # [K, L]: the sum is 3
    >>> phy.aircomp_estimate(s, H, a, b, 0.0)[:3]                      # noise-free: exact
    array([3.+0.j, 3.+0.j, 3.+0.j])
    >>> f_hat = phy.aircomp_estimate(s, H, a, b, 0.1, seed=0)         # [L], complex128
    >>> round(float(np.mean(np.abs(f_hat - 3) ** 2)), 3)               # empirical MSE ~ aircomp_mse = 0.05
    0.05
    """
    numpy_out = not is_tensor(s, H, a, b, noise_var)
    H, a, b, nv, _ = validate_design(H, a, b, noise_var)
    s = tf.cast(as_tensor(s, "s", min_rank=2), H.dtype)
    check_dim(s, -2, H.shape[-1], "s", "K (columns of H)")
    reseed(seed)
    f_hat = estimate_from_validated(s, H, a, b, nv)
    return to_output(f_hat, numpy_out)


_AWGN = {}


def estimate_from_validated(s, H, a, b, nv):
    """`aircomp_estimate` without checks, for graph-mode loops (inputs already validated and cast)."""
    precision = "double" if H.dtype == tf.complex128 else "single"
    awgn = _AWGN.setdefault(precision, AWGN(precision=precision))
    weights = effective_gains(H, a) * b                                   # [..., K]
    signal = tf.linalg.matvec(s, weights, transpose_a=True)              # [..., L]
    lead = tf.broadcast_dynamic_shape(tf.shape(H)[:-2], tf.shape(s)[:-2])
    noise_shape = tf.concat([lead, tf.shape(s)[-1:], tf.shape(H)[-2:-1]], axis=0)  # [..., L, N]
    noise = awgn(tf.zeros(noise_shape, H.dtype), nv)    # nv gains trailing axes
    return signal + tf.reduce_sum(noise * tf.math.conj(a)[..., None, :], axis=-1)


def aircomp_channel_uses(num_reals, num_devices=None, num_subcarriers=1, stats_per_subcarrier=False,
                         side_info_bits=32, side_info_bits_per_use=1.0):
    r"""Channel uses (resource elements) of one AirComp round for a payload of `num_reals` reals per device.

    Payload: spread over F subcarriers, :math:`\lceil L/F \rceil` reals per subcarrier, two per complex symbol:
    :math:`F \lceil \lceil L/F \rceil / 2 \rceil` resource elements (flat channels: F = 1, :math:`\lceil L/2 \rceil`).
    All devices share them (superposition).
    Side information (counted when `num_devices` K is given): each device's mean and std -- once
    (`AirCompUplink(..., over_subcarriers=True)` on OFDM, or a flat channel), or per subcarrier with
    `stats_per_subcarrier` (G = F standardisations) -- 2G reals of `side_info_bits` bits, sent digitally one
    device after another at `side_info_bits_per_use` bits per channel use (default 1: QPSK at code rate 1/2):
    :math:`K \lceil 2 G \cdot bits / rate \rceil`.

    Input
    -----
    num_reals : int
        L >= 1, reals per device
    num_devices : None (default) | int
        K >= 1; None counts the payload only
    num_subcarriers : int
        F >= 1
    stats_per_subcarrier : bool
        One standardisation per subcarrier (G = F) instead of one per device (G = 1)
    side_info_bits : int
        Bits per side-information real (>= 1)
    side_info_bits_per_use : float
        Bits per channel use of the side information (> 0)

    Output
    ------
    uses : int
        Channel uses (resource elements)

    Example
    -------
    >>> import deft6g.phy as phy
    >>> phy.aircomp_channel_uses(100, num_devices=4, num_subcarriers=8)     # L = 100, F = 8: 8 x 7 = 56 + 4 x 64
    312
    >>> phy.aircomp_channel_uses(100, num_devices=4, num_subcarriers=8, stats_per_subcarrier=True)   # 56 + 4 x 512
    2104
    """
    num_reals = check_count(num_reals, "num_reals")
    f = check_count(num_subcarriers, "num_subcarriers")
    uses = f * int(np.ceil(int(np.ceil(num_reals / f)) / 2))
    if num_devices is not None:
        k, bits = check_count(num_devices, "num_devices"), check_count(side_info_bits, "side_info_bits")
        if not side_info_bits_per_use > 0:
            raise ValueError(f"`side_info_bits_per_use` must be > 0, got {side_info_bits_per_use!r}")
        groups = f if stats_per_subcarrier else 1
        uses += k * int(np.ceil(2 * groups * bits / side_info_bits_per_use))
    return uses
