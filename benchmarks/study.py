"""`deft6g study`: accuracy vs SNR of federated DEFT with ideal, MIMO AirComp and digital aggregation.

Every finished (scheme, SNR, antennas, seed) point is appended to results.csv at once (its per-round log
to rounds.csv); a re-run of the same command skips finished points. Frozen activations are cached on disk.
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deft6g.experiment import ResultStore, line_plot, prepare_output
from .study_config import StudyConfig, load_config

RESULT_FIELDS = ["scheme", "snr_db", "antennas", "seed", "accuracy", "emulator_accuracy", "channel_uses",
                 "latency_s", "agg_mse", "bits_up", "bits_down", "rounds", "wall_s"]
ROUND_FIELDS = ["scheme", "snr_db", "antennas", "seed", "round", "loss", "agg_mse", "channel_uses", "devices"]
POINT_KEY = ["scheme", "snr_db", "antennas", "seed"]


def study_points(cfg):
    """(scheme, snr_db, antennas, seed) of every point; ideal aggregation has no channel (snr inf, N 0)."""
    pts = []
    for seed in cfg.seeds:
        for scheme in cfg.schemes:
            if scheme == "ideal":
                pts.append((scheme, float("inf"), 0, seed))
            else:
                pts += [(scheme, float(s), n, seed) for n in cfg.channel.antennas for s in cfg.channel.snr_db]
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


class _Setup:
    """Everything the points share: data, tokens, models, the cached activations, the initial weights."""

    def __init__(self, cfg, log):
        from deft6g.finetune import get_peft_model, load_dataset, load_study_model, tokenize, train_test_split
        from deft6g.finetune.emulator import build_emulator, emulator_blocks, emulator_config

        self.cfg = cfg
        f = cfg.federated
        data = load_dataset(cfg.data.dataset)
        train, test = train_test_split(len(data), 0.2, seed=0)
        if cfg.data.train_examples > len(train) or cfg.data.test_examples > len(test):
            raise ValueError(f"configuration key 'data.train_examples'/'data.test_examples': the split has "
                             f"{len(train)} / {len(test)} examples")
        perm = np.random.default_rng(0)
        train = perm.permutation(train)[:cfg.data.train_examples]
        test = perm.permutation(test)[:cfg.data.test_examples]
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
        self.start = self.device.lowest_tuned_block()
        self.full_start = self.full.lowest_tuned_block()
        key = [cfg.model.name, cfg.model.max_length, cfg.data.dataset, self.kept, peft_cfg.to_dict(),
               hashlib.sha256(train.tobytes() + test.tobytes()).hexdigest()]
        t0 = time.time()
        self.train_acts = _cached(key + ["device-train", self.start], lambda: self.device.activations(x_train, self.start))
        self.test_acts = _cached(key + ["device-test", self.start], lambda: self.device.activations(x_test, self.start))
        self.full_test_acts = (self.test_acts if self.device is self.full else
                               _cached(key + ["full-test", self.full_start],
                                       lambda: self.full.activations(x_test, self.full_start)))
        log(f"activations cached in {time.time() - t0:.1f} s (block {self.start}; device model blocks {self.kept})")
        self.init = [v.numpy() for v in self.device.trainable_variables]

    def reset(self):
        for v, w in zip(self.device.trainable_variables, self.init):
            v.assign(w)


def _cached(key, compute):
    from deft6g.finetune import cached_arrays
    z = cached_arrays(key, lambda: dict(zip("hm", compute())))
    return z["h"], z["m"]


def _aggregator(cfg, scheme, snr_db, antennas, seed):
    from deft6g.finetune.aggregation import AirCompAggregator, DigitalAggregator, IdealAggregator
    c, k = cfg.channel, cfg.federated.devices
    ofdm = {"num_subcarriers": c.num_subcarriers} if c.model.startswith(("tdl", "cdl")) else {}
    if scheme == "ideal":
        return IdealAggregator()
    if scheme == "aircomp":
        return AirCompAggregator(k, antennas, snr_db, c.model, c.method, c.csi_error, c.select_devices,
                                 c.mse_target, seed=seed, **ofdm)
    g = cfg.digital
    return DigitalAggregator(k, antennas, snr_db, c.model, g.num_bits, g.bits_per_symbol, g.code_rate,
                             g.ldpc_iterations, seed=seed, **ofdm)


def _run_point(setup, point, rounds_store):
    from deft6g.finetune import evaluate, partition
    from deft6g.finetune.emulator import plug_in_state
    from deft6g.finetune.federated import FederatedDEFT
    from deft6g.finetune.training import take

    cfg, f = setup.cfg, setup.cfg.federated
    scheme, snr_db, antennas, seed = point
    t0 = time.time()
    setup.reset()
    parts = partition(setup.y_train, f.devices, cfg.data.partition, cfg.data.alpha, seed=seed)
    devices = [(take(setup.train_acts, idx), setup.y_train[idx]) for idx in parts]
    fed = FederatedDEFT(setup.device, devices, _aggregator(cfg, scheme, snr_db, antennas, seed), setup.start,
                        f.local_steps, f.batch_size, f.lr, cut_block=f.cut_block if f.mode == "gradient" else None,
                        seed=seed)
    logs = fed.run(f.rounds)
    emu_acc = evaluate(setup.device, setup.test_acts, setup.y_test, start_block=setup.start)
    if setup.device is not setup.full:
        setup.full.load_peft_state(plug_in_state(setup.device.peft_state(), setup.kept))
        setup.full.load_head_state(setup.device.head_state())
        acc = evaluate(setup.full, setup.full_test_acts, setup.y_test, start_block=setup.full_start)
    else:
        acc = emu_acc
    base = dict(zip(POINT_KEY, point))
    for log in logs:
        row = {**base, "round": log.round, "loss": log.loss, "agg_mse": log.agg_mse,
               "channel_uses": log.channel_uses, "devices": log.devices}
        if not rounds_store.done(row):
            rounds_store.add(row)
    uses = sum(log.channel_uses for log in logs)
    return {**base, "accuracy": acc, "emulator_accuracy": emu_acc, "channel_uses": uses,
            "latency_s": uses / cfg.channel.bandwidth_hz, "agg_mse": float(np.mean([log.agg_mse for log in logs])),
            "bits_up": sum(log.bits_up for log in logs), "bits_down": sum(log.bits_down for log in logs),
            "rounds": f.rounds, "wall_s": round(time.time() - t0, 2)}


def run_study(out_dir, config=None, quick=False, log=print):
    """Run (or resume) the study into `out_dir`; `config`: a TOML path or a StudyConfig. Returns the rows."""
    cfg = config if isinstance(config, StudyConfig) else load_config(config, quick)
    out = prepare_output(out_dir, "study", cfg.to_dict())
    store = ResultStore(out / "results.csv", RESULT_FIELDS, POINT_KEY)
    rounds_store = ResultStore(out / "rounds.csv", ROUND_FIELDS, POINT_KEY + ["round"])
    points = study_points(cfg)
    todo = [p for p in points if not store.done(dict(zip(POINT_KEY, p)))]
    if len(todo) < len(points):
        log(f"resuming: {len(points) - len(todo)} finished points skipped")
    if todo:
        setup = _Setup(cfg, log)
        _write_model_info(out, cfg, setup)
        for point in tqdm(todo, desc="study points", unit="pt", disable=None):
            store.add(_run_point(setup, point, rounds_store))
    rows = store.rows()
    plot_study(out, rows, ResultStore(out / "rounds.csv", ROUND_FIELDS, POINT_KEY + ["round"]).rows())
    return cfg, rows


def _write_model_info(out, cfg, setup):
    info = {"model": cfg.model.name, "pretrained": cfg.model.name != "random-bert", "mode": cfg.federated.mode,
            "kept_blocks": setup.kept, "emulator_params": setup.emulator_params, "full_params": setup.full_params,
            "download_bits_emulator": 32 * setup.emulator_params, "download_bits_full": 32 * setup.full_params,
            "payload_reals_per_device": int(sum(np.prod(v.shape) for v in setup.device.trainable_variables))}
    (out / "model.json").write_text(json.dumps(info, indent=2))


def plot_study(out, rows, round_rows):
    """accuracy_vs_snr.png, accuracy_vs_channel_uses.png (each point annotated with its SNR),
    agg_mse_per_round.png; ideal aggregation is a dashed line."""
    if not rows:
        return
    ideal_rows = [r for r in rows if r["scheme"] == "ideal"]
    ideal = {"ideal (no channel)" + (f" seed {r['seed']}" if len(ideal_rows) > 1 else ""): float(r["accuracy"])
             for r in ideal_rows}
    by_snr, by_uses = {}, {}
    for r in rows:
        if r["scheme"] == "ideal":
            continue
        name = f"{r['scheme']} N={r['antennas']}" + (f" seed {r['seed']}" if len(ideal) > 1 else "")
        snr, acc = float(r["snr_db"]), float(r["accuracy"])
        by_snr.setdefault(name, []).append((snr, acc))
        by_uses.setdefault(name, []).append((int(r["channel_uses"]), acc, f"{snr:g} dB"))
    if by_snr:
        line_plot(out / "accuracy_vs_snr.png", by_snr, "SNR P/sigma^2 per device [dB]", "test accuracy",
                  "Federated DEFT: accuracy vs SNR", hlines=ideal)
        line_plot(out / "accuracy_vs_channel_uses.png", by_uses, "uplink channel uses over all rounds",
                  "test accuracy", "Accuracy vs uplink cost", logx=True, marker_only=True, hlines=ideal)
    per_round = {}
    for r in round_rows:
        if r["scheme"] == "ideal":
            continue
        name = f"{r['scheme']} N={r['antennas']} {float(r['snr_db']):g} dB"
        per_round.setdefault(name, []).append((int(r["round"]), max(float(r["agg_mse"]), 1e-20)))
    if per_round:
        line_plot(out / "agg_mse_per_round.png", per_round, "round", "aggregation MSE per entry",
                  "Aggregation error per round", logy=True)


def summary(cfg, rows):
    """A short table: accuracy and channel uses per scheme and SNR."""
    lines = [f"Federated DEFT on {cfg.data.dataset} with {cfg.model.name} + {cfg.peft.method} (blocks {cfg.peft.blocks}),"
             f" K={cfg.federated.devices}, {cfg.federated.rounds} rounds, mode {cfg.federated.mode}, channel {cfg.channel.model}",
             f"{'scheme':<9}{'N':>4}{'SNR dB':>8}{'seed':>6}{'accuracy':>10}{'emulator':>10}{'channel uses':>14}{'agg MSE':>11}"]
    for r in sorted(rows, key=lambda r: (r["scheme"], int(r["antennas"]), float(r["snr_db"]), int(r["seed"]))):
        lines.append(f"{r['scheme']:<9}{int(r['antennas']):>4}{float(r['snr_db']):>8.1f}{int(r['seed']):>6}"
                     f"{float(r['accuracy']):>10.3f}{float(r['emulator_accuracy']):>10.3f}"
                     f"{int(r['channel_uses']):>14,d}{float(r['agg_mse']):>11.2e}")
    if cfg.model.name == "random-bert":
        lines.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    return "\n".join(lines)
