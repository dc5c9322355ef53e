"""`deft6g transfer`: device-to-device prompt transfer (DEFT technique 5, SPoT) -- does starting from a
neighbour's prompt, received over a D2D link, reach a target accuracy in fewer steps than random or
vocabulary initialisation, how far down in SNR and quantiser bits does that hold, and does prompt similarity
find the neighbour an oracle would pick?

Who holds what (per seed, `deft6g.finetune.techniques.prompt_transfer.device_split`): every target device holds
`device_examples` labelled texts of its task and carves a validation split of `val_fraction` of them
(`validation_split`); every task of `tasks` is a neighbour that trains its prompt from the shared initial
prompt (the seed's vocabulary init) on its training pool minus every text a target device holds (the BBC
tasks share one corpus, so this is by dataset row, across tasks). Nobody trains on the test split: the
neighbour's test accuracy is the task's reference (upper bound), and every reported accuracy of the target
device (step 0, the curve, after the budget) is on the test split.

Per target task and seed the target device fine-tunes for `budget_steps` from random init, vocabulary init and
each neighbour's prompt (ideal link; each is a row of the table, labelled by how close its task is to the
target's: a near-duplicate shares the target's classes and label words). The similarity choice (SPoT cosine
between task embeddings after `probe_steps` probe steps on the device's training texts) and the trial choice
(each prompt's accuracy on the device's validation texts) are made on the device's own data, never on test
(choice_grid.csv: one row per candidate with its similarity and validation score); the oracle (best test
accuracy after the budget) is a labelled test-set bound. Steps to the target accuracy are reported as the
fraction of runs that reached it and the median with unreached runs censored at the budget. Then the
similarity-chosen prompt crosses the D2D link (`deft6g.phy.PromptLink`: digital with CRC and ARQ vs SNR and
quantiser bits, or analog vs SNR) and the target fine-tunes from what arrived. Files: sources.csv (each
prompt a .npy file in sources.arrays/), choices.csv, runs.csv (one row per fine-tuning run), all resumable;
choice_grid.csv, summary.csv, timing.json, config.json and PNG plots.

With `workers` each stage's points run on Ray workers (`deft6g.experiment.run_points`): a worker returns a
neighbour's prompt in its row and this process saves it; the choice and fine-tuning stages receive the
saved prompts with the study (no worker reads or writes the output folder). Every run draws from its seed,
so the rows do not depend on the number of workers.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from deft6g.deprecation import warn_renamed
from deft6g.experiment import Stage, Study, censored_median, ci_points, line_plot, mean_ci, paired_ci, run
from deft6g.finetune import load_study_model
from deft6g.finetune.techniques.prompt_transfer import (PromptClassifier, PromptTrainer, choose_by_similarity,
                                                        choose_by_trial, device_split, get_task, initial_prompt,
                                                        prompt_model, task_arrays, task_embedding, task_relation)
from deft6g.phy import PromptLink, noise_var
from deft6g.rng import derive_seed


SOURCE_TYPES = {"task": str, "seed": int, "accuracy": float, "steps": int, "train_examples": int,
                "test_examples": int, "prompt": np.ndarray}         # prompt: [num_tokens, H], a .npy file
CHOICE_TYPES = {"target": str, "seed": int, "similarity_choice": str, "similarities": dict, "trial_choice": str,
                "trial_scores": dict, "validation_examples": int}
GRID_FIELDS = ["target", "seed", "source", "relation", "similarity", "validation_accuracy", "similarity_choice",
               "trial_choice"]
# init: "random", "vocab", "source" (a neighbour's prompt, ideal link) or "link" (the similarity choice over the
# D2D link); source: the neighbour's task ("" for random and vocab); empty cells (None): not applicable
RUN_TYPES = {"target": str, "seed": int, "init": str, "link": str, "snr_db": float, "num_bits": int, "source": str,
             "start_accuracy": float, "accuracy": float, "target_accuracy": float, "steps_to_target": int,
             "examples_to_target": int, "curve": list, "payload_bits": int, "channel_uses": int, "latency_ms": float,
             "ber": float, "bler": float, "dropped_fraction": float, "prompt_nmse": float}
RUN_KEY = ["target", "seed", "init", "source", "link", "snr_db", "num_bits"]
# sub-streams of a seed (`derive_seed`): a neighbour's training batches, the probe's, the random init, the D2D
# link's channel and noise, the target device's fine-tuning batches
SOURCE_STREAM, PROBE_STREAM, RANDOM_STREAM, LINK_STREAM, FINETUNE_STREAM = range(1, 6)
SUMMARY_FIELDS = ["target", "scheme", "link", "snr_db", "num_bits", "n", "accuracy_mean", "accuracy_ci",
                  "start_accuracy_mean", "start_accuracy_ci", "reached", "reached_fraction", "steps_median",
                  "channel_uses_mean"]


@dataclass
class TransferConfig:
    model: str = "all-MiniLM-L6-v2"
    num_tokens: int = 8                 # soft-prompt vectors at the input of the top block
    max_length: int = 32
    logit_scale: float = 20.0
    lr: float = 3e-2
    batch_size: int = 16
    tasks: list = field(default_factory=lambda: ["bbc_topics5", "bbc_business_tech", "bbc_sport_entertainment",
                                                 "bbc_politics_business", "rt_sentiment"])
    targets: list = field(default_factory=lambda: ["bbc_topics5", "bbc_business_tech"])
    pool_sizes: dict = field(default_factory=lambda: {"rotten_tomatoes": [1000, 500]})
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    source_steps: int = 150
    device_examples: int = 256          # labelled texts of a target device: its training and validation texts
    val_fraction: float = 0.5           # share of them in its validation split (source choice only)
    budget_steps: int = 60
    eval_every: int = 10
    probe_steps: int = 10
    target_gap: float = 0.03            # target accuracy = the task's reference accuracy - target_gap
    link: dict = field(default_factory=lambda: dict(num_bits_per_symbol=2, code_rate=0.5, codeword_length=1200,
                                                    max_transmissions=4, num_rx_ant=2, model="rayleigh"))
    link_num_bits: int = 8
    snr_db: list = field(default_factory=lambda: [-6.0, -3.0, 0.0, 3.0])
    analog_snr_db: list = field(default_factory=lambda: [-5.0, 5.0, 15.0, 25.0])
    num_bits: list = field(default_factory=lambda: [1, 2, 3, 4])
    num_bits_snr_db: float = 20.0
    bandwidth_hz: float = 1e6

    @classmethod
    def quick(cls):
        return cls(model="random-bert", tasks=["bbc_topics5", "bbc_business_tech", "rt_sentiment"],
                   targets=["bbc_business_tech"], pool_sizes={"bbc_news": [160, 40], "rotten_tomatoes": [40, 20]},
                   seeds=[0, 1], source_steps=6, device_examples=40, val_fraction=0.4, budget_steps=6, eval_every=3,
                   probe_steps=2, snr_db=[-6.0, 6.0], analog_snr_db=[10.0], num_bits=[2])

    def validate(self):
        for name in self.tasks + self.targets:
            get_task(name)
        extra = set(self.targets) - set(self.tasks)
        if extra:
            raise ValueError(f"`targets` {sorted(extra)} must also be in `tasks` (their prompts are the references)")
        if len(self.tasks) < 2:
            raise ValueError(f"`tasks` must name at least 2 tasks (a target and a source), got {self.tasks}")
        if isinstance(self.device_examples, bool) or not isinstance(self.device_examples, int) \
                or self.device_examples < 2:
            raise ValueError(f"`device_examples` must be an integer >= 2, got {self.device_examples!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1), got {self.val_fraction!r}")


class _Setup:
    """The model, the per-task cached block inputs, who holds which texts per seed, one classifier and compiled
    trainer per task, the link."""

    def __init__(self, cfg, log):
        self.cfg = cfg
        model, tok = load_study_model(cfg.model)
        self.block = model.config.num_hidden_layers - 1
        self.peft = prompt_model(model, self.block, cfg.num_tokens)
        self.table = model.bert.embeddings.weight.numpy()
        t0 = time.time()
        self.data = task_arrays(self.peft, tok, cfg.model, cfg.tasks, self.block, cfg.max_length,
                                {k: tuple(v) for k, v in cfg.pool_sizes.items()})
        log(f"block-{self.block} inputs of {len(cfg.tasks)} tasks ready ({time.time() - t0:.0f} s; cached on disk)")
        self.splits = {s: device_split(self.data, cfg.targets, cfg.device_examples, cfg.val_fraction, s)
                       for s in cfg.seeds}
        for seed, (devices, neighbours) in self.splits.items():
            for name, (own, _) in devices.items():
                if len(own) < cfg.batch_size:
                    raise ValueError(f"target {name!r}, seed {seed}: `device_examples` = {cfg.device_examples} with "
                                     f"`val_fraction` = {cfg.val_fraction} leaves {len(own)} training texts, fewer "
                                     f"than `batch_size` = {cfg.batch_size}")
            for name, rows in neighbours.items():
                if len(rows) < cfg.batch_size:
                    raise ValueError(f"neighbour {name!r}, seed {seed}: {len(rows)} training texts are left once "
                                     f"the target devices' texts are removed, fewer than `batch_size` = "
                                     f"{cfg.batch_size}; raise `pool_sizes` or lower `device_examples`")
        self.trainers = {name: PromptTrainer(PromptClassifier(self.peft, d.labels, cfg.logit_scale), cfg.lr)
                         for name, d in self.data.items()}
        self.links = {}                                 # (mode, num_bits) -> PromptLink, built once

    def shared_init(self, seed):
        return initial_prompt("vocab", (self.cfg.num_tokens, self.peft.hidden), seed, self.table)

    def _pick(self, task, rows):
        d = self.data[task]
        return (d.train[0][rows], d.train[1][rows]), d.y_train[rows]

    def target_split(self, target, seed):
        """The target device's own training texts and its validation split: (x, y, x_val, y_val), x as cached
        block inputs (hidden [S, T, H], mask [S, T]), y int64 [S]."""
        own, val = self.splits[seed][0][target]
        return (*self._pick(target, own), *self._pick(target, val))

    def neighbour_set(self, task, seed):
        """The neighbour's training texts of `task` (no target device's text among them): (x, y)."""
        return self._pick(task, self.splits[seed][1][task])


def _train_source(setup, point):
    """A neighbour's sources.csv row: its trained prompt and its test accuracy (the task's reference)."""
    cfg, task, seed = setup.cfg, point["task"], point["seed"]
    d = setup.data[task]
    x, y = setup.neighbour_set(task, seed)
    trainer = setup.trainers[task]
    prompt, _ = trainer.run(setup.shared_init(seed), x, y, cfg.source_steps, cfg.batch_size,
                            seed=derive_seed(seed, SOURCE_STREAM, cfg.tasks.index(task)))
    return {"accuracy": trainer.accuracy(d.test, d.y_test), "steps": cfg.source_steps, "train_examples": len(y),
            "test_examples": len(d.y_test), "prompt": prompt}


def _sources_of(cfg, target):
    return [t for t in cfg.tasks if t != target]


def _choose(setup, point, prompts):
    """The similarity and trial choices of the target device, from its own texts only: the probe trains on its
    training texts, the trial scores every neighbour's prompt on its validation split."""
    cfg, target, seed = setup.cfg, point["target"], point["seed"]
    init = setup.shared_init(seed)
    x, y, x_val, y_val = setup.target_split(target, seed)
    trainer = setup.trainers[target]
    probe, _ = trainer.run(init, x, y, cfg.probe_steps, cfg.batch_size, seed=derive_seed(seed, PROBE_STREAM))
    prompts = {s: prompts[(s, seed)] for s in _sources_of(cfg, target)}
    sim_choice, sims = choose_by_similarity(task_embedding(probe, init),
                                            {s: task_embedding(p, init) for s, p in prompts.items()})
    trial_choice, scores = choose_by_trial(trainer, prompts, x_val, y_val)
    return {"target": target, "seed": seed, "similarity_choice": sim_choice, "similarities": sims,
            "trial_choice": trial_choice, "trial_scores": scores, "validation_examples": len(y_val)}


