"""LoRA (Hu et al. 2022): W x + (alpha / r) B A x on chosen dense projections, in HF peft's names and layouts."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from ..architecture import projection_kernel, projection_shape
from .base import PeftConfig, WrapperTuner, register_peft_method

# block-relative module names of the cost model's projection roles (BERT naming)
_ROLE_MODULES = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value"}


@dataclass
class LoraConfig(PeftConfig):
    """LoRA on the `target_modules` (module-name suffixes, as in HF peft: BERT "query", "key", "value",
    "attention.output.dense", "intermediate.dense", "output.dense", or "dense" for all three).
    `rank_pattern` sets ranks: {block: r_i} for a whole block (0: no LoRA there) and, as in HF peft,
    {module-name regex: r} for the modules whose names end with a match, e.g. {"3.attention.self.query": 16}."""
    r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["query", "value"])
    rank_pattern: dict = field(default_factory=dict)
    peft_type = "LORA"
    size_field, pattern_field, module_keys = "r", "rank_pattern", True

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ValueError("`target_modules` must name at least one module")

    def targets(self, name):
        """The `target_modules` that select the module called `name`."""
        return [t for t in self.target_modules if name == t or name.endswith("." + t)]


class LoraLayer(keras.layers.Layer):
    r"""y = base(x) + (alpha / r) dropout(x) A B, with A [in, r] (Kaiming-uniform, as peft) and B [r, out] = 0.

    `module` is the PyTorch-style module name of `base` (e.g. "encoder.layer.0.attention.self.query"),
    used for saving and HF peft export. `merge()` folds A B into the base kernel and returns `base`.
    """

    def __init__(self, base, r, alpha, dropout=0.0, module="", seed=0, **kwargs):
        super().__init__(name=f"lora_{base.name}", **kwargs)
        self.base, self.r, self.scale, self.module = base, int(r), float(alpha) / int(r), module
        n_in, n_out = projection_shape(base)
        if not 1 <= r <= min(n_in, n_out):
            raise ValueError(f"LoRA rank `r` for {module!r} must be in [1, {min(n_in, n_out)}], got {r}")
        self.lora_A = self.add_weight(name="lora_A", shape=(n_in, r), trainable=True,
                                      initializer=self._a_initializer(n_in, seed))
        self.lora_B = self.add_weight(name="lora_B", shape=(r, n_out), initializer="zeros", trainable=True)
        self.dropout = keras.layers.Dropout(dropout)

    @staticmethod
    def _a_initializer(n_in, seed):
        bound = 1.0 / math.sqrt(n_in)   # kaiming_uniform(a=sqrt(5)) on a [r, in] matrix, as in HF peft
        return keras.initializers.RandomUniform(-bound, bound, seed=seed)

    def reset_parameters(self, seed):
        """Draw A afresh (as at construction, with `seed`) and set B = 0."""
        self.lora_A.assign(self._a_initializer(self.lora_A.shape[0], seed)(self.lora_A.shape))
        self.lora_B.assign(tf.zeros_like(self.lora_B))

    def call(self, inputs, training=None):
        x = self.dropout(inputs, training=training)
        delta = tf.tensordot(tf.tensordot(x, self.lora_A, 1), self.lora_B, 1)     # (x A) B: r-wide middle
        return self.base(inputs) + self.scale * delta

    def merge(self):
        projection_kernel(self.base).assign_add(self.scale * tf.matmul(self.lora_A, self.lora_B))
        return self.base

    @property
    def peft_variables(self):
        """[lora_A, lora_B]: the layer's own trainable weights (not the wrapped projection's)."""
        return [self.lora_A, self.lora_B]

    def peft_weights(self):
        """HF peft names and layouts: lora_A.weight [r, in], lora_B.weight [out, r]."""
        return {f"{self.module}.lora_A.weight": tf.transpose(self.lora_A),
                f"{self.module}.lora_B.weight": tf.transpose(self.lora_B)}

    def assign_peft_weights(self, weights):
        self.lora_A.assign(tf.transpose(weights[f"{self.module}.lora_A.weight"]))
        self.lora_B.assign(tf.transpose(weights[f"{self.module}.lora_B.weight"]))


class LoraTuner(WrapperTuner):
    """Wraps every projection named by `target_modules` in a block with PEFT in a `LoraLayer`."""

    def targets(self, name, relative):
        return self.config.targets(name)

    def wrap(self, layer, size, name, seed):
        return LoraLayer(layer, size, self.config.lora_alpha, self.config.lora_dropout, name, seed)

    def check_targets(self, matched):
        missing = set(self.config.target_modules) - set(matched)
        if missing:
            example = self.wrappers[0].layer.module if self.wrappers else "encoder.layer.0.attention.self.query"
            raise ValueError(f"`target_modules` {sorted(missing)} match no module of this {self.model.kind} model "
                             f"(e.g. {example!r})")

    def merge(self):
        for w in self.wrappers:
            w.install(w.layer.merge())
        self.wrappers = []

    def export(self, directory, base_model_name_or_path):
        cfg = self.config
        hf = {"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION",
              "base_model_name_or_path": base_model_name_or_path, "r": cfg.r, "lora_alpha": cfg.lora_alpha,
              "lora_dropout": cfg.lora_dropout, "target_modules": [w.layer.module for w in self.wrappers],
              "rank_pattern": {w.layer.module: w.layer.r for w in self.wrappers if w.layer.r != cfg.r},
              "alpha_pattern": {}, "bias": "none", "fan_in_fan_out": self.model.kind == "gpt2",
              "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
              "layers_to_transform": None, "layers_pattern": None, "use_rslora": False, "use_dora": False}
        (Path(directory) / "adapter_config.json").write_text(json.dumps(hf, indent=2))

    @classmethod
    def params_per_block(cls, config, dims, projections, block, size):
        total = 0
        for role, (n_in, n_out) in projections.items():
            plain = role.removeprefix("cross.")
            name = f"encoder.layer.{block}.{_ROLE_MODULES.get(plain, plain)}"       # as the model names it
            if config.targets(name):
                r = config.module_override(name)
                total += (size if r is None else r) * (n_in + n_out)
        return total


register_peft_method(LoraConfig, LoraTuner)
