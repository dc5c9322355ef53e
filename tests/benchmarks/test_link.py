"""`deft6g link`: every arm pays for its pilots, AirComp's side information grows as the SNR falls, the design over
the devices whose statistics arrived, the equal-quality table with digital's option and OBDA's threshold chosen on
validation channels, and every draw on its own `derive_seed` sub-stream."""

import numpy as np
import pytest

from deft6g.benchmarks import link
from deft6g.benchmarks.link import (DIGITAL_FIELDS, DIGITAL_TYPES, NOT_REACHED, OBDA_FIELDS, OBDA_TYPES, LinkConfig,
                                    _AirCompPoint, _design_over, _DigitalPoint, _OBDAPoint, choose_lowest,
                                    digital_choice, digital_points, digital_summary, draw_seeds, matched_table,
                                    obda_choice, obda_points, obda_tuning_points, pooled, summary_markdown)
from deft6g.experiment import ResultStore, run_points
from deft6g.rng import derive_seed
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
    return dict(model="rayleigh", num_rx_ant=8, num_devices=8, receiver=receiver, csi="pilots", snr_db=float(snr),
                nmse_db=nmse_db, channel_uses=float(uses), downlink_uses=100.0, energy=50.0)


def _dig(snr, scheme, bits, seed, nmse_db, uses):
    """A digital row whose two channels have NMSE `nmse_db` (dB) each."""
    return dict(model="rayleigh", num_rx_ant=8, num_devices=8, scheme=scheme, num_bits=bits, snr_db=float(snr),
                seed=seed, nmse_channels=[10 ** (nmse_db / 10)] * 2, channel_uses=float(uses), downlink_uses=30.0,
                energy=70.0)


def test_pooled_median_is_the_median_of_all_channels():
    """Channels 1, 4 (median 2.5) and 2, 8, 16 (median 8): the pooled median is 4 (6.02 dB), not the mean of the
    per-draw medians in dB (6.49 dB); costs are means over the draws."""
    rows = [dict(nmse_channels=v, channel_uses=u, downlink_uses=d, energy=e)
            for v, u, d, e in (([1.0, 4.0], 100, 10, 5), ([2.0, 8.0, 16.0], 300, 30, 7))]
    v = digital_summary(rows)
    assert v["nmse_db"] == pytest.approx(10 * np.log10(4.0)) and v["channels"] == 5
    assert v["nmse_db"] != pytest.approx(np.mean(10 * np.log10([2.5, 8.0])), abs=0.1)
    assert (v["channel_uses"], v["downlink_uses"], v["energy"]) == pytest.approx((200, 20, 6))


