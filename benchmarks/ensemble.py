"""`deft6g ensemble`: on-the-fly prompt-ensemble tuning (DEFT technique 4) on the frozen pretrained MiniLM.

Splits: the dataset's seeded 80/20 train/test split; a seeded validation split (`val_fraction`, stratified,
`deft6g.finetune.validation_split`) is carved from train. Every choice is made on validation; the test split
only scores.
Streams: per dataset and seed a device receives `chunks` labelled chunks drawn from train minus validation;
each chunk is split into a training part and a held-out part (`heldout_fraction`, same label mix). "drift":
the label mix changes in `drift_phases` phases (chunk t is in phase floor(t P / chunks)); in phase p a share
`drift_share` of each chunk comes from its favoured classes (c mod min(P, C) = p mod min(P, C): Rotten
Tomatoes alternates fresh and rotten, BBC News moves through its topics), the rest from the other classes.
"iid": the same texts in one seeded random order, cut into chunks of the same size (only the order differs).
Training: per chunk one (prompt, head) member is trained on the training part -- a deep soft prompt of
`num_tokens` vectors at the input of the top block, everything below it cached once -- from a fresh init, or
warm-started from the pool's best on the newest held-out data; both take the same optimizer steps per chunk
(`train_steps`, counted); a warm member also carries its parents' steps (`member_steps`). The pool keeps
`pool_size` members (fresh members do not depend on the pool: the pool sizes of `pool_sizes` share them, and
the warm run's first member is the fresh run's).
Scores after every chunk, on the whole test split ("acc_*") and on the test split weighted to the chunk's label
mix ("cur_*": sum_c mix_t(c) acc_c, the accuracy on the distribution the device is in): the rules (mean
logits, majority vote, learned gate), "ensemble" (the rule chosen on validation), "single" (the member chosen
on validation), "selected" (the member the pool rates best on the newest held-out part), "average" and
"newest" single members, and "oracle", the best single member on the test split itself: a bound, no choice.
For cur_* the validation scores are weighted with the label mix of the newest chunk (what the device has seen).
Controls: one member trained on all the stream's training parts at once (`reference.csv`); with
`matched_control`, a fresh member trained on the last chunk for as many steps as the warm run's last member
has behind it (`matched.csv`: warm start against fresh at equal steps per member).
Inference cost: samples/s of the pool from the tokens, one full forward per prompt against blocks below the
prompt once + the rest once per prompt + the rest once on (prompt, example) rows (`speed.csv`), timed in
this run, CPU time and wall time (this machine may be shared).
Files: results.csv (one row per dataset, stream, init, pool size, seed and step), choices.csv (every validation
choice: one row per candidate with its validation score), reference.csv, matched.csv, speed.csv, config.json,
summary.txt, timing.json, PNG plots; every table is resumable. With `workers` the streams and references run on Ray
workers (`deft6g.experiment.run_points`; every member is seeded by its stream's seed, so the rows do not depend on
the number of workers); the speed table is timed, so it always runs in this process, alone.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from deft6g.experiment import PointRows, Stage, Study, line_plot, mean_ci, paired_ci, run, tost
from deft6g.finetune import (DATASETS, INFERENCE_MODES, MemberTrainer, OnTheFlyEnsemble, PromptPool, cached_arrays,
                             data_split, load_dataset, load_study_model, pool_logits_from_tokens, tokenize)
from deft6g.finetune.peft.data import content_digest
from deft6g.finetune.peft.fomo import model_key
from deft6g.rng import derive_seed


STREAMS = ("iid", "drift")
RULE_COLUMNS = ("mean", "vote", "gate")
SCORES = RULE_COLUMNS + ("ensemble", "single", "selected", "average", "newest", "oracle")
TARGETS = ("acc", "cur")                    # whole test split; test split weighted to the chunk's label mix
ACC = [f"{t}_{s}" for t in TARGETS for s in SCORES]
RESULT_KEY = ["dataset", "stream", "seed"]
RESULT_TYPES = {"dataset": str, "stream": str, "seed": int, "init": str, "pool_size": int, "step": int, "phase": int,
                "examples_seen": int, "train_steps": int, "member_steps": int, "members": int, "pool_bytes": int,
                "newest_kept": int, **dict.fromkeys(ACC, float)}
CHOICE_KEY = RESULT_KEY + ["init", "pool_size", "step", "target", "candidate"]
CHOICE_TYPES = {k: RESULT_TYPES.get(k, str) for k in CHOICE_KEY} | {"val_score": float, "chosen": int}
REFERENCE_KEY = ["dataset", "seed"]
REFERENCE_TYPES = {"dataset": str, "seed": int, "examples": int, "accuracy": float, "cpu_s": float}
MATCHED_KEY = RESULT_KEY
MATCHED_TYPES = {"dataset": str, "stream": str, "seed": int, "steps": int, "acc_warm_newest": float,
                 "acc_fresh_matched": float, "acc_fresh_newest": float}
SPEED_KEY = ["repeat"]
SPEED_TYPES = {"repeat": int, "pool_size": int, "mode": str, "examples": int, "wall_s": float, "cpu_s": float}
STREAM_ORDER = 1                            # the sub-stream of a seed that orders a stream's texts (`derive_seed`)


@dataclass
class EnsembleConfig:
    """The study's grid. datasets: {name: (max_length tokens, chunk size in labelled texts)}."""
    model: str = "all-MiniLM-L6-v2"
    datasets: dict = field(default_factory=lambda: {"rotten_tomatoes": [48, 160], "bbc_news": [64, 100]})
    test_examples: int = 0                  # 0: the whole test split
    val_fraction: float = 0.05
    streams: list = field(default_factory=lambda: ["drift"])
    drift_phases: int = 4
    drift_share: float = 0.9
    chunks: int = 8
    heldout_fraction: float = 0.2
    num_tokens: int = 8
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-2
    pool_size: int = 4
    pool_sizes: list = field(default_factory=lambda: [1, 2, 4, 8])
    inits: list = field(default_factory=lambda: ["fresh", "warm"])
    matched_control: bool = False
    gate_memory: int = 4
    gate_steps: int = 50
    gate_lr: float = 0.5
    gate_l2: float = 1e-2
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    speed_examples: int = 96
    speed_pool_sizes: list = field(default_factory=lambda: [1, 4, 8])
    speed_repeats: int = 3

    @classmethod
    def quick(cls):
        return cls(model="random-bert", datasets={"rotten_tomatoes": [32, 24], "bbc_news": [32, 20]},
                   test_examples=48, val_fraction=0.05, streams=["iid", "drift"], drift_phases=3, chunks=3,
                   epochs=1, pool_size=2, pool_sizes=[1, 2], matched_control=True, seeds=[0, 1], gate_steps=5,
                   speed_examples=16, speed_pool_sizes=[1, 2], speed_repeats=1)

    def __post_init__(self):
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad:
            raise ValueError(f"`datasets` {bad} are unknown; known: {sorted(DATASETS)}")
        if self.pool_size not in self.pool_sizes:
            raise ValueError(f"`pool_size` {self.pool_size} must be one of `pool_sizes` {self.pool_sizes}")
        if not set(self.inits) <= {"fresh", "warm"} or not self.inits:
            raise ValueError(f"`inits` must be a non-empty subset of ['fresh', 'warm'], got {self.inits}")
        if not set(self.streams) <= set(STREAMS) or not self.streams:
            raise ValueError(f"`streams` must be a non-empty subset of {list(STREAMS)}, got {self.streams}")
        for name in ("heldout_fraction", "val_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be in (0, 1), got {getattr(self, name)}")
        if isinstance(self.drift_phases, bool) or not isinstance(self.drift_phases, int) \
                or not 2 <= self.drift_phases <= self.chunks:
            raise ValueError(f"`drift_phases` must be an int in [2, `chunks` = {self.chunks}], "
                             f"got {self.drift_phases!r}")
        if not 0 < self.drift_share <= 1:
            raise ValueError(f"`drift_share` must be in (0, 1], got {self.drift_share}")
        if self.matched_control and "warm" not in self.inits:
            raise ValueError("`matched_control` needs 'warm' in `inits` (it matches the warm run's steps)")


