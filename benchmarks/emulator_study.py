"""`deft6g emulator`: a FoMo emulator worth downloading (DEFT technique 3, emulator mode; offsite-tuning).

Devices tune LoRA (rank 8, query/value) in the top block of an emulator of the pretrained MiniLM and the
server plugs the aggregated weights into the full model. The emulators are those of
`deft6g.finetune.EmulatorBuilder` (the construction `deft6g study`'s emulator mode sends too), cumulative:
layer drop alone (blocks `emulator_blocks(6, bottom, top, drop)`); + vocabulary pruning to the tokens of the
server's public corpus (`public`, BBC news: no uplink, nothing of the devices' texts; device tokens outside it
become [UNK], rates reported for the training and test texts); + int8 weights (per column/row scales,
dequantised compute); + low-rank (truncated SVD, `rank_fraction`) projections of the middle blocks. Each with
and without distillation alignment: the middle blocks trained on public paragraphs to match the full model's
hidden state at the top boundary (MSE), after the SVD step and before int8; its learning rate and number of
texts are chosen on the grid `distill_lrs` x `distill_texts` by the boundary MSE on `validation_texts` held-out
public paragraphs (no device data, no labels; tuning.csv; the default grid holds the one setting that the full
grid of configs/emulator_paper.toml chose). Reference: devices holding the full model ("full").
The download is what `pack_emulator` sends (tensors, dtypes, vocabulary mask, config).

Training per (variant, distill, seed): FederatedDEFT, ideal aggregation, `devices` IID devices, `rounds`
rounds of `local_steps` Adam steps on cached activations (the emulator's own lower blocks compute its
top-block input); a seed changes LoRA/head init, partition and batches, and each distilled emulator is
distilled per seed with the chosen setting (its distillation batches), so the CIs include the emulator's
variability. Plug-in accuracy: the full model with the plugged weights on the whole test split, used once for
the final numbers; emulator accuracy: the emulator itself. "Within `equivalence_margin` of the full model" is a
paired TOST over seeds (`deft6g.experiment.tost`): "equivalent" or "not shown". Device cost: memory =
downloaded weights + LoRA/head with Adam states + activations of the top block for a batch (cost model,
`finetune/peft/cost.py`); time of one training step from tokens (batch x max_length; forward through every block,
backward through the top block), measured here, wall and CPU seconds (fastest of `timing_repeats`).
Files: tuning.csv (the distillation grid with its validation MSE and the choice), emulators.csv (per emulator:
download, UNK rates, memory, step time, from the first seed's emulator; they do not depend on the seed),
results.csv (per seed, with the distillation's validation MSE), summary.csv (with the TOST), config.json,
summary.txt, timing.json, download_vs_accuracy.png; resumable.
"""

import math
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
import tensorflow as tf
import tf_keras as keras

from deft6g.deprecation import renamed_fields
from deft6g.experiment import (ScalarWriter, Stage, Study, check_log_dir, load_flat_config, mean_ci, paired_ci, run,
                               run_name, tost)
from deft6g.finetune import (DATASETS, EmulatorBuilder, FederatedDEFT, IdealAggregator, LoraConfig, cached_arrays,
                             dims_of, emulator_config, evaluate, get_peft_model, load_study_data, make_train_step,
                             partition, peft_cost, plug_in)
from deft6g.experiment.plots import plt
from deft6g.finetune.peft.data import content_digest
from deft6g.finetune.federation.emulator_builder import VARIANTS, EmulatorRecipe, package_key  # noqa: F401 (re-export)
from deft6g.finetune.federation.emulator_builder import package_digest
from deft6g.finetune.federation.emulator_package import download_bits, package_config, remap_tokens, token_map, \
    unpack_emulator
from deft6g.finetune.peft.fomo import model_key


EMU_KEY = ["variant", "distill"]
EMU_TYPES = {"variant": str, "distill": bool, "kept": str, "download_bits": int, "download_ratio": float,
             "vocab_size": int, "train_unk_rate": float, "unk_rate": float, "memory_bytes": int, "memory_ratio": float,
             "step_wall_s": float, "step_cpu_s": float, "step_speedup": float}