def _steps_to(curve, target_accuracy):
    return next((s for s, a in curve if a >= target_accuracy), None)


def _finetune(setup, point, references, prompts):
    """One fine-tuning run of the target device on its own training texts from the point's initial prompt (see
    RUN_TYPES; a "link" point names the similarity choice in its source); prompts: {(task, seed): the
    neighbour's prompt}. Accuracies (step 0, the curve of ideal-link runs, after the budget) are on the task's
    test split, which no party trains on."""
    cfg, target, seed, init_kind = setup.cfg, point["target"], point["seed"], point["init"]
    x, y, _, _ = setup.target_split(target, seed)
    d = setup.data[target]
    shared = setup.shared_init(seed)
    row = {**point, "payload_bits": 0, "channel_uses": 0, "latency_ms": 0.0, "ber": None, "bler": None,
           "dropped_fraction": None, "prompt_nmse": 0.0}
    if init_kind == "random":
        start = initial_prompt("random", shared.shape, derive_seed(seed, RANDOM_STREAM))
    elif init_kind == "vocab":
        start = shared
    else:                                           # a neighbour's prompt: "source" (ideal) or "link"
        start = sent = prompts[(point["source"], seed)]
        if point["link"] != "ideal":
            spec = (point["link"], point["num_bits"] or cfg.link_num_bits)
            if spec not in setup.links:
                setup.links[spec] = PromptLink(mode=spec[0], num_bits=spec[1], **cfg.link)
            link = setup.links[spec]
            res = link(sent.reshape(1, -1), noise_var=noise_var(point["snr_db"]), power=1.0,
                       seed=derive_seed(seed, LINK_STREAM), fill=shared.reshape(1, -1))
            start = res.x_hat.numpy().reshape(sent.shape)
            uses = int(res.channel_uses.sum())
            row.update(payload_bits=res.payload_bits, channel_uses=uses, latency_ms=1e3 * uses / cfg.bandwidth_hz,
                       ber=None if math.isnan(res.ber) else res.ber, bler=None if math.isnan(res.bler) else res.bler,
                       dropped_fraction=None if math.isnan(res.drop_rate) else res.drop_rate,
                       prompt_nmse=float(np.sum((start - sent) ** 2) / np.sum(sent ** 2)))
    ideal = point["link"] == "ideal"
    trainer = setup.trainers[target]
    _, curve = trainer.run(start, x, y, cfg.budget_steps, cfg.batch_size, seed=derive_seed(seed, FINETUNE_STREAM),
                           eval_set=(d.test, d.y_test), eval_every=cfg.eval_every if ideal else 0)
    target_acc = references[(target, seed)] - cfg.target_gap
    steps = _steps_to(curve, target_acc) if ideal else None
    final = curve[-1][1] if curve[-1][0] == cfg.budget_steps else trainer.accuracy(d.test, d.y_test)
    row.update(start_accuracy=curve[0][1], accuracy=final, target_accuracy=target_acc, steps_to_target=steps,
               examples_to_target=None if steps is None else steps * cfg.batch_size,
               curve=[list(p) for p in curve] if ideal else None)                      # JSON: lists, not tuples
    return row


