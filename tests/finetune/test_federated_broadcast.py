"""The server's per-round broadcast (`RoundLog.broadcast_reals`) against the kernel shapes of the HF config:
factors sends every trainable real, frozen_a only B (and the head), delta_w the factors plus each LoRA kernel's
dense residual; the study writes it per round and its sum over rounds."""

import csv

import numpy as np
import pytest

from deft6g.finetune import LoraConfig, build_fomo, get_peft_model
from deft6g.finetune.federation.aggregation import IdealAggregator
from deft6g.finetune.federation.federated import FederatedDEFT

K, R, LAYERS, LABELS = 3, 2, (2, 3), 2
TARGETS = ("query", "value")          # BERT self-attention projections, each hidden -> hidden


def _setup(cut_block=None, layers=LAYERS):
    """(tiny random BERT with LoRA r=R on query and value of `layers` and a 2-class head, its HF config,
    device data for K devices cached at the lowest tuned block)."""
    model, _ = build_fomo("bert", seed=0)
    peft = get_peft_model(model, LoraConfig(r=R, target_modules=list(TARGETS), layers_to_transform=list(layers)),
                          num_labels=LABELS)
    rng, start = np.random.default_rng(5), min(layers)
    devices = []
    for _ in range(K):
        x = {"input_ids": rng.integers(1, 900, (8, 6)).astype(np.int32), "attention_mask": np.ones((8, 6), np.int32)}
        devices.append((peft.activations(x, start), rng.integers(0, LABELS, 8)))
    return peft, model.config, devices, start


def _expected(config, mode, layers=LAYERS, head=True):
    """Reals broadcast per round from the HF config alone: per targeted projection A [H, r] and B [r, H]; the
    head [H, C] + [C]; delta_w adds the dense residual [H, H] of each targeted projection."""
    h, n = config.hidden_size, len(TARGETS) * len(layers)
    head_reals = h * LABELS + LABELS if head else 0
    a, b = n * h * R, n * R * h
    return {"factors": a + b + head_reals, "frozen_a": b + head_reals,
            "delta_w": a + b + head_reals + n * h * h}[mode]


@pytest.mark.parametrize("mode", ["factors", "frozen_a", "delta_w"])
def test_broadcast_counts_the_sent_state_from_the_config_shapes(mode):
    peft, config, devices, start = _setup()
    fed = FederatedDEFT(peft, devices, IdealAggregator(), start, local_steps=1, batch_size=4, lora_aggregation=mode)
    logs = fed.run(2)
    assert [g.broadcast_reals for g in logs] == [_expected(config, mode)] * 2
    trainable = sum(int(np.prod(v.shape)) for v in peft.trainable_variables)
    if mode == "factors":                                     # every trainable real, the model's own count
        assert logs[0].broadcast_reals == trainable
    if mode == "frozen_a":                                    # A never leaves the devices' initial copy
        a_reals = sum(int(np.prod(w.layer.lora_A.shape)) for w in peft.wrappers)
        assert logs[0].broadcast_reals == trainable - a_reals


def test_split_mode_broadcasts_the_peft_weights_beside_its_cut_layer_traffic():
    """With a cut the head stays at the server: the broadcast is the LoRA factors (plus the residuals for
    delta_w), and bits_down stays the cut-layer gradients (8 examples x width x H x 32 bits per device step)."""
    peft, config, devices, start = _setup(layers=(1,))
    for mode in ("factors", "delta_w"):
        fed = FederatedDEFT(peft, devices, IdealAggregator(), start, local_steps=1, batch_size=8, cut_block=2,
                            lora_aggregation=mode)
        log = fed.run_round(0)
        assert log.broadcast_reals == _expected(config, mode, layers=(1,), head=False)
        assert log.bits_down == K * 8 * 6 * config.hidden_size * 32


BROADCAST_STUDY = """
schemes = ["centralised", "ideal"]
seeds = [0]
[model]
name = "random-bert"
[data]
train_examples = 64
test_examples = 32
[federated]
devices = 2
rounds = 3
local_steps = 1
lora_aggregation = ["delta_w"]
[tuning]
lr = [1e-3]
centralised_lr = [1e-3]
"""


def test_study_writes_the_broadcast_per_round_and_its_total(tmp_path, monkeypatch):
    """A tiny random-bert study (delta_w, 3 rounds): every rounds.csv row holds the per-round broadcast of the
    config's shapes, results.csv its sum (rounds x per round); the centralised reference broadcasts nothing."""
    from deft6g.benchmarks.study import run_study
    from deft6g.finetune import load_study_model
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "study.toml"
    config.write_text(BROADCAST_STUDY)
    cfg = run_study(tmp_path / "out", str(config), log=lambda m: None).config
    h = load_study_model("random-bert")[0].config.hidden_size
    r, n = cfg.peft.size, len(cfg.peft.target_modules) * len(cfg.peft.blocks)
    per_round = n * (2 * h * r + h * h) + h * LABELS + LABELS        # factors, residuals, 2-class head
    out = tmp_path / "out"
    with open(out / "rounds.csv", newline="") as r, open(out / "results.csv", newline="") as t:
        rounds, results = list(csv.DictReader(r)), list(csv.DictReader(t))
    by_scheme = {row["scheme"]: int(row["broadcast_reals"]) for row in results}
    assert by_scheme == {"centralised": 0, "ideal": 3 * per_round}
    ideal = [int(row["broadcast_reals"]) for row in rounds if row["scheme"] == "ideal"]
    assert ideal == [per_round] * 3 and sum(ideal) == by_scheme["ideal"]
