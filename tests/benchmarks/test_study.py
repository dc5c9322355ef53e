"""`deft6g study`: fail-fast configuration errors, resume after an interruption, same seed same numbers, live
TensorBoard events (--log-dir) holding exactly rounds.csv."""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deft6g.benchmarks.cli import main
from deft6g.benchmarks.ray_speedup import compare_rows
from deft6g.benchmarks.study import POINT_KEY, RESULT_FIELDS, RESULT_TYPES, ROUND_FIELDS, run_study, study_points
from deft6g.benchmarks.study_config import ConfigError, build_config, load_config
from deft6g.experiment import ResultStore, read_scalars, run_name

def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_events_are_the_rounds(log_dir, rounds, points):
    """`log_dir` holds one TensorBoard run per point of `points` (no other) and each run holds exactly its
    rounds.csv rows: every finite numeric column at step = round, to float32, each step once, and
    channel_uses_cumulative the running sum of channel_uses."""
    assert sorted(d.name for d in log_dir.iterdir()) == sorted(run_name(p, POINT_KEY) for p in points)
    numeric = [c for c in ROUND_FIELDS if c not in POINT_KEY + ["round", "sampled", "participants"]]
    for p in points:
        mine = sorted((r for r in rounds if all(r[k] == str(p[k]) for k in POINT_KEY)), key=lambda r: int(r["round"]))
        assert mine
        want = {}
        for r in mine:
            for c in numeric:
                if math.isfinite(float(r[c])):
                    want.setdefault(c, []).append((int(r["round"]), float(np.float32(r[c]))))
        spent = np.cumsum([int(r["channel_uses"]) for r in mine])
        want["channel_uses_cumulative"] = [(int(r["round"]), float(u)) for r, u in zip(mine, spent)]
        assert read_scalars(log_dir / run_name(p, POINT_KEY)) == want


@pytest.mark.parametrize("overrides, key", [
    ({"chanel": {"model": "rayleigh"}}, "chanel"),
    ({"channel": {"antena": 4}}, "channel.'antena'"),
    ({"channel": {"num_rx_ant": [0]}}, "channel.num_rx_ant"),
    ({"channel": {"snr_db": ["high"]}}, "channel.snr_db"),
    ({"channel": {"model": "tdl-z"}}, "channel.model"),
    ({"federated": {"mode": "telepathy"}}, "federated.mode"),
    ({"federated": {"rounds": 0}}, "federated.rounds"),
    ({"federated": {"mode": "gradient", "cut_block": 3}}, "federated.cut_block"),
    ({"peft": {"blocks": [9]}}, "peft.blocks"),
    ({"data": {"dataset": "mnist_5k"}}, "data.dataset"),
    ({"schemes": ["ideal", "morse"]}, "schemes"),
    ({"federated": {"lora_aggregation": ["delta_w"]}}, "federated.lora_aggregation"),      # with AirComp
    ({"federated": {"local_optimizer": "lbfgs"}}, "federated.local_optimizer"),
    ({"federated": {"server_optimizer": "fedyogi"}}, "federated.server_optimizer"),
    ({"digital": {"mcs": "best"}}, "digital.mcs"),
    ({"tuning": {"digital_num_bits": [17]}}, "tuning.digital_num_bits"),
    ({"tuning": {"digital_num_bits": [4, 4]}}, "tuning.digital_num_bits"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"tuning": {"grid": [1e-2]}}, "tuning.'grid'"),
])
def test_bad_configuration_names_the_key(overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("'", "'?")):
        build_config(overrides)


def test_cli_reports_config_errors_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[channel]\nsnr_db = [0, 10]\nmethod = 'psychic'\n")
    assert main(["study", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "channel.method" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_default_configuration_is_the_main_job():
    cfg = load_config()
    assert cfg.model.name == "all-MiniLM-L6-v2" and cfg.data.dataset == "rotten_tomatoes"
    assert cfg.data.train_examples == 0 and cfg.data.test_examples == 0          # the whole split
    assert cfg.federated.devices == 8 and cfg.peft.method == "lora" and len(cfg.seeds) >= 3
    assert {p["scheme"] for p in study_points(cfg)} == {"ideal", "aircomp", "digital"}      # the bound: paper.toml
    # the tuning stage stays small: 3 device learning rates on one seed (3 runs beside 21 points)
    assert len(cfg.tuning.seeds) * len(cfg.tuning.lr) == 3 and len(study_points(cfg)) == 21
    assert "centralised" in load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "paper.toml")).schemes


def test_the_per_round_plots_name_the_validation_texts_each_round_evaluates():
    """The label's count: the default evaluates the first 512 of its validation texts (10 % of the 10,202
    training texts, stratified: within one per class), all of them with round_eval_examples = 0, and the quick
    study the whole of its small validation split (10 % of its training texts), not 512."""
    from deft6g.benchmarks.study import validation_texts
    cfg = load_config()
    assert validation_texts(cfg) == 512
    cfg.federated.round_eval_examples = 0
    assert abs(validation_texts(cfg) - 0.1 * 10_202) <= 2
    quick = load_config(quick=True)
    n = quick.data.train_examples
    assert 0 < n < 5000 and abs(validation_texts(quick) - quick.data.validation_fraction * n) <= 2


