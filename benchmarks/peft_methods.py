"""`deft6g finetune`: PEFT methods on Rotten Tomatoes with MiniLM, and the block allocator vs uniform ranks.

Each method runs in its own subprocess (so its peak RSS is its own) and is appended to methods.csv at
once; re-runs skip finished methods. Reports accuracy, trainable parameters, training samples/s (steady
state, and with the activation cache's one-off cost) and peak memory; and accuracy vs uplink budget for
the allocator (measured block importance, `deft6g.optim.PeftAllocator`; importance.csv, its list repeated in
importance.json) against uniform ranks.

With `workers` the budget runs (accuracy only) go to Ray workers, each still training in a subprocess of its
own; the methods are timed (samples/s), so they always run here, one at a time.
"""

import time
from dataclasses import dataclass, field, replace

import numpy as np
import tf_keras as keras

from deft6g.deprecation import renamed_fields
from deft6g.experiment import Stage, Study, isolated, line_plot, peak_rss_mb, run
from deft6g.finetune import (MODELS, AdapterConfig, BitFitConfig, LoraConfig, PromptTuningConfig, allocation_table,
                             block_importance, evaluate, freeze_all_but, full_finetune_cost, get_peft_model,
                             load_study_data, load_study_model, make_train_step, peft_cost, total_params)
from deft6g.finetune.peft.cost import dims_of
from deft6g.finetune.peft.training import batches
from deft6g.optim import PeftAllocator


METHOD_TYPES = {"method": str, "accuracy": float, "trainable_params": int, "samples_per_s": float,
                "samples_per_s_with_cache": float, "cache_s": float, "train_s": float, "peak_rss_mib": float,
                "lowest_block": int, "sizes": list}
BUDGET_TYPES = {"allocation": str, "budget_fraction": float, "bits_budget": int, "sizes": list, "status": str,
                "payload_bits": int, "memory_mib": float, "flops_g": float, "accuracy": float}


@renamed_fields({"rank": "r"})
@dataclass
class FinetuneConfig:
    """The methods table and the budget sweep; r: the LoRA rank of every LoRA method (HF peft's name)."""
    model: str = "all-MiniLM-L6-v2"
    max_length: int = 48
    train_examples: int = 3000
    test_examples: int = 1000
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0
    methods: list = field(default_factory=lambda: [
        "linear_probe", "full", "lora_all", "lora_top", "lora_top_nocache", "adapters", "prompt", "bitfit"])
    r: int = 8
    top_blocks: int = 1
    budget_fractions: list = field(default_factory=lambda: [0.25, 0.5])
    choices: list = field(default_factory=lambda: [0, 2, 4, 8, 16])

    @classmethod
    def quick(cls):
        return cls(model="random-bert", train_examples=64, test_examples=32, batch_size=16,
                   methods=["linear_probe", "lora_top", "lora_top_nocache"], budget_fractions=[0.5])


LR = {"linear_probe": 1e-2, "full": 5e-5, "lora_all": 1e-3, "lora_top": 1e-3, "lora_top_nocache": 1e-3,
      "adapters": 1e-3, "prompt": 1e-2, "bitfit": 1e-3, "allocated": 1e-3, "uniform": 1e-3}


def _peft_config(method, cfg, num_blocks, sizes=None):
    top = list(range(num_blocks - cfg.top_blocks, num_blocks))
    if method in ("linear_probe", "full"):
        return LoraConfig(r=cfg.r, layers_to_transform=[])
    if method == "lora_all":
        return LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r)
    if method in ("lora_top", "lora_top_nocache"):
        return LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r, layers_to_transform=top)
    if method in ("allocated", "uniform"):
        return LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r, rank_pattern=dict(enumerate(sizes)))
    if method == "adapters":
        return AdapterConfig(width=16)
    if method == "prompt":
        return PromptTuningConfig(num_virtual_tokens=16)
    if method == "bitfit":
        return BitFitConfig()
    raise ValueError(f"unknown method {method!r}")


