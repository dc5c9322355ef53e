"""Federated DEFT on a tiny BERT: FedAvg by hand, AirComp vs ideal, the AirComp error law, the emulator
and its plug-in, and split fine-tuning vs centralised training."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from deft6g.finetune import LoraConfig, build_fomo, get_peft_model
from deft6g.finetune.federation.aggregation import AirCompAggregator, DigitalAggregator, IdealAggregator, \
    make_aggregator
from deft6g.finetune.federation.emulator import build_emulator, emulator_blocks, emulator_config, plug_in_state
from deft6g.finetune.federation.federated import BATCH_STREAM, BatchStream, FederatedDEFT
from deft6g.finetune.peft.training import CROSS_ENTROPY, trim_padding
from deft6g.optim import design_aircomp
from deft6g.phy import aircomp_mse
from deft6g.rng import derive_seed

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


def _local_by_hand(peft, fed, x, y, k, steps, start, lr, seed, batch_size):
    """Device k's update computed by hand: its own fresh Adam, batches drawn as the device's stream draws
    them (same generator seed derive_seed(seed, BATCH_STREAM, k)), padding trimmed."""
    fed.set_payload(start)
    opt = keras.optimizers.Adam(lr)
    rng = np.random.default_rng(derive_seed(seed, BATCH_STREAM, k))
    stream = BatchStream(np.asarray(x[1]).sum(1).astype(int), batch_size, rng)
    for _ in range(steps):
        idx = next(stream)
        h, m = trim_padding((x[0][idx], x[1][idx]))
        with tf.GradientTape() as tape:
            loss = CROSS_ENTROPY(y[idx], peft.forward_from(h, m, 2))
        opt.apply_gradients(zip(tape.gradient(loss, fed.payload), fed.payload))
    return fed.payload_vector() - start


def test_ideal_round_is_weighted_fedavg_by_hand():
    """Unequal devices (16, 8, 4, 12 examples): the new payload is start + sum_k (S_k / S) delta_k."""
    peft = tiny_peft()
    devices = [(tuple(a[:n] for a in x), y[:n]) for (x, y), n in zip(device_data(peft, 2), (16, 8, 4, 12))]
    fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=2, batch_size=4, lr=1e-2, seed=3)
    start = fed.payload_vector()
    deltas = [_local_by_hand(peft, fed, x, y, k, 2, start, 1e-2, 3, 4) for k, (x, y) in enumerate(devices)]
    fed.set_payload(start)
    log = fed.run_round(0)
    w = np.array([16, 8, 4, 12]) / 40
    np.testing.assert_allclose(fed.payload_vector(), start + w @ np.array(deltas), atol=1e-6)
    assert log.agg_mse == 0 and log.channel_uses == 0 and log.devices == K


def test_xla_compiled_round_and_evaluation_equal_the_graph_ones():
    """jit_compile=True (the study's default) changes only float rounding: the round's payload within 1e-5 of the
    graph-mode round (itself checked against FedAvg by hand above) on the same devices and seed, and the same
    predictions in `evaluate`."""
    from deft6g.finetune import evaluate
    peft = tiny_peft()
    devices = [(tuple(a[:n] for a in x), y[:n]) for (x, y), n in zip(device_data(peft, 2), (16, 8, 4, 12))]
    payloads = []
    for jit in (False, True):
        peft.reset_parameters(0)
        fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=2, batch_size=4, lr=1e-2, seed=3,
                            jit_compile=jit)
        start = fed.payload_vector()
        fed.run_round(0)
        payloads.append(fed.payload_vector())
        assert np.max(np.abs(payloads[-1] - start)) > 1e-4                # the round moved the weights
    np.testing.assert_allclose(payloads[1], payloads[0], rtol=1e-5, atol=1e-6)
    x = tuple(np.concatenate([d[0][i] for d in devices]) for i in range(2))
    y = np.concatenate([d[1] for d in devices])
    assert evaluate(peft, x, y, start_block=2, jit_compile=True) == evaluate(peft, x, y, start_block=2)


def test_local_adam_state_carries_across_rounds():
    """One device, FedAvg with server lr 1: two rounds of 2 steps equal 4 steps of one Adam (the device's
    moments and step count are kept between its rounds, not reset)."""
    peft = tiny_peft()
    x, y = device_data(peft, 2)[0]
    fed = FederatedDEFT(peft, [(x, y)], IdealAggregator(), 2, local_steps=2, batch_size=4, lr=1e-2, seed=1,
                        stateful_clients=True)
    start = fed.payload_vector()
    expected = start + _local_by_hand(peft, fed, x, y, 0, 4, start, 1e-2, 1, 4)
    fed.set_payload(start)
    fed.run(2)
    np.testing.assert_allclose(fed.payload_vector(), expected, atol=1e-6)


def test_empty_device_gets_weight_zero():
    peft = tiny_peft()
    devices = device_data(peft, 2)
    (x0, y0) = devices[0]
    devices[0] = ((x0[0][:0], x0[1][:0]), y0[:0])
    fed = FederatedDEFT(peft, devices, AirCompAggregator(K, 4, 20.0, method="mmse", seed=0), 2, local_steps=1,
                        batch_size=4)
    assert fed.sizes[0] == 0 and fed.sizes[1:].min() > 0
    log = fed.run_round(0)
    assert np.isfinite(fed.payload_vector()).all() and np.isfinite(log.agg_mse)


def _delta_w(peft):
    """sum over LoRA layers of scale * A B (the LoRA part of every tuned kernel), one flat vector."""
    return np.concatenate([(w.layer.scale * (w.layer.lora_A.numpy() @ w.layer.lora_B.numpy())).ravel() for w in peft.wrappers])


def _kernels(peft):
    return np.concatenate([w.layer.base.kernel.numpy().ravel() for w in peft.wrappers])


@pytest.mark.parametrize("mode", ["frozen_a", "delta_w"])
def test_exact_lora_aggregation_equals_the_mean_of_device_models(mode):
    """The aggregated model's effective kernels W0 + s A B equal sum_k w_k (W0 + s A_k B_k) to 1e-6."""
    peft = tiny_peft()
    devices = [(tuple(a[:n] for a in x), y[:n]) for (x, y), n in zip(device_data(peft, 2), (16, 8, 4, 12))]
    for v in peft.trainable_variables:                      # B != 0 so that A matters
        v.assign(np.random.default_rng(2).normal(0, 0.1, v.shape))
    fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=2, batch_size=4, lr=1e-2,
                        lora_aggregation=mode, seed=0)
    start, w0 = fed.payload_vector(), _kernels(peft)
    device_models = []
    for k, (x, y) in enumerate(devices):
        fed.set_payload(start + _local_by_hand(peft, fed, x, y, k, 2, start, 1e-2, 0, 4))
        device_models.append(w0 + _delta_w(peft))
    fed.set_payload(start)
    log = fed.run_round(0)
    expected = np.array([16, 8, 4, 12]) / 40 @ np.array(device_models)
    np.testing.assert_allclose(_kernels(peft) + _delta_w(peft), expected, atol=1e-6)
    if mode == "frozen_a":
        assert log.lora_bias < 1e-5                       # float32 round-off only


