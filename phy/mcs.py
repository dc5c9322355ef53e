r"""Adaptive modulation and coding: a calibrated subset of the 5G NR PUSCH MCS table and the SINR -> MCS rule.

Each entry is one row of the 256-QAM MCS table (3GPP TS 38.214 Table 5.1.3.1-2, which PUSCH uses without
transform precoding; table index 2), i.e. Sionna's `sionna.phy.nr.utils.decode_mcs_index(index, table_index=2)`: modulation order m and target
code rate R. deft6g sends every MCS as `BlockCodec` blocks of n = 1200 coded bits: 24 CRC bits, k = round(R n)
LDPC info bits, n / m QAM symbols. Below NR MCS 2 (QPSK, R = 308/1024; MCS 0 and 1 have R < 1/5, which
Sionna's `LDPC5GEncoder` refuses) the table repeats MCS 2's blocks r = 2, 4, 8, 16 times: r n / m channel
uses per block, the copies combined by maximum ratio before demapping (chase combining; `BlockCodec`), so
each doubling gains 3 dB and halves the rate. The digital baseline thus has a rate down to -13.3 dB.

Thresholds. `threshold_db` is the SINR at which the block error rate (BLER, CRC failures) is 10 % over
AWGN, and `slope_db` the width of the waterfall: BLER(g) = Q(Q^{-1}(0.1) + (g_dB - threshold_db) / slope_db),
a probit fit. They were measured with `calibrate_mcs(MCS_TABLE, num_blocks=300, seed=0)`: bit-true
Sionna CRC24A + LDPC5G (20 belief-propagation iterations, boxplus-phi) + Gray QAM + APP demapping over
AWGN, 300 blocks per SNR on a 0.25 dB grid spanning each waterfall, the probit fitted by least squares to
the points with 1 % < BLER < 99 %, and the 10 % point rounded up to 0.1 dB. The 10 % points sit 1.5-3.2 dB
above the Shannon SINR 2^(m R) - 1 of each entry's spectral efficiency. The repeated entries were measured
the same way, with the same function and settings, by `python -m deft6g.benchmarks.mcs_calibration`
(`calibrate_mcs` of MCS 2 with r = 1, 2, 4, 8, 16 in that order, 300 blocks, 0.25 dB, seed 0; 471 s on 2
shared CPU cores): r = 1 reproduced the stored -1.3 dB and 0.393 dB exactly, and the thresholds fell by 3.0,
6.1, 9.1 and 12.0 dB (10 log10 r = 3.01, 6.02, 9.03, 12.04), 2.0-2.5 dB above the Shannon SINR
2^(m R / r) - 1. On OFDM channels EESM folds a repeated entry's subcarrier SINRs with MCS 2's beta.

The rule. A device's post-detection SINR (per subcarrier on OFDM channels, folded into one effective SINR
per MCS by Sionna's EESM with its NR beta table) selects the entry with the most payload bits per channel
use whose threshold it meets; below the lowest threshold the device is in outage and does not transmit.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from scipy.special import ndtri
from scipy.stats import norm
from sionna.phy.channel import AWGN
from sionna.sys import EESM

from .block_codec import BlockCodec, info_bits
from .channels import db_to_linear, noise_var
from deft6g.checks import check_count
from deft6g.rng import reseed, tf_rng

NR_MCS_TABLE_INDEX = 2              # PUSCH, 256-QAM table
CODEWORD_LENGTH = 1200              # n of the calibration; the thresholds hold for this n only
BLER_TARGET = 0.1
_Z_TARGET = float(ndtri(1.0 - BLER_TARGET))    # Q^{-1}(0.1) = 1.2816


@dataclass(frozen=True)
class Mcs:
    r"""One modulation-and-coding scheme of `MCS_TABLE` (module docstring).

    Its calibrated AWGN waterfall is the probit
    :math:`\mathrm{BLER}(g) = Q\big(Q^{-1}(0.1) + (g_{dB} - \mathrm{threshold\_db}) / \mathrm{slope\_db}\big)`,
    :math:`g_{dB}` the post-detection SINR [dB].

    Parameters
    ----------
    index : int
        Row of NR MCS table 2 (3GPP TS 38.214 Table 5.1.3.1-2)
    num_bits_per_symbol : int
        m, bits per QAM symbol
    rate_x1024 : float
        Target code rate R x 1024
    threshold_db : float
        Measured post-detection SINR of 10 % BLER over AWGN [dB]
    slope_db : float
        Probit slope of the BLER waterfall [dB]
    repetition : int
        r, copies of each block sent and combined by the receiver (`BlockCodec`; default 1: none)

    Note
    ----
    `code_rate`, `info_bits`, `symbols_per_block` and `bits_per_use` follow from (m, R, r) and n; the
    thresholds hold for n = `CODEWORD_LENGTH` = 1200 only.

    Example
    -------
    >>> import deft6g.phy as phy
    >>> e = phy.MCS_TABLE[8]                     # NR MCS 7: 16-QAM, R = 490/1024
    >>> e.code_rate, e.info_bits(), e.symbols_per_block(), e.bits_per_use()
    (0.478515625, 550, 300, 1.8333333333333333)
    >>> e.bler([6.0, 6.4, 7.0]).round(3)         # 10 % at threshold_db = 6.4 dB
    array([0.403, 0.1  , 0.002])
    """
    index: int
    num_bits_per_symbol: int
    rate_x1024: float
    threshold_db: float
    slope_db: float
    repetition: int = 1

    def __post_init__(self):
        check_count(self.repetition, "repetition")

    @property
    def code_rate(self):
        """R = rate_x1024 / 1024, the code rate (float)."""
        return self.rate_x1024 / 1024.0

    def info_bits(self, codeword_length=CODEWORD_LENGTH):
        """Payload bits per block, k - 24 with k = round(R n).

        Input
        -----
        codeword_length : int
            n, coded bits per block (default `CODEWORD_LENGTH` = 1200)

        Output
        ------
        k_info : int
            Payload bits per block (the 24 CRC bits excluded)
        """
        return info_bits(self.code_rate, codeword_length)

    def symbols_per_block(self, codeword_length=CODEWORD_LENGTH):
        """Channel uses (QAM symbols) per block, r n / m, the repetitions included.

        Input
        -----
        codeword_length : int
            n, coded bits per block (default `CODEWORD_LENGTH` = 1200)

        Output
        ------
        uses : int
            QAM symbols per block [channel uses]
        """
        return self.repetition * codeword_length // self.num_bits_per_symbol

    def bits_per_use(self, codeword_length=CODEWORD_LENGTH):
        """Payload bits per channel use, k_info m / (r n).

        Input
        -----
        codeword_length : int
            n, coded bits per block (default `CODEWORD_LENGTH` = 1200)

        Output
        ------
        rate : float
            Payload bits per QAM symbol [bit/channel use]
        """
        return self.info_bits(codeword_length) / self.symbols_per_block(codeword_length)

    def bler(self, sinr_db):
        """Calibrated AWGN BLER at a post-detection SINR (the probit of the class docstring).

        Input
        -----
        sinr_db : float | [...], float
            Post-detection SINR [dB]

        Output
        ------
        bler : [...], np.float64
            Block error rate in [0, 1], the shape of `sinr_db`
        """
        return norm.sf(_Z_TARGET + (np.asarray(sinr_db) - self.threshold_db) / self.slope_db)


# NR MCS table 2 index 2 repeated 16, 8, 4, 2 times (below it; `python -m deft6g.benchmarks.mcs_calibration`,
# 471 s on 2 shared CPU cores), indices 2-4 (QPSK; 0 and 1 have R < 1/5, below Sionna's 5G LDPC), 5, 7, 9
# (16-QAM), 11-19 odd (64-QAM), 21-25 odd (256-QAM; 27 exceeds the 948/1024 effective rate Sionna's rate
# matching allows at n = 1200). Thresholds and slopes from `calibrate_mcs(num_blocks=300, seed=0)` (19 min on
# 2 CPU cores). Ordered by payload bits per channel use (and so by threshold).
MCS_TABLE = (
    Mcs(2, 2, 308, -13.3, 0.473, repetition=16),
    Mcs(2, 2, 308, -10.4, 0.435, repetition=8),
    Mcs(2, 2, 308, -7.4, 0.422, repetition=4),
    Mcs(2, 2, 308, -4.3, 0.417, repetition=2),
    Mcs(2, 2, 308, -1.3, 0.393),
    Mcs(3, 2, 449, 0.7, 0.363),
    Mcs(4, 2, 602, 2.5, 0.303),
    Mcs(5, 4, 378, 4.7, 0.457),
    Mcs(7, 4, 490, 6.4, 0.386),
    Mcs(9, 4, 616, 8.4, 0.373),
    Mcs(11, 6, 466, 10.4, 0.452),
    Mcs(13, 6, 567, 12.2, 0.392),
    Mcs(15, 6, 666, 14.1, 0.427),
    Mcs(17, 6, 772, 15.9, 0.407),
    Mcs(19, 6, 873, 17.8, 0.362),
    Mcs(21, 8, 711, 19.8, 0.458),
    Mcs(23, 8, 797, 21.6, 0.429),
    Mcs(25, 8, 885, 23.6, 0.437),
)
"""The digital uplink's MCS entries (`Mcs`), by payload bits per channel use, with measured 10 % BLER thresholds."""

