"""Federated DEFT on a tiny BERT: FedAvg by hand, AirComp vs ideal, the AirComp error law, the emulator
and its plug-in, and split fine-tuning vs centralised training."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from deft6g.finetune import LoraConfig, build_fomo, get_peft_model
from deft6g.finetune.aggregation import AirCompAggregator, DigitalAggregator, IdealAggregator
from deft6g.finetune.emulator import build_emulator, emulator_blocks, emulator_config, plug_in_state
from deft6g.finetune.federated import FederatedDEFT
from deft6g.finetune.training import _LOSS
from deft6g.optim import design_aircomp
from deft6g.phy import aircomp_mse

K = 4


def tiny_peft(layers=(2, 3), seed=0):
    model, _ = build_fomo("bert", seed=seed)
    return get_peft_model(model, LoraConfig(r=2, layers_to_transform=list(layers)), num_labels=2)


def device_data(peft, start, n=16, t=8):
    rng = np.random.default_rng(5)
    out = []
    for k in range(K):
        x = {"input_ids": rng.integers(1, 900, (n, t)).astype(np.int32), "attention_mask": np.ones((n, t), np.int32)}
        out.append((peft.activations(x, start), rng.integers(0, 2, n)))
    return out


def test_ideal_round_is_fedavg_by_hand():
    peft = tiny_peft()
    devices = device_data(peft, 2)
    fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=2, batch_size=4, lr=1e-2, seed=3)
    start = fed.payload_vector()
    # by hand: each device from the same start, its own Adam, the same batches; then the plain mean
    deltas = []
    for k, (x, y) in enumerate(devices):
        fed.set_payload(start)
        opt = keras.optimizers.Adam(1e-2)
        rng = np.random.default_rng([3, 0, k])
        for _ in range(2):
            idx = rng.choice(len(y), 4, replace=False)
            with tf.GradientTape() as tape:
                loss = _LOSS(y[idx], peft.forward_from(x[0][idx], x[1][idx], 2))
            opt.apply_gradients(zip(tape.gradient(loss, fed.payload), fed.payload))
        deltas.append(fed.payload_vector() - start)
    fed.set_payload(start)
    log = fed.run_round(0)
    np.testing.assert_allclose(fed.payload_vector(), start + np.mean(deltas, 0), atol=1e-6)
    assert log.agg_mse == 0 and log.channel_uses == 0 and log.devices == K


def test_aircomp_at_very_high_snr_equals_ideal():
    peft = tiny_peft()
    devices = device_data(peft, 2)
    init = [v.numpy() for v in peft.trainable_variables]
    results = []
    for agg in (IdealAggregator(), AirCompAggregator(K, 8, 80.0, method="mmse", seed=1)):
        for v, w in zip(peft.trainable_variables, init):
            v.assign(w)
        fed = FederatedDEFT(peft, devices, agg, 2, local_steps=2, batch_size=4, seed=0)
        fed.run(2)
        results.append(fed.payload_vector())
    np.testing.assert_allclose(results[1], results[0], atol=1e-3)


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_aircomp_error_matches_the_design_mse(snr_db):
    """Equal-std payloads: per-entry error of the mean = std^2 * aircomp_mse(H, a, b) / K^2 (2e4 entries)."""
    agg = AirCompAggregator(K, 4, snr_db, method="sdr", seed=2)
    u = np.random.default_rng(0).normal(0, 1, (K, 20000)).astype(np.float32)
    u = (u - u.mean(1, keepdims=True)) / u.std(1, keepdims=True)
    H = agg._draw(0)
    d = design_aircomp(H, 1.0, agg.noise_var, "sdr", seed=agg._round_seed(0), progress=False)
    expected = float(aircomp_mse(H, d.a, d.b, agg.noise_var)) / K ** 2
    got = agg(u, 0).agg_mse
    assert got == pytest.approx(expected, rel=0.05)       # 2e4 samples: std of the estimate about 1%
    assert agg(u, 0).channel_uses == 10000


def test_digital_is_exact_up_to_quantisation_at_high_snr_and_counts_channel_uses():
    agg = DigitalAggregator(K, 4, 30.0, num_bits=8, num_bits_per_symbol=2, code_rate=0.5)
    u = np.random.default_rng(0).normal(0, 1, (K, 600)).astype(np.float32)
    res = agg(u, 0)
    step = (u.max(1) - u.min(1)) / 255
    assert res.agg_mse <= np.mean(step ** 2) / 12 / K + 1e-9           # quantisation noise only, averaged
    assert res.channel_uses == K * (600 * 8 // 600) * 1200 // 2         # 8 codewords (k=600, n=1200), QPSK


def test_emulator_keeps_requested_blocks_and_plugs_into_the_full_model():
    assert emulator_blocks(6, 1, 1, 0.5) == [0, 1, 4, 5] and emulator_blocks(6, 1, 2, 0.0) == list(range(6))
    kept = emulator_blocks(4, 1, 1, 0.5)
    assert len(kept) == 3 and kept[0] == 0 and kept[-1] == 3
    full, _ = build_fomo("bert")
    emu = build_emulator(full, kept)
    assert emu.config.num_hidden_layers == 3 and emu.count_params() < full.count_params()
    same = build_emulator(full, [0, 1, 2, 3])                 # nothing dropped: the full model again
    x = {"input_ids": np.array([[5, 6, 7]], np.int32), "attention_mask": np.ones((1, 3), np.int32)}
    np.testing.assert_allclose(same(**x).last_hidden_state.numpy(), full(**x).last_hidden_state.numpy(), atol=1e-6)
    cfg = LoraConfig(r=2, layers_to_transform=[3])
    emu_peft = get_peft_model(emu, emulator_config(cfg, kept, 4), num_labels=2)
    full_peft = get_peft_model(full, cfg, num_labels=2)
    for v in emu_peft.trainable_variables:
        v.assign(np.random.default_rng(1).normal(size=v.shape))
    full_peft.load_peft_state(plug_in_state(emu_peft.peft_state(), kept))
    full_peft.load_head_state(emu_peft.head_state())
    key = "base_model.model.encoder.layer.{}.attention.self.query.lora_B.weight"
    np.testing.assert_array_equal(full_peft.peft_state()[key.format(3)], emu_peft.peft_state()[key.format(2)])
    with pytest.raises(ValueError, match="drops"):
        emulator_config(LoraConfig(r=2, layers_to_transform=[2]), [0, 1, 3], 4)


def test_split_step_equals_centralised_step():
    peft = tiny_peft(layers=(1,))
    devices = device_data(peft, 1)
    x, y = devices[0]
    init = [v.numpy() for v in peft.trainable_variables]
    central = keras.optimizers.Adam(1e-2)
    idx = np.arange(4)
    with tf.GradientTape() as tape:
        loss = _LOSS(y[idx], peft.forward_from(x[0][idx], x[1][idx], 1))
    central.apply_gradients(zip(tape.gradient(loss, peft.trainable_variables), peft.trainable_variables))
    expected = [v.numpy() for v in peft.trainable_variables]
    for v, w in zip(peft.trainable_variables, init):
        v.assign(w)
    fed = FederatedDEFT(peft, [(x, y)], IdealAggregator(), 1, lr=1e-2, cut_block=2)
    fed._step((x[0][idx], x[1][idx]), y[idx])
    for v, e in zip(peft.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-6)
    log = FederatedDEFT(peft, [(x, y)], IdealAggregator(), 1, local_steps=2, batch_size=4, cut_block=2).run_round(0)
    assert log.bits_down == 8 * x[0].shape[1] * peft.hidden * 32 and log.bits_up == log.bits_down + 8 * 32


def test_bad_federated_settings():
    peft = tiny_peft()
    devices = device_data(peft, 2)
    with pytest.raises(ValueError, match="cut_block"):
        FederatedDEFT(peft, devices, IdealAggregator(), 2, cut_block=3)
    with pytest.raises(ValueError, match="start_block"):
        FederatedDEFT(peft, devices, IdealAggregator(), 3)
    with pytest.raises(ValueError, match="updates"):
        AirCompAggregator(K, 2, 10.0)(np.zeros((K + 1, 4)), 0)
