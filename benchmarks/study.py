"""`deft6g study`: accuracy vs SNR and latency of federated DEFT with ideal, MIMO AirComp and digital
aggregation, bounded by a centralised run of the same PEFT on the union of the devices' data.

One point is (scheme, snr_db, num_rx_ant, lora_aggregation, seed); every finished point is appended to
results.csv at once (its per-round log to rounds.csv) and a re-run skips finished points; summary.csv holds
the mean and 95% confidence interval over seeds per (scheme, snr_db, num_rx_ant, lora_aggregation).
"""

import json
import math
import time
from dataclasses import replace

import numpy as np

from deft6g.experiment import (ResultStore, line_plot, log_mean_ci, mean_ci, paired_ci, prepare_output, run_points,
                               summarise, write_table)

from .study_config import ConfigError, StudyConfig, load_config, validate

POINT_KEY = ["scheme", "snr_db", "num_rx_ant", "lora_aggregation", "seed"]
RESULT_FIELDS = POINT_KEY + ["accuracy", "emulator_accuracy", "channel_uses", "latency_s", "agg_mse", "lora_bias",
                             "bits_up", "bits_down", "rounds", "samples_seen", "train_s", "link_s", "eval_s", "wall_s"]
ROUND_FIELDS = POINT_KEY + ["round", "loss", "agg_mse", "lora_bias", "channel_uses", "devices", "accuracy"]
SUMMARY_BY = ["scheme", "snr_db", "num_rx_ant", "lora_aggregation"]
REFERENCES = ("centralised", "ideal")            # no channel: snr inf, num_rx_ant 0


def study_points(cfg):
    """Every point as a dict of POINT_KEY, seeds outermost (so each finished seed is a complete replicate)."""
    pts = []
    for seed in cfg.seeds:
        for agg in cfg.federated.lora_aggregation:
            for scheme in cfg.schemes:
                snrs = cfg.digital.snr_db if scheme == "digital" and cfg.digital.snr_db else cfg.channel.snr_db
                grid = ([(math.inf, 0)] if scheme in REFERENCES else
                        [(float(s), n) for n in cfg.channel.num_rx_ant for s in snrs])
                pts += [dict(zip(POINT_KEY, (scheme, snr, n, agg, seed))) for snr, n in grid]
    return pts


def _peft_config(cfg):
    from deft6g.finetune import AdapterConfig, BitFitConfig, LoraConfig, PromptTuningConfig
    p = cfg.peft
    if p.method == "lora":
        return LoraConfig(r=p.size, lora_alpha=p.lora_alpha, target_modules=list(p.target_modules),
                          layers_to_transform=list(p.blocks))
    if p.method == "adapter":
        return AdapterConfig(width=p.size, layers_to_transform=list(p.blocks))
    if p.method == "prompt":
        return PromptTuningConfig(num_virtual_tokens=p.size, tokens_pattern={b: p.size for b in p.blocks},
                                  layers_to_transform=list(p.blocks))
    return BitFitConfig(layers_to_transform=list(p.blocks))


def _split_arrays(x, idx):
    return x[0][idx], x[1][idx]


