"""PEFT configurations, named as in HF peft, each with a per-block size (rank, width, prompt length, on/off).

Every config answers `size(block, num_blocks)`: the PEFT size in transformer block `block` (0 = no PEFT
there). The pattern dicts map block index -> size and override the default; `layers_to_transform`
restricts PEFT to the listed blocks.
"""

from dataclasses import asdict, dataclass, field


def _check_size(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")


@dataclass
class _BlockSizes:
    layers_to_transform: list = None

    _size_name, _pattern_name = None, None      # the subclass's default-size field and its {block: size} field

    def _default(self):
        return getattr(self, self._size_name)

    def _pattern(self):
        return getattr(self, self._pattern_name)

    def __post_init__(self):
        _check_size(self._default(), self._size_name)
        for block, size in self._pattern().items():
            if isinstance(block, bool) or not isinstance(block, int) or block < 0:
                raise ValueError(f"`{self._pattern_name}` keys must be block indices >= 0, got {block!r}")
            _check_size(size, f"{self._pattern_name}[{block}]")
        if self.layers_to_transform is not None:
            self.layers_to_transform = [int(i) for i in self.layers_to_transform]
            if any(i < 0 for i in self.layers_to_transform):
                raise ValueError(f"`layers_to_transform` must hold block indices >= 0, got {self.layers_to_transform}")

    def size(self, block, num_blocks):
        """PEFT size of block `block` (0 <= block < num_blocks)."""
        bad = [i for i in list(self._pattern()) + (self.layers_to_transform or []) if i >= num_blocks]
        if bad:
            raise ValueError(f"block indices {bad} in the config exceed the model's {num_blocks} blocks")
        if self.layers_to_transform is not None and block not in self.layers_to_transform:
            return 0
        return self._pattern().get(block, self._default())

    def sizes(self, num_blocks):
        return [self.size(i, num_blocks) for i in range(num_blocks)]

    def to_dict(self):
        return {"peft_type": self.peft_type, **asdict(self)}


@dataclass
class LoraConfig(_BlockSizes):
    """LoRA: W x + (alpha / r) B A x on the `target_modules` (module-name suffixes, as in HF peft: BERT
    "query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense", or "dense" for
    all three). `rank_pattern` {block: r_i} sets a block's rank (0: no LoRA there)."""
    r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["query", "value"])
    rank_pattern: dict = field(default_factory=dict)
    peft_type = "LORA"
    _size_name, _pattern_name = "r", "rank_pattern"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}")
        if not self.target_modules:
            raise ValueError("`target_modules` must name at least one module")


ADAPTER_PLACEMENTS = ("houlsby", "pfeiffer")


@dataclass
class AdapterConfig(_BlockSizes):
    """Bottleneck adapters h + W_up act(W_down h) after the attention and FFN outputs ("houlsby") or after
    the FFN output only ("pfeiffer"), before the residual add and LayerNorm; `width_pattern` {block: w_i}."""
    width: int = 16
    placement: str = "houlsby"
    width_pattern: dict = field(default_factory=dict)
    peft_type = "BOTTLENECK_ADAPTER"
    _size_name, _pattern_name = "width", "width_pattern"

    def __post_init__(self):
        super().__post_init__()
        if self.placement not in ADAPTER_PLACEMENTS:
            raise ValueError(f"`placement` must be one of {ADAPTER_PLACEMENTS}, got {self.placement!r}")


@dataclass
class PromptTuningConfig(_BlockSizes):
    """Soft prompts: `num_virtual_tokens` trainable vectors prepended to the input of block 0 (deep prompts:
    `tokens_pattern` {block: n_i} prepends n_i more at block i). Init "vocab" copies random vocabulary
    embeddings (text models), "random" draws N(0, 0.02^2)."""
    num_virtual_tokens: int = 8
    prompt_init: str = "vocab"
    tokens_pattern: dict = field(default_factory=dict)
    seed: int = 0
    peft_type = "PROMPT_TUNING"
    _size_name, _pattern_name = "num_virtual_tokens", "tokens_pattern"

    def size(self, block, num_blocks):
        n = super().size(block, num_blocks)
        return n if block == 0 or block in self.tokens_pattern else 0

    def __post_init__(self):
        super().__post_init__()
        if self.prompt_init not in ("vocab", "random"):
            raise ValueError(f"`prompt_init` must be 'vocab' or 'random', got {self.prompt_init!r}")


@dataclass
class BitFitConfig(_BlockSizes):
    """BitFit: only the bias terms (dense biases and LayerNorm betas) of the chosen blocks train;
    `enabled_pattern` {block: 0 or 1}."""
    enabled_pattern: dict = field(default_factory=dict)
    peft_type = "BITFIT"
    _size_name, _pattern_name = None, "enabled_pattern"

    def _default(self):
        return 1


CONFIGS = {c.peft_type: c for c in (LoraConfig, AdapterConfig, PromptTuningConfig, BitFitConfig)}


def config_from_dict(d):
    """Rebuild a config from `to_dict()` output (block keys may arrive as strings from JSON)."""
    d = dict(d)
    kind = d.pop("peft_type", None)
    if kind not in CONFIGS:
        raise ValueError(f"unknown `peft_type` {kind!r}; known: {sorted(CONFIGS)}")
    cls = CONFIGS[kind]
    for key in ("rank_pattern", "width_pattern", "tokens_pattern", "enabled_pattern"):
        if key in d:
            d[key] = {int(k): v for k, v in d[key].items()}
    return cls(**d)