_EESM = None
# Sionna's EESM floors the effective SINR at -30 dB by default, above the lowest control entry (1024 repetitions at
# -31.4 dB): every device, however weak, would qualify for it and pass. The floor is set far below the table.
EESM_FLOOR_DB = -200.0


def effective_sinr(sinr, table=MCS_TABLE):
    r"""Per-entry effective SINR of a codeword spread over subcarriers.

    For F = 1 (flat fading) the SINR itself; otherwise Sionna's EESM with the NR :math:`\beta_j` of entry j
    (its `index` in NR MCS table 2):
    :math:`\gamma^{\mathrm{eff}}_j = -\beta_j \ln\big(\frac1F \sum_f e^{-\gamma_f / \beta_j}\big)`.

    Input
    -----
    sinr : [..., F, K], float
        Post-detection SINR per subcarrier and device, linear (F = 1: flat fading)
    table : sequence of `Mcs`
        The J entries (default `MCS_TABLE`)

    Output
    ------
    sinr_eff : [J, ..., K], np.float64
        Effective SINR of each entry, linear (for F = 1 a read-only broadcast view of `sinr`); Sionna's EESM
        clips it to [EESM_FLOOR_DB = -200, 50] dB

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> sinr = 10 ** (np.random.default_rng(0).normal(10, 3, [2, 16, 3]) / 10)   # [B = 2, F = 16, K = 3]
    >>> phy.effective_sinr(sinr).shape                                            # J = 18 entries
    (18, 2, 3)
    """
    sinr = np.asarray(sinr, np.float64)
    if sinr.shape[-2] == 1:
        return np.broadcast_to(sinr[..., 0, :], (len(table),) + sinr.shape[:-2] + sinr.shape[-1:])
    global _EESM
    _EESM = _EESM or EESM(precision="double", sinr_eff_min_db=EESM_FLOOR_DB)
    s = np.broadcast_to(sinr[..., None, :, :, None], (len(table),) + sinr.shape[:-2] + (1,) + sinr.shape[-2:] + (1,))
    idx = np.array([e.index for e in table]).reshape((-1,) + (1,) * (sinr.ndim - 1))
    idx = np.broadcast_to(idx, (len(table),) + sinr.shape[:-2] + sinr.shape[-1:])
    return _EESM(s, idx, mcs_table_index=NR_MCS_TABLE_INDEX).numpy()