def _data(cfg):
    recipe = load_study_data("rotten_tomatoes", cfg.model, cfg.max_length, cfg.train_examples, cfg.test_examples)
    train, test, y = recipe.split.train, recipe.split.test, recipe.data.y        # the split is fixed across --seed
    return recipe.model, recipe.inputs(train), y[train], recipe.inputs(test), y[test]


def train_method(method, cfg, sizes=None):
    """Train one method (in this process) and return its measurements as a dict."""

    keras.utils.set_random_seed(cfg.seed)
    model, x_tr, y_tr, x_te, y_te = _data(cfg)
    num_blocks = model.config.num_hidden_layers
    peft = get_peft_model(model, _peft_config(method, cfg, num_blocks, sizes), num_labels=2, seed=cfg.seed)
    if method == "full":
        freeze_all_but(peft, list(peft.weights))
    low = 0 if method == "full" else peft.lowest_tuned_block()
    cached = method in ("linear_probe", "lora_top") or (method in ("allocated", "uniform") and low > 0)
    start = low if cached else None
    t0 = time.time()
    if cached:
        x_tr, x_te = peft.activations(x_tr, low), peft.activations(x_te, low)
    cache_s = time.time() - t0
    step = make_train_step(peft, keras.optimizers.Adam(LR[method]), start_block=start)
    rng = np.random.default_rng(cfg.seed)
    epochs = cfg.epochs * (10 if method == "linear_probe" else 1)
    step(*next(batches(x_tr, y_tr, cfg.batch_size)))          # trace once, outside the timing
    t0, seen = time.time(), 0
    for _ in range(epochs):
        for xb, yb in batches(x_tr, y_tr, cfg.batch_size, rng):
            step(xb, yb)
            seen += len(yb)
    train_s = time.time() - t0
    acc = evaluate(peft, x_te, y_te, start_block=start)
    n_train = len(y_tr)
    return {"method": method, "accuracy": acc, "trainable_params": peft.get_nb_trainable_parameters()[0],
            "samples_per_s": seen / train_s,
            "samples_per_s_with_cache": seen / (train_s + cache_s * (n_train / (n_train + len(y_te)))),
            "cache_s": round(cache_s, 2), "train_s": round(train_s, 2),
            "peak_rss_mib": peak_rss_mb(), "lowest_block": low,
            "sizes": peft.sizes}


def block_importance_scores(cfg):
    """Per-block squared gradient norm of LoRA (all blocks, rank `cfg.r`) over 4 batches."""
    model, x_tr, y_tr, _, _ = _data(cfg)
    peft = get_peft_model(model, _peft_config("lora_all", cfg, model.config.num_hidden_layers), num_labels=2)
    for w in peft.wrappers:        # B = 0 would zero the gradient of A: use a small random B
        w.layer.lora_B.assign(np.random.default_rng(cfg.seed).normal(0, 1e-3, w.layer.lora_B.shape))
    return block_importance(peft, x_tr, y_tr, batch_size=cfg.batch_size, num_batches=4)


def allocations(cfg, importance, num_blocks):
    """Allocator vs uniform rank at each budget fraction of LoRA-all-blocks' payload (rank cfg.r). Each row
    carries `status`: the allocator's (`deft6g.optim.solver_status`; a failed solve is the all-zero fallback,
    "failed (...): no PEFT used") or "uniform"."""
    dims = MODELS.get(cfg.model)
    if dims is None:                      # the random smoke-test model
        dims = dims_of(load_study_model(cfg.model)[0])
    base = LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r)
    table = allocation_table(dims, base, cfg.choices, tokens=cfg.max_length, batch_size=cfg.batch_size)
    alloc = PeftAllocator(importance, cfg.choices, **table)
    full_bits = peft_cost(dims, base).payload_bits
    out = []
    for frac in cfg.budget_fractions:
        budget = frac * full_bits
        got = alloc.solve(bits_budget=budget)
        uniform_rank = max(c for c in cfg.choices if c == 0 or
                           peft_cost(dims, LoraConfig(r=c)).payload_bits <= budget)
        for name, sizes, status in (("allocated", got.sizes, got.status),
                                    ("uniform", [uniform_rank] * num_blocks, "uniform")):
            cost = peft_cost(dims, LoraConfig(r=max(max(sizes), 1), rank_pattern=dict(enumerate(sizes))),
                             tokens=cfg.max_length, batch_size=cfg.batch_size)
            out.append({"allocation": name, "budget_fraction": frac, "bits_budget": int(budget), "sizes": sizes,
                        "status": status, "payload_bits": cost.payload_bits, "memory_mib": cost.memory / 2 ** 20,
                        "flops_g": (cost.flops_forward + cost.flops_backward) / 1e9})
    return out