def run_points_for(cfg, choices):
    """(source points, choice points, run points) of the study, seeds outermost; the run points of the "link"
    init carry the similarity choice of `choices` ({(target, seed): choices.csv row}) as their source, and are
    left out while it is missing."""
    sources = [{"task": t, "seed": s} for s in cfg.seeds for t in cfg.tasks]
    targets = [{"target": t, "seed": s} for s in cfg.seeds for t in cfg.targets]
    runs = []
    for s in cfg.seeds:
        for t in cfg.targets:
            base = {"target": t, "seed": s, "source": "", "link": "ideal", "snr_db": None, "num_bits": None}
            runs += [{**base, "init": k} for k in ("random", "vocab")]
            runs += [{**base, "init": "source", "source": src} for src in _sources_of(cfg, t)]
            if (t, s) not in choices:
                continue
            sent = {**base, "init": "link", "source": choices[(t, s)]["similarity_choice"]}
            runs += [{**sent, "link": "digital", "snr_db": v, "num_bits": cfg.link_num_bits} for v in cfg.snr_db]
            runs += [{**sent, "link": "analog", "snr_db": v} for v in cfg.analog_snr_db]
            runs += [{**sent, "link": "digital", "snr_db": cfg.num_bits_snr_db, "num_bits": b} for b in cfg.num_bits]
    return sources, targets, runs


