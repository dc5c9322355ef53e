"""What every PEFT method shares: a config with one size per transformer block, a tuner that adds the
method's weights to a `PeftModel`, and the registry (HF peft's `tuners/` and `register_peft_method`).

Adding a method: subclass `PeftConfig` (a dataclass naming its size and pattern fields) and `BaseTuner`
(or `WrapperTuner` for a method that wraps dense projections), then `register_peft_method(Config, Tuner)`.
`get_peft_model`, the cost model, saving and federated aggregation then work with it unchanged.
"""

import re
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..architecture import dense_projections, module_name, projection_kernel

PEFT_PREFIX = "base_model.model."      # HF peft's key prefix for weights of the wrapped model


def check_size(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")


@dataclass
class PeftConfig:
    """Base of every PEFT config: a default size per block (class attribute `size_field` names the field;
    None: 1), a `{block: size}` pattern that overrides it (`pattern_field`), and `layers_to_transform`,
    which restricts PEFT to the listed blocks. `size(block, num_blocks)` is the PEFT size of a block (0: no
    PEFT there). With `module_keys`, the pattern also takes HF peft's module-name/regex keys (str), which
    set the size of the modules whose names end with a match; digit-only keys, as JSON writes block indices,
    are block indices."""
    layers_to_transform: list = None

    peft_type = None
    size_field, pattern_field = None, None
    module_keys = False       # whether the pattern may hold module-name/regex keys
    max_size = None           # largest meaningful size (BitFit: 1, on/off)

    def default_size(self):
        return 1 if self.size_field is None else getattr(self, self.size_field)

    def size_pattern(self):
        """The whole {key: size} pattern (block indices and, where allowed, module-name keys)."""
        return getattr(self, self.pattern_field)

    def block_pattern(self):
        """{block: size} of the pattern's block-index keys."""
        return {k: v for k, v in self.size_pattern().items() if not isinstance(k, str)}

    def module_pattern(self):
        """{regex: size} of the pattern's module-name keys."""
        return {k: v for k, v in self.size_pattern().items() if isinstance(k, str)}

    def __post_init__(self):
        if self.size_field is not None:
            check_size(self.default_size(), self.size_field)
        if not isinstance(self.size_pattern(), dict):
            raise ValueError(f"`{self.pattern_field}` must be a dict {{block or module key: size}}, "
                             f"got {self.size_pattern()!r}")
        pattern = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in self.size_pattern().items()}
        setattr(self, self.pattern_field, pattern)       # "3" (as JSON writes block 3) is block 3
        for key, size in pattern.items():
            if isinstance(key, str) and self.module_keys:
                try:
                    re.compile(key)
                except re.error as err:
                    raise ValueError(f"`{self.pattern_field}` key {key!r} is not a valid regex: {err}") from err
            elif isinstance(key, bool) or not isinstance(key, int) or key < 0:
                what = "block indices >= 0 or module-name patterns" if self.module_keys else "block indices >= 0"
                raise ValueError(f"`{self.pattern_field}` keys must be {what}, got {key!r}")
            check_size(size, f"{self.pattern_field}[{key!r}]")
        if self.size_field is not None and self.default_size() == 0 and not any(self.block_pattern().values()):
            raise ValueError(f"`{self.size_field}` must be >= 1 unless `{self.pattern_field}` gives a block a "
                             f"positive size: at 0 no block is tuned (to leave blocks out, set them to 0 in "
                             f"`{self.pattern_field}` or list the others in `layers_to_transform`), got 0")
        if self.layers_to_transform is not None:
            lt = self.layers_to_transform
            if not (isinstance(lt, (list, tuple)) and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                                          and i >= 0 for i in lt)):
                raise ValueError(f"`layers_to_transform` must be a list of block indices (ints >= 0) or None, "
                                 f"got {lt!r}")
            self.layers_to_transform = [int(i) for i in lt]

    def size(self, block, num_blocks):
        """PEFT size of block `block` (0 <= block < num_blocks)."""
        bad = [i for i in list(self.block_pattern()) + (self.layers_to_transform or []) if i >= num_blocks]
        if bad:
            raise ValueError(f"block indices {bad} in the config exceed the model's {num_blocks} blocks")
        if self.layers_to_transform is not None and block not in self.layers_to_transform:
            return 0
        return self.block_pattern().get(block, self.default_size())

    def sizes(self, num_blocks):
        """[size of block i for i < num_blocks]."""
        return [self.size(i, num_blocks) for i in range(num_blocks)]

    def module_key(self, name):
        r"""The first module-name key whose regex matches the end of the module name `name` (as HF peft's
        rank_pattern: `(.*\.)?(key)$`), or None."""
        return next((key for key in self.module_pattern() if re.match(rf"(.*\.)?({key})$", name)), None)

    def module_override(self, name):
        """Size set for the module called `name` by a module-name key, or None."""
        key = self.module_key(name)
        return None if key is None else self.module_pattern()[key]

    def module_size(self, name, block, num_blocks):
        """Size of the module called `name` in block `block`: its module-name override, else the block's
        size; 0 in blocks without PEFT."""
        size = self.size(block, num_blocks)
        override = self.module_override(name) if size else None
        return size if override is None else override

    def with_block_sizes(self, sizes):
        """The same method and targets with block i at sizes[i] (module-name keys kept)."""
        blocks = {i: min(int(s), self.max_size) if self.max_size else int(s) for i, s in enumerate(sizes)}
        return replace(self, layers_to_transform=None, **{self.pattern_field: {**self.module_pattern(), **blocks}})

    def with_size(self, size, num_blocks):
        """The same method and targets with every one of `num_blocks` blocks at `size`."""
        return self.with_block_sizes([size] * num_blocks)

    def to_dict(self):
        return {"peft_type": self.peft_type, **asdict(self)}