# Runs `deft6g study ARGS...` in a subprocess that holds still once results.csv has 2 rows: it touches GATE and
# sleeps, so the run cannot pass its third point until the test interrupts it (progress, not timing, decides).
HOLD_AFTER_TWO_ROWS = """
import pathlib, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C raises, even when pytest runs as a background job
from deft6g.experiment import ResultStore
from deft6g.benchmarks.cli import main
gate, add = pathlib.Path(sys.argv[1]), ResultStore.add
def add_then_hold(self, row):
    add(self, row)
    if self.path.name == "results.csv" and len(self.rows()) == 2:
        gate.touch()
        while True:
            time.sleep(0.05)
ResultStore.add = add_then_hold
sys.exit(main(sys.argv[2:]))
"""


def test_interrupted_study_resumes_and_matches_an_uninterrupted_run(tmp_path, tiny_study):
    config = tiny_study
    out, gate = tmp_path / "interrupted", tmp_path / "two_rows_written"
    env = {**os.environ, "DEFT6G_CACHE": str(tmp_path / "cache")}
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AFTER_TWO_ROWS, str(gate), "study", "--config", str(config),
                             "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 1800                       # a generous bound for a slow machine; progress decides
    while not gate.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert gate.exists(), f"the run ended before its second row: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130
    first = ResultStore(out / "results.csv", RESULT_FIELDS, POINT_KEY, types=RESULT_TYPES).rows()   # typed
    n_points = len(study_points(load_config(config)))
    assert len(first) == 2 < n_points

    messages = []
    os.environ["DEFT6G_CACHE"] = str(tmp_path / "cache")
    try:
        rows = run_study(out, str(config), log=messages.append, log_dir=tmp_path / "events").rows["results.csv"]
        fresh = run_study(tmp_path / "fresh", str(config), log=lambda m: None).rows["results.csv"]
    finally:
        del os.environ["DEFT6G_CACHE"]
    assert any(f"{len(first)} of {n_points} already finished" in m for m in messages)
    assert len(rows) == n_points and compare_rows(rows[:len(first)], first, POINT_KEY, set(), rtol=0.0) == (True, [])
    keys = [(r["scheme"], r["snr_db"], r["num_rx_ant"], r["lora_aggregation"], r["seed"]) for r in rows]
    assert len(set(keys)) == n_points
    timing = {"train_s", "link_s", "eval_s", "wall_s"}
    # same seed, same numbers, whether resumed or not (float32 statistics within FLOAT_RTOL: see compare_rows)
    assert compare_rows(rows, fresh, POINT_KEY, timing) == (True, [])
    assert compare_rows(rows, fresh, POINT_KEY, set(rows[0]) - {"accuracy", "channel_uses"}, rtol=0.0) == (True, [])
    rounds = read(out / "rounds.csv")
    assert len(rounds) == 2 * n_points
    # --log-dir changes no number (compared with the fresh run above) and the points finished before the
    # interruption write no events
    done = {tuple(str(r[k]) for k in POINT_KEY) for r in first}
    run_now = [p for p in study_points(load_config(config)) if tuple(str(p[k]) for k in POINT_KEY) not in done]
    assert_events_are_the_rounds(tmp_path / "events", rounds, run_now)


