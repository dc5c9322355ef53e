"""`deft6g connect`: a multi-view split model whose device-to-server layer is computed over the air (DEFT
technique 2) -- accuracy vs SNR and vs channel uses of AirComp (MSE and task-oriented design) and digital
transmission, each arm trained two ways, against each single view, central concatenation and the ideal sum.

M devices each see one segment of an example (BBC News: M consecutive parts of an article; Rotten Tomatoes:
the two halves of a review), encode it with the frozen MiniLM (features cached once) and project it to D
dimensions; the server adds the projections (ideal, AirComp or digital) and runs the head. What trains: the
M projections and the head (the FoMo is frozen). Every radio arm is trained both ways (the `training`
column): "ideal" (on the noise-free sum, then deployed over its channel) and "noise-aware" (through its own
channel at its own operating point: AirComp with its design and noise, digital with its quantiser and lost
blocks). Protocol (docs/design.md §8): per seed, a validation split carved from train
(`deft6g.finetune.validation_split`); models train on the rest; every row carries its validation accuracy,
over its channel, and the choices (the best single view; the digital quantiser that reaches AirComp's
accuracy) are made on it and written to choices.csv; test channels and noise come from seeds disjoint
from training's (`channel_seed`). Every finished point is appended to results.csv at once; re-running the
same command resumes. With `workers` the points run on Ray workers (`deft6g.experiment.run_points`); every
model is trained from its point's seed, so the rows (but cpu_s) do not depend on the number of workers.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from deft6g.experiment import Study, line_plot, load_flat_config, mean_ci, paired_ci, run, summarise, tost
from deft6g.finetune import (AirCompConnection, DigitalConnection, MultiViewModel, evaluate_multiview, feature_stats,
                             load_multiview, side_info_channel_uses, task_importance, train_multiview, training_stats,
                             validation_split)


TYPES = {"task": str, "scheme": str, "training": str, "num_rx_ant": int, "snr_db": float, "seed": int,
         "accuracy": float, "val_accuracy": float, "nmse": float, "payload_uses": float, "side_info_uses": float,
         "channel_uses": float, "latency_us": float, "cpu_s": float}
FIELDS = list(TYPES)
KEY = FIELDS[:6]
IDEAL_SCHEMES = ("ideal", "central")             # trained and deployed without a channel
TRAININGS = ("ideal", "noise-aware")
TRAINING_LABELS = {"ideal": "trained on the ideal sum", "noise-aware": "trained noise-aware at its own SNR"}
AIR_SCHEMES = ("aircomp", "aircomp-task")        # MSE design, task-oriented design
EQUAL_MARGIN = 0.01                              # "equal accuracy": within 1 point (TOST margin)
CHOICE_FIELDS = ["task", "choice", "training", "snr_db", "candidate", "val_accuracy", "target", "seeds", "chosen"]


@dataclass
class ConnectConfig:
    """The study's grid. tasks: [dataset, views M, tokens per view, training examples (None: all)];
    width D of the projections; batch_size: training examples per channel realisation, block: test
    examples per channel realisation, repeats: channel draws per test block; num_rx_ant N of the SNR sweep,
    num_rx_ant_sweep N at num_rx_ant_sweep_snr_db (AirComp arms only); SNR = P / sigma^2 per device [dB];
    method: the MSE design (`design_aircomp`); digital_num_bits: quantiser bits of the digital baseline
    (adaptive MCS, multi-user MIMO, CRC); AirComp's side information (the normalisation statistics, 2 D reals
    per device at side_info_bits each, 1 bit per channel use) is sent once per deployment_examples examples;
    bandwidth_hz: one channel use lasts 1 / bandwidth seconds; validation_fraction: share of each class of
    the training examples held out (per seed) for the choices; trainings: how every radio arm is trained,
    "noise-aware" (through its own channel at its own SNR) and/or "ideal" (on the noise-free sum). The default
    is the fair view alone on a grid that keeps the previous protocol's run time; configs/connect_paper.toml
    runs both views on the full grid."""
    model: str = "all-MiniLM-L6-v2"
    tasks: list = field(default_factory=lambda: [["bbc_news", 4, 64, None], ["rotten_tomatoes", 2, 32, 4000]])
    width: int = 16
    hidden: int = 64
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    method: str = "mmse"
    num_rx_ant: int = 4
    snr_db: list = field(default_factory=lambda: [-20.0, -10.0, 0.0, 20.0])
    num_rx_ant_sweep: list = field(default_factory=list)
    num_rx_ant_sweep_snr_db: list = field(default_factory=lambda: [-10.0])
    block: int = 128
    repeats: int = 3
    digital_num_bits: list = field(default_factory=lambda: [2, 8])
    side_info_bits: int = 32
    deployment_examples: int = 10_000
    bandwidth_hz: float = 1e6
    test_examples: int = None
    validation_fraction: float = 0.1
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    trainings: list = field(default_factory=lambda: ["noise-aware"])

    def __post_init__(self):
        f = self.validation_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise ValueError(f"`validation_fraction` must be a number in (0, 1), got {f!r}")
        t = self.trainings
        if not isinstance(t, list) or not t or len(set(t)) != len(t) or not set(t) <= set(TRAININGS):
            raise ValueError(f"`trainings` must be a non-empty list of distinct values of {list(TRAININGS)}, got {t!r}")

    @classmethod
    def quick(cls):
        return cls(model="random-bert", tasks=[["bbc_news", 2, 32, 200]], width=4, hidden=16, epochs=2, batch_size=32,
                   snr_db=[0.0, 20.0], num_rx_ant_sweep=[], block=50, repeats=1, digital_num_bits=[4],
                   test_examples=100, seeds=[0], trainings=list(TRAININGS))


def task_name(task):
    return f"{task[0]}-M{task[1]}"


def digital_schemes(cfg):
    """{scheme name: quantiser bits} of the digital arms."""
    return {f"digital-q{q}": q for q in cfg.digital_num_bits}


def single_views(task):
    """{scheme name: view index} of a task's single-view references."""
    return {f"single-{m}": m for m in range(task[1])}


