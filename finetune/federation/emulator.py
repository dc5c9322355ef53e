"""FoMo emulators (offsite-tuning style): keep the bottom and top blocks, drop a fraction of the middle ones.

The server sends the emulator once; devices tune PEFT weights on it; the server plugs those weights into
the full model (block i of the emulator is block kept[i] of the full model).
"""

import re

import numpy as np

from ..peft.architecture import transformer_blocks
from ..peft.tuners import PEFT_PREFIX


def emulator_blocks(num_blocks, bottom=1, top=1, drop_fraction=0.5):
    """Full-model indices of the blocks an emulator keeps: the `bottom` first, the `top` last, and the middle
    blocks thinned uniformly so that round(drop_fraction * middle) of them are dropped."""
    if not 0 <= bottom and 0 <= top and bottom + top <= num_blocks:
        raise ValueError(f"`bottom` + `top` must be within the {num_blocks} blocks, got {bottom} + {top}")
    if not 0.0 <= drop_fraction <= 1.0:
        raise ValueError(f"`drop_fraction` must be in [0, 1], got {drop_fraction}")
    middle = list(range(bottom, num_blocks - top))
    keep = len(middle) - int(round(drop_fraction * len(middle)))
    picked = [middle[i] for i in np.linspace(0, len(middle) - 1, keep).round().astype(int)] if keep else []
    return list(range(bottom)) + sorted(set(picked)) + list(range(num_blocks - top, num_blocks))


def build_emulator(model, kept):
    """A standalone HF TF model of the same class with only the blocks `kept` (full-model indices), the
    embeddings and the remaining weights copied from `model`."""
    blocks = transformer_blocks(model)
    if not kept or sorted(set(kept)) != list(kept) or kept[-1] >= len(blocks) or kept[0] < 0:
        raise ValueError(f"`kept` must be increasing block indices in [0, {len(blocks)}), got {kept}")
    config = model.config.__class__.from_dict(model.config.to_dict())
    config.num_hidden_layers = len(kept)
    emu = model.__class__(config)
    emu.build_in_name_scope()
    emu_blocks = transformer_blocks(emu)
    for new, old in enumerate(kept):
        emu_blocks[new].set_weights(blocks[old].get_weights())
    block_vars = {id(v) for b in emu_blocks for v in b.weights}
    src = {_strip(v.name): v for v in model.weights}
    for v in emu.weights:
        if id(v) not in block_vars:
            v.assign(src[_strip(v.name)])
    return emu


def emulator_config(peft_config, kept, num_blocks):
    """The PEFT config of the emulator: block kept[i] of the full model is block i of the emulator. Every
    block the full config tunes must be kept."""
    sizes = peft_config.sizes(num_blocks)
    lost = [i for i, s in enumerate(sizes) if s and i not in kept]
    if lost:
        raise ValueError(f"blocks {lost} hold PEFT weights but the emulator drops them; keep them (`top`/`bottom`)")
    return peft_config.with_block_sizes([sizes[k] for k in kept])


def _strip(name):
    return name.split("/", 1)[1]


def plug_in_state(emulator_state, kept):
    """Rename an emulator's PEFT state (`PeftModel.peft_state()`) to the full model's block indices."""
    def rename(key):
        return re.sub(r"(\.layer\.)(\d+)(\.)", lambda m: f"{m[1]}{kept[int(m[2])]}{m[3]}", key, count=1) \
            if key.startswith(PEFT_PREFIX) else re.sub(r"^prompt_embeddings\.(\d+)$",
                                                       lambda m: f"prompt_embeddings.{kept[int(m[1])]}", key)
    return {rename(k): v for k, v in emulator_state.items()}



def plug_in(full, emulator, kept):
    """Load a tuned emulator's PEFT weights and head into the full PeftModel `full` (block i of the
    emulator is block kept[i] of the full model); returns `full`."""
    full.load_peft_state(plug_in_state(emulator.peft_state(), kept))
    if emulator.head is not None:
        full.load_head_state(emulator.head_state())
    return full