RESULT_KEY = ["variant", "distill", "seed"]
RESULT_TYPES = {"variant": str, "distill": bool, "seed": int, "plug_accuracy": float, "emulator_accuracy": float,
                "mse_before": float, "mse_after": float, "distill_s": float, "train_s": float}
RESULT_FIELDS = list(RESULT_TYPES)
# keys before 0.1.0, one distillation setting, now the grid chosen on validation: {old: (new, old value -> new)}
RENAMED_KEYS = {"distill_lr": ("distill_lrs", lambda lr: [lr]), "public_texts": ("distill_texts", lambda n: [n]),
                "lora_rank": ("r", int)}
TUNING_TYPES = {"middle": str, "distill_lr": float, "distill_texts": int, "val_mse_before": float,
                "val_mse_after": float, "chosen": bool}


@renamed_fields({"lora_rank": "r"})
@dataclass
class EmulatorStudyConfig:
    """The study's grid and training budget (see the module docstring); the emulator recipe's keys are those
    of `deft6g.finetune.EmulatorRecipe`; r: the devices' LoRA rank."""
    model: str = "all-MiniLM-L6-v2"
    max_length: int = 48
    dataset: str = "rotten_tomatoes"
    train_examples: int = 2000            # of the seeded 80/20 split's training part (0: all)
    test_examples: int = 0                # 0: the whole test split
    public: str = "bbc_news"
    vocab_texts: int = 0
    bottom: int = 1
    top: int = 1
    drop: float = 0.5
    rank_fraction: float = 0.25
    distill_steps: int = 200
    distill_batch: int = 32
    distill_lrs: list = field(default_factory=lambda: list(EmulatorRecipe().distill_lrs))
    distill_texts: list = field(default_factory=lambda: list(EmulatorRecipe().distill_texts))
    validation_texts: int = 400
    variants: list = field(default_factory=lambda: list(VARIANTS))
    distill: list = field(default_factory=lambda: [False, True])
    r: int = 8
    devices: int = 4
    rounds: int = 6
    local_steps: int = 4
    batch_size: int = 32
    lr: float = 1e-2
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    equivalence_margin: float = 0.01
    timing_repeats: int = 5

    @classmethod
    def quick(cls):
        return cls(model="random-bert", distill_texts=[40], distill_lrs=[1e-4, 1e-3], validation_texts=8,
                   train_examples=64, test_examples=48, distill_steps=3, devices=2, rounds=1, local_steps=2,
                   seeds=[0, 1], timing_repeats=1, variants=["full", "drop+vocab+int8+lowrank"])

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"`dataset` {self.dataset!r} is unknown; known: {sorted(DATASETS)}")
        if self.public == self.dataset:
            raise ValueError(f"`public` must be another dataset than the devices' `dataset`, got {self.public!r}")
        self.recipe()                                     # checks the recipe's keys
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"`variants` must be a non-empty subset of {VARIANTS}, got {self.variants}")
        if not set(self.distill) <= {False, True} or not self.distill:
            raise ValueError(f"`distill` must be a non-empty subset of [False, True], got {self.distill}")
        if len(set(self.seeds)) < 2 or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"`seeds` must hold at least 2 distinct ints >= 0 (paired CIs, TOST), got {self.seeds}")
        if not 0 < self.equivalence_margin < 1:
            raise ValueError(f"`equivalence_margin` must be in (0, 1) (accuracy), got {self.equivalence_margin}")

    def recipe(self):
        """The EmulatorRecipe of this configuration."""
        return EmulatorRecipe(**{f.name: getattr(self, f.name) for f in fields(EmulatorRecipe)})


def load_emulator_config(path=None, quick=False):
    """The default (or `quick`) EmulatorStudyConfig with the top-level keys of the TOML file `path` replaced
    (`load_flat_config`; the keys renamed before 0.1.0 mapped with a warning)."""
    return load_flat_config(EmulatorStudyConfig.quick() if quick else EmulatorStudyConfig(), path, RENAMED_KEYS)