def radio_schemes(cfg, n):
    """The radio arms at num_rx_ant n: AirComp's two designs, and digital at the sweep's N."""
    return list(AIR_SCHEMES) + (list(digital_schemes(cfg)) if n == cfg.num_rx_ant else [])


def points(cfg):
    """Every (task, scheme, training, num_rx_ant, snr_db, seed) point, ordered so that points sharing a trained
    model follow each other; schemes without a channel have training "ideal", num_rx_ant 0 and snr_db inf."""
    out = []
    radio = [(cfg.num_rx_ant, s) for s in cfg.snr_db]
    radio += [(n, s) for n in cfg.num_rx_ant_sweep for s in cfg.num_rx_ant_sweep_snr_db]
    for task in cfg.tasks:
        base = dict(task=task_name(task))
        for seed in cfg.seeds:
            base["seed"] = seed
            singles = tuple(single_views(task))
            out += [dict(base, scheme=s, training="ideal", num_rx_ant=0, snr_db=float("inf"))
                    for s in IDEAL_SCHEMES + singles]
            for training in cfg.trainings:
                for n, snr in radio:
                    out += [dict(base, scheme=s, training=training, num_rx_ant=n, snr_db=snr)
                            for s in radio_schemes(cfg, n)]
    return [{k: p[k] for k in KEY} for p in out]


