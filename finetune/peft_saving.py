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
        """Assign PEFT weights from `peft_state()`-style arrays; missing or extra keys are an error."""
        mine = self.peft_state()
        if set(state) != set(mine):
            raise ValueError(f"PEFT state keys differ: missing {sorted(set(mine) - set(state))[:3]}, "
                             f"unexpected {sorted(set(state) - set(mine))[:3]}")
        for k, v in state.items():
            if tuple(np.shape(v)) != mine[k].shape:
                raise ValueError(f"PEFT weight {k!r} has shape {np.shape(v)}, expected {mine[k].shape}")
        self.tuner.load_state(state)

    def head_state(self):
        """{"classifier.weight": [labels, hidden], "classifier.bias": [labels]} (empty without a head)."""
        if self.head is None:
            return {}
        return {"classifier.weight": self.head.kernel.numpy().T, "classifier.bias": self.head.bias.numpy()}

    def load_head_state(self, state):
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
        """Rebuild a PeftModel on the base `model` from a `save_pretrained` folder."""
        from safetensors.numpy import load_file

        from .tuners import config_from_dict
        d = Path(directory)
        if not (d / "deft6g_config.json").is_file():
            raise FileNotFoundError(f"{d} has no deft6g_config.json (not written by save_pretrained)")
        meta = json.loads((d / "deft6g_config.json").read_text())
        peft = cls(model, config_from_dict(meta["peft_config"]), meta["num_labels"])
        peft.load_peft_state(load_file(str(d / "adapter_model.safetensors")))
        if peft.head is not None:
            peft.load_head_state(load_file(str(d / "head.safetensors")))
        return peft

    def merge_and_unload(self):
        """Fold every LoRA update into its base kernel and put the base layers back; returns the base model."""
        self.tuner.merge()
        return self.base