class _Setup:
    """Everything the points share: data, models, the cached activations (computed once, on disk)."""

    def __init__(self, cfg, log):
        from deft6g.finetune import LoraLayer, projection_kernel
        from deft6g.finetune import (build_emulator, cached_arrays, emulator_blocks, emulator_config,
                                     get_peft_model, load_dataset, load_study_model, tokenize, train_test_split)
        from deft6g.finetune.data import content_digest
        from deft6g.finetune.fomo import model_key

        self.cfg, f = cfg, cfg.federated
        data = load_dataset(cfg.data.dataset)
        train, test = train_test_split(len(data), 0.2, seed=0)
        pick = np.random.default_rng(0)
        train = pick.permutation(train)[:cfg.data.train_examples or None]
        test = pick.permutation(test)[:cfg.data.test_examples or None]
        self.y_train, self.y_test = data.y[train], data.y[test]
        model, tok = load_study_model(cfg.model.name)
        tokens = tokenize(tok, data.x, cfg.model.max_length)
        x_train = {k: v[train] for k, v in tokens.items()}
        x_test = {k: v[test] for k, v in tokens.items()}
        peft_cfg = _peft_config(cfg)
        n_blocks = model.config.num_hidden_layers
        self.kept = (emulator_blocks(n_blocks, f.emulator_bottom, f.emulator_top, f.emulator_drop)
                     if f.mode == "emulator" else list(range(n_blocks)))
        num_labels = len(data.class_names)
        self.emulator_params = self.full_params = model.count_params()
        if f.mode == "emulator":
            emu = build_emulator(model, self.kept)
            self.emulator_params = emu.count_params()
            self.device = get_peft_model(emu, emulator_config(peft_cfg, self.kept, n_blocks), num_labels=num_labels)
        self.full = get_peft_model(model, peft_cfg, num_labels=num_labels)
        if f.mode != "emulator":
            self.device = self.full
        self.start, self.full_start = self.device.lowest_tuned_block(), self.full.lowest_tuned_block()
        key = [model_key(cfg.model.name), cfg.model.max_length, content_digest(data), self.kept]  # by content

        def acts(model_, x, block, part):
            ids = train if part == "device-train" else test
            z = cached_arrays(key + [part, block, ids.tolist()], lambda: dict(zip("hm", model_.activations(x, block))))
            return z["h"], z["m"]

        t0 = time.time()
        self.train_acts = acts(self.device, x_train, self.start, "device-train")
        self.test_acts = acts(self.device, x_test, self.start, "device-test")
        self.full_test_acts = (self.test_acts if self.device is self.full
                               else acts(self.full, x_test, self.full_start, "full-test"))
        self.whole_test = self._by_length(self.test_acts, self.full_test_acts, self.y_test)
        n = f.round_eval_examples or None
        self.round_test = self._by_length(tuple(a[:n] for a in self.test_acts),
                                          tuple(a[:n] for a in self.full_test_acts), self.y_test[:n])
        log(f"activations ready in {time.time() - t0:.1f} s ({len(train)} train / {len(test)} test texts, "
            f"input of block {self.start}; device model blocks {self.kept})")
        self._kernels = [(v, v.numpy()) for w in self.full.wrappers + self.device.wrappers
                         if isinstance(w.layer, LoraLayer) for v in [projection_kernel(w.layer.base)]]

    def reset(self, seed):
        """Fresh PEFT weights and head for `seed`; base kernels back to pretrained (delta_w merges into them)."""
        self.device.reset_parameters(seed)
        for v, w in self._kernels:
            v.assign(w)

    @staticmethod
    def _by_length(device_acts, full_acts, y):
        """(device activations, full-model activations, labels) of one test set, ordered by text length
        once, so that every evaluation batches by length without copying (accuracy is order-free)."""
        order = np.argsort(device_acts[1].sum(1), kind="stable")
        take = lambda acts: tuple(a[order] for a in acts)                    # noqa: E731
        return take(device_acts), (take(full_acts) if full_acts is not device_acts else None), y[order]

    def evaluate(self, subset=False):
        """Test accuracy of the full model (the emulator's weights plugged in): on the whole test split, or
        with `subset` on its first `federated.round_eval_examples` texts (a fixed random subset: the split
        is shuffled with seed 0)."""
        from deft6g.finetune import evaluate, plug_in
        device_acts, full_acts, y = self.round_test if subset else self.whole_test
        if self.device is self.full:
            return evaluate(self.full, device_acts, y, start_block=self.start)
        plug_in(self.full, self.device, self.kept)
        return evaluate(self.full, full_acts, y, start_block=self.full_start)


