"""`deft6g connect`: a multi-view split model whose device-to-server layer is computed over the air (DEFT
technique 2) -- accuracy vs SNR and vs channel uses for noise-aware and naive AirComp training, task-oriented vs
MSE design, digital transmission, each single view, central concatenation and the ideal sum.

M devices each see one segment of an example (BBC News: M consecutive parts of an article; Rotten Tomatoes:
the two halves of a review), encode it with the frozen MiniLM (features cached once) and project it to D
dimensions; the server adds the projections (ideal, AirComp or digital) and runs the head. What trains: the
M projections and the head (the FoMo is frozen). Every finished (task, scheme, num_rx_ant, SNR, seed) point is
appended to results.csv at once; re-running the same command resumes. With `workers` the points run on Ray
workers (`deft6g.experiment.run_points`); every model is trained from its point's seed, so the rows (but
cpu_s) do not depend on the number of workers.
"""

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from deft6g.experiment import ResultStore, line_plot, mean_ci, paired_ci, prepare_output, run_points, summarise

FIELDS = ["task", "scheme", "num_rx_ant", "snr_db", "seed", "accuracy", "nmse", "payload_uses", "side_info_uses",
          "channel_uses", "latency_us", "cpu_s"]
KEY = FIELDS[:5]
IDEAL_SCHEMES = ("ideal", "central")             # trained and deployed without a channel
AIR_SCHEMES = ("naive", "naive-task", "noise-aware", "noise-aware-task")


@dataclass
class ConnectConfig:
    """The study's grid. tasks: [dataset, views M, tokens per view, training examples (None: all)];
    width D of the projections; batch_size: training examples per channel realisation, block: test
    examples per channel realisation, repeats: channel draws per test block; num_rx_ant N of the SNR sweep,
    num_rx_ant_sweep N at num_rx_ant_sweep_snr_db; SNR = P / sigma^2 per device [dB]; method: the MSE design
    (`design_aircomp`); digital_num_bits: quantiser bits of the digital baseline (adaptive MCS, multi-user MIMO,
    CRC); AirComp's side information (the normalisation statistics, 2 D reals per device at side_info_bits
    each, 1 bit per channel use) is sent once per deployment_examples examples; bandwidth_hz: one channel
    use lasts 1 / bandwidth seconds."""
    model: str = "all-MiniLM-L6-v2"
    tasks: list = field(default_factory=lambda: [["bbc_news", 4, 64, None], ["rotten_tomatoes", 2, 32, 4000]])
    width: int = 16
    hidden: int = 64
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    method: str = "mmse"
    num_rx_ant: int = 4
    snr_db: list = field(default_factory=lambda: [-20.0, -10.0, 0.0, 10.0, 20.0, 30.0])
    num_rx_ant_sweep: list = field(default_factory=lambda: [1, 16])
    num_rx_ant_sweep_snr_db: list = field(default_factory=lambda: [-10.0])
    block: int = 128
    repeats: int = 3
    digital_num_bits: list = field(default_factory=lambda: [2, 4, 8])
    side_info_bits: int = 32
    deployment_examples: int = 10_000
    bandwidth_hz: float = 1e6
    test_examples: int = None
    seeds: list = field(default_factory=lambda: [0, 1, 2])

    @classmethod
    def quick(cls):
        return cls(model="random-bert", tasks=[["bbc_news", 2, 32, 200]], width=4, hidden=16, epochs=2, batch_size=32,
                   snr_db=[0.0, 20.0], num_rx_ant_sweep=[], block=50, repeats=1, digital_num_bits=[4],
                   test_examples=100, seeds=[0])


def task_name(task):
    return f"{task[0]}-M{task[1]}"


