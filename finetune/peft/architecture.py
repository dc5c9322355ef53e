"""The anatomy of an HF TF model that PEFT needs: its kind, its transformer blocks, its dense projections and
their PyTorch-style names (which HF peft's keys and `target_modules` use)."""

import tf_keras as keras
from transformers.modeling_tf_pytorch_utils import convert_tf_weight_name_to_pt_weight_name

MODEL_TYPES = ("bert", "vit", "gpt2", "t5")
BLOCKWISE = ("bert", "vit")          # run block by block here (deep prompts, activation caching)


def architecture_of(model):
    """The `model_type` of an HF TF model: "bert", "vit", "gpt2" or "t5" (anything else is a TypeError)."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in MODEL_TYPES:
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


def hidden_size(model):
    """Width of the model's hidden states (hidden_size, d_model or n_embd)."""
    c = model.config.to_dict()
    return int(c.get("hidden_size") or c.get("d_model") or c["n_embd"])


def pt_name(model, variable):
    """PyTorch state-dict name of a variable of an HF TF model (main-layer prefix removed)."""
    name, _ = convert_tf_weight_name_to_pt_weight_name(variable.name, tf_weight_shape=variable.shape)
    prefix = getattr(model, "base_model_prefix", "") + "."
    return name[len(prefix):] if name.startswith(prefix) else name


def module_name(model, variable):
    """PyTorch-style module name of a variable's layer, e.g. 'encoder.layer.0.attention.self.query'."""
    return pt_name(model, variable).rsplit(".", 1)[0]


def projection_shape(layer):
    """(in, out) of a Dense (kernel [in, out]) or an HF TFConv1D (weight [in, out])."""
    w = getattr(layer, "kernel", None)
    if w is None:
        w = getattr(layer, "weight", None)
    if w is None or len(w.shape) != 2:
        raise TypeError(f"layer {layer.name!r} is not a dense projection (no 2-D kernel/weight)")
    return int(w.shape[0]), int(w.shape[1])


def projection_kernel(layer):
    """The [in, out] weight of a Dense or TFConv1D projection."""
    return layer.kernel if hasattr(layer, "kernel") else layer.weight


def dense_projections(layer, seen=None):
    """Yield (parent, attribute, index, projection) for every dense projection below `layer`; index is the
    position in a list attribute, None for a plain attribute."""
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
                yield from dense_projections(sub, seen)
