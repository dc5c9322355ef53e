"""Analytic cost of a PEFT configuration: parameters, uplink payload, device memory and FLOPs per example.

Works from published config numbers, so it prices models far too large to run here (T5-XXL, LLaMA-7B).
Backprop only has to reach the lowest block holding PEFT weights: blocks below it run forward only and
keep no activations (and with activation caching run once per example, not once per epoch).
"""

from dataclasses import dataclass

import numpy as np

from .tuners import tuner_class


@dataclass(frozen=True)
class Dims:
    """Transformer dimensions. kind: "encoder" | "decoder" | "encoder-decoder" (num_blocks counts both
    stacks; the second half are decoder blocks with cross-attention). attn = heads * head_dim."""
    name: str
    kind: str
    num_blocks: int
    hidden: int
    ffn: int
    heads: int
    attn: int
    vocab: int
    positions: int = 0          # learned absolute position embeddings
    token_types: int = 0
    gated_ffn: bool = False     # gated FFN (T5 v1.1, LLaMA): two input projections
    biases: bool = True
    norm_params: int = 2        # per norm: 2 (LayerNorm gamma, beta) or 1 (RMSNorm)
    untied_lm_head: bool = False
    outer_norms: int = 1        # norms outside the blocks (BERT embedding LN, GPT-2 ln_f, T5 one per stack)
    extra: int = 0              # architecture extras: BERT/ViT pooler, ViT patch embedding, T5 relative bias


MODELS = {  # published configurations
    "all-MiniLM-L6-v2": Dims("all-MiniLM-L6-v2", "encoder", 6, 384, 1536, 12, 384, 30522, 512, 2, extra=384*384+384),
    "bert-base": Dims("bert-base", "encoder", 12, 768, 3072, 12, 768, 30522, 512, 2, extra=768*768+768),
    "bert-large": Dims("bert-large", "encoder", 24, 1024, 4096, 16, 1024, 30522, 512, 2, extra=1024*1024+1024),
    "gpt2-xl": Dims("gpt2-xl", "decoder", 48, 1600, 6400, 25, 1600, 50257, 1024),
    "t5-xxl": Dims("t5-xxl", "encoder-decoder", 48, 4096, 10240, 64, 4096, 32128, gated_ffn=True,
                   biases=False, norm_params=1, untied_lm_head=True, outer_norms=2, extra=2 * 32 * 64),
    "llama-7b": Dims("llama-7b", "decoder", 32, 4096, 11008, 32, 4096, 32000, gated_ffn=True, biases=False,
                     norm_params=1, untied_lm_head=True),
}
"""Published model dimensions (`Dims`) the analytic cost model knows, by name."""

# block-relative projection names (BERT naming; the same roles in every architecture)
ATTENTION = ("query", "key", "value", "attention.output.dense")
FFN_IN, FFN_OUT = "intermediate.dense", "output.dense"


