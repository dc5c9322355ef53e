"""`ErrorRates`: the `ber` and `bler` of the link result records (`LinkResult`, `UplinkResult`, `PromptLinkResult`)."""


def error_rate(errors, count, empty=float("nan")):
    """errors / count, or `empty` when nothing was counted (count 0)."""
    return errors / count if count else empty


class ErrorRates:
    """Mixin of a result record with counts `bit_errors`, `bits`, `block_errors` and the block count named by
    `BLER_OVER`.

    `ber` = bit_errors / bits and `bler` = block_errors / <BLER_OVER>; each is `EMPTY_BER` / `EMPTY_BLER` when its
    count is 0. A record sets these class attributes (plain, not dataclass fields) to its documented convention.
    """
    BLER_OVER = "blocks"
    EMPTY_BER = float("nan")
    EMPTY_BLER = float("nan")

    @property
    def ber(self):
        """Bit error rate, bit_errors / bits (`EMPTY_BER` when no bits were counted)."""
        return error_rate(self.bit_errors, self.bits, self.EMPTY_BER)

    @property
    def bler(self):
        """Block error rate, block_errors / <BLER_OVER> (`EMPTY_BLER` when no blocks were counted)."""
        return error_rate(self.block_errors, getattr(self, self.BLER_OVER), self.EMPTY_BLER)
