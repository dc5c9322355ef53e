"""Differentiable AirComp uplink for real payloads: standardise, pack, superpose, de-normalise."""

import tensorflow as tf
from sionna.phy import Block

from .aircomp import estimate_from_validated, validate_design
from deft6g.checks import as_tensor, check_dim
from .payload import pack, standardise, unpack
from deft6g.rng import reseed


class AirCompUplink(Block):
    r"""Estimate the weighted sum :math:`\sum_k w_k x_k` of K devices' real payloads by MIMO AirComp.

    Each device standardises its payload (mean and std are side information, sent once, noise-free, and
    counted by `aircomp_channel_uses(L, num_devices=K, num_subcarriers=F, stats_per_subcarrier=...)`),
    packs two reals per unit-variance complex symbol and transmits :math:`b_k (c_k / c_{max}) s_k` with
    :math:`c_k = w_k \,\mathrm{std}_k`, so the power budget of the design (:math:`|b_k|^2 \le P_k`) holds.
    The server computes :math:`\hat f = a^H y`, scales by :math:`c_{max}`, unpacks and adds
    :math:`\sum_k w_k \mathrm{mean}_k`. With equal weights and stds the error per real entry has variance
    :math:`\mathrm{std}^2 \cdot` `aircomp_mse(H, a, b, noise_var, payload_cov=payload_correlation(x))`
    (without `payload_cov` when the payloads are independent across devices). Gradients flow to `x`.

    Parameters
    ----------
    precision : None (default) | "single" | "double"
        Sionna's convention: inputs are cast to `self.rdtype`/`self.cdtype`, the output is `self.rdtype`

    Input
    -----
    x : [..., K, L], tf.float
        Device payloads, L reals each (with `over_subcarriers`: [..., F, K, L'], one row per subcarrier)
    H : [..., N, K], tf.complex
        Channels (OFDM: [..., F, N, K]); leading dimensions broadcast against those of `x`
    a : [..., N], tf.complex
        Receive beamformer
    b : [..., K], tf.complex
        Transmit scalars, :math:`|b_k|^2 \le P_k` (e.g. from `deft6g.optim.design_aircomp`)
    noise_var : scalar or [...], tf.float
        :math:`\sigma^2`, linear, per receive antenna (per complex dimension), >= 0
    weights : None (default) | [K], tf.float
        Aggregation weights :math:`w_k` (None: plain sum, :math:`w_k = 1`)
    seed : None (default) | int
        Re-seeds the library RNG before the misalignment and noise draws
    misalignment : None (default) | `TransmitMisalignment`
        Amplitude/phase/drift errors applied to the packed symbols the devices send (drawn after
        re-seeding, before the noise)
    over_subcarriers : bool
        `x` is [..., F, K, L'] and each device standardises once over all its F x L' reals (2
        side-information reals per device, not 2F); count with
        `aircomp_channel_uses(..., stats_per_subcarrier=False)` (default False)

    Output
    ------
    f_hat : [..., L], tf.float
        Estimate of :math:`\sum_k w_k x_k` (with `over_subcarriers`: [..., F, L'])

    Example
    -------
    >>> import tensorflow as tf
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=3)(8, seed=0)      # [8, 4, 3]
    >>> a, b = optim.closed_form_design(H, 1.0, "zf")           # aligned design, P_k = 1
    >>> x = tf.random.normal([8, 3, 100])                        # 3 devices, 100 reals each
    >>> f_hat = phy.AirCompUplink()(x, H, a, b, noise_var=0.01, seed=1)   # estimates sum_k x_k
    >>> f_hat.shape, f_hat.dtype
    (TensorShape([8, 100]), tf.float32)
    """

    def call(self, x, H, a, b, noise_var, weights=None, seed=None, misalignment=None, over_subcarriers=False):
        H, a, b, nv, _ = validate_design(H, a, b, noise_var)
        H, a, b = (tf.cast(t, self.cdtype) for t in (H, a, b))
        nv = tf.cast(nv, self.rdtype)
        x = tf.cast(as_tensor(x, "x", min_rank=2), self.rdtype)
        n_dev = H.shape[-1]
        check_dim(x, -2, n_dev, "x", "K (columns of H)")
        if weights is None:
            weights = tf.ones([n_dev], self.rdtype)
        weights = tf.cast(as_tensor(weights, "weights", min_rank=1), self.rdtype)
        check_dim(weights, -1, n_dev, "weights", "K (columns of H)")
        num_reals = x.shape[-1]

        if over_subcarriers and x.shape.rank < 3:
            raise ValueError(f"`x` must be [..., F, K, L] with `over_subcarriers`, got shape {x.shape.as_list()}")
        z, mean, std = standardise(x, over_subcarriers)
        c = weights * std                                                   # [..., K]
        c_max = tf.reduce_max(tf.abs(c), axis=-1)                           # [...]; 0 when every payload is constant
        scale = tf.cast(c / tf.where(c_max > 0, c_max, tf.ones_like(c_max))[..., None], self.cdtype)
        reseed(seed)
        s = pack(z) if misalignment is None else tf.cast(misalignment(pack(z)), self.cdtype)
        f_hat = estimate_from_validated(s, H, a, b * scale, nv)            # [..., ceil(L/2)]
        total = unpack(f_hat, num_reals) * c_max[..., None]
        return total + tf.reduce_sum(weights * mean, axis=-1)[..., None]
