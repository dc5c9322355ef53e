"""Fading channels H [..., N, K] from Sionna: Rayleigh, correlated Rayleigh, 3GPP TDL/CDL over OFDM."""

import numpy as np
import tensorflow as tf
from sionna.phy import Block
from sionna.phy.channel import AWGN, KroneckerModel, RayleighBlockFading, cir_to_ofdm_channel, exp_corr_mat, \
    subcarrier_frequencies
from sionna.phy.channel.tr38901 import CDL, TDL, AntennaArray

from deft6g.checks import as_tensor, check_count, check_nonnegative, is_tensor, to_output
from deft6g.rng import reseed, tf_rng

FLAT_MODELS = ("rayleigh", "correlated")
TDL_MODELS = tuple(f"tdl-{m}" for m in "abcde")
CDL_MODELS = tuple(f"cdl-{m}" for m in "abcde")
CHANNEL_MODELS = FLAT_MODELS + TDL_MODELS + CDL_MODELS


class FadingChannel(Block):
    r"""Draw fading channels from K single-antenna transmitters to an N-antenna receiver.

    The receiver is the server on the AirComp and digital uplinks, and a device on a D2D link (`D2DLink`,
    `PromptLink`, with K = 1).

    Models: "rayleigh" (i.i.d. CN(0,1) entries, Sionna `RayleighBlockFading`); "correlated"
    (Kronecker model with exponential correlation :math:`R_{ij} = \rho^{|i-j|}` at the server array,
    Sionna `KroneckerModel`/`exp_corr_mat`); "tdl-a".."tdl-e" and "cdl-a".."cdl-e" (3GPP TR 38.901
    models, each device an independent link, turned into per-subcarrier responses by `cir_to_ofdm_channel`,
    with a uniform random phase per link). For OFDM models AirComp runs per resource element, so H gets a
    subcarrier axis.

    Normalisation is over the ensemble, not per realisation: the power delay profiles sum to one and the
    server's elements are omnidirectional (0 dBi), so :math:`E|H_{f,n,k}|^2 = 1` on average while the energy
    of each realisation fades (wideband fading is kept). CDL devices each see their own geometry: the server
    array is turned by an independent azimuth :math:`\phi \sim U[-\pi, \pi)` per link, which translates every
    arrival azimuth of that device (clusters and LoS, TR 38.901 §7.7.5.1) -- one fixed CDL geometry shared by
    all devices would make their signatures nearly collinear.

    Parameters
    ----------
    model : str -- one of CHANNEL_MODELS
    num_rx_ant : int -- N >= 1
    num_devices : int -- K >= 1
    correlation : float in [0, 1) -- rho of the "correlated" model
    path_gain_db : None | [K] float [dB] -- large-scale gain per device (e.g. `log_distance_gain_db`)
    num_subcarriers : int -- F for OFDM models; subcarrier_spacing [Hz]; delay_spread [s];
    carrier_frequency [Hz]
    precision : None | "single" | "double"

    Input
    -----
    batch_size : int; seed : None | int (re-seeds the library RNG)

    Output
    ------
    H : [batch_size, N, K] (flat models) or [batch_size, F, N, K] (TDL/CDL), tf.complex

    Example
    -------
    >>> H = FadingChannel("rayleigh", num_rx_ant=4, num_devices=8)(1000, seed=0)       # [1000, 4, 8]
    >>> Hf = FadingChannel("tdl-a", 4, 8, num_subcarriers=64)(10, seed=0)              # [10, 64, 4, 8]
    """

    def __init__(self, model, num_rx_ant, num_devices, *, correlation=0.7, path_gain_db=None,
                 num_subcarriers=64, subcarrier_spacing=30e3, delay_spread=100e-9, carrier_frequency=3.5e9,
                 precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        if model not in CHANNEL_MODELS:
            raise ValueError(f"`model` must be one of {CHANNEL_MODELS}, got {model!r}")
        self.model = model
        self.num_rx_ant = check_count(num_rx_ant, "num_rx_ant")
        self.num_devices = check_count(num_devices, "num_devices")
        if not 0.0 <= correlation < 1.0:
            raise ValueError(f"`correlation` must lie in [0, 1), got {correlation!r}")
        self.correlation = float(correlation)
        self._gain = None
        if path_gain_db is not None:
            g = np.asarray(path_gain_db, dtype=float)
            if g.shape != (self.num_devices,) or not np.all(np.isfinite(g)):
                raise ValueError(f"`path_gain_db` must be {self.num_devices} finite values [dB], got {path_gain_db!r}")
            self._gain = tf.constant(10 ** (g / 20), self.cdtype)
        self.num_subcarriers = check_count(num_subcarriers, "num_subcarriers")
        self.subcarrier_spacing = float(subcarrier_spacing)
        letter = model[-1].upper()
        if model in FLAT_MODELS:
            self._rayleigh = RayleighBlockFading(num_rx=1, num_rx_ant=self.num_rx_ant, num_tx=self.num_devices,
                                                 num_tx_ant=1, precision=self.precision)
            self._kronecker = KroneckerModel(r_rx=exp_corr_mat(self.correlation, self.num_rx_ant,
                                                               precision=self.precision),
                                             precision=self.precision) if model == "correlated" else None
        elif model in TDL_MODELS:
            self._link = TDL(letter, delay_spread, carrier_frequency, num_rx_ant=self.num_rx_ant, num_tx_ant=1,
                             precision=self.precision)
        else:
            bs = AntennaArray(num_rows=1, num_cols=self.num_rx_ant, polarization="single", polarization_type="V",
                              antenna_pattern="omni", carrier_frequency=carrier_frequency, precision=self.precision)
            ut = AntennaArray(num_rows=1, num_cols=1, polarization="single", polarization_type="V",
                              antenna_pattern="omni", carrier_frequency=carrier_frequency, precision=self.precision)
            self._link = CDL(letter, delay_spread, carrier_frequency, ut, bs, "uplink", precision=self.precision)
            self._link._cir_sampler = _RandomServerAzimuth(self._link._cir_sampler)   # noqa: SLF001 (Sionna 1.2)
        if model not in FLAT_MODELS:
            self._freqs = subcarrier_frequencies(self.num_subcarriers, self.subcarrier_spacing,
                                                 precision=self.precision)

    @property
    def is_ofdm(self):
        """True when H carries a subcarrier axis."""
        return self.model not in FLAT_MODELS

    def _random_phase(self, shape):
        """exp(j phi), phi ~ U[0, 2 pi): the LoS phase of a link depends on the exact device distance, which the
        single-link TR 38.901 models hold fixed; without it LoS devices (TDL/CDL-D/E) would be fully coherent."""
        phi = tf_rng().uniform(shape, 0.0, 2 * np.pi, dtype=self.rdtype)
        return tf.exp(tf.complex(tf.zeros_like(phi), phi))

    def call(self, batch_size, seed=None):
        batch_size = check_count(batch_size, "batch_size")
        reseed(seed)
        if not self.is_ofdm:
            a, _ = self._rayleigh(batch_size, 1)
            H = a[:, 0, :, :, 0, 0, 0]                                        # [B, N, K]
            if self._kronecker is not None:
                H = self._kronecker(H)
        else:
            n, k, f = self.num_rx_ant, self.num_devices, self.num_subcarriers
            a, tau = self._link(batch_size * k, 1, self.num_subcarriers * self.subcarrier_spacing)
            h = cir_to_ofdm_channel(self._freqs, a, tau, normalize=False)     # [B*K, 1, N, 1, 1, 1, F]
            h = tf.reshape(h, [batch_size, k, n, f]) * self._random_phase([batch_size, k, 1, 1])
            H = tf.transpose(h, [0, 3, 2, 1])                                 # [B, F, N, K]
        if self._gain is not None:
            H = H * self._gain
        return H


class _RandomServerAzimuth:
    """Wraps Sionna's CDL channel-coefficient generator: turns the server (receive) array of every link by its
    own azimuth phi ~ U[-pi, pi) before the rays are projected onto it, so each device arrives from its own
    directions. Input and output are those of `ChannelCoefficientsGenerator.__call__`."""

    def __init__(self, sampler):
        self._sampler = sampler

    def __call__(self, num_time_samples, sampling_frequency, k_factor, rays, topology):
        orient = topology.rx_orientations                                      # [B, 1, 3]: (yaw, tilt, roll)
        yaw = tf_rng().uniform(tf.shape(orient)[:-1], -np.pi, np.pi, dtype=orient.dtype)
        topology.rx_orientations = orient + tf.stack([yaw, tf.zeros_like(yaw), tf.zeros_like(yaw)], axis=-1)
        return self._sampler(num_time_samples, sampling_frequency, k_factor, rays, topology)


def log_distance_gain_db(distance_m, exponent=3.0, ref_distance_m=100.0):
    r"""Large-scale gain [dB] relative to a reference distance: :math:`-10\,\alpha \log_{10}(d / d_0)`.

    Input
    -----
    distance_m : [K], float
        Device distances [m], > 0
    exponent : float
        Path-loss exponent :math:`\alpha` > 0
    ref_distance_m : float
        :math:`d_0` [m] > 0

    Output
    ------
    gain_db : [K], float64
        [dB]; 0 dB at `ref_distance_m`, so the SNR convention P / sigma^2 holds for a device there

    Example
    -------
    >>> FadingChannel("rayleigh", 4, 3, path_gain_db=log_distance_gain_db([50.0, 100.0, 200.0]))
    """
    d = np.asarray(distance_m, dtype=float)
    if d.ndim != 1 or not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError(f"`distance_m` must be a 1-D array of positive distances [m], got {distance_m!r}")
    if exponent <= 0 or ref_distance_m <= 0:
        raise ValueError(f"`exponent` and `ref_distance_m` must be positive, got {exponent!r}, {ref_distance_m!r}")
    return -10.0 * exponent * np.log10(d / ref_distance_m)


def imperfect_csi(H, error_var, seed=None):
    r"""Channel estimate :math:`\hat H = H + E`, :math:`E` with i.i.d. :math:`\mathcal{CN}(0, \sigma_e^2)` entries.

    Designs use :math:`\hat H`; the link uses H.

    Input
    -----
    H : [..., N, K], complex
        The true channels (NumPy in, NumPy out)
    error_var : scalar or [...], float
        :math:`\sigma_e^2`, linear, >= 0
    seed : None (default) | int
        Re-seeds the library RNG first

    Output
    ------
    H_hat : [..., N, K], complex -- same shape and type as H
    """
    numpy_out = not is_tensor(H, error_var)
    H = as_tensor(H, "H", min_rank=2)
    if not H.dtype.is_complex:
        H = tf.cast(H, tf.complex64)
    ev = check_nonnegative(tf.cast(as_tensor(error_var, "error_var"), H.dtype.real_dtype), "error_var")
    reseed(seed)
    precision = "double" if H.dtype == tf.complex128 else "single"
    return to_output(AWGN(precision=precision)(H, ev), numpy_out)
