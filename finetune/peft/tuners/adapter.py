"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021) after chosen dense projections."""

from dataclasses import dataclass, field

import tensorflow as tf
import tf_keras as keras

from ..architecture import projection_shape
from .base import PeftConfig, WrapperTuner, register_peft_method

ADAPTER_PLACEMENTS = ("houlsby", "pfeiffer")
ADAPTER_TARGETS = {  # block-relative module names per architecture and placement
    "bert": {"houlsby": ["attention.output.dense", "output.dense"], "pfeiffer": ["output.dense"]},
    "vit": {"houlsby": ["attention.output.dense", "output.dense"], "pfeiffer": ["output.dense"]},
    "gpt2": {"houlsby": ["attn.c_proj", "mlp.c_proj"], "pfeiffer": ["mlp.c_proj"]},
}


@dataclass
class AdapterConfig(PeftConfig):
    """Bottleneck adapters h + W_up act(W_down h) after the attention and FFN outputs ("houlsby") or after
    the FFN output only ("pfeiffer"), before the residual add and LayerNorm; `width_pattern` {block: w_i}."""
    width: int = 16
    placement: str = "houlsby"
    width_pattern: dict = field(default_factory=dict)
    peft_type = "BOTTLENECK_ADAPTER"
    size_field, pattern_field = "width", "width_pattern"

    def __post_init__(self):
        super().__post_init__()
        if self.placement not in ADAPTER_PLACEMENTS:
            raise ValueError(f"`placement` must be one of {ADAPTER_PLACEMENTS}, got {self.placement!r}")


class AdapterLayer(keras.layers.Layer):
    """y = h + W_up gelu(W_down h + b_down) + b_up with h = base(x); W_up = 0 at init (identity)."""

    def __init__(self, base, width, module="", seed=0, **kwargs):
        super().__init__(name=f"adapter_{base.name}", **kwargs)
        self.base, self.width, self.module = base, int(width), module
        _, n_out = projection_shape(base)
        if not 1 <= width <= n_out:
            raise ValueError(f"adapter `width` for {module!r} must be in [1, {n_out}], got {width}")
        self.down = self.add_weight(name="down", shape=(n_out, width), trainable=True,
                                    initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=seed))
        self.down_bias = self.add_weight(name="down_bias", shape=(width,), initializer="zeros", trainable=True)
        self.up = self.add_weight(name="up", shape=(width, n_out), initializer="zeros", trainable=True)
        self.up_bias = self.add_weight(name="up_bias", shape=(n_out,), initializer="zeros", trainable=True)

    def reset_parameters(self, seed):
        """Draw W_down afresh (as at construction, with `seed`); the rest back to 0 (identity adapter)."""
        self.down.assign(keras.initializers.TruncatedNormal(stddev=0.02, seed=seed)(self.down.shape))
        for v in (self.down_bias, self.up, self.up_bias):
            v.assign(tf.zeros_like(v))

    def call(self, inputs, training=None):
        h = self.base(inputs)
        z = tf.nn.gelu(tf.tensordot(h, self.down, 1) + self.down_bias)
        return h + tf.tensordot(z, self.up, 1) + self.up_bias

    @property
    def peft_variables(self):
        """The adapter's own trainable weights (not the wrapped projection's)."""
        return [self.down, self.down_bias, self.up, self.up_bias]

    def peft_weights(self):
        return {f"{self.module}.adapter.down.weight": tf.transpose(self.down),
                f"{self.module}.adapter.down.bias": self.down_bias,
                f"{self.module}.adapter.up.weight": tf.transpose(self.up),
                f"{self.module}.adapter.up.bias": self.up_bias}

    def assign_peft_weights(self, weights):
        self.down.assign(tf.transpose(weights[f"{self.module}.adapter.down.weight"]))
        self.down_bias.assign(weights[f"{self.module}.adapter.down.bias"])
        self.up.assign(tf.transpose(weights[f"{self.module}.adapter.up.weight"]))
        self.up_bias.assign(weights[f"{self.module}.adapter.up.bias"])


class AdapterTuner(WrapperTuner):
    """Wraps the attention-output and/or FFN-output projection of every block with PEFT in an `AdapterLayer`."""

    def __init__(self, model, config, seed):
        if model.kind not in ADAPTER_TARGETS:
            raise ValueError(f"adapters are not defined for {model.kind!r}; use LoRA or BitFit")
        super().__init__(model, config, seed)

    def targets(self, name, relative):
        return [t for t in ADAPTER_TARGETS[self.model.kind][self.config.placement] if relative == t]

    def wrap(self, layer, size, name, seed):
        return AdapterLayer(layer, size, name, seed)

    @classmethod
    def params_per_block(cls, config, dims, projections, block, size):
        places = 2 if config.placement == "houlsby" else 1
        return places * (2 * dims.hidden * size + size + dims.hidden)


register_peft_method(AdapterConfig, AdapterTuner)