def emulator_points(cfg):
    """Every (variant, distill) emulator; distill is a bool (the result store matches it to the files' "True")."""
    return [{"variant": v, "distill": bool(d)} for v in cfg.variants
            for d in ([False] if v == "full" else cfg.distill)]


def study_points(cfg):
    """Grouped by emulator (each is built or loaded once per group), seeds innermost."""
    return [{**p, "seed": s} for p in emulator_points(cfg) for s in cfg.seeds]


class _Setup:
    """What the points share: the full model and its cached test input, the devices' data, the server's
    EmulatorBuilder and per emulator (built lazily, packages cached on disk) its package, device model and cached
    activations."""

    def __init__(self, cfg):
        self.cfg = cfg
        recipe = load_study_data(cfg.dataset, cfg.model, cfg.max_length, cfg.train_examples, cfg.test_examples)
        data, train, test = recipe.data, recipe.split.train, recipe.split.test      # train: fit + validation
        self.y_train, self.y_test = data.y[train], data.y[test]
        self.num_labels = recipe.num_labels
        self.model, self.tok = recipe.model, recipe.tokenizer
        self.x_train, self.x_test = recipe.inputs(train), recipe.inputs(test)
        self.builder = EmulatorBuilder(self.model, self.tok, cfg.recipe(), cfg.max_length, model_key(cfg.model))
        self.n_blocks, self.kept = self.model.config.num_hidden_layers, self.builder.kept
        self.peft_cfg = LoraConfig(r=cfg.r, lora_alpha=2.0 * cfg.r, target_modules=["query", "value"],
                                   layers_to_transform=[self.n_blocks - 1])
        self.full = get_peft_model(self.model, self.peft_cfg, num_labels=self.num_labels)
        self.full_start = self.full.lowest_tuned_block()
        self.key = [model_key(cfg.model), cfg.max_length, content_digest(data),             # by content
                    content_digest(np.asarray(train))]
        self.full_test = self._acts(self.full, self.x_test, self.full_start, ["full-test", test.tolist()])
        self.full_train = None
        self.emulators = {}

    def _acts(self, peft, x, block, key):
        z = cached_arrays(self.key + key + [block], lambda: dict(zip("hm", peft.activations(x, block))))
        return z["h"], z["m"]

    def step_batch(self, package):
        """The timed step's batch: (x dict [B, T] of token ids, mapped to the vocabulary of `package` unless
        None, y [B])."""
        b = self.cfg.batch_size
        x = {k: v[:b] for k, v in self.x_train.items()}
        if package is not None:
            x, _ = remap_tokens(x, token_map(package, self.tok.unk_token_id), self.tok.unk_token_id)
        return x, self.y_train[:b]

    def emulator(self, variant, distill, seed):
        """dict: package (what is sent), stats, device PeftModel, its train/test activations, unk rates. A
        distilled emulator is distilled per `seed` (its distillation batches); the others do not depend on it.
        Only the last one asked for is kept in memory (the points come grouped by emulator, and each holds a
        model and its activations)."""
        key = (variant, distill, seed if distill else None)      # an undistilled emulator is the same for every seed
        if key in self.emulators:
            return self.emulators[key]
        self.emulators.clear()
        if variant == "full":
            d = {"package": self.builder.package("full", False, seed)[0], "stats": {}, "device": self.full,
                 "kept": list(range(self.n_blocks)), "train": self._full_train(), "test": self.full_test,
                 "unk_rate": 0.0, "train_unk_rate": 0.0}
            self.emulators[key] = d
            return d
        package, stats = self.builder.package(variant, distill, seed)
        device = get_peft_model(unpack_emulator(package), emulator_config(self.peft_cfg, self.kept, self.n_blocks),
                                num_labels=self.num_labels)
        lookup = token_map(package, self.tok.unk_token_id)
        x_train, train_unk = remap_tokens(self.x_train, lookup, self.tok.unk_token_id)
        x_test, unk = remap_tokens(self.x_test, lookup, self.tok.unk_token_id)
        start = device.lowest_tuned_block()
        tag = [variant, distill, package_digest(package)]
        d = {"package": package, "stats": stats, "device": device, "kept": self.kept, "unk_rate": unk,
             "train_unk_rate": train_unk, "train": self._acts(device, x_train, start, tag + ["train"]),
             "test": self._acts(device, x_test, start, tag + ["test"])}
        self.emulators[key] = d
        return d

    def _full_train(self):
        if self.full_train is None:
            self.full_train = self._acts(self.full, self.x_train, self.full_start, ["full-train"])
        return self.full_train