def test_factor_averaging_is_biased_and_the_bias_is_logged():
    peft = tiny_peft()
    for v in peft.trainable_variables:
        v.assign(np.random.default_rng(2).normal(0, 0.1, v.shape))
    fed = FederatedDEFT(peft, device_data(peft, 2), IdealAggregator(), 2, local_steps=2, batch_size=4, lr=1e-2)
    start = fed.payload_vector()
    finals = []
    for k, (x, y) in enumerate(fed.devices):
        finals.append(start + _local_by_hand(peft, fed, x, y, k, 2, start, 1e-2, 0, 4))
    fed.set_payload(start)
    log = fed.run_round(0)
    num = den = 0.0
    for layer in fed.loras:                                          # the ratio by hand
        a0, b0 = fed.lora_factors(start, layer)
        prods = [np.matmul(*fed.lora_factors(f, layer)) for f in finals]
        mean_a = np.mean([fed.lora_factors(f, layer)[0] for f in finals], 0)
        mean_b = np.mean([fed.lora_factors(f, layer)[1] for f in finals], 0)
        num += np.sum((np.mean(prods, 0) - mean_a @ mean_b) ** 2)
        den += np.sum((np.mean(prods, 0) - a0 @ b0) ** 2)
    assert log.lora_bias == pytest.approx(np.sqrt(num / den), rel=1e-4) and log.lora_bias > 1e-3


def test_delta_w_refuses_a_link_that_only_delivers_the_sum():
    peft = tiny_peft()
    fed = FederatedDEFT(peft, device_data(peft, 2), AirCompAggregator(K, 4, 20.0, method="mmse"), 2,
                        local_steps=1, batch_size=4, lora_aggregation="delta_w")
    with pytest.raises(ValueError, match="delta_w"):
        fed.run_round(0)