def dims_of(model):
    """Dims of a built HF TF model (bert, vit, gpt2, t5 with or without decoder) -- to check the cost model."""
    c = model.config.to_dict()
    t = c["model_type"]
    if t in ("bert", "vit"):
        h = c["hidden_size"]
        pooler = h * h + h if getattr(getattr(model, t), "pooler", None) is not None else 0
        if t == "bert":
            return Dims(t, "encoder", c["num_hidden_layers"], h, c["intermediate_size"], c["num_attention_heads"],
                        h, c["vocab_size"], c["max_position_embeddings"], c["type_vocab_size"], extra=pooler)
        patches = (c["image_size"] // c["patch_size"]) ** 2
        patch = c["num_channels"] * c["patch_size"] ** 2 * h + h + h          # projection + bias + cls token
        return Dims(t, "encoder", c["num_hidden_layers"], h, c["intermediate_size"], c["num_attention_heads"], h,
                    0, patches + 1, extra=pooler + patch)
    if t == "gpt2":
        return Dims(t, "decoder", c["n_layer"], c["n_embd"], c.get("n_inner") or 4 * c["n_embd"], c["n_head"],
                    c["n_embd"], c["vocab_size"], c["n_positions"])
    if t == "t5":
        dec = hasattr(model, "decoder")
        stacks = 2 if dec else 1
        return Dims(t, "encoder-decoder" if dec else "encoder", c["num_layers"] + (c["num_decoder_layers"] if dec else 0),
                    c["d_model"], c["d_ff"], c["num_heads"], c["num_heads"] * c["d_kv"], c["vocab_size"],
                    gated_ffn=c["feed_forward_proj"].startswith("gated"), biases=False, norm_params=1,
                    outer_norms=stacks, extra=stacks * c["relative_attention_num_buckets"] * c["num_heads"])
    raise ValueError(f"no cost model for model_type {t!r}")


def projections(d, block):
    """{role: (in, out)} of the dense projections of block `block` (cross-attention roles prefixed 'cross.')."""
    a, h, f = d.attn, d.hidden, d.ffn
    att = {"query": (h, a), "key": (h, a), "value": (h, a), "attention.output.dense": (a, h)}
    out = dict(att)
    if d.kind == "encoder-decoder" and block >= d.num_blocks // 2:
        out.update({"cross." + k: v for k, v in att.items()})
    out[FFN_IN] = (h, f)
    if d.gated_ffn:
        out["intermediate.gate"] = (h, f)
    out[FFN_OUT] = (f, h)
    return out


def block_params(d, block):
    proj = projections(d, block)
    weights = sum(i * o for i, o in proj.values())
    biases = sum(o for _, o in proj.values()) if d.biases else 0
    norms = (3 if any(k.startswith("cross.") for k in proj) else 2) * d.norm_params * d.hidden
    return weights + biases + norms


def total_params(d):
    """All parameters (embeddings, blocks, final norms; lm head only when untied)."""
    emb = d.vocab * d.hidden + (d.positions + d.token_types) * d.hidden
    final = d.outer_norms * d.norm_params * d.hidden
    head = d.vocab * d.hidden if d.untied_lm_head else 0
    return emb + sum(block_params(d, i) for i in range(d.num_blocks)) + final + head + d.extra


def peft_params_per_block(d, peft_config):
    """Trainable PEFT parameters in each block (list of int), from the method's registered tuner."""
    tuner = tuner_class(peft_config)
    return [tuner.params_per_block(peft_config, d, projections(d, i), i, s) if s else 0
            for i, s in enumerate(peft_config.sizes(d.num_blocks))]


def _block_flops(d, block, tokens):
    """Forward FLOPs of one block per example: 2 per multiply-add of the projections + attention."""
    proj = projections(d, block)
    mats = sum(i * o for i, o in proj.values())
    n_att = 2 if any(k.startswith("cross.") for k in proj) else 1
    return 2 * tokens * mats + n_att * 4 * tokens * tokens * d.attn


def _block_activations(d, block, tokens):
    """Elements one block keeps for backprop per example: inputs of every projection, the FFN
    hidden before and after the nonlinearity, norms' inputs, attention scores and probabilities."""
    n_att = 2 if any(k.startswith("cross.") for k in projections(d, block)) else 1
    per_att = tokens * (d.hidden + 4 * d.attn + d.hidden) + 2 * d.heads * tokens * tokens
    ffn = tokens * (d.hidden + (3 if d.gated_ffn else 2) * d.ffn + d.hidden)
    return n_att * per_att + ffn


@dataclass(frozen=True)
class Cost:
    """Per-configuration cost. Parameters as counts; payload in bits per upload; memory in bytes
    (weights, gradients + optimizer state, activations for a batch); FLOPs per training example."""
    trainable_params: int
    total_params: int
    payload_bits: int
    memory_weights: int
    memory_optimizer: int
    memory_activations: int
    flops_forward: int
    flops_backward: int
    lowest_tuned_block: int

    @property
    def memory(self):
        return self.memory_weights + self.memory_optimizer + self.memory_activations


def peft_cost(model, peft_config, tokens=128, batch_size=8, num_labels=0, bits_per_param=32,
              weight_bytes=2, optimizer_states=2, cached=False):
    """Cost of training `peft_config` on `model` (a name of `MODELS` or a `Dims`).

    tokens: sequence length; batch_size: examples whose activations are held at once; num_labels: size of
    a new head (0: none); bits_per_param: uplink bits per trainable parameter; weight_bytes: bytes per
    frozen weight (2: fp16); optimizer_states: per trainable parameter (Adam: 2); trainable weights, their
    gradients and states are fp32. cached: blocks below the lowest tuned block cost nothing per epoch.
    """
    d = _dims(model)
    for name, v in (("tokens", tokens), ("batch_size", batch_size), ("bits_per_param", bits_per_param)):
        if v < 1:
            raise ValueError(f"`{name}` must be >= 1, got {v}")
    per_block = peft_params_per_block(d, peft_config)
    head = num_labels * (d.hidden + 1) if num_labels else 0
    trainable = sum(per_block) + head
    tuned = [i for i, p in enumerate(per_block) if p]
    low = min(tuned) if tuned else d.num_blocks
    prompt = tuner_class(peft_config).extra_tokens(peft_config, d.num_blocks)
    t = tokens + prompt
    fwd = [_block_flops(d, i, t) for i in range(d.num_blocks)]
    act = [_block_activations(d, i, t) for i in range(d.num_blocks)]
    n_total = total_params(d)
    return Cost(
        trainable_params=trainable, total_params=n_total + trainable, payload_bits=trainable * bits_per_param,
        memory_weights=n_total * weight_bytes + trainable * 4,
        memory_optimizer=trainable * 4 * (1 + optimizer_states),
        memory_activations=4 * batch_size * sum(act[low:]),
        flops_forward=sum(fwd[low:] if cached else fwd) + 2 * head,
        flops_backward=sum(fwd[low:]) + 2 * 2 * t * sum(per_block) + 4 * head,
        lowest_tuned_block=low)


def full_finetune_cost(model, tokens=128, batch_size=8, bits_per_param=32, optimizer_states=2):
    """Cost of full fine-tuning (every weight trains in fp32 with its gradient and optimizer states)."""
    d = _dims(model)
    n = total_params(d)
    fwd = sum(_block_flops(d, i, tokens) for i in range(d.num_blocks))
    act = sum(_block_activations(d, i, tokens) for i in range(d.num_blocks))
    return Cost(n, n, n * bits_per_param, 4 * n, 4 * n * (1 + optimizer_states), 4 * batch_size * act,
                fwd, 2 * fwd, 0)


def _dims(model):
    d = MODELS.get(model) if isinstance(model, str) else model
    if not isinstance(d, Dims):
        raise ValueError(f"unknown `model` {model!r}; known: {sorted(MODELS)} or a Dims")
    return d


def allocation_table(model, peft_config, choices, tokens=128, batch_size=8, num_labels=0, weight_bytes=2):
    """Inputs of `deft6g.optim.PeftAllocator` for `model` and the method of `peft_config`:
    dict params [L, C], act_memory [L] (bytes), backward_flops [L], fixed_memory (bytes), fixed_flops."""
    d = _dims(model)
    params = np.array([peft_params_per_block(d, peft_config.with_size(c, d.num_blocks)) for c in choices]).T
    fwd = [_block_flops(d, i, tokens) for i in range(d.num_blocks)]
    head = num_labels * (d.hidden + 1)
    return {"params": params,
            "act_memory": np.array([4 * batch_size * _block_activations(d, i, tokens) for i in range(d.num_blocks)]),
            "backward_flops": np.array(fwd, float),
            "fixed_memory": float(total_params(d) * weight_bytes + 16 * head),
            "fixed_flops": float(sum(fwd) + 6 * head)}
