r"""Digital multi-device uplink: multi-user MIMO groups, adaptive modulation and coding, a CRC per block.

The fair digital baseline of AirComp (docs/design.md §4). Per realisation the server, which knows the channel,
splits the K devices into groups; groups use orthogonal resources (time slots; on OFDM channels every group
has all F subcarriers), the up to N devices of a group transmit at once and the server separates them with a
linear detector (`equalize`: Sionna's LMMSE or ZF). Each device's MCS comes from its post-detection SINR
(`select_mcs`, NR MCS table 2 with measured 10 %-BLER thresholds; below the lowest threshold the device is in
outage: it is dropped and stays silent), or is fixed.

Scheduling (`schedule`). A plan's outage is the expected fraction of the devices' blocks lost,
:math:`\bar o = \frac1K \sum_k p_k` with :math:`p_k` = 1 for a dropped device and the calibrated BLER of its MCS
at its effective SINR otherwise (`block_error_prob`). The candidate plans, with at most S = min(N, K) devices
per group (`streams="auto"`; an integer caps S), are
- `channel_aware_groups` for every group count G from ceil(K / S) to K (balanced sizes, devices with correlated
  channels kept apart; G = K is TDMA), and
- greedy merging: from TDMA, repeatedly merge the two groups (at most S devices together) whose merger saves the
  most channel uses while the plan stays admissible -- :math:`\bar o \le` `outage_target`, or, where TDMA
  itself misses the target, no further device dropped -- until no merger saves any.
The server keeps the plan with the fewest channel uses among those with :math:`\bar o \le` `outage_target`
(default 0.1); where none meets it, the one that drops the fewest devices and, among those, spends the fewest
channel uses. A dropped device's entries are missing at the server (FedAvg callers renormalise over the devices
that delivered; `deft6g.finetune.DigitalAggregator` does).

Each device sends a 64-bit header (its quantiser range lo, hi as two float32) and its q-bit quantised
payload in blocks of `BlockCodec` (k - 24 payload bits + CRC24A, LDPC, QAM). A block whose CRC fails is
dropped: an entry counts as delivered when the blocks holding its bits and the header passed their CRC.
The server's estimate of the sum is K times the mean over the devices that delivered each entry (0 where
none did). Channel uses: per group, the symbols of its longest device stream (rounded up to whole OFDM
symbols of F subcarriers), summed over groups; CRC, header and padding bits included.

`link="bits"` simulates every bit (Sionna LDPC decoding: seconds per million bits on a CPU); `link=
"abstract"` draws each block's CRC failure from the calibrated BLER of its MCS at the device's effective
SINR (`Mcs.bler`) and delivers the passed blocks bit-exactly -- the same scheduling and channel uses,
without LDPC decoding (for federated rounds; the CRC's undetected-error rate 2^-24 is neglected).
"""

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from sionna.phy import Block
from sionna.phy.channel import AWGN

from .block_codec import BlockCodec, info_bits
from .error_rates import ErrorRates
from deft6g.checks import as_tensor, check_count, check_dim, check_noise_var, check_nonnegative
from .mcs import CODEWORD_LENGTH, MCS_TABLE, effective_sinr, select_mcs
from .mu_mimo import DETECTORS, channel_aware_groups, equalize, mismatched_sinr, post_detection_sinr
from .quantizer import Quantizer
from deft6g.rng import np_rng, reseed

LINK_MODELS = ("bits", "abstract")
"""How `DigitalUplink` decides block errors: bit-true LDPC decoding, or the calibrated BLER curve."""
HEADER_BITS = 64                    # the quantiser range (lo, hi) as two float32


def delivered_sum(x_hat, valid):
    """The server's estimate of the sum over the K devices from the entries that arrived: K x the mean over the
    devices that delivered each entry, 0 where none did.

    Input
    -----
    x_hat : [..., K, L], tf.float -- the decoded payloads; valid : [..., K, L], bool -- delivered entries

    Output
    ------
    f_hat : [..., L], x_hat's dtype
    """
    x_hat = tf.where(valid, x_hat, tf.zeros_like(x_hat))
    heard = tf.reduce_sum(tf.cast(valid, x_hat.dtype), axis=-2)
    return x_hat.shape[-2] * tf.math.divide_no_nan(tf.reduce_sum(x_hat, axis=-2), heard)