class TransferStudy(Study):
    """The study on the protocol (`deft6g.experiment.Study`), three tables in turn, each on workers: sources.csv
    (the neighbours' prompts, each a .npy file beside the table, and their test accuracies), choices.csv (the
    target devices' source choices) and runs.csv (the fine-tuning runs); choice_grid.csv and summary.csv derived.
    The stages after sources.csv get its prompts and references through the study (a worker gets the study as it
    is when a stage starts). log: the setup's progress line. `run_transfer` runs it."""
    name = "transfer"

    def __init__(self, log=print):
        self.log, self.prompts, self.references = log, {}, {}

    def __getstate__(self):
        return {**self.__dict__, "log": print}

    def config(self, quick=False):
        return TransferConfig.quick() if quick else TransferConfig()

    def stages(self):
        return [Stage("sources.csv", ["task", "seed"], SOURCE_TYPES, _source_points, _train_source,
                      lambda p, r: f"{p['task']} seed {p['seed']}: test accuracy {r['accuracy']:.3f}"),
                Stage("choices.csv", ["target", "seed"], CHOICE_TYPES, self.choice_points,
                      lambda setup, point: _choose(setup, point, self.prompts),
                      lambda p, r: f"{p['target']} seed {p['seed']}: similarity -> {r['similarity_choice']}, "
                                   f"trial -> {r['trial_choice']}"),
                Stage("runs.csv", RUN_KEY, RUN_TYPES, self.finetune_points,
                      lambda setup, point: _finetune(setup, point, self.references, self.prompts),
                      lambda p, r: " ".join(str(p[k]) for k in RUN_KEY if p[k] not in ("", None))
                      + f": accuracy {r['accuracy']:.3f}")]

    def setup(self, cfg):
        tf.get_logger().setLevel("ERROR")      # one compiled step and predict per task: TF's retracing notice
        return _Setup(cfg, self.log)

    def prepare(self, setup, points):
        """Nothing beyond the setup, built here first: it caches every task's block inputs on disk, which the
        workers then load."""

    def _keep_sources(self, done):
        rows = done["sources.csv"]
        self.prompts = {(r["task"], r["seed"]): r["prompt"] for r in rows}
        self.references = {(r["task"], r["seed"]): r["accuracy"] for r in rows}

    def choice_points(self, cfg, done):
        self._keep_sources(done)
        return run_points_for(cfg, {})[1]

    def finetune_points(self, cfg, done):
        self._keep_sources(done)
        return run_points_for(cfg, {(r["target"], r["seed"]): r for r in done["choices.csv"]})[2]

    def tables(self, cfg, rows):
        return {"choice_grid.csv": (GRID_FIELDS, choice_grid(rows["choices.csv"])),
                "summary.csv": (SUMMARY_FIELDS, summary_table(cfg, rows["runs.csv"], rows["choices.csv"]))}

    def summary(self, cfg, rows):
        return summary(cfg, rows["sources.csv"], rows["choices.csv"], rows["runs.csv"])

    def plot(self, out, cfg, rows):
        references = {(r["task"], r["seed"]): r["accuracy"] for r in rows["sources.csv"]}
        _plot(out, cfg, rows["runs.csv"], references, rows["choices.csv"])