COST_FIELDS = ["model", "params", "config", "trainable_params", "payload_mib", "memory_gib", "activations_gib",
               "train_tflops_per_example"]


def cost_table(tokens=512, batch_size=8):
    """LoRA r=8 (query/value) on all blocks vs the top 4 vs full fine-tuning, for the published configs."""
    rows = []
    for name, d in MODELS.items():
        top4 = LoraConfig(r=8, layers_to_transform=list(range(d.num_blocks - 4, d.num_blocks)))
        for label, c in (("lora r8 all blocks", peft_cost(name, LoraConfig(r=8), tokens, batch_size)),
                         ("lora r8 top 4 blocks", peft_cost(name, top4, tokens, batch_size)),
                         ("full fine-tuning", full_finetune_cost(name, tokens, batch_size))):
            rows.append({"model": name, "params": total_params(d), "config": label,
                         "trainable_params": c.trainable_params, "payload_mib": c.payload_bits / 8 / 2 ** 20,
                         "memory_gib": c.memory / 2 ** 30, "activations_gib": c.memory_activations / 2 ** 30,
                         "train_tflops_per_example": (c.flops_forward + c.flops_backward) / 1e12})
    return rows


IMPORTANCE_TYPES = {"score": str, "blocks": list}


class FinetuneStudy(Study):
    """The benchmark on the protocol (`deft6g.experiment.Study`), three tables in turn, every run in a subprocess
    of its own (`isolated`): methods.csv (timed, here), importance.csv (the block importance, here; importance.json
    is its list) and budgets.csv (on workers; each point carries its allocation, computed here from the
    importance); costs.csv derived. `run_finetune` runs it."""
    name = "finetune"

    def config(self, quick=False):
        return FinetuneConfig.quick() if quick else FinetuneConfig()

    def stages(self):
        return [Stage("methods.csv", ["method"], METHOD_TYPES, lambda cfg, done: [{"method": m} for m in cfg.methods],
                      lambda cfg, point: isolated(train_method, point["method"], cfg), self.describe, here=True),
                Stage("importance.csv", ["score"], IMPORTANCE_TYPES,
                      lambda cfg, done: [{"score": "squared_grad_norm"}],
                      lambda cfg, point: {"blocks": isolated(block_importance_scores, cfg)}, here=True),
                Stage("budgets.csv", ["allocation", "budget_fraction"], BUDGET_TYPES, budget_points, self.budget_point,
                      lambda p, r: f"{p['allocation']} at {p['budget_fraction']:.2f}: accuracy {r['accuracy']:.3f}")]

    def setup(self, cfg):
        return cfg                     # every run builds its model in a subprocess of its own

    @staticmethod
    def describe(point, row):
        return f"{point['method']}: accuracy {row['accuracy']:.3f}"

    @staticmethod
    def budget_point(cfg, point):
        return {"accuracy": isolated(train_method, point["allocation"], cfg, point["sizes"])["accuracy"]}

    def tables(self, cfg, rows):
        return {"costs.csv": (COST_FIELDS, cost_table()), "importance.json": _importance(rows)}

    def summary(self, cfg, rows):
        return summary(cfg, rows["methods.csv"], rows["budgets.csv"], np.array(_importance(rows)))

    def plot(self, out, cfg, rows):
        _plot(out, rows["budgets.csv"])


