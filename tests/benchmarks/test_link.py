"""`deft6g link`: every arm pays for its pilots, AirComp's side information grows as the SNR falls, the design over
the devices whose statistics arrived, and the equal-quality table."""

import numpy as np
import pytest

from deft6g.benchmarks.link import (NOT_REACHED, LinkConfig, _AirCompPoint, _design_over, _DigitalPoint,
                                    _OBDAPoint, matched_table)
from deft6g.optim import closed_form_design
from deft6g.phy import FadingChannel, aircomp_channel_uses


def _cfg():
    return LinkConfig(realisations=40, num_subcarriers=4, payload_reals=100, digital_realisations=2)


@pytest.mark.parametrize("model, f", [("rayleigh", 1), ("tdl-a", 4)])
def test_pilots_are_in_every_arms_channel_uses(model, f):
    """tau = K pilots on each of F subcarriers: K F uses in every arm (0 for the genie), and channel_uses =
    payload + pilots + side information."""
    cfg, n, k = _cfg(), 4, 3
    payload = aircomp_channel_uses(cfg.payload_reals, num_subcarriers=f)
    for csi in ("pilots", "genie"):
        row = _AirCompPoint(cfg)(dict(model=model, num_rx_ant=n, num_devices=k, receiver="mrc", csi=csi, snr_db=10))
        assert row["pilot_uses"] == (k * f if csi == "pilots" else 0)
        assert row["payload_uses"] == payload
        assert row["channel_uses"] == pytest.approx(row["payload_uses"] + row["pilot_uses"] + row["side_info_uses"])
        assert (row["side_info_uses"] > 0 and row["downlink_uses"] > 0) == (csi == "pilots")
    dig = _DigitalPoint(cfg)(dict(model=model, num_rx_ant=n, num_devices=k, scheme="tdma-amc", num_bits=4, snr_db=10,
                                  seed=0))
    assert dig["pilot_uses"] == k * f and dig["channel_uses"] == pytest.approx(dig["payload_uses"] + k * f)
    assert dig["energy"] >= k * f                                    # every device sends its pilots at P = 1
    obda = _OBDAPoint(cfg)(dict(model=model, num_rx_ant=n, num_devices=k, snr_db=10, seed=0))
    assert obda["pilot_uses"] == k * f and obda["channel_uses"] == payload + k * f
    assert 0 <= obda["sign_error"] < 0.5


def test_side_information_costs_more_at_low_snr():
    """64 bits of statistics per device through the control link: at 30 dB (N = 8) every device fits one
    256-QAM block, 1200 coded bits / 8 = 150 uses; at -10 dB the MCS falls and repetitions add uses."""
    cfg, k = _cfg(), 4
    point = _AirCompPoint(cfg)
    low, high = (point(dict(model="rayleigh", num_rx_ant=8, num_devices=k, receiver="zf", csi="pilots", snr_db=s))
                 for s in (-10, 30))
    assert high["side_info_uses"] == 150 * k and high["dropped"] == 0.0
    assert low["side_info_uses"] > 2 * high["side_info_uses"]
    assert low["nmse_db"] > high["nmse_db"] + 30


def test_design_over_the_kept_devices_is_the_design_of_the_subset():
    """Rows designed together by their number of kept devices equal `closed_form_design` of each row's subset."""
    H = FadingChannel("rayleigh", 4, 5, precision="double")(6, seed=3).numpy()
    kept = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 0, 1], [1, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0],
                     [0, 0, 1, 0, 0]], bool)
    for receiver in ("mrc", "zf"):
        a, b = _design_over(H, kept, receiver)
        for i in range(len(H)):
            if not kept[i].any():
                assert not a[i].any() and not b[i].any()
                continue
            a_ref, b_ref = closed_form_design(H[i][:, kept[i]], 1.0, receiver)
            np.testing.assert_allclose(a[i], a_ref, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b[i][kept[i]], b_ref, rtol=1e-10)
            assert not b[i][~kept[i]].any()


def _air(snr, nmse_db, uses, receiver="mrc"):
    return dict(model="rayleigh", num_rx_ant="8", num_devices="8", receiver=receiver, csi="pilots", snr_db=str(snr),
                nmse_db=str(nmse_db), channel_uses=str(uses), downlink_uses="100", energy="50")


def _dig(snr, scheme, bits, seed, nmse_db, uses):
    return dict(model="rayleigh", num_rx_ant="8", num_devices="8", scheme=scheme, num_bits=str(bits), snr_db=str(snr),
                seed=str(seed), nmse_db=str(nmse_db), channel_uses=str(uses), downlink_uses="30", energy="70")


def test_matched_table_picks_the_cheapest_width_that_meets_the_target():
    """Target -10 dB: 2-bit MU-MIMO (mean of seeds -9 and -13 = -11 dB, 600 uses) is the cheapest option meeting
    it (1-bit at -5 dB misses, 8-bit TDMA meets at 5,000 uses); at 20 dB no option reaches -40 dB."""
    air = [_air(10, -10.0, 200), _air(20, -40.0, 150), dict(_air(10, -10.0, 1), csi="genie")]
    dig = [_dig(10, "mu-mimo-amc", 1, s, -5.0, 300) for s in (0, 1)] + \
          [_dig(10, "mu-mimo-amc", 2, 0, -9.0, 580), _dig(10, "mu-mimo-amc", 2, 1, -13.0, 620)] + \
          [_dig(10, "tdma-amc", 8, s, -30.0, 5000) for s in (0, 1)] + \
          [_dig(20, "mu-mimo-amc", 8, s, -35.0, 900) for s in (0, 1)]
    rows = {r["snr_db"]: r for r in matched_table(air, dig)}
    assert len(rows) == 2                                       # the genie row is no target
    hit = rows[10.0]
    assert (hit["scheme"], hit["num_bits"]) == ("mu-mimo-amc", 2)
    assert hit["digital_nmse_db"] == pytest.approx(-11.0) and hit["digital_uses"] == pytest.approx(600)
    assert hit["ratio"] == pytest.approx(3.0) and hit["digital_latency_ms"] == pytest.approx(0.6)
    miss = rows[20.0]
    assert miss["scheme"] == NOT_REACHED and miss["ratio"] == "" and miss["digital_uses"] == ""
    assert miss["aircomp_latency_ms"] == pytest.approx(0.15)
