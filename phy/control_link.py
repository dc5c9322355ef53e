r"""Control signalling over the digital link: AirComp's side information up, transmit factors and grants down.

Every overhead of a radio round travels over the link it needs (docs: how results are reported). Short
control messages -- an AirComp device's payload statistics (mean, std) on the uplink, its transmit factor on
the downlink, a digital device's MCS and group grant -- are sent one device at a time (orthogonal
resources) as whole `BlockCodec` blocks (CRC24A + 5G LDPC + QAM, n = 1200 coded bits), at the entry of
`CONTROL_TABLE` the device's SINR supports. The N-antenna server combines (uplink) or beamforms (downlink,
by reciprocity) with maximum ratio on its channel *estimate* :math:`\hat h_k`:

.. math::
    \hat\gamma_k = \frac{\rho\,\|\hat h_k\|^2}{1 + \rho\, e_k} \quad\text{(selects the MCS)},\qquad
    \gamma_k = \rho\,\frac{|\hat h_k^H h_k|^2}{\|\hat h_k\|^2} \quad\text{(what the block sees)},

with :math:`e_k` the per-entry error variance of device k's estimate (0: perfect CSI), so that
:math:`\hat\gamma_k` is the standard lower bound on the MRC SINR that treats the estimation error
:math:`h_k - \hat h_k` (uncorrelated with :math:`\hat h_k`, as LMMSE's) as noise, :math:`\rho` the link's SNR (P / sigma^2 per device on the uplink, the server's power over the device's
noise on the downlink), per subcarrier on OFDM channels (folded by `effective_sinr`). Each block fails with the
calibrated BLER of its MCS at :math:`\gamma_k` (the abstract link model of `DigitalUplink`); a message is
delivered when all its blocks pass their CRC. A device below the lowest threshold is in outage: it sends
nothing and its message is not delivered.

`CONTROL_TABLE` is `MCS_TABLE` plus more repetitions of its lowest entry (NR MCS 2, QPSK R = 308/1024):
repetitions 32 ... `MAX_CONTROL_REPETITION`, thresholds extrapolated as :math:`\theta_1 - 10\log_{10} r` from the
unrepeated entry (chase combining adds the r copies' LLRs; the calibrated repetitions 2-16 of `MCS_TABLE`
sit within 0.1 dB of this law), so that a few bits can still get through far below 0 dB -- at a cost in
channel uses that grows as 1/SNR.
"""

from dataclasses import dataclass

import numpy as np
from sionna.phy import Block

from .block_codec import info_bits
from .channels import db_to_linear
from .mcs import CODEWORD_LENGTH, MCS_TABLE, Mcs, effective_sinr, select_mcs
from deft6g.checks import as_tensor, check_count
from deft6g.rng import np_rng, reseed

STATS_BITS = 64
"""An AirComp device's payload statistics (mean and std, two float32) on the uplink [bits]."""
FACTOR_BITS = 64
"""A device's complex transmit factor (two float32; 0: stay silent) on the downlink [bits]."""
GRANT_BITS = 16
"""A digital device's grant (MCS index and group slot) on the downlink [bits]."""
MAX_CONTROL_REPETITION = 1024
"""Most repetitions of the lowest control-link entry (each halves its SNR threshold, -3 dB)."""


def _control_table():
    base = next(e for e in MCS_TABLE if e.repetition == 1)               # the lowest unrepeated entry
    top = max(e.repetition for e in MCS_TABLE if e.index == base.index)
    more, r = [], 2 * top
    while r <= MAX_CONTROL_REPETITION:
        more.append(Mcs(base.index, base.num_bits_per_symbol, base.rate_x1024,
                        round(base.threshold_db - 10 * np.log10(r), 1), base.slope_db, repetition=r))
        r *= 2
    return tuple(sorted(more + list(MCS_TABLE), key=lambda e: e.bits_per_use()))


CONTROL_TABLE = _control_table()
"""The control link's MCS entries: `MCS_TABLE` extended down with repetition up to `MAX_CONTROL_REPETITION`."""


@dataclass
class ControlResult:
    """What one round of control messages delivered and cost.

    Parameters
    ----------
    delivered : [K], np.bool_
        Every block of device k's message passed its CRC (False in outage or when not active)
    mcs : [K], np.int64
        Index into `CONTROL_TABLE`; -1 = outage or not active
    uses : [K], np.int64
        Channel uses of each device's message (whole blocks, repetitions included, rounded up to whole
        OFDM symbols of F subcarriers); 0 when nothing was sent
    channel_uses : int
        Their sum (the devices take turns)
    """
    delivered: np.ndarray
    mcs: np.ndarray
    uses: np.ndarray
    channel_uses: int