def _source_points(cfg, done):
    return run_points_for(cfg, {})[0]


def run_transfer(out_dir, config=None, quick=False, log=print, cfg=None, **parallel):
    """Run (or resume) the study into `out_dir` (`deft6g.experiment.run`) with `config` (a TransferConfig; None:
    the default or `quick` one); returns the `StudyResult` (.rows: {file: rows}). parallel: workers,
    ray_address, worker_gpus of `deft6g.experiment.run_points` (the block inputs are computed and cached on disk
    here first; every worker loads them from the cache). `cfg` is the deprecated name of `config`."""
    if cfg is not None:
        if config is not None:
            raise TypeError("run_transfer got both `config` and its deprecated name `cfg`")
        warn_renamed("run_transfer(cfg=...)", "run_transfer(config=...)")
        config = cfg
    result = run(TransferStudy(log), out_dir, config, quick=quick, log=log, **parallel)
    return result.with_legacy("run_transfer", (result.config, *(result.rows[f] for f in
                                                                ("sources.csv", "choices.csv", "runs.csv"))))


# --- analysis -------------------------------------------------------------------------------------------------
ORACLE = "oracle (test-set bound)"


def choice_grid(choices_rows):
    """One row per (target, seed, candidate source) of the choice stage (choices.csv rows): the source's relation
    to the target, its SPoT similarity, its accuracy on the target device's validation split, and whether the
    similarity and the trial choice picked it (1/0)."""
    rows = []
    for c in choices_rows:
        sims, scores = c["similarities"], c["trial_scores"]
        rows += [{"target": c["target"], "seed": c["seed"], "source": src, "relation": task_relation(src, c["target"]),
                  "similarity": sims[src], "validation_accuracy": scores[src],
                  "similarity_choice": int(src == c["similarity_choice"]), "trial_choice": int(src == c["trial_choice"])}
                 for src in sims]
    return rows


def _ideal(runs, target, init, seed, source=""):
    return next((r for r in runs if r["target"] == target and r["init"] == init and r["source"] == source
                 and r["link"] == "ideal" and r["seed"] == seed), None)


def source_label(source, target):
    """The table's name of the run from `source`'s prompt, with how close that task is to `target`'s."""
    return f"from {source} ({task_relation(source, target)})"


def scheme_rows(cfg, runs, choices, target):
    """{scheme: [(seed, ideal run row, extra probe steps)]}: random and vocabulary init, each neighbour's prompt
    (named by `source_label`), the similarity and trial choices, and the oracle (best test accuracy after the
    budget: a test-set bound), over the seeds whose runs and choices are all done."""
    sources = _sources_of(cfg, target)
    out = {"random": [], "vocab": [], **{source_label(s, target): [] for s in sources},
           "transfer (similarity)": [], "transfer (trial)": [], ORACLE: []}
    for seed in cfg.seeds:
        c = choices.get((target, seed))
        base = {k: _ideal(runs, target, k, seed) for k in ("random", "vocab")}
        srcs = {s: _ideal(runs, target, "source", seed, s) for s in sources}
        if c is None or any(r is None for r in [*base.values(), *srcs.values()]):
            continue
        for k, r in base.items():
            out[k].append((seed, r, 0))
        for s, r in srcs.items():
            out[source_label(s, target)].append((seed, r, 0))
        out["transfer (similarity)"].append((seed, srcs[c["similarity_choice"]], cfg.probe_steps))
        out["transfer (trial)"].append((seed, srcs[c["trial_choice"]], 0))
        out[ORACLE].append((seed, max(srcs.values(), key=lambda r: r["accuracy"]), 0))
    return out


