"""BitFit (Ben Zaken et al. 2022): only the bias terms of chosen blocks train."""

from dataclasses import dataclass, field

from ..architecture import pt_name
from .base import PEFT_PREFIX, BaseTuner, PeftConfig, register_peft_method


@dataclass
class BitFitConfig(PeftConfig):
    """BitFit: only the bias terms (dense biases and LayerNorm betas) of the chosen blocks train;
    `enabled_pattern` {block: 0 or 1}."""
    enabled_pattern: dict = field(default_factory=dict)
    peft_type = "BITFIT"
    size_field, pattern_field, max_size = None, "enabled_pattern", 1


class BitFitTuner(BaseTuner):
    """Makes the biases and LayerNorm betas of the blocks with PEFT trainable (`bitfit`: [(block, variable)])."""

    def __init__(self, model, config, seed):
        super().__init__(model, config, seed)
        self.bitfit = [(i, v) for i, blk in enumerate(model.blocks) if model.sizes[i]
                       for v in blk.weights if v.name.endswith(("bias:0", "beta:0"))]
        if not self.bitfit:
            raise ValueError(f"BitFit needs bias terms; this {model.kind} model's tuned blocks have none")
        self._pretrained = [v.numpy() for _, v in self.bitfit]

    def variables_by_block(self):
        return list(self.bitfit)

    def state(self):
        return {PEFT_PREFIX + pt_name(self.model.base, v): v.numpy() for _, v in self.bitfit}

    def load_state(self, state):
        for _, v in self.bitfit:
            v.assign(state[PEFT_PREFIX + pt_name(self.model.base, v)])

    def reset_parameters(self, seed):
        """Biases back to their pretrained values."""
        for (_, v), init in zip(self.bitfit, self._pretrained):
            v.assign(init)

    @classmethod
    def params_per_block(cls, config, dims, projections, block, size):
        norms = 3 if any(k.startswith("cross.") for k in projections) else 2
        return (sum(o for _, o in projections.values()) if dims.biases else 0) \
            + (norms * dims.hidden if dims.norm_params == 2 else 0)


register_peft_method(BitFitConfig, BitFitTuner)