class ConnectSetup:
    """What a process's points share (the study's setup): the data (features cached on disk) and the trained
    models (without a channel: kept for the run; noise-aware: until the next), all built on first use.
    setup(point) -> the results.csv row."""

    def __init__(self, cfg, log=print):
        self.cfg, self.log, self.data, self.ideal, self.noisy = cfg, log, {}, {}, {}

    def task(self, name):
        if name not in self.data:
            task = next(t for t in self.cfg.tasks if task_name(t) == name)
            self.data[name] = load_multiview(task[0], task[1], self.cfg.model, task[2], train_examples=task[3],
                                             test_examples=self.cfg.test_examples, log=self.log)
        return self.data[name]

    def split(self, name, seed):
        """(x_fit, y_fit, x_val, y_val): the training features cut by `validation_split` of this seed."""
        d = self.task(name)
        fit, val = validation_split(np.arange(len(d.y_train)), d.y_train, self.cfg.validation_fraction, seed)
        return d.x_train[fit], d.y_train[fit], d.x_train[val], d.y_train[val]

    def connection(self, scheme, m, n, snr, importance=None):
        """The deployed (or noise-aware training) connection of a radio scheme."""
        cfg = self.cfg
        bits = digital_schemes(cfg)
        if scheme in bits:
            return DigitalConnection(m, n, cfg.width, snr, num_bits=bits[scheme])
        return AirCompConnection(m, n, cfg.width, snr, cfg.method, importance=importance)

    def model(self, name, kind, seed, link=None, n=0, snr=None):
        """A trained model: kind "multi" (all views), "central" (concatenated), ("single", m); with a radio
        `link` ("aircomp" or "digital-q<bits>") the multi-view model is trained through that link at (n, snr)
        (noise-aware). Models trained without a channel are kept for the run; a noise-aware one only until
        the next (its points are adjacent)."""
        key, cache = ((name, kind, seed), self.ideal) if link is None else ((name, seed, link, n, snr), self.noisy)
        if key not in cache:
            d, cfg = self.task(name), self.cfg
            x_fit, y_fit = self.split(name, seed)[:2]
            x = self.features(x_fit, kind)
            width = cfg.hidden if kind == "central" else cfg.width
            model = MultiViewModel(x.shape[1], x.shape[2], width, d.num_classes, cfg.hidden, seed=seed,
                                   feature_stats=feature_stats(x))
            conn = None if link is None else self.connection(link, d.num_views, n, snr)
            train_multiview(model, x, y_fit, conn, cfg.epochs, cfg.batch_size, cfg.lr, seed=seed)
            if link is not None:
                cache.clear()
            cache[key] = model
        return cache[key]

    @staticmethod
    def features(x, kind):
        if kind == "central":
            return x.reshape(len(x), 1, -1)
        if isinstance(kind, tuple):
            return x[:, kind[1]:kind[1] + 1]
        return x

    def __call__(self, point):
        cfg, name, scheme, seed = self.cfg, point["task"], point["scheme"], point["seed"]
        n, snr = point["num_rx_ant"], point["snr_db"]
        views = single_views(next(t for t in cfg.tasks if task_name(t) == name))
        d = self.task(name)
        x_fit, y_fit, x_val, y_val = self.split(name, seed)
        t0 = time.process_time()
        row = dict(point, nmse=0.0, payload_uses=0.0, side_info_uses=0.0)
        if scheme in IDEAL_SCHEMES or scheme in views:
            kind = ("single", views[scheme]) if scheme in views else {"ideal": "multi", "central": "central"}[scheme]
            model = self.model(name, kind, seed)
            row["accuracy"] = evaluate_multiview(model, self.features(d.x_test, kind), d.y_test)[0]
            row["val_accuracy"] = evaluate_multiview(model, self.features(x_val, kind), y_val)[0]
        else:
            m = d.num_views
            link = "aircomp" if scheme in AIR_SCHEMES else scheme
            model = self.model(name, "multi", seed, *((link, n, snr) if point["training"] == "noise-aware" else ()))
            if scheme in digital_schemes(cfg):
                conn, stats, side_reals = self.connection(scheme, m, n, snr), None, 0     # headers in its count
            else:
                importance = task_importance(model, x_fit, y_fit) if scheme == "aircomp-task" else None
                conn = self.connection(scheme, m, n, snr, importance)
                stats, side_reals = training_stats(model, x_fit), conn.side_info_reals()
            acc, nmse, uses = evaluate_multiview(model, d.x_test, d.y_test, conn, cfg.block, cfg.repeats, stats,
                                                 seed=seed)
            row["val_accuracy"] = evaluate_multiview(model, x_val, y_val, conn, cfg.block, cfg.repeats, stats,
                                                     seed=seed, split="validation")[0]
            side = side_info_channel_uses(side_reals, m, cfg.side_info_bits) / cfg.deployment_examples
            row.update(accuracy=acc, nmse=nmse, payload_uses=uses, side_info_uses=side)
        row["channel_uses"] = row["payload_uses"] + row["side_info_uses"]
        row["latency_us"] = 1e6 * row["channel_uses"] / cfg.bandwidth_hz
        row["cpu_s"] = round(time.process_time() - t0, 2)                      # training included when done here
        return row


