"""`deft6g scale`: federated DEFT at scale -- time per round and peak RSS against the number of devices K at a
fixed number of participants per round, against the model (the packaged MiniLM and a BERT-base-sized random
model), and the default study's data path with padded float32 activations (today's cache) against the ragged
float16 store (`deft6g.finetune.peft.activation_store`).

Every run is one fresh subprocess (so its peak RSS, VmHWM, is its own): the packaged MiniLM with the
study's LoRA (rank 8, query/value, block 5) on Rotten Tomatoes, activations at block 5's input, an iid
partition of the study's training texts into K devices, stateless Adam clients, 4 local steps of 32 texts,
ideal aggregation. Time per round is the median over the rounds after the first (which traces the step).
Every figure is also given as a ratio to the K = 8 run of the same invocation (times depend on the machine
and its load, ratios less so). The model runs repeat the reference (K, participants) with another model on its
own dataset, sequence length, tuned block and number of training texts (by default BERT-base-sized on BBC news
paragraphs, which fill its 128 tokens; resident memory does not depend on the number of texts: the
activations are memory-mapped). The data-path runs (K = 8, every device in every round, the whole test split
evaluated) pair float32 and float16 per seed: peak RSS of each and the test accuracy difference (paired CI
and TOST at +-1 point).

The batching runs time the local steps of `batching` participants one after another and as one batch
(`batching_headroom`): the most a device-vectorised step could save on this machine.

Outputs: scale.csv (one row per (K, participants)), batching.csv (one row per participants count), models.csv
(one row per model), data_path.csv (one row per (data, seed)), scale.png, summary.txt, timing.json; every
invocation starts them afresh (`ScaleStudy.fresh`), and a failed run is not tried again.

Imports of TensorFlow (first, quietly: `quiet_stack`) and the library happen inside the functions, so that
each run's subprocess (`deft6g.experiment.isolated`) loads the stack whose memory it measures.
"""

import statistics
import time
from dataclasses import dataclass, field, replace

import numpy as np

from deft6g.deprecation import renamed_fields
from deft6g.environment import quiet_stack
from deft6g.experiment import (ScalarWriter, Stage, Study, check_log_dir, isolated, paired_ci, peak_rss_mb, run,
                               run_name, tost)
from deft6g.experiment.plots import plt

EQUIVALENCE_MARGIN = 0.01
_RATIOS = {c: float for c in ("round_s", "round_s_ratio", "ms_per_example", "ms_per_example_ratio", "peak_rss_mb",
                              "peak_rss_mb_ratio")}
SCALE_TYPES = {"num_devices": int, "per_round": int, "rounds": int, "round_s": float, "round_s_ratio": float,
               "examples": float, **{c: float for c in list(_RATIOS)[2:]}, "setup_s": float, "accuracy": float,
               "params_m": float, "cache_mb": float, "tokens_mean": float}
MODEL_TYPES = {"model": str, "params_m": float, "dataset": str, "max_length": int, "tokens_mean": float, "block": int,
               "train_examples": int, "num_devices": int, "per_round": int, **_RATIOS, "cache_mb": float,
               "setup_s": float}
DATA_TYPES = {"data": str, "seed": int, "peak_rss_mb": float, "round_s": float, "accuracy": float, "setup_s": float}
BATCHING_TYPES = {"per_round": int, "batch_size": int, "tokens": int, "sequential_s": float, "batched_s": float,
                  "headroom": float}
MODEL_KEY = ["model", "dataset", "max_length", "block", "train_examples"]     # an entry of ScaleConfig.models