def test_matched_table_reports_the_option_chosen_on_validation():
    """Target -10 dB at 10 dB: on validation 1-bit (-5 dB) misses, 2-bit MU-MIMO (channels at -9, -9, -13, -13 dB:
    pooled median the mean of the middle two, -10.6 dB; 600 uses) is the cheapest
    that meets it (8-bit TDMA meets at 5,000 uses); matched.csv reports 2-bit's reported draws (-8 dB, 640 uses),
    although on them 1-bit (-12 dB) would have looked cheaper still; at 20 dB no option reaches -40 dB."""
    air = [_air(10, -10.0, 200), _air(20, -40.0, 150), dict(_air(10, -10.0, 1), csi="genie")]
    val = [_dig(10, "mu-mimo-amc", 1, s, -5.0, 300) for s in (0, 1)] + \
          [_dig(10, "mu-mimo-amc", 2, 0, -9.0, 580), _dig(10, "mu-mimo-amc", 2, 1, -13.0, 620)] + \
          [_dig(10, "tdma-amc", 8, s, -30.0, 5000) for s in (0, 1)] + \
          [_dig(20, "mu-mimo-amc", 8, s, -35.0, 900) for s in (0, 1)]
    rep = [_dig(10, "mu-mimo-amc", 1, 5, -12.0, 290), _dig(10, "mu-mimo-amc", 2, 5, -8.0, 640),
           _dig(10, "tdma-amc", 8, 5, -31.0, 5100), _dig(20, "mu-mimo-amc", 8, 5, -36.0, 880)]
    choice = digital_choice(air, val)
    assert len(choice) == 3 + 1                                 # every option of both points; the genie is no target
    chosen = [(c["snr_db"], c["scheme"], c["num_bits"]) for c in choice if c["chosen"]]
    assert chosen == [(10.0, "mu-mimo-amc", 2)]
    two_bit = next(c for c in choice if c["num_bits"] == 2)
    val_db = 10 * np.log10((10 ** -0.9 + 10 ** -1.3) / 2)
    assert two_bit["val_nmse_db"] == pytest.approx(val_db) and two_bit["val_uses"] == pytest.approx(600)
    assert [c["meets"] for c in choice if c["snr_db"] == 10.0] == [False, True, True]
    rows = {r["snr_db"]: r for r in matched_table(air, rep, choice)}
    assert len(rows) == 2
    hit = rows[10.0]
    assert (hit["scheme"], hit["num_bits"]) == ("mu-mimo-amc", 2)
    assert hit["digital_val_nmse_db"] == pytest.approx(val_db)
    assert hit["digital_nmse_db"] == pytest.approx(-8.0) and hit["digital_uses"] == pytest.approx(640)
    assert hit["ratio"] == pytest.approx(3.2) and hit["digital_latency_ms"] == pytest.approx(0.64)
    miss = rows[20.0]
    assert miss["scheme"] == NOT_REACHED and miss["ratio"] == "" and miss["digital_uses"] == ""
    assert miss["aircomp_latency_ms"] == pytest.approx(0.15)
    obda = [dict(model="rayleigh", num_rx_ant=8, num_devices=8, snr_db=10.0, seed=s, threshold=0.1, sign_error=e,
                 channel_uses=258.0) for s, e in ((0, 0.2), (1, 0.3))]
    table = summary_markdown(air, dict(obda=obda, matched=list(rows.values()))).splitlines()
    assert table[0] == "**rayleigh, N = 8, K = 8** (MRC receiver; ZF in matched.csv)"
    assert table[4] == "| 10 | -10.0 / 200 (100) | -10.0 / 1 | MU-MIMO 2-bit / -8.0 / 640 (30) / 3.20x | 0.250 / 258 (0.1) |"
    assert table[5] == f"| 20 | -40.0 / 150 (100) | – | {NOT_REACHED} | – |"


def test_choose_lowest_is_the_admitted_argmin_with_ties_to_the_larger():
    """Hand-computed: group a, means 0.3 / 0.2 / 0.3 -> 0.3; group b, 0 / 0 / 0.05 -> 0.03 (tie: the larger); with
    only candidates above 0.5 admitted, a -> 1.0 and b -> None."""
    rows = [dict(g="a", t="0.1", e=e) for e in (0.2, 0.4)] + [dict(g="a", t="0.3", e=e) for e in (0.1, 0.3)] + \
           [dict(g="a", t="1.0", e=e) for e in (0.25, 0.35)] + [dict(g="b", t=t, e=0.0) for t in ("0.01", "0.03")] + \
           [dict(g="b", t="0.1", e=0.05)]
    scores = pooled(rows, lambda r: r["g"], lambda r: float(r["t"]), lambda v: float(np.mean([r["e"] for r in v])))
    assert scores["a"] == {0.1: pytest.approx(0.3), 0.3: pytest.approx(0.2), 1.0: pytest.approx(0.3)}
    assert choose_lowest(scores, lambda v: v) == {"a": 0.3, "b": 0.03}
    big = {g: {t: (t, v) for t, v in c.items()} for g, c in scores.items()}
    assert choose_lowest(big, lambda v: v[1], lambda g, v: v[0] > 0.5) == {"a": 1.0, "b": None}


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
    """OBDA's two stages of the study, stored as it stores them: (obda_choice.csv rows, tuning rows, reported rows)."""
    tuning = ResultStore(folder / "obda_tuning.csv", OBDA_FIELDS, OBDA_FIELDS[:6], types=OBDA_TYPES)
    store = ResultStore(folder / "obda.csv", OBDA_FIELDS, OBDA_FIELDS[:5], types=OBDA_TYPES)
    run_points(obda_tuning_points(cfg), _OBDAPoint(cfg), tuning, log=lambda *a: None)
    run_points(obda_points(cfg, {"obda_tuning.csv": tuning.rows()}), _OBDAPoint(cfg), store, log=lambda *a: None)
    choice = obda_choice(tuning.rows())[1]
    return choice, tuning.rows(), store.rows()