def steps_to_target(items):
    """Steps to the target accuracy (probe steps included) of runs [(seed, row, extra probe steps)], as a list
    with inf for a run that did not reach it within its budget (right-censored; never imputed)."""
    return [math.inf if r["steps_to_target"] is None else r["steps_to_target"] + extra for _, r, extra in items]


def _median_text(cfg, items):
    """The censored median of the runs' steps to the target (`censored_median`), or '>budget' beyond it."""
    m = censored_median(steps_to_target(items))
    return str(int(m)) if math.isfinite(m) else f">{cfg.budget_steps + items[0][2]}"


def summary_table(cfg, runs, choices_rows):
    """summary.csv's rows (SUMMARY_FIELDS): per target, each initialisation over the ideal link, then the
    similarity-chosen prompt per D2D link setting."""
    choices = {(r["target"], r["seed"]): r for r in choices_rows}
    rows = []
    for target in cfg.targets:
        for scheme, items in scheme_rows(cfg, runs, choices, target).items():
            if not items:
                continue
            acc = mean_ci([r["accuracy"] for _, r, _ in items])
            a0 = mean_ci([r["start_accuracy"] for _, r, _ in items])
            reached = sum(math.isfinite(s) for s in steps_to_target(items))
            rows.append({"target": target, "scheme": scheme, "link": "ideal", "snr_db": "", "num_bits": "",
                         "n": len(items), "accuracy_mean": acc[0], "accuracy_ci": acc[1], "start_accuracy_mean": a0[0],
                         "start_accuracy_ci": a0[1], "reached": reached, "reached_fraction": reached / len(items),
                         "steps_median": _median_text(cfg, items), "channel_uses_mean": 0})
        groups = {}
        for r in runs:
            if r["target"] == target and r["init"] == "link":
                groups.setdefault((r["link"], r["snr_db"], r["num_bits"]), []).append(r)
        for (link, snr, bits), group in groups.items():
            acc = mean_ci([r["accuracy"] for r in group])
            a0 = mean_ci([r["start_accuracy"] for r in group])
            rows.append({"target": target, "scheme": "transfer (similarity)", "link": link, "snr_db": snr,
                         "num_bits": bits, "n": len(group), "accuracy_mean": acc[0], "accuracy_ci": acc[1],
                         "start_accuracy_mean": a0[0], "start_accuracy_ci": a0[1], "reached": "",
                         "reached_fraction": "", "steps_median": "",
                         "channel_uses_mean": float(np.mean([r["channel_uses"] for r in group]))})
    return rows


def _link_rows(runs, target, link, x_name, fixed=None):
    rows = [r for r in runs if r["target"] == target and r["init"] == "link" and r["link"] == link]
    if fixed is not None:
        rows = [r for r in rows if fixed(r)]
    by = {}
    for r in rows:
        by.setdefault(r[x_name], []).append(r)
    return dict(sorted(by.items()))


def _helps_from(cfg, runs, target, by_x, metric):
    """Smallest x of the sweep from which transfer beats both random and vocabulary init in `metric`
    ("accuracy": test accuracy after the budget; "start_accuracy": test accuracy at step 0), paired over seeds
    (the lower end of the 95% CI of the difference > 0 against each), at that x and every larger one."""
    base = {s: (_ideal(runs, target, "random", s), _ideal(runs, target, "vocab", s)) for s in cfg.seeds}
    base = {s: [r[metric] for r in pair] for s, pair in base.items() if None not in pair}
    helps = {}
    for x, rows in by_x.items():
        rows = [r for r in rows if r["seed"] in base]
        if len(rows) < 2:
            return None
        ours = [r[metric] for r in rows]
        helps[x] = all(m - h > 0 for m, h in (paired_ci(ours, [base[r["seed"]][k] for r in rows])
                                               for k in (0, 1)))
    xs = sorted(helps)
    ok = [x for i, x in enumerate(xs) if all(helps[y] for y in xs[i:])]
    return ok[0] if ok else math.inf