@renamed_fields({"lora_rank": "r"})
@dataclass
class ScaleConfig:
    """grid: (K, participants per round) pairs, the first the reference of the ratios; models: [model name,
    dataset, max_length, tuned block, training texts] run at the reference pair (the tuned block's input
    cached; BBC news paragraphs fill 128 tokens, Rotten Tomatoes sentences about 27); rounds per run; seeds of
    the data-path comparison; batching: participants per round whose local steps `batching_headroom` times one
    after another and as one batch; train_examples / test_examples: 0 = the whole split; r: the LoRA rank."""
    model: str = "all-MiniLM-L6-v2"
    dataset: str = "rotten_tomatoes"
    max_length: int = 48
    train_examples: int = 0
    test_examples: int = 0
    grid: list = field(default_factory=lambda: [[8, 8], [32, 8], [128, 8], [512, 8], [512, 64]])
    batching: list = field(default_factory=lambda: [8, 64])
    models: list = field(default_factory=lambda: [["random-bert-base", "bbc_news", 128, 11, 512]])
    rounds: int = 4
    local_steps: int = 4
    batch_size: int = 32
    lr: float = 1e-2
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    r: int = 8
    block: int = 5

    @classmethod
    def quick(cls):
        return cls(train_examples=1024, test_examples=256, grid=[[8, 4], [32, 4], [32, 16]], rounds=3, seeds=[0],
                   batching=[4],
                   models=[["random-bert", "bbc_news", 64, 3, 256]])


def _data(cfg):
    """(peft model, training inputs [S, T] of the fit split, their labels, test inputs, labels, cache key)."""
    # here, not at the top: the measured subprocess loads the stack it measures (module docstring)
    from deft6g.finetune import LoraConfig, get_peft_model, load_study_data
    from deft6g.finetune.peft.data import content_digest
    from deft6g.finetune.peft.fomo import model_key
    recipe = load_study_data(cfg.dataset, cfg.model, cfg.max_length, cfg.train_examples, cfg.test_examples)
    data, model, fit, test = recipe.data, recipe.model, recipe.split.fit, recipe.split.test
    lora = LoraConfig(r=cfg.r, lora_alpha=2 * cfg.r, target_modules=["query", "value"],
                      layers_to_transform=[cfg.block])
    peft = get_peft_model(model, lora, num_labels=recipe.num_labels)
    key = [model_key(cfg.model), cfg.max_length, content_digest(data), "scale"]
    return peft, recipe.inputs(fit), data.y[fit], recipe.inputs(test), data.y[test], key, (fit, test)


def _activations(peft, x, block, key, ids, data, chunks=None):
    """The activations at `block` of inputs x: padded float32 arrays (the study's `cached_arrays` path) or a
    ragged float16 store (computed from `chunks`() when given, else by the model); both cached on disk."""
    # here, not at the top: the measured subprocess loads the stack it measures (module docstring)
    from deft6g.finetune import cached_arrays
    from deft6g.finetune.peft.activation_store import cached_activations, ragged_activations
    if data == "ragged-float16":
        if chunks is not None:
            return cached_activations([key + [ids.tolist()], block], chunks)
        return ragged_activations(peft, x, block, key + [ids.tolist()])
    z = cached_arrays(key + [ids.tolist(), block], lambda: dict(zip("hm", peft.activations(x, block))))
    return z["h"], z["m"]