def _aggregator(cfg, point):
    from deft6g.finetune import make_aggregator
    c, g, k = cfg.channel, cfg.digital, cfg.federated.devices
    scheme = "ideal" if point["scheme"] == "centralised" else point["scheme"]
    return make_aggregator(
        scheme, k, int(point["num_rx_ant"]), float(point["snr_db"]), seed=int(point["seed"]),
        channel={"model": c.model, "num_subcarriers": c.num_subcarriers},
        aircomp={"method": c.method, "csi_error": c.csi_error, "select": c.select_devices, "mse_target": c.mse_target},
        digital={"num_bits": g.num_bits, "num_bits_per_symbol": g.num_bits_per_symbol, "code_rate": g.code_rate,
                 "num_iter": g.num_iter, "mcs": g.mcs, "detector": g.detector})


class _TimedAggregator:
    """Wraps an aggregator to add up the time spent in the link simulation (design, channel, decoding)."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, *args):
        t0 = time.time()
        out = self.inner(*args)
        self.seconds += time.time() - t0
        return out


class StudyTask:
    """What one study point runs, picklable for Ray workers: holds the configuration; the heavy `_Setup`
    (data, models, cached activations) is built on first use, once per process, and never pickled.
    task(point) -> {"row": the results.csv row, "rounds": the rounds.csv rows}."""

    def __init__(self, cfg, log=print):
        self.cfg, self.log, self._setup = cfg, log, None

    def setup(self):
        if self._setup is None:
            self._setup = _Setup(self.cfg, self.log)
        return self._setup

    def __getstate__(self):
        return {"cfg": self.cfg, "log": print, "_setup": None}

    def __call__(self, point):
        return _run_point(self.setup(), point)


def _run_point(setup, point):
    from deft6g.finetune import FederatedDEFT, evaluate, partition

    cfg, f = setup.cfg, setup.cfg.federated
    seed = int(point["seed"])
    t0 = time.time()
    setup.reset(seed)
    lr = f.lr
    if point["scheme"] == "centralised":        # one "device" holding the union, K times the local steps
        devices, steps, lr = [(setup.train_acts, setup.y_train)], f.local_steps * f.devices, f.centralised_lr
    else:
        parts = partition(setup.y_train, f.devices, cfg.data.partition, cfg.data.alpha, seed=seed)
        devices, steps = [(_split_arrays(setup.train_acts, i), setup.y_train[i]) for i in parts], f.local_steps
    link = _TimedAggregator(_aggregator(cfg, point))
    fed = FederatedDEFT(setup.device, devices, link, setup.start, steps, f.batch_size, lr, f.local_optimizer,
                        f.server_optimizer, f.server_lr, point["lora_aggregation"],
                        cut_block=f.cut_block if f.mode == "gradient" else None, seed=seed)
    eval_s = [0.0]

    def timed(fn, *args, **kwargs):
        t = time.time()
        out = fn(*args, **kwargs)
        eval_s[0] += time.time() - t
        return out

    logs = fed.run(f.rounds, evaluate=lambda: timed(setup.evaluate, subset=True), eval_every=f.eval_every)
    accuracy = timed(setup.evaluate)
    emu_acc = (accuracy if setup.device is setup.full else
               timed(evaluate, setup.device, setup.whole_test[0], setup.whole_test[2], start_block=setup.start))
    rounds = [{**point, "round": log.round, "loss": log.loss, "agg_mse": log.agg_mse, "lora_bias": log.lora_bias,
               "channel_uses": log.channel_uses, "devices": log.devices, "accuracy": log.accuracy} for log in logs]
    uses = sum(log.channel_uses for log in logs)
    wall = time.time() - t0
    return {"rounds": rounds, "row": {**point, "accuracy": accuracy, "emulator_accuracy": emu_acc, "channel_uses": uses,
            "latency_s": uses / cfg.channel.bandwidth_hz, "agg_mse": float(np.mean([g.agg_mse for g in logs])),
            "lora_bias": float(np.mean([g.lora_bias for g in logs])),
            "bits_up": sum(g.bits_up for g in logs), "bits_down": sum(g.bits_down for g in logs),
            "rounds": f.rounds, "samples_seen": f.rounds * f.devices * f.local_steps * f.batch_size,
            "train_s": round(wall - link.seconds - eval_s[0], 2), "link_s": round(link.seconds, 2),
            "eval_s": round(eval_s[0], 2), "wall_s": round(wall, 2)}}


def check_study(cfg):
    """`validate(cfg)` and the checks that need the library, all before any output is written: the seeded
    split holds `data.train_examples` / `data.test_examples` texts, and the PEFT configuration and the
    aggregator of every radio scheme and N build. Raises ConfigError naming the key or section; returns `cfg`."""
    from deft6g.finetune import load_dataset, train_test_split
    validate(cfg)
    d = cfg.data
    if d.train_examples or d.test_examples:
        train, test = train_test_split(len(load_dataset(d.dataset)), 0.2, seed=0)
        for name, n, have in (("train_examples", d.train_examples, len(train)),
                              ("test_examples", d.test_examples, len(test))):
            if n > have:
                raise ConfigError(f"configuration key 'data.{name}': the split has {have} examples, asked for {n}")
    links = {(p["scheme"], p["num_rx_ant"]): p for p in study_points(replace(cfg, seeds=cfg.seeds[:1]))
             if p["scheme"] not in REFERENCES}                                  # one per scheme and N
    builds = [("peft", "", lambda: _peft_config(cfg))]
    builds += [("digital" if s == "digital" else "channel", f"{s} N={n}: ", lambda p=p: _aggregator(cfg, p))
               for (s, n), p in links.items()]
    for section, what, build in builds:
        try:
            build()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"configuration key {section!r}: {what}{err}") from err
    return cfg


def run_study(out_dir, config=None, quick=False, log=print, **parallel):
    """Run (or resume) the study into `out_dir`; `config`: a TOML path, None (the default) or a StudyConfig
    (`quick` applies to paths and None). Returns (cfg, rows). Every check of `check_study` runs before the
    folder is touched. parallel: workers, ray_address, worker_gpus of `deft6g.experiment.run_points` (the
    activations are cached on disk here first, every worker loads them from the cache)."""
    cfg = check_study(config if isinstance(config, StudyConfig) else load_config(config, quick))
    out = prepare_output(out_dir, "study", cfg.to_dict())
    store = ResultStore(out / "results.csv", RESULT_FIELDS, POINT_KEY)
    rounds_store = ResultStore(out / "rounds.csv", ROUND_FIELDS, POINT_KEY + ["round"])
    points = study_points(cfg)
    if any(not store.done(p) for p in points):
        task = StudyTask(cfg, log)
        _write_model_info(out, cfg, task.setup())

        def write(point, result):               # rounds first: a point in results.csv has its rounds
            for r in result["rounds"]:
                if not rounds_store.done(r):
                    rounds_store.add(r)
            return result["row"]

        run_points(points, task, store, desc="study", log=log, write=write, **parallel,
                   describe=lambda p, r: f"{_label(p)}: accuracy {float(r['accuracy']):.3f}")
    rows = store.rows()
    summary_rows = write_summary(out, rows)
    plot_study(out, cfg, summary_rows, rows, rounds_store.rows())
    return cfg, rows


def _label(p):
    name = p["scheme"] if p["scheme"] in REFERENCES else f"{p['scheme']} N={p['num_rx_ant']} {float(p['snr_db']):g} dB"
    return f"{name} [{p['lora_aggregation']}] seed {p['seed']}"


def _write_model_info(out, cfg, setup):
    info = {"model": cfg.model.name, "pretrained": cfg.model.name != "random-bert", "mode": cfg.federated.mode,
            "kept_blocks": setup.kept, "emulator_params": setup.emulator_params, "full_params": setup.full_params,
            "download_bits_emulator": 32 * setup.emulator_params, "download_bits_full": 32 * setup.full_params,
            "train_examples": int(len(setup.y_train)), "test_examples": int(len(setup.y_test)),
            "payload_reals_per_device": int(sum(np.prod(v.shape) for v in setup.device.trainable_variables))}
    (out / "model.json").write_text(json.dumps(info, indent=2))


SUMMARY_VALUES = ["accuracy", "channel_uses", "latency_s", "agg_mse"]


def write_summary(out, rows):
    """summary.csv from `summary_rows(rows)`, written atomically; returns the summary rows."""
    summary = summary_rows(rows)
    fields = SUMMARY_BY + ["n"] + [f"{v}_{s}" for v in SUMMARY_VALUES for s in ("mean", "ci")] + \
        ["vs_ideal_mean", "vs_ideal_ci"]
    write_table(out / "summary.csv", fields, summary)
    return summary


def plot_study(out, cfg, summary, rows, round_rows):
    """accuracy_vs_snr.png (mean and 95% CI over seeds, references as bands), accuracy_vs_latency.png,
    accuracy_per_round.png, agg_mse_per_round.png."""
    if not summary:
        return
    seeds = max(s["n"] for s in summary)
    note = f"mean and 95% CI over {seeds} seed(s); {cfg.model.name}, {cfg.peft.method} blocks {cfg.peft.blocks}, " \
           f"K={cfg.federated.devices}, {cfg.federated.rounds} rounds"
    multi = len(cfg.federated.lora_aggregation) > 1
    tag = (lambda s: f" [{s['lora_aggregation']}]") if multi else (lambda s: "")
    refs = {f"{s['scheme']}{tag(s)} (no channel)": (s["accuracy_mean"], s["accuracy_ci"])
            for s in summary if s["scheme"] in REFERENCES}
    by_snr, by_latency = {}, {}
    for s in summary:
        if s["scheme"] in REFERENCES:
            continue
        name = f"{s['scheme']} N={s['num_rx_ant']}{tag(s)}"
        snr = float(s["snr_db"])
        by_snr.setdefault(name, []).append((snr, s["accuracy_mean"], s["accuracy_ci"]))
        by_latency.setdefault(name, []).append((s["latency_s_mean"], s["accuracy_mean"], s["accuracy_ci"], f"{snr:g} dB"))
    if by_snr:
        line_plot(out / "accuracy_vs_snr.png", by_snr, "SNR P/sigma^2 per device [dB]", "test accuracy",
                  "Federated DEFT: accuracy vs SNR", hlines=refs, note=note)
        line_plot(out / "accuracy_vs_latency.png", by_latency,
                  f"uplink latency over all rounds [s] at {cfg.channel.bandwidth_hz / 1e6:g} MHz", "test accuracy",
                  "Accuracy vs uplink latency (points labelled by SNR)", logx=True, marker_only=True, hlines=refs,
                  note=note)
    per_round, mse_round = {}, {}
    for r in round_rows:
        snr = float(r["snr_db"])
        name = r["scheme"] if r["scheme"] in REFERENCES else f"{r['scheme']} N={r['num_rx_ant']} {snr:g} dB"
        name += f" [{r['lora_aggregation']}]" if multi else ""
        if r["accuracy"] not in ("", "nan"):
            per_round.setdefault(name, {}).setdefault(int(r["round"]) + 1, []).append(float(r["accuracy"]))
        if r["scheme"] not in REFERENCES:
            mse_round.setdefault(name, {}).setdefault(int(r["round"]) + 1, []).append(max(float(r["agg_mse"]), 1e-20))
    n_eval = cfg.federated.round_eval_examples
    _plot_rounds(out / "accuracy_per_round.png", per_round,
                 f"test accuracy ({f'a fixed {n_eval} texts' if n_eval else 'whole split'})", "Accuracy per round",
                 False, note)
    _plot_rounds(out / "agg_mse_per_round.png", mse_round, "aggregation MSE per entry", "Aggregation error per round",
                 True, note)


def _plot_rounds(path, curves, ylabel, title, logy, note):
    """Mean and 95% CI per round; on a log axis the geometric mean with the interval computed in log space."""
    if not curves:
        return
    if logy:
        pts = {name: [(r, gm, (lo, hi)) for r, v in rounds.items() for gm, lo, hi in [log_mean_ci(v)]]
               for name, rounds in curves.items()}
        note = note.replace("mean and 95% CI", "geometric mean and 95% CI (log space)")
    else:
        pts = {name: [(r, *mean_ci(v)) for r, v in rounds.items()] for name, rounds in curves.items()}
    line_plot(path, pts, "round", ylabel, title, logy=logy, note=note)


def summary(cfg, rows):
    """The printed table: mean +- 95% CI per scheme, SNR and N, and AirComp/digital minus ideal, paired."""
    s_rows = summary_rows(rows)
    n_seeds = max((s["n"] for s in s_rows), default=0)
    lines = [f"Federated DEFT on {cfg.data.dataset} with {cfg.model.name} + {cfg.peft.method} (blocks {cfg.peft.blocks}),"
             f" K={cfg.federated.devices}, {cfg.federated.rounds} rounds x {cfg.federated.local_steps} local steps,"
             f" mode {cfg.federated.mode}, channel {cfg.channel.model}; mean +- 95% CI over {n_seeds} seed(s)",
             f"{'scheme':<12}{'LoRA agg':<10}{'N':>3}{'SNR dB':>8}{'accuracy':>17}{'minus ideal (paired)':>23}"
             f"{'channel uses':>14}{'latency s':>11}"]
    order = {"centralised": 0, "ideal": 1, "aircomp": 2, "digital": 3}
    for s in sorted(s_rows, key=lambda s: (s["lora_aggregation"], order[s["scheme"]], int(s["num_rx_ant"]),
                                           float(s["snr_db"]))):
        diff = "" if math.isnan(s["vs_ideal_mean"]) else f"{s['vs_ideal_mean']:+.3f} +- {_ci(s['vs_ideal_ci'])}"
        snr = "-" if s["scheme"] in REFERENCES else f"{float(s['snr_db']):.0f}"
        lines.append(f"{s['scheme']:<12}{s['lora_aggregation']:<10}{int(s['num_rx_ant']) or '-':>3}{snr:>8}"
                     f"{s['accuracy_mean']:>10.3f} +- {_ci(s['accuracy_ci'])}{diff:>23}"
                     f"{s['channel_uses_mean']:>14,.0f}{s['latency_s_mean']:>11.3f}")
    if cfg.model.name == "random-bert":
        lines.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    return "\n".join(lines)


def _ci(x):
    return "  nan" if math.isnan(x) else f"{x:.3f}"


def summary_rows(rows):
    """Per (scheme, snr_db, num_rx_ant, lora_aggregation): the seed count n, mean and 95% CI half-width of
    accuracy, channel uses, latency and aggregation MSE, and for every scheme but ideal the paired (same
    seed) accuracy difference to ideal aggregation (vs_ideal_mean, vs_ideal_ci)."""
    out = summarise(rows, SUMMARY_BY, SUMMARY_VALUES)
    ideal = {(r["lora_aggregation"], r["seed"]): float(r["accuracy"]) for r in rows if r["scheme"] == "ideal"}
    for s in out:
        pairs = [(float(r["accuracy"]), ideal[(r["lora_aggregation"], r["seed"])]) for r in rows
                 if all(r[k] == s[k] for k in SUMMARY_BY) and (r["lora_aggregation"], r["seed"]) in ideal]
        s["vs_ideal_mean"], s["vs_ideal_ci"] = (paired_ci(*zip(*pairs)) if pairs and s["scheme"] != "ideal"
                                                else (float("nan"), float("nan")))
    return out