def select_mcs(sinr_eff, table=MCS_TABLE):
    r"""Choose each device's MCS: the entry with the most payload bits per channel use whose threshold it meets.

    Entry j qualifies when :math:`\gamma^{\mathrm{eff}}_j \ge 10^{\mathrm{threshold\_db}_j / 10}`; rates are
    `Mcs.bits_per_use()` at n = 1200 (repetitions included).

    Input
    -----
    sinr_eff : [J, ..., K], float
        Effective SINR per entry, linear (from `effective_sinr`)
    table : sequence of `Mcs`
        The J entries (default `MCS_TABLE`)

    Output
    ------
    choice : [..., K], np.int64
        Index into `table`; -1 where no threshold is met (outage: the device does not transmit)

    Example
    -------
    >>> import numpy as np
    >>> import deft6g.phy as phy
    >>> sinr_db = np.array([[[-15.0, -10.0, 5.0, 25.0]]])           # [1, F = 1, K = 4], flat fading
    >>> phy.select_mcs(phy.effective_sinr(phy.db_to_linear(sinr_db)))  # outage, QPSK MCS 2 x 8, MCS 5, MCS 25
    array([[-1,  1,  7, 17]])
    """
    shape = (len(table),) + (1,) * (np.ndim(sinr_eff) - 1)
    thr = db_to_linear([e.threshold_db for e in table])
    rate = np.array([e.bits_per_use() for e in table])
    score = np.where(sinr_eff >= thr.reshape(shape), rate.reshape(shape), -1.0)
    choice = np.argmax(score, axis=0)
    return np.where(np.max(score, axis=0) > 0, choice, -1)


