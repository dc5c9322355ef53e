"""PEFT Keras layers that wrap a frozen projection of an HF TF model: LoRA and bottleneck adapters."""

import math

import tensorflow as tf
import tf_keras as keras


def projection_shape(base):
    """(in, out) of a Dense (kernel [in, out]) or an HF TFConv1D (weight [in, out])."""
    w = getattr(base, "kernel", None)
    if w is None:
        w = getattr(base, "weight", None)
    if w is None or len(w.shape) != 2:
        raise TypeError(f"layer {base.name!r} is not a dense projection (no 2-D kernel/weight)")
    return int(w.shape[0]), int(w.shape[1])


def projection_kernel(base):
    return base.kernel if hasattr(base, "kernel") else base.weight


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
        bound = 1.0 / math.sqrt(n_in)   # kaiming_uniform(a=sqrt(5)) on a [r, in] matrix, as in HF peft
        self.lora_A = self.add_weight(
            name="lora_A", shape=(n_in, r), trainable=True,
            initializer=keras.initializers.RandomUniform(-bound, bound, seed=seed))
        self.lora_B = self.add_weight(name="lora_B", shape=(r, n_out), initializer="zeros", trainable=True)
        self.dropout = keras.layers.Dropout(dropout)

    def reset_parameters(self, seed):
        """Draw A afresh (as at construction, with `seed`) and set B = 0."""
        bound = 1.0 / math.sqrt(self.lora_A.shape[0])
        self.lora_A.assign(keras.initializers.RandomUniform(-bound, bound, seed=seed)(self.lora_A.shape))
        self.lora_B.assign(tf.zeros_like(self.lora_B))

    def call(self, inputs, training=None):
        x = self.dropout(inputs, training=training)
        delta = tf.tensordot(tf.tensordot(x, self.lora_A, 1), self.lora_B, 1)     # (x A) B: r-wide middle
        return self.base(inputs) + self.scale * delta

    def merge(self):
        kernel = projection_kernel(self.base)
        kernel.assign_add(self.scale * tf.matmul(self.lora_A, self.lora_B))
        return self.base

    def peft_weights(self):
        """HF peft names and layouts: lora_A.weight [r, in], lora_B.weight [out, r]."""
        return {f"{self.module}.lora_A.weight": tf.transpose(self.lora_A),
                f"{self.module}.lora_B.weight": tf.transpose(self.lora_B)}

    def assign_peft_weights(self, weights):
        self.lora_A.assign(tf.transpose(weights[f"{self.module}.lora_A.weight"]))
        self.lora_B.assign(tf.transpose(weights[f"{self.module}.lora_B.weight"]))


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


def freeze_all_but(model, keep):
    """Make every weight of `model` non-trainable except the variables in `keep` (a list of tf.Variables).

    Works weight by weight (Keras' `trainable` flag is per layer), so a layer can keep its bias trainable
    and freeze its kernel (BitFit) and a wrapper can train while the layer it wraps stays frozen.
    """
    keep_ids = {id(v) for v in keep}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        layer.trainable = True
        own = layer._trainable_weights + layer._non_trainable_weights
        # object.__setattr__: Keras' own __setattr__ would re-append every trainable tf.Variable it sees
        object.__setattr__(layer, "_trainable_weights", [v for v in own if id(v) in keep_ids])
        object.__setattr__(layer, "_non_trainable_weights", [v for v in own if id(v) not in keep_ids])
