"""The analytic cost model against built models, published sizes and its own structure."""

import pytest

from deft6g.finetune import LoraConfig, MODELS, build_fomo, dims_of, full_finetune_cost, peft_cost, total_params


@pytest.mark.parametrize("arch", ["bert", "vit", "gpt2", "t5", "t5-encoder"])
def test_parameter_counts_match_built_models(arch):
    model, _ = build_fomo(arch)
    assert total_params(dims_of(model)) == model.count_params()


@pytest.mark.parametrize("name, published", [
    ("all-MiniLM-L6-v2", 22_713_216), ("bert-base", 109_482_240), ("bert-large", 335_141_888),
    ("gpt2-xl", 1_557_611_200), ("llama-7b", 6_738_415_616)])
def test_published_model_sizes(name, published):
    assert total_params(MODELS[name]) == published


def test_t5_xxl_is_11b():
    assert 11.0e9 < total_params(MODELS["t5-xxl"]) < 11.4e9


@pytest.mark.parametrize("name", sorted(MODELS))
def test_top_blocks_cost_less_than_all_blocks(name):
    d = MODELS[name]
    all_blocks = peft_cost(name, LoraConfig(r=8), tokens=512)
    top4 = peft_cost(name, LoraConfig(r=8, layers_to_transform=list(range(d.num_blocks - 4, d.num_blocks))), tokens=512)
    # LoRA r=8 on query/value: r (in + out) per target, 2 targets per block (T5 decoder blocks also cross-attention)
    per_block = 2 * 8 * (d.hidden + d.attn)
    assert top4.trainable_params == 4 * per_block * (2 if d.kind == "encoder-decoder" else 1)
    assert top4.payload_bits == 32 * top4.trainable_params
    if d.kind != "encoder-decoder":   # identical blocks: activations scale with the blocks backprop reaches
        assert top4.memory_activations * d.num_blocks == pytest.approx(4 * all_blocks.memory_activations, rel=1e-12)
    assert top4.flops_backward < all_blocks.flops_backward
    assert top4.lowest_tuned_block == d.num_blocks - 4 and all_blocks.lowest_tuned_block == 0
    full = full_finetune_cost(name, tokens=512)
    assert full.memory > all_blocks.memory and full.flops_backward > all_blocks.flops_backward


def test_caching_removes_frozen_forward_per_epoch():
    top = LoraConfig(r=8, layers_to_transform=[4, 5])
    plain, cached = peft_cost("all-MiniLM-L6-v2", top, tokens=64), peft_cost("all-MiniLM-L6-v2", top, tokens=64, cached=True)
    assert cached.flops_forward == pytest.approx(plain.flops_forward / 3, rel=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="model"):
        peft_cost("gpt-9", LoraConfig())
    with pytest.raises(ValueError, match="tokens"):
        peft_cost("bert-base", LoraConfig(), tokens=0)
