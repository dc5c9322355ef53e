"""One construction of the FoMo emulators a server sends, shared by `deft6g emulator` and `deft6g study`'s
emulator mode.

Variants (`VARIANTS`, cumulative): "full" (the whole model, float32), "drop" (blocks `emulator_blocks(n, bottom,
top, drop)`), "+vocab" (the word-embedding table cut to the server's vocabulary), "+int8" (every 2-D tensor int8)
and "+lowrank" (truncated-SVD projections of the middle blocks); `COMPRESSED` is the aligned, compressed emulator
the study's emulator mode sends.

Vocabulary: the tokens of the server's public corpus (`public`: its first `vocab_texts` paragraphs, 0: all of them)
plus the special tokens. The server holds that corpus, so no uplink is needed and the package reveals nothing of
what the devices hold; device tokens outside it become [UNK] (their rate is reported).

Distillation (`align_emulator`): the middle blocks trained on public paragraphs to the full model's hidden state at
the top boundary, after the SVD step and before int8. Its learning rate and number of texts are chosen per middle
(float or low rank) on the grid `distill_lrs` x `distill_texts` by the boundary MSE on `validation_texts` public
paragraphs held out from every grid point's training texts, with distillation seed 0 (`tune`): no device data and
no labels enter the choice; the grid is returned for the results folder. Each seed then distils its own emulator
with the chosen setting. Packages, distilled blocks and boundary states are cached on disk by content.
"""

import hashlib
from dataclasses import dataclass, field

import numpy as np

STEPS = ("vocab", "int8", "lowrank")
VARIANTS = ("full", "drop", "drop+vocab", "drop+vocab+int8", "drop+vocab+int8+lowrank")
"""The emulator variants, each adding one compression step to the previous one."""
COMPRESSED = "drop+vocab+int8"
TUNING_SEED = 0


@dataclass
class EmulatorRecipe:
    """How the server builds its emulators (see the module docstring). bottom / top: blocks kept at each end
    (left out of distillation and low rank); drop: fraction of the middle blocks dropped; public: the public
    corpus (a `deft6g.finetune.DATASETS` name); vocab_texts: its paragraphs whose tokens form the vocabulary
    (0: all); rank_fraction: kept rank over min(in, out) of a low-rank kernel; distill_steps, distill_batch;
    distill_lrs, distill_texts: the tuning grid (default: the one setting, lr 1e-3 on 4,000 texts, that the
    grid 1e-4 / 1e-3 / 3e-3 x 2,000 / 4,000 chose on validation for both middles; `deft6g emulator --config
    configs/emulator_paper.toml` scores that grid again); validation_texts: held-out public paragraphs that
    score it."""
    bottom: int = 1
    top: int = 1
    drop: float = 0.5
    public: str = "bbc_news"
    vocab_texts: int = 0
    rank_fraction: float = 0.25
    distill_steps: int = 200
    distill_batch: int = 32
    distill_lrs: list = field(default_factory=lambda: [1e-3])
    distill_texts: list = field(default_factory=lambda: [4000])
    validation_texts: int = 400

    def __post_init__(self):
        from ..peft.data import DATASETS
        if self.public not in DATASETS:
            raise ValueError(f"`public` {self.public!r} is unknown; known: {sorted(DATASETS)}")
        if not 0 < self.rank_fraction <= 1:
            raise ValueError(f"`rank_fraction` must be in (0, 1], got {self.rank_fraction}")
        if not self.distill_lrs or any(not (isinstance(v, (int, float)) and v > 0) for v in self.distill_lrs):
            raise ValueError(f"`distill_lrs` must be a non-empty list of positive numbers, got {self.distill_lrs}")
        if not self.distill_texts or any(not (isinstance(v, int) and v > 0) for v in self.distill_texts):
            raise ValueError(f"`distill_texts` must be a non-empty list of positive ints, got {self.distill_texts}")
        for name in ("distill_steps", "distill_batch", "validation_texts"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"`{name}` must be a positive int, got {getattr(self, name)!r}")
        if not (isinstance(self.vocab_texts, int) and self.vocab_texts >= 0):
            raise ValueError(f"`vocab_texts` must be an int >= 0, got {self.vocab_texts!r}")