def test_obda_threshold_is_the_validation_argmin_and_never_reads_the_reported_draws(tmp_path, monkeypatch):
    """The choice is the argmin of the mean validation sign-error rate (recomputed here with NumPy), the reported
    rows run at it, and moving the reported seed stream changes the reported rows but neither the validation rows
    nor the choice."""
    cfg = LinkConfig(snr_db=[-5, 10], digital_models=["rayleigh"], digital_settings=[[4, 6]], digital_num_seeds=2,
                     digital_realisations=2, payload_reals=100, obda_thresholds=[0.03, 0.3, 1.0, 3.0],
                     obda_validation_seeds=2)
    val = draw_seeds(cfg, "validation", cfg.obda_validation_seeds)
    choice, tuning, reported = _tuning_run(cfg, tmp_path / "a")
    assert len(tuning) == 2 * 2 * 4 and len(choice) == 2 * 4 and {r["seed"] for r in tuning} == set(val)
    for snr in cfg.snr_db:
        err = np.array([[r["sign_error"] for r in tuning if r["snr_db"] == snr and r["threshold"] == t]
                        for t in cfg.obda_thresholds])                                       # [thresholds, seeds]
        mean = err.mean(axis=1)
        best = cfg.obda_thresholds[np.flatnonzero(mean <= mean.min() + 1e-12)[-1]]
        chosen = [r for r in choice if r["snr_db"] == snr and r["chosen"]]
        assert len(chosen) == 1 and chosen[0]["threshold"] == best
        assert [r["val_sign_error"] for r in choice if r["snr_db"] == snr] == pytest.approx(list(mean))
        assert {r["threshold"] for r in reported if r["snr_db"] == snr} == {best}
    monkeypatch.setattr(link, "REPORTED", 50)
    choice2, tuning2, reported2 = _tuning_run(cfg, tmp_path / "b")
    assert choice2 == choice and tuning2 == tuning
    assert {r["seed"] for r in reported2}.isdisjoint({r["seed"] for r in reported})
    assert [r["sign_error"] for r in reported2] != [r["sign_error"] for r in reported]


@pytest.mark.parametrize("key, value", [("obda_thresholds", []), ("obda_thresholds", [0.1, 0.1]),
                                        ("obda_thresholds", [-1.0]), ("obda_validation_seeds", 0),
                                        ("digital_num_seeds", 2 ** 32 + 1), ("digital_validation_seeds", 0),
                                        ("digital_validation_seeds", 1.5)])
def test_link_config_names_the_bad_key(key, value):
    with pytest.raises(ValueError, match=key):
        LinkConfig(**{key: value})


def test_majority_floor_against_hand_counts():
    """K = 1: the vote is the sign, no error; K = 2: signs agree (prob. 1/2, no error) or split (error 1/2), so 1/4
    (Monte Carlo, 200k draws: standard error 0.001, tolerance 0.005)."""
    assert link.majority_floor(1) == 0.0
    assert link.majority_floor(2) == pytest.approx(0.25, abs=0.005)


def _digital_run(cfg, folder):
    tuning = ResultStore(folder / "digital_tuning.csv", DIGITAL_FIELDS, DIGITAL_FIELDS[:7], types=DIGITAL_TYPES)
    store = ResultStore(folder / "digital.csv", DIGITAL_FIELDS, DIGITAL_FIELDS[:7], types=DIGITAL_TYPES)
    for split, target in (("validation", tuning), ("reported", store)):
        run_points(digital_points(cfg, split), _DigitalPoint(cfg), target, log=lambda *a: None)
    return tuning.rows(), store.rows()