def measure(cfg, num_devices, per_round, data="ragged-float16", seed=0, evaluate_test=False, log_dir=None):
    """One run in this process: {"round_s": median seconds per round after the first, "examples": training
    examples per round (median; a device holding fewer than batch_size texts steps through smaller batches),
    "ms_per_example": the median over those rounds of round time / examples [ms], "peak_rss_mb": this
    process's peak resident memory [MB] so far, "setup_s", "accuracy" (test split, NaN unless evaluate_test),
    "params_m": the model's parameters [millions], "cache_mb": the training activations' size [MB],
    "tokens_mean": real (unpadded) tokens per training text}.
    log_dir: after each round (outside its timing), TensorBoard scalars loss, round_s, examples and devices at
    step = round, in the run named by the arguments (`deft6g.experiment.run_name`; a re-run replaces it)."""
    quiet_stack()                                   # TensorFlow's start-up, and its native notices, before the clock
    # here, not at the top: the measured subprocess loads the stack it measures (module docstring)
    from deft6g.finetune import FederatedDEFT, IdealAggregator, evaluate, partition
    from deft6g.finetune.peft.training import take
    t0 = time.time()
    peft, x_fit, y_fit, x_test, y_test, key, (fit, test) = _data(cfg)
    peft.reset_parameters(seed)
    train = _activations(peft, x_fit, cfg.block, key, fit, data)
    cache_mb = (train.nbytes if data == "ragged-float16" else sum(a.nbytes for a in train)) / 2 ** 20
    tokens_mean = float(np.mean(train.lengths if data == "ragged-float16" else train[1].sum(1)))
    parts = partition(y_fit, num_devices, "iid", seed=seed)
    split = (lambda p: train.subset(p)) if data == "ragged-float16" else (lambda p: take(train, p))
    devices = [(split(p), y_fit[p]) for p in parts]
    del train                                   # the study keeps only the devices' copies
    fed = FederatedDEFT(peft, devices, IdealAggregator(), cfg.block, cfg.local_steps, cfg.batch_size, cfg.lr,
                        seed=seed, clients_per_round=per_round if per_round < num_devices else None)
    setup_s = time.time() - t0
    times, examples = [], []
    run = {"num_devices": num_devices, "per_round": per_round, "data": data, "seed": seed, "test": evaluate_test}
    events = None if log_dir is None else ScalarWriter(log_dir, run_name(run, list(run)), fresh=True)
    for r in range(cfg.rounds):
        t = time.time()
        g = fed.run_round(r)
        times.append(time.time() - t)
        examples.append(g.examples)
        if events is not None:
            events.write(r, {"loss": g.loss, "round_s": times[-1], "examples": g.examples, "devices": g.devices})
    if events is not None:
        events.close()
    accuracy = float("nan")
    if evaluate_test:
        acts = _activations(peft, x_test, cfg.block, key, test, data)
        if data == "ragged-float16":                  # batches by length, without copying the activations
            order = np.argsort(acts.lengths, kind="stable")
            acts, y_test = acts.subset(order), y_test[order]
        accuracy = evaluate(peft, acts, y_test, start_block=cfg.block)
    steady = slice(1, None) if len(times) > 1 else slice(None)
    return {"round_s": statistics.median(times[steady]), "examples": statistics.median(examples[steady]),
            "ms_per_example": statistics.median(1e3 * t / n for t, n in zip(times[steady], examples[steady])),
            "setup_s": setup_s, "accuracy": accuracy, "peak_rss_mb": peak_rss_mb(), "cache_mb": cache_mb,
            "tokens_mean": tokens_mean, "params_m": peft.get_nb_trainable_parameters()[1] / 1e6}


def batching_headroom(cfg, per_round, repeats=5):
    """Whether running the local steps of `per_round` devices as one batched computation (over stacked adapters)
    could pay here: the fastest of `repeats` of `per_round` gradient steps of `batch_size` texts one after
    another (as FederatedDEFT runs the devices' steps; each batch cut to its longest text) against one step on
    all per_round x batch_size texts (the forward and backward passes a device-vectorised step computes at the
    least, padded to the longest of them). -> {"sequential_s", "batched_s", "headroom": sequential / batched,
    the most such a step could save, "tokens": real tokens in the texts}. Gradients without updates, so every
    step sees the same weights."""
    quiet_stack()
    # here, not at the top: the measured subprocess loads the stack it measures (module docstring)
    from deft6g.finetune.peft.training import make_grad_fn
    peft, x_fit, y_fit, _, _, key, (fit, _) = _data(cfg)
    store = _activations(peft, x_fit, cfg.block, key, fit, "ragged-float16")
    b = cfg.batch_size
    if per_round * b > len(store):
        raise ValueError(f"`batching` {per_round} x batch_size {b} texts exceed the {len(store)} training texts")
    rows = np.random.default_rng(0).choice(len(store), per_round * b, replace=False)
    parts = [(store[rows[d * b:(d + 1) * b]], y_fit[rows[d * b:(d + 1) * b]]) for d in range(per_round)]
    whole = (store[rows], y_fit[rows])
    grads = make_grad_fn(peft, cfg.block)

    def fastest(batches):
        for x, y in batches:                                    # traces every shape once, outside the timing
            grads(x, y)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for x, y in batches:
                grads(x, y)[0].numpy()
            times.append(time.perf_counter() - t)
        return min(times)

    sequential, batched = fastest(parts), fastest([whole])
    return {"sequential_s": sequential, "batched_s": batched, "headroom": sequential / batched,
            "tokens": int(store.lengths[rows].sum())}


