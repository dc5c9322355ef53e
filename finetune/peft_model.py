"""`get_peft_model`: a frozen HF TF model + PEFT weights + a new classification head, with HF peft's API.

BERT-like encoders (bert, vit) run block by block here, which gives deep prompts and activation caching
(`embed` -> `run_blocks(start, stop)` -> `head_from`); gpt2 and t5 (encoder read-out) run through the HF
call and take LoRA, adapters and BitFit.
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from transformers.modeling_tf_pytorch_utils import convert_tf_weight_name_to_pt_weight_name

from .config import AdapterConfig, BitFitConfig, LoraConfig, PromptTuningConfig, config_from_dict
from .layers import AdapterLayer, LoraLayer, freeze_all_but, projection_kernel

BLOCKWISE = ("bert", "vit")
ADAPTER_TARGETS = {  # block-relative module names per placement
    "bert": {"houlsby": ["attention.output.dense", "output.dense"], "pfeiffer": ["output.dense"]},
    "vit": {"houlsby": ["attention.output.dense", "output.dense"], "pfeiffer": ["output.dense"]},
    "gpt2": {"houlsby": ["attn.c_proj", "mlp.c_proj"], "pfeiffer": ["mlp.c_proj"]},
}
PEFT_PREFIX = "base_model.model."


def architecture_of(model):
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in ("bert", "vit", "gpt2", "t5"):
        raise TypeError(f"`model` must be an HF TF bert, vit, gpt2 or t5 model, got {type(model).__name__}")
    return kind


def transformer_blocks(model):
    """The model's transformer blocks in order (T5: encoder blocks, then decoder blocks)."""
    kind = architecture_of(model)
    if kind == "bert":
        return list(model.bert.encoder.layer)
    if kind == "vit":
        return list(model.vit.encoder.layer)
    if kind == "gpt2":
        return list(model.transformer.h)
    blocks = list(model.encoder.block)
    return blocks + (list(model.decoder.block) if hasattr(model, "decoder") else [])


def module_name(model, variable):
    """PyTorch-style module name of a variable's layer, e.g. 'encoder.layer.0.attention.self.query'."""
    return pt_name(model, variable).rsplit(".", 1)[0]


def pt_name(model, variable):
    """PyTorch state-dict name of a variable of an HF TF model (main-layer prefix removed)."""
    name, _ = convert_tf_weight_name_to_pt_weight_name(variable.name, tf_weight_shape=variable.shape)
    prefix = getattr(model, "base_model_prefix", "") + "."
    return name[len(prefix):] if name.startswith(prefix) else name


def _projections(layer, seen=None):
    """Yield (parent, attribute, index, sublayer) for every dense projection below `layer`."""
    seen = set() if seen is None else seen
    for attr, value in list(vars(layer).items()):
        if attr.startswith("_"):
            continue
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for idx, sub in items:
            if not isinstance(sub, keras.layers.Layer) or id(sub) in seen:
                continue
            seen.add(id(sub))
            w = getattr(sub, "kernel", None) if type(sub).__name__ != "TFConv1D" else sub.weight
            if w is not None and len(w.shape) == 2:
                yield layer, attr, idx, sub
            else:
                yield from _projections(sub, seen)


def _replace(parent, attr, idx, new):
    if idx is None:
        setattr(parent, attr, new)
    else:
        getattr(parent, attr)[idx] = new