def test_digital_choice_is_the_cheapest_on_validation_and_never_reads_the_reported_draws(tmp_path, monkeypatch):
    """Targets between the options' validation NMSEs: the chosen option is the one of fewest mean validation uses
    among those whose pooled validation median (recomputed here with NumPy from every channel) meets the target;
    moving the reported seed stream changes the reported rows but neither the validation rows nor the choice."""
    cfg = LinkConfig(snr_db=[0, 20], digital_models=["rayleigh"], digital_settings=[[4, 4]], digital_num_seeds=2,
                     digital_validation_seeds=2, digital_realisations=3, payload_reals=60, digital_bits=[1, 8])
    tuning, reported = _digital_run(cfg, tmp_path / "a")
    assert len(tuning) == len(reported) == 2 * 2 * 2 * 2          # schemes x widths x SNRs x draws
    assert {r["seed"] for r in tuning} == set(draw_seeds(cfg, "validation", 2))
    options = {}
    for r in tuning:
        options.setdefault((r["snr_db"], r["scheme"], r["num_bits"]), []).append(r)
    nmse = {o: 10 * np.log10(np.median(sum((r["nmse_channels"] for r in v), []))) for o, v in options.items()}
    uses = {o: np.mean([r["channel_uses"] for r in v]) for o, v in options.items()}
    air = []
    for snr in cfg.snr_db:
        levels = sorted(v for o, v in nmse.items() if o[0] == snr)
        air.append(dict(model="rayleigh", num_rx_ant=4, num_devices=4, receiver="mrc", csi="pilots", snr_db=snr,
                        nmse_db=(levels[1] + levels[2]) / 2))          # two of the four options meet it
    choice = digital_choice(air, tuning)
    for a in air:
        meets = [o for o in nmse if o[0] == a["snr_db"] and nmse[o] <= a["nmse_db"]]
        best = min(meets, key=lambda o: (uses[o], -o[2]))
        assert [(c["scheme"], c["num_bits"]) for c in choice if c["chosen"] and c["snr_db"] == a["snr_db"]] == \
            [best[1:]]
        assert {(c["scheme"], c["num_bits"]): c["val_nmse_db"] for c in choice if c["snr_db"] == a["snr_db"]} == \
            pytest.approx({o[1:]: nmse[o] for o in nmse if o[0] == a["snr_db"]})
    monkeypatch.setattr(link, "REPORTED", 50)
    tuning2, reported2 = _digital_run(cfg, tmp_path / "b")
    same = (tmp_path / "b" / "digital_tuning.csv").read_text() == (tmp_path / "a" / "digital_tuning.csv").read_text()
    assert same and digital_choice(air, tuning2) == choice             # as text: typed rows hold NaN (ber)
    assert {r["seed"] for r in reported2}.isdisjoint({r["seed"] for r in reported})
    assert [r["nmse_channels"] for r in reported2] != [r["nmse_channels"] for r in reported]


def test_seed_streams_are_distinct_and_reproducible():
    """Every draw (AirComp's, reported and validation i < 3) and every part of a draw has its own seed, none equal
    to the run's seed or to the seed + 1 .. seed + 5 that the parts used before; the same point twice gives the
    same row."""
    cfg = LinkConfig(seed=7)
    draws = [derive_seed(cfg.seed, link.AIRCOMP_DRAW)] + draw_seeds(cfg, "reported", 3) + \
        draw_seeds(cfg, "validation", 3)
    parts = [derive_seed(d, part) for d in draws for part in (link.CHANNELS, link.PAYLOAD, link.PILOTS, link.NOISE,
                                                                link.STATISTICS, link.DOWNLINK)]
    assert len(set(draws + parts)) == len(draws) + len(parts) == 7 * 7
    assert not set(draws + parts) & set(range(cfg.seed, cfg.seed + 6))
    assert draw_seeds(cfg, "validation", 2) == draw_seeds(LinkConfig(seed=7), "validation", 3)[:2]
    with pytest.raises(ValueError, match="split"):
        draw_seeds(cfg, "test", 1)
    p = dict(model="rayleigh", num_rx_ant=4, num_devices=3, scheme="mu-mimo-amc", num_bits=2, snr_db=5,
             seed=draws[1])
    small = _cfg()
    assert _DigitalPoint(small)(p) == _DigitalPoint(small)(p)