def points(cfg):
    """Every (task, scheme, num_rx_ant, snr_db, seed) point, ordered so that points sharing a trained model
    follow each other; schemes without a channel have num_rx_ant 0 and snr_db inf."""
    out = []
    radio = [(cfg.num_rx_ant, s) for s in cfg.snr_db]
    radio += [(n, s) for n in cfg.num_rx_ant_sweep for s in cfg.num_rx_ant_sweep_snr_db]
    for task in cfg.tasks:
        name = task_name(task)
        for seed in cfg.seeds:
            base = dict(task=name, seed=seed)
            singles = [f"single-{m}" for m in range(task[1])]
            out += [dict(base, scheme=s, num_rx_ant=0, snr_db=float("inf")) for s in IDEAL_SCHEMES + tuple(singles)]
            for n, snr in radio:
                schemes = ["naive", "naive-task"] + [f"digital-q{q}" for q in cfg.digital_num_bits]
                out += [dict(base, scheme=s, num_rx_ant=n, snr_db=snr) for s in schemes]
            for n, snr in radio:
                out += [dict(base, scheme=s, num_rx_ant=n, snr_db=snr) for s in ("noise-aware", "noise-aware-task")]
    return [{k: p[k] for k in KEY} for p in out]


class ConnectTask:
    """What one point runs, picklable for Ray workers: holds the configuration; the data (features cached on
    disk), and the models trained without a channel (kept per process) are built on first use in each process
    and never pickled. task(point) -> the results.csv row."""

    def __init__(self, cfg, log=print):
        self.cfg, self.log, self.data, self.ideal, self.noisy = cfg, log, {}, {}, {}

    def __getstate__(self):
        return {"cfg": self.cfg, "log": print, "data": {}, "ideal": {}, "noisy": {}}

    def task(self, name):
        from deft6g.finetune import load_multiview
        if name not in self.data:
            task = next(t for t in self.cfg.tasks if task_name(t) == name)
            self.data[name] = load_multiview(task[0], task[1], self.cfg.model, task[2], train_examples=task[3],
                                             test_examples=self.cfg.test_examples, log=self.log)
        return self.data[name]

    def model(self, name, kind, seed, connection=None):
        """A trained model: kind "multi" (all views), "central" (concatenated), ("single", m); with an
        AirComp `connection` the multi-view model is trained through it (noise-aware). Models trained without
        a channel are kept for the run; a noise-aware one only until the next (its points are adjacent)."""
        from deft6g.finetune import MultiViewModel, feature_stats, train_multiview
        if connection is None:
            key, cache = (name, kind, seed), self.ideal
        else:
            key, cache = (name, seed, connection.num_rx_ant, connection.snr_db), self.noisy
        if key not in cache:
            d, cfg = self.task(name), self.cfg
            x = self.features(d.x_train, kind)
            width = cfg.hidden if kind == "central" else cfg.width
            model = MultiViewModel(x.shape[1], x.shape[2], width, d.num_classes, cfg.hidden, seed=seed,
                                   feature_stats=feature_stats(x))
            train_multiview(model, x, d.y_train, connection, cfg.epochs, cfg.batch_size, cfg.lr, seed=seed)
            if connection is not None:
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
        from deft6g.finetune import AirCompConnection, DigitalConnection, evaluate_multiview, side_info_channel_uses, \
            task_importance, training_stats
        cfg, name, scheme, seed = self.cfg, point["task"], point["scheme"], int(point["seed"])
        n, snr = int(point["num_rx_ant"]), float(point["snr_db"])
        d = self.task(name)
        t0 = time.process_time()
        row = dict(point, nmse=0.0, payload_uses=0.0, side_info_uses=0.0)
        if scheme in IDEAL_SCHEMES or scheme.startswith("single-"):
            kind = ("single", int(scheme.split("-")[1])) if scheme.startswith("single-") else \
                {"ideal": "multi", "central": "central"}[scheme]
            model = self.model(name, kind, seed)
            row["accuracy"] = evaluate_multiview(model, self.features(d.x_test, kind), d.y_test)[0]
        else:
            m = d.num_views
            noise_aware = scheme.startswith("noise-aware")
            model = self.model(name, "multi", seed,
                               AirCompConnection(m, n, cfg.width, snr, cfg.method) if noise_aware else None)
            if scheme.startswith("digital-q"):
                conn = DigitalConnection(m, n, cfg.width, snr, num_bits=int(scheme[len("digital-q"):]))
                stats, side_reals = None, 0                                        # headers are in its count
            else:
                importance = task_importance(model, d.x_train, d.y_train) if scheme.endswith("-task") else None
                conn = AirCompConnection(m, n, cfg.width, snr, cfg.method, importance=importance)
                stats, side_reals = training_stats(model, d.x_train), conn.side_info_reals()
            acc, nmse, uses = evaluate_multiview(model, d.x_test, d.y_test, conn, cfg.block, cfg.repeats, stats,
                                                 seed=seed)
            side = side_info_channel_uses(side_reals, m, cfg.side_info_bits) / cfg.deployment_examples
            row.update(accuracy=acc, nmse=nmse, payload_uses=uses, side_info_uses=side)
        row["channel_uses"] = row["payload_uses"] + row["side_info_uses"]
        row["latency_us"] = 1e6 * row["channel_uses"] / cfg.bandwidth_hz
        row["cpu_s"] = round(time.process_time() - t0, 2)                      # training included when done here
        return row