def drift_counts(num_classes, chunks, chunk, phases, share):
    """Per-chunk class counts of the drift stream: (counts int [chunks, C], each row summing to `chunk`;
    mixes float [chunks, C], the designed label mix of each chunk's phase). Phase of chunk t: floor(t P / chunks);
    phase p favours the classes c with c mod min(P, C) = p mod min(P, C): they share `share` of the chunk, the
    other classes 1 - share (all of it goes to the favoured ones when there are no others). Counts round
    chunk * mix by largest remainders."""
    period = min(phases, num_classes)
    mixes = np.zeros((chunks, num_classes))
    for t in range(chunks):
        fav = np.arange(num_classes) % period == (t * phases // chunks) % period
        rest = share if (~fav).any() else 1.0
        mixes[t, fav] = rest / fav.sum()
        mixes[t, ~fav] = (1 - rest) / max((~fav).sum(), 1)
    raw = mixes * chunk
    counts = np.floor(raw).astype(int)
    for t in range(chunks):
        order = np.argsort(-(raw[t] - counts[t]), kind="stable")
        counts[t, order[:chunk - counts[t].sum()]] += 1
    return counts, mixes


def stream_indices(labels, pool, counts, kind, seed):
    """Text indices of every chunk, int [chunks, chunk], drawn from `pool` (indices into `labels`) for the
    drift stream's `counts` [chunks, C]. kind "drift": chunk t holds counts[t, c] texts of class c (shuffled
    within the chunk); "iid": the same texts in one random order, cut into chunks of the same size."""
    rng = np.random.default_rng(derive_seed(seed, STREAM_ORDER))
    labels = np.asarray(labels)
    by_class = [rng.permutation(pool[labels[pool] == c]) for c in range(counts.shape[1])]
    need = counts.sum(0)
    short = [c for c in range(counts.shape[1]) if need[c] > len(by_class[c])]
    if short:
        raise ValueError(f"the drift stream needs {need.tolist()} texts per class, the training pool has "
                         f"{[len(b) for b in by_class]}: lower `chunks`, the chunk size or `drift_share`")
    used = np.zeros(counts.shape[1], int)
    chunks = []
    for row in counts:
        idx = np.concatenate([by_class[c][used[c]:used[c] + n] for c, n in enumerate(row)])
        used += row
        chunks.append(rng.permutation(idx))
    out = np.stack(chunks)
    if kind == "iid":
        out = rng.permutation(out.ravel()).reshape(out.shape)
    elif kind != "drift":
        raise ValueError(f"`kind` must be one of {STREAMS}, got {kind!r}")
    return out


class _Setup:
    """Everything the points share: the model, per dataset its trainer, tokens, splits and cached inputs."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.model, self.tokenizer = load_study_model(cfg.model)
        self.top = self.model.config.num_hidden_layers - 1
        self.data = {}

    def dataset(self, name):
        if name not in self.data:
            cfg = self.cfg
            max_length, chunk = cfg.datasets[name]
            data = load_dataset(name)
            split = data_split(data.y, 0, cfg.test_examples, cfg.val_fraction)
            fit, val, test = split.fit, split.validation, split.test
            classes = len(data.class_names)
            counts, mixes = drift_counts(classes, cfg.chunks, chunk, cfg.drift_phases, cfg.drift_share)
            tokens = tokenize(self.tokenizer, data.x, max_length)
            trainer = MemberTrainer(self.model, classes, {self.top: cfg.num_tokens}, lr=cfg.lr,
                                    epochs=cfg.epochs, batch_size=cfg.batch_size)
            d = dict(y=np.array(data.y), classes=classes, fit=fit, val=val, test=test, tokens=tokens,
                     trainer=trainer, chunk=chunk, counts=counts, mixes=mixes)
            d["test_hm"] = self.activations(d, test)
            d["val_hm"] = self.activations(d, val)
            self.data[name] = d
        return self.data[name]

    def activations(self, d, idx):
        """Cached frozen input of the prompt block for the texts `idx`: (hidden [S, T, H], mask [S, T])."""
        x = {k: v[idx] for k, v in d["tokens"].items()}
        key = ["ensemble", model_key(self.cfg.model), self.top, content_digest(x["input_ids"], x["attention_mask"])]
        z = cached_arrays(key, lambda: dict(zip("hm", d["trainer"].activations(x))))
        return z["h"], z["m"]

    def stream(self, d, kind, seed):
        """(per chunk ((hidden, mask, labels) training part, same held-out part), label mixes float [chunks, C]
        that the cur_* scores weight the test classes with: the phase's for "drift", the whole stream's for
        "iid"), in the seed's order. Both kinds hold the same texts, so their activations are cached once."""
        cfg = self.cfg
        idx = stream_indices(d["y"], d["fit"], d["counts"], kind, seed)
        texts = np.sort(idx.ravel())
        h, m = self.activations(d, texts)
        y = d["y"][texts]
        n_train = d["chunk"] - max(1, int(round(cfg.heldout_fraction * d["chunk"])))
        out = []
        for row in np.searchsorted(texts, idx):
            a, b = row[:n_train], row[n_train:]
            out.append(((h[a], m[a], y[a]), (h[b], m[b], y[b])))
        mixes = d["mixes"] if kind == "drift" else np.tile(d["counts"].sum(0) / d["counts"].sum(), (cfg.chunks, 1))
        return out, mixes


def class_accuracy(pred, labels, weights=None):
    """Accuracy of predictions int [..., S] against labels int [S]: plain (weights None) or sum_c w_c acc_c
    with acc_c the accuracy on the texts of class c (weights float [C]; a class without texts counts 0)."""
    hit = np.asarray(pred) == np.asarray(labels)
    if weights is None:
        return hit.mean(-1)
    per = np.stack([hit[..., labels == c].mean(-1) if np.any(labels == c) else np.zeros(hit.shape[:-1])
                    for c in range(len(weights))], -1)
    return per @ np.asarray(weights, np.float64)


def _scores(ens, logits, val_logits, setup_d, mix_test, mix_seen, newest):
    """The acc_*/cur_* scores of one pool after a chunk and its validation choices (rows without the key).
    logits / val_logits: member logits on test / validation [M, S, C]; newest: the newest member's test logits."""
    d = setup_d
    y_test, y_val = d["y"][d["test"]], d["y"][d["val"]]
    rules_test = ens.predict(*d["test_hm"], logits=logits)
    rules_val = ens.predict(*d["val_hm"], logits=val_logits)
    origins = [m.origin for m in ens.pool.members]
    selected = int(np.argmax(ens.scores))
    row, choices = {}, []
    for target, w_test, w_val in (("acc", None, None), ("cur", mix_test, mix_seen)):
        rule_val = {r: float(class_accuracy(rules_val[r], y_val, w_val)) for r in RULE_COLUMNS}
        rule = max(RULE_COLUMNS, key=lambda r: rule_val[r])           # first of the best on ties
        single_val = class_accuracy(val_logits.argmax(-1), y_val, w_val)
        single = class_accuracy(logits.argmax(-1), y_test, w_test)
        pick = int(np.argmax(single_val))
        for r in RULE_COLUMNS:
            row[f"{target}_{r}"] = float(class_accuracy(rules_test[r], y_test, w_test))
        row.update({f"{target}_ensemble": row[f"{target}_{rule}"], f"{target}_single": float(single[pick]),
                    f"{target}_selected": float(single[selected]), f"{target}_average": float(single.mean()),
                    f"{target}_newest": float(class_accuracy(newest.argmax(-1), y_test, w_test)),
                    f"{target}_oracle": float(single.max())})
        choices += [dict(target=target, candidate=f"rule:{r}", val_score=rule_val[r], chosen=int(r == rule))
                    for r in RULE_COLUMNS]
        choices += [dict(target=target, candidate=f"member:{o}", val_score=float(v), chosen=int(i == pick))
                    for i, (o, v) in enumerate(zip(origins, single_val))]
    return row, choices


def run_stream(setup, point):
    """One (dataset, stream, seed) point, every init: PointRows of the results rows for every pool size (fresh)
    or the default one (warm) and step, and sides {"choices.csv": rows, "matched.csv": row or None}."""
    cfg = setup.cfg
    d = setup.dataset(point["dataset"])
    trainer, seed = d["trainer"], point["seed"]
    trainer.seed = seed
    chunks, mixes = setup.stream(d, point["stream"], seed)
    gate = dict(steps=cfg.gate_steps, lr=cfg.gate_lr, l2=cfg.gate_l2)
    pools = {(init, k): OnTheFlyEnsemble(trainer, PromptPool(capacity=k), init, cfg.gate_memory, **gate)
             for init in cfg.inits for k in (cfg.pool_sizes if init == "fresh" else [cfg.pool_size])}
    logits, steps = {}, dict.fromkeys(cfg.inits, 0)       # (run, origin) -> (test, validation) logits

    def evaluate(init, member):
        logits[init, member.origin] = tuple(trainer.logits([member], *d[k])[0] for k in ("test_hm", "val_hm"))

    rows, choices, seen, matched = [], [], 0, None
    for t, (chunk, heldout) in enumerate(chunks):
        seen += len(chunk[2]) + len(heldout[2])
        mix_seen = np.bincount(np.concatenate([chunk[2], heldout[2]]), minlength=d["classes"]) / (
            len(chunk[2]) + len(heldout[2]))
        if "fresh" in cfg.inits or t == 0:               # a fresh member; the warm run's first one is the same
            before = trainer.steps_taken
            shared = trainer.train(*chunk, origin=t)
            evaluate("shared", shared)
            for init in cfg.inits:
                if init == "fresh" or t == 0:
                    steps[init] += trainer.steps_taken - before
                    logits[init, t] = logits["shared", t]
        else:
            shared = None
        for (init, k), ens in pools.items():
            before = trainer.steps_taken
            log = ens.observe(chunk, heldout, candidate=shared if init == "fresh" or t == 0 else None)
            if (init, t) not in logits:
                steps[init] += trainer.steps_taken - before
                evaluate(init, ens.newest)
            test_l, val_l = (np.stack([logits[init, m.origin][i] for m in ens.pool.members]) for i in (0, 1))
            row, picks = _scores(ens, test_l, val_l, d, mixes[t], mix_seen, logits[init, t][0])
            base = dict(point, init=init, pool_size=k, step=t + 1)
            rows.append(dict(base, phase=t * cfg.drift_phases // cfg.chunks if point["stream"] == "drift" else 0,
                             examples_seen=seen, train_steps=steps[init], member_steps=ens.newest.steps,
                             members=len(ens.pool.members), pool_bytes=ens.pool.nbytes,
                             newest_kept=int(log.slot is not None), **row))
            choices += [dict(base, **c) for c in picks]
    if cfg.matched_control:
        warm = pools["warm", cfg.pool_size].newest
        member = trainer.train(*chunks[-1][0], origin=cfg.chunks - 1, steps=warm.steps)   # the fresh init of t
        y = d["y"][d["test"]]
        acc = lambda lg: float(np.mean(lg.argmax(-1) == y))            # noqa: E731
        matched = dict(point, steps=member.steps, acc_warm_newest=acc(logits["warm", cfg.chunks - 1][0]),
                       acc_fresh_matched=acc(trainer.logits([member], *d["test_hm"])[0]),
                       acc_fresh_newest=acc(logits["fresh", cfg.chunks - 1][0]) if "fresh" in cfg.inits else
                       float("nan"))
    return PointRows(rows, {"choices.csv": choices, "matched.csv": matched})


def run_reference(setup, point):
    """One member trained on all the stream's training parts of a seed (the upper reference; both streams
    hold the same texts)."""
    d = setup.dataset(point["dataset"])
    trainer, seed = d["trainer"], point["seed"]
    trainer.seed = seed
    parts = [c for c, _ in setup.stream(d, "drift", seed)[0]]
    h, m, y = (np.concatenate([p[i] for p in parts]) for i in range(3))
    t0 = time.process_time()
    member = trainer.train(h, m, y, origin=setup.cfg.chunks)
    acc = float(np.mean(trainer.logits([member], *d["test_hm"])[0].argmax(-1) == d["y"][d["test"]]))
    return dict(point, examples=len(y), accuracy=acc, cpu_s=time.process_time() - t0)


def run_speed(setup, point):
    """Pool inference from the tokens of `speed_examples` test texts, every mode and speed pool size, timed."""
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


class EnsembleStudy(Study):
    """The study on the protocol (`deft6g.experiment.Study`), three tables in turn: results.csv (the streams,
    on workers; each point also fills choices.csv and matched.csv), reference.csv (the joint references, on
    workers) and speed.csv (timed, here). `run_ensemble` runs it."""
    name = "ensemble"

    def config(self, quick=False):
        return EnsembleConfig.quick() if quick else EnsembleConfig()

    def stages(self):
        return [Stage("results.csv", RESULT_KEY, RESULT_TYPES, stream_points, run_stream, describe_stream,
                      sides={"choices.csv": (CHOICE_KEY, CHOICE_TYPES), "matched.csv": (MATCHED_KEY, MATCHED_TYPES)}),
                Stage("reference.csv", REFERENCE_KEY, REFERENCE_TYPES,
                      lambda cfg, done: [dict(dataset=ds, seed=s) for ds in cfg.datasets for s in cfg.seeds],
                      run_reference),
                Stage("speed.csv", SPEED_KEY, SPEED_TYPES,
                      lambda cfg, done: [dict(repeat=r) for r in range(cfg.speed_repeats)], run_speed, here=True)]

    def setup(self, cfg):
        return _Setup(cfg)

    def prepare(self, setup, points):
        """Cache the activations of every stream left (both streams' texts) once, here, before the workers (the
        speed points, without a dataset, need none)."""
        order, streams = list(setup.cfg.datasets), {(p["dataset"], p["seed"]) for p in points if "dataset" in p}
        for ds, seed in sorted(streams, key=lambda k: (order.index(k[0]), k[1])):
            setup.stream(setup.dataset(ds), "drift", seed)

    def summary(self, cfg, rows):
        return summary(cfg, *_tables(rows))

    def plot(self, out, cfg, rows):
        plot(out, cfg, *_tables(rows)[:3])


def stream_points(cfg, done):
    return [dict(dataset=ds, stream=st, seed=s) for ds in cfg.datasets for st in cfg.streams for s in cfg.seeds]


def describe_stream(point, rows):
    """The final step's current-mix scores of every run of the stream."""
    last = max(r["step"] for r in rows)
    return "  ".join(f"{r['init']} M={r['pool_size']}: cur ensemble {r['cur_ensemble']:.3f} single "
                     f"{r['cur_single']:.3f}" for r in rows if r["step"] == last)


def _tables(rows):
    """(results, reference, speed, matched) rows of the study's {file: rows}."""
    return tuple(rows[f] for f in ("results.csv", "reference.csv", "speed.csv", "matched.csv"))


def run_ensemble(out_dir="results/ensemble", quick=False, log=print, config=None, **parallel):
    """Run (or resume) the study (`deft6g.experiment.run`); returns the `StudyResult` (.rows: {file: rows}).
    config: an EnsembleConfig (default: `EnsembleConfig.quick()` if quick else `EnsembleConfig()`); parallel:
    workers, ray_address, worker_gpus of `deft6g.experiment.run_points` for the streams and references (the
    activations of every stream are computed and cached on disk here first; every worker loads them)."""
    result = run(EnsembleStudy(), out_dir, config, quick=quick, log=log, **parallel)
    return result.with_legacy("run_ensemble", (result.config, *_tables(result.rows)))


def _final(cfg, rows, dataset, stream, init, size, step=None):
    """Rows of one (dataset, stream, init, pool size) at `step` (default: the last), sorted by seed."""
    step = cfg.chunks if step is None else step
    return sorted((r for r in rows if r["dataset"] == dataset and r["stream"] == stream and r["init"] == init
                   and r["pool_size"] == size and r["step"] == step), key=lambda r: r["seed"])


def _stream_mean(cfg, rows, dataset, stream, init, col):
    """Per seed, the mean of `col` over the stream's steps (default pool size): the online score."""
    steps = [_final(cfg, rows, dataset, stream, init, cfg.pool_size, t) for t in range(1, cfg.chunks + 1)]
    return [float(np.mean([s[i][col] for s in steps])) for i in range(min(map(len, steps)))]


def _speed_stats(cfg, rows, clock):
    """{(pool size, mode): (mean, ci) of samples/s by `clock` ("cpu_s" or "wall_s")}."""
    out = {}
    for size in cfg.speed_pool_sizes:
        for mode in ("one_by_one", "shared", "batched"):
            v = [r["examples"] / r[clock] for r in rows
                 if r["pool_size"] == size and r["mode"] == mode]
            if v:
                out[size, mode] = mean_ci(v)
    return out


def _speedup(cfg, rows, size, clock):
    by = {(r["repeat"], r["mode"]): r[clock] for r in rows if r["pool_size"] == size}
    return mean_ci([by[rep, "one_by_one"] / by[rep, "batched"] for rep, mode in by if mode == "batched"])


TARGET_TEXT = {"acc": "whole split", "cur": "current label mix"}
LABELS = {"ensemble": "ensemble (rule chosen on validation)", "single": "single prompt chosen on validation",
          "newest": "newest single prompt", "oracle": "best single on test (oracle bound, no choice)"}


def plot(out, cfg, rows, ref, spd):
    random_note = " (smoke test)" if cfg.model == "random-bert" else ""
    note = f"mean, 95% CI, {len(cfg.seeds)} seeds; {cfg.model}{random_note}; {cfg.num_tokens} prompt vectors, top " \
           "block; current mix: test classes weighted as in the chunk"
    for ds in cfg.datasets:
        joint = [r["accuracy"] for r in ref if r["dataset"] == ds]
        for st in cfg.streams:
            for target in TARGETS:
                hl = {"one prompt on all data seen (reference)": mean_ci(joint)} if joint and target == "acc" else None
                curves = {}
                for init in cfg.inits:
                    for col, label in LABELS.items():
                        if col == "oracle" and init != cfg.inits[0]:
                            continue
                        for step in range(1, cfg.chunks + 1):
                            fin = _final(cfg, rows, ds, st, init, cfg.pool_size, step)
                            if fin:
                                v = [r[f"{target}_{col}"] for r in fin]
                                curves.setdefault(f"{init}: {label}", []).append(
                                    (fin[0]["examples_seen"], *mean_ci(v)))
                if curves:
                    phases = f", label mix changes in {cfg.drift_phases} phases" if st == "drift" else ""
                    line_plot(out / f"accuracy_vs_examples_{ds}_{st}_{target}.png", curves,
                              "labelled examples received", f"test accuracy ({TARGET_TEXT[target]})",
                              f"{ds}, {st} stream{phases}, pool of {cfg.pool_size}", hlines=hl, note=note)
            curves = {}
            for col, label in LABELS.items():
                if col == "newest":
                    continue
                for size in cfg.pool_sizes:
                    fin = _final(cfg, rows, ds, st, "fresh", size)
                    if fin:
                        curves.setdefault(label, []).append((size, *mean_ci([r[f"cur_{col}"] for r in fin])))
            if curves:
                line_plot(out / f"accuracy_vs_pool_size_{ds}_{st}.png", curves, "pool size (prompts kept)",
                          "test accuracy (current label mix)",
                          f"{ds}, {st} stream: after {cfg.chunks} chunks, fresh init", logx=True, note=note,
                          xticks=cfg.pool_sizes)
    stats = _speed_stats(cfg, spd, "cpu_s")
    curves = {}
    for (size, mode), (m, ci) in stats.items():
        curves.setdefault(mode.replace("_", " "), []).append((size, m, ci))
    if curves:
        line_plot(out / "inference_speed.png", curves, "pool size (prompts)", "samples per CPU-second",
                  "pool inference from tokens", logx=True, logy=True, xticks=cfg.speed_pool_sizes,
                  note=f"{cfg.speed_examples} texts, {cfg.speed_repeats} repeats, mean and 95% CI; "
                       "one by one: a full forward per prompt")


def _diff(a, b, margin=0.01):
    """Paired difference text: mean +- 95% CI, and the TOST verdict at +-margin (needs 2 seeds)."""
    m, ci = paired_ci(a, b)
    verdict = f", TOST +-{margin:.2f}: {tost(a, b, margin)['verdict']}" if len(a) >= 2 else ""
    return f"{m:+.3f} +- {ci:.3f}{verdict}"


def summary(cfg, rows, ref, spd, matched=()):
    """The printed tables: per dataset and stream, the final and stream-averaged scores of every init
    (default pool size), the ensemble against the single prompt chosen on validation (paired per seed), warm
    against fresh at equal steps, the pool-size effect, the reference, the matched-steps control and the
    batched-inference speed-up."""
    lines = [f"on-the-fly prompt ensembles, {cfg.model}, {cfg.chunks} chunks, {len(cfg.seeds)} seeds "
             "(mean +- 95% CI; differences paired per seed; every choice made on validation; 'oracle' is the best "
             "single prompt on the test split: a bound, not a method)",
             "acc: whole test split; cur: test split weighted to the current chunk's label mix"]
    for ds in cfg.datasets:
        joint = [r["accuracy"] for r in ref if r["dataset"] == ds]
        if joint:
            n = next(r["examples"] for r in ref if r["dataset"] == ds)
            lines.append(f"{ds}: reference, one prompt trained on the stream's {n} training texts at once: "
                         "{:.3f} +- {:.3f} (acc)".format(*mean_ci(joint)))
        for st in cfg.streams:
            for init in cfg.inits:
                fin = _final(cfg, rows, ds, st, init, cfg.pool_size)
                if not fin:
                    continue
                lines.append(f"  {ds}, {st} stream, {init} init, pool {cfg.pool_size}, after "
                             f"{fin[0]['examples_seen']} examples ({fin[0]['train_steps']} training steps):")
                lines.append(" " * 14 + "".join(f"{t + ' final':>16}{t + ' stream mean':>18}" for t in TARGETS))
                for s in SCORES:
                    cells = []
                    for t in TARGETS:
                        cells.append("{:>8.3f} +- {:.3f}".format(*mean_ci([r[f"{t}_{s}"] for r in fin])))
                        cells.append("{:>10.3f} +- {:.3f}".format(*mean_ci(_stream_mean(cfg, rows, ds, st, init,
                                                                                         f"{t}_{s}"))))
                    lines.append(f"    {s:<10}" + "".join(cells))
                for t in TARGETS:
                    ens = _stream_mean(cfg, rows, ds, st, init, f"{t}_ensemble")
                    one = _stream_mean(cfg, rows, ds, st, init, f"{t}_single")
                    lines.append(f"    ensemble minus single chosen on validation ({t}, stream mean): "
                                 f"{_diff(ens, one)}")
            if {"fresh", "warm"} <= set(cfg.inits):
                for t in TARGETS:
                    w, f = (_stream_mean(cfg, rows, ds, st, i, f"{t}_ensemble") for i in ("warm", "fresh"))
                    lines.append(f"  {ds}, {st}: warm minus fresh, ensemble, {t} stream mean, equal training steps: "
                                 f"{_diff(w, f)}")
            sizes = [(k, _final(cfg, rows, ds, st, "fresh", k)) for k in cfg.pool_sizes]
            text = ", ".join(f"M={k}: {mean_ci([r['cur_ensemble'] for r in f])[0]:.3f}" for k, f in sizes if f)
            if text:
                lines.append(f"  {ds}, {st}, fresh init, ensemble (cur, final) by pool size: {text}")
            mat = sorted((r for r in matched if r["dataset"] == ds and r["stream"] == st), key=lambda r: r["seed"])
            if mat:
                a, b = [r["acc_warm_newest"] for r in mat], [r["acc_fresh_matched"] for r in mat]
                lines.append(f"  {ds}, {st}: last member, warm ({mat[0]['steps']} steps in its lineage) minus fresh "
                             f"trained for as many steps on the last chunk (acc): {_diff(a, b)}")
        fin = _final(cfg, rows, ds, cfg.streams[0], cfg.inits[0], cfg.pool_size)
        if fin:
            member = fin[0]["pool_bytes"] // fin[0]["members"]
            lines.append(f"  {ds}: a member (prompt + own head, float32) is {member:,d} bytes; a full pool of "
                         f"{cfg.pool_size}: {cfg.pool_size * member:,d} bytes")
    for clock, name in (("cpu_s", "CPU time"), ("wall_s", "wall time")):
        parts = []
        for size in cfg.speed_pool_sizes:
            if any(r["pool_size"] == size for r in spd):
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