@dataclass
class UplinkResult(ErrorRates):
    """What one digital round delivered and cost (leading dimensions [...] = the realisations of the input).

    Parameters
    ----------
    f_hat : [..., L], tf.float
        The server's sum estimate, K x the mean over the devices that delivered each entry (0 where none did)
    x_hat : [..., K, L], tf.float
        Delivered payloads, 0 where not delivered
    valid : [..., K, L], tf.bool
        Delivered (the entry's blocks and the device's header passed their CRC)
    agg_mse : float
        Per-entry MSE of f_hat against the true sum (linear)
    bit_errors, bits : int
        Payload-bit errors of the transmitted blocks before the CRC, and their number (0 for link="abstract")
    block_errors, blocks : int
        CRC failures and transmitted blocks
    channel_uses : [...], int
        Symbols of all groups per realisation
    mcs : [..., K], int
        MCS table index (adaptive) or 0 (fixed); -1 = outage
    groups : [...], int
        Number of orthogonal groups
    devices : [...], int
        Devices that delivered at least one entry
    outage : [...], float
        The scheduler's expected fraction of blocks lost: `DigitalUplink.block_error_prob` (1 for a dropped
        device) averaged over the K devices (None when built by hand)

    `ber` (NaN for link="abstract") and `bler` (block_errors / blocks, 0 when none) are the rates behind the
    counts (`ErrorRates`); `drop_rate` is the fraction of devices the scheduler dropped (no MCS).
    """
    EMPTY_BLER = 0.0

    f_hat: tf.Tensor
    x_hat: tf.Tensor
    valid: tf.Tensor
    agg_mse: float
    bit_errors: int
    bits: int
    block_errors: int
    blocks: int
    channel_uses: np.ndarray
    mcs: np.ndarray
    groups: np.ndarray
    devices: np.ndarray
    outage: np.ndarray = None

    @property
    def drop_rate(self):
        """Fraction of the K devices in outage (no MCS: dropped, nothing sent), [...] float."""
        return np.mean(np.asarray(self.mcs) < 0, axis=-1)