def prepare_caches(cfg):
    """Compute both caches (padded float32 and ragged float16, training and test activations) here, once, so
    that the timed subprocesses only read them."""
    peft, x_fit, _, x_test, _, key, ids = _data(cfg)
    for x, i in zip((x_fit, x_test), ids):
        h, m = _activations(peft, x, cfg.block, key, i, "padded-float32")
        _activations(peft, x, cfg.block, key, i, "ragged-float16",
                     chunks=lambda: ((h[s:s + 1024], m[s:s + 1024]) for s in range(0, len(m), 1024)))


def model_config(cfg, model):
    """cfg for one entry [name, dataset, max_length, block, train_examples] of cfg.models."""
    name, dataset, max_length, block, n = model
    return replace(cfg, model=name, dataset=dataset, max_length=max_length, block=block, train_examples=n)


def prepare_model_cache(cfg):
    """The ragged float16 training activations of cfg's model, computed here once."""
    peft, x_fit, _, _, _, key, (fit, _) = _data(cfg)
    _activations(peft, x_fit, cfg.block, key, fit, "ragged-float16")


def with_ratios(rows, ref=None):
    """rows with round_s_ratio, ms_per_example_ratio and peak_rss_mb_ratio: each figure over `ref`'s (default the
    first row: the K = 8 reference)."""
    ref = rows[0] if ref is None else ref
    return [{**r, **{f"{c}_ratio": r[c] / ref[c] for c in ("round_s", "ms_per_example", "peak_rss_mb")}}
            for r in rows]


def data_path_summary(rows, margin=EQUIVALENCE_MARGIN):
    """{"rss_ratio": median padded-float32 peak RSS over median ragged-float16 peak RSS, "accuracy_diff":
    (mean, 95% CI half-width) of float16 minus float32 per seed, "tost": verdict at +-margin ("" below 2 seeds)}."""
    by = {d: {r["seed"]: r for r in rows if r["data"] == d} for d in ("padded-float32", "ragged-float16")}
    seeds = sorted(set(by["padded-float32"]) & set(by["ragged-float16"]))
    rss = {d: statistics.median(r["peak_rss_mb"] for r in v.values()) for d, v in by.items()}
    a16 = [by["ragged-float16"][s]["accuracy"] for s in seeds]
    a32 = [by["padded-float32"][s]["accuracy"] for s in seeds]
    return {"rss_ratio": rss["padded-float32"] / rss["ragged-float16"], "rss_mb": rss,
            "accuracy_diff": paired_ci(a16, a32) if seeds else (float("nan"), float("nan")),
            "tost": tost(a16, a32, margin=margin)["verdict"] if len(seeds) >= 2 else ""}