# Points of one (task, seed, num_rx_ant, SNR) go to one worker, in order: the noise-aware model trained at that SNR
# serves both its designs (MSE and task-oriented) and is trained once.
GROUP = ["task", "seed", "num_rx_ant", "snr_db"]


def run_connect(out_dir="results/connect", quick=False, log=print, **parallel):
    """Run (or resume) the study into `out_dir`. Returns (config, rows, CPU seconds of this run: this
    process's, plus on Ray workers the cpu_s of the points run now, the workers' start aside).
    parallel: workers, ray_address, worker_gpus of `deft6g.experiment.run_points` (the features are computed
    and cached on disk here first; every worker loads them from the cache)."""
    cfg = ConnectConfig.quick() if quick else ConnectConfig()
    out = prepare_output(out_dir, "connect", asdict(cfg))
    store = ResultStore(out / "results.csv", FIELDS, KEY)
    t0 = time.process_time()
    task = ConnectTask(cfg, log)
    todo = [p for p in points(cfg) if not store.done(p)]
    for name in dict.fromkeys(p["task"] for p in todo):          # features once, before any worker starts
        task.task(name)
    run_points(points(cfg), task, store, desc="connect", log=log, group=GROUP, **parallel,
               describe=lambda p, r: f"{p['task']} {p['scheme']} N={p['num_rx_ant']} {p['snr_db']} dB seed {p['seed']}: "
                                     f"accuracy {float(r['accuracy']):.3f}")
    rows = store.rows()
    on_workers = parallel.get("workers", 1) != 1 or parallel.get("ray_address")
    now = {tuple(str(p[k]) for k in KEY) for p in todo} if on_workers else set()
    worker_cpu = sum(float(r["cpu_s"]) for r in rows if tuple(r[k] for k in KEY) in now)
    plot(out, cfg, rows)
    return cfg, rows, time.process_time() - t0 + worker_cpu


def _curve(rows, task, scheme, n):
    pts = []
    for s in summarise([r for r in rows if r["task"] == task and r["scheme"] == scheme and int(r["num_rx_ant"]) == n],
                       ["snr_db"], ["accuracy", "channel_uses"]):
        pts.append((float(s["snr_db"]), s["accuracy_mean"], s["accuracy_ci"], s["channel_uses_mean"]))
    return sorted(pts)


def _reference(rows, task, scheme):
    vals = [float(r["accuracy"]) for r in rows if r["task"] == task and r["scheme"] == scheme]
    return mean_ci(vals) if vals else None


