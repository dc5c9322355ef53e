"""The PEFT method registry and HF peft's calling conventions: a method registered from outside the library
works end to end; module-name rank patterns; a PeftModel called like an HF model."""

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from deft6g.finetune import (PEFT_METHODS, BaseTuner, LoraConfig, PeftConfig, PeftModel, build_fomo,
                             config_from_dict, dims_of, get_peft_model, register_peft_method)
from deft6g.finetune.peft.cost import peft_params_per_block

H, L, LABELS = 64, 4, 3


def text_batch(n=6, t=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, t), np.int32)
    mask[: n // 2, t // 2:] = 0
    return {"input_ids": rng.integers(1, 900, (n, t)).astype(np.int32), "attention_mask": mask}


@dataclass
class LayerNormConfig(PeftConfig):
    """LayerNorm tuning: the gammas of the chosen blocks train (`enabled_pattern` {block: 0 or 1})."""
    enabled_pattern: dict = field(default_factory=dict)
    peft_type = "LN_TUNING_TEST"
    size_field, pattern_field, max_size = None, "enabled_pattern", 1


class LayerNormTuner(BaseTuner):
    def __init__(self, model, config, seed):
        super().__init__(model, config, seed)
        self.gammas = [(i, v) for i, blk in enumerate(model.blocks) if model.sizes[i]
                       for v in blk.weights if v.name.endswith("gamma:0")]

    def variables_by_block(self):
        return list(self.gammas)

    def state(self):
        return {f"gamma.{j}": v.numpy() for j, (_, v) in enumerate(self.gammas)}

    def load_state(self, state):
        for j, (_, v) in enumerate(self.gammas):
            v.assign(state[f"gamma.{j}"])

    def reset_parameters(self, seed):
        for _, v in self.gammas:
            v.assign(np.ones(v.shape, np.float32))

    @classmethod
    def params_per_block(cls, config, dims, projections, block, size):
        return 2 * dims.hidden             # two LayerNorms per encoder block


@pytest.fixture
def layer_norm_method():
    register_peft_method(LayerNormConfig, LayerNormTuner)
    yield LayerNormConfig
    PEFT_METHODS.pop(LayerNormConfig.peft_type)


def test_a_registered_method_trains_saves_and_is_priced(layer_norm_method, tmp_path):
    """A method added from outside: trainable count = 2 LayerNorms x H per enabled block (the cost model
    agrees), a save/load round trip reproduces the logits, and the config survives JSON."""
    model, _ = build_fomo("bert")
    cfg = layer_norm_method(enabled_pattern={0: 0})
    peft = get_peft_model(model, cfg, num_labels=LABELS)
    assert peft.get_nb_trainable_parameters()[0] == (L - 1) * 2 * H + LABELS * (H + 1)
    assert peft_params_per_block(dims_of(model), cfg) == [0] + [2 * H] * (L - 1)
    assert peft.lowest_tuned_block() == 1
    for v in peft.trainable_variables:
        v.assign(np.random.default_rng(1).normal(1, 0.1, v.shape))
    x = text_batch()
    out = peft(x).numpy()
    peft.save_pretrained(tmp_path)
    again = PeftModel.from_pretrained(build_fomo("bert")[0], tmp_path)
    np.testing.assert_allclose(again(x).numpy(), out, atol=1e-5)
    assert config_from_dict(cfg.to_dict()) == cfg


def test_unregistered_configs_are_refused():
    @dataclass
    class Unknown(PeftConfig):
        pattern: dict = field(default_factory=dict)
        peft_type, pattern_field = "UNKNOWN", "pattern"

    with pytest.raises(TypeError, match="peft_config"):
        get_peft_model(build_fomo("bert")[0], Unknown())
    with pytest.raises(TypeError, match="tuner_cls"):
        register_peft_method(Unknown, object)


def test_rank_pattern_takes_module_name_keys_as_hf_peft():
    """{regex: r} sets the rank of the modules whose names end with a match, {block: r} a whole block; the
    model, the cost model and the HF export agree, and the config survives JSON."""
    cfg = LoraConfig(r=4, rank_pattern={1: 0, "3.attention.self.query": 2})
    peft = get_peft_model(build_fomo("bert")[0], cfg, num_labels=LABELS)
    ranks = {w.layer.module: w.layer.r for w in peft.wrappers}
    assert ranks == {f"encoder.layer.{i}.attention.self.{m}": 2 if (i, m) == (3, "query") else 4
                     for i in (0, 2, 3) for m in ("query", "value")}
    assert [w.block for w in peft.wrappers] == [0, 0, 2, 2, 3, 3]
    per_block = peft_params_per_block(dims_of(peft.base), cfg)
    assert sum(per_block) == sum(int(np.prod(v.shape)) for v in peft.peft_variables)
    assert per_block == [2 * 4 * 2 * H, 0, 2 * 4 * 2 * H, (4 + 2) * 2 * H]
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="rank_pattern"):
        LoraConfig(rank_pattern={"(": 2})