def _importance(rows):
    return rows["importance.csv"][0]["blocks"]


def budget_points(cfg, done):
    """One point per allocation (allocator, uniform) and budget fraction, carrying its allocation's columns."""
    importance = np.array(_importance(done))
    return allocations(cfg, importance, len(importance))


def run_finetune(out_dir, quick=False, seed=None, log=print, config=None, **parallel):
    """Run (or resume) the benchmark into `out_dir` (`deft6g.experiment.run`) with `config` (a FinetuneConfig;
    None: the default or `quick` one), its seed replaced by `seed` when given; returns the `StudyResult` (.rows:
    {file: rows}). parallel: workers, ray_address, worker_gpus of `deft6g.experiment.run_points`, for the budget
    runs only."""
    cfg = config if config is not None else FinetuneConfig.quick() if quick else FinetuneConfig()
    result = run(FinetuneStudy(), out_dir, cfg if seed is None else replace(cfg, seed=seed), log=log, **parallel)
    rows = result.rows
    return result.with_legacy("run_finetune", (result.config, rows["methods.csv"], rows["budgets.csv"],
                                               np.array(_importance(rows))))


def _plot(out, rows):
    curves = {}
    for r in rows:
        curves.setdefault(r["allocation"], []).append((r["budget_fraction"], r["accuracy"]))
    if curves:
        line_plot(out / "accuracy_vs_budget.png", curves, "uplink budget (fraction of LoRA r=8 on all blocks)",
                  "test accuracy", "Per-block allocation vs uniform ranks")


def summary(cfg, methods, budgets, importance):
    by = {r["method"]: r for r in methods}
    lines = [f"PEFT on Rotten Tomatoes with {cfg.model} ({cfg.train_examples} training texts, {cfg.epochs} epoch, "
             f"{cfg.max_length} tokens, {cfg.test_examples} test texts)",
             f"{'method':<18}{'accuracy':>9}{'trainable':>12}{'samples/s':>11}{'w/ cache':>10}{'peak MiB':>10}"]
    for r in methods:
        lines.append(f"{r['method']:<18}{r['accuracy']:>9.3f}{r['trainable_params']:>12,d}"
                     f"{r['samples_per_s']:>11.1f}{r['samples_per_s_with_cache']:>10.1f}"
                     f"{r['peak_rss_mib']:>10.0f}")
    if "lora_top" in by and "lora_top_nocache" in by:
        ratio = by["lora_top"]["samples_per_s"] / by["lora_top_nocache"]["samples_per_s"]
        lines.append(f"top-block caching speed-up: {ratio:.2f}x steady state (target 2x), "
                     f"{by['lora_top']['samples_per_s_with_cache'] / by['lora_top_nocache']['samples_per_s']:.2f}x "
                     "counting the one-off cache pass")
    lines.append("cost model, 512 tokens, batch 8, fp16 frozen weights (model, config: trainable, payload MiB, memory GiB):")
    for r in cost_table():
        lines.append(f"  {r['model']:<17}{r['config']:<22}{r['trainable_params']:>15,d}{r['payload_mib']:>11.2f}"
                     f"{r['memory_gib']:>9.1f}")
    lines.append("block importance (squared grad norm): " + ", ".join(f"{v:.3g}" for v in importance))
    for r in budgets:
        lines.append(f"budget {r['budget_fraction']:.2f}: {r['allocation']:<9} ranks {str(r['sizes']):<22} "
                     f"accuracy {r['accuracy']:.3f}  memory {r['memory_mib']:.0f} MiB"
                     + ("" if r["status"] == "uniform" or r["status"].startswith("optimal") else f"  ({r['status']})"))
    if cfg.model == "random-bert":
        lines.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    return "\n".join(lines)
