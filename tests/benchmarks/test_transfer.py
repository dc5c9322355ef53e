"""`deft6g transfer`: the --quick run (files, channel uses, resume), who holds which texts (no target device's text
in a neighbour's training data, by text hash), source choice without the test labels, and steps to the target
summarised with censoring, never imputed."""

import csv
import dataclasses
import hashlib
import math

import numpy as np
import pytest

from deft6g.benchmarks.cli import main
from deft6g.benchmarks.transfer import TransferConfig, _choose, _Setup, _train_source, steps_to_target, summary_table


def test_transfer_quick_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
    """2 seeds x (random, vocab, 2 neighbour prompts, 2 digital SNRs, 1 analog SNR, 1 bit width) runs. Digital
    runs spend at least one transmission of every codeword (ceil(payload / 576 info bits) x 600 QPSK symbols, rate
    1/2, n = 1200) and exactly that when nothing failed; analog runs spend ceil(L / 2) = 256 symbols for the
    8 x 64 prompt of random-bert. The choice grid has one row per (seed, candidate) with exactly one pick per
    choice; summary rows report reached/n and a median, no mean of steps. A run resumed after 5 of its 16
    fine-tuning runs (the neighbours' prompts read back from their .npy files) ends with the same runs.csv."""
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["transfer", "--quick", "--out", str(out)]) == 0
    for name in ("sources.csv", "choices.csv", "choice_grid.csv", "runs.csv", "summary.csv", "timing.json",
                 "config.json", "curves_bbc_business_tech.png", "snr_bbc_business_tech.png",
                 "bits_bbc_business_tech.png"):
        assert (out / name).exists(), name
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == 2 * 8
    for r in runs:
        if r["link"] == "digital":
            once = math.ceil(int(r["payload_bits"]) / 576) * 600
            assert int(r["payload_bits"]) == 8 * 64 * int(r["num_bits"])
            assert int(r["channel_uses"]) >= once
            assert (int(r["channel_uses"]) == once) == (float(r["bler"]) == 0.0)
        elif r["link"] == "analog":
            assert int(r["channel_uses"]) == 256
    grid = list(csv.DictReader((out / "choice_grid.csv").open()))
    assert sorted((g["seed"], g["source"], g["relation"]) for g in grid) == [
        (s, src, rel) for s in ("0", "1") for src, rel in (("bbc_topics5", "near-duplicate"),
                                                           ("rt_sentiment", "different corpus"))]
    for how in ("similarity_choice", "trial_choice"):
        assert sorted(sum(int(g[how]) for g in grid if g["seed"] == s) for s in ("0", "1")) == [1, 1]
    summary = list(csv.DictReader((out / "summary.csv").open()))
    ideal = [r for r in summary if r["link"] == "ideal"]
    assert {r["scheme"] for r in ideal} >= {"from bbc_topics5 (near-duplicate)", "from rt_sentiment (different corpus)",
                                            "oracle (test-set bound)"}
    assert all(float(r["reached_fraction"]) == int(r["reached"]) / int(r["n"]) for r in ideal)
    text = capsys.readouterr().out
    assert "similarity choice" in text and "= oracle's (test-set bound) source" in text and "median steps" in text
    before = (out / "runs.csv").read_text()
    (out / "runs.csv").write_text("".join(before.splitlines(keepends=True)[:6]))     # interrupted after 5 runs
    assert main(["transfer", "--quick", "--out", str(out)]) == 0        # prompts read back from sources.arrays/
    assert (out / "runs.csv").read_text() == before


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The study's setup for the default five tasks and two targets, on random-bert with small pools (BBC
    300/40, Rotten Tomatoes 40/20), two seeds, devices of 40 texts (16 of them validation)."""
    cfg = dataclasses.replace(TransferConfig.quick(), tasks=TransferConfig().tasks, targets=TransferConfig().targets,
                              pool_sizes={"bbc_news": [300, 40], "rotten_tomatoes": [40, 20]})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEFT6G_CACHE", str(tmp_path_factory.mktemp("cache")))
        return _Setup(cfg, log=lambda *_: None)


def _texts_of(setup, task, hidden):
    """SHA-256 of the texts behind cached block inputs `hidden` [S, T, H] of `task` (matched row by row to the
    task's training and test arrays; every row must match one text)."""
    from deft6g.finetune import load_dataset
    d = setup.data[task]
    corpus = load_dataset(d.task.dataset).x
    by_row = {}
    for arrays, ids in ((d.train[0], d.train_ids), (d.test[0], d.test_ids)):
        for row, i in zip(arrays, ids):
            by_row.setdefault(row.tobytes(), set()).add(hashlib.sha256(corpus[i].encode()).hexdigest())
    return set().union(*(by_row[row.tobytes()] for row in hidden))


def test_no_target_device_text_reaches_a_neighbour(setup, monkeypatch):
    """What each neighbour's trainer is actually given (spied on `PromptTrainer.run` in `_train_source`), hashed
    as texts, shares no text with what the target devices hold (their training and validation texts, as the
    fine-tuning and choice stages read them) across all five tasks and both corpora, for both seeds; no test
    text is in any of them; each device holds 40 texts."""
    cfg = setup.cfg
    given = []
    for name, trainer in setup.trainers.items():
        run = trainer.run
        monkeypatch.setattr(trainer, "run", lambda init, train, *a, _run=run, _name=name, **k:
                            (given.append((_name, train[0])), _run(init, train, *a, **k))[1])
    for seed in cfg.seeds:
        given.clear()
        for task in cfg.tasks:
            _train_source(setup, {"task": task, "seed": seed})
        assert [n for n, _ in given] == cfg.tasks
        neighbours = {n: _texts_of(setup, n, h) for n, h in given}
        devices = {}
        for target in cfg.targets:
            x, _, x_val, _ = setup.target_split(target, seed)
            devices[target] = _texts_of(setup, target, x[0]) | _texts_of(setup, target, x_val[0])
            assert len(devices[target]) == cfg.device_examples
        held = set().union(*devices.values())
        tests = set().union(*(_texts_of(setup, n, d.test[0]) for n, d in setup.data.items()))
        for name, texts in neighbours.items():
            assert len(texts) >= cfg.batch_size
            assert not texts & held, (name, seed)
            assert not texts & tests, (name, seed)
        assert not held & tests


def test_choice_never_reads_test_labels(setup):
    """The similarity and trial choices (with every score behind them) are the same after every test label of
    the target is scrambled (set to a class the bbc_topics5 prompt does not predict: its test accuracy drops to
    0); changing the device's validation labels (all to one class) does change the trial scores (the choice is
    made on validation)."""
    target, seed = "bbc_business_tech", 0
    rng = np.random.default_rng(0)
    prompts = {(t, seed): (0.5 * rng.standard_normal((setup.cfg.num_tokens, setup.peft.hidden))).astype(np.float32)
               for t in setup.cfg.tasks}
    point = {"target": target, "seed": seed}
    d = setup.data[target]
    before = _choose(setup, point, prompts)
    trainer = setup.trainers[target]
    trainer.clf.set_prompt(prompts[("bbc_topics5", seed)])
    predicted = trainer.predict(*d.test).numpy()
    wrong = dataclasses.replace(d, y_test=(predicted + 1) % len(d.labels))      # every test label scrambled
    assert trainer.accuracy(wrong.test, wrong.y_test) == 0.0 < trainer.accuracy(d.test, d.y_test)
    try:
        setup.data[target] = wrong
        assert _choose(setup, point, prompts) == before
        _, val = setup.splits[seed][0][target]
        y_train = d.y_train.copy()
        y_train[val] = 0           # one class: moves even a prompt that predicts one class on balanced texts
        setup.data[target] = dataclasses.replace(d, y_train=y_train)
        assert _choose(setup, point, prompts)["trial_scores"] != before["trial_scores"]
    finally:
        setup.data[target] = d


def test_unreached_runs_are_not_imputed(tmp_path):
    """Three seeds where random init reaches the target in 1 of 3 runs (at 30 steps) and a neighbour's prompt in
    2 of 3 (0 and 20): summary.csv says 1/3 reached with the median beyond the 60-step budget ('>60'; an
    imputed mean would be (70 + 70 + 30) / 3), and 2/3 with median 20; the similarity choice adds its 10 probe
    steps (censored at 70)."""
    cfg = dataclasses.replace(TransferConfig(), targets=["bbc_business_tech"],
                              tasks=["bbc_business_tech", "bbc_topics5", "rt_sentiment"])
    reached = {("random", ""): [None, None, 30], ("vocab", ""): [None, None, None],
               ("source", "bbc_topics5"): [0, None, 20], ("source", "rt_sentiment"): [10, None, None]}
    runs = [{"target": "bbc_business_tech", "seed": s, "init": init, "source": source, "link": "ideal", "snr_db": None,
             "num_bits": None, "accuracy": 0.5, "start_accuracy": 0.4, "steps_to_target": steps[s], "channel_uses": 0}
            for (init, source), steps in reached.items() for s in range(3)]
    choices = [{"target": "bbc_business_tech", "seed": s, "similarity_choice": "bbc_topics5",
                "trial_choice": "rt_sentiment"} for s in range(3)]
    rows = {r["scheme"]: {k: str(v) for k, v in r.items()} for r in summary_table(cfg, runs, choices)}
    assert (rows["random"]["reached"], rows["random"]["steps_median"]) == ("1", ">60")
    assert float(rows["random"]["reached_fraction"]) == pytest.approx(1 / 3)
    assert (rows["vocab"]["reached"], rows["vocab"]["steps_median"]) == ("0", ">60")
    assert (rows["from bbc_topics5 (near-duplicate)"]["reached"],
            rows["from bbc_topics5 (near-duplicate)"]["steps_median"]) == ("2", "20")
    assert rows["transfer (similarity)"]["steps_median"] == "30"
    assert rows["transfer (trial)"]["steps_median"] == ">60"
    assert "steps_mean" not in rows["random"]
    assert steps_to_target([(0, runs[0], 10), (2, runs[2], 10)]) == [math.inf, 40]