class ConnectStudy(Study):
    """The study on the protocol (`deft6g.experiment.Study`); `run_connect` runs it (its command-line entry, with
    --config, is in deft6g.benchmarks.cli). log: where the driver's setup reports the features it computes (a
    worker's prints)."""
    name = "connect"
    key, types = KEY, TYPES
    # Points of one (task, seed, num_rx_ant, SNR) go to one worker, in order: a noise-aware AirComp model trained
    # at that SNR serves both its designs (MSE and task-oriented) and is trained once.
    group = ["task", "seed", "num_rx_ant", "snr_db"]

    def __init__(self, log=print):
        self.log = log

    def __getstate__(self):
        return {**self.__dict__, "log": print}

    def config(self, quick=False):
        return ConnectConfig.quick() if quick else ConnectConfig()

    def points(self, cfg):
        return points(cfg)

    def setup(self, cfg):
        return ConnectSetup(cfg, self.log)

    def prepare(self, setup, todo):
        for name in dict.fromkeys(p["task"] for p in todo):      # features once, before any worker starts
            setup.task(name)

    def run_point(self, setup, point):
        return setup(point)

    def describe(self, p, row):
        return (f"{p['task']} {p['scheme']} ({p['training']}) N={p['num_rx_ant']} {p['snr_db']} dB seed {p['seed']}: "
                f"accuracy {row['accuracy']:.3f}")

    def tables(self, cfg, rows):
        return {"choices.csv": (CHOICE_FIELDS, choices(cfg, rows))}

    def summary(self, cfg, rows):
        return summary(cfg, rows)

    def plot(self, out, cfg, rows):
        plot(out, cfg, rows)


def run_connect(out_dir="results/connect", config=None, quick=False, log=print, **parallel):
    """Run (or resume) the study into `out_dir` (`deft6g.experiment.run`); writes results.csv, choices.csv,
    summary.txt, timing.json and the plots. config: a ConnectConfig, a TOML file of top-level keys replacing the
    default's (or the quick one's), or None. Returns the `StudyResult` (.timing["cpu_s"]: the CPU seconds of
    this run, this process's plus on Ray workers the cpu_s of the points run now, the workers' start aside).
    parallel: workers, ray_address, worker_gpus of `deft6g.experiment.run_points` (the features are computed and
    cached on disk here first; every worker loads them from the cache)."""
    cfg = config if isinstance(config, ConnectConfig) else \
        load_flat_config(ConnectStudy().config(quick), config)
    result = run(ConnectStudy(log), out_dir, cfg, log=log, **parallel)
    return result.with_legacy("run_connect", (result.config, result.rows, result.timing["cpu_s"]))


def _select(rows, task, scheme, training=None, n=None, snr=None):
    """Rows of (task, scheme[, training, num_rx_ant n, snr]) by seed."""
    return {r["seed"]: r for r in rows if r["task"] == task and r["scheme"] == scheme
            and (training is None or r["training"] == training)
            and (n is None or (r["num_rx_ant"] == n and r["snr_db"] == snr))}


