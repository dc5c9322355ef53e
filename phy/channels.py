"""Fading channels H [..., N, K] from Sionna: Rayleigh, correlated Rayleigh, 3GPP TDL/CDL over OFDM, and 3GPP
UMi/UMa/RMa drops of the devices in one sector (path loss, shadowing, per-device clusters) over OFDM."""

import logging

import numpy as np
import tensorflow as tf
from sionna.phy import Block
from sionna.phy.channel import AWGN, KroneckerModel, RayleighBlockFading, cir_to_ofdm_channel, exp_corr_mat, \
    gen_single_sector_topology, subcarrier_frequencies
from sionna.phy.channel.tr38901 import CDL, TDL, RMa, UMa, UMi, AntennaArray, PanelArray

from deft6g.checks import as_tensor, check_count, check_nonnegative, is_tensor, to_output
from deft6g.rng import reseed, tf_rng

FLAT_MODELS = ("rayleigh", "correlated")
"""Channel models with one (flat) H per realisation: i.i.d. and exponentially correlated Rayleigh."""
TDL_MODELS = tuple(f"tdl-{m}" for m in "abcde")
"""3GPP TR 38.901 tapped-delay-line models (OFDM, per subcarrier)."""
CDL_MODELS = tuple(f"cdl-{m}" for m in "abcde")
"""3GPP TR 38.901 clustered-delay-line models (OFDM, per subcarrier)."""
DROP_MODELS = ("umi", "uma", "rma")
"""3GPP TR 38.901 system-level drops of the devices in one sector (near-far path loss, shadowing)."""
CHANNEL_MODELS = FLAT_MODELS + TDL_MODELS + CDL_MODELS + DROP_MODELS
"""Every `model` that `FadingChannel` accepts."""


