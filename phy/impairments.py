r"""Link impairments of the AirComp uplink: channel estimates from pilots and transmit misalignment.

CSI from pilots (`PilotCsi`): device k sends :math:`\tau` pilot symbols, orthogonal across devices
(:math:`\tau \ge K`), at pilot SNR :math:`\rho` (pilot power over noise per receive antenna). After
despreading, each entry of H is observed as :math:`y = \sqrt{\tau\rho}\,h + n`, :math:`n \sim \mathcal{CN}(0, 1)`,
and for a prior :math:`h \sim \mathcal{CN}(0, \beta)` the LMMSE estimate is

.. math:: \hat h = \frac{\beta\sqrt{\tau\rho}}{1 + \tau\rho\beta}\, y, \qquad
          H = \hat H + E,\quad \mathbb{E}|e|^2 = \frac{\beta}{1 + \tau\rho\beta},

with E uncorrelated with :math:`\hat H` (for Rayleigh fading, independent of it).

Transmit misalignment (`TransmitMisalignment`): device k's symbol l leaves with the factor
:math:`m_{kl} = (1 + \epsilon_k)\, e^{j(\phi_k + l \delta_k)}`: an amplitude error
:math:`\epsilon_k \sim \mathcal N(0, \sigma_a^2)` (power-amplifier gain error), a phase error
:math:`\phi_k \sim \mathcal N(0, \sigma_\phi^2)` [rad] (imperfect phase pre-compensation) and a phase drift
:math:`\delta_k \sim \mathcal N(0, \sigma_\delta^2)` [rad/symbol] (residual CFO :math:`\Delta f` gives
:math:`\delta = 2\pi\Delta f T_s` over OFDM symbols; a residual timing offset :math:`\Delta t` gives the
same ramp :math:`2\pi\Delta t\,\Delta f_{sc}` over subcarriers), all independent, drawn per device and
realisation. With :math:`c_k = a^H h_k b_k` and :math:`\mathbb E[e^{j\phi}] = e^{-\sigma^2/2}` for
Gaussian :math:`\phi`, the MSE averaged over the L symbols is

.. math:: \mathrm{MSE} = \sum_k \big[(1 + \sigma_a^2)|c_k|^2 - 2\bar\rho\,\Re c_k + 1\big] + \sigma^2\|a\|^2,
          \qquad \bar\rho = \frac1L \sum_{l=0}^{L-1} e^{-(\sigma_\phi^2 + l^2\sigma_\delta^2)/2}.
"""

import numpy as np
import tensorflow as tf
from sionna.phy import Block
from sionna.phy.channel import AWGN

from .aircomp import effective_gains, validate_design
from .channels import db_to_linear
from deft6g.checks import as_tensor, check_count, is_tensor, to_output
from deft6g.rng import reseed, tf_rng


def pilot_error_var(pilot_snr_db, num_pilots, channel_var=1.0):
    r"""Per-entry error variance :math:`\beta / (1 + \tau\rho\beta)` of the LMMSE channel estimate from pilots.

    The closed form of `PilotCsi`'s `error_var` (module docstring), in NumPy.

    Input
    -----
    pilot_snr_db : float | [...], float
        :math:`\rho` [dB], pilot power over noise per receive antenna, per pilot symbol
    num_pilots : int
        :math:`\tau` >= 1, pilot symbols per device
    channel_var : float | [..., K], float
        :math:`\beta` > 0, prior variance of the entries of H, linear: one for every device (default 1:
        unit-variance Rayleigh) or device k's large-scale gain :math:`\beta_k` along the last axis

    Output
    ------
    error_var : [...] | [..., K], np.float64
        :math:`\mathbb{E}|e|^2`, linear: the shape of `pilot_snr_db` for a float `channel_var`, else that of
        `pilot_snr_db[..., None]` broadcast against `channel_var`

    Example
    -------
    >>> import deft6g.phy as phy
    >>> phy.pilot_error_var([0.0, 10.0], num_pilots=8)      # 1 / (1 + 8 rho): 1/9, 1/81
    array([0.11111111, 0.01234568])
    >>> phy.pilot_error_var(0.0, num_pilots=8, channel_var=[10.0, 1.0, 0.01])   # beta_k / (1 + 8 beta_k)
    array([0.12345679, 0.11111111, 0.00925926])
    """
    rho = np.asarray(db_to_linear(pilot_snr_db))
    beta = _check_prior(channel_var)
    if np.ndim(beta):
        rho = rho[..., None]
    return beta / (1.0 + check_count(num_pilots, "num_pilots") * rho * beta)


def _check_prior(channel_var):
    """`channel_var` as a float (a number) or a float64 array of rank >= 1, finite and > 0."""
    beta = np.asarray(channel_var, float) if not isinstance(channel_var, bool) else np.asarray(np.nan)
    if beta.size == 0 or not np.all(np.isfinite(beta)) or np.any(beta <= 0):
        raise ValueError(f"`channel_var` must be a positive number or an array [..., K] of them, got {channel_var!r}")
    return float(beta) if beta.ndim == 0 else beta