def test_trimmed_padding_is_exact_and_reset_parameters_rebuilds_the_seeded_init():
    peft = tiny_peft()
    x, _ = device_data(peft, 2)[0]
    m = x[1].copy()
    m[:, 5:] = 0                                               # 5 real tokens of 8
    full = peft.forward_from(x[0], m, 2).numpy()
    h, mt = trim_padding((x[0], m), multiple=1)
    assert mt.shape[1] == 5
    np.testing.assert_allclose(peft.forward_from(h, mt, 2).numpy(), full, atol=1e-5)
    fresh = [v.numpy() for v in tiny_peft(seed=0).trainable_variables]
    for v in peft.trainable_variables:
        v.assign(np.ones(v.shape))
    peft.reset_parameters(0)
    for v, f in zip(peft.trainable_variables, fresh):
        np.testing.assert_allclose(v.numpy(), f, atol=1e-7)


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
    """Equal-std payloads: per-entry error of the mean = std^2 * aircomp_mse(H, a, b) / K^2 (2e4 entries), with
    the genie's perfect CSI and free side information (payload uses only)."""
    agg = AirCompAggregator(K, 4, snr_db, method="sdr", seed=2, genie=True)
    u = np.random.default_rng(0).normal(0, 1, (K, 20000)).astype(np.float32)
    u = (u - u.mean(1, keepdims=True)) / u.std(1, keepdims=True)
    H = agg.draw_channel(0)
    d = design_aircomp(H, 1.0, agg.noise_var, "sdr", seed=agg.round_seed(0, "design"), progress=False)
    expected = float(aircomp_mse(H, d.a, d.b, agg.noise_var)) / K ** 2
    got = agg(u, 0).agg_mse
    assert got == pytest.approx(expected, rel=0.05)       # 2e4 samples: std of the estimate about 1%
    assert agg(u, 0).channel_uses == agg(u, 0).payload_uses == 10000      # payload L/2; the genie's side info is free


def test_digital_is_exact_up_to_quantisation_at_high_snr_and_counts_channel_uses():
    """Fixed QPSK 1/2, bit-true, 30 dB, N = K = 4 in one MU-MIMO group: every entry within half a quantiser
    step; 64 + 600 x 8 = 4864 bits = 9 blocks of 576 payload bits (+ CRC24, k = 600, n = 1200) = 5400 uses."""
    agg = DigitalAggregator(K, 4, 30.0, "rayleigh", 8, 2, 0.5, mcs="fixed", streams=4, genie=True)
    u = np.random.default_rng(0).normal(0, 1, (K, 600)).astype(np.float32)
    res = agg(u, 0)
    step = (u.max(1) - u.min(1)) / 255
    assert np.all(np.abs(res.per_device - u) <= step[:, None] / 2 * 1.0001)
    assert res.agg_mse <= np.mean(step ** 2) / 12 / K + 1e-9           # quantisation noise only, averaged
    assert res.channel_uses == 9 * 600 and res.devices == K


def test_digital_default_averages_only_delivered_entries():
    """Default fair baseline (MU-MIMO LMMSE, AMC, CRC, abstract link) at 3 dB, N = K = 4, FedAvg weights
    0.1..0.4, rounds 0-5 (seed 0): the mean is, per entry, the renormalised weighted mean of the delivered
    quantised entries (the uplink's own valid mask re-derived with the round's seed), weights @ per_device
    equals it, and at 20 dB the same round costs fewer channel uses (higher MCS). Genie CSI and grants, so the
    uplink's own draw can be re-derived."""
    agg = DigitalAggregator(K, 4, 3.0, genie=True)
    u = np.random.default_rng(1).normal(0, 1, (K, 3000)).astype(np.float32)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    dropped = 0
    for r in range(6):
        res = agg(u, r, w.astype(np.float32))
        up = agg.uplink(u, agg.draw_channel(r), agg.noise_var, 1.0, seed=agg.round_seed(r, "uplink"))
        valid = up.valid.numpy()
        dropped += (~valid).sum()
        qz = agg.uplink.quantizer
        bits, lo, hi = qz.quantize(u)
        sent = qz.dequantize(bits, lo.numpy().astype(np.float32), hi.numpy().astype(np.float32)).numpy()
        heard = (w[:, None] * valid).sum(0)
        want = np.where(heard > 0, (w[:, None] * valid * sent).sum(0) / np.maximum(heard, 1e-300), 0.0)
        np.testing.assert_allclose(res.mean, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w @ res.per_device, res.mean, rtol=1e-5, atol=1e-6)
        assert res.devices == valid.any(1).sum()
    assert dropped > 0
    assert DigitalAggregator(K, 4, 20.0, genie=True)(u, 0).channel_uses < agg(u, 0).channel_uses


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
        loss = CROSS_ENTROPY(y[idx], peft.forward_from(x[0][idx], x[1][idx], 1))
    central.apply_gradients(zip(tape.gradient(loss, peft.trainable_variables), peft.trainable_variables))
    expected = [v.numpy() for v in peft.trainable_variables]
    for v, w in zip(peft.trainable_variables, init):
        v.assign(w)
    fed = FederatedDEFT(peft, [(x, y)], IdealAggregator(), 1, lr=1e-2, cut_block=2)
    fed.local_step((x[0][idx], x[1][idx]), y[idx])
    for v, e in zip(peft.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-6)
    log = FederatedDEFT(peft, [(x, y)], IdealAggregator(), 1, local_steps=2, batch_size=4, cut_block=2).run_round(0)
    assert log.bits_down == 8 * x[0].shape[1] * peft.hidden * 32 and log.bits_up == log.bits_down + 8 * 32


