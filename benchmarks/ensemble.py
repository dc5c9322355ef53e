"""`deft6g ensemble`: on-the-fly prompt-ensemble tuning (DEFT technique 4) on the frozen pretrained MiniLM.

Per dataset and seed a device receives `chunks` labelled chunks of its dataset's training split (a seeded
random order); each chunk is split into a training part and a held-out part (`heldout_fraction`). Per chunk
one (prompt, head) member is trained on the training part -- a deep soft prompt of `num_tokens` vectors at the
input of the top block, everything below it cached once -- from a fresh init, or warm-started from the pool's
best on the newest held-out data; the pool keeps `pool_size` members (fresh members do not depend on the pool,
so the pool sizes of `pool_sizes` share them). After every chunk the whole test split is scored by each rule
(mean logits, majority vote, learned gate) and by the single members: the best member on the test split (an
oracle), their average, the newest, and the one the pool rates best on the newest held-out data ("selected").
Reference: one member trained on all the stream's training parts at once (`reference.csv`).
Inference cost: samples/s of the pool from the tokens, one full forward per prompt against blocks below the
prompt once + the rest once per prompt + the rest once on (prompt, example) rows (`speed.csv`), timed in
this run, CPU time and wall time (this machine may be shared).
Files: results.csv (one row per dataset, init, pool size, seed and step), reference.csv, speed.csv,
config.json, PNG plots; every table is resumable. With `workers` the streams and references run on Ray
workers (`deft6g.experiment.run_points`; every member is seeded by its stream's seed, so the rows do not
depend on the number of workers); the speed table is timed, so it always runs in this process, alone.
"""

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from deft6g.experiment import ResultStore, line_plot, mean_ci, paired_ci, prepare_output, run_points

SINGLES = ("best", "average", "newest", "selected")
RULE_COLUMNS = ("mean", "vote", "gate")
ACC = [f"acc_{r}" for r in RULE_COLUMNS + SINGLES]
RESULT_KEY = ["dataset", "init", "seed"]
RESULT_FIELDS = RESULT_KEY + ["pool_size", "step", "examples_seen", "members", "pool_bytes", "newest_kept"] + ACC
REFERENCE_KEY = ["dataset", "seed"]
REFERENCE_FIELDS = REFERENCE_KEY + ["examples", "accuracy", "cpu_s"]
SPEED_KEY = ["repeat"]
SPEED_FIELDS = SPEED_KEY + ["pool_size", "mode", "examples", "wall_s", "cpu_s"]