def _step_time(peft, x, y, repeats):
    """(wall s, CPU s) of one Adam training step from tokens (x dict [B, T]), after a warm-up: the fastest of
    `repeats` steps, the one least disturbed by other jobs on a shared machine."""
    step = make_train_step(peft, keras.optimizers.Adam(1e-4))
    step(x, y)
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        float(step(x, y))
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return float(np.min(walls)), float(np.min(cpus))


def _device_memory(setup, d):
    """Bytes on the device: downloaded weights + the cost model's trainable state and activations."""
    dims = replace(dims_of(setup.model), num_blocks=len(d["kept"]))
    cost = peft_cost(dims, d["device"].peft_config, tokens=setup.cfg.max_length, batch_size=setup.cfg.batch_size,
                     num_labels=setup.num_labels)
    return download_bits(d["package"]) // 8 + cost.memory_optimizer + cost.memory_activations


def _emulator_row(setup, point):
    """The emulators.csv row of `point` (variant, distill): download, vocabulary, UNK rates, device memory and
    step time, each as a ratio to the full model's row (`point["full"]`; the full model's own point has none)."""
    d = setup.emulator(point["variant"], point["distill"], setup.cfg.seeds[0])    # size and cost: seed-independent
    wall, cpu = _step_time(d["device"], *setup.step_batch(None if point["variant"] == "full" else d["package"]),
                           setup.cfg.timing_repeats)
    bits, mem = download_bits(d["package"]), _device_memory(setup, d)
    full = point.get("full") or {"download_bits": bits, "memory_bytes": mem, "step_wall_s": wall}
    return {"kept": " ".join(map(str, d["kept"])), "download_bits": bits,
            "download_ratio": full["download_bits"] / bits, "vocab_size": package_config(d["package"])["vocab_size"],
            "train_unk_rate": d["train_unk_rate"], "unk_rate": d["unk_rate"], "memory_bytes": mem,
            "memory_ratio": full["memory_bytes"] / mem, "step_wall_s": wall, "step_cpu_s": cpu,
            "step_speedup": full["step_wall_s"] / wall}


def _run_point(setup, point, log_dir=None):
    """One training point's results.csv row; log_dir: each round's loss, examples and devices as TensorBoard
    scalars (step = round from 0) in the point's run (`deft6g.experiment.run_name` of its key; replaced when the
    point is re-run)."""
    cfg, seed = setup.cfg, point["seed"]
    d = setup.emulator(point["variant"], point["distill"], seed)
    t0 = time.process_time()
    device = d["device"]
    device.reset_parameters(seed)
    parts = partition(setup.y_train, cfg.devices, "iid", seed=seed)
    devices = [((d["train"][0][i], d["train"][1][i]), setup.y_train[i]) for i in parts]
    start = device.lowest_tuned_block()
    fed = FederatedDEFT(device, devices, IdealAggregator(), start, cfg.local_steps, cfg.batch_size, cfg.lr,
                        lora_aggregation="frozen_a", seed=seed)
    if log_dir is None:
        fed.run(cfg.rounds)
    else:
        with ScalarWriter(log_dir, run_name(point, RESULT_KEY), fresh=True) as events:
            fed.run(cfg.rounds, progress=lambda g: events.write(g.round, {"loss": g.loss, "examples": g.examples,
                                                                          "devices": g.devices}))
    emu_acc = evaluate(device, d["test"], setup.y_test, start_block=start)
    if device is not setup.full:
        plug_in(setup.full, device, d["kept"])
    plug = evaluate(setup.full, setup.full_test, setup.y_test, start_block=setup.full_start)
    s = d["stats"]
    return {**point, "plug_accuracy": plug, "emulator_accuracy": emu_acc,
            "mse_before": s.get("mse_before", float("nan")), "mse_after": s.get("mse_after", float("nan")),
            "distill_s": round(s.get("seconds", 0.0), 2), "train_s": round(time.process_time() - t0, 2)}


