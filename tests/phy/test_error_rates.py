"""Tests of `ErrorRates`: one `ber`/`bler` for the three link result records, each keeping its documented convention."""

import math

import numpy as np

from deft6g.phy import ErrorRates, LinkResult, PromptLinkResult, UplinkResult, error_rate


def _link(bit_errors, bits, block_errors, blocks):
    return LinkResult(None, None, bit_errors, bits, block_errors, blocks, 0)


def _uplink(bit_errors, bits, block_errors, blocks):
    z = np.zeros(())
    return UplinkResult(None, None, None, 0.0, bit_errors, bits, block_errors, blocks, z, z, z, z)


def _prompt(bit_errors, bits, block_errors, transmissions, blocks=4, dropped=1):
    return PromptLinkResult(None, 0, bit_errors, bits, block_errors, transmissions, blocks, dropped, 0, np.zeros(1))


def test_rates_are_the_counts_ratios():
    """ber = bit_errors / bits; bler over blocks (link, uplink) or codeword transmissions (prompt)."""
    for make in (_link, _uplink):
        res = make(3, 12, 1, 4)
        assert isinstance(res, ErrorRates) and res.ber == 0.25 and res.bler == 0.25
    res = _prompt(3, 12, 1, 5)
    assert res.ber == 0.25 and res.bler == 0.2 and res.drop_rate == 0.25


def test_empty_counts_follow_each_record():
    """Nothing sent: LinkResult 0 and 0; UplinkResult NaN ber (link="abstract") and 0 bler; PromptLinkResult NaN."""
    assert (_link(0, 0, 0, 0).ber, _link(0, 0, 0, 0).bler) == (0.0, 0.0)
    up = _uplink(0, 0, 0, 0)
    assert math.isnan(up.ber) and up.bler == 0.0
    pr = _prompt(0, 0, 0, 0, blocks=0, dropped=0)
    assert math.isnan(pr.ber) and math.isnan(pr.bler) and math.isnan(pr.drop_rate)
    assert error_rate(1, 2) == 0.5 and math.isnan(error_rate(0, 0))
