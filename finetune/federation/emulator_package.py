"""What a server really sends as a FoMo emulator: a package of named NumPy tensors, compressed beyond layer drop.

`pack_emulator` turns a (layer-dropped, possibly aligned) HF TF BERT emulator into a package:
- vocabulary pruning: the word-embedding table keeps only the rows of `vocab_ids` (the token ids the
  devices' data use, plus the special tokens); a packed bit mask over the full vocabulary is sent so the
  device can map its tokenizer's ids (`token_map`; ids outside the kept set map to [UNK]);
- low rank: the 2-D projection kernels W [in, out] of the blocks `low_rank_blocks` are sent as their
  truncated SVD factors U S^(1/2) [in, k] and S^(1/2) V^T [k, out], k = max(1, round(rank_fraction * min(in, out)));
- int8: every 2-D tensor (kernels, factors, embedding tables) is quantised symmetrically,
  q = round(w / s) in [-127, 127] with one float32 scale s = max|w| / 127 per output column (kernels,
  factors) or per row (embedding tables), so |w - q s| <= s / 2 entrywise. Vectors (biases, LayerNorm)
  stay float32.
The pooler is not sent (devices read the model out by mean pooling). The configuration travels as UTF-8
JSON bytes ("config.json"), so `download_bits` -- the sum of every sent array's size times its dtype's
bits -- counts everything the device receives. `unpack_emulator` rebuilds a float32 HF model whose
kernels are the dequantised (and re-multiplied) weights: compute is dequantised, the device may keep the
int8 tensors and dequantise block by block.
"""

import json

import numpy as np

from ..peft.architecture import pt_name, transformer_blocks

CONFIG_KEY, VOCAB_KEY = "config.json", "vocab.kept_mask"


def quantize_int8(w, axis):
    """Symmetric int8 quantisation of a float array. `axis`: the axis reduced for the scale (0: one scale per
    column of a kernel [in, out]; 1: one per row of an embedding table [V, H]). Returns (q int8, scale float32
    with `axis` removed); zero columns/rows get scale 1."""
    w = np.asarray(w, np.float32)
    scale = np.abs(w).max(axis=axis) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / np.expand_dims(scale, axis)), -127, 127).astype(np.int8)
    return q, scale


def dequantize(q, scale, axis):
    """float32 q * scale, the scale broadcast along `axis` (see `quantize_int8`)."""
    return q.astype(np.float32) * np.expand_dims(scale, axis)


def low_rank_factors(w, rank):
    """Truncated SVD of w [in, out]: (U S^(1/2) [in, rank], S^(1/2) V^T [rank, out]) float32, the best
    rank-`rank` approximation in Frobenius norm (Eckart-Young)."""
    if not 1 <= rank <= min(w.shape):
        raise ValueError(f"`rank` must be in [1, {min(w.shape)}], got {rank}")
    u, s, vt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
    r = np.sqrt(s[:rank])
    return (u[:, :rank] * r).astype(np.float32), (r[:, None] * vt[:rank]).astype(np.float32)


def low_rank_rank(shape, rank_fraction):
    return max(1, int(round(rank_fraction * min(shape))))


def apply_low_rank(model, blocks, rank_fraction):
    """Replace, in place, every 2-D kernel of the blocks `blocks` of an HF TF model by its truncated SVD
    reconstruction (see `low_rank_factors`); returns the model. Used before distillation so alignment
    trains from the low-rank weights."""
    for b in blocks:
        for v in transformer_blocks(model)[b].weights:
            if len(v.shape) == 2:
                u, vt = low_rank_factors(v.numpy(), low_rank_rank(v.shape, rank_fraction))
                v.assign(u @ vt)
    return model


def _embedding(name):
    return name.startswith("embeddings.")


def _block_of(name):
    parts = name.split(".")
    return int(parts[2]) if name.startswith("encoder.layer.") else None


