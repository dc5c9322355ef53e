"""Soft prompts (Lester et al. 2021) and deep prompts (P-tuning v2): trainable vectors prepended to the
input of chosen blocks."""

from dataclasses import dataclass, field

import numpy as np
import tf_keras as keras

from ..architecture import BLOCKWISE
from .base import BaseTuner, PeftConfig, register_peft_method


@dataclass
class PromptTuningConfig(PeftConfig):
    """Soft prompts: `num_virtual_tokens` trainable vectors prepended to the input of block 0 (deep prompts:
    `tokens_pattern` {block: n_i} prepends n_i more at block i). Init "vocab" copies random vocabulary
    embeddings (text models), "random" draws N(0, 0.02^2)."""
    num_virtual_tokens: int = 8
    prompt_init: str = "vocab"
    tokens_pattern: dict = field(default_factory=dict)
    seed: int = 0
    peft_type = "PROMPT_TUNING"
    size_field, pattern_field = "num_virtual_tokens", "tokens_pattern"

    def size(self, block, num_blocks):
        n = super().size(block, num_blocks)
        return n if block == 0 or block in self.tokens_pattern else 0

    def __post_init__(self):
        super().__post_init__()
        if self.prompt_init not in ("vocab", "random"):
            raise ValueError(f"`prompt_init` must be 'vocab' or 'random', got {self.prompt_init!r}")


class PromptTuner(BaseTuner):
    """Adds `prompts` {block: tf.Variable [n, hidden]} to the model; `PeftModel.run_blocks` prepends them."""

    def __init__(self, model, config, seed):
        super().__init__(model, config, seed)
        if model.kind not in BLOCKWISE:
            raise ValueError(f"prompt tuning runs block by block and needs a bert or vit model, got {model.kind!r}")
        rng = np.random.default_rng(config.seed)
        for i, n in enumerate(model.sizes):
            if n:
                init = self._draw(n, rng).astype(np.float32)
                self.prompts[i] = model.add_weight(name=f"prompt_{i}", shape=(n, model.hidden), trainable=True,
                                                   initializer=keras.initializers.Constant(init))

    def _draw(self, n, rng):
        """[n, hidden] float32 prompt: rows of the embedding table ("vocab", bert) or N(0, 0.02^2)."""
        if self.config.prompt_init == "vocab" and self.model.kind == "bert":
            table = self.model.base.bert.embeddings.weight.numpy()
            return table[rng.integers(0, table.shape[0], n)]
        return (0.02 * rng.standard_normal((n, self.model.hidden))).astype(np.float32)

    def variables_by_block(self):
        return [(i, self.prompts[i]) for i in sorted(self.prompts)]

    def state(self):
        return {f"prompt_embeddings.{i}": p.numpy() for i, p in self.prompts.items()}

    def load_state(self, state):
        for i, p in self.prompts.items():
            p.assign(state[f"prompt_embeddings.{i}"])

    def reset_parameters(self, seed):
        """Vocabulary-initialised prompts are drawn from the embedding table with `seed`."""
        rng = np.random.default_rng(seed)
        for p in self.prompts.values():
            p.assign(self._draw(p.shape[0], rng))

    @classmethod
    def params_per_block(cls, config, dims, projections, block, size):
        return size * dims.hidden

    @classmethod
    def extra_tokens(cls, config, num_blocks):
        return sum(config.sizes(num_blocks))

    @classmethod
    def check_saved_shapes(cls, config, num_blocks, shapes):
        """Prompt lengths are bounded by nothing in the model: each block's must be the saved prompt's rows."""
        for i, n in enumerate(config.sizes(num_blocks)):
            key = f"prompt_embeddings.{i}"
            if n and (len(shapes.get(key, ())) != 2 or shapes[key][0] != n):
                raise ValueError(f"key {key!r}: the config asks for {n} prompt tokens in block {i}, the saved "
                                 f"weights hold shape {shapes.get(key, 'none')}")


register_peft_method(PromptTuningConfig, PromptTuner)