def _mean(sel, column):
    return float(np.mean([r[column] for r in sel.values()]))


def _curve(rows, task, scheme, training, n):
    pts = []
    for s in summarise([r for r in rows if r["task"] == task and r["scheme"] == scheme and r["training"] == training
                        and r["num_rx_ant"] == n], ["snr_db"], ["accuracy", "channel_uses"]):
        pts.append((s["snr_db"], s["accuracy_mean"], s["accuracy_ci"], s["channel_uses_mean"]))
    return sorted(pts)


def _reference(rows, task, scheme):
    vals = [r["accuracy"] for r in rows if r["task"] == task and r["scheme"] == scheme]
    return mean_ci(vals) if vals else None


def best_single(rows, task):
    """The single view with the highest mean validation accuracy over the seeds (never the test accuracy):
    its scheme name, or None."""
    singles = sorted({r["scheme"] for r in rows if r["task"] == task and r["scheme"].startswith("single-")})
    return max(singles, key=lambda s: _mean(_select(rows, task, s), "val_accuracy")) if singles else None


def equal_accuracy_bits(rows, cfg, task, training, snr):
    """The digital quantiser that reaches AirComp's accuracy (MSE design, N = cfg.num_rx_ant, same training)
    at `snr`, chosen on validation: the fewest bits whose mean validation accuracy is at least AirComp's minus
    EQUAL_MARGIN. Returns (bits or None, AirComp's mean validation accuracy, {bits: digital's}) or None."""
    air = _select(rows, task, "aircomp", training, cfg.num_rx_ant, snr)
    if not air:
        return None
    target = _mean(air, "val_accuracy")
    grid = {q: _mean(sel, "val_accuracy") for q in cfg.digital_num_bits
            if (sel := _select(rows, task, f"digital-q{q}", training, cfg.num_rx_ant, snr))}
    reaching = [q for q in sorted(grid) if grid[q] >= target - EQUAL_MARGIN]
    return (reaching[0] if reaching else None), target, grid


def choices(cfg, rows):
    """choices.csv: every grid point of the study's validation choices with its mean validation accuracy over
    the seeds -- the best single view per task, and per (task, training, SNR) the digital quantiser that
    reaches AirComp's validation accuracy within EQUAL_MARGIN (target: AirComp's)."""
    out = []
    for task in [task_name(t) for t in cfg.tasks]:
        best = best_single(rows, task)
        for s in sorted({r["scheme"] for r in rows if r["task"] == task and r["scheme"].startswith("single-")}):
            sel = _select(rows, task, s)
            out.append(dict(task=task, choice="best single view", training="ideal", snr_db=float("inf"), candidate=s,
                            val_accuracy=_mean(sel, "val_accuracy"), target="", seeds=len(sel), chosen=s == best))
        for training in cfg.trainings:
            for snr in cfg.snr_db:
                eq = equal_accuracy_bits(rows, cfg, task, training, snr)
                if not eq:
                    continue
                bits, target, grid = eq
                for q, val in grid.items():
                    seeds = len(_select(rows, task, f"digital-q{q}", training, cfg.num_rx_ant, snr))
                    out.append(dict(task=task, choice="digital at AirComp's accuracy", training=training,
                                    snr_db=snr, candidate=f"digital-q{q}", val_accuracy=val, target=target,
                                    seeds=seeds, chosen=q == bits))
    return out