class PeftModel(keras.Model):
    """A frozen FoMo with PEFT weights and an optional new head; build it with `get_peft_model`.

    Call: inputs -> logits [B, num_labels] (features [B, hidden] when num_labels is None). Inputs: a dict
    with input_ids, attention_mask (int [B, T]) for text models; pixel_values [B, H, W] or [B, C, H, W]
    for vit. Only the PEFT weights and the head are trainable.
    """

    def __init__(self, base, peft_config, num_labels=None, seed=0):
        super().__init__(name="peft_model")
        self.base, self.peft_config, self.kind = base, peft_config, architecture_of(base)
        self.blocks = transformer_blocks(base)
        self.num_blocks = len(self.blocks)
        self.sizes = peft_config.sizes(self.num_blocks)
        self.hidden = int(base.config.to_dict().get("hidden_size") or base.config.to_dict().get("d_model")
                          or base.config.n_embd)
        self.wrappers, self.prompts, self.bitfit = [], {}, []
        if isinstance(peft_config, (LoraConfig, AdapterConfig)):
            self._wrap(peft_config, seed)
        elif isinstance(peft_config, PromptTuningConfig):
            self._add_prompts(peft_config)
        elif isinstance(peft_config, BitFitConfig):
            self.bitfit = [(i, v) for i, blk in enumerate(self.blocks) if self.sizes[i]
                           for v in blk.weights if v.name.endswith(("bias:0", "beta:0"))]
            if not self.bitfit:
                raise ValueError(f"BitFit needs bias terms; this {self.kind} model's tuned blocks have none")
        else:
            raise TypeError(f"`peft_config` must be a LoraConfig, AdapterConfig, PromptTuningConfig or "
                            f"BitFitConfig, got {type(peft_config).__name__}")
        self.head = None
        if num_labels is not None:
            if num_labels < 2:
                raise ValueError(f"`num_labels` must be >= 2, got {num_labels}")
            self.head = keras.layers.Dense(num_labels, name="classifier",
                                           kernel_initializer=keras.initializers.TruncatedNormal(0.02, seed=seed))
            self.head.build((None, self.hidden))
        freeze_all_but(self, self.peft_variables + (self.head.trainable_weights if self.head else []))
        self._bitfit_init = [v.numpy() for _, v in self.bitfit]

    def reset_parameters(self, seed):
        """Re-initialise every PEFT weight and the head as a new model built with `seed` would be (LoRA A,
        adapter down-projections, random prompts and the head drawn afresh; LoRA B, adapter up-projections
        and biases zero; BitFit biases back to the pretrained values). Vocabulary-initialised prompts are
        drawn from the embedding table with `seed`."""
        for j, (*_, layer, _) in enumerate(self.wrappers):
            layer.reset_parameters(seed + j)
        if self.prompts:
            rng = np.random.default_rng(seed)
            for i, p in self.prompts.items():
                p.assign(self._draw_prompt(p.shape[0], rng))
        for (_, v), init in zip(self.bitfit, self._bitfit_init):
            v.assign(init)
        if self.head is not None:
            self.head.kernel.assign(keras.initializers.TruncatedNormal(0.02, seed=seed)(self.head.kernel.shape))
            self.head.bias.assign(tf.zeros_like(self.head.bias))

    # --- construction -----------------------------------------------------------------------------------
    def _wrap(self, cfg, seed):
        if isinstance(cfg, AdapterConfig) and self.kind not in ADAPTER_TARGETS:
            raise ValueError(f"adapters are not defined for {self.kind!r}; use LoRA or BitFit")
        matched = set()
        for i, blk in enumerate(self.blocks):
            for parent, attr, idx, layer in list(_projections(blk)):
                name = module_name(self.base, projection_kernel(layer))
                rel = name.split(f".{i}.", 1)[-1]
                if isinstance(cfg, LoraConfig):
                    hits = [t for t in cfg.target_modules if name == t or name.endswith("." + t)]
                else:
                    hits = [t for t in ADAPTER_TARGETS[self.kind][cfg.placement] if rel == t]
                matched.update(hits)
                if not hits or not self.sizes[i]:
                    continue
                if isinstance(cfg, LoraConfig):
                    new = LoraLayer(layer, self.sizes[i], cfg.lora_alpha, cfg.lora_dropout, name, seed + len(self.wrappers))
                else:
                    new = AdapterLayer(layer, self.sizes[i], name, seed + len(self.wrappers))
                _replace(parent, attr, idx, new)
                self.wrappers.append((parent, attr, idx, new, i))
        if isinstance(cfg, LoraConfig):
            missing = set(cfg.target_modules) - matched
            if missing:
                raise ValueError(f"`target_modules` {sorted(missing)} match no module of this {self.kind} model "
                                 f"(e.g. {module_name(self.base, self.blocks[0].trainable_weights[0])!r})")

    def _add_prompts(self, cfg):
        if self.kind not in BLOCKWISE:
            raise ValueError(f"prompt tuning runs block by block and needs a bert or vit model, got {self.kind!r}")
        rng = np.random.default_rng(cfg.seed)
        for i, n in enumerate(self.sizes):
            if not n:
                continue
            init = self._draw_prompt(n, rng)
            self.prompts[i] = self.add_weight(name=f"prompt_{i}", shape=(n, self.hidden), trainable=True,
                                              initializer=keras.initializers.Constant(init.astype(np.float32)))

    def _draw_prompt(self, n, rng):
        """[n, hidden] float32 prompt: rows of the embedding table ("vocab", bert) or N(0, 0.02^2)."""
        if self.peft_config.prompt_init == "vocab" and self.kind == "bert":
            table = self.base.bert.embeddings.weight.numpy()
            return table[rng.integers(0, table.shape[0], n)]
        return (0.02 * rng.standard_normal((n, self.hidden))).astype(np.float32)

    # --- parameters ---------------------------------------------------------------------------------------
    def peft_variables_by_block(self):
        """[(block index, variable)] of every PEFT variable (not the head), in a fixed order."""
        out = [(block, w) for *_, layer, block in self.wrappers for w in layer._trainable_weights]
        return out + [(i, self.prompts[i]) for i in sorted(self.prompts)] + list(self.bitfit)

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
        return min([i for i, s in enumerate(self.sizes) if s] or [self.num_blocks])

    def peft_state(self):
        """{peft key: np.ndarray} of the PEFT weights, keys and layouts as HF peft (LoRA) where it has them."""
        out = {}
        for *_, layer, _ in self.wrappers:
            out.update({PEFT_PREFIX + k: v.numpy() for k, v in layer.peft_weights().items()})
        for i, p in self.prompts.items():
            out[f"prompt_embeddings.{i}"] = p.numpy()
        for _, v in self.bitfit:
            out[PEFT_PREFIX + pt_name(self.base, v)] = v.numpy()
        return out

    def load_peft_state(self, state):
        """Assign PEFT weights from `peft_state()`-style arrays; missing or extra keys are an error."""
        mine = self.peft_state()
        if set(state) != set(mine):
            raise ValueError(f"PEFT state keys differ: missing {sorted(set(mine) - set(state))[:3]}, "
                             f"unexpected {sorted(set(state) - set(mine))[:3]}")
        for k, v in state.items():
            if tuple(np.shape(v)) != mine[k].shape:
                raise ValueError(f"PEFT weight {k!r} has shape {np.shape(v)}, expected {mine[k].shape}")
        for *_, layer, _ in self.wrappers:
            layer.assign_peft_weights({k: state[PEFT_PREFIX + k] for k in layer.peft_weights()})
        for i, p in self.prompts.items():
            p.assign(state[f"prompt_embeddings.{i}"])
        for _, v in self.bitfit:
            v.assign(state[PEFT_PREFIX + pt_name(self.base, v)])

    def head_state(self):
        if self.head is None:
            return {}
        return {"classifier.weight": self.head.kernel.numpy().T, "classifier.bias": self.head.bias.numpy()}

    def load_head_state(self, state):
        self.head.kernel.assign(np.asarray(state["classifier.weight"]).T)
        self.head.bias.assign(state["classifier.bias"])

    # --- forward ------------------------------------------------------------------------------------------
    def embed(self, inputs, training=False):
        """Block-0 input: (hidden [B, T, H], mask float [B, T])."""
        if self.kind == "bert":
            ids = tf.convert_to_tensor(inputs["input_ids"])
            h = self.base.bert.embeddings(input_ids=ids, training=training)
            return h, tf.cast(inputs["attention_mask"], h.dtype)
        x = tf.convert_to_tensor(inputs, tf.float32)
        if x.shape.rank == 3:
            x = x[:, None]
        h = self.base.vit.embeddings(pixel_values=x, training=training)
        return h, tf.ones(tf.shape(h)[:2], h.dtype)

    def run_blocks(self, h, mask, start=0, stop=None, training=False, prompts=None):
        """Run blocks start..stop-1 (prepending deep prompts); returns (hidden, mask).

        `prompts` {block: [n, H] or one per example [B, n, H]} replaces the model's own deep prompts (a
        prompt pool's batched pass); the lengths must be the model's own for `pooled` to skip them."""
        if self.kind not in BLOCKWISE:
            raise ValueError(f"block-by-block runs need a bert or vit model, got {self.kind!r}")
        prompts = self.prompts if prompts is None else prompts
        for i in range(start, self.num_blocks if stop is None else stop):
            if i in prompts:
                b = tf.shape(h)[0]
                p = tf.convert_to_tensor(prompts[i])
                p = tf.broadcast_to(p[None], [b, *p.shape]) if p.shape.rank == 2 else p
                h = tf.concat([tf.cast(p, h.dtype), h], axis=1)
                mask = tf.concat([tf.ones([b, p.shape[1]], mask.dtype), mask], axis=1)
            if self.kind == "bert":
                ext = (1.0 - mask[:, None, None, :]) * -10000.0
                h = self.blocks[i](hidden_states=h, attention_mask=ext, head_mask=None, encoder_hidden_states=None,
                                   encoder_attention_mask=None, past_key_value=None, output_attentions=False,
                                   training=training)[0]
            else:
                h = self.blocks[i](hidden_states=h, head_mask=None, output_attentions=False, training=training)[0]
        return h, mask

    def pooled(self, h, mask):
        """Final norm (vit), mean pooling over the real tokens (prompts excluded): features [B, H]."""
        if self.kind == "vit":
            h = self.base.vit.layernorm(h)
        n_prompt = sum(int(p.shape[0]) for p in self.prompts.values())
        h, mask = h[:, n_prompt:], mask[:, n_prompt:]
        return tf.reduce_sum(h * mask[..., None], 1) / tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)

    def head_from(self, h, mask, training=False):
        """`pooled` features, then the head."""
        pooled = self.pooled(h, mask)
        return pooled if self.head is None else self.head(pooled)

    def forward_from(self, h, mask, start, training=False):
        """Logits from the cached input of block `start` (see `activations`)."""
        h, mask = self.run_blocks(h, mask, start, training=training)
        return self.head_from(h, mask, training)

    def call(self, inputs, training=False):
        if self.kind in BLOCKWISE:
            return self.forward_from(*self.embed(inputs, training), 0, training)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if self.kind == "t5":
            h = self.base.get_encoder()(input_ids=ids, attention_mask=mask, training=training).last_hidden_state
        else:
            h = self.base(input_ids=ids, attention_mask=mask, training=training).last_hidden_state
        return self.head_from(h, tf.cast(mask, h.dtype), training)

    def activations(self, inputs, block, batch_size=64):
        """Frozen input of block `block` for every example, computed once (inference mode).

        inputs: a dict of arrays [S, T] or pixels [S, ...]. Returns (hidden float32 [S, T', H], mask [S, T']).
        `block` must not exceed `lowest_tuned_block()` (the cached part must be frozen).
        """
        if not 0 <= block <= self.lowest_tuned_block():
            raise ValueError(f"`block` must be in [0, {self.lowest_tuned_block()}] (lowest tuned block), got {block}")
        step = tf.function(lambda x: self.run_blocks(*self.embed(x), 0, block))
        n = len(inputs["input_ids"]) if isinstance(inputs, dict) else len(inputs)
        hs, ms = [], []
        for s in range(0, n, batch_size):
            x = {k: v[s:s + batch_size] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[s:s + batch_size]
            h, m = step(x)
            hs.append(h.numpy())
            ms.append(m.numpy())
        return np.concatenate(hs), np.concatenate(ms)

    # --- saving, merging ------------------------------------------------------------------------------------
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
        if isinstance(self.peft_config, LoraConfig):
            (out / "adapter_config.json").write_text(json.dumps(self._hf_lora_config(base_model_name_or_path), indent=2))
        return out

    def _hf_lora_config(self, base_name):
        cfg = self.peft_config
        names = [w.module for *_, w, _ in self.wrappers]
        return {"peft_type": "LORA", "task_type": "FEATURE_EXTRACTION", "base_model_name_or_path": base_name,
                "r": cfg.r, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                "target_modules": names, "rank_pattern": {w.module: w.r for *_, w, _ in self.wrappers if w.r != cfg.r},
                "alpha_pattern": {}, "bias": "none", "fan_in_fan_out": self.kind == "gpt2",
                "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
                "layers_to_transform": None, "layers_pattern": None, "use_rslora": False, "use_dora": False}

    @classmethod
    def from_pretrained(cls, model, directory):
        """Rebuild a PeftModel on the base `model` from a `save_pretrained` folder."""
        from safetensors.numpy import load_file
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
        if not isinstance(self.peft_config, LoraConfig):
            raise ValueError("merge_and_unload needs a LoRA model")
        for parent, attr, idx, layer, _ in self.wrappers:
            _replace(parent, attr, idx, layer.merge())
        self.wrappers = []
        return self.base


def get_peft_model(model, peft_config, num_labels=None, seed=0):
    """Wrap an HF TF model with PEFT (see `PeftModel`); the base weights are frozen."""
    return PeftModel(model, peft_config, num_labels, seed)