def tuning_points(cfg, done=None):
    """The distillation grid of every distilled middle the configuration uses (tuning.csv's key), in the
    builder's order."""
    return [{"middle": m, "distill_lr": lr, "distill_texts": n} for m in _middles(cfg) for n in cfg.distill_texts
            for lr in cfg.distill_lrs]


def _tuning_row(setup, point):
    """The tuning.csv row of one grid point: the builder scores its middle's whole grid once per process."""
    rows = setup.builder.tune(point["middle"] == "low rank")[1]
    return next(r for r in rows if (r["distill_lr"], r["distill_texts"]) == (point["distill_lr"],
                                                                              point["distill_texts"]))


def compressed_points(cfg, done):
    """The emulators but the full model, each carrying the full model's emulators.csv row (`full`), the
    reference of its ratios."""
    full = next(r for r in done["emulators.csv"] if r["variant"] == "full")
    return [{**p, "full": full} for p in emulator_points(cfg) if p["variant"] != "full"]


def _middles(cfg):
    """The distilled middles the configuration uses (tuning.csv's `middle`): "float", "low rank"."""
    if True not in cfg.distill:
        return []
    return [("low rank" if low else "float") for low in sorted({"lowrank" in v for v in cfg.variants if v != "full"})]


class EmulatorStudy(Study):
    """The study on the protocol (`deft6g.experiment.Study`), in turn: tuning.csv (the distillation grid, here),
    emulators.csv (sizes and step times, here: the full model's row, then the others' against it) and
    results.csv (the training points, on workers, all points of a seed to one worker); summary.csv derived.
    log_dir: per-round TensorBoard scalars of every training point run now (`_run_point`). `run_emulator_study`
    runs it."""
    name = "emulator"

    def __init__(self, log_dir=None):
        self.log_dir = log_dir

    def config(self, quick=False):
        return load_emulator_config(None, quick)

    def stages(self):
        emulators = dict(key=EMU_KEY, types=EMU_TYPES, run_point=_emulator_row, here=True,
                         describe=lambda p, r: f"{_name(p)}: {r['download_ratio']:.2f}x smaller download")
        return [Stage("tuning.csv", list(TUNING_TYPES)[:3], TUNING_TYPES, tuning_points, _tuning_row, here=True),
                Stage("emulators.csv", points=lambda cfg, done: [{"variant": "full", "distill": False}], **emulators),
                Stage("emulators.csv", points=compressed_points, **emulators),
                Stage("results.csv", RESULT_KEY, RESULT_TYPES, lambda cfg, done: study_points(cfg), self.train,
                      lambda p, r: f"{_name(p)} seed {p['seed']}: plug-in {r['plug_accuracy']:.3f}, emulator "
                                   f"{r['emulator_accuracy']:.3f}", group=["seed"])]

    def setup(self, cfg):
        tf.get_logger().setLevel("ERROR")      # each emulator is a new model: its compiled functions trace anew
        return _Setup(cfg)

    def train(self, setup, point):
        return _run_point(setup, point, self.log_dir)

    def derive(self, cfg, rows):
        return {**rows, "summary": summary_rows(rows["emulators.csv"], rows["results.csv"], cfg.equivalence_margin)}

    def tables(self, cfg, rows):
        return {"summary.csv": (SUMMARY_FIELDS, rows["summary"])}

    def summary(self, cfg, rows):
        return summary(cfg, rows["summary"], rows["tuning.csv"])

    def plot(self, out, cfg, rows):
        plot(out, cfg, rows["summary"])