def plot(out, cfg, rows):
    """accuracy_vs_snr_<task>_<training>.png per training (N = cfg.num_rx_ant; the other antenna counts as
    markers) and accuracy_vs_channel_uses_<task>.png (every arm trained noise-aware for its own channel, if that
    view is run)."""
    note = f"mean and 95% CI over {len(cfg.seeds)} seeds; MiniLM frozen, projections (D={cfg.width}) and head trained"
    if cfg.model == "random-bert":
        note += "; random-bert: a randomly initialised model"
    for task in sorted({r["task"] for r in rows}):
        hl = {}
        for scheme, label in (("ideal", "ideal sum (no channel)"), ("central", "central concatenation")):
            ref = _reference(rows, task, scheme)
            if ref:
                hl[label] = ref
        single = best_single(rows, task)
        if single:
            hl[f"best single view on validation ({single})"] = _reference(rows, task, single)
        for training in cfg.trainings:
            curves = {}
            for scheme in radio_schemes(cfg, cfg.num_rx_ant):
                if pts := _curve(rows, task, scheme, training, cfg.num_rx_ant):
                    curves[f"{scheme} N={cfg.num_rx_ant}"] = [p[:3] for p in pts]
            for n in cfg.num_rx_ant_sweep:
                if pts := _curve(rows, task, "aircomp", training, n):
                    curves[f"aircomp N={n}"] = [p[:3] for p in pts]
            if curves:
                line_plot(out / f"accuracy_vs_snr_{task}_{training}.png", curves, "SNR P/sigma^2 per device [dB]",
                          "test accuracy", f"{task}: every arm {TRAINING_LABELS[training]}", hlines=hl, note=note)
        uses, fair = {}, "noise-aware" if "noise-aware" in cfg.trainings else cfg.trainings[0]
        for scheme in ("aircomp",) + tuple(f"digital-q{q}" for q in cfg.digital_num_bits):
            if pts := _curve(rows, task, scheme, fair, cfg.num_rx_ant):
                uses[f"{scheme} N={cfg.num_rx_ant}"] = [(p[3], p[1], p[2], f"{p[0]:g} dB") for p in pts]
        if uses:
            line_plot(out / f"accuracy_vs_channel_uses_{task}.png", uses, "channel uses per example (side info incl.)",
                      "test accuracy", f"{task}: accuracy vs uplink cost (every arm {TRAINING_LABELS[fair]})", logx=True,
                      marker_only=True, hlines=hl, note=note)


def _paired(rows, task, a, b, n, snr):
    """Paired accuracy difference a - b over seeds; a and b are (scheme, training) pairs, measured at (n, snr)
    unless the scheme has no channel."""
    def by_seed(scheme, training):
        if scheme in IDEAL_SCHEMES or scheme.startswith("single-"):
            return _select(rows, task, scheme)
        return _select(rows, task, scheme, training, n, snr)
    x, y = by_seed(*a), by_seed(*b)
    seeds = sorted(set(x) & set(y))
    if not seeds:
        return None
    return paired_ci([x[s]["accuracy"] for s in seeds], [y[s]["accuracy"] for s in seeds])


def equal_accuracy_line(rows, cfg, task, training, snr):
    """The summary's cell for digital at AirComp's accuracy (the quantiser chosen on validation): test uses
    ratio, the paired test accuracy difference and its TOST verdict at EQUAL_MARGIN."""
    eq = equal_accuracy_bits(rows, cfg, task, training, snr)
    if not eq:
        return None
    if eq[0] is None:
        return "no digital quantiser reaches AirComp's validation accuracy"
    dig = _select(rows, task, f"digital-q{eq[0]}", training, cfg.num_rx_ant, snr)
    air = _select(rows, task, "aircomp", training, cfg.num_rx_ant, snr)
    seeds = sorted(set(dig) & set(air))
    ratio = mean_ci([dig[s]["channel_uses"] / air[s]["channel_uses"] for s in seeds])
    a, b = ([sel[s]["accuracy"] for s in seeds] for sel in (dig, air))
    diff = paired_ci(a, b)
    verdict = f"TOST ±{100 * EQUAL_MARGIN:g} pt {tost(a, b, EQUAL_MARGIN)['verdict']}" if len(seeds) > 1 else \
        "TOST needs 2 seeds"
    return (f"digital-q{eq[0]} (chosen on validation) uses {_fmt(*ratio)}x AirComp's, test accuracy "
            f"{_points(diff)} points ({verdict})")


