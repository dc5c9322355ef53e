"""Saving a PeftModel: its PEFT weights and head as HF peft does (adapter_model.safetensors, adapter_config.json
for LoRA), reloading them, and merging LoRA into the base model."""

import json
from pathlib import Path

import numpy as np


class PeftSaving:
    """Mixin of `PeftModel`: needs `tuner`, `head`, `peft_config`, `kind` and the class's constructor."""

    def peft_state(self):
        """{peft key: np.ndarray} of the PEFT weights, keys and layouts as HF peft (LoRA) where it has them."""
        return self.tuner.state()

    def load_peft_state(self, state):
        """Assign PEFT weights from `peft_state()`-style arrays; missing or extra keys, other shapes and
        non-finite values are a ValueError naming the key."""
        self.tuner.load_state(_checked(state, self.peft_state(), "PEFT"))

    def head_state(self):
        """{"classifier.weight": [labels, hidden], "classifier.bias": [labels]} (empty without a head)."""
        if self.head is None:
            return {}
        return {"classifier.weight": self.head.kernel.numpy().T, "classifier.bias": self.head.bias.numpy()}

    def load_head_state(self, state):
        """Assign the head from `head_state()`-style arrays (checked as in `load_peft_state`)."""
        state = _checked(state, self.head_state(), "head")
        self.head.kernel.assign(np.asarray(state["classifier.weight"]).T)
        self.head.bias.assign(state["classifier.bias"])

    def save_pretrained(self, save_directory, base_model_name_or_path=None):
        """Write only the PEFT weights: adapter_model.safetensors (+ head.safetensors), adapter_config.json
        in HF peft's format for LoRA, deft6g_config.json for reloading here."""
        from safetensors.numpy import save_file
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in self.peft_state().items()}, str(out / "adapter_model.safetensors"))
        if self.head is not None:
            save_file({k: np.ascontiguousarray(v) for k, v in self.head_state().items()}, str(out / "head.safetensors"))
        meta = {"peft_config": self.peft_config.to_dict(), "num_labels": self.head.units if self.head else None,
                "architecture": self.kind}
        (out / "deft6g_config.json").write_text(json.dumps(meta, indent=2))
        self.tuner.export(out, base_model_name_or_path)
        return out

    @classmethod
    def from_pretrained(cls, model, directory):
        """Rebuild a PeftModel on the base `model` from a `save_pretrained` folder. Every file is checked
        before a weight is allocated: deft6g_config.json holds `peft_config` (a config dict) and `num_labels`
        (null or an int >= 2); head.safetensors holds classifier.weight [num_labels, hidden] and
        classifier.bias [num_labels]; adapter_model.safetensors the weights the config asks for; all finite.
        A missing file raises FileNotFoundError, anything else a ValueError naming the file and the key."""
        from .architecture import hidden_size, transformer_blocks
        from .tuners import config_from_dict, tuner_class
        d = Path(directory)
        meta_path, peft_path, head_path = d / "deft6g_config.json", d / "adapter_model.safetensors", d / "head.safetensors"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{d} has no deft6g_config.json (not written by save_pretrained)")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta_path}: not JSON ({err})") from None
        _require(meta_path, "peft_config", isinstance(meta, dict) and isinstance(meta.get("peft_config"), dict),
                 "must be present and hold the config dict that save_pretrained writes")
        num_labels = meta.get("num_labels", "<missing>")
        _require(meta_path, "num_labels", num_labels is None or (type(num_labels) is int and num_labels >= 2),
                 f"must be present and null (no head) or an int >= 2, got {num_labels!r}")
        try:
            config = config_from_dict(meta["peft_config"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{meta_path}: key 'peft_config': {err}") from err
        shapes = _saved_shapes(peft_path)
        try:
            tuner_class(config).check_saved_shapes(config, len(transformer_blocks(model)), shapes)
        except ValueError as err:
            raise ValueError(f"{peft_path}: {err} (the 'peft_config' of {meta_path.name})") from err
        if num_labels is not None:
            want = {"classifier.weight": (num_labels, hidden_size(model)), "classifier.bias": (num_labels,)}
            have = _saved_shapes(head_path)
            for key in sorted(set(want) | set(have)):
                _require(head_path, key, have.get(key) == want.get(key),
                         f"has shape {have.get(key, 'none (missing)')}, expected {want.get(key, 'no such key')} "
                         f"(num_labels = {num_labels} in {meta_path.name}, hidden size {hidden_size(model)})")
        peft = cls(model, config, num_labels)
        _assign(peft.load_peft_state, peft_path)
        if num_labels is not None:
            _assign(peft.load_head_state, head_path)
        return peft

    def merge_and_unload(self):
        """Fold every LoRA update into its base kernel and put the base layers back; returns the base model."""
        self.tuner.merge()
        return self.base


def _require(path, key, ok, message):
    if not ok:
        raise ValueError(f"{path}: key {key!r} {message}")


def _saved_shapes(path):
    """{key: shape tuple} of the safetensors file `path`, read from its header (no array is loaded)."""
    from safetensors import SafetensorError, safe_open
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing (not written by save_pretrained)")
    try:
        with safe_open(str(path), framework="np") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except SafetensorError as err:
        raise ValueError(f"{path}: not a safetensors file ({err})") from None


def _assign(load, path):
    """load(the arrays of the safetensors file `path`), a ValueError naming the file."""
    from safetensors.numpy import load_file
    try:
        load(load_file(str(path)))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _checked(state, mine, what):
    """`state` after checking it against the model's own {key: array} `mine`: the same keys and shapes,
    finite values (`what` names the weights in errors)."""
    if set(state) != set(mine):
        raise ValueError(f"{what} state keys differ: missing {sorted(set(mine) - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - set(mine))[:3]}")
    for k, v in state.items():
        if tuple(np.shape(v)) != mine[k].shape:
            raise ValueError(f"{what} weight {k!r} has shape {np.shape(v)}, expected {mine[k].shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{what} weight {k!r} holds non-finite values (NaN or inf)")
    return state