class DigitalUplink(Block):
    r"""K devices send quantised payloads digitally to an N-antenna server (see the module docstring).

    Parameters
    ----------
    num_bits : int -- quantiser bits per real; stochastic_rounding : bool
    mcs : "adaptive" (default) | (num_bits_per_symbol, code_rate) -- a fixed MCS for every device
        (code_rate None: uncoded); adaptive needs codeword_length 1200, the calibration's
    detector : "lmmse" (default) | "zf"
    streams : "auto" (default) | int -- at most this many devices per group (1: TDMA)
    outage_target : float in (0, 1) -- the largest expected fraction of blocks lost (dropped devices count whole)
        a plan may have (default 0.1; module docstring)
    link : "bits" (default) | "abstract"
    codeword_length : int n; num_iter : int -- LDPC belief-propagation iterations

    Input
    -----
    x : [B, K, L] or [K, L] float payloads; H : [B, N, K] | [B, F, N, K] (or without B) complex channels;
    noise_var : float > 0 (per antenna, linear); power : scalar or [K] (P_k, linear; SNR = P / noise_var);
    H_est : None | the shape of H -- the server's channel estimate (e.g. `PilotCsi`): groups, MCS and detection
    use it, while the blocks see the true channel through that detector (`mismatched_sinr`); None: perfect CSI;
    error_var : float | [K] float, >= 0 -- the estimate's per-entry error variance, one for all devices or
    device k's e_k (e.g. `PilotCsi`'s with a per-device prior): the detector and the SINR the scheduler predicts
    count the error of the up to S devices of a group as noise, sigma^2 + the sum of the S largest P_k e_k
    (S P e for equal ones; a robust LMMSE; 0: none);
    seed : None | int

    Output
    ------
    UplinkResult (without the B dimension when x had none)

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> H = phy.FadingChannel("rayleigh", num_rx_ant=4, num_devices=8)(10, seed=0)     # [B = 10, N = 4, K = 8]
    >>> x = np.random.default_rng(0).normal(size=(10, 8, 1000)).astype(np.float32)      # [B, K, L]
    >>> res = phy.DigitalUplink(num_bits=8, link="abstract")(x, H, noise_var=0.1, seed=0)   # SNR 10 dB
    >>> res.f_hat.shape, res.channel_uses.shape, res.mcs.shape
    (TensorShape([10, 1000]), (10,), (10, 8))
    >>> round(res.agg_mse, 3), res.channel_uses              # per-entry MSE of the sum; symbols per realisation
    (0.302, array([9400, 9600, 7800, 8400, 8000, 7600, 9000, 8400, 8800, 7700]))
    """

    def __init__(self, num_bits=8, mcs="adaptive", detector="lmmse", streams="auto", link="bits",
                 codeword_length=CODEWORD_LENGTH, num_iter=20, stochastic_rounding=False, outage_target=0.1,
                 precision=None):
        super().__init__(precision=precision)
        if isinstance(outage_target, bool) or not isinstance(outage_target, (int, float, np.number)) \
                or not 0.0 < outage_target < 1.0:
            raise ValueError(f"`outage_target` must be a number in (0, 1), got {outage_target!r}")
        self.outage_target = float(outage_target)
        self.quantizer = Quantizer(num_bits, stochastic_rounding, precision=precision)
        if detector not in DETECTORS:
            raise ValueError(f"`detector` must be one of {DETECTORS}, got {detector!r}")
        if link not in LINK_MODELS:
            raise ValueError(f"`link` must be one of {LINK_MODELS}, got {link!r}")
        if streams != "auto":
            check_count(streams, "streams")
        self.detector, self.streams, self.link_model = detector, streams, link
        self.n, self.num_iter = check_count(codeword_length, "codeword_length"), num_iter
        if mcs == "adaptive":
            if self.n != CODEWORD_LENGTH:
                raise ValueError(f"`codeword_length` must be {CODEWORD_LENGTH} (the MCS calibration's) with "
                                 f"mcs='adaptive', got {codeword_length}")
            self.table = MCS_TABLE
            self._entries = [(e.num_bits_per_symbol, e.code_rate, e.repetition) for e in MCS_TABLE]
        elif isinstance(mcs, tuple) and len(mcs) == 2:
            match = [e for e in MCS_TABLE if e.num_bits_per_symbol == mcs[0] and mcs[1] is not None
                     and abs(e.code_rate - mcs[1]) < 1e-6 and e.repetition == 1 and self.n == CODEWORD_LENGTH]
            if link == "abstract" and not match:
                raise ValueError(f"`link`='abstract' needs an MCS of MCS_TABLE (with n = {CODEWORD_LENGTH}), "
                                 f"got mcs={mcs!r}, codeword_length={codeword_length}")
            self.table = tuple(match) or None
            BlockCodec(mcs[0], mcs[1], self.n, num_iter)                 # validates m, rate and n
            self._entries = [(*mcs, 1)]
        else:
            raise ValueError(f"`mcs` must be 'adaptive' or a (num_bits_per_symbol, code_rate) tuple, got {mcs!r}")
        self.adaptive = mcs == "adaptive"
        self._k_info = np.array([info_bits(r, self.n) for _, r, _ in self._entries])
        self._sym_per_block = np.array([rep * self.n // m for m, _, rep in self._entries])
        self._codecs = {}
        self._awgn = AWGN(precision=self.precision)

    def _codec(self, j):
        if j not in self._codecs:
            m, rate, rep = self._entries[j]
            self._codecs[j] = BlockCodec(m, rate, self.n, self.num_iter, precision=self.precision, repetition=rep)
        return self._codecs[j]

    def payload_bits(self, num_reals):
        """Bits a device sends for `num_reals` reals: header + q bits per real."""
        return HEADER_BITS + num_reals * self.quantizer.num_bits

    def blocks(self, num_reals, mcs=0):
        """Blocks per device at MCS index `mcs` (array-like)."""
        return -(-self.payload_bits(num_reals) // self._k_info[mcs])

    def symbols(self, num_reals, mcs=0):
        """Channel uses of one device's stream at MCS index `mcs` (array-like)."""
        return self.blocks(num_reals, mcs) * self._sym_per_block[mcs]

    # ------------------------------------------------------------------ scheduling
    def schedule(self, h, noise_var, num_reals):
        """Groups and MCS per realisation (see the module docstring). h [B, F, N, K] complex NumPy (amplitudes
        folded in), F = 1 flat.

        Returns (groups: list over B of lists of device-index arrays, mcs [B, K] int (-1 outage),
        sinr_eff [B, K] effective SINR of the chosen MCS (linear), channel_uses [B] int, outage [B] float:
        the chosen plan's expected fraction of blocks lost, `block_error_prob` averaged over the K devices).
        """
        n_real, _, n_ant, k = h.shape
        if self.streams != "auto" and self.detector == "zf" and self.streams > n_ant:
            raise ValueError(f"`streams` must be <= N = {n_ant} for ZF detection, got {self.streams}")
        most = min(n_ant, k) if self.streams == "auto" else min(self.streams, k)
        counts = range(-(-k // most), k + 1) if self.streams == "auto" else [-(-k // most)]
        rows = np.arange(n_real)
        label = np.zeros((len(counts), n_real, k), int)
        by_size = {}
        for c, g in enumerate(counts):
            for members in channel_aware_groups(h, g):
                np.put_along_axis(label[c], members, members[:, :1], -1)
                by_size.setdefault(members.shape[-1], []).append((c, members))
        mcs, eff = np.zeros(label.shape, int), np.zeros(label.shape)
        uses = np.zeros(label.shape[:2], int)
        for items in by_size.values():
            gm, ge, gu = self._link_adapt(h, np.tile(rows, len(items)), np.concatenate([m for _, m in items]),
                                          noise_var, num_reals)
            for i, (c, members) in enumerate(items):
                part = slice(i * n_real, (i + 1) * n_real)
                np.put_along_axis(mcs[c], members, gm[part], -1)
                np.put_along_axis(eff[c], members, ge[part], -1)
                uses[c] += gu[part]
        merged = self._merge(h, noise_var, num_reals, most)
        label, mcs, eff, uses = (np.concatenate([p, m[None]]) for p, m in zip((label, mcs, eff, uses), merged))
        outage = self.block_error_prob(eff, mcs).mean(-1)                           # [C, B]
        meets = outage <= self.outage_target
        best = np.where(meets.any(0), np.lexsort((outage, uses, ~meets), axis=0)[0],
                        np.lexsort((uses, (mcs < 0).sum(-1)), axis=0)[0])           # [B]
        label = label[best, rows]
        groups = [[np.flatnonzero(lab == r) for r in np.unique(lab)] for lab in label]
        return groups, mcs[best, rows], eff[best, rows], uses[best, rows], outage[best, rows]

    def _link_adapt(self, h, rows, members, noise_var, num_reals):
        """MCS of M groups transmitting at once: group i is devices members[i] [S] of realisation rows[i].
        Returns (mcs [M, S] int, sinr_eff [M, S] linear, channel_uses [M] int)."""
        f = h.shape[1]
        hg = np.take_along_axis(h[rows], members[:, None, None, :], -1)                # [M, F, N, S]
        sinr = post_detection_sinr(tf.constant(hg, self.cdtype), noise_var, self.detector,
                                   self.precision).numpy()                            # [M, F, S]
        if self.adaptive:
            eff_all = effective_sinr(sinr, self.table)                                # [J, M, S]
            mcs = select_mcs(eff_all, self.table)
            eff = np.take_along_axis(eff_all, np.maximum(mcs, 0)[None], 0)[0]
        else:
            mcs = np.zeros(members.shape, int)
            eff = effective_sinr(sinr, self.table)[0] if self.table else np.full(mcs.shape, np.nan)
        sym = np.where(mcs >= 0, self.symbols(num_reals, np.maximum(mcs, 0)), 0).max(-1)
        return mcs, eff, -(-sym // f) * f

    def _merge(self, h, noise_var, num_reals, most):
        """Greedy merging (module docstring): from every device alone, merge the two groups whose merger saves
        the most channel uses while the plan stays admissible, until no merger saves any.
        Returns (label [B, K] int: the lowest device index of each device's group, mcs [B, K], sinr_eff [B, K],
        channel_uses [B])."""
        n_real, k = h.shape[0], h.shape[-1]
        rows = np.arange(n_real)
        label = np.tile(np.arange(k), (n_real, 1))
        gm, ge, gu = self._link_adapt(h, np.repeat(rows, k), label.reshape(-1, 1), noise_var, num_reals)
        mcs, eff = gm.reshape(n_real, k), np.array(ge).reshape(n_real, k)               # eff: writable copy
        size, g_uses = np.ones((n_real, k), int), gu.reshape(n_real, k)              # per group, at its label
        p_fail = self.block_error_prob(eff, mcs)                                       # [B, K]
        tdma_misses = p_fail.mean(-1) > self.outage_target                             # [B]
        pair = np.triu(np.ones((k, k), bool), 1)
        stale = np.ones((n_real, k, k), bool)
        saving, d_fail, d_drop = (np.zeros((n_real, k, k)) for _ in range(3))

        def merge(b, i, j):
            """Link adaptation of groups i and j of realisations b merged: (members, mcs, sinr_eff, uses)."""
            inside = (label[b] == i[:, None]) | (label[b] == j[:, None])               # [M, K]
            out = []
            for s in np.unique(inside.sum(-1)):
                sel = np.flatnonzero(inside.sum(-1) == s)
                members = np.sort(np.argsort(~inside[sel], -1, kind="stable")[:, :s], -1)
                out.append((sel, members, *self._link_adapt(h, b[sel], members, noise_var, num_reals)))
            return out

        while True:
            valid = pair & (size[:, :, None] + size[:, None, :] <= most) & (size[:, :, None] > 0) \
                & (size[:, None, :] > 0)
            b, i, j = np.nonzero(valid & stale)
            for sel, members, m, e, u in merge(b, i, j):
                bs, is_, js = b[sel], i[sel], j[sel]
                old_fail = np.take_along_axis(p_fail[bs], members, -1)
                old_drop = np.take_along_axis(mcs[bs], members, -1) < 0
                saving[bs, is_, js] = g_uses[bs, is_] + g_uses[bs, js] - u
                d_fail[bs, is_, js] = (self.block_error_prob(e, m) - old_fail).sum(-1)
                d_drop[bs, is_, js] = (m < 0).sum(-1) - old_drop.sum(-1)
            stale[valid] = False
            fail = p_fail.sum(-1)[:, None, None]
            ok = valid & (saving > 0) & (((fail + d_fail) / k <= self.outage_target)
                                         | (tdma_misses[:, None, None] & (d_drop <= 0)))
            best = np.where(ok, saving, -np.inf).reshape(n_real, -1)
            b = np.flatnonzero(np.isfinite(best.max(-1)))
            if not len(b):
                break
            i, j = np.divmod(best[b].argmax(-1), k)
            for sel, members, m, e, u in merge(b, i, j):
                bs, is_, js = b[sel], i[sel], j[sel]
                label[bs[:, None], members] = is_[:, None]
                mcs[bs[:, None], members], eff[bs[:, None], members] = m, e
                p_fail[bs[:, None], members] = self.block_error_prob(e, m)
                g_uses[bs, is_], g_uses[bs, js] = u, 0
                size[bs, is_], size[bs, js] = members.shape[-1], 0
                stale[bs, is_, :] = stale[bs, :, is_] = True
        return label, mcs, eff, g_uses.sum(-1)

    def block_error_prob(self, sinr_eff, mcs):
        """Probability that a block of each device fails: the calibrated BLER of its MCS at its effective SINR
        (`Mcs.bler`), 1 for a device in outage (it sends nothing), 0 for a fixed MCS outside `MCS_TABLE`
        (no calibration).

        Input
        -----
        sinr_eff : [...], float -- effective SINR of the device's MCS, linear; mcs : [...], int -- index, -1 outage

        Output
        ------
        p_fail : [...], np.float64
        """
        p_fail = np.where(mcs < 0, 1.0, 0.0)
        for j, e in enumerate(self.table or ()):
            p_fail = np.where(mcs == j, e.bler(10 * np.log10(np.maximum(sinr_eff, 1e-30))), p_fail)
        return p_fail

    # ------------------------------------------------------------------ transmission
    def _transmit(self, tx_bits, h, noise_var, groups, mcs, h_est, design_noise_var):
        """Bit-true: encode, superpose per group, AWGN, detect (with the estimate h_est), decode. tx_bits
        [B, K, Lb] NumPy 0/1. Returns (rx_bits [B, K, Lb], block_ok [B, K, Cmax] bool, bit_errors)."""
        n_real, f, _, k = h.shape
        lb = tx_bits.shape[-1]
        used = sorted(set(mcs[mcs >= 0].tolist()))
        blocks = {j: int(-(-lb // self._k_info[j])) for j in used}
        t = max([blocks[j] * self._sym_per_block[j] for j in used] + [1])
        t = -(-t // f) * f
        x = np.zeros((n_real, k, t), np.complex128)
        for j in used:
            b, d = np.nonzero(mcs == j)
            info = np.zeros((len(b), blocks[j] * self._k_info[j]))
            info[:, :lb] = tx_bits[b, d]
            sym = self._codec(j).encode(info.reshape(len(b), blocks[j], -1)).numpy()
            x[b, d, :sym.shape[-1]] = sym
        x_hat = np.zeros_like(x)
        no = np.ones(x.shape)
        for b in range(n_real):
            for members in groups[b]:
                hg = tf.constant(h[b][..., members], self.cdtype)                     # [F, N, S]
                xs = tf.constant(x[b, members].reshape(len(members), -1, f), self.cdtype)   # [S, T/F, F]
                y = self._awgn(tf.einsum("fns,stf->tfn", hg, xs), tf.constant(noise_var, self.rdtype))
                he = tf.constant(h_est[b][..., members], self.cdtype)
                xe, ne = equalize(y, he, design_noise_var, self.detector, self.precision)  # [T/F, F, S], [F, S]
                x_hat[b, members] = np.moveaxis(xe.numpy(), -1, 0).reshape(len(members), -1)
                no[b, members] = np.tile(np.moveaxis(ne.numpy(), -1, 0), (1, t // f))
        rx = np.zeros(tx_bits.shape)
        ok = np.zeros((n_real, k, max(blocks.values(), default=1)), bool)
        for j in used:
            b, d = np.nonzero(mcs == j)
            width = blocks[j] * self._sym_per_block[j]
            info, crc = self._codec(j).decode(tf.constant(x_hat[b, d, :width], self.cdtype),
                                              tf.constant(no[b, d, :width], self.rdtype))
            rx[b, d] = info.numpy().reshape(len(b), -1)[:, :lb]
            ok[b, d, :blocks[j]] = crc.numpy()
        sent = mcs >= 0
        return rx, ok, int(np.sum(rx[sent] != tx_bits[sent]))

    def _draw(self, eff, mcs, num_blocks):
        """Abstract link: block_ok [B, K, Cmax], each block passing with probability 1 - BLER(MCS, eff)."""
        p_fail = self.block_error_prob(eff, mcs)
        cmax = int(num_blocks.max(initial=1))
        u = np_rng().uniform(size=mcs.shape + (cmax,))
        return (u >= p_fail[..., None]) & (np.arange(cmax) < num_blocks[..., None])

    def _true_sinr(self, h, h_est, noise_var, groups, mcs, design_noise_var):
        """Effective SINR [B, K] of each device's chosen MCS when detection uses h_est (assuming noise
        `design_noise_var`) and the channel is h (`mismatched_sinr` per group and subcarrier, folded by
        `effective_sinr`)."""
        sinr = np.zeros((h.shape[0], h.shape[1], h.shape[-1]))                    # [B, F, K]
        for b, plan in enumerate(groups):
            for members in plan:
                sinr[b][:, members] = mismatched_sinr(h[b][..., members], h_est[b][..., members], noise_var,
                                                      self.detector, design_noise_var)
        eff_all = effective_sinr(sinr, self.table) if self.table else np.broadcast_to(sinr[:, 0], (1,) + mcs.shape)
        return np.take_along_axis(eff_all, np.maximum(mcs, 0)[None], 0)[0]

    def call(self, x, H, noise_var, power=1.0, seed=None, H_est=None, error_var=0.0):
        x = tf.cast(as_tensor(x, "x", min_rank=2), self.rdtype)
        H = tf.cast(as_tensor(H, "H", min_rank=2), self.cdtype)
        estimated = H_est is not None
        H_est = tf.cast(as_tensor(H_est, "H_est", min_rank=2), self.cdtype) if estimated else H
        if H_est.shape != H.shape:
            raise ValueError(f"`H_est` must have the shape of `H` {H.shape.as_list()}, got {H_est.shape.as_list()}")
        single = x.shape.rank == 2
        if single:
            x, H, H_est = x[None], H[None], H_est[None]
        if x.shape.rank != 3:
            raise ValueError(f"`x` must have shape [B, K, L] or [K, L], got {x.shape.as_list()}")
        n_real, k, num_reals = x.shape
        check_dim(H, -1, k, "H", "K (devices in x)")
        check_dim(H, 0, n_real, "H", "B (realisations in x)")
        if H.shape.rank not in (3, 4):
            raise ValueError(f"`H` must have shape [B, N, K] or [B, F, N, K], got {H.shape.as_list()}")
        nv = float(check_noise_var(noise_var, tf.float64, positive=True))
        p = check_nonnegative(tf.cast(as_tensor(power, "power"), self.rdtype), "power")
        if p.shape.rank:
            check_dim(p, -1, k, "power", "K (devices in x)")
        reseed(seed)
        amp = np.sqrt(np.broadcast_to(p.numpy(), (k,)))
        h, h_est = ((t.numpy() if t.shape.rank == 4 else t.numpy()[:, None]) * amp for t in (H, H_est))  # [B, F, N, K]
        e = np.asarray(error_var, float)
        if e.ndim > 1 or e.size not in (1, k) or not np.all(np.isfinite(e)) or np.any(e < 0):
            raise ValueError(f"`error_var` must be a finite number >= 0 or K = {k} of them, got {error_var!r}")
        streams = min(h.shape[-2], k) if self.streams == "auto" else min(self.streams, k)
        worst = np.sort(np.broadcast_to(e, (k,)) * amp ** 2)[k - streams:]       # the S largest P_k e_k
        nv_det = nv + math.fsum(worst)                                            # robust: CSI error as noise
        groups, mcs, eff, uses, outage = self.schedule(h_est, nv_det, num_reals)
        if estimated:                                             # the blocks see the mismatched detector's SINR
            eff = self._true_sinr(h, h_est, nv, groups, mcs, nv_det)
        bits, lo, hi = self.quantizer.quantize(x)
        header = np.stack([lo.numpy(), hi.numpy()], -1).astype(np.float32).view(np.uint32)      # [B, K, 2]
        header = (header[..., None] >> np.arange(31, -1, -1, dtype=np.uint32)) & 1
        tx = np.concatenate([header.reshape(n_real, k, HEADER_BITS), bits.numpy()], -1)
        num_blocks = np.where(mcs >= 0, self.blocks(num_reals, np.maximum(mcs, 0)), 0)
        if self.link_model == "bits":
            rx, ok, bit_errors = self._transmit(tx, h, nv, groups, mcs, h_est, nv_det)
            bits_sent = int((mcs >= 0).sum()) * tx.shape[-1]
        else:
            rx, ok, bit_errors, bits_sent = tx, self._draw(eff, mcs, num_blocks), 0, 0
        k_info = self._k_info[np.maximum(mcs, 0)][..., None]
        block_of_bit = np.minimum(np.arange(tx.shape[-1]) // k_info, ok.shape[-1] - 1)
        bit_ok = np.take_along_axis(ok, block_of_bit, -1) & (mcs >= 0)[..., None]
        entry_ok = bit_ok[..., HEADER_BITS:].reshape(n_real, k, num_reals, -1).all(-1)
        valid = entry_ok & bit_ok[..., :HEADER_BITS].all(-1, keepdims=True)
        span = (rx[..., :HEADER_BITS].reshape(n_real, k, 2, 32) * (1 << np.arange(31, -1, -1))).sum(-1)
        span = np.where(valid.any(-1, keepdims=True), span.astype(np.uint32).view(np.float32), 0.0)
        x_hat = self.quantizer.dequantize(rx[..., HEADER_BITS:], span[..., 0], span[..., 1])
        valid_t = tf.constant(valid)
        x_hat = tf.where(valid_t, x_hat, tf.zeros_like(x_hat))
        f_hat = delivered_sum(x_hat, valid_t)
        agg_mse = float(tf.reduce_mean((f_hat - tf.reduce_sum(x, axis=-2)) ** 2))
        transmitted = np.arange(ok.shape[-1]) < num_blocks[..., None]
        out = UplinkResult(f_hat=f_hat, x_hat=x_hat, valid=valid_t, agg_mse=agg_mse, bit_errors=bit_errors,
                           bits=bits_sent, block_errors=int((transmitted & ~ok).sum()), blocks=int(num_blocks.sum()),
                           channel_uses=uses, mcs=mcs, groups=np.array([len(g) for g in groups]),
                           devices=valid.any(-1).sum(-1), outage=outage)
        if single:
            for name in ("f_hat", "x_hat", "valid"):
                setattr(out, name, getattr(out, name)[0])
            out.channel_uses, out.mcs, out.groups, out.devices, out.outage = (
                int(uses[0]), mcs[0], int(out.groups[0]), int(out.devices[0]), float(outage[0]))
        return out