def test_fedadam_server_by_name_equals_the_object_and_steps_by_adam():
    """server_optimizer "fedadam" (server_lr 0.5) and FedAdamServer(0.5) give the same two rounds, and the first
    round's step is 0.5 m / (sqrt(v) + tau) of the ideal mean Delta (m = 0.1 Delta, v = 0.01 Delta^2)."""
    from deft6g.finetune import FedAdamServer
    peft = tiny_peft()
    devices = device_data(peft, 2)
    runs = []
    for server in ("fedadam", FedAdamServer(0.5)):
        peft.reset_parameters(0)
        fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=1, batch_size=4, lr=1e-2, seed=3,
                            server_optimizer=server, server_lr=0.5)
        start = fed.payload_vector()
        fed.run_round(0)
        first = fed.payload_vector()
        fed.run_round(1)
        runs.append((start, first, fed.payload_vector()))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    start, first, _ = runs[0]
    peft.reset_parameters(0)
    fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=1, batch_size=4, lr=1e-2, seed=3)
    fed.run_round(0)
    delta = fed.payload_vector() - start                       # FedAvg with server_lr 1: the ideal mean Delta
    # Delta is a difference of float32 payloads (error up to eps |x|), and the step's slope in Delta near 0 is
    # 0.5 x 0.1 / tau = 50: that bounds the absolute error of entries whose Delta is tiny.
    atol = 50 * np.finfo(np.float32).eps * np.abs(start).max()
    np.testing.assert_allclose(first - start, 0.5 * 0.1 * delta / (np.sqrt(0.01 * delta ** 2) + 1e-3),
                               rtol=1e-4, atol=atol)


def test_bad_federated_settings():
    peft = tiny_peft()
    devices = device_data(peft, 2)
    with pytest.raises(ValueError, match="cut_block"):
        FederatedDEFT(peft, devices, IdealAggregator(), 2, cut_block=3)
    with pytest.raises(ValueError, match="start_block"):
        FederatedDEFT(peft, devices, IdealAggregator(), 3)
    with pytest.raises(ValueError, match="server_optimizer"):
        FederatedDEFT(peft, devices, IdealAggregator(), 2, server_optimizer="fedyogi")
    with pytest.raises(ValueError, match="server_optimizer"):
        FederatedDEFT(peft, devices, IdealAggregator(), 2, server_optimizer=object())
    with pytest.raises(ValueError, match="updates"):
        AirCompAggregator(K, 2, 10.0)(np.zeros((K + 1, 4)), 0)


@pytest.mark.parametrize("model, subcarriers", [("rayleigh", 1), ("tdl-a", 4), ("umi", 4)])
def test_make_aggregator_passes_the_subcarrier_count_to_every_ofdm_model(model, subcarriers):
    """A study's channel.num_subcarriers reaches TDL/CDL and the 3GPP drop models, and flat models ignore it:
    the channel an AirComp aggregator draws per round has F = subcarriers."""
    agg = make_aggregator("aircomp", 4, 2, 10.0, channel={"model": model, "num_subcarriers": 4})
    H = agg.channel(1, seed=0)[0].numpy()
    assert (H.shape[0] if H.ndim == 3 else 1) == subcarriers and H.shape[-2:] == (2, 4)