def test_quick_study_on_pretrained_minilm(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    assert main(["study", "--quick", "--out", str(tmp_path), "--log-dir", str(tmp_path / "events")]) == 0
    rows = read(tmp_path / "results.csv")
    assert set(rows[0]) >= {"scheme", "snr_db", "seed", "accuracy", "channel_uses", "agg_mse", "latency_s"}
    assert {r["scheme"] for r in rows} == {"centralised", "ideal", "aircomp", "digital"} and len(rows) == 12
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0
    # every use counted at the link's SNR: a round that hears the same devices at both SNRs costs more uplink uses
    # at 0 dB (lower MCS for side information and payload; the same pilots). Rounds whose devices differ are not
    # comparable: a weak device that 0 dB leaves unheard can cost a great deal at 20 dB, where it is served.
    per_round = {(r["scheme"], r["seed"], r["round"], float(r["snr_db"])): r for r in read(tmp_path / "rounds.csv")}
    for scheme in ("aircomp", "digital"):
        same = [(low, per_round[key[:3] + (20.0,)]) for key, low in per_round.items() if key[0] == scheme
                and key[3] == 0.0 and low["participants"] == per_round[key[:3] + (20.0,)]["participants"]]
        assert same, scheme                                         # the quick drop has such rounds
        for low, high in same:
            assert int(low["channel_uses"]) > int(high["channel_uses"]) > 0, (low, high)
            assert low["pilot_uses"] == high["pilot_uses"]
    summary = read(tmp_path / "summary.csv")
    assert len(summary) == 6 and all(s["n"] == "2" for s in summary)
    from deft6g.benchmarks.study import TABLE_COLUMNS               # summary.md: the same table in Markdown
    table = [line for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(summary) and all(line.count("|") == len(TABLE_COLUMNS) + 1 for line in table)
    assert (tmp_path / "cache" / "activations").is_dir()
    for name in ("accuracy_vs_snr.png", "accuracy_vs_latency.png", "accuracy_per_round.png", "nmse_per_round.png",
                 "accuracy_vs_channel_uses.png", "config.json", "summary.md"):
        assert (tmp_path / name).is_file()
    out = capsys.readouterr().out
    assert "aircomp" in out and "+-" in out
    assert_events_are_the_rounds(tmp_path / "events", read(tmp_path / "rounds.csv"),
                                 study_points(load_config(None, quick=True)))


def test_a_file_as_log_dir_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["study", "--quick", "--out", str(tmp_path / "out"), "--log-dir", str(tmp_path / "notes.txt" / "tb")])
    assert stop.value.code == 2 and "--log-dir" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_folder_of_another_configuration_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert main(["study", "--quick", "--out", str(tmp_path)]) == 2
    assert "holds results of another run" in capsys.readouterr().err
    assert not (tmp_path / "results.csv").exists()


def test_default_channel_keeps_each_seeds_drop_across_rounds():
    """The default study channel is a UMi drop: within a seed the devices' large-scale gains stay from round to
    round (small-scale fading changes), another seed places the devices anew."""
    from deft6g.benchmarks.study import point_aggregator
    cfg = load_config()
    assert cfg.channel.model == "umi" and cfg.channel.links == ["counted"]
    point = {"scheme": "aircomp", "snr_db": 0.0, "num_rx_ant": 2, "link": "counted", "num_bits": 0,
             "lora_aggregation": "factors", "seed": 0}
    agg = point_aggregator(cfg, point)
    H0, H1 = agg.draw_channel(0), agg.draw_channel(1)
    gains = agg.channel.last_drop["gain_db"].numpy()
    agg.draw_channel(2)
    assert (agg.channel.last_drop["gain_db"].numpy() == gains).all() and not (H0 == H1).all()
    other = point_aggregator(cfg, {**point, "seed": 1})
    other.draw_channel(0)
    assert not (other.channel.last_drop["gain_db"].numpy() == gains).all()


def test_a_study_evaluating_every_other_round_summarises_and_plots(tmp_path, monkeypatch):
    """federated.eval_every = 2 over 3 rounds (random-bert, ideal and AirComp): the unevaluated round has a NaN
    validation accuracy in rounds.csv, and the summary, summary.md and the five plots are written from the
    evaluated rounds alone."""
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "every_other.toml"
    config.write_text('seeds = [0]\nschemes = ["ideal", "aircomp"]\n[model]\nname = "random-bert"\n[data]\n'
                      'train_examples = 64\ntest_examples = 32\n[federated]\ndevices = 2\nrounds = 3\n'
                      'local_steps = 1\neval_every = 2\n[channel]\nsnr_db = [20.0]\nnum_rx_ant = [2]\n'
                      '[tuning]\nlr = []\ncentralised_lr = []\n')
    run_study(tmp_path / "out", str(config), log=lambda m: None)
    rounds = read(tmp_path / "out" / "rounds.csv")
    assert {r["round"]: math.isnan(float(r["val_accuracy"])) for r in rounds} == {"0": True, "1": False, "2": False}
    assert (tmp_path / "out" / "summary.md").read_text().count("| aircomp |") == 1
    for name in ("accuracy_vs_snr", "accuracy_per_round", "nmse_per_round", "accuracy_vs_channel_uses",
                 "accuracy_vs_latency"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 0


def test_a_finished_study_with_tuned_widths_resumes_without_building_its_setup(tmp_path, monkeypatch):
    """tuning.digital_num_bits [8, 1] (random-bert): a second run of the finished study reports every point as
    done and never builds the setup (model and activations), although the width it did not choose was never run."""
    from deft6g.benchmarks import study
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "widths.toml"
    config.write_text('seeds = [0]\nschemes = ["ideal", "digital"]\n[model]\nname = "random-bert"\n[data]\n'
                      'train_examples = 64\ntest_examples = 32\n[federated]\ndevices = 2\nrounds = 1\n'
                      'local_steps = 1\n[channel]\nnum_rx_ant = [2]\n[digital]\nsnr_db = [20.0]\n'
                      '[tuning]\nlr = []\ncentralised_lr = []\ndigital_num_bits = [8, 1]\n')
    rows = run_study(tmp_path / "out", str(config), log=lambda m: None).rows["results.csv"]
    assert len(rows) == 2 and {r["num_bits"] for r in rows if r["scheme"] == "digital"} <= {8, 1}
    built = []
    monkeypatch.setattr(study._Setup, "__init__", lambda self, cfg, log: built.append(cfg))
    messages = []
    again = run_study(tmp_path / "out", str(config), log=messages.append).rows["results.csv"]
    assert built == [] and compare_rows(again, rows, POINT_KEY, set(), rtol=0.0) == (True, [])
    assert any("2 of 2 already finished" in m for m in messages)


def test_uses_to_target_is_censored_never_imputed():
    """Cumulative uplink uses until the first round at or above the target; a run that never gets there is
    infinite (censored), and the summary's median over seeds is then 'not reached' when most never do."""
    from deft6g.benchmarks.study import uses_to_target
    rounds = [{"round": i, "channel_uses": 100, "val_accuracy": acc} for i, acc in enumerate([0.5, 0.7, 0.8])]
    assert uses_to_target(rounds, 0.7) == 200 and uses_to_target(rounds, 0.8) == 300
    rounds[1]["val_accuracy"] = math.nan                    # not evaluated that round (eval_every > 1)
    assert uses_to_target(rounds, 0.7) == 300
    assert uses_to_target(rounds, 0.9) == float("inf")


def test_accuracy_within_a_use_budget_is_censored_never_imputed():
    """The validation accuracy after the last evaluated round that fits the budget (rounds without an evaluation
    are skipped, a round past the budget ends the count); no fitting round is -inf, and the summary's median over
    seeds then reads 'none' when most seeds have nothing within the budget."""
    from deft6g.benchmarks.study import accuracy_within, summary_rows
    rounds = [{"round": i, "channel_uses": 100, "val_accuracy": acc} for i, acc in enumerate([0.5, math.nan, 0.8])]
    assert accuracy_within(rounds, 250) == 0.5 and accuracy_within(rounds, 300) == 0.8
    assert accuracy_within(rounds, 99) == float("-inf") and accuracy_within(rounds[::-1], 150) == 0.5
    point = {"scheme": "aircomp", "snr_db": 0.0, "num_rx_ant": 2, "link": "counted", "num_bits": 0,
             "lora_aggregation": "factors"}
    rows = [{**point, "seed": s, "accuracy": 0.7, "val_accuracy": 0.7, "channel_uses": 300, "downlink_uses": 0,
             "energy": 0.0, "latency_s": 0.0, "nmse": 0.0, "pilot_uses": 0, "side_info_uses": 0} for s in range(3)]
    per_seed = {0: [50, 50], 1: [200, 100], 2: [300, 10]}           # uses of rounds 0 and 1 per seed
    round_rows = [{**point, "seed": s, "round": i, "channel_uses": u, "val_accuracy": 0.6 + 0.1 * i,
                   "devices": s + i} for s, uses in per_seed.items() for i, u in enumerate(uses)]
    s = summary_rows(rows, round_rows, budget=250)[0]
    assert s["within_budget"] == 2 / 3 and s["accuracy_at_budget"] == 0.6      # seeds: 0.7, 0.6, -inf
    assert s["heard"] == pytest.approx(1.5)                    # devices heard per round: 0.5, 1.5, 2.5 by seed
    assert s["uses_per_heard"] == pytest.approx(900 / (1 + 3 + 5))      # pooled: 300 uses and 1, 3, 5 heard by seed
    s = summary_rows(rows, round_rows, budget=100)[0]
    assert s["within_budget"] == 1 / 3 and s["accuracy_at_budget"] == float("-inf")   # 0.7, -inf, -inf


def test_the_cheapest_digital_width_is_the_fewest_uses_to_the_validation_target():
    """Per (variant, link, N, SNR): the width whose median seed reaches the target with the fewest uplink uses
    (a tie goes to fewer bits); widths whose median never reaches it are never chosen; a setting where none
    does has no choice; other schemes are never marked."""
    from deft6g.benchmarks.study import cheapest_widths
    base = {"lora_aggregation": "factors", "link": "counted", "num_rx_ant": 2}
    rows = [{**base, "scheme": "digital", "snr_db": snr, "num_bits": q, "uses_to_target": u}
            for snr, q, u in [(0.0, 1, float("inf")), (0.0, 2, 300.0), (0.0, 4, 200.0), (0.0, 8, 200.0),
                              (10.0, 8, 90.0), (10.0, 4, 90.0), (-10.0, 8, float("inf"))]]
    rows.append({**base, "scheme": "aircomp", "snr_db": 0.0, "num_bits": 0, "uses_to_target": 10.0})
    chosen = cheapest_widths(rows)
    assert {k[3]: v["num_bits"] for k, v in chosen.items()} == {0.0: 4, 10.0: 4}


def test_digital_width_tuning_picks_the_cheapest_width_that_reaches_the_ideal_reference(tmp_path, monkeypatch):
    """tuning.digital_num_bits [8, 4, 2, 1]: with a stand-in training run (ideal reaches 0.800 on validation, a
    width's uplink uses 1,000 x bits), each SNR takes the fewest-uses width whose validation accuracy reaches
    0.800 - 0.01: 4 bits at 0 dB (2 bits misses by 0.001), 1 bit at 20 dB, and 8 bits (the first listed) at
    -10 dB, where none does; the reported digital points carry exactly those widths, and chosen.json records the
    rule and a null score below the target."""
    import json
    from deft6g.benchmarks import study
    from deft6g.experiment import tuner, tuning_store
    accuracy = {(-10.0, 8): 0.70, (-10.0, 4): 0.60, (-10.0, 2): 0.50, (-10.0, 1): 0.40,
                (0.0, 8): 0.80, (0.0, 4): 0.792, (0.0, 2): 0.789, (0.0, 1): 0.70,
                (20.0, 8): 0.80, (20.0, 4): 0.80, (20.0, 2): 0.80, (20.0, 1): 0.795}
    seen = []

    def fake_run(setup, point, setting, validation_only=False):
        assert validation_only and point["seed"] == 1000 and setting == {"lr": 3e-3}
        seen.append(point)
        ideal = point["scheme"] == "ideal"
        acc = 0.80 if ideal else accuracy[(point["snr_db"], point["num_bits"])]
        uses = 0 if ideal else 1000 * point["num_bits"]
        return {"row": {**point, "val_accuracy": acc, "nmse": 0.0, "channel_uses": uses, "wall_s": 0.0}}

    monkeypatch.setattr(study, "_run_point", fake_run)
    cfg = build_config({"schemes": ["ideal", "digital"], "seeds": [0, 1],
                        "federated": {"lr": 3e-3}, "digital": {"snr_db": [-10.0, 0.0, 20.0]},
                        "channel": {"num_rx_ant": [2]},
                        "tuning": {"lr": [], "digital_num_bits": [8, 4, 2, 1]}})

    class Task:
        def setup(self):
            return None

    store = tuning_store(tmp_path / "tuning.csv", study.TUNING_COLUMN_TYPES)
    choices = study.tune_study(cfg, Task(), tuner(store, log=lambda m: 0))
    assert len(seen) == 1 + 12                                 # the ideal reference, then 4 widths x 3 SNRs
    got = {snr: choices[("digital", "factors", "counted", 2, snr)]["num_bits"] for snr in (-10.0, 0.0, 20.0)}
    assert got == {-10.0: 8, 0.0: 4, 20.0: 1}
    digital = [p for p in study.study_points(cfg, choices) if p["scheme"] == "digital"]
    assert sorted((p["seed"], p["snr_db"], p["num_bits"]) for p in digital) == [
        (s, snr, got[snr]) for s in (0, 1) for snr in (-10.0, 0.0, 20.0)]
    chosen = json.loads((tmp_path / "chosen.json").read_text())["digital.num_bits [factors] counted N=2 0 dB"]
    assert chosen["rule"] == study.WIDTH_RULE and chosen["setting"] == {"num_bits": 4}
    assert [c["score"] for c in chosen["candidates"]] == [-8000.0, -4000.0, None, None]


def test_arm_lr_tunes_an_arms_device_learning_rate_on_its_own(tmp_path, monkeypatch):
    """tuning.arm_lr ["aircomp", "digital"]: with a stand-in training run, ideal's best lr is 3e-3, AirComp's at
    0 dB 1e-2 and digital's 3e-2 (tuned at its configured 4 bits); AirComp points (at -10 and 0 dB: the nearest
    tuning SNR is 0) train with 1e-2, digital's with 3e-2, ideal's with 3e-3, and AirComp's admission threshold
    is tuned with AirComp's own lr."""
    from deft6g.benchmarks import study
    from deft6g.experiment import tuner, tuning_store
    score = {("ideal", 1e-2): 0.70, ("ideal", 3e-3): 0.72, ("ideal", 3e-2): 0.60,
             ("aircomp", 1e-2): 0.69, ("aircomp", 3e-3): 0.65, ("aircomp", 3e-2): 0.50,
             ("digital", 1e-2): 0.60, ("digital", 3e-3): 0.61, ("digital", 3e-2): 0.62}
    admission_lrs, digital_bits = [], set()

    def fake_run(setup, point, setting, validation_only=False):
        if "admit_snr_db" in setting and point["scheme"] == "aircomp":
            admission_lrs.append((setting["lr"], setting["admit_snr_db"]))
        if point["scheme"] == "digital":
            digital_bits.add(point["num_bits"])
        acc = score[(point["scheme"], setting["lr"])] + (0.001 * setting.get("admit_snr_db", 0) / 100)
        return {"row": {**point, "val_accuracy": acc, "nmse": 0.0, "channel_uses": 1, "wall_s": 0.0}}

    monkeypatch.setattr(study, "_run_point", fake_run)
    cfg = build_config({"schemes": ["ideal", "aircomp", "digital"], "channel": {"snr_db": [-10.0, 0.0]},
                        "digital": {"snr_db": [10.0], "num_bits": [4]},
                        "tuning": {"arm_lr": ["aircomp", "digital"], "arm_lr_snr_db": [0.0], "aircomp_admit_snr_db": [-100.0, 0.0],
                                   "aircomp_snr_db": [-10.0, 0.0]}})

    class Task:
        def setup(self):
            return None

    store = tuning_store(tmp_path / "tuning.csv", study.TUNING_COLUMN_TYPES)
    choices = study.tune_study(cfg, Task(), tuner(store, log=lambda m: 0))
    assert choices[("lr", "factors")] == 3e-3
    assert choices[("lr", "factors", "aircomp", "counted", 2, 0.0)] == 1e-2
    lrs = {(p["scheme"], p["snr_db"]): study.point_setting(cfg, choices, p)["lr"]
           for p in study.study_points(cfg) if p["seed"] == 0}
    assert lrs == {("ideal", math.inf): 3e-3, ("aircomp", -10.0): 1e-2, ("aircomp", 0.0): 1e-2,
                   ("digital", 10.0): 3e-2}
    assert digital_bits == {4}                              # digital's lr is tuned at its configured width
    assert {lr for lr, admit in admission_lrs if admit == 0.0} == {1e-2}     # only the admission grid has 0 dB
    with pytest.raises(ConfigError, match="tuning.arm_lr"):
        build_config({"tuning": {"arm_lr": ["ideal"]}})
    with pytest.raises(ConfigError, match="tuning.arm_lr"):
        build_config({"tuning": {"arm_lr": ["aircomp"], "lr": []}})


TUNED_STUDY = """
schemes = ["centralised", "ideal", "aircomp", "noisy", "obda"]
seeds = [0]
[model]
name = "random-bert"
[data]
train_examples = 256
test_examples = 32
[federated]
devices = 2
rounds = 3
local_steps = 2
[channel]
snr_db = [-10.0, 20.0]
num_rx_ant = [2]
[obda]
snr_db = [20.0]
[tuning]
seeds = [1]
lr = [1e-5, 1e-3]
centralised_lr = []
obda_threshold = [0.1, 1.0]
obda_server_lr = [0.02]
obda_snr_db = [10.0]
aircomp_admit_snr_db = [-100.0, 15.0]
aircomp_snr_db = [-10.0, 20.0]
"""


def _tuned_study(tmp_path, name, scramble=False, cache=None):
    """Run TUNED_STUDY into tmp_path/name (activations cached in `cache`, default tmp_path/cache); with `scramble`
    the test labels are permuted once the setup is built (every reported test accuracy may change, no choice
    may)."""
    import numpy as np
    from deft6g.benchmarks import study
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEFT6G_CACHE", str(cache or tmp_path / "cache"))
        if scramble:
            init = study._Setup.__init__

            def scrambled(self, cfg, log):
                init(self, cfg, log)
                self.y_test = np.random.default_rng(7).permutation(self.y_test)
                self.whole_test = self._by_length(self.test_acts, self.full_test_acts, self.y_test)

            mp.setattr(study._Setup, "__init__", scrambled)
        config = tmp_path / "tuned.toml"
        config.write_text(TUNED_STUDY)
        result = run_study(tmp_path / name, str(config), log=lambda m: None)
    return result.config, result.rows["results.csv"], tmp_path / name


@pytest.fixture(scope="module")
def tuned_study(tmp_path_factory):
    """(cfg, rows, output folder) of TUNED_STUDY, run once for the tests below."""
    return _tuned_study(tmp_path_factory.mktemp("tuned"), "plain")


def test_tuning_stage_chooses_on_validation_and_every_point_uses_the_choice(tuned_study, tmp_path):
    """federated.lr is the argmax of the tuning runs' final validation accuracy (ties: the first listed); the
    empty centralised_lr grid keeps the configured value and says so; every reported point ran with those
    values, and the reported ideal point equals a direct run of that point with the chosen lr. With the test
    labels permuted, tuning.csv (timing aside) and chosen.json are unchanged while test accuracies move."""
    import json
    from deft6g.benchmarks.study import FederatedStudy, _run_point
    cfg, rows, out = tuned_study
    tuning = read(out / "tuning.csv")
    lr_rows = [r for r in tuning if r["tuning"] == "federated.lr [factors]"]
    assert [json.loads(r["setting"])["lr"] for r in lr_rows] == [1e-5, 1e-3]
    assert {r["scheme"] for r in lr_rows} == {"ideal"} and all(r["seed"] == "1" for r in lr_rows)
    scores = [float(r["score"]) for r in lr_rows]
    assert scores == [float(r["val_accuracy"]) for r in lr_rows]
    assert scores[0] != scores[1]                     # a real choice (1e-5 barely trains)
    chosen = json.loads((out / "chosen.json").read_text())
    best = [1e-5, 1e-3][scores.index(max(scores))]
    assert chosen["federated.lr [factors]"]["setting"] == {"lr": best}
    assert chosen["centralised_lr [factors]"] == {**chosen["centralised_lr [factors]"], "setting": {"lr": 3e-3},
                                                  "tuned": [], "not_tuned": ["lr"]}
    assert not any(r["tuning"].startswith("centralised") for r in tuning)
    for r in rows:
        assert float(r["lr"]) == (3e-3 if r["scheme"] == "centralised" else best)
    obda = [r for r in tuning if r["tuning"] == "obda [factors] counted N=2 10 dB"]
    assert [json.loads(r["setting"]) for r in obda] == [{"server_lr": 0.02, "threshold": 0.1},
                                                        {"server_lr": 0.02, "threshold": 1.0}]
    assert all(r["scheme"] == "obda" and float(r["snr_db"]) == 10.0 for r in obda)
    obda_scores = [float(r["score"]) for r in obda]
    obda_best = chosen["obda [factors] counted N=2 10 dB"]["setting"]
    assert obda_best == json.loads(obda[obda_scores.index(max(obda_scores))]["setting"])
    assert json.loads(next(r for r in rows if r["scheme"] == "obda")["setting"]) == obda_best    # 20 dB: nearest 10
    air = [r for r in tuning if r["tuning"] == "aircomp [factors] counted N=2 20 dB"]     # AirComp's admission
    assert [json.loads(r["setting"]) for r in air] == [{"admit_snr_db": -100.0}, {"admit_snr_db": 15.0}]
    air_scores = [float(r["score"]) for r in air]
    air_best = chosen["aircomp [factors] counted N=2 20 dB"]["setting"]
    assert air_best == json.loads(air[air_scores.index(max(air_scores))]["setting"])
    assert json.loads(next(r for r in rows if r["scheme"] == "aircomp" and float(r["snr_db"]) == 20.0)["setting"]) \
        == air_best                                       # each AirComp SNR uses its own choice (absolute SNR)
    assert "aircomp [factors] counted N=2 -10 dB" in chosen
    ideal = next(r for r in rows if r["scheme"] == "ideal")
    setup = FederatedStudy(lambda m: None).setup(cfg)
    direct = _run_point(setup, {k: ideal[k] for k in POINT_KEY}, {"lr": best})["row"]
    assert float(ideal["accuracy"]) == direct["accuracy"] and float(ideal["val_accuracy"]) == direct["val_accuracy"]
    # the winning tuning run (seed 1, no reported seed) is a direct run at the chosen lr
    tuning_run = _run_point(FederatedStudy(lambda m: None).setup(cfg), {k: ideal[k] for k in POINT_KEY} | {"seed": 1},
                            {"lr": best})["row"]
    assert tuning_run["val_accuracy"] == max(scores)

    _, mixed, other = _tuned_study(tmp_path, "scrambled", scramble=True, cache=out.parent / "cache")
    strip = lambda table: [{k: v for k, v in r.items() if k != "wall_s"} for r in table]      # noqa: E731
    assert strip(read(other / "tuning.csv")) == strip(tuning)
    assert (other / "chosen.json").read_text() == (out / "chosen.json").read_text()
    assert [r["accuracy"] for r in mixed] != [r["accuracy"] for r in rows]           # the scrambling bites
    assert [r["val_accuracy"] for r in mixed] == [r["val_accuracy"] for r in rows]


def test_obda_points_take_the_choice_at_the_nearest_tuning_snr():
    """tuning.obda_snr_db [-20, 0]: a point at -30 dB takes -20's choice, -5 dB takes 0's, -10 dB (a tie) the
    lower one; the other schemes take the chosen lr of their LoRA variant, the centralised run its own."""
    from deft6g.benchmarks.study import point_setting
    cfg = build_config({"schemes": ["centralised", "obda"], "tuning": {"obda_snr_db": [-20.0, 0.0]}})
    choices = {("lr", "factors"): 0.5, ("centralised_lr", "factors"): 0.25,
               **{("obda", "factors", "counted", 2, snr): {"threshold": snr, "server_lr": 1.0} for snr in (-20.0, 0.0)}}
    point = {"scheme": "obda", "num_rx_ant": 2, "link": "counted", "num_bits": 0, "lora_aggregation": "factors",
             "seed": 0}
    for snr, ref in ((-30.0, -20.0), (-5.0, 0.0), (-10.0, -20.0), (10.0, 0.0)):
        assert point_setting(cfg, choices, {**point, "snr_db": snr}) == {"lr": 0.5, "threshold": ref, "server_lr": 1.0}
    assert point_setting(cfg, choices, {**point, "scheme": "centralised", "snr_db": math.inf}) == {"lr": 0.25}
    assert point_setting(cfg, {}, {**point, "snr_db": 0.0}) == {"lr": cfg.federated.lr, "threshold": cfg.obda.threshold,
                                                               "server_lr": cfg.obda.server_lr}


def test_noisy_control_carries_aircomps_lowest_snr_nmse(tuned_study):
    """The noisy row sits at AirComp's lowest SNR and adds white noise of that NMSE (the AirComp run's mean over
    rounds, one seed): each round's measured NMSE is nmse * chi2_L / L, so with R rounds the row's mean is within
    5 standard deviations, 5 sqrt(2 / (L R)) relative, of it (L: the payload reals per device)."""
    import json
    cfg, rows, out = tuned_study
    air = next(r for r in rows if r["scheme"] == "aircomp" and float(r["snr_db"]) == -10.0)
    noisy = next(r for r in rows if r["scheme"] == "noisy")
    assert float(noisy["snr_db"]) == -10.0 and int(noisy["channel_uses"]) == 0
    target = float(air["nmse"])
    assert json.loads(noisy["setting"]) == {"nmse": target} and target > 0
    reals = json.loads((out / "model.json").read_text())["payload_reals_per_device"]
    tol = 5 * math.sqrt(2 / (reals * cfg.federated.rounds))
    assert abs(float(noisy["nmse"]) / target - 1) < tol
    summary = read(out / "summary.csv")
    assert any(s["scheme"] == "noisy" for s in summary)


PARTIAL_STUDY = """
schemes = ["ideal", "aircomp"]
seeds = [0]
[model]
name = "random-bert"
[data]
train_examples = 64
test_examples = 16
[federated]
devices = 4
clients_per_round = 2
rounds = 3
local_steps = 1
batch_size = 1
[channel]
model = "rayleigh"
snr_db = [10.0]
num_rx_ant = [2]
[tuning]
lr = []
centralised_lr = []
"""


def test_partial_participation_samples_the_configured_devices_each_round(tmp_path, monkeypatch):
    """clients_per_round = 2 of K = 4: every round two distinct devices are sampled (seeded: the same for both
    schemes), AirComp hears only them (participants among the sampled, tau = 2 pilots) and samples_seen counts
    the sampled devices' steps (batch 1: a device's last batch of an epoch is never smaller)."""
    from deft6g.phy import pilot_channel_uses
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "partial.toml"
    config.write_text(PARTIAL_STUDY)
    result = run_study(tmp_path / "out", str(config), log=lambda m: None)
    cfg, rows = result.config, result.rows["results.csv"]
    rounds = read(tmp_path / "out" / "rounds.csv")
    sampled = {}
    for r in rounds:
        devices = [int(k) for k in r["sampled"].split()]
        assert len(set(devices)) == 2 and all(0 <= k < 4 for k in devices)
        assert set(map(int, r["participants"].split())) <= set(devices)
        sampled.setdefault(r["round"], set()).add(tuple(devices))
        if r["scheme"] == "aircomp":
            assert int(r["pilot_uses"]) == pilot_channel_uses(2, 1)
    assert all(len(s) == 1 for s in sampled.values())            # the same seeded sample for both schemes
    assert len({next(iter(s)) for s in sampled.values()}) > 1    # and not the same devices every round
    assert all(int(r["samples_seen"]) == 3 * 2 * 1 * 1 for r in rows)       # rounds x sampled x steps x batch


def _arrays(obj, seen=None):
    """Every numpy array reachable from `obj` through its attributes, tuples, lists, dicts and activation
    stores (models aside: their weights are TensorFlow variables)."""
    import numpy as np
    from deft6g.finetune.peft.activation_store import RaggedActivations
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for v in obj for a in _arrays(v, seen)]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _arrays(v, seen)]
    if isinstance(obj, RaggedActivations) or type(obj).__name__ == "_Setup":
        return _arrays(vars(obj), seen)
    return []


