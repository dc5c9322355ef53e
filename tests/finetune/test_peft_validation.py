"""PEFT input validation: default sizes of 0 that would tune nothing, `layers_to_transform` that is not a list of
block indices, and saved PEFT folders (deft6g_config.json, adapter_model.safetensors, head.safetensors) whose keys,
shapes or values do not fit, each refused with a ValueError naming the file and key before any weight is allocated."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from deft6g.finetune import (AdapterConfig, LoraConfig, PeftModel, PromptTuningConfig, build_fomo,
                             get_peft_model)

H, L, LABELS = 64, 4, 3          # the tiny random BERT of build_fomo("bert"): hidden 64, 4 blocks


@pytest.mark.parametrize("make, name", [
    (lambda: LoraConfig(r=0), "`r`"),
    (lambda: LoraConfig(r=0, rank_pattern={1: 0, "query": 4}), "`r`"),     # module keys apply only in tuned blocks
    (lambda: AdapterConfig(width=0), "`width`"),
    (lambda: PromptTuningConfig(num_virtual_tokens=0), "`num_virtual_tokens`"),
])
def test_a_default_size_of_zero_that_tunes_nothing_is_refused(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_zero_sizes_per_block_stay_allowed():
    """0 in a pattern means "no PEFT in that block" (tuners/base.py); a default of 0 with a positive block
    size tunes just that block (deep prompts only, as prompt_transfer builds them)."""
    assert LoraConfig(r=4, rank_pattern={1: 0}).sizes(L) == [4, 0, 4, 4]
    assert LoraConfig(r=0, rank_pattern={2: 4}).sizes(L) == [0, 0, 4, 0]
    assert PromptTuningConfig(num_virtual_tokens=0, tokens_pattern={2: 3}).sizes(L) == [0, 0, 3, 0]
    assert LoraConfig(layers_to_transform=[]).sizes(L) == [0] * L       # a linear probe: the head only


@pytest.mark.parametrize("blocks", ["12", [1, "2"], [True], [1.0], 3, [-1]])
def test_layers_to_transform_must_list_block_indices(blocks):
    with pytest.raises(ValueError, match="layers_to_transform"):
        LoraConfig(layers_to_transform=blocks)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{method: folder} of tiny models saved with random weights (LoRA with a head, prompts with a head, an
    adapter without one), and a batch with each model's logits / pooled features."""
    rng = np.random.default_rng(0)
    x = {"input_ids": rng.integers(1, 900, (3, 8)).astype(np.int32), "attention_mask": np.ones((3, 8), np.int32)}
    out = {}
    for name, config, labels in (("lora", LoraConfig(r=4, rank_pattern={3: 2}), LABELS),
                                 ("prompt", PromptTuningConfig(num_virtual_tokens=2, tokens_pattern={2: 3},
                                                               prompt_init="random"), LABELS),
                                 ("adapter", AdapterConfig(width=8, layers_to_transform=[1, 3]), None)):
        peft = get_peft_model(build_fomo("bert")[0], config, num_labels=labels)
        for v in peft.trainable_variables:
            v.assign(rng.normal(size=v.shape).astype(np.float32))
        y = peft(x)
        folder = tmp_path_factory.mktemp(name)
        peft.save_pretrained(folder)
        out[name] = (folder, y.numpy() if labels else y.pooled.numpy())
    return out, x


def copy_of(saved, name, tmp_path):
    folder = tmp_path / name
    shutil.copytree(saved[0][name][0], folder)
    return folder


def edit_meta(folder, edit):
    meta = json.loads((folder / "deft6g_config.json").read_text())
    edit(meta)
    (folder / "deft6g_config.json").write_text(json.dumps(meta))


def load(folder):
    return PeftModel.from_pretrained(build_fomo("bert")[0], folder)


@pytest.mark.parametrize("name", ["lora", "prompt", "adapter"])
def test_valid_folders_still_round_trip(saved, name):
    """The checks refuse nothing save_pretrained writes: the reloaded model gives the same outputs."""
    folder, want = saved[0][name]
    again = load(folder)
    got = again(saved[1])
    np.testing.assert_allclose(got.numpy() if again.head is not None else got.pooled.numpy(), want, atol=1e-5)