def measure_bler(codec, snr_db, num_blocks, batch=100):
    """BLER (CRC failures) of `codec` over AWGN at `snr_db` (Es/N0 per QAM symbol, dB): float."""
    awgn = AWGN(precision=codec.precision)
    no = tf.constant(noise_var(snr_db), codec.rdtype)
    failures = 0
    for start in range(0, num_blocks, batch):
        c = min(batch, num_blocks - start)
        info = tf.cast(tf_rng().uniform([c, 1, codec.k_info], 0, 2, tf.int32), codec.rdtype)
        _, ok = codec.decode(awgn(codec.encode(info), no), no)
        failures += int(tf.reduce_sum(tf.cast(~ok, tf.int32)))
    return failures / num_blocks


def fit_threshold(snr_db, bler, target=BLER_TARGET):
    """Probit least-squares fit of BLER(snr_db) on points with 1 % < BLER < 99 % -> (threshold_db, slope_db),
    threshold_db the SINR of BLER = `target`."""
    snr_db, bler = np.asarray(snr_db, float), np.asarray(bler, float)
    use = (bler > 0.01) & (bler < 0.99)
    if use.sum() < 2:
        raise ValueError(f"`bler` needs two points inside (0.01, 0.99) to fit a waterfall, got {bler.tolist()}")
    z = ndtri(1.0 - bler[use])                      # Q^{-1}(BLER): grows with SNR
    slope, icpt = np.polyfit(snr_db[use], z, 1)
    return (float(ndtri(1.0 - target)) - icpt) / slope, 1.0 / slope


def calibrate_mcs(table=MCS_TABLE, num_blocks=300, step_db=0.25, probe_blocks=20, num_iter=20, seed=0, log=None):
    r"""Measure each entry's BLER waterfall and fit its 10 % threshold (the procedure behind `MCS_TABLE`).

    From 1 dB below the Shannon SINR of the entry's spectral efficiency, :math:`2^{m R / r} - 1`, the SNR rises
    in `step_db` steps; a point where `probe_blocks` blocks all fail is skipped, the others are measured with
    `num_blocks` blocks until two in a row decode without error. Each point sends `BlockCodec` blocks
    (n = 1200, each r times when the entry repeats) over AWGN with noise variance :math:`10^{-\mathrm{SNR}/10}` per complex dimension (the SNR is
    Es/N0 of the unit-energy QAM symbol), and the probit of `Mcs` is fitted by least squares to the points
    with 1 % < BLER < 99 %.

    Input
    -----
    table : sequence of `Mcs`
        Entries to calibrate (default `MCS_TABLE`; only index, m, R and r are used)
    num_blocks : int
        Blocks per measured SNR point (default 300)
    step_db : float
        SNR step [dB] (default 0.25)
    probe_blocks : int
        Blocks of the probe that skips points where every block fails (default 20)
    num_iter : int
        LDPC belief-propagation iterations (default 20)
    seed : None | int
        Re-seeds the library RNG first (default 0)
    log : None | callable
        Called with each entry's dict as soon as it is measured

    Output
    ------
    rows : list of dict
        One per entry: `index`, `m`, `rate_x1024`, `repetition`, `threshold_db` (10 % BLER point, rounded up to 0.1 dB),
        `slope_db` [dB], `snr_db` (list of the measured SNRs [dB]) and `bler` (list, their BLERs)

    Example
    -------
    >>> import deft6g.phy as phy
    >>> rows = phy.calibrate_mcs(phy.MCS_TABLE[4:5], num_blocks=30, step_db=0.5, probe_blocks=2)  # MCS 2, QPSK
    >>> rows[0]["index"], rows[0]["threshold_db"], rows[0]["bler"]    # MCS_TABLE's -1.3 dB took 300 blocks a point
    (2, -1.3, [0.4, 0.1, 0.0, 0.0])
    """
    reseed(seed)
    rows = []
    for e in table:
        codec = BlockCodec(e.num_bits_per_symbol, e.code_rate, CODEWORD_LENGTH, num_iter, repetition=e.repetition)
        snr = 10 * np.log10(2.0 ** (e.num_bits_per_symbol * e.code_rate / e.repetition) - 1) - 1.0
        grid, bler = [], []
        while len(bler) < 2 or bler[-1] + bler[-2] > 0:
            if bler or measure_bler(codec, snr, probe_blocks) < 1.0:
                grid.append(round(snr, 2))
                bler.append(measure_bler(codec, snr, num_blocks))
            snr += step_db
        thr, slope = fit_threshold(grid, bler)
        rows.append(dict(index=e.index, m=e.num_bits_per_symbol, rate_x1024=e.rate_x1024, repetition=e.repetition,
                         threshold_db=float(np.ceil(thr * 10) / 10), slope_db=round(float(slope), 3),
                         snr_db=grid, bler=bler))
        if log:
            log(rows[-1])
    return rows