class FadingChannel(Block):
    r"""Draw fading channels from K single-antenna transmitters to an N-antenna receiver.

    The receiver is the server on the AirComp and digital uplinks, and a device on a D2D link (`D2DLink`,
    `PromptLink`, with K = 1).

    Models: "rayleigh" (i.i.d. CN(0,1) entries, Sionna `RayleighBlockFading`); "correlated"
    (Kronecker model with exponential correlation :math:`R_{ij} = \rho^{|i-j|}` at the server array,
    Sionna `KroneckerModel`/`exp_corr_mat`); "tdl-a".."tdl-e" and "cdl-a".."cdl-e" (3GPP TR 38.901
    models, each device an independent link, turned into per-subcarrier responses by `cir_to_ofdm_channel`,
    with a uniform random phase per link); "umi", "uma", "rma" (3GPP TR 38.901 system-level models, Sionna
    `UMi`/`UMa`/`RMa`: a drop of the K devices, see below). For OFDM models (all but "rayleigh" and
    "correlated") AirComp runs per resource element, so H gets a subcarrier axis.

    Normalisation is over the ensemble, not per realisation: the power delay profiles sum to one and the
    server's elements are omnidirectional (0 dBi), so :math:`E|H_{f,n,k}|^2 = 1` on average while the energy
    of each realisation fades (wideband fading is kept). CDL devices each see their own geometry: the server
    array is turned by an independent azimuth :math:`\phi \sim U[-\pi, \pi)` per link, which translates every
    arrival azimuth of that device (clusters and LoS, TR 38.901 §7.7.5.1) -- one fixed CDL geometry shared by
    all devices would make their signatures nearly collinear.

    Drops ("umi", "uma", "rma"): each realisation is a new drop (`gen_single_sector_topology`, 38.901
    defaults: UMi ISD 200 m, server 10 m high, devices >= 10 m away; UMa 500 m, 25 m, 35 m; RMa 5000 m,
    35 m, 35 m) of K single-antenna devices placed uniformly at random in one 120-degree sector of a server
    with an N-element ULA (`PanelArray`, half-wavelength spacing, omnidirectional, vertically polarised,
    facing the sector centre). Each device gets its own LoS/NLoS and indoor state, path loss (O2I
    penetration included), shadow fading and clusters per 38.901 §7.4-7.6; devices and array stand upright
    (no polarisation mismatch) and do not move. The large-scale gain :math:`\beta_k = 10^{-PL_k/10} SF_k`
    is kept relative to the drop's mean,

    .. math::
        \bar\beta_k = \frac{\beta_k}{\frac{1}{K}\sum_j \beta_j}, \qquad
        H_{f,n,k} = \sqrt{\bar\beta_k}\, g_{f,n,k}, \quad E|g_{f,n,k}|^2 = 1,

    so the gains of one drop average to one and :math:`E|H|^2 = 1` over the ensemble, as for the other models:
    SNR = P / sigma^2 is the average SNR of the drop's devices, and device k's own average SNR is
    :math:`\bar\beta_k P / \sigma^2`. Near devices dominate the mean, so most devices sit below 0 dB (UMi,
    K = 8: median -15 dB, std 16 dB); with K = 1 the gain is 1 and only small-scale fading and the
    geometry remain. `last_drop` holds the drop of the latest call. `delay_spread` does not apply: the
    delay spread is a 38.901 large-scale parameter of each device. With `keep_drop` the devices persist, as
    in a federated run: the first call (or `redrop`) places them, and later calls keep their positions,
    LoS/NLoS, indoor states and large-scale parameters (path loss, shadowing, delay and angle spreads) and
    redraw only the clusters and rays, i.e. the small-scale fading.

    Parameters
    ----------
    model : str -- one of CHANNEL_MODELS
    num_rx_ant : int -- N >= 1
    num_devices : int -- K >= 1
    correlation : float in [0, 1) -- rho of the "correlated" model
    path_gain_db : None | [K] float [dB] -- large-scale gain per device (e.g. `log_distance_gain_db`);
        None for the drop models, whose gains come from the drop
    num_subcarriers : int -- F for OFDM models; subcarrier_spacing [Hz]; delay_spread [s] (TDL/CDL);
    carrier_frequency [Hz]
    indoor_probability : None | float in [0, 1] -- drop models: probability that a device is indoor
        (None: 38.901's 0.8 for UMi/UMa, 0.5 for RMa)
    o2i_model : "low" | "high" -- "umi"/"uma": 38.901 outdoor-to-indoor penetration loss model
    keep_drop : bool -- drop models: keep the drop of the first call (or of `redrop`) across calls, redrawing
        the small-scale fading only; every call must then ask for the drop's batch size (default False)
    precision : None | "single" | "double"

    Input
    -----
    batch_size : int; seed : None | int (re-seeds the library RNG)

    Output
    ------
    H : [batch_size, N, K] (flat models) or [batch_size, F, N, K] (TDL/CDL/drops), tf.complex

    Note
    ----
    A drop of B x K devices costs about what a CDL draw of the same B x K links costs: measured 0.5-0.8x
    CDL-C's time at B = 100, 0.8-1.6x at B = 5, where the per-call topology set-up weighs more (N = 16,
    K = 20, F = 16; `benchmarks/link.py`, `channel_speed`). Each call is a new drop, in eager mode and under
    `tf.function` alike; `last_drop` holds values in eager mode only (in a graph, symbolic tensors).

    Example
    -------
    >>> import deft6g.phy as phy
    >>> phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=8)(1000, seed=0).shape    # [B, N, K]
    TensorShape([1000, 4, 8])
    >>> phy.FadingChannel("tdl-a", 4, 8, num_subcarriers=64)(10, seed=0).shape            # [B, F, N, K]
    TensorShape([10, 64, 4, 8])
    >>> ch = phy.FadingChannel("umi", 4, 8, num_subcarriers=16)                           # a new drop per call
    >>> ch(5, seed=0).shape, ch.last_drop["gain_db"].shape                                 # [B, F, N, K], [B, K]
    (TensorShape([5, 16, 4, 8]), TensorShape([5, 8]))
    """

    def __init__(self, model, num_rx_ant, num_devices, *, correlation=0.7, path_gain_db=None,
                 num_subcarriers=64, subcarrier_spacing=30e3, delay_spread=100e-9, carrier_frequency=3.5e9,
                 indoor_probability=None, o2i_model="low", keep_drop=False, precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        if model not in CHANNEL_MODELS:
            raise ValueError(f"`model` must be one of {CHANNEL_MODELS}, got {model!r}")
        self.model = model
        self.num_rx_ant = check_count(num_rx_ant, "num_rx_ant")
        self.num_devices = check_count(num_devices, "num_devices")
        if not 0.0 <= correlation < 1.0:
            raise ValueError(f"`correlation` must lie in [0, 1), got {correlation!r}")
        self.correlation = float(correlation)
        self._gain, self._path_beta = None, np.ones(self.num_devices)      # amplitude applied, linear gain [K]
        if path_gain_db is not None:
            g = np.asarray(path_gain_db, dtype=float)
            if g.shape != (self.num_devices,) or not np.all(np.isfinite(g)):
                raise ValueError(f"`path_gain_db` must be {self.num_devices} finite values [dB], got {path_gain_db!r}")
            if model in DROP_MODELS:
                raise ValueError(f"`path_gain_db` must be None for the drop model {model!r} (its gains come from "
                                 f"the drop), got {path_gain_db!r}")
            self._gain, self._path_beta = tf.constant(10 ** (g / 20), self.cdtype), 10 ** (g / 10)
        if indoor_probability is not None and not (isinstance(indoor_probability, (int, float))
                                                   and 0.0 <= indoor_probability <= 1.0):
            raise ValueError(f"`indoor_probability` must be None or lie in [0, 1], got {indoor_probability!r}")
        self.indoor_probability = None if indoor_probability is None else float(indoor_probability)
        if o2i_model not in ("low", "high"):
            raise ValueError(f"`o2i_model` must be 'low' or 'high', got {o2i_model!r}")
        self._last_drop = None
        if keep_drop and model not in DROP_MODELS:
            raise ValueError(f"`keep_drop` applies to the drop models {DROP_MODELS}, got model {model!r}")
        self.keep_drop, self._drop_batch = bool(keep_drop), None
        self.num_subcarriers = check_count(num_subcarriers, "num_subcarriers")
        self.subcarrier_spacing = float(subcarrier_spacing)
        letter = model[-1].upper()
        if model in FLAT_MODELS:
            self._rayleigh = RayleighBlockFading(num_rx=1, num_rx_ant=self.num_rx_ant, num_tx=self.num_devices,
                                                 num_tx_ant=1, precision=self.precision)
            self._kronecker = KroneckerModel(r_rx=exp_corr_mat(self.correlation, self.num_rx_ant,
                                                               precision=self.precision),
                                             precision=self.precision) if model == "correlated" else None
        elif model in DROP_MODELS:
            arrays = [PanelArray(num_rows_per_panel=1, num_cols_per_panel=n, polarization="single",
                                 polarization_type="V", antenna_pattern="omni", carrier_frequency=carrier_frequency,
                                 precision=self.precision) for n in (1, self.num_rx_ant)]
            common = dict(enable_pathloss=False, enable_shadow_fading=False, precision=self.precision)
            if model == "rma":
                self._system = RMa(carrier_frequency, *arrays, "uplink", **common)
            else:
                self._system = {"umi": UMi, "uma": UMa}[model](carrier_frequency, o2i_model, *arrays, "uplink",
                                                               **common)
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
        elif self.model in DROP_MODELS:
            H = self._drop(batch_size)
        else:
            n, k, f = self.num_rx_ant, self.num_devices, self.num_subcarriers
            a, tau = self._link(batch_size * k, 1, self.num_subcarriers * self.subcarrier_spacing)
            h = cir_to_ofdm_channel(self._freqs, a, tau, normalize=False)     # [B*K, 1, N, 1, 1, 1, F]
            h = tf.reshape(h, [batch_size, k, n, f]) * self._random_phase([batch_size, k, 1, 1])
            H = tf.transpose(h, [0, 3, 2, 1])                                 # [B, F, N, K]
        if self._gain is not None:
            H = H * self._gain
        return H

    @property
    def last_drop(self):
        r"""The drop of the latest call (drop models; else None): dict of [batch_size, K] tensors "distance_m"
        (3-D device-server distance [m]), "gain_db" (:math:`10 \log_{10} \bar\beta_k`, the large-scale gain
        applied, relative to the drop's mean [dB]), "los" and "indoor" (bool)."""
        return self._last_drop

    @property
    def large_scale_gain(self):
        r"""Linear large-scale gains :math:`\bar\beta_k` of the latest call, what a server averages over time and
        uses as its channel prior (`PilotCsi`'s `channel_var`): [batch_size, K] np.float64 for the drop models
        (:math:`10^{g/10}` of `last_drop`'s "gain_db", one drop per realisation; None before the first call or
        `redrop`), [K] :math:`10^{g/10}` of `path_gain_db` when given, else ones [K] (Rayleigh, correlated,
        TDL, CDL: unit average gain per entry)."""
        if self.model in DROP_MODELS:
            return None if self._last_drop is None else 10.0 ** (np.asarray(self._last_drop["gain_db"], float) / 10)
        return self._path_beta.copy()

    def redrop(self, batch_size, seed=None):
        """Place the devices anew (`batch_size` independent drops; re-seeds the library RNG with `seed`): with
        `keep_drop`, the drop that later calls keep."""
        batch_size = check_count(batch_size, "batch_size")
        if self.model not in DROP_MODELS:
            raise ValueError(f"`redrop` applies to the drop models {DROP_MODELS}, got model {self.model!r}")
        reseed(seed)
        self._place(batch_size)

    def _drop(self, batch_size):
        """H [B, F, N, K] with the drop's normalised large-scale gains: a new drop per realisation, or with
        `keep_drop` the kept one (placed on the first call) with new small-scale fading."""
        if not self.keep_drop or self._drop_batch is None:
            self._place(batch_size)
        elif batch_size != self._drop_batch:
            raise ValueError(f"`batch_size` must be {self._drop_batch}, the kept drop's, got {batch_size}")
        gain_db = self._last_drop["gain_db"]
        a, tau = self._coefficients()                                               # a [B, 1, N, K, 1, P, 1]
        h = cir_to_ofdm_channel(self._freqs, a, tau, normalize=False)              # [B, 1, N, K, 1, 1, F]
        amp = tf.cast(10.0 ** (gain_db / 20.0), self.cdtype)[:, None, None, :]
        return tf.transpose(h[:, 0, :, :, 0, 0, :], [0, 3, 1, 2]) * amp           # [B, F, N, K]

    def _place(self, batch_size):
        """Draw a topology of `batch_size` drops and its large-scale parameters (sets `last_drop`)."""
        ut_loc, bs_loc, ut_orient, bs_orient, ut_vel, indoor = gen_single_sector_topology(
            batch_size, self.num_devices, self.model, precision=self.precision,
            indoor_probability=None if self.indoor_probability is None
            else tf.constant(self.indoor_probability, self.rdtype))
        upright = tf.constant([1.0, 0.0, 0.0], self.rdtype)                    # keep the server's yaw only
        self._system.set_topology(ut_loc, bs_loc, tf.zeros_like(ut_orient), bs_orient * upright, ut_vel, indoor)
        scenario, lsp = self._system._scenario, self._system._lsp               # noqa: SLF001 (Sionna 1.2)
        pl_db = self._system._lsp_sampler.sample_pathloss()[:, 0]               # [B, K], O2I loss included
        gain_db = 10.0 * tf.math.log(lsp.sf[:, 0]) / np.log(10.0) - pl_db       # shadow fading sf is linear
        gain_db -= tf.reduce_max(gain_db, -1, keepdims=True)                    # relative to the drop's mean:
        gain_db -= 10.0 * tf.math.log(tf.reduce_mean(10.0 ** (gain_db / 10.0), -1, keepdims=True)) / np.log(10.0)
        self._last_drop = dict(distance_m=scenario.distance_3d[:, 0], gain_db=gain_db, los=scenario.los[:, 0],
                               indoor=scenario.indoor)
        self._drop_batch = batch_size
        # a kept drop is sampled many times: compiled once for this topology (25x faster per call than eager
        # on a 2-core CPU; the same random stream, values within ~1e-6 of eager)
        def kept_drop_coefficients():
            return self._system(1, self.num_subcarriers * self.subcarrier_spacing)
        self._coefficients = tf.function(kept_drop_coefficients) if self.keep_drop else kept_drop_coefficients


class _KeptDropTracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about `kept_drop_coefficients`: each kept
    drop compiles its own function once (its topology is baked in), and TensorFlow counts the traces of all of
    them together (closures of one code object) as if one function retraced. Other warnings pass."""

    def filter(self, record):
        text = record.getMessage()
        return not ("triggered tf.function retracing" in text and "kept_drop_coefficients" in text)


tf.get_logger().addFilter(_KeptDropTracing())


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


def noise_var(snr_db):
    r"""Noise variance :math:`\sigma^2 = 10^{-\mathrm{SNR}/10}` of a link at `snr_db` [dB] with unit transmit
    power (SNR = P / sigma^2, P = 1, deft6g's convention); float or array, like `snr_db`.

    >>> from deft6g.phy import noise_var
    >>> noise_var(10.0), noise_var(-3.0)
    (0.1, 1.9952623149688795)
    """
    return db_to_linear(-np.asarray(snr_db, float))


def db_to_linear(x_db):
    r"""A power ratio given in dB (an SNR, a SINR threshold) as a linear one, :math:`10^{x/10}`; float or array,
    like `x_db` (NumPy float64; Sionna's `db_to_lin` is the TensorFlow counterpart, in its precision).

    >>> from deft6g.phy import db_to_linear
    >>> db_to_linear(20.0), db_to_linear([0.0, -10.0])
    (100.0, array([1. , 0.1]))
    """
    return 10.0 ** (np.asarray(x_db, float) / 10.0) if np.ndim(x_db) else 10.0 ** (float(x_db) / 10.0)


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
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> gain_db = phy.log_distance_gain_db([50.0, 100.0, 200.0])       # alpha = 3: +-30 log10(2) dB
    >>> gain_db
    array([ 9.03089987, -0.        , -9.03089987])
    >>> H = phy.FadingChannel("rayleigh", 4, 3, path_gain_db=gain_db)(1000, seed=0)      # [1000, 4, 3]
    >>> np.mean(np.abs(H.numpy()) ** 2, axis=(0, 1)).round(2)         # E|h_k|^2 = 10^(gain_db / 10): 8, 1, 1/8
    array([7.9 , 0.97, 0.12], dtype=float32)
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