def _plot(out, cfg, runs, references, choices_rows):
    choices = {(r["target"], r["seed"]): r for r in choices_rows}
    note = (f"mean, 95% CI over {len(cfg.seeds)} seeds; {cfg.model}, {cfg.num_tokens}-token prompt, label-word head; "
            f"target device: {cfg.device_examples} texts, {1 - cfg.val_fraction:.0%} for training")
    for target in cfg.targets:
        schemes = scheme_rows(cfg, runs, choices, target)
        curves = {}
        for scheme in ("random", "vocab", *(source_label(s, target) for s in _sources_of(cfg, target)),
                       "transfer (similarity)"):
            items = schemes[scheme]
            if not items:
                continue
            per_step = {}
            for _, r, extra in items:
                for s, a in r["curve"]:
                    per_step.setdefault(s + extra, []).append(a)
            curves[scheme] = ci_points(per_step)
        tgt = [references[(target, s)] - cfg.target_gap for s in cfg.seeds if (target, s) in references]
        if curves:
            line_plot(out / f"curves_{target}.png", curves,
                      f"training steps on the target device (similarity: + {cfg.probe_steps} probe steps)",
                      "test accuracy (texts no device trained on)", f"Prompt initialisation on {target}",
                      hlines={"target accuracy": mean_ci(tgt)}, note=note)
        for metric, ylabel, suffix in (("accuracy", f"test accuracy after {cfg.budget_steps} steps", ""),
                                       ("start_accuracy", "test accuracy at step 0 (as received)", "_start")):
            _plot_link(out, cfg, runs, target, schemes, metric, ylabel, suffix, note)


def _plot_link(out, cfg, runs, target, schemes, metric, ylabel, suffix, note):
    """Accuracy (`metric`) of the received prompt vs D2D SNR and vs quantiser bits, ideal and no transfer as lines."""
    refs = {label: mean_ci([r[metric] for _, r, _ in schemes[scheme]])
            for scheme, label in (("transfer (similarity)", "ideal link transfer"),
                                  ("vocab", "vocabulary init (no transfer)")) if schemes[scheme]}
    mean = lambda rows: mean_ci([r[metric] for r in rows])  # noqa: E731
    digital = _link_rows(runs, target, "digital", "snr_db", lambda r: r["num_bits"] == cfg.link_num_bits)
    analog = _link_rows(runs, target, "analog", "snr_db")
    curves = {}
    pts = [(x, *mean(rows), f"{np.mean([r['channel_uses'] for r in rows]):.0f} cu")
           for x, rows in digital.items() if x in cfg.snr_db]
    if pts:
        curves[f"digital ({cfg.link_num_bits}-bit, QPSK r=1/2, CRC, ARQ; labels: channel uses)"] = pts
    if analog:
        uses = next(iter(analog.values()))[0]["channel_uses"]
        curves[f"analog ({uses} channel uses)"] = [(x, *mean(rows)) for x, rows in analog.items()]
    if curves:
        line_plot(out / f"snr_{target}{suffix}.png", curves, "D2D SNR P/sigma^2 [dB]", ylabel,
                  f"Similarity-chosen prompt over the D2D link: {target}", hlines=refs, note=note)
    by_bits = _link_rows(runs, target, "digital", "num_bits", lambda r: r["snr_db"] == cfg.num_bits_snr_db)
    pts = [(x, *mean(rows), f"{np.mean([r['payload_bits'] for r in rows]):.0f} bits")
           for x, rows in by_bits.items() if x in cfg.num_bits]
    if pts:
        line_plot(out / f"bits_{target}{suffix}.png",
                  {f"digital at {cfg.num_bits_snr_db:g} dB (labels: payload)": pts},
                  "quantiser bits per prompt value", ylabel, f"Quantised prompt: {target}", hlines=refs, note=note)