def public_vocabulary(tokenizer, texts, num_texts=0):
    """Token ids of the first `num_texts` paragraphs (0: all; `public_texts`' order, seed 0) of the public corpus
    `texts` (list of str), untruncated, plus the tokenizer's special tokens: sorted int64 [V_kept]."""
    from .distillation import public_texts
    ids = tokenizer(public_texts(texts, num_texts or None), add_special_tokens=False, verbose=False)["input_ids"]
    return np.union1d(np.concatenate([np.asarray(i, np.int64) for i in ids] + [np.zeros(0, np.int64)]),
                      np.asarray(tokenizer.all_special_ids, np.int64))


def package_key(recipe, kept, variant, distill, seed, setting=None):
    """What an emulator package depends on besides the model and the public texts (part of its cache key): the
    kept blocks (full-model indices), the `bottom`/`top` blocks left out of distillation and low rank, the
    variant, the rank fraction and, when distilled, the steps, batch, seed and `setting` (lr, texts)."""
    key = ["emulator", [int(k) for k in kept], recipe.bottom, recipe.top, variant, bool(distill), recipe.rank_fraction]
    return key + ([recipe.distill_steps, recipe.distill_batch, seed, setting] if distill else [])


class EmulatorBuilder:
    """The server's emulators of one full model (built lazily, cached on disk).

    Parameters
    ----------
    model : HF TF BERT model, the full pretrained model (before PEFT wraps it: an untouched copy is kept)
    tokenizer : its HF tokenizer
    recipe : EmulatorRecipe
    max_length : int, tokens per public paragraph for distillation
    key : JSON-able content key of the model (e.g. `fomo.model_key(name)`), prefix of every cache key

    `package(variant, distill, seed)` -> (package dict name -> np.ndarray, stats dict); `tune(low_rank)` ->
    ((lr, texts), grid rows).
    """

    def __init__(self, model, tokenizer, recipe, max_length, key):
        from ..peft.data import content_digest, load_dataset, tokenize
        from .distillation import public_texts
        from .emulator import build_emulator, emulator_blocks
        self.recipe, self.tok = recipe, tokenizer
        self.n_blocks = model.config.num_hidden_layers
        self.full = build_emulator(model, list(range(self.n_blocks)))         # untouched by later PEFT training
        self.kept = emulator_blocks(self.n_blocks, recipe.bottom, recipe.top, recipe.drop)
        self.dropped = build_emulator(self.full, self.kept)
        corpus = load_dataset(recipe.public).x
        self.public = tokenize(tokenizer, public_texts(corpus, recipe.validation_texts + max(recipe.distill_texts)),
                               max_length)
        if len(self.public["input_ids"]) < recipe.validation_texts + max(recipe.distill_texts):
            raise ValueError(f"`distill_texts` {recipe.distill_texts} + `validation_texts` {recipe.validation_texts} "
                             f"exceed the {len(self.public['input_ids'])} paragraphs of {recipe.public!r}")
        self.vocab_ids = public_vocabulary(tokenizer, corpus, recipe.vocab_texts)
        self.key = [key, content_digest(self.public["input_ids"], self.public["attention_mask"]),
                    content_digest(self.vocab_ids)]
        self._tuned = {}

    def package(self, variant, distill, seed):
        """The package of `variant` (VARIANTS), distilled (per `seed`, with the tuned setting) or not, and the
        distillation's statistics (mse_before, mse_after on the validation paragraphs, seconds; {} if not)."""
        from ..peft.data import cached_arrays
        from .emulator import build_emulator
        from .emulator_package import apply_low_rank, pack_emulator
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}")
        if variant == "full":
            return pack_emulator(self.full, list(range(self.n_blocks))), {}
        r, steps = self.recipe, variant.split("+")[1:]
        low = self._middle() if "lowrank" in steps else []
        setting = self.tune(bool(low))[0] if distill else None

        def build():
            emu = build_emulator(self.dropped, list(range(len(self.kept))))      # a fresh copy
            if low:
                apply_low_rank(emu, low, r.rank_fraction)
            stats = self._distil(emu, bool(low), *setting, seed) if distill else {}
            pkg = pack_emulator(emu, self.kept, self.vocab_ids if "vocab" in steps else None, "int8" in steps,
                                low, r.rank_fraction)
            return {**pkg, **{f"stats.{k}": np.float64(v) for k, v in stats.items()}}

        z = cached_arrays(self.key + package_key(r, self.kept, variant, distill, seed, setting), build, "emulators")
        return ({k: v for k, v in z.items() if not k.startswith("stats.")},
                {k[6:]: float(v) for k, v in z.items() if k.startswith("stats.")})

    def tune(self, low_rank):
        """((lr, texts), rows): the grid point of `distill_lrs` x `distill_texts` with the lowest validation
        boundary MSE for the float (`low_rank` False) or low-rank middle, distilled with seed TUNING_SEED; rows:
        one per grid point (middle, distill_lr, distill_texts, val_mse_before, val_mse_after, chosen)."""
        if low_rank not in self._tuned:
            from .emulator import build_emulator
            from .emulator_package import apply_low_rank
            r, rows = self.recipe, []
            for texts in r.distill_texts:
                for lr in r.distill_lrs:
                    emu = build_emulator(self.dropped, list(range(len(self.kept))))
                    if low_rank:
                        apply_low_rank(emu, self._middle(), r.rank_fraction)
                    s = self._distil(emu, low_rank, lr, texts, TUNING_SEED)
                    rows.append({"middle": "low rank" if low_rank else "float", "distill_lr": lr,
                                 "distill_texts": texts, "val_mse_before": s["mse_before"],
                                 "val_mse_after": s["mse_after"], "chosen": False})
            best = min(rows, key=lambda row: row["val_mse_after"])
            best["chosen"] = True
            self._tuned[low_rank] = ((best["distill_lr"], best["distill_texts"]), rows)
        return self._tuned[low_rank]

    def _middle(self):
        return list(range(self.recipe.bottom, len(self.kept) - self.recipe.top))

    def _distil(self, emu, low_rank, lr, texts, seed):
        """Distil the middle blocks of `emu` in place on the first `texts` training paragraphs (seeded
        batches), scored on the validation paragraphs; returns the statistics. The distilled weights are
        cached per (low rank or not, lr, texts, seed): the emulators that differ only in vocabulary pruning or
        int8 (applied when packing) share the same distilled blocks."""
        from ..peft.architecture import transformer_blocks
        from ..peft.data import cached_arrays
        from .distillation import align_emulator
        r = self.recipe
        weights = [v for blk in transformer_blocks(emu)[r.bottom:len(self.kept) - r.top] for v in blk.weights]
        split = (np.arange(r.validation_texts, r.validation_texts + texts), np.arange(r.validation_texts))

        def compute():
            stats = align_emulator(self.full, emu, self.kept, self.public, r.bottom, r.top, r.distill_steps,
                                   r.distill_batch, lr, seed=seed, states=self._boundary(emu), split=split)
            return {**{f"w{i}": v.numpy() for i, v in enumerate(weights)},
                    **{f"stats.{k}": np.float64(v) for k, v in stats.items()}}

        key = self.key + ["distilled", self.kept, r.bottom, r.top, r.rank_fraction if low_rank else None,
                          r.validation_texts, r.distill_steps, r.distill_batch, lr, texts, seed]
        z = cached_arrays(key, compute, "emulators")
        for i, v in enumerate(weights):
            v.assign(z[f"w{i}"])
        return {k[6:]: float(v) for k, v in z.items() if k.startswith("stats.")}

    def _boundary(self, emu):
        """The public paragraphs' distillation source and target (cached: the bottom blocks and the full model
        are the same for every emulator; low rank touches only the middle blocks)."""
        from ..peft.data import cached_arrays
        from .distillation import boundary_states
        r = self.recipe
        z = cached_arrays(self.key + ["boundary", self.kept, r.bottom, r.top],
                          lambda: dict(zip("st", boundary_states(self.full, emu, self.kept, self.public,
                                                                 r.bottom, r.top))))
        return z["s"], z["t"]


def package_digest(package):
    """sha256 hex digest of a package's arrays (a content key for what a device computes with it)."""
    return hashlib.sha256(b"".join(package[k].tobytes() for k in sorted(package))).hexdigest()