class ScaleStudy(Study):
    """The benchmark on the protocol (`deft6g.experiment.Study`), every run an `isolated` subprocess here, one at
    a time: scale.csv (the reference pair of the grid, then the others with their ratios to it), batching.csv,
    models.csv (ratios to the reference) and data_path.csv; scale.png. `fresh`: each invocation starts its
    tables afresh, so every ratio is within one invocation. log_dir: per-round TensorBoard scalars of every run
    (`measure`). `run_scale` runs it."""
    name = "scale"
    fresh = True

    def __init__(self, log=print, log_dir=None):
        self.log, self.log_dir = log, log_dir

    def config(self, quick=False):
        return ScaleConfig.quick() if quick else ScaleConfig()

    def stages(self):
        once = dict(here=True, retries=0)                   # one at a time, here; a failed run is not run again
        scale = dict(key=["num_devices", "per_round"], types=SCALE_TYPES, run_point=self.scale_point, **once,
                     describe=lambda p, r: f"K = {p['num_devices']}, {p['per_round']} per round: {r['round_s']:.2f} s "
                                           f"per round, peak RSS {r['peak_rss_mb']:.0f} MB")
        return [Stage("scale.csv", points=lambda cfg, done: _grid_points(cfg, cfg.grid[:1]), **scale),
                Stage("scale.csv", points=lambda cfg, done: _grid_points(cfg, cfg.grid[1:], _reference(cfg, done)),
                      **scale),
                Stage("batching.csv", ["per_round"], BATCHING_TYPES,
                      lambda cfg, done: [{"per_round": m, "batch_size": cfg.batch_size} for m in cfg.batching],
                      lambda cfg, p: isolated(batching_headroom, cfg, per_round=p["per_round"]),
                      lambda p, r: f"{p['per_round']} devices' local steps: {r['sequential_s']:.3f} s one after "
                                   f"another, {r['batched_s']:.3f} s as one batch (headroom {r['headroom']:.2f}x)",
                      **once),
                Stage("models.csv", MODEL_KEY, MODEL_TYPES, _model_points, self.model_point,
                      lambda p, r: f"{p['model']} on {p['dataset']} ({r['params_m']:.0f} M parameters, "
                                   f"{r['tokens_mean']:.0f} tokens per text): {r['round_s']:.2f} s per round, "
                                   f"peak RSS {r['peak_rss_mb']:.0f} MB", **once),
                Stage("data_path.csv", ["data", "seed"], DATA_TYPES,
                      lambda cfg, done: [{"data": d, "seed": s} for s in cfg.seeds
                                         for d in ("padded-float32", "ragged-float16")], self.data_point,
                      lambda p, r: f"{p['data']} seed {p['seed']}: peak RSS {r['peak_rss_mb']:.0f} MB, accuracy "
                                   f"{r['accuracy']:.4f}", **once)]

    def setup(self, cfg):
        t0 = time.time()
        prepare_caches(cfg)
        self.log(f"caches ready in {time.time() - t0:.0f} s")
        return cfg

    def scale_point(self, cfg, point):
        res = isolated(measure, cfg, num_devices=point["num_devices"], per_round=point["per_round"],
                       log_dir=self.log_dir)
        return with_ratios([{**point, **res}], point.get("reference"))[0]

    def model_point(self, cfg, point):
        mcfg = model_config(cfg, [point[k] for k in MODEL_KEY])
        prepare_model_cache(mcfg)
        res = isolated(measure, mcfg, num_devices=point["num_devices"], per_round=point["per_round"],
                       log_dir=None if self.log_dir is None else f"{self.log_dir}/{mcfg.model}-{mcfg.dataset}")
        return with_ratios([{**point, **res}], point["reference"])[0]      # its runs in a subfolder of its own

    def data_point(self, cfg, point):
        k0 = cfg.grid[0][0]
        return isolated(measure, cfg, num_devices=k0, per_round=k0, data=point["data"], seed=point["seed"],
                        evaluate_test=True, log_dir=self.log_dir)

    def summary(self, cfg, rows):
        return summary(cfg, *_tables(rows))

    def plot(self, out, cfg, rows):
        plot_scale(out / "scale.png", cfg, rows["scale.csv"], rows["models.csv"])


def _grid_points(cfg, pairs, reference=None):
    return [{"num_devices": k, "per_round": m, "rounds": cfg.rounds, "reference": reference} for k, m in pairs]