class ControlLink(Block):
    r"""Send a short message to or from each of K devices over the digital link (module docstring).

    Parameters
    ----------
    table : sequence of `Mcs`
        The entries to choose from (default `CONTROL_TABLE`)

    Input
    -----
    num_bits : int | [K], int
        Message bits per device (>= 1)
    H : [N, K] | [F, N, K], complex
        True channels (the link sees them), flat or per subcarrier
    H_est : None | [N, K] | [F, N, K], complex
        The server's estimate (None: perfect CSI), used for the MCS choice and the combining/beamforming
    snr_db : float
        :math:`\rho` [dB], the link's SNR per device (transmit power over receiver noise)
    active : None | [K], bool
        Devices that take part (None: all); the others send nothing
    seed : None | int
        Re-seeds the library RNG before the block errors are drawn
    error_var : float | [K], float
        :math:`e_k` >= 0, the per-entry error variance of each device's estimate `H_est` (e.g. `PilotCsi`'s),
        linear, in units of H; the MCS choice uses the lower bound :math:`\hat\gamma_k` (module docstring).
        Default 0: the estimate is taken as exact

    Output
    ------
    ControlResult

    Example
    -------
    >>> import deft6g.phy as phy
    >>> H = phy.FadingChannel("rayleigh", 2, 4)(1, seed=0).numpy()[0]          # [N = 2, K = 4]
    >>> res = phy.ControlLink()(64, H, None, snr_db=-20.0, seed=1)            # mean and std as 2 float32
    >>> res.delivered.shape, res.channel_uses > 0
    ((4,), True)
    """

    def __init__(self, table=CONTROL_TABLE, precision=None, **kwargs):
        super().__init__(precision=precision, **kwargs)
        self.table = tuple(table)
        if not self.table:
            raise ValueError("`table` must hold at least one Mcs")

    def call(self, num_bits, H, H_est=None, snr_db=0.0, active=None, seed=None, error_var=0.0):
        h = np.asarray(as_tensor(H, "H", min_rank=2)).astype(np.complex128)
        h = h[None] if h.ndim == 2 else h                                           # [F, N, K]
        if h.ndim != 3:
            raise ValueError(f"`H` must have shape [N, K] or [F, N, K], got {list(np.shape(H))}")
        h_est = h if H_est is None else np.asarray(as_tensor(H_est, "H_est", min_rank=2)).astype(np.complex128)
        h_est = h_est[None] if h_est.ndim == 2 else h_est
        if h_est.shape != h.shape:
            raise ValueError(f"`H_est` must have the shape of `H` {list(h.shape)}, got {list(h_est.shape)}")
        f, _, k = h.shape
        bits = np.broadcast_to(np.asarray(num_bits), (k,))
        if not np.issubdtype(bits.dtype, np.integer) or np.any(bits < 1):
            raise ValueError(f"`num_bits` must be an integer >= 1 or K = {k} of them, got {num_bits!r}")
        if not np.isfinite(snr_db):
            raise ValueError(f"`snr_db` must be finite, got {snr_db!r}")
        act = np.ones(k, bool) if active is None else np.asarray(active, bool)
        if act.shape != (k,):
            raise ValueError(f"`active` must be K = {k} booleans, got shape {act.shape}")
        e = np.asarray(error_var, float)
        if e.ndim > 1 or e.size not in (1, k) or not np.all(np.isfinite(e)) or np.any(e < 0):
            raise ValueError(f"`error_var` must be a number >= 0 or K = {k} of them, got {error_var!r}")
        rho = db_to_linear(snr_db)
        norm2 = np.sum(np.abs(h_est) ** 2, axis=1)                                  # [F, K]
        sinr_est = rho * norm2 / (1.0 + rho * e)
        sinr = rho * np.abs(np.sum(np.conj(h_est) * h, axis=1)) ** 2 / np.where(norm2 > 0, norm2, 1.0)
        mcs = np.where(act, select_mcs(effective_sinr(sinr_est[None], self.table), self.table)[0], -1)   # [K]
        eff = effective_sinr(sinr[None], self.table)[:, 0]                           # [J, K]
        k_info = np.array([info_bits(e.code_rate, CODEWORD_LENGTH) for e in self.table])
        per_block = np.array([e.symbols_per_block() for e in self.table])
        j = np.maximum(mcs, 0)
        blocks = np.where(mcs >= 0, -(-bits // k_info[j]), 0)
        uses = -(-(blocks * per_block[j]) // f) * f
        eff_db = 10 * np.log10(np.maximum(eff[j, np.arange(k)], 1e-30))
        p_fail = np.zeros(k)
        for jj in np.unique(j):                                                     # one vectorised call per MCS
            p_fail[j == jj] = self.table[jj].bler(eff_db[j == jj])
        reseed(seed)
        u = np_rng().uniform(size=(k, int(blocks.max(initial=0))))
        ok = np.all((u >= p_fail[:, None]) | (np.arange(u.shape[1]) >= blocks[:, None]), axis=1)
        delivered = ok & (mcs >= 0)
        return ControlResult(delivered=delivered, mcs=mcs.astype(np.int64), uses=uses.astype(np.int64),
                             channel_uses=int(uses.sum()))


def pilot_channel_uses(num_pilots, num_subcarriers=1):
    r"""Channel uses of one round's pilots: :math:`\tau` orthogonal pilot symbols (:math:`\tau \ge K`, each
    device sends its own sequence at power P) on each of the F subcarriers: :math:`\tau F`.

    Input
    -----
    num_pilots : int -- :math:`\tau` >= 1; num_subcarriers : int -- F >= 1

    Output
    ------
    uses : int
    """
    return check_count(num_pilots, "num_pilots") * check_count(num_subcarriers, "num_subcarriers")