def run_emulator_study(out_dir, config=None, quick=False, log=print, log_dir=None, **parallel):
    """Run (or resume) the study into `out_dir` (`deft6g.experiment.run`); `config`: an EmulatorStudyConfig, a
    TOML path (`load_emulator_config`, with `quick`) or None (the default, or the quick one). Returns the
    `StudyResult` (.derived["summary"]: summary.csv's rows; .timing["cpu_s"]: None when training points ran on
    workers).
    parallel: workers, ray_address, worker_gpus of `deft6g.experiment.run_points`, for the training points (each
    seed on one worker); the distillation grid and the emulators' sizes and step times run here first.
    log_dir: TensorBoard folder, one run per training point run now (`_run_point`; finished points write
    nothing); None: no events."""
    cfg = config if isinstance(config, EmulatorStudyConfig) else load_emulator_config(config, quick)
    if log_dir is not None:
        check_log_dir(log_dir)
    r = run(EmulatorStudy(log_dir), out_dir, cfg, log=log, **parallel)
    return r.with_legacy("run_emulator_study", (r.config, r.derived["summary"], r.timing["cpu_s"],
                                                r.rows["tuning.csv"]))


def _name(p):
    return p["variant"] + (" + distill" if p["distill"] else "")


SUMMARY_FIELDS = ["variant", "distill", "n", "download_bits", "download_ratio", "vocab_size", "train_unk_rate",
                  "unk_rate", "mse_before", "mse_after", "memory_ratio", "step_speedup", "step_cpu_speedup", "plug_mean",
                  "plug_ci", "emulator_mean", "emulator_ci", "gap_mean", "gap_ci", "vs_full_mean", "vs_full_ci",
                  "tost_margin", "tost_low", "tost_high", "tost_p", "tost_verdict"]


def summary_rows(emu_rows, rows, margin=0.01):
    """Per emulator: its download/cost columns, plug-in and emulator accuracy (mean, 95% CI over seeds), the
    emulator-minus-plug-in gap and plug-in minus full-model devices, both paired per seed, and the paired TOST of
    plug-in against full-model devices within +-`margin` (90% interval, p, "equivalent" / "not shown"; empty for
    the full model itself and with fewer than 2 pairs)."""
    full = {r["seed"]: r["plug_accuracy"] for r in rows if r["variant"] == "full"}
    full_cpu = [e["step_cpu_s"] for e in emu_rows if e["variant"] == "full"]
    out = []
    for e in emu_rows:
        mine = [r for r in rows if r["variant"] == e["variant"] and r["distill"] == e["distill"]]
        if not mine:
            continue
        plug = [r["plug_accuracy"] for r in mine]
        emu = [r["emulator_accuracy"] for r in mine]
        paired = [(r["plug_accuracy"], full[r["seed"]]) for r in mine if r["seed"] in full]
        s = {k: e[k] for k in SUMMARY_FIELDS if k in e}
        s["n"] = len(mine)
        s["step_cpu_speedup"] = full_cpu[0] / e["step_cpu_s"] if full_cpu else float("nan")
        for k in ("mse_before", "mse_after"):
            s[k] = float(np.mean([r[k] for r in mine]))
        s["plug_mean"], s["plug_ci"] = mean_ci(plug)
        s["emulator_mean"], s["emulator_ci"] = mean_ci(emu)
        s["gap_mean"], s["gap_ci"] = paired_ci(emu, plug)
        s["vs_full_mean"], s["vs_full_ci"] = paired_ci(*zip(*paired)) if paired else (float("nan"),) * 2
        t = tost(*zip(*paired), margin) if e["variant"] != "full" and len(paired) >= 2 else {}
        s.update(tost_margin=margin, tost_low=t.get("low", float("nan")), tost_high=t.get("high", float("nan")),
                 tost_p=t.get("p", float("nan")), tost_verdict=t.get("verdict", ""))
        out.append(s)
    return out


