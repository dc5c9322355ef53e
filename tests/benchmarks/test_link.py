"""`deft6g link`: every arm pays for its pilots, AirComp's side information grows as the SNR falls, the design over
the devices whose statistics arrived, the equal-quality table, and OBDA's threshold chosen on validation
channels."""

import numpy as np
import pytest

from deft6g.benchmarks import link
from deft6g.benchmarks.link import (NOT_REACHED, OBDA_FIELDS, LinkConfig, _AirCompPoint, _design_over, _DigitalPoint,
                                    _OBDAPoint, choose_lowest, matched_table, obda_seeds, run_obda)
from deft6g.experiment import ResultStore
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
    obda = _OBDAPoint(cfg)(dict(model=model, num_rx_ant=n, num_devices=k, snr_db=10, seed=0, threshold=0.1))
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


def test_choose_lowest_is_the_argmin_of_the_mean_with_ties_to_the_larger():
    """Hand-computed: group a, means 0.3 / 0.2 / 0.3 -> 0.3; group b, 0 / 0 / 0.05 -> 0.03 (tie: the larger)."""
    rows = [dict(g="a", t="0.1", e=e) for e in (0.2, 0.4)] + [dict(g="a", t="0.3", e=e) for e in (0.1, 0.3)] + \
           [dict(g="a", t="1.0", e=e) for e in (0.25, 0.35)] + [dict(g="b", t=t, e=0.0) for t in ("0.01", "0.03")] + \
           [dict(g="b", t="0.1", e=0.05)]
    choice = choose_lowest(rows, lambda r: (r["g"],), "t", "e")
    assert choice[("a",)][0] == 0.3 and choice[("b",)][0] == 0.03
    assert choice[("a",)][1] == {0.1: (pytest.approx(0.3), 2), 0.3: (pytest.approx(0.2), 2),
                                 1.0: (pytest.approx(0.3), 2)}


def test_obda_point_shares_its_draws_across_thresholds():
    """Thresholds after the first reuse the cached draws: the same row as a fresh point; on the same draws a higher
    threshold silences at least as many devices (the active set {|u^H h_k|^2 >= g_th} shrinks)."""
    cfg = _cfg()
    point = _OBDAPoint(cfg)
    p = dict(model="rayleigh", num_rx_ant=4, num_devices=6, snr_db=0, seed=5)
    rows = [point(p | dict(threshold=t)) for t in (0.01, 0.3, 3.0)]
    assert _OBDAPoint(cfg)(p | dict(threshold=3.0)) == rows[-1]
    assert rows[0]["silent"] <= rows[1]["silent"] <= rows[2]["silent"] and rows[2]["silent"] > rows[0]["silent"]


def _tuning_run(cfg, folder):
    tuning = ResultStore(folder / "obda_tuning.csv", OBDA_FIELDS, OBDA_FIELDS[:6])
    store = ResultStore(folder / "obda.csv", OBDA_FIELDS, OBDA_FIELDS[:5])
    choice = run_obda(cfg, tuning, store, log=lambda *a: None)
    return choice, tuning.rows(), store.rows()


def test_obda_threshold_is_the_validation_argmin_and_never_reads_the_reported_draws(tmp_path, monkeypatch):
    """The choice is the argmin of the mean validation sign-error rate (recomputed here with NumPy), the reported
    rows run at it, and moving the reported seed stream changes the reported rows but neither the validation rows
    nor the choice; validation and reported points (seeds s .. s + 3 each) never share a seed."""
    cfg = LinkConfig(snr_db=[-5, 10], digital_models=["rayleigh"], digital_settings=[[4, 6]], digital_num_seeds=2,
                     digital_realisations=2, payload_reals=100, obda_thresholds=[0.03, 0.3, 1.0, 3.0],
                     obda_validation_seeds=2)
    val, rep = obda_seeds(cfg, "validation"), obda_seeds(cfg, "reported")
    assert not {s + j for s in val for j in range(4)} & {s + j for s in rep for j in range(4)}
    choice, tuning, reported = _tuning_run(cfg, tmp_path / "a")
    assert len(tuning) == 2 * 2 * 4 and len(choice) == 2 * 4 and {int(r["seed"]) for r in tuning} == set(val)
    for snr in cfg.snr_db:
        err = np.array([[float(r["sign_error"]) for r in tuning if float(r["snr_db"]) == snr
                         and float(r["threshold"]) == t] for t in cfg.obda_thresholds])     # [thresholds, seeds]
        mean = err.mean(axis=1)
        best = cfg.obda_thresholds[np.flatnonzero(mean <= mean.min() + 1e-12)[-1]]
        chosen = [r for r in choice if r["snr_db"] == snr and r["chosen"]]
        assert len(chosen) == 1 and chosen[0]["threshold"] == best
        assert [r["val_sign_error"] for r in choice if r["snr_db"] == snr] == pytest.approx(list(mean))
        assert {float(r["threshold"]) for r in reported if float(r["snr_db"]) == snr} == {best}
    original = link.obda_seeds
    monkeypatch.setattr(link, "obda_seeds", lambda c, split: [s + 50 for s in original(c, split)]
                        if split == "reported" else original(c, split))
    choice2, tuning2, reported2 = _tuning_run(cfg, tmp_path / "b")
    assert choice2 == choice and tuning2 == tuning
    assert {r["seed"] for r in reported2}.isdisjoint({r["seed"] for r in reported})
    assert [r["sign_error"] for r in reported2] != [r["sign_error"] for r in reported]


@pytest.mark.parametrize("key, value", [("obda_thresholds", []), ("obda_thresholds", [0.1, 0.1]),
                                        ("obda_thresholds", [-1.0]), ("obda_validation_seeds", 0),
                                        ("digital_num_seeds", 10**6)])
def test_link_config_names_the_bad_key(key, value):
    with pytest.raises(ValueError, match=key):
        LinkConfig(**{key: value})


def test_majority_floor_against_hand_counts():
    """K = 1: the vote is the sign, no error; K = 2: signs agree (prob. 1/2, no error) or split (error 1/2), so 1/4
    (Monte Carlo, 200k draws: standard error 0.001, tolerance 0.005)."""
    assert link.majority_floor(1) == 0.0
    assert link.majority_floor(2) == pytest.approx(0.25, abs=0.005)