@dataclass(frozen=True)
class WrappedModule:
    """A dense projection replaced by a PEFT wrapper: `parent.<attribute>` (or `parent.<attribute>[index]`
    when `index` is not None) now holds `layer`, which wraps the frozen projection of block `block`."""
    parent: object
    attribute: str
    index: object
    layer: object
    block: int

    def install(self, layer):
        """Put `layer` at this module's place in the model."""
        if self.index is None:
            setattr(self.parent, self.attribute, layer)
        else:
            getattr(self.parent, self.attribute)[self.index] = layer


class BaseTuner:
    """One PEFT method applied to one `PeftModel`: `__init__` adds the method's weights to the model.

    Subclasses set what they add (`wrappers`, `prompts`) and implement `variables_by_block`, `state`,
    `load_state` and `reset_parameters`, and, for the analytic cost model, `params_per_block`.
    """
    config_cls = None     # set by register_peft_method

    def __init__(self, model, config, seed):
        self.model, self.config = model, config
        self.wrappers, self.prompts = [], {}

    def variables_by_block(self):
        """[(block index, tf.Variable)] of the method's trainable weights, in a fixed order."""
        raise NotImplementedError

    def state(self):
        """{key: np.ndarray} of the method's weights; keys as HF peft's where it has them."""
        raise NotImplementedError

    def load_state(self, state):
        """Assign weights from a `state()`-style dict whose keys and shapes were checked by the model."""
        raise NotImplementedError

    def reset_parameters(self, seed):
        """Re-initialise the method's weights, drawing them with `seed` as at construction."""
        raise NotImplementedError

    def export(self, directory, base_model_name_or_path):
        """Write method-specific files next to the saved weights (HF peft's adapter_config.json)."""

    def merge(self):
        """Fold the method into the frozen weights and restore the base layers (LoRA only)."""
        raise ValueError(f"merge_and_unload needs a LoRA model, got {self.config.peft_type}")

    @classmethod
    def params_per_block(cls, config, dims, projections, block, size):
        """Trainable parameters of block `block` at PEFT size `size` > 0, from the cost model's `Dims` and
        the block's {role: (in, out)} projections."""
        raise NotImplementedError

    @classmethod
    def extra_tokens(cls, config, num_blocks):
        """Tokens the method adds to every sequence (soft prompts)."""
        return 0

    @classmethod
    def check_saved_shapes(cls, config, num_blocks, shapes):
        """Raise ValueError naming the key, before any weight is allocated, when the saved `shapes`
        ({key: shape tuple} of a `state()`) cannot hold the weights `config` asks for on a model of
        `num_blocks` blocks. Here nothing: wrapper sizes are bounded by the projections they wrap, and
        `PeftModel.load_peft_state` checks every key and shape once the model is built."""