def _check_std(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return float(value)


class PilotCsi(Block):
    r"""LMMSE channel estimate :math:`\hat H` from pilots, so that :math:`H = \hat H + E` (module docstring).

    Parameters
    ----------
    num_pilots : int
        :math:`\tau`, pilot symbols per device (orthogonal across devices: :math:`\tau \ge K`)
    channel_var : float | [..., K], float
        :math:`\beta` > 0, prior variance of the entries of H, linear: one for every device (default 1:
        unit-variance Rayleigh), or per device k along the last axis (its large-scale gain :math:`\beta_k`,
        e.g. `FadingChannel.large_scale_gain`), broadcast against H without its antenna axis, [..., K]
    precision : None (default) | "single" | "double"
        Sionna's convention: the dtype of `H_hat` and `error_var`

    Input
    -----
    H : [..., N, K], tf.complex
        The true channels
    pilot_snr_db : float | [...], tf.float
        :math:`\rho` [dB], pilot power over noise per receive antenna, per pilot symbol; its shape
        broadcasts against the leading dimensions of `H`. After despreading each entry sees noise
        :math:`\mathcal{CN}(0, 1)` at signal gain :math:`\sqrt{\tau\rho}`
    seed : None (default) | int
        Re-seeds the library RNG before the pilot noise is drawn; use a seed other than the one that drew H
        (the same seed repeats H's Gaussians and correlates the pilot noise with H)

    Output
    ------
    H_hat : [..., N, K], tf.complex
        The LMMSE estimate designs use (the link keeps H)
    error_var : [...] | [..., K], tf.float
        :math:`\beta_k / (1 + \tau\rho\beta_k)`, the per-entry error variance, linear: the shape of
        `pilot_snr_db` for a float `channel_var`, per device ([..., K], `pilot_snr_db[..., None]` broadcast
        against `channel_var`) for an array (as `pilot_error_var`)

    Example
    -------
    >>> import tensorflow as tf
    >>> import deft6g.phy as phy
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=3)(1000, seed=0)    # [1000, 4, 3]
    >>> H_hat, error_var = phy.PilotCsi(num_pilots=8)(H, 10.0, seed=1)   # not H's seed: same Gaussians
    >>> H_hat.shape, round(float(error_var), 6)                    # 1 / (1 + 8 x 10) = 1/81
    (TensorShape([1000, 4, 3]), 0.012346)
    >>> bool(abs(float(tf.reduce_mean(tf.abs(H - H_hat) ** 2)) - 1 / 81) < 1e-3)   # empirical E|e|^2
    True
    >>> _, error_var = phy.PilotCsi(8, channel_var=[10.0, 1.0, 0.01])(H, 0.0, seed=1)   # per-device prior
    >>> error_var.numpy().round(4)                                 # beta_k / (1 + 8 beta_k)
    array([0.1235, 0.1111, 0.0093], dtype=float32)
    """

    def __init__(self, num_pilots, channel_var=1.0, precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        self.num_pilots = check_count(num_pilots, "num_pilots")
        self.channel_var = _check_prior(channel_var)
        self._awgn = AWGN(precision=self.precision)

    def call(self, H, pilot_snr_db, seed=None):
        numpy_out = not is_tensor(H, pilot_snr_db)
        H = tf.cast(as_tensor(H, "H", min_rank=2), self.cdtype)
        if H.shape[-1] is not None and self.num_pilots < H.shape[-1]:
            raise ValueError(f"`num_pilots` ({self.num_pilots}) must be >= K = {H.shape[-1]} for orthogonal pilots")
        snr_db = tf.cast(as_tensor(pilot_snr_db, "pilot_snr_db"), self.rdtype)
        gain = self.num_pilots * tf.pow(tf.constant(10.0, self.rdtype), snr_db / 10)   # tau rho
        g = gain[..., None, None]
        beta, beta_hk = self.channel_var, self.channel_var                            # scalar: [], []
        if np.ndim(beta):
            if H.shape[-1] is not None and beta.shape[-1] != H.shape[-1]:
                raise ValueError(f"`channel_var` must hold K = {H.shape[-1]} values on its last axis, got shape "
                                 f"{list(beta.shape)}")
            beta = tf.constant(beta, self.rdtype)                                     # [..., K]
            beta_hk, gain = beta[..., None, :], gain[..., None]                       # [..., 1, K], [..., 1]
        reseed(seed)
        y = self._awgn(tf.cast(tf.sqrt(g), self.cdtype) * H, tf.ones_like(g))
        H_hat = tf.cast(beta_hk * tf.sqrt(g) / (1 + g * beta_hk), self.cdtype) * y
        error_var = beta / (1 + gain * beta)
        return to_output(H_hat, numpy_out), to_output(error_var, numpy_out)


class TransmitMisalignment(Block):
    r"""Apply amplitude, phase and phase-drift errors to the devices' transmitted symbols (module docstring).

    Parameters
    ----------
    amplitude_std : float
        :math:`\sigma_a` >= 0, std of the relative amplitude error :math:`\epsilon` (default 0)
    phase_std : float
        :math:`\sigma_\phi` >= 0 [rad], std of the static phase error (default 0)
    drift_std : float
        :math:`\sigma_\delta` >= 0 [rad/symbol], std of the per-symbol phase ramp (residual CFO/timing;
        default 0)
    precision : None (default) | "single" | "double"
        Sionna's convention

    Input
    -----
    s : [..., K, L], tf.complex
        Each device's L symbols; one error draw per device and leading index, the drift grows along L
    seed : None (default) | int
        Re-seeds the library RNG first

    Output
    ------
    x : [..., K, L], tf.complex
        :math:`m_{kl} s_{kl}`, what reaches the channel in place of :math:`s_{kl}`

    Note
    ----
    `AirCompUplink(misalignment=...)` applies it to the packed payload; `expected_mse` gives the closed form
    of the MSE and `mean_phase_factor` its :math:`\bar\rho`.

    Example
    -------
    >>> import tensorflow as tf
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> mis = phy.TransmitMisalignment(amplitude_std=0.1, phase_std=0.1, drift_std=0.01)
    >>> mis(tf.ones([8, 3, 50], tf.complex64), seed=0).shape      # 8 realisations, K = 3, L = 50
    TensorShape([8, 3, 50])
    >>> round(mis.mean_phase_factor(50), 4)
    0.9562
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=3)(8, seed=0)
    >>> a, b = optim.closed_form_design(H, 1.0, "zf")
    >>> mis.expected_mse(H, a, b, noise_var=0.01, num_symbols=50).shape     # one MSE per realisation
    TensorShape([8])
    """

    def __init__(self, amplitude_std=0.0, phase_std=0.0, drift_std=0.0, precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        self.amplitude_std = _check_std(amplitude_std, "amplitude_std")
        self.phase_std = _check_std(phase_std, "phase_std")
        self.drift_std = _check_std(drift_std, "drift_std")

    def call(self, s, seed=None):
        s = tf.cast(as_tensor(s, "s", min_rank=2), self.cdtype)
        reseed(seed)
        shape = tf.shape(s)[:-1]
        eps, phi, delta = (tf_rng().normal(shape, stddev=tf.constant(std, self.rdtype), dtype=self.rdtype)
                           for std in (self.amplitude_std, self.phase_std, self.drift_std))
        symbol = tf.range(tf.shape(s)[-1], dtype=self.rdtype)                           # l = 0 .. L-1
        angle = phi[..., None] + delta[..., None] * symbol
        m = tf.complex((1 + eps)[..., None] * tf.cos(angle), (1 + eps)[..., None] * tf.sin(angle))
        return m * s

    def mean_phase_factor(self, num_symbols=1):
        r"""Mean phase factor :math:`\bar\rho = \frac1L\sum_{l<L} e^{-(\sigma_\phi^2 + l^2\sigma_\delta^2)/2}`.

        Input
        -----
        num_symbols : int
            L >= 1, symbols the drift grows over (default 1)

        Output
        ------
        rho_bar : float
            :math:`\bar\rho` in (0, 1]
        """
        l = np.arange(check_count(num_symbols, "num_symbols"))
        return float(np.mean(np.exp(-(self.phase_std ** 2 + (l * self.drift_std) ** 2) / 2)))

    def expected_mse(self, H, a, b, noise_var, num_symbols=1):
        r"""Closed-form MSE of design (a, b) under these errors, averaged over the errors and L symbols.

        Input
        -----
        H : [..., N, K], complex
            Channels (NumPy in, NumPy out; a TF tensor in gives a tensor)
        a : [..., N], complex
            Receive beamformer
        b : [..., K], complex
            Transmit scalars
        noise_var : float | [...], float
            :math:`\sigma^2`, linear, per receive antenna (per complex dimension), >= 0
        num_symbols : int
            L, symbols per device; the drift grows over l = 0 .. L-1 (default 1)

        Output
        ------
        mse : [...], float
            Linear MSE of the sum estimate (module docstring); float64 when any of H, a, b is double
        """
        H, a, b, nv, numpy_out = validate_design(H, a, b, noise_var)
        c = effective_gains(H, a) * b
        rho = tf.constant(self.mean_phase_factor(num_symbols), c.dtype.real_dtype)
        per_device = (1 + self.amplitude_std ** 2) * tf.abs(c) ** 2 - 2 * rho * tf.math.real(c) + 1
        mse = tf.reduce_sum(per_device, axis=-1) + nv * tf.reduce_sum(tf.abs(a) ** 2, axis=-1)
        return to_output(mse, numpy_out)