def _reference(cfg, done):
    """The reference run's figures that the ratios divide, from scale.csv's row of the grid's first pair."""
    k0, m0 = cfg.grid[0]
    ref = next(r for r in done["scale.csv"] if (r["num_devices"], r["per_round"]) == (k0, m0))
    return {c: ref[c] for c in ("round_s", "ms_per_example", "peak_rss_mb")}


def _model_points(cfg, done):
    k0, m0 = cfg.grid[0]
    return [{**dict(zip(MODEL_KEY, model)), "num_devices": k0, "per_round": m0,
             "reference": _reference(cfg, done)} for model in cfg.models]


def _tables(rows):
    """(scale, models, data path, batching) rows of the study's {file: rows}."""
    return tuple(rows[f] for f in ("scale.csv", "models.csv", "data_path.csv", "batching.csv"))


def run_scale(out_dir, quick=False, log=print, log_dir=None, config=None):
    """Run the benchmark into `out_dir` (`deft6g.experiment.run`; recomputed each time: ratios are within one
    invocation) with `config` (a ScaleConfig; None: the default or `quick` one); returns the `StudyResult`
    (.rows: {file: rows}). log_dir: per-round TensorBoard scalars of every run (`measure`)."""
    log_dir = None if log_dir is None else str(check_log_dir(log_dir))
    result = run(ScaleStudy(log, log_dir), out_dir, config, quick=quick, log=log)
    return result.with_legacy("run_scale", (result.config, *_tables(result.rows)))