@dataclass
class EnsembleConfig:
    """The study's grid. datasets: {name: (max_length tokens, chunk size in labelled texts)}."""
    model: str = "all-MiniLM-L6-v2"
    datasets: dict = field(default_factory=lambda: {"rotten_tomatoes": [48, 160], "bbc_news": [64, 100]})
    test_examples: int = 0                  # 0: the whole test split
    chunks: int = 8
    heldout_fraction: float = 0.2
    num_tokens: int = 8
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-2
    pool_size: int = 4
    pool_sizes: list = field(default_factory=lambda: [1, 2, 4, 8])
    inits: list = field(default_factory=lambda: ["fresh", "warm"])
    gate_memory: int = 4
    gate_steps: int = 50
    gate_lr: float = 0.5
    gate_l2: float = 1e-2
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    speed_examples: int = 128
    speed_pool_sizes: list = field(default_factory=lambda: [1, 4, 8])
    speed_repeats: int = 3

    @classmethod
    def quick(cls):
        return cls(model="random-bert", datasets={"rotten_tomatoes": [32, 24], "bbc_news": [32, 20]},
                   test_examples=48, chunks=3, epochs=1, pool_size=2, pool_sizes=[1, 2], seeds=[0, 1],
                   gate_steps=5, speed_examples=16, speed_pool_sizes=[1, 2], speed_repeats=1)

    def __post_init__(self):
        from deft6g.finetune import DATASETS
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad:
            raise ValueError(f"`datasets` {bad} are unknown; known: {sorted(DATASETS)}")
        if self.pool_size not in self.pool_sizes:
            raise ValueError(f"`pool_size` {self.pool_size} must be one of `pool_sizes` {self.pool_sizes}")
        if not set(self.inits) <= {"fresh", "warm"} or not self.inits:
            raise ValueError(f"`inits` must be a non-empty subset of ['fresh', 'warm'], got {self.inits}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"`heldout_fraction` must be in (0, 1), got {self.heldout_fraction}")


class _Setup:
    """Everything the points share: the model, per dataset its trainer, tokens, split and cached test input."""

    def __init__(self, cfg):
        from deft6g.finetune import load_study_model
        self.cfg = cfg
        self.model, self.tokenizer = load_study_model(cfg.model)
        self.top = self.model.config.num_hidden_layers - 1
        self.data = {}

    def dataset(self, name):
        if name not in self.data:
            from deft6g.finetune import MemberTrainer, load_dataset, tokenize, train_test_split
            cfg = self.cfg
            max_length, chunk = cfg.datasets[name]
            data = load_dataset(name)
            train, test = train_test_split(len(data), 0.2, seed=0)
            if cfg.test_examples:
                test = np.random.default_rng(0).permutation(test)[:cfg.test_examples]
            if cfg.chunks * chunk > len(train):
                raise ValueError(f"`chunks` x chunk size = {cfg.chunks * chunk} exceeds {name}'s {len(train)} "
                                 "training texts")
            tokens = tokenize(self.tokenizer, data.x, max_length)
            trainer = MemberTrainer(self.model, len(data.class_names), {self.top: cfg.num_tokens}, lr=cfg.lr,
                                    epochs=cfg.epochs, batch_size=cfg.batch_size)
            d = dict(data=data, train=train, test=test, tokens=tokens, trainer=trainer, chunk=chunk,
                     max_length=max_length)
            d["test_hm"] = self.activations(d, test)
            self.data[name] = d
        return self.data[name]

    def activations(self, d, idx):
        """Cached frozen input of the prompt block for the texts `idx`: (hidden [S, T, H], mask [S, T])."""
        from deft6g.finetune import cached_arrays
        from deft6g.finetune.data import content_digest
        from deft6g.finetune.fomo import model_key
        x = {k: v[idx] for k, v in d["tokens"].items()}
        key = ["ensemble", model_key(self.cfg.model), self.top, content_digest(x["input_ids"], x["attention_mask"])]
        z = cached_arrays(key, lambda: dict(zip("hm", d["trainer"].activations(x))))
        return z["h"], z["m"]

    def stream(self, d, seed):
        """Per chunk ((hidden, mask, labels) training part, same held-out part), in the seed's order."""
        cfg, chunk = self.cfg, d["chunk"]
        idx = np.random.default_rng(seed).permutation(d["train"])[:cfg.chunks * chunk]
        h, m = self.activations(d, idx)
        y = d["data"].y[idx]
        n_train = chunk - max(1, int(round(cfg.heldout_fraction * chunk)))
        out = []
        for t in range(cfg.chunks):
            a, b, c = t * chunk, t * chunk + n_train, (t + 1) * chunk
            out.append(((h[a:b], m[a:b], y[a:b]), (h[b:c], m[b:c], y[b:c])))
        return out


def _accuracies(ens, test_logits, test_hm, y_test, newest_logits):
    """acc_* of one pool after a chunk: every rule, and best/average/newest/selected single members."""
    members = ens.pool.members
    logits = np.stack([test_logits[m.origin] for m in members])
    preds = ens.predict(*test_hm, logits=logits)
    single = (logits.argmax(-1) == y_test[None]).mean(1)
    return {"acc_mean": float(np.mean(preds["mean"] == y_test)), "acc_vote": float(np.mean(preds["vote"] == y_test)),
            "acc_gate": float(np.mean(preds["gate"] == y_test)), "acc_best": float(single.max()),
            "acc_average": float(single.mean()), "acc_newest": float(np.mean(newest_logits.argmax(-1) == y_test)),
            "acc_selected": float(single[int(np.argmax(ens.scores))])}


def run_stream(setup, point):
    """One (dataset, init, seed) point: rows for every pool size (fresh) or the default one (warm) and step."""
    from deft6g.finetune import OnTheFlyEnsemble, PromptPool
    cfg = setup.cfg
    d = setup.dataset(point["dataset"])
    trainer, seed, init = d["trainer"], int(point["seed"]), point["init"]
    trainer.seed = seed
    y_test = d["data"].y[d["test"]]
    sizes = cfg.pool_sizes if init == "fresh" else [cfg.pool_size]
    gate = dict(steps=cfg.gate_steps, lr=cfg.gate_lr, l2=cfg.gate_l2)
    pools = {k: OnTheFlyEnsemble(trainer, PromptPool(capacity=k), init, cfg.gate_memory, **gate) for k in sizes}
    test_logits, rows, seen = {}, [], 0
    for t, (chunk, heldout) in enumerate(setup.stream(d, seed)):
        seen += len(chunk[2]) + len(heldout[2])
        shared = trainer.train(*chunk, origin=t) if init == "fresh" else None
        if shared is not None:
            test_logits[t] = trainer.logits([shared], *d["test_hm"])[0]
        for k, ens in pools.items():
            log = ens.observe(chunk, heldout, candidate=shared)
            if t not in test_logits:
                test_logits[t] = trainer.logits([ens.newest], *d["test_hm"])[0]
            rows.append(dict(point, pool_size=k, step=t + 1, examples_seen=seen, members=len(ens.pool.members),
                             pool_bytes=ens.pool.nbytes, newest_kept=int(log.slot is not None),
                             **_accuracies(ens, test_logits, d["test_hm"], y_test, test_logits[t])))
    return rows


def run_reference(setup, point):
    """One member trained on all the stream's training parts of a seed (the upper reference)."""
    d = setup.dataset(point["dataset"])
    trainer, seed = d["trainer"], int(point["seed"])
    trainer.seed = seed
    parts = [c for c, _ in setup.stream(d, seed)]
    h, m, y = (np.concatenate([p[i] for p in parts]) for i in range(3))
    t0 = time.process_time()
    member = trainer.train(h, m, y, origin=setup.cfg.chunks)
    acc = float(np.mean(trainer.logits([member], *d["test_hm"])[0].argmax(-1) == d["data"].y[d["test"]]))
    return dict(point, examples=len(y), accuracy=acc, cpu_s=time.process_time() - t0)


def run_speed(setup, point):
    """Pool inference from the tokens of `speed_examples` test texts, every mode and speed pool size, timed."""
    from deft6g.finetune import INFERENCE_MODES, pool_logits_from_tokens
    cfg = setup.cfg
    d = setup.dataset(next(iter(cfg.datasets)))
    trainer = d["trainer"]
    idx = d["test"][:cfg.speed_examples]
    x = {k: v[idx] for k, v in d["tokens"].items()}
    h, m = d["test_hm"][0][:cfg.speed_examples], d["test_hm"][1][:cfg.speed_examples]
    rows = []
    for size in cfg.speed_pool_sizes:
        members = [trainer.fresh_member(h, m, origin=100 + i) for i in range(size)]
        for mode in INFERENCE_MODES:
            # compile outside the timing: two batch sizes and lengths, so later shapes reuse the relaxed trace
            pool_logits_from_tokens(trainer.peft, members, {k: v[-12:] for k, v in x.items()}, mode, batch_size=8)
            w0, c0 = time.perf_counter(), time.process_time()
            pool_logits_from_tokens(trainer.peft, members, x, mode)
            rows.append(dict(point, pool_size=size, mode=mode, examples=len(idx),
                             wall_s=time.perf_counter() - w0, cpu_s=time.process_time() - c0))
    return rows


class EnsembleTask:
    """What one point of a stage runs ("stream": `run_stream`, "reference": `run_reference`, "speed":
    `run_speed`), picklable for Ray workers: holds the configuration; the heavy `_Setup` (model, tokens,
    cached activations) is built on first use, once per process, and never pickled; `stage(name)` gives a task
    of another stage sharing this one's setup."""

    STAGES = {"stream": run_stream, "reference": run_reference, "speed": run_speed}

    def __init__(self, cfg, stage="stream"):
        if stage not in self.STAGES:
            raise ValueError(f"`stage` must be one of {sorted(self.STAGES)}, got {stage!r}")
        self.cfg, self.name, self._setup = cfg, stage, None

    def setup(self):
        if self._setup is None:
            self._setup = _Setup(self.cfg)
        return self._setup

    def stage(self, name):
        other = EnsembleTask(self.cfg, name)
        other._setup = self._setup
        return other

    def __getstate__(self):
        return {"cfg": self.cfg, "name": self.name, "_setup": None}

    def __call__(self, point):
        return self.STAGES[self.name](self.setup(), point)


def run_ensemble(out_dir="results/ensemble", quick=False, log=print, **parallel):
    """Run (or resume) the study; returns (config, results rows, reference rows, speed rows). parallel:
    workers, ray_address, worker_gpus of `deft6g.experiment.run_points` for the streams and references (the
    activations of every stream are computed and cached on disk here first; every worker loads them)."""
    cfg = EnsembleConfig.quick() if quick else EnsembleConfig()
    out = prepare_output(out_dir, "ensemble", asdict(cfg))
    task = EnsembleTask(cfg)
    results = ResultStore(out / "results.csv", RESULT_FIELDS, RESULT_KEY)
    reference = ResultStore(out / "reference.csv", REFERENCE_FIELDS, REFERENCE_KEY)
    speed = ResultStore(out / "speed.csv", SPEED_FIELDS, SPEED_KEY)
    points = [dict(dataset=ds, init=init, seed=s) for ds in cfg.datasets for s in cfg.seeds for init in cfg.inits]
    refs = [dict(dataset=ds, seed=s) for ds in cfg.datasets for s in cfg.seeds]
    streams = {(p["dataset"], p["seed"]) for p in points if not results.done(p)}
    streams |= {(p["dataset"], p["seed"]) for p in refs if not reference.done(p)}
    setup = task.setup()
    for ds, seed in sorted(streams, key=lambda k: (list(cfg.datasets).index(k[0]), k[1])):
        setup.stream(setup.dataset(ds), seed)                     # cached once, before any worker starts
    last = lambda p, rows: "  ".join(f"{r['init']} M={r['pool_size']}: mean {r['acc_mean']:.3f} best "  # noqa: E731
                                     f"{r['acc_best']:.3f}" for r in rows if r["step"] == cfg.chunks)
    run_points(points, task, results, desc="ensemble streams", log=log, describe=last, **parallel)
    run_points(refs, task.stage("reference"), reference, desc="joint reference", log=log, **parallel)
    run_points([dict(repeat=r) for r in range(cfg.speed_repeats)], task.stage("speed"), speed,
               desc="inference speed", log=log)
    res, ref, spd = results.rows(), reference.rows(), speed.rows()
    plot(out, cfg, res, ref, spd)
    return cfg, res, ref, spd


def _final(cfg, rows, dataset, init, size):
    return sorted((r for r in rows if r["dataset"] == dataset and r["init"] == init and int(r["pool_size"]) == size
                   and int(r["step"]) == cfg.chunks), key=lambda r: int(r["seed"]))


def _speed_stats(cfg, rows, clock):
    """{(pool size, mode): (mean, ci) of samples/s by `clock` ("cpu_s" or "wall_s")}."""
    out = {}
    for size in cfg.speed_pool_sizes:
        for mode in ("one_by_one", "shared", "batched"):
            v = [int(r["examples"]) / float(r[clock]) for r in rows
                 if int(r["pool_size"]) == size and r["mode"] == mode]
            if v:
                out[size, mode] = mean_ci(v)
    return out


def _speedup(cfg, rows, size, clock):
    by = {(r["repeat"], r["mode"]): float(r[clock]) for r in rows if int(r["pool_size"]) == size}
    return mean_ci([by[rep, "one_by_one"] / by[rep, "batched"] for rep, mode in by if mode == "batched"])


def plot(out, cfg, rows, ref, spd):
    random_note = " (random model: smoke test)" if cfg.model == "random-bert" else ""
    note = f"mean and 95% CI over {len(cfg.seeds)} seeds; {cfg.model}{random_note}, prompt of {cfg.num_tokens} " \
           f"vectors at the top block + own head per member"
    labels = {"acc_mean": "ensemble: mean logits", "acc_vote": "ensemble: majority vote",
              "acc_gate": "ensemble: learned gate", "acc_best": "best single (oracle)",
              "acc_average": "average single", "acc_newest": "newest single"}
    for ds in cfg.datasets:
        joint = [float(r["accuracy"]) for r in ref if r["dataset"] == ds]
        hl = {"one prompt on all data seen (reference)": mean_ci(joint)} if joint else None
        for init in cfg.inits:
            curves = {}
            for col, label in labels.items():
                for step in range(1, cfg.chunks + 1):
                    v = [float(r[col]) for r in rows if r["dataset"] == ds and r["init"] == init
                         and int(r["pool_size"]) == cfg.pool_size and int(r["step"]) == step]
                    if v:
                        x = int(next(r["examples_seen"] for r in rows if r["dataset"] == ds and int(r["step"]) == step))
                        curves.setdefault(label, []).append((x, *mean_ci(v)))
            if curves:
                line_plot(out / f"accuracy_vs_examples_{ds}_{init}.png", curves, "labelled examples received",
                          "test accuracy", f"{ds}: pool of {cfg.pool_size} prompts, {init} init", hlines=hl, note=note)
        curves = {}
        for col, label in labels.items():
            for size in cfg.pool_sizes:
                v = [float(r[col]) for r in _final(cfg, rows, ds, "fresh", size)]
                if v and col != "acc_newest":
                    curves.setdefault(label, []).append((size, *mean_ci(v)))
        if curves:
            line_plot(out / f"accuracy_vs_pool_size_{ds}.png", curves, "pool size (prompts kept)", "test accuracy",
                      f"{ds}: after {cfg.chunks} chunks, fresh init", logx=True, hlines=hl, note=note)
    stats = _speed_stats(cfg, spd, "cpu_s")
    curves = {}
    for (size, mode), (m, ci) in stats.items():
        curves.setdefault(mode.replace("_", " "), []).append((size, m, ci))
    if curves:
        line_plot(out / "inference_speed.png", curves, "pool size (prompts)", "samples per CPU-second",
                  "pool inference from tokens", logx=True, logy=True,
                  note=f"{cfg.speed_examples} texts, {cfg.speed_repeats} repeats, mean and 95% CI; "
                       "one by one: a full forward per prompt")


def summary(cfg, rows, ref, spd):
    """The printed tables: final accuracy per dataset/init (default pool size) with paired differences,
    pool-size effect, reference, and the batched-inference speed-up."""
    lines = [f"on-the-fly prompt ensembles, {cfg.model}, {cfg.chunks} chunks, {len(cfg.seeds)} seeds "
             "(mean +- 95% CI; differences paired per seed)"]
    for ds in cfg.datasets:
        joint = [float(r["accuracy"]) for r in ref if r["dataset"] == ds]
        if joint:
            n = next(r["examples"] for r in ref if r["dataset"] == ds)
            lines.append(f"{ds}: reference, one prompt trained on the stream's {n} training texts at once: "
                         "{:.3f} +- {:.3f}".format(*mean_ci(joint)))
        for init in cfg.inits:
            fin = _final(cfg, rows, ds, init, cfg.pool_size)
            if not fin:
                continue
            lines.append(f"  {ds}, {init} init, pool {cfg.pool_size}, after {fin[0]['examples_seen']} examples:")
            for col in ACC:
                m, ci = mean_ci([float(r[col]) for r in fin])
                lines.append(f"    {col[4:]:<10} {m:.3f} +- {ci:.3f}")
            for rule in RULE_COLUMNS:
                diffs = ", ".join(
                    "{} {:+.3f} +- {:.3f}".format(s, *paired_ci([float(r[f"acc_{rule}"]) for r in fin],
                                                                 [float(r[f"acc_{s}"]) for r in fin]))
                    for s in ("best", "average", "newest"))
                lines.append(f"    {rule} minus: {diffs}")
        fin = _final(cfg, rows, ds, cfg.inits[0], cfg.pool_size)
        if fin:
            member = int(fin[0]["pool_bytes"]) // int(fin[0]["members"])
            lines.append(f"  {ds}: a member (prompt + own head, float32) is {member:,d} bytes; a full pool of "
                         f"{cfg.pool_size}: {cfg.pool_size * member:,d} bytes")
        sizes = [(k, _final(cfg, rows, ds, "fresh", k)) for k in cfg.pool_sizes]
        text = ", ".join(f"M={k}: {mean_ci([float(r['acc_mean']) for r in f])[0]:.3f}" for k, f in sizes if f)
        if text:
            lines.append(f"  {ds}, fresh init, mean-logit ensemble by pool size: {text}")
    for clock, name in (("cpu_s", "CPU time"), ("wall_s", "wall time")):
        parts = []
        for size in cfg.speed_pool_sizes:
            if any(int(r["pool_size"]) == size for r in spd):
                m, ci = _speedup(cfg, spd, size, clock)
                parts.append(f"M={size}: {m:.2f}x +- {ci:.2f}")
        if parts:
            lines.append(f"batched pool inference vs one forward per prompt ({name}; {cfg.speed_examples} texts, "
                         f"{cfg.speed_repeats} repeats): " + ", ".join(parts))
    stats = _speed_stats(cfg, spd, "cpu_s")
    if stats:
        lines.append("samples per CPU-second: " + "; ".join(
            f"M={k} {mode} {m:.0f}" for (k, mode), (m, _) in stats.items()))
    return "\n".join(lines)