def test_missing_num_labels(saved, tmp_path):
    folder = copy_of(saved, "lora", tmp_path)
    edit_meta(folder, lambda m: m.pop("num_labels"))
    with pytest.raises(ValueError, match=r"deft6g_config\.json: key 'num_labels'"):
        load(folder)


@pytest.mark.parametrize("num_labels", [LABELS + 2, 2 ** 40])
def test_head_shape_must_fit_num_labels_before_the_head_is_built(saved, tmp_path, num_labels):
    """A head of 2^40 labels x 64 would be 256 TiB: refused from the file's header, never allocated."""
    folder = copy_of(saved, "lora", tmp_path)
    edit_meta(folder, lambda m: m.update(num_labels=num_labels))
    with pytest.raises(ValueError, match=r"head\.safetensors: key 'classifier\.(bias|weight)'.*num_labels"):
        load(folder)


def test_head_of_another_hidden_size(saved, tmp_path):
    folder = copy_of(saved, "lora", tmp_path)
    head = load_file(str(folder / "head.safetensors"))
    head["classifier.weight"] = np.zeros((LABELS, H + 1), np.float32)
    save_file(head, str(folder / "head.safetensors"))
    with pytest.raises(ValueError, match=r"head\.safetensors: key 'classifier\.weight' has shape \(3, 65\)"):
        load(folder)


@pytest.mark.parametrize("file, pick", [("adapter_model.safetensors", 0), ("head.safetensors", 1)])
def test_non_finite_weights_are_refused(saved, tmp_path, file, pick):
    folder = copy_of(saved, "lora", tmp_path)
    arrays = load_file(str(folder / file))
    key = sorted(arrays)[pick]
    arrays[key] = arrays[key].copy()
    arrays[key].flat[1] = np.nan
    save_file(arrays, str(folder / file))
    with pytest.raises(ValueError, match=rf"{file.replace('.', '[.]')}: .*{key.replace('.', '[.]')}.*non-finite"):
        load(folder)


@pytest.mark.parametrize("edit, block", [
    (lambda m: m["peft_config"].update(num_virtual_tokens=10 ** 9), 0),           # 10^9 x 64 floats: 256 GB
    (lambda m: m["peft_config"].update(tokens_pattern={"2": 10 ** 9}), 2),
])
def test_prompt_lengths_must_match_the_saved_prompts_before_allocation(saved, tmp_path, edit, block):
    folder = copy_of(saved, "prompt", tmp_path)
    edit_meta(folder, edit)
    with pytest.raises(ValueError, match=rf"adapter_model\.safetensors: key 'prompt_embeddings\.{block}'"):
        load(folder)


def test_layers_to_transform_as_a_string_is_refused(saved, tmp_path):
    """"12" used to become blocks [1, 2]."""
    folder = copy_of(saved, "adapter", tmp_path)
    edit_meta(folder, lambda m: m["peft_config"].update(layers_to_transform="13"))
    with pytest.raises(ValueError, match=r"deft6g_config\.json: key 'peft_config'.*layers_to_transform"):
        load(folder)


@pytest.mark.parametrize("text, key", [("[1, 2]", "peft_config"), ('{"num_labels": 3}', "peft_config"),
                                       ('{"peft_config": {"peft_type": "LORA", "rank": 4}, "num_labels": 3}',
                                        "peft_config"),
                                       ('{"peft_config": {"peft_type": "LORA"}, "num_labels": "3"}', "num_labels"),
                                       ('{"peft_config": {"peft_type": "LORA"}, "num_labels": 1}', "num_labels")])
def test_malformed_config_files(saved, tmp_path, text, key):
    folder = copy_of(saved, "lora", tmp_path)
    (folder / "deft6g_config.json").write_text(text)
    with pytest.raises(ValueError, match=rf"deft6g_config\.json: key '{key}'"):
        load(folder)


def test_direct_head_load_names_a_missing_key():
    peft = get_peft_model(build_fomo("bert")[0], LoraConfig(r=2), num_labels=LABELS)
    with pytest.raises(ValueError, match="classifier.bias"):
        peft.load_head_state({"classifier.weight": np.zeros((LABELS, H), np.float32)})