def plot_scale(path, cfg, rows, models=()):
    """Two panels against K (log axis): time per round and peak RSS, each as a ratio to the first run; one curve
    per participants-per-round value; the time panel marks the 1.2x target. With model rows, a third panel:
    their time per round and peak RSS as ratios to the same first run (bars, absolute values written on them)."""
    fig, axes = plt.subplots(1, 3 if models else 2, figsize=(15 if models else 10, 4),
                             gridspec_kw={"width_ratios": [2, 2, 1.4] if models else [1, 1]})
    ref = rows[0]
    panels = ((axes[0], ("round_s_ratio", "ms_per_example_ratio"), "time per round"),
              (axes[1], ("peak_rss_mb_ratio",), "peak RSS"))
    for ax, cols, label in panels:
        for i, m in enumerate(sorted({r["per_round"] for r in rows})):
            for col, ls, marker, offset in zip(cols, ("-", ":"), ("o", "s"), ((-16, 6), (16, -12))):
                pts = sorted((r["num_devices"], r[col]) for r in rows if r["per_round"] == m)
                what = " (per training example)" if col == "ms_per_example_ratio" else ""
                ax.plot(*zip(*pts), marker=marker, ls=ls, color=f"C{i}", fillstyle="full" if ls == "-" else "none",
                        label=f"{m} devices per round{what}")
                for x, y in pts:
                    ax.annotate(f"{y:.2f}x", (x, y), textcoords="offset points", xytext=offset, ha="center",
                                fontsize=8, color=f"C{i}")
        if "round_s_ratio" in cols:
            ax.axhline(1.2, ls="--", color="grey", lw=1, label="target 1.2x")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices K")
        ax.set_ylabel(f"{label} / K={ref['num_devices']}, {ref['per_round']} per round")
        ax.set_ylim(0, 1.2 * max(r[c] for r in rows for c in cols))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title(f"time per round (K={ref['num_devices']}: {ref['round_s']:.2f} s)")
    axes[1].set_title(f"peak RSS (K={ref['num_devices']}: {ref['peak_rss_mb']:.0f} MB)")
    if models:
        _plot_models(axes[2], cfg, ref, models)
    fig.text(0.5, 0.01, f"{cfg.model}, LoRA r={cfg.r} block {cfg.block}, {cfg.local_steps} local steps x "
             f"{cfg.batch_size} texts, ragged float16 activations, ideal aggregation; one process per run",
             ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_models(ax, cfg, ref, models):
    """Grouped bars: time per round and peak RSS of each model run over the reference run's."""
    entries = [{"model": cfg.model, "dataset": cfg.dataset, "max_length": cfg.max_length, **ref, "round_s_ratio": 1.0,
                "peak_rss_mb_ratio": 1.0}] + list(models)
    x = np.arange(len(entries))
    for i, (col, what, fmt) in enumerate((("round_s", "time per round", "{:.2f} s"),
                                          ("peak_rss_mb", "peak RSS", "{:.0f} MB"))):
        bars = ax.bar(x + (i - 0.5) * 0.38, [e[f"{col}_ratio"] for e in entries], 0.38, color=f"C{i + 2}",
                      label=what)
        for b, e in zip(bars, entries):
            ax.annotate(fmt.format(e[col]), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=8, textcoords="offset points", xytext=(0, 2))
    ax.set_xticks(x, [f"{e['model']}\n{e['dataset']}, {e['tokens_mean']:.0f} tokens" for e in entries], fontsize=8)
    ax.set_ylabel(f"ratio to {cfg.model}")
    ax.set_ylim(0, 1.2 * max(e[c] for e in entries for c in ("round_s_ratio", "peak_rss_mb_ratio")))
    ax.set_title(f"by model (K={ref['num_devices']}, {ref['per_round']} per round)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def summary(cfg, scale, models, data_rows, batching=()):
    lines = [f"deft6g scale: {cfg.model}, {cfg.rounds} rounds per run (time per round: median after the first); "
             f"ratios to K={scale[0]['num_devices']}, {scale[0]['per_round']} per round",
             f"{'K':>6}{'per round':>10}{'s/round':>9}{'ratio':>7}{'examples':>9}{'ms/example':>11}{'ratio':>7}"
             f"{'peak RSS MB':>13}{'ratio':>7}"]
    for r in scale:
        lines.append(f"{r['num_devices']:>6}{r['per_round']:>10}{r['round_s']:>9.2f}{r['round_s_ratio']:>7.2f}"
                     f"{r['examples']:>9.0f}{r['ms_per_example']:>11.2f}{r['ms_per_example_ratio']:>7.2f}"
                     f"{r['peak_rss_mb']:>13.0f}{r['peak_rss_mb_ratio']:>7.2f}")
    for r in models:
        lines.append(f"{r['model']} ({r['params_m']:.0f} M parameters) on {r['dataset']} ({r['train_examples']} "
                     f"training texts of {r['tokens_mean']:.0f} tokens on average, at most {r['max_length']}; "
                     f"block {r['block']}; activations {r['cache_mb']:.0f} MB on disk) at "
                     f"K={r['num_devices']}, {r['per_round']} per round: {r['round_s']:.2f} s per round "
                     f"({r['round_s_ratio']:.2f}x), {r['ms_per_example']:.2f} ms per example "
                     f"({r['ms_per_example_ratio']:.2f}x), peak RSS {r['peak_rss_mb']:.0f} MB "
                     f"({r['peak_rss_mb_ratio']:.2f}x)")
    for r in batching:
        lines.append(f"{r['per_round']} devices' local steps of {r['batch_size']} texts: {r['sequential_s']:.3f} s one "
                     f"after another, {r['batched_s']:.3f} s as one batch: headroom {r['headroom']:.2f}x (the most "
                     f"batching them could save; below 1, nothing)")
    s = data_path_summary(data_rows)
    diff, ci = s["accuracy_diff"]
    lines.append(f"data path (K={cfg.grid[0][0]}, all devices, test split evaluated): peak RSS padded float32 "
                 f"{s['rss_mb']['padded-float32']:.0f} MB, ragged float16 {s['rss_mb']['ragged-float16']:.0f} MB "
                 f"(ratio {s['rss_ratio']:.2f}); accuracy float16 - float32 {diff:+.4f} +- {ci:.4f} over "
                 f"{len(cfg.seeds)} seed(s){'; TOST +-1 point: ' + s['tost'] if s['tost'] else ''}")
    return "\n".join(lines)
