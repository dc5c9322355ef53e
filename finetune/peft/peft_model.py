"""`get_peft_model`: a frozen HF TF model + one PEFT method's weights + an optional new classification head,
with HF peft's API.

The method is a registered tuner (`deft6g.finetune.peft.tuners`); running the model block by block lives in
`block_runner.py` (bert, vit: deep prompts, split models, activation caching; gpt2 and t5's encoder run
through the HF call and take LoRA and BitFit, gpt2 also adapters); saving, reloading and merging in
`peft_saving.py`.
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras
from transformers.utils import ModelOutput

from .architecture import BLOCKWISE, architecture_of, hidden_size, transformer_blocks
from .block_runner import BlockRunner
from .peft_saving import PeftSaving
from .tuners import tuner_class


@dataclass
class PeftModelOutput(ModelOutput):
    """What a PeftModel without a head returns.

    last_hidden_state : [B, T', H], float32 -- the last block's output (T' = prompt tokens + T; vit: after
        the final LayerNorm), as the base model's `last_hidden_state`.
    attention_mask : [B, T'], float32 -- 1 for real tokens and prompts, 0 for padding.
    pooled : [B, H], float32 -- mean over the real tokens (prompts excluded): the features a head reads.
    """
    last_hidden_state: tf.Tensor = None
    attention_mask: tf.Tensor = None
    pooled: tf.Tensor = None


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


class PeftModel(BlockRunner, PeftSaving, keras.Model):
    """A frozen FoMo with PEFT weights and an optional new head; build it with `get_peft_model`.

    Call it as HF models are called: `model(input_ids=..., attention_mask=...)` (int [B, T]),
    `model(pixel_values=...)` ([B, H, W] or [B, C, H, W], vit), or with one dict / pixel array. With a head
    it returns logits [B, num_labels]; without one a `PeftModelOutput` (last_hidden_state, attention_mask,
    pooled). Only the PEFT weights and the head are trainable.

    Attributes: `tuner` (the PEFT method applied to this model), `wrappers` ([WrappedModule] of LoRA and
    adapter layers), `prompts` ({block: variable [n, H]}), `sizes` (PEFT size per block), `blocks`.
    """

    def __init__(self, base, peft_config, num_labels=None, seed=0):
        super().__init__(name="peft_model")
        tuner = tuner_class(peft_config)
        self.base, self.peft_config, self.kind = base, peft_config, architecture_of(base)
        self.blocks = transformer_blocks(base)
        self.num_blocks = len(self.blocks)
        self.sizes = peft_config.sizes(self.num_blocks)
        self.hidden = hidden_size(base)
        self.tuner = tuner(self, peft_config, seed)
        self.head = None
        if num_labels is not None:
            if num_labels < 2:
                raise ValueError(f"`num_labels` must be >= 2, got {num_labels}")
            self.head = keras.layers.Dense(num_labels, name="classifier",
                                           kernel_initializer=keras.initializers.TruncatedNormal(0.02, seed=seed))
            self.head.build((None, self.hidden))
        freeze_all_but(self, self.peft_variables + (self.head.trainable_weights if self.head else []))

    @property
    def wrappers(self):
        """[WrappedModule] of the LoRA / adapter layers that replaced projections (empty for other methods)."""
        return self.tuner.wrappers

    @property
    def prompts(self):
        """{block: tf.Variable [n, hidden]} of the soft prompts (empty for other methods)."""
        return self.tuner.prompts

    def reset_parameters(self, seed):
        """Re-initialise every PEFT weight and the head as a new model built with `seed` would be (LoRA A,
        adapter down-projections, random prompts and the head drawn afresh; LoRA B, adapter up-projections
        and biases zero; BitFit biases back to the pretrained values). Prompts are drawn with `seed` as a
        `PromptTuningConfig(seed=seed)` would draw them (vocabulary rows or N(0, 0.02^2))."""
        self.tuner.reset_parameters(seed)
        if self.head is not None:
            self.head.kernel.assign(keras.initializers.TruncatedNormal(0.02, seed=seed)(self.head.kernel.shape))
            self.head.bias.assign(tf.zeros_like(self.head.bias))

    # --- parameters ---------------------------------------------------------------------------------------
    def peft_variables_by_block(self):
        """[(block index, variable)] of every PEFT variable (not the head), in a fixed order."""
        return self.tuner.variables_by_block()

    @property
    def peft_variables(self):
        """PEFT variables (not the head), in a fixed order."""
        return [v for _, v in self.peft_variables_by_block()]

    def get_nb_trainable_parameters(self):
        """(trainable, total) parameter counts (head included; total counts the frozen base too)."""
        trainable = sum(int(np.prod(v.shape)) for v in self.trainable_variables)
        return trainable, trainable + sum(int(np.prod(v.shape)) for v in self.non_trainable_variables)

    def print_trainable_parameters(self):
        t, n = self.get_nb_trainable_parameters()
        print(f"trainable params: {t:,d} || all params: {n:,d} || trainable%: {100 * t / n:.4f}")

    def lowest_tuned_block(self):
        """Index of the lowest block holding PEFT weights (num_blocks when only the head trains)."""
        return min([block for block, _ in self.peft_variables_by_block()] or [self.num_blocks])

    # --- forward ------------------------------------------------------------------------------------------
    def __call__(self, inputs=None, *args, input_ids=None, attention_mask=None, pixel_values=None, **kwargs):
        keywords = [k for k, v in (("input_ids", input_ids), ("attention_mask", attention_mask),
                                   ("pixel_values", pixel_values)) if v is not None]
        if inputs is not None and keywords:
            raise ValueError(f"pass the inputs either as one dict/array or as keywords, got both (and {keywords})")
        if inputs is None:
            if pixel_values is not None:
                inputs = pixel_values
            elif input_ids is not None:
                mask = tf.ones_like(input_ids) if attention_mask is None else attention_mask
                inputs = {"input_ids": input_ids, "attention_mask": mask}
            else:
                raise ValueError("call a PeftModel with `input_ids` (and `attention_mask`), `pixel_values`, "
                                 "or one dict / array of inputs")
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=False):
        if self.kind in BLOCKWISE:
            h, mask = self.run_blocks(*self.embed(inputs, training), 0, training=training)
        else:
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            encoder = self.base.get_encoder() if self.kind == "t5" else self.base
            h = encoder(input_ids=ids, attention_mask=mask, training=training).last_hidden_state
            mask = tf.cast(mask, h.dtype)
        pooled = self.pooled(h, mask)
        if self.head is not None:
            return self.head(pooled)
        last = self.base.vit.layernorm(h) if self.kind == "vit" else h
        return PeftModelOutput(last_hidden_state=last, attention_mask=mask, pooled=pooled)


def get_peft_model(model, peft_config, num_labels=None, seed=0):
    """Wrap an HF TF model with PEFT (see `PeftModel`); the base weights are frozen."""
    return PeftModel(model, peft_config, num_labels, seed)