def pack_emulator(emulator, kept, vocab_ids=None, int8=False, low_rank_blocks=(), rank_fraction=0.0):
    """The package (dict name -> np.ndarray) of an HF TF BERT emulator whose block i is block kept[i] of the
    full model. vocab_ids: int token ids to keep (None: the whole vocabulary); int8: quantise every 2-D
    tensor; low_rank_blocks (emulator indices) with rank_fraction in (0, 1]: send their kernels as factors."""
    if getattr(emulator.config, "model_type", None) != "bert":
        raise TypeError(f"`emulator` must be an HF TF bert model, got {type(emulator).__name__}")
    n_blocks = emulator.config.num_hidden_layers
    if len(kept) != n_blocks:
        raise ValueError(f"`kept` must name the emulator's {n_blocks} blocks, got {kept}")
    if low_rank_blocks and not 0.0 < rank_fraction <= 1.0:
        raise ValueError(f"`rank_fraction` must be in (0, 1] with `low_rank_blocks`, got {rank_fraction}")
    if any(not 0 <= b < n_blocks for b in low_rank_blocks):
        raise ValueError(f"`low_rank_blocks` must be emulator block indices in [0, {n_blocks}), got {low_rank_blocks}")
    vocab = emulator.config.vocab_size
    config = emulator.config.to_dict()
    package = {}
    if vocab_ids is not None:
        ids = np.unique(np.asarray(vocab_ids, np.int64))
        if ids.size == 0 or ids[0] < 0 or ids[-1] >= vocab:
            raise ValueError(f"`vocab_ids` must be non-empty token ids in [0, {vocab}), got range "
                             f"[{ids.min(initial=0)}, {ids.max(initial=0)}]")
        mask = np.zeros(vocab, bool)
        mask[ids] = True
        package[VOCAB_KEY] = np.packbits(mask)
        config["vocab_size"] = int(ids.size)
    config.update(deft6g_full_vocab_size=int(vocab), deft6g_kept_blocks=[int(k) for k in kept])

    def put(name, w, axis):
        if int8 and w.ndim == 2:
            package[name], package[name + ".scale"] = quantize_int8(w, axis)
        else:
            package[name] = np.asarray(w, np.float32)

    for v in emulator.weights:
        name = pt_name(emulator, v)
        if name.startswith("pooler."):
            continue
        w = v.numpy()
        if name == "embeddings.word_embeddings.weight" and vocab_ids is not None:
            w = w[ids]
        if w.ndim == 2 and _block_of(name) in low_rank_blocks:
            u, vt = low_rank_factors(w, low_rank_rank(w.shape, rank_fraction))
            put(name + ".U", u, 0)
            put(name + ".V", vt, 0)
        else:
            put(name, w, 1 if _embedding(name) else 0)
    package[CONFIG_KEY] = np.frombuffer(json.dumps(config, sort_keys=True).encode(), np.uint8).copy()
    return package


def download_bits(package):
    """Bits the device downloads: sum over the package's arrays of size x dtype bits."""
    return int(sum(a.size * a.dtype.itemsize * 8 for a in package.values()))


def package_config(package):
    return json.loads(package[CONFIG_KEY].tobytes().decode())


def _tensor(package, name, axis):
    scale = package.get(name + ".scale")
    return package[name] if scale is None else dequantize(package[name], scale, axis)


def unpack_emulator(package):
    """The device's float32 HF TF BERT model from a package (dequantised weights, factors multiplied out,
    the pooler zero: it is not sent)."""
    from transformers import BertConfig, TFBertModel
    cfg = {k: v for k, v in package_config(package).items() if not k.startswith("deft6g_")}
    model = TFBertModel(BertConfig.from_dict(cfg))
    model.build_in_name_scope()
    for v in model.weights:
        name = pt_name(model, v)
        if name.startswith("pooler."):
            v.assign(np.zeros(v.shape, np.float32))
        elif name + ".U" in package:
            v.assign(_tensor(package, name + ".U", 0) @ _tensor(package, name + ".V", 0))
        else:
            v.assign(_tensor(package, name, 1 if _embedding(name) else 0))
    return model


def token_map(package, unk_id):
    """int32 [V_full] lookup from the tokenizer's ids to the emulator's: kept ids to their rank in the kept set,
    the rest to the emulator id of `unk_id` (which must be kept). Identity without vocabulary pruning."""
    cfg = package_config(package)
    full = cfg["deft6g_full_vocab_size"]
    if VOCAB_KEY not in package:
        return np.arange(full, dtype=np.int32)
    mask = np.unpackbits(package[VOCAB_KEY])[:full].astype(bool)
    if not mask[unk_id]:
        raise ValueError(f"`unk_id` {unk_id} is not in the pruned vocabulary")
    lookup = np.full(full, -1, np.int32)
    lookup[mask] = np.arange(mask.sum(), dtype=np.int32)
    lookup[~mask] = lookup[unk_id]
    return lookup


def remap_tokens(tokens, lookup, unk_id):
    """Map tokenised inputs (dict input_ids, attention_mask [S, T]) through `token_map`; returns (new dict,
    fraction of real tokens that fell outside the kept vocabulary and became [UNK])."""
    ids, mask = np.asarray(tokens["input_ids"]), np.asarray(tokens["attention_mask"]).astype(bool)
    unknown = (lookup[ids] == lookup[unk_id]) & (ids != unk_id) & mask
    return {**tokens, "input_ids": lookup[ids]}, float(unknown.sum() / max(mask.sum(), 1))