def test_peft_model_is_called_like_an_hf_model():
    """Keyword inputs equal dict inputs; without a head the output is the base model's last hidden state
    (the HF call runs through the installed LoRA wrappers too) with the mean-pooled features by name."""
    x = text_batch()
    peft = get_peft_model(build_fomo("bert")[0], LoraConfig(r=2), num_labels=LABELS)
    np.testing.assert_allclose(peft(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).numpy(),
                               peft(x).numpy(), atol=1e-6)
    features = get_peft_model(build_fomo("bert")[0], LoraConfig(r=2))
    out = features(**x)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), features.base(**x).last_hidden_state.numpy(), atol=1e-5)
    m = x["attention_mask"][..., None]
    np.testing.assert_allclose(out.pooled.numpy(), (out.last_hidden_state.numpy() * m).sum(1) / m.sum(1), atol=1e-5)
    vit = get_peft_model(build_fomo("vit")[0], LoraConfig(r=2))
    pixels = np.random.default_rng(0).random((2, 1, 28, 28), np.float32)
    np.testing.assert_allclose(vit(pixel_values=pixels).last_hidden_state.numpy(),
                               vit.base(pixel_values=pixels).last_hidden_state.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="input_ids"):
        peft()


def test_module_name_keys_are_regexes_anchored_at_the_name_end_and_must_match():
    """HF peft's `(.*\\.)?(key)$`: an alternation sets every alternative; a key matching no targeted module is
    an error, not silently ignored; "2" (as JSON writes block 2) is block 2; a longer target name prices the
    same as the model counts it."""
    model = build_fomo("bert")[0]
    peft = get_peft_model(model, LoraConfig(r=4, rank_pattern={"query|value": 2}))
    assert {w.layer.r for w in peft.wrappers} == {2}
    with pytest.raises(ValueError, match="rank_pattern"):
        get_peft_model(build_fomo("bert")[0], LoraConfig(r=4, rank_pattern={"quer": 2}))
    assert LoraConfig(rank_pattern={"2": 0}).rank_pattern == {2: 0}
    cfg = LoraConfig(r=4, target_modules=["attention.self.query"])
    peft = get_peft_model(build_fomo("bert")[0], cfg)
    assert sum(peft_params_per_block(dims_of(peft.base), cfg)) == sum(int(np.prod(v.shape)) for v in peft.peft_variables)


def test_inputs_are_given_once():
    peft = get_peft_model(build_fomo("bert")[0], LoraConfig(r=2), num_labels=LABELS)
    x = text_batch()
    with pytest.raises(ValueError, match="both"):
        peft(x, input_ids=x["input_ids"])
    vit = get_peft_model(build_fomo("vit")[0], LoraConfig(r=2), num_labels=LABELS)
    pixels = np.random.default_rng(0).random((2, 28, 28), np.float32)
    np.testing.assert_allclose(vit({"pixel_values": pixels}).numpy(), vit(pixels).numpy(), atol=1e-6)