def best_single(rows, task):
    """The single view with the highest mean accuracy: (scheme name, mean, ci) or None."""
    singles = sorted({r["scheme"] for r in rows if r["task"] == task and r["scheme"].startswith("single-")})
    refs = [(s, *_reference(rows, task, s)) for s in singles]
    return max(refs, key=lambda r: r[1]) if refs else None


def plot(out, cfg, rows):
    """accuracy_vs_snr_<task>.png (N = cfg.num_rx_ant; the other antenna counts as markers) and
    accuracy_vs_channel_uses_<task>.png (AirComp vs digital per SNR)."""
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
            hl[f"best single view ({single[0]})"] = single[1:]
        curves = {}
        for scheme in AIR_SCHEMES + tuple(f"digital-q{q}" for q in cfg.digital_num_bits):
            pts = _curve(rows, task, scheme, cfg.num_rx_ant)
            if pts:
                curves[f"{scheme} N={cfg.num_rx_ant}"] = [p[:3] for p in pts]
        for n in cfg.num_rx_ant_sweep:
            pts = _curve(rows, task, "noise-aware", n)
            if pts:
                curves[f"noise-aware N={n}"] = [p[:3] for p in pts]
        if curves:
            line_plot(out / f"accuracy_vs_snr_{task}.png", curves, "SNR P/sigma^2 per device [dB]", "test accuracy",
                      f"{task}: over-the-air neural connection", hlines=hl, note=note)
        uses = {}
        for scheme in ("noise-aware",) + tuple(f"digital-q{q}" for q in cfg.digital_num_bits):
            pts = _curve(rows, task, scheme, cfg.num_rx_ant)
            if pts:
                uses[f"{scheme} N={cfg.num_rx_ant}"] = [(p[3], p[1], p[2], f"{p[0]:g} dB") for p in pts]
        if uses:
            line_plot(out / f"accuracy_vs_channel_uses_{task}.png", uses, "channel uses per example (side info incl.)",
                      "test accuracy", f"{task}: accuracy vs uplink cost", logx=True, marker_only=True, hlines=hl,
                      note=note)


def _paired(rows, task, a, b, n, snr):
    """Paired (a - b) accuracy over seeds at (n, snr); b may be an ideal scheme (num_rx_ant 0)."""
    def by_seed(scheme):
        sel = [r for r in rows if r["task"] == task and r["scheme"] == scheme]
        if scheme not in IDEAL_SCHEMES and not scheme.startswith("single-"):
            sel = [r for r in sel if int(r["num_rx_ant"]) == n and float(r["snr_db"]) == snr]
        return {r["seed"]: float(r["accuracy"]) for r in sel}
    x, y = by_seed(a), by_seed(b)
    seeds = sorted(set(x) & set(y))
    return paired_ci([x[s] for s in seeds], [y[s] for s in seeds]) if seeds else None


def equal_accuracy_saving(rows, cfg, task, snr):
    """Digital's channel uses at the accuracy of noise-aware AirComp (N = cfg.num_rx_ant) over AirComp's:
    the cheapest digital quantiser whose mean accuracy is at least AirComp's minus 1 point (docs/design.md §8:
    within 1 point is equal). Returns (bits, ratio mean, ratio ci) or None when no digital setting gets there."""
    def sel(scheme):
        return {r["seed"]: r for r in rows if r["task"] == task and r["scheme"] == scheme
                and int(r["num_rx_ant"]) == cfg.num_rx_ant and float(r["snr_db"]) == snr}
    air = sel("noise-aware")
    if not air:
        return None
    target = np.mean([float(r["accuracy"]) for r in air.values()]) - 0.01
    options = []
    for q in cfg.digital_num_bits:
        dig = sel(f"digital-q{q}")
        seeds = sorted(set(dig) & set(air))
        if seeds and np.mean([float(dig[s]["accuracy"]) for s in seeds]) >= target:
            ratios = [float(dig[s]["channel_uses"]) / float(air[s]["channel_uses"]) for s in seeds]
            options.append((np.mean([float(dig[s]["channel_uses"]) for s in seeds]), q, *mean_ci(ratios)))
    return min(options)[1:] if options else None


