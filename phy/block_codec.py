"""One modulation-and-coding scheme as a block codec: CRC24A -> 5G LDPC -> Gray QAM -> r copies, and back with a CRC check."""

import numpy as np
import tensorflow as tf
from sionna.phy import Block
from sionna.phy.fec.crc import CRCDecoder, CRCEncoder
from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder
from sionna.phy.mapping import Demapper, Mapper

from deft6g.checks import check_count

CRC_TYPE = "CRC24A"
CRC_BITS = 24


def info_bits(code_rate, codeword_length):
    """Payload bits per block: k - 24 CRC bits with k = round(code_rate n) (k = n uncoded, code_rate None)."""
    return (codeword_length if code_rate is None else int(round(code_rate * codeword_length))) - CRC_BITS


class BlockCodec(Block):
    r"""Encode info blocks into QAM symbols and decode equalised symbols, flagging blocks whose CRC fails.

    A block carries k_info = k - 24 payload bits, a CRC24A (Sionna `CRCEncoder`), and is coded by Sionna's
    `LDPC5GEncoder` (k info bits incl. CRC -> n coded bits, k = round(code_rate n); `code_rate=None` sends
    the k = n bits uncoded) and mapped onto n / m unit-energy Gray QAM symbols (Sionna `Mapper`). Decoding
    demaps with the per-symbol post-detection noise variance (Sionna `Demapper`, "app"), runs belief
    propagation (`LDPC5GDecoder`, `num_iter` iterations) and checks the CRC (`CRCDecoder`).

    Repetition. With `repetition` r > 1 each block's n / m symbols are sent r times, one copy after another
    (r n / m channel uses per block), and the receiver combines the copies by maximum-ratio combining before
    demapping: :math:`\hat x = \sum_i x_i / N_i \,/\, \sum_i 1 / N_i` with noise variance
    :math:`N = 1 / \sum_i 1 / N_i` (each copy's `no` clipped at the dtype's smallest normal number, as Sionna's
    `Demapper` does). This is chase combining: for QPSK, whose Gray APP LLRs are linear in the received symbol,
    it equals adding the copies' LLRs; for every m it is the exact posterior of Gaussian copies. With equal
    `no` the SNR grows r-fold (10 log10 r dB).

    Parameters
    ----------
    num_bits_per_symbol : int
        m, bits per QAM symbol (2: QPSK, 4: 16-QAM, 6: 64-QAM, 8: 256-QAM)
    code_rate : None | float in (0, 1)
        LDPC code rate R, k = round(R n) (CRC bits included); `None` sends the n bits uncoded (k = n) and
        demaps to hard decisions
    codeword_length : int
        n, coded bits per block, a multiple of m (default 1200, the length `MCS_TABLE` is calibrated for)
    num_iter : int
        Belief-propagation iterations of the LDPC decoder (default 20)
    repetition : int
        r, copies of each block's symbols, combined at the receiver (default 1: no repetition)
    precision : None (default) | "single" | "double"
        Sionna's convention: the dtype of bits (`self.rdtype`) and symbols (`self.cdtype`)

    Input
    -----
    x_eq : [..., C r n / m], tf.complex
        Equalised symbols of C blocks, block c in symbols c r n/m .. (c+1) r n/m - 1, its r copies one after
        another (as `encode` lays them out)
    no : scalar or [..., C r n / m], tf.float
        Post-detection noise variance of each symbol, linear, per complex dimension (the SNR of the
        unit-energy QAM symbol is 1 / `no`); broadcastable to `x_eq` (Sionna `Demapper`)

    Output
    ------
    info : [..., C, k_info], tf.float
        Decoded payload bits, 0/1 (the CRC removed); only blocks with `crc_ok` are reliable
    crc_ok : [..., C], tf.bool
        The block's CRC24A check passed

    Note
    ----
    `k_info` = k - 24 payload bits and `symbols_per_block` = r n / m (channel uses per block) are attributes;
    calling the block runs `decode`. `code_rate` x `codeword_length` must exceed the 24 CRC bits.

    Example
    -------
    >>> import tensorflow as tf
    >>> from sionna.phy.channel import AWGN
    >>> import deft6g.phy as phy
    >>> codec = phy.BlockCodec(num_bits_per_symbol=4, code_rate=0.5)     # 16-QAM, R = 1/2, n = 1200
    >>> codec.k_info, codec.symbols_per_block
    (576, 300)
    >>> info = tf.cast(tf.random.uniform([10, 2, codec.k_info], 0, 2, tf.int32), tf.float32)   # C = 2
    >>> x = codec.encode(info)                                            # [10, 600], complex64
    >>> info_hat, crc_ok = codec(AWGN()(x, 0.01), 0.01)                  # SNR 20 dB
    >>> bool(tf.reduce_all(crc_ok)), bool(tf.reduce_all(info_hat == info))
    (True, True)
    """

    def __init__(self, num_bits_per_symbol, code_rate, codeword_length=1200, num_iter=20, precision=None,
                 repetition=1):
        super().__init__(precision=precision)
        self.m = check_count(num_bits_per_symbol, "num_bits_per_symbol")
        self.n = check_count(codeword_length, "codeword_length")
        self.repetition = check_count(repetition, "repetition")
        if self.n % self.m:
            raise ValueError(f"`codeword_length` must be a multiple of num_bits_per_symbol={self.m}, got {self.n}")
        if code_rate is not None and not 0.0 < code_rate < 1.0:
            raise ValueError(f"`code_rate` must lie in (0, 1) or be None, got {code_rate!r}")
        self.k_info = info_bits(code_rate, self.n)
        self.k = self.k_info + CRC_BITS
        if self.k_info < 1:
            raise ValueError(f"`code_rate` x `codeword_length` must exceed the {CRC_BITS} CRC bits, got k = {self.k}")
        self._crc_encoder = CRCEncoder(CRC_TYPE, precision=self.precision)
        self._crc_decoder = CRCDecoder(self._crc_encoder, precision=self.precision)
        if code_rate is None:
            self._encoder = self._decoder = None
        else:
            self._encoder = LDPC5GEncoder(self.k, self.n, precision=self.precision)
            self._decoder = LDPC5GDecoder(self._encoder, hard_out=True, num_iter=num_iter, precision=self.precision)
        self._mapper = Mapper("qam", self.m, precision=self.precision)
        self._demapper = Demapper("app", "qam", self.m, hard_out=code_rate is None, precision=self.precision)
        self._no_floor = tf.constant(np.finfo(self.rdtype.as_numpy_dtype).tiny, self.rdtype)

    @property
    def symbols_per_block(self):
        """r n / m, QAM symbols (channel uses) per block, the repetitions included."""
        return self.repetition * self.n // self.m

    def encode(self, info):
        """CRC-encode, LDPC-encode and map C blocks of payload bits.

        Input
        -----
        info : [..., C, k_info], tf.float
            Payload bits, 0/1 (cast to `self.rdtype`)

        Output
        ------
        x : [..., C r n / m], tf.complex
            Unit-average-energy Gray QAM symbols, the C blocks one after another, each as r copies in a row
        """
        code = self._crc_encoder(tf.cast(info, self.rdtype))
        if self._encoder is not None:
            code = self._encoder(code)
        x = self._mapper(code)                                                  # [..., C, n / m]
        x = tf.repeat(x[..., None, :], self.repetition, axis=-2)                # [..., C, r, n / m]
        return tf.reshape(x, tf.concat([tf.shape(x)[:-3], [-1]], 0))

    def decode(self, x_eq, no):
        """Demap, decode and CRC-check C blocks; the same as calling the block (Input and Output there).

        Input
        -----
        x_eq : [..., C r n / m], tf.complex
            Equalised symbols
        no : scalar or [..., C r n / m], tf.float
            Their post-detection noise variance, linear, per complex dimension

        Output
        ------
        info : [..., C, k_info], tf.float
            Decoded payload bits, 0/1
        crc_ok : [..., C], tf.bool
            The block's CRC passed
        """
        if self.repetition > 1:
            x_eq, no = self.combine(x_eq, no)
        soft = self._demapper(x_eq, no)
        soft = tf.reshape(soft, tf.concat([tf.shape(soft)[:-1], [-1, self.n]], 0))
        bits = soft if self._decoder is None else self._decoder(soft)
        info, ok = self._crc_decoder(bits)
        return info, ok[..., 0]

    def combine(self, x_eq, no):
        """Maximum-ratio (Chase) combining of each block's r repetitions, what `decode` does first when r > 1.
        Weights are scaled by the smallest variance of each symbol's copies, so none overflows (a copy with
        `no` = 0 gives its symbol exactly).

        Input
        -----
        x_eq : [..., C r n / m], tf.complex
            Equalised symbols, each block's r copies one after another
        no : scalar or [..., C r n / m], tf.float
            Their noise variance, linear, per complex dimension

        Output
        ------
        x : [..., C n / m], tf.complex
            The combined symbols
        no : [..., C n / m], tf.float
            Their noise variance, 1 / sum over the copies of 1 / no
        """
        x_eq = tf.convert_to_tensor(x_eq, self.cdtype)
        no = tf.maximum(tf.broadcast_to(tf.cast(no, self.rdtype), tf.shape(x_eq)), self._no_floor)
        shape = tf.concat([tf.shape(x_eq)[:-1], [-1, self.repetition, self.n // self.m]], 0)
        x_eq, no = tf.reshape(x_eq, shape), tf.reshape(no, shape)               # [..., C, r, n / m]
        no_min = tf.reduce_min(no, axis=-2)
        w = no_min[..., None, :] / no                                           # in (0, 1]
        w_sum = tf.reduce_sum(w, axis=-2)
        x = tf.reduce_sum(tf.cast(w, self.cdtype) * x_eq, axis=-2) / tf.cast(w_sum, self.cdtype)
        flat = tf.concat([tf.shape(x)[:-2], [-1]], 0)
        return tf.reshape(x, flat), tf.reshape(no_min / w_sum, flat)

    def call(self, x_eq, no):
        return self.decode(x_eq, no)