class WrapperTuner(BaseTuner):
    """A method that replaces chosen dense projections by wrapper layers (LoRA, bottleneck adapters)."""

    def __init__(self, model, config, seed):
        super().__init__(model, config, seed)
        matched, keys_used = set(), set()
        for i, blk in enumerate(model.blocks):
            for parent, attr, idx, layer in list(dense_projections(blk)):
                name = module_name(model.base, projection_kernel(layer))
                hits = self.targets(name, name.split(f".{i}.", 1)[-1])
                matched.update(hits)
                if hits:
                    keys_used.add(config.module_key(name))
                size = config.module_size(name, i, model.num_blocks) if hits else 0
                if size:
                    wrapped = WrappedModule(parent, attr, idx, self.wrap(layer, size, name, seed + len(self.wrappers)), i)
                    wrapped.install(wrapped.layer)
                    self.wrappers.append(wrapped)
        self.check_targets(matched)
        unused = set(config.module_pattern()) - keys_used - {None}
        if unused:
            raise ValueError(f"`{config.pattern_field}` keys {sorted(unused)} match no targeted module of this "
                             f"{model.kind} model")

    def targets(self, name, relative):
        """The target names that select the projection `name` (`relative`: its name inside the block)."""
        raise NotImplementedError

    def wrap(self, layer, size, name, seed):
        """A wrapper layer of PEFT size `size` around the projection `layer` named `name`."""
        raise NotImplementedError

    def check_targets(self, matched):
        """Raise when a requested target matched no module."""

    def variables_by_block(self):
        return [(w.block, v) for w in self.wrappers for v in w.layer.peft_variables]

    def state(self):
        return {PEFT_PREFIX + k: v.numpy() for w in self.wrappers for k, v in w.layer.peft_weights().items()}

    def load_state(self, state):
        for w in self.wrappers:
            w.layer.assign_peft_weights({k: state[PEFT_PREFIX + k] for k in w.layer.peft_weights()})

    def reset_parameters(self, seed):
        for j, w in enumerate(self.wrappers):
            w.layer.reset_parameters(seed + j)


PEFT_METHODS = {}     # peft_type -> (config class, tuner class)
"""The PEFT method registry: peft_type -> (config class, tuner class); `register_peft_method` adds to it."""


def register_peft_method(config_cls, tuner_cls):
    """Make a PEFT method known to `get_peft_model`, the cost model and `config_from_dict`."""
    if not (isinstance(config_cls, type) and issubclass(config_cls, PeftConfig) and config_cls.peft_type):
        raise TypeError(f"`config_cls` must be a PeftConfig subclass with a `peft_type`, got {config_cls!r}")
    if not (isinstance(tuner_cls, type) and issubclass(tuner_cls, BaseTuner)):
        raise TypeError(f"`tuner_cls` must be a BaseTuner subclass, got {tuner_cls!r}")
    tuner_cls.config_cls = config_cls
    PEFT_METHODS[config_cls.peft_type] = (config_cls, tuner_cls)


def tuner_class(peft_config):
    """The registered tuner class of a config instance."""
    entry = PEFT_METHODS.get(getattr(peft_config, "peft_type", None))
    if entry is None or not isinstance(peft_config, entry[0]):
        names = ", ".join(cfg.__name__ for cfg, _ in PEFT_METHODS.values())
        raise TypeError(f"`peft_config` must be one of {names}, got {type(peft_config).__name__}")
    return entry[1]


def config_from_dict(d):
    """Rebuild a config from `to_dict()` output (block keys may arrive as strings from JSON)."""
    d = dict(d)
    kind = d.pop("peft_type", None)
    if kind not in PEFT_METHODS:
        raise ValueError(f"unknown `peft_type` {kind!r}; known: {sorted(PEFT_METHODS)}")
    return PEFT_METHODS[kind][0](**d)