def summary(cfg, rows, cpu_s=None):
    """Tables per task (accuracy mean +- 95% CI per scheme and SNR at N = cfg.num_rx_ant) and the headline
    comparisons, paired per seed."""
    fmt = lambda m, c: f"{m:.3f}±{c:.3f}" if np.isfinite(c) else f"{m:.3f}"         # noqa: E731
    points_pm = lambda d: f"{100 * d[0]:+.1f}" + (f"±{100 * d[1]:.1f}" if np.isfinite(d[1]) else "")  # noqa: E731
    lines = []
    for task in [task_name(t) for t in cfg.tasks]:
        trows = [r for r in rows if r["task"] == task]
        if not trows:
            continue
        lines.append(f"\n{task}: accuracy (mean ± 95% CI over seeds), N = {cfg.num_rx_ant}, D = {cfg.width}, "
                     f"design {cfg.method}")
        refs = [f"{s} {fmt(*_reference(rows, task, s))}" for s in IDEAL_SCHEMES if _reference(rows, task, s)]
        single = best_single(rows, task)
        if single:
            refs.append(f"best single view ({single[0]}) {fmt(*single[1:])}")
        lines.append("  no channel: " + "; ".join(refs))
        schemes = list(AIR_SCHEMES) + [f"digital-q{q}" for q in cfg.digital_num_bits]
        lines.append(f"  {'SNR dB':>7}" + "".join(f"{s:>18}" for s in schemes))
        for snr in cfg.snr_db:
            cells = []
            for s in schemes:
                pts = [p for p in _curve(rows, task, s, cfg.num_rx_ant) if p[0] == snr]
                cells.append(f"{fmt(pts[0][1], pts[0][2]):>18}" if pts else f"{'-':>18}")
            lines.append(f"  {snr:>7g}" + "".join(cells))
        uses = {s: np.mean([float(r["channel_uses"]) for r in trows if r["scheme"] == s
                            and int(r["num_rx_ant"]) == cfg.num_rx_ant]) for s in schemes
                if any(r["scheme"] == s for r in trows)}
        lines.append("  channel uses per example (mean over SNRs, side info incl.): "
                     + ", ".join(f"{s} {u:.2f}" for s, u in uses.items()))
        for n in cfg.num_rx_ant_sweep:
            cells = [f"{p[0]:g} dB {fmt(p[1], p[2])}" for p in _curve(rows, task, "noise-aware", n)]
            if cells:
                lines.append(f"  noise-aware N={n}: " + "; ".join(cells))
        lines.append("  paired differences (accuracy points, mean ± 95% CI):")
        for snr in cfg.snr_db:
            parts = []
            for label, a, b in (("noise-aware - ideal", "noise-aware", "ideal"),
                                ("noise-aware - naive", "noise-aware", "naive"),
                                ("task - MSE design (noise-aware)", "noise-aware-task", "noise-aware"),
                                ("task - MSE design (naive)", "naive-task", "naive")):
                d = _paired(rows, task, a, b, cfg.num_rx_ant, snr)
                if d:
                    parts.append(f"{label} {points_pm(d)}")
            sav = equal_accuracy_saving(rows, cfg, task, snr)
            parts.append(f"digital/AirComp uses at equal accuracy: q={sav[0]} {fmt(*sav[1:])}x" if sav
                         else "digital does not reach AirComp's accuracy")
            lines.append(f"    {snr:>5g} dB: " + "; ".join(parts))
        if single:
            d = _paired(rows, task, "ideal", single[0], 0, float("inf"))
            lines.append(f"  multi-view (ideal sum) - best single view: {points_pm(d)} points")
    if cfg.model == "random-bert":
        lines.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    if cpu_s is not None:
        lines.append(f"CPU time of this run: {cpu_s:.0f} s")
    return "\n".join(lines)