def plot(out, cfg, s_rows):
    """download_vs_accuracy.png, two panels along the compression steps (x: full model, layer drop,
    + vocabulary, + int8, + low rank, each labelled with its download in MB and ratio to the full model):
    (a) plug-in accuracy, mean and 95% CI over seeds, one curve per distillation setting, the full model as a
    point and a CI band; (b) plug-in accuracy minus that of devices holding the full model, paired per seed,
    in points, with the +-margin band of the equivalence test and each point's TOST verdict ("equiv." or "not
    shown") under it. The distilled curve is drawn slightly to the right so that the error bars do not hide each
    other."""
    if not s_rows:
        return
    order = [v for v in VARIANTS if any(s["variant"] == v for s in s_rows)]
    pos = {v: i for i, v in enumerate(order)}
    names = {"full": "full model", "drop": "layer drop", "drop+vocab": "+ vocabulary", "drop+vocab+int8": "+ int8",
             "drop+vocab+int8+lowrank": "+ low rank"}
    labels = {}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    full = [s for s in s_rows if s["variant"] == "full"]
    for s in s_rows:
        labels[s["variant"]] = (f"{names[s['variant']]}\n{s['download_bits'] / 8e6:.1f} MB\n"
                                f"{s['download_ratio']:.1f}x smaller")
    if full:
        m, ci = full[0]["plug_mean"], full[0]["plug_ci"]
        label = "devices hold the full model"
        axes[0].errorbar([pos["full"]], [m], yerr=[ci], marker="s", ms=5, capsize=3, color="C2", ls="none",
                         label=label)
        axes[0].axhline(m, ls="--", lw=1, color="C2")
        axes[0].axhspan(m - ci, m + ci, color="C2", alpha=0.12, lw=0)
        axes[1].axhline(0.0, ls="--", lw=1, color="C2", label=label)
        margin = 100 * cfg.equivalence_margin
        axes[1].axhspan(-margin, margin, color="C3", alpha=0.08, lw=0,
                        label=f"equivalence margin +-{margin:g} point (paired TOST, 5%)")
    for i, distill in enumerate([False, True]):
        mine = sorted((s for s in s_rows if s["variant"] != "full" and s["distill"] == distill),
                      key=lambda s: pos[s["variant"]])
        if not mine:
            continue
        xs = [pos[s["variant"]] + (0.06 if distill else -0.06) for s in mine]
        style = dict(marker="o", ms=4, capsize=3, lw=1.3, color=f"C{i}",
                     label=f"emulator, {'distilled' if distill else 'not distilled'}")
        axes[0].errorbar(xs, [s["plug_mean"] for s in mine], yerr=[s["plug_ci"] for s in mine], **style)
        axes[1].errorbar(xs, [100 * s["vs_full_mean"] for s in mine], yerr=[100 * s["vs_full_ci"] for s in mine],
                         **style)
        for x, s in zip(xs, mine):
            if s["tost_verdict"]:
                axes[1].annotate("equiv." if s["tost_verdict"] == "equivalent" else "not shown",
                                 (x, 100 * (s["vs_full_mean"] - s["vs_full_ci"])), xytext=(0, -9),
                                 textcoords="offset points", ha="center", fontsize=6.5, color=f"C{i}")
    for ax in axes:
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([labels[v] for v in order], fontsize=7.5)
        ax.set_xlim(-0.4, len(order) - 0.6)
        ax.set_xlabel("compression (cumulative), download, ratio to the full model", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left", ncol=2 if ax is axes[0] else 1)
    lo, hi = axes[0].get_ylim()
    axes[0].set_ylim(lo - 0.2 * (hi - lo), hi)            # room for the legend under the error bars
    axes[0].set(ylabel="plug-in test accuracy (full model, plugged weights)", title="(a) plug-in accuracy")
    axes[1].set(ylabel="plug-in minus full-model devices [points]",
                title="(b) accuracy lost by tuning on the emulator (paired per seed)")
    seeds = max(s["n"] for s in s_rows)
    fig.text(0.01, 0.01, f"mean and 95% CI over {seeds} seeds (each distils its own emulator); {cfg.model}, "
             f"LoRA r={cfg.r} in the top block, {cfg.devices} devices x {cfg.rounds} rounds, "
             f"{cfg.dataset} ({cfg.train_examples or 'all'} training texts, {cfg.test_examples or 'whole'} test split);\n"
             f"vocabulary and distillation from {cfg.public} (distillation lr {cfg.distill_lrs} x texts "
             f"{cfg.distill_texts}, scored on held-out {cfg.public} paragraphs, tuning.csv)",
             fontsize=7, color="0.3")
    fig.suptitle("FoMo emulator: download size vs plug-in accuracy", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out / "download_vs_accuracy.png", dpi=120)
    plt.close(fig)


def summary(cfg, s_rows, tuning_rows=()):
    """The printed table (summary.txt): the emulators' sizes, speeds and accuracies, and the distillation's
    tuning."""
    chosen = "; ".join(f"{r['middle']} middle: lr {r['distill_lr']:g} on {r['distill_texts']} texts "
                       f"(validation MSE {r['val_mse_after']:.3g})"
                       for r in tuning_rows if r["chosen"]) or "none"
    margin = 100 * cfg.equivalence_margin
    how = (f"setting chosen on {cfg.validation_texts} held-out public paragraphs by a grid of lr {cfg.distill_lrs} x "
           f"texts {cfg.distill_texts} (tuning.csv)" if len(cfg.distill_lrs) * len(cfg.distill_texts) > 1 else
           f"one setting, not tuned here (configs/emulator_paper.toml scores the grid), its MSE on "
           f"{cfg.validation_texts} held-out public paragraphs in tuning.csv")
    lines = [f"FoMo emulator study: {cfg.model} on {cfg.dataset} ({cfg.train_examples or 'all'} training texts), "
             f"LoRA r={cfg.r} q/v in the top block, {cfg.devices} devices x {cfg.rounds} rounds x "
             f"{cfg.local_steps} steps; vocabulary from {cfg.public}; distillation on {cfg.public} paragraphs, "
             f"{cfg.distill_steps} Adam steps, one distilled emulator per seed, {how}: {chosen}. "
             f"Mean +- 95% CI over {len(cfg.seeds)} seeds; differences "
             f"paired per seed; TOST: paired equivalence of plug-in and full-model devices within +-{margin:g} point.",
             f"{'emulator':<34}{'download MB':>12}{'x smaller':>10}{'UNK % train/test':>17}{'mem x':>7}{'step x':>7}"
             f"{'cpu x':>7}{'plug-in acc':>17}{'emulator acc':>17}{'emu - plug':>17}{'plug - full':>17}"
             f"{'TOST 90% interval':>19}{'verdict':>11}{'MSE before>after':>20}"]
    for s in s_rows:
        mse = "" if math.isnan(s["mse_before"]) else f"{s['mse_before']:.3g} > {s['mse_after']:.3g}"
        interval = ("" if not s["tost_verdict"] else
                    f"{100 * s['tost_low']:+.2f} .. {100 * s['tost_high']:+.2f}")
        unk = f"{100 * s['train_unk_rate']:.2f} / {100 * s['unk_rate']:.2f}"
        lines.append(f"{_name(s):<34}{s['download_bits'] / 8e6:>12.2f}{s['download_ratio']:>10.2f}"
                     f"{unk:>17}"
                     f"{s['memory_ratio']:>7.2f}{s['step_speedup']:>7.2f}{s['step_cpu_speedup']:>7.2f}"
                     f"{_pm(s['plug_mean'], s['plug_ci'])}{_pm(s['emulator_mean'], s['emulator_ci'])}"
                     f"{_pm(s['gap_mean'], s['gap_ci'], True)}{_pm(s['vs_full_mean'], s['vs_full_ci'], True)}"
                     f"{interval:>19}{s['tost_verdict'] or '-':>11}{mse:>20}")
    lines.append("x smaller / mem x / step x / cpu x: full model over emulator (download bits; device memory from "
                 "the cost model with the downloaded weights; wall / CPU time of a training step from tokens, "
                 f"fastest of {cfg.timing_repeats}, measured here); UNK: device tokens outside the public vocabulary; "
                 "TOST interval in points; MSE: boundary MSE of the distillation on the validation paragraphs, mean "
                 "over seeds")
    if cfg.model == "random-bert":
        lines.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    return "\n".join(lines)


def _pm(m, ci, sign=False):
    if math.isnan(m):
        return f"{'-':>17}"
    c = "  nan" if math.isnan(ci) else f"{ci:.3f}"
    return f"{m:>+10.3f} +- {c}" if sign else f"{m:>10.3f} +- {c}"