def test_setup_serves_the_padded_batches_from_a_ragged_store_on_disk(tiny_study, tmp_path, monkeypatch):
    """The study's setup (random-bert, tests/conftest.py's TINY_STUDY) holds its activations as float32
    RaggedActivations: batches of the fit, validation and test texts equal trim_padding(take(padded, idx)) of the
    padded activations the model computes directly (mask and real positions exactly, padded positions zero, so
    the logits are bit-identical and the whole-test accuracy equals the padded evaluation's); the values live on
    disk and no array the setup holds is an eighth the size of the training values file."""
    import numpy as np
    from deft6g.benchmarks.study import _Setup
    from deft6g.finetune import evaluate, load_dataset, load_study_model, tokenize
    from deft6g.finetune.peft.activation_store import RaggedActivations
    from deft6g.finetune.peft.training import take, trim_padding
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    cfg = load_config(tiny_study)
    setup = _Setup(cfg, log=lambda m: None)
    stores = [setup.train_acts, setup.test_acts, setup.whole_test[0], setup.round_val[0]]
    assert all(isinstance(s, RaggedActivations) and s.dtype == np.float32 for s in stores)

    data = load_dataset(cfg.data.dataset)
    tokens = tokenize(load_study_model(cfg.model.name)[1], data.x, cfg.model.max_length)
    padded = {part: setup.device.activations({k: v[rows] for k, v in tokens.items()}, setup.start)
              for part, rows in (("train", setup.train_texts), ("test", setup.test_texts))}
    val_rows = setup.val_rows[:cfg.federated.round_eval_examples or None]
    fit, val = (take(padded["train"], rows) for rows in (setup.fit_rows, val_rows))
    rng = np.random.default_rng(0)
    for store, ref in ((setup.train_acts, fit), (setup.test_acts, padded["test"]), (setup.round_val[0], None)):
        if ref is None:                                     # round_val: the validation texts ordered by length
            ref = take(val, np.argsort(val[1].sum(1), kind="stable"))
        assert len(store) == len(ref[1]) and np.array_equal(store.lengths, ref[1].sum(1))
        for idx in (rng.permutation(len(store))[:5], np.arange(len(store))):
            (h, m), (hr, mr) = store[idx], trim_padding(take(ref, idx))
            assert h.shape == hr.shape and m.dtype == mr.dtype and np.array_equal(m, mr)
            assert np.array_equal(h[m > 0], hr[mr > 0]) and not np.any(h[m == 0])
            np.testing.assert_array_equal(setup.full.forward_from(h, m, setup.start).numpy(),
                                          setup.full.forward_from(hr, mr, setup.start).numpy())
    assert setup.evaluate() == evaluate(setup.full, padded["test"], setup.y_test, start_block=setup.start,
                                        batch_size=setup.EVAL_BATCH)

    values = setup.train_acts.nbytes
    assert setup.train_acts.path.stat().st_size == values and tmp_path / "cache" in setup.train_acts.path.parents
    assert values == 4 * setup.device.hidden * int(padded["train"][1].sum())     # real positions only, float32
    assert max(a.nbytes for a in _arrays(setup)) < values / 8
