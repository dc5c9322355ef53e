r"""One-bit over-the-air aggregation (OBDA; Zhu, Du, Gunduz, Huang, IEEE TWC 2021): a majority vote of signs.

signSGD with majority vote (Bernstein et al., 2018) over the AirComp channel of docs/design.md §3. Device k sends
the signs :math:`x_k = \mathrm{sign}(u_k) \in \{-1, 0, +1\}^L` of its update (:math:`\mathrm{sign}(0) = 0`: a
zero entry is sent as nothing), packed two per complex symbol as BPSK on the in-phase and quadrature rails,
:math:`s_{k,i} = (x_{k,2i} + j x_{k,2i+1})/\sqrt2` (`pack`; unit energy when both entries are non-zero), and
transmits :math:`b_k s_k`; all devices share the same :math:`\lceil L/2 \rceil` channel uses. The server
forms :math:`a^H y`, unpacks it into L reals :math:`r = \sqrt2\,[\mathrm{Re}; \mathrm{Im}](a^H y)` and takes
the vote :math:`v_l = \mathrm{sign}(r_l)`.

Receive combining: any design (a, b) whose effective gains :math:`a^H h_k b_k` are 1 for the transmitting
devices and whose :math:`b_k = 0` for the silent ones makes the vote unweighted (one device, one vote), as
OBDA's truncated channel inversion does. The library's is `deft6g.optim.truncated_inversion` (peak budget
:math:`|b_k|^2 \le P_k`): a receive direction u (u = 1 for N = 1, else the normalised MRC direction), the
effective scalar gains :math:`g_k = u^H h_k`, devices with :math:`|g_k|^2 < g_{th}` silent, the others
:math:`b_k = \sqrt\eta / g_k` and :math:`a = u/\sqrt\eta` with :math:`\eta = \min_{k\ \mathrm{heard}} P_k|g_k|^2`.

Error law. With such a design :math:`r_l = S_l + z_l`, :math:`S_l = \sum_{k\ \mathrm{heard}} x_{k,l}`, and
:math:`z_l = \sqrt2\,\mathrm{Re}` (or Im) of :math:`a^H n \sim \mathcal{CN}(0, \sigma^2\|a\|^2)`, so
:math:`z_l \sim \mathcal N(0, \sigma_z^2)` with :math:`\sigma_z = \sigma\|a\|` (:math:`=\sigma/\sqrt\eta` under
truncated inversion), independent across entries. For fixed signs with :math:`S_l \ne 0` the vote differs
from the noiseless majority :math:`\mathrm{sign}(S_l)` with probability

.. math:: P_e(S_l) = Q\!\left(\frac{|S_l|}{\sigma\|a\|}\right), \qquad Q(x) = \tfrac12\,\mathrm{erfc}(x/\sqrt2).

Tie rule: :math:`v_l = 0` when :math:`r_l = 0` exactly (no heard device sent a non-zero sign on entry l on a
noiseless link, or their signs cancel on an exactly aligned noiseless link): the entry is not updated. With
noise a tie has probability 0, so an even split is broken by the noise, each way with probability 1/2.
"""

from dataclasses import dataclass

import tensorflow as tf
from sionna.phy import Block

from .aircomp import aircomp_channel_uses, estimate_from_validated, validate_design
from deft6g.checks import as_tensor, check_dim
from .payload import pack, unpack
from deft6g.rng import reseed


@dataclass
class OBDAResult:
    """One OBDA round (leading dimensions [...] = the realisations of the input).

    Parameters
    ----------
    vote : [..., L], tf.float
        The majority vote :math:`\\mathrm{sign}(r)` in {-1, 0, +1} (0 only on an exact tie, module docstring)
    received : [..., L], tf.float
        The server's soft sum r before the sign (the sum of the heard devices' signs plus noise for an
        aligned design)
    transmitted : [..., K], tf.bool
        Device k sent at least one non-zero symbol (:math:`b_k \\ne 0` and a non-zero sign)
    energy : [..., K], tf.float
        Transmit energy of the round, :math:`|b_k|^2 \\sum_i |s_{k,i}|^2 = |b_k|^2 \\cdot` (non-zero signs)/2,
        in units of (power P) x (channel uses); at most :math:`P_k \\lceil L/2 \\rceil`
    channel_uses : int
        :math:`\\lceil L/2 \\rceil` per realisation (`aircomp_channel_uses(L)`; signs need no side information)
    """
    vote: tf.Tensor
    received: tf.Tensor
    transmitted: tf.Tensor
    energy: tf.Tensor
    channel_uses: int


class OBDAUplink(Block):
    r"""One-bit over-the-air aggregation of K devices' updates: the server's majority vote of their signs.

    Parameters
    ----------
    precision : None (default) | "single" | "double"
        Sionna's convention: inputs are cast to `self.rdtype`/`self.cdtype`

    Input
    -----
    updates : [..., K, L], tf.float
        The devices' real updates (finite); only their signs are sent (sign(0) = 0: nothing sent)
    H : [..., N, K], tf.complex
        Channels; leading dimensions broadcast against those of `updates` (OFDM: one subcarrier per leading
        index, each carrying its own L entries)
    a : [..., N], tf.complex
        Receive beamformer
    b : [..., K], tf.complex
        Transmit scalars, :math:`|b_k|^2 \le P_k`, 0 for a silent device (e.g. `deft6g.optim.truncated_inversion`,
        which aligns :math:`a^H h_k b_k = 1` for the devices above its threshold)
    noise_var : scalar or [...], tf.float
        :math:`\sigma^2`, linear, per receive antenna (per complex dimension), >= 0; SNR = P / sigma^2
    seed : None (default) | int
        Re-seeds the library RNG before the noise is drawn

    Output
    ------
    result : `OBDAResult`
        vote [..., L], received [..., L], transmitted [..., K], energy [..., K], channel_uses

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> import deft6g.optim as optim
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=5)(1, seed=0)[0].numpy()   # [4, 5]
    >>> d = optim.truncated_inversion(H, 1.0, 0.1, threshold=0.3)     # weak devices silent, the rest aligned
    >>> res = phy.OBDAUplink()(np.random.randn(5, 1000), H, d.a, d.b, noise_var=0.1, seed=1)
    >>> res.vote.shape, res.channel_uses
    (TensorShape([1000]), 500)
    """

    def call(self, updates, H, a, b, noise_var, seed=None):
        H, a, b, nv, _ = validate_design(H, a, b, noise_var)
        H, a, b = (tf.cast(t, self.cdtype) for t in (H, a, b))
        nv = tf.cast(nv, self.rdtype)
        x = tf.sign(tf.cast(as_tensor(updates, "updates", min_rank=2), self.rdtype))
        check_dim(x, -2, H.shape[-1], "updates", "K (columns of H)")
        num_reals = x.shape[-1]
        if num_reals == 0:
            raise ValueError(f"`updates` must have L >= 1 entries per device, got shape {x.shape.as_list()}")
        reseed(seed)
        received = unpack(estimate_from_validated(pack(x), H, a, b, nv), num_reals)
        nonzero = tf.reduce_sum(tf.abs(x), axis=-1)                            # [..., K]
        energy = tf.abs(b) ** 2 * nonzero / 2
        return OBDAResult(tf.sign(received), received, energy > 0, energy, aircomp_channel_uses(num_reals))