def _fmt(m, c):
    return f"{m:.3f}±{c:.3f}" if np.isfinite(c) else f"{m:.3f}"


def _points(d):
    return f"{100 * d[0]:+.1f}" + (f"±{100 * d[1]:.1f}" if np.isfinite(d[1]) else "")


def summary(cfg, rows):
    """Tables per task and training (accuracy mean +- 95% CI per scheme and SNR at N = cfg.num_rx_ant) and
    the headline comparisons, paired per seed; choices made on validation."""
    lines = []
    for task in [task_name(t) for t in cfg.tasks]:
        trows = [r for r in rows if r["task"] == task]
        if not trows:
            continue
        lines.append(f"\n{task}: test accuracy (mean ± 95% CI over seeds), N = {cfg.num_rx_ant}, D = {cfg.width}, "
                     f"design {cfg.method}")
        refs = [f"{s} {_fmt(*_reference(rows, task, s))}" for s in IDEAL_SCHEMES if _reference(rows, task, s)]
        single = best_single(rows, task)
        if single:
            refs.append(f"best single view on validation ({single}) {_fmt(*_reference(rows, task, single))}")
        lines.append("  no channel: " + "; ".join(refs))
        schemes = radio_schemes(cfg, cfg.num_rx_ant)
        for training in cfg.trainings:
            lines.append(f"  {TRAINING_LABELS[training]}:")
            lines.append(f"  {'SNR dB':>7}" + "".join(f"{s:>15}" for s in schemes))
            for snr in cfg.snr_db:
                cells = []
                for s in schemes:
                    pts = [p for p in _curve(rows, task, s, training, cfg.num_rx_ant) if p[0] == snr]
                    cells.append(f"{_fmt(pts[0][1], pts[0][2]):>15}" if pts else f"{'-':>15}")
                lines.append(f"  {snr:>7g}" + "".join(cells))
            for n in cfg.num_rx_ant_sweep:
                cells = [f"{p[0]:g} dB {_fmt(p[1], p[2])}" for p in _curve(rows, task, "aircomp", training, n)]
                if cells:
                    lines.append(f"  aircomp N={n}: " + "; ".join(cells))
        uses = {s: np.mean([r["channel_uses"] for r in trows if r["scheme"] == s
                            and r["num_rx_ant"] == cfg.num_rx_ant]) for s in schemes
                if any(r["scheme"] == s for r in trows)}
        lines.append("  channel uses per example (mean over SNRs, side info incl.): "
                     + ", ".join(f"{s} {u:.2f}" for s, u in uses.items()))
        lines.append("  paired differences (accuracy points, mean ± 95% CI):")
        for snr in cfg.snr_db:
            parts = []
            for s in schemes:
                d = _paired(rows, task, (s, "noise-aware"), (s, "ideal"), cfg.num_rx_ant, snr)
                if d:
                    parts.append(f"{s} noise-aware - ideal-trained {_points(d)}")
            for training in cfg.trainings:
                d = _paired(rows, task, ("aircomp", training), ("ideal", "ideal"), cfg.num_rx_ant, snr)
                if d:
                    parts.append(f"aircomp ({training}) - ideal sum {_points(d)}")
                d = _paired(rows, task, ("aircomp-task", training), ("aircomp", training), cfg.num_rx_ant, snr)
                if d:
                    parts.append(f"task - MSE design ({training}) {_points(d)}")
            lines.append(f"    {snr:>5g} dB: " + "; ".join(parts))
            for training in cfg.trainings:
                if text := equal_accuracy_line(rows, cfg, task, training, snr):
                    lines.append(f"      {training}: {text}")
        if single:
            d = _paired(rows, task, ("ideal", "ideal"), (single, "ideal"), 0, float("inf"))
            lines.append(f"  multi-view (ideal sum) - best single view on validation: {_points(d)} points")
    if cfg.model == "random-bert":
        lines.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    return "\n".join(lines)
