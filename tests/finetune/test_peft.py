"""PEFT on tiny random models: parameter counts vs formulas, exact merge, frozen base, save/load, export."""

import json

import numpy as np
import pytest
import tf_keras as keras
from safetensors.numpy import load_file

from deft6g.finetune import (AdapterConfig, BitFitConfig, LoraConfig, PeftModel, PromptTuningConfig, block_importance,
                             build_fomo, dims_of, get_peft_model, make_train_step)
from deft6g.finetune.peft.cost import peft_params_per_block

H, FF, L, LABELS = 64, 128, 4, 3


def text_batch(n=6, t=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, t), np.int32)
    mask[: n // 2, t // 2:] = 0
    return {"input_ids": rng.integers(1, 900, (n, t)).astype(np.int32), "attention_mask": mask}


def tiny(config, num_labels=LABELS, arch="bert"):
    model, _ = build_fomo(arch)
    return get_peft_model(model, config, num_labels=num_labels)


@pytest.mark.parametrize("config, per_block", [
    (LoraConfig(r=4, target_modules=["query", "value"]), 2 * 4 * (H + H)),
    (LoraConfig(r=2, target_modules=["dense"]), 2 * (H + H) + 2 * (H + FF) + 2 * (FF + H)),
    (AdapterConfig(width=8, placement="houlsby"), 2 * (2 * H * 8 + 8 + H)),
    (AdapterConfig(width=8, placement="pfeiffer"), 2 * H * 8 + 8 + H),
    (BitFitConfig(), 5 * H + FF + 2 * H),      # q,k,v,attn-out,ffn-out biases (H each), ffn-in bias, 2 LN betas
])
def test_trainable_counts_match_formulas_and_cost_model(config, per_block):
    model, _ = build_fomo("bert")
    n_base = model.count_params()
    peft = get_peft_model(model, config, num_labels=LABELS)
    head = LABELS * (H + 1)
    trainable, total = peft.get_nb_trainable_parameters()
    assert trainable == L * per_block + head
    added = 0 if isinstance(config, BitFitConfig) else L * per_block     # BitFit trains existing weights
    assert total == n_base + added + head
    assert peft_params_per_block(dims_of(peft.base), config) == [per_block] * L


def test_per_block_sizes_include_zero():
    peft = tiny(LoraConfig(r=4, rank_pattern={0: 0, 1: 2}, target_modules=["query"]))
    assert peft.sizes == [0, 2, 4, 4]
    assert peft.lowest_tuned_block() == 1
    assert [w.layer.r for w in peft.wrappers] == [2, 4, 4]
    assert peft_params_per_block(dims_of(peft.base), peft.peft_config) == [0, 2 * 2 * H, 4 * 2 * H, 4 * 2 * H]


def pooled_hf(model, x):
    h = model(**x).last_hidden_state.numpy()
    m = x["attention_mask"][..., None]
    return (h * m).sum(1) / m.sum(1)


def test_blockwise_runner_and_zero_lora_reproduce_the_base_model():
    peft = tiny(LoraConfig(r=4), num_labels=None)
    x = text_batch()
    np.testing.assert_allclose(peft(x).pooled.numpy(), pooled_hf(peft.base, x), atol=1e-5)


def test_lora_merge_is_exact():
    peft = tiny(LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value", "intermediate.dense"]),
                num_labels=None)
    rng = np.random.default_rng(1)
    for w in peft.wrappers:
        w.layer.lora_B.assign(rng.normal(0, 0.1, w.layer.lora_B.shape))
    x = text_batch()
    with_lora = peft(x).pooled.numpy()
    np.testing.assert_allclose(pooled_hf(peft.base, x), with_lora, atol=1e-5)   # the HF call runs the wrappers too
    base = peft.merge_and_unload()
    assert all(type(b.attention.self_attention.query).__name__ == "Dense" for b in base.bert.encoder.layer)
    np.testing.assert_allclose(pooled_hf(base, x), with_lora, atol=1e-5)


def test_training_changes_only_peft_weights():
    for config in (LoraConfig(r=4), AdapterConfig(width=4), PromptTuningConfig(num_virtual_tokens=3, prompt_init="vocab"),
                   BitFitConfig(layers_to_transform=[2, 3])):
        peft = tiny(config)
        frozen = {v.name: v.numpy().copy() for v in peft.non_trainable_variables}
        tuned = {v.name: v.numpy().copy() for v in peft.trainable_variables}
        step = make_train_step(peft, keras.optimizers.Adam(1e-2))
        x, y = text_batch(), np.array([0, 1, 2, 0, 1, 2])
        for _ in range(3):
            step(x, y)
        assert all(np.array_equal(v.numpy(), frozen[v.name]) for v in peft.non_trainable_variables)
        assert all(not np.array_equal(v.numpy(), tuned[v.name]) for v in peft.trainable_variables), config


def test_keras_fit_trains_the_peft_model():
    peft = tiny(LoraConfig(r=4))
    peft.compile(optimizer=keras.optimizers.Adam(1e-2),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = text_batch(24, seed=3), np.tile([0, 1, 2], 8)
    hist = peft.fit(x, y, epochs=15, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < 0.8 * hist.history["loss"][0]


def test_activation_cache_gives_the_same_logits():
    peft = tiny(LoraConfig(r=4, layers_to_transform=[2, 3]))
    x = text_batch()
    h, m = peft.activations(x, 2, batch_size=4)
    np.testing.assert_allclose(peft.forward_from(h, m, 2).numpy(), peft(x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="block"):
        peft.activations(x, 3)


def test_save_load_round_trip_and_peft_export(tmp_path):
    peft = tiny(LoraConfig(r=4, rank_pattern={3: 2}))
    for v in peft.trainable_variables:
        v.assign(np.random.default_rng(2).normal(size=v.shape))
    x = text_batch()
    out = peft(x).numpy()
    peft.save_pretrained(tmp_path, base_model_name_or_path="tiny-bert")
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert set(weights) == {f"base_model.model.encoder.layer.{i}.attention.self.{m}.lora_{ab}.weight"
                            for i in range(L) for m in ("query", "value") for ab in "AB"}
    assert weights["base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"].shape == (4, H)
    assert weights["base_model.model.encoder.layer.3.attention.self.value.lora_B.weight"].shape == (H, 2)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
    assert cfg["rank_pattern"] == {"encoder.layer.3.attention.self.query": 2, "encoder.layer.3.attention.self.value": 2}
    # reload onto the same frozen base (a fresh build with the same seed)
    base, _ = build_fomo("bert")
    again = PeftModel.from_pretrained(base, tmp_path)
    np.testing.assert_allclose(again(x).numpy(), out, atol=1e-5)


@pytest.mark.parametrize("arch, targets", [("vit", ["query"]), ("gpt2", ["c_attn"]), ("t5", ["q", "v"])])
def test_lora_on_other_architectures(arch, targets):
    peft = tiny(LoraConfig(r=2, target_modules=targets), arch=arch)
    x = (np.random.default_rng(0).random((2, 28, 28), np.float32) if arch == "vit" else text_batch())
    assert peft(x).shape == (len(x) if arch == "vit" else 6, LABELS)
    assert peft.get_nb_trainable_parameters()[0] > LABELS * (H + 1)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="target_modules"):
        tiny(LoraConfig(target_modules=["nonexistent"]))
    with pytest.raises(ValueError, match="rank"):
        tiny(LoraConfig(r=H + 1))
    with pytest.raises(ValueError, match="`r`"):
        LoraConfig(r=-1)
    with pytest.raises(ValueError, match="rank_pattern"):
        LoraConfig(rank_pattern={0: -2})
    with pytest.raises(ValueError, match="exceed"):
        tiny(LoraConfig(rank_pattern={9: 2}))
    with pytest.raises(ValueError, match="placement"):
        AdapterConfig(placement="middle")
    with pytest.raises(ValueError, match="prompt tuning"):
        tiny(PromptTuningConfig(), arch="gpt2")
    with pytest.raises(ValueError, match="architecture"):
        build_fomo("resnet")
    with pytest.raises(TypeError, match="model"):
        get_peft_model(keras.Sequential([keras.layers.Dense(2)]), LoraConfig())


def test_deep_prompts_extend_the_sequence_and_cache_below_them():
    peft = tiny(PromptTuningConfig(num_virtual_tokens=2, tokens_pattern={2: 3}, prompt_init="random"))
    assert peft.sizes == [2, 0, 3, 0] and peft.lowest_tuned_block() == 0
    assert peft.get_nb_trainable_parameters()[0] == 5 * H + LABELS * (H + 1)
    x = text_batch()
    h, m = peft.run_blocks(*peft.embed(x), 0, 4)
    assert h.shape[1] == 12 + 5 and m.shape[1] == 12 + 5
    upper = tiny(PromptTuningConfig(num_virtual_tokens=0, tokens_pattern={2: 3}, prompt_init="random"))
    assert upper.lowest_tuned_block() == 2
    hc, mc = upper.activations(x, 2)
    np.testing.assert_allclose(upper.forward_from(hc, mc, 2).numpy(), upper(x).numpy(), atol=1e-5)


def test_block_importance_is_zero_exactly_where_no_peft():
    peft = tiny(LoraConfig(r=2, layers_to_transform=[1, 3]))
    for w in peft.wrappers:
        w.layer.lora_B.assign(np.full(w.layer.lora_B.shape, 1e-2, np.float32))
    score = block_importance(peft, text_batch(8), np.array([0, 1, 2] * 2 + [0, 1]), batch_size=4, num_batches=2)
    assert score[0] == 0 and score[2] == 0 and score[1] > 0 and score[3] > 0