def summary(cfg, sources, choices_rows, runs):
    choices = {(r["target"], r["seed"]): r for r in choices_rows}
    lines = [f"D2D prompt transfer (SPoT) with {cfg.model}: {cfg.num_tokens}-token prompt at the top block, frozen "
             f"label-word head; target device: {cfg.device_examples} texts ({1 - cfg.val_fraction:.0%} training, "
             f"{cfg.val_fraction:.0%} validation for the source choice), {cfg.budget_steps} steps of "
             f"{cfg.batch_size}; mean +- 95% CI over {len(cfg.seeds)} seeds"]
    refs, pools = {}, {}
    for r in sources:
        refs.setdefault(r["task"], []).append(r["accuracy"])
        pools.setdefault(r["task"], []).append(r["train_examples"])
    lines.append(f"neighbour prompts ({cfg.source_steps} steps on the task's training pool without any target "
                 "device's text; test accuracy = reference): "
                 + ", ".join(f"{t} {mean_ci(v)[0]:.3f} ({np.mean(pools[t]):.0f} texts)" for t, v in refs.items()))
    for target in cfg.targets:
        schemes = scheme_rows(cfg, runs, choices, target)
        if not schemes["random"]:
            continue
        tgt = mean_ci([r["target_accuracy"] for _, r, _ in schemes["random"]])[0]
        lines.append(f"\n{target}: target accuracy {tgt:.3f} (reference - {cfg.target_gap}); accuracies on the test "
                     "split (texts no device trained on); steps to the target: how many runs reached it, and the "
                     f"median with unreached runs censored at the budget ('>{cfg.budget_steps}': fewer than half "
                     f"reached it); examples = steps x {cfg.batch_size}")
        width = max(len(k) for k in schemes) + 2
        lines.append(f"  {'initialisation':<{width}}{'reached':>8}{'median steps':>14}{'examples':>10}"
                     f"{'acc at step 0':>17}{'acc after budget':>19}")
        for scheme, items in schemes.items():
            steps = steps_to_target(items)
            med = censored_median(steps)
            a0 = mean_ci([r["start_accuracy"] for _, r, _ in items])
            acc = mean_ci([r["accuracy"] for _, r, _ in items])
            reached = f"{sum(math.isfinite(s) for s in steps)}/{len(steps)}"
            lines.append(f"  {scheme:<{width}}{reached:>8}{_median_text(cfg, items):>14}"
                         f"{int(med) * cfg.batch_size if math.isfinite(med) else '':>10}{a0[0]:>9.3f} +- {a0[1]:.3f}"
                         f"{acc[0]:>11.3f} +- {acc[1]:.3f}")
        oracle = {s: r["source"] for s, r, _ in schemes[ORACLE]}
        for how, where in (("similarity", "task embeddings after the probe"), ("trial", "validation accuracy")):
            agree = [choices[(target, s)][f"{how}_choice"] == oracle[s] for s in oracle]
            regret = [o["accuracy"] - c["accuracy"] for (_, o, _), (_, c, _) in
                      zip(schemes[ORACLE], schemes[f"transfer ({how})"])]
            rm, rh = mean_ci(regret)
            lines.append(f"  {how} choice ({where}) = oracle's (test-set bound) source in {sum(agree)}/{len(agree)} "
                         f"seeds; test accuracy regret {rm:.3f} +- {rh:.3f}; picks: "
                         + ", ".join(choices[(target, s)][f"{how}_choice"] for s in oracle)
                         + " (oracle: " + ", ".join(oracle.values()) + ")")
        for link, x_name, fixed in (("digital", "snr_db", lambda r: r["num_bits"] == cfg.link_num_bits),
                                    ("analog", "snr_db", None),
                                    ("digital", "num_bits", lambda r: r["snr_db"] == cfg.num_bits_snr_db)):
            by = _link_rows(runs, target, link, x_name, fixed)
            by = {x: rows for x, rows in by.items() if x in (cfg.num_bits if x_name == "num_bits" else
                                                              cfg.snr_db if link == "digital" else cfg.analog_snr_db)}
            if not by:
                continue
            what = (f"{link} vs SNR" if x_name == "snr_db" else
                    f"digital at {cfg.num_bits_snr_db:g} dB vs quantiser bits")
            lines.append(f"  {what}:")
            for x, rows in by.items():
                acc = mean_ci([r["accuracy"] for r in rows])
                a0 = mean_ci([r["start_accuracy"] for r in rows])
                uses = np.mean([r["channel_uses"] for r in rows])
                extra = ""
                if link == "digital":
                    bler = np.mean([r["bler"] for r in rows])
                    drop = np.mean([r["dropped_fraction"] for r in rows])
                    extra = f"BLER {bler:.2f}, dropped {drop:.2f}, {rows[0]['payload_bits']} bits, "
                nmse = np.mean([r["prompt_nmse"] for r in rows])
                lines.append(f"    {x_name.replace('_db', '').replace('num_', '')} {x:>5g}: acc {acc[0]:.3f} +- {acc[1]:.3f} (step 0: {a0[0]:.3f}); "
                             f"{extra}prompt NMSE {nmse:.3g}, {uses:.0f} channel uses = "
                             f"{1e3 * uses / cfg.bandwidth_hz:.1f} ms at {cfg.bandwidth_hz / 1e6:g} MHz")
            name = "SNR" if x_name == "snr_db" else "bits"
            found = []
            for metric, label in (("start_accuracy", "at step 0"), ("accuracy", "after the budget")):
                x0 = _helps_from(cfg, runs, target, by, metric)
                found.append(f"{label}: " + ("n/a (too few seeds)" if x0 is None else "nowhere on this grid"
                                             if math.isinf(x0) else f"{name} >= {x0:g}"))
            lines.append("    transfer beats both random and vocab init (paired 95% CI against each) "
                         + "; ".join(found))
    if cfg.model == "random-bert":
        lines.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    return "\n".join(lines)
