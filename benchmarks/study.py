"""`deft6g study`: accuracy vs SNR and latency of federated DEFT with ideal, MIMO AirComp and digital
aggregation, bounded by a centralised run of the same PEFT on the union of the devices' data.

One point is (scheme, snr_db, num_rx_ant, link, num_bits, lora_aggregation, seed); every finished point is
appended to results.csv at once (its per-round log to rounds.csv) and a re-run skips finished points;
summary.csv holds the mean and 95% confidence interval over seeds per point without its seed.

Stages (`FederatedStudy`): (0) model.csv, the model's sizes (model.json repeats it). (1) The tuning stage
(`[tuning]`, `deft6g.experiment.tune`, tuning.csv and chosen.json): per LoRA aggregation variant, federated.lr with
ideal aggregation and centralised_lr with the centralised reference, then each arm of tuning.arm_lr's own lr,
OBDA's threshold x server_lr with the obda scheme (per link and N, at each SNR of tuning.obda_snr_db) with its
arm's lr, AirComp's admission threshold when asked, and digital's quantiser width per link, N and SNR when
tuning.digital_num_bits lists widths (the cheapest reaching the ideal reference minus 1 point); only for the
schemes in `schemes`; a tuning run reads the validation split alone (its final val_accuracy is the score; no test
evaluation). (2) The reported points with the chosen values (results.csv records each point's lr and scheme
setting). (3) The control row "noisy": ideal aggregation plus Gaussian noise at the NMSE AirComp measured at its
lowest SNR (mean over its seeds, per N, link and variant), run once those AirComp points are in.
"""

import json
import math
import time
from dataclasses import replace

import numpy as np

from deft6g.deprecation import module_aliases
from deft6g.experiment import (PointRows, ScalarWriter, Stage, Study, Tuning, censored_median, check_log_dir,
                               ci_points, line_plot, mean_ci, paired_ci, run, run_name, summarise, tost)
from deft6g.finetune import (COMPRESSED, AdapterConfig, BitFitConfig, EmulatorBuilder, EmulatorRecipe, FederatedDEFT,
                             LoraConfig, LoraLayer, PromptTuningConfig, data_split, emulator_config, evaluate,
                             get_peft_model, load_dataset, load_study_data, make_aggregator, partition, plug_in,
                             projection_kernel, train_test_split)
from deft6g.finetune.peft.activation_store import ragged_activations
from deft6g.finetune.peft.data import content_digest
from deft6g.finetune.federation.emulator_builder import package_digest
from deft6g.finetune.federation.emulator_package import download_bits, remap_tokens, token_map, unpack_emulator
from deft6g.finetune.peft.fomo import model_key

from .study_config import (RENAMED, STUDY_PEFT_METHODS, STUDY_SCHEMES, ConfigError,  # noqa: F401 (RENAMED's targets)
                           StudyConfig, load_config, validate)


__getattr__ = module_aliases(__name__, RENAMED)          # the names before 0.1.0
POINT_KEY = ["scheme", "snr_db", "num_rx_ant", "link", "num_bits", "lora_aggregation", "seed"]
# channel_uses: the uplink (payload + pilots + side information) over all rounds; downlink_uses apart;
# broadcast_reals: the server's broadcast of the new PEFT state to every device (delta_w: with its dense residuals)
# in reals (float32 values), not channel uses (no model downlink is simulated), over all rounds (rounds.csv: per
# round; 0 for the centralised reference, which trains at the server); energy: the devices' transmit energy
# [P x channel uses]; nmse: mean over rounds of the aggregate's normalised MSE;
# val_accuracy: final, on the validation split; accuracy: final, on the whole test split; lr: the learning
# rate the point used; setting: its scheme's chosen values as JSON (OBDA's threshold and server_lr, noisy nmse).
POINT_TYPES = {"scheme": str, "snr_db": float, "num_rx_ant": int, "link": str, "num_bits": int,
               "lora_aggregation": str, "seed": int}
COUNTS = ["channel_uses", "payload_uses", "pilot_uses", "side_info_uses", "downlink_uses", "broadcast_reals"]
RESULT_TYPES = {**POINT_TYPES, "lr": float, "setting": str, **dict.fromkeys(
    ["accuracy", "val_accuracy", "emulator_accuracy"], float), **dict.fromkeys(COUNTS, int), **dict.fromkeys(
    ["energy", "latency_s", "agg_mse", "nmse", "lora_bias"], float), **dict.fromkeys(
    ["bits_up", "bits_down", "rounds", "samples_seen"], int), **dict.fromkeys(["train_s", "link_s", "eval_s", "wall_s"],
                                                                              float)}
# sampled / participants: the round's device indices, space-separated
ROUND_TYPES = {**POINT_TYPES, "round": int, **dict.fromkeys(["loss", "agg_mse", "nmse", "lora_bias"], float),
               **dict.fromkeys(COUNTS, int), "energy": float, "devices": int, "sampled": str, "participants": str,
               "val_accuracy": float}
RESULT_FIELDS, ROUND_FIELDS = list(RESULT_TYPES), list(ROUND_TYPES)
SUMMARY_BY = ["scheme", "snr_db", "num_rx_ant", "link", "num_bits", "lora_aggregation"]
REFERENCES = ("centralised", "ideal")            # no channel: snr inf, num_rx_ant 0, link "none", num_bits 0
# tuning.csv: per tuning, candidate and seed (deft6g.experiment.tuning_store) the run's point and these results
TUNING_COLUMN_TYPES = {k: RESULT_TYPES[k] for k in [
    "scheme", "snr_db", "num_rx_ant", "link", "num_bits", "lora_aggregation", "val_accuracy", "nmse", "channel_uses",
    "wall_s"]}
TUNING_FIELDS = list(TUNING_COLUMN_TYPES)


def study_points(cfg, choices=None):
    """Every point as a dict of POINT_KEY, seeds outermost (so each finished seed is a complete replicate).
    A "noisy" point sits at AirComp's lowest SNR (the NMSE it carries), one per N and link. A digital point has
    each width of digital.num_bits, or the width `choices` (`tune_study`) holds for its LoRA variant, link, N
    and SNR when tuning.digital_num_bits is tuned (without `choices`: every width of that grid)."""
    choices, tuned_bits = choices or {}, cfg.tuning.digital_num_bits

    def widths(scheme, agg, link, n, snr):
        if scheme != "digital":
            return [0]
        key = ("digital", agg, link, n, snr)
        return [choices[key]["num_bits"]] if tuned_bits and key in choices else tuned_bits or cfg.digital.num_bits

    pts = []
    for seed in cfg.seeds:
        for agg in cfg.federated.lora_aggregation:
            for scheme in cfg.schemes:
                own = {"digital": cfg.digital.snr_db, "obda": cfg.obda.snr_db}.get(scheme)
                snrs = [min(cfg.channel.snr_db)] if scheme == "noisy" else own or cfg.channel.snr_db
                every = (tuned_bits or cfg.digital.num_bits) if scheme == "digital" else [0]
                grid = ([(math.inf, 0, "none", 0)] if scheme in REFERENCES else
                        [(float(s), n, link, b) for link in cfg.channel.links for n in cfg.channel.num_rx_ant
                         for b in every for s in snrs if b in widths(scheme, agg, link, n, float(s))])
                pts += [dict(zip(POINT_KEY, (scheme, snr, n, link, b, agg, seed))) for snr, n, link, b in grid]
    return pts


def _peft_config(cfg):
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
    """The examples `idx` of cached activations (a RaggedActivations) as a view sharing its file (no copy)."""
    return x.subset(idx)


class _Setup:
    """Everything the points share: data, models, the cached activations (computed once, on disk).

    The activations (train_acts, test_acts, full_test_acts, whole_test, round_val) are RaggedActivations: stored
    without padding in float32 (CACHE_DTYPE) and read through a memory map batch by batch, so resident memory
    holds a batch, not a split; a float32 store serves exactly the padded cache's trimmed batches (real
    positions; padded ones are zero), so the study's numbers are those of the padded cache."""

    CACHE_DTYPE = "float32"
    # texts per evaluation batch: 64 rather than training.evaluate's 256 keeps the forward pass's transient (the
    # study's peak memory once the activations are on disk) at about a quarter; logits move by <= 2e-7
    # (measured), the accuracies of `study --quick` and of a default-sized point were unchanged
    EVAL_BATCH = 64

    def __init__(self, cfg, log):

        self.cfg, f = cfg, cfg.federated
        d = cfg.data
        recipe = load_study_data(d.dataset, cfg.model.name, cfg.model.max_length, d.train_examples, d.test_examples,
                                 d.validation_fraction)
        data, split, model, tok = recipe.data, recipe.split, recipe.model, recipe.tokenizer
        train, test = split.train, split.test                      # dataset rows (fit + validation, test)
        self.train_texts, self.test_texts = train, test
        self.fit_rows, self.val_rows = split.fit_rows, split.val_rows
        self.y_train, self.y_test, self.y_val = data.y[train][self.fit_rows], data.y[test], data.y[train][self.val_rows]
        x_train, x_test = recipe.inputs(train), recipe.inputs(test)
        peft_cfg = _peft_config(cfg)
        n_blocks = model.config.num_hidden_layers
        self.kept, num_labels = list(range(n_blocks)), len(data.class_names)
        self.emulator_params = self.full_params = model.count_params()
        self.emulator, device_x, package_id = None, (x_train, x_test), None
        if f.mode == "emulator":         # the aligned, compressed emulator of `deft6g emulator`, distilled with seed 0
            builder = EmulatorBuilder(model, tok, EmulatorRecipe(f.emulator_bottom, f.emulator_top, f.emulator_drop),
                                      cfg.model.max_length, model_key(cfg.model.name))
            package, stats = builder.package(COMPRESSED, True, seed=0)
            self.kept, package_id, lookup = builder.kept, package_digest(package), token_map(package, tok.unk_token_id)
            device_x = [remap_tokens(x, lookup, tok.unk_token_id) for x in (x_train, x_test)]
            self.emulator = {"variant": COMPRESSED, "distilled": True, "download_bits": download_bits(package),
                             "download_bits_full": download_bits(builder.package("full", False, 0)[0]),
                             "vocab_size": int(lookup.max() + 1), "train_unk_rate": device_x[0][1],
                             "test_unk_rate": device_x[1][1], "distillation": stats, "tuning": builder.tune(False)[1]}
            device_x = [x for x, _ in device_x]
            emu = unpack_emulator(package)
            self.emulator_params = emu.count_params()
            self.device = get_peft_model(emu, emulator_config(peft_cfg, self.kept, n_blocks), num_labels=num_labels)
        self.full = get_peft_model(model, peft_cfg, num_labels=num_labels)
        if f.mode != "emulator":
            self.device = self.full
        self.start, self.full_start = self.device.lowest_tuned_block(), self.full.lowest_tuned_block()
        key = [model_key(cfg.model.name), cfg.model.max_length, content_digest(data), self.kept,  # by content
               package_id]

        def acts(model_, x, block, part, ids):
            return ragged_activations(model_, x, block, key + [part, ids.tolist()], dtype=self.CACHE_DTYPE,
                                      chunk_size=256)              # 4 of model.activations' batches of 64

        t0 = time.time()
        train_acts = acts(self.device, device_x[0], self.start, "device-train", train)   # fit + validation texts
        self.train_acts = train_acts.subset(self.fit_rows)
        self.test_acts = acts(self.device, device_x[1], self.start, "device-test", test)
        self.full_test_acts = (self.test_acts if self.device is self.full
                               else acts(self.full, x_test, self.full_start, "full-test", test))
        self.whole_test = self._by_length(self.test_acts, self.full_test_acts, self.y_test)
        val_rows = self.val_rows[:f.round_eval_examples or None]
        val_acts = train_acts.subset(val_rows)
        x_val = {k: v[val_rows] for k, v in x_train.items()}
        full_val = (val_acts if self.device is self.full else
                    acts(self.full, x_val, self.full_start, "full-validation", train[val_rows]))
        self.round_val = self._by_length(val_acts, full_val, self.y_val[:len(val_rows)])
        log(f"activations ready in {time.time() - t0:.1f} s ({len(self.fit_rows)} train / {len(self.val_rows)} "
            f"validation / {len(test)} test texts, input of block {self.start}; device model blocks {self.kept})")
        self._kernels = [(v, v.numpy()) for w in self.full.wrappers + self.device.wrappers
                         if isinstance(w.layer, LoraLayer) for v in [projection_kernel(w.layer.base)]]

    def reset(self, seed):
        """Fresh PEFT weights and head for `seed`; base kernels back to pretrained (delta_w merges into them)."""
        self.device.reset_parameters(seed)
        for v, w in self._kernels:
            v.assign(w)

    @staticmethod
    def _by_length(device_acts, full_acts, y):
        """(device activations, full-model activations, labels) of one test set (RaggedActivations), as views
        ordered by text length once, so that every evaluation batches by length (accuracy is order-free)."""
        order = np.argsort(device_acts.lengths, kind="stable")
        return (device_acts.subset(order), full_acts.subset(order) if full_acts is not device_acts else None,
                y[order])

    def evaluate(self, validation=False):
        """Accuracy of the full model (the emulator's weights plugged in): on the whole test split, or with
        `validation` on the first `federated.round_eval_examples` texts of the validation split (carved from
        train, stratified, seed 0)."""
        device_acts, full_acts, y = self.round_val if validation else self.whole_test
        if self.device is self.full:
            return evaluate(self.full, device_acts, y, start_block=self.start, batch_size=self.EVAL_BATCH,
                            jit_compile=self.cfg.federated.jit_compile)
        plug_in(self.full, self.device, self.kept)
        return evaluate(self.full, full_acts, y, start_block=self.full_start, batch_size=self.EVAL_BATCH,
                        jit_compile=self.cfg.federated.jit_compile)


def point_aggregator(cfg, point, setting=None):
    """The point's aggregator: its scheme, N and SNR; a drop channel kept across rounds (placed from the seed);
    "counted" links (pilots, side information and downlink over the link) or the "genie". setting: OBDA's
    threshold and server_lr (default: the configured [obda] values), AirComp's admit_snr_db (default:
    channel.admit_snr_db), the noisy control's nmse (default 0)."""
    c, g, o, k = cfg.channel, cfg.digital, cfg.obda, cfg.federated.devices
    setting = setting or {}
    scheme = "ideal" if point["scheme"] == "centralised" else point["scheme"]
    snr, genie = float(point["snr_db"]), point["link"] == "genie"
    link = {"genie": genie, "num_pilots": c.num_pilots or None, "downlink_snr_db": snr + c.downlink_offset_db}
    errors = {"csi_error": c.csi_error} if genie else {}
    return make_aggregator(
        scheme, k, int(point["num_rx_ant"]), snr, seed=int(point["seed"]), link=link,
        channel={"model": c.model, "num_subcarriers": c.num_subcarriers, "keep_drop": True},
        aircomp={"method": c.method, "select": c.select_devices, "mse_target": c.mse_target,
                 "admit_snr_db": setting.get("admit_snr_db", c.admit_snr_db), **errors},
        digital={"num_bits": int(point["num_bits"]) or 8, "num_bits_per_symbol": g.num_bits_per_symbol,
                 "code_rate": g.code_rate, "num_iter": g.num_iter, "mcs": g.mcs, "detector": g.detector, **errors},
        obda={"threshold": setting.get("threshold", o.threshold), "server_lr": setting.get("server_lr", o.server_lr),
              **errors}, noisy={"nmse": setting.get("nmse", 0.0)})


class _TimedAggregator:
    """Wraps an aggregator to add up the time spent in the link simulation (design, channel, decoding)."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, *args):
        t0 = time.time()
        out = self.inner(*args)
        self.seconds += time.time() - t0
        return out


class FederatedStudy(Study):
    """The study on the protocol (`deft6g.experiment.Study`), in turn: model.csv (the model's sizes, model.json
    repeating it; here), the tuning stage (a `Tuning`: tuning.csv, chosen.json), the reported points and then
    the noisy control (both results.csv; each point's rounds in rounds.csv, written first). A point carries the
    lr and setting (`point_setting`) its row records, so a worker needs no choices. The setup is built here
    whenever points of a stage are left (`prepare`), so the workers read the activation caches it fills.
    summary.csv, summary.md and model.json derived. log: the setup's progress lines and the noisy control's
    level (a worker prints its own); log_dir: per-round TensorBoard scalars of every point run now
    (`log_point`). `run_study` runs it."""
    name = "study"

    def __init__(self, log=print, log_dir=None):
        self.log, self.log_dir, self.choices = log, log_dir, {}

    def __getstate__(self):
        return {**self.__dict__, "log": print}

    def config(self, quick=False):
        return load_config(None, quick)

    def stages(self):
        results = dict(key=POINT_KEY, types=RESULT_TYPES, run_point=self.run_point, describe=_describe,
                       sides={"rounds.csv": (POINT_KEY + ["round"], ROUND_TYPES)})
        return [Stage("model.csv", ["model"], MODEL_TYPES, lambda cfg, done: [{"model": cfg.model.name}],
                      lambda setup, point: model_info(setup), here=True),
                Tuning(self.choose, TUNING_COLUMN_TYPES),
                Stage("results.csv", points=self.reported_points, **results),
                Stage("results.csv", points=self.control_points, **results)]

    def setup(self, cfg):
        return _Setup(cfg, self.log)

    def prepare(self, setup, points):
        """Nothing beyond the setup, built here whenever points of a stage are left: it fills the on-disk
        activation caches (again, if they were deleted since the first run), which the workers then read instead
        of each computing them. (Tuning runs left after such a deletion compute them on each worker.)"""

    def choose(self, cfg, shared, tune):
        self.choices = tune_study(cfg, shared, tune)

    def reported_points(self, cfg, done):
        return [self._with_setting(cfg, p) for p in study_points(cfg, self.choices) if p["scheme"] != "noisy"]

    def control_points(self, cfg, done):
        """The noisy control's points, at the NMSE AirComp measured (`noise_levels` of the reported rows)."""
        noisy = [p for p in study_points(cfg, self.choices) if p["scheme"] == "noisy"]
        if not noisy:
            return []
        choices = {**self.choices, **noise_levels(cfg, done["results.csv"], self.log)}
        return [self._with_setting(cfg, p, choices) for p in noisy]

    def _with_setting(self, cfg, point, choices=None):
        setting = point_setting(cfg, self.choices if choices is None else choices, point)
        return {**point, "lr": setting["lr"], "setting": _setting_text(setting)}

    def run_point(self, setup, point):
        key = {k: point[k] for k in POINT_KEY}
        setting = {**json.loads(point["setting"]), "lr": point["lr"]}
        if self.log_dir is None:
            result = _run_point(setup, key, setting)
        else:
            with log_point(self.log_dir, key) as events:
                result = _run_point(setup, key, setting, on_round=lambda row: events.write(row["round"], row))
        return PointRows(result["row"], {"rounds.csv": result["rounds"]})

    def derive(self, cfg, rows):
        return {**rows, "summary": summary_rows(rows["results.csv"], rows["rounds.csv"],
                                                budget=cfg.channel.use_budget)}

    def tables(self, cfg, rows):
        return {"summary.csv": (SUMMARY_FIELDS, rows["summary"]), "model.json": rows["model.csv"][0],
                "summary.md": summary(cfg, rows["results.csv"], rows["rounds.csv"], markdown=True)}

    def summary(self, cfg, rows):
        return summary(cfg, rows["results.csv"], rows["rounds.csv"])

    def plot(self, out, cfg, rows):
        plot_study(out, cfg, rows["summary"], rows["results.csv"], rows["rounds.csv"])


def _setting_text(setting):
    """results.csv's `setting`: the point's chosen values but its lr, as JSON."""
    return json.dumps({k: v for k, v in setting.items() if k != "lr"}, sort_keys=True)


def log_point(log_dir, point):
    """The TensorBoard run of `point` in `log_dir` (a ScalarWriter, step: rounds.csv's round, from 0): every
    numeric rounds.csv column but the point's key and the round, plus "channel_uses_cumulative" (uplink uses over
    rounds 0..step); the point's earlier event files (a run interrupted before it finished) are deleted first."""
    return ScalarWriter(log_dir, run_name(point, POINT_KEY), fresh=True, skip=POINT_KEY + ["round"],
                        cumulative=["channel_uses"])


def point_setting(cfg, choices, point):
    """{"lr": the point's learning rate, OBDA's "threshold" and "server_lr", AirComp's "admit_snr_db", the noisy
    control's "nmse"}: the values `choices` holds for the point's LoRA variant (keys ("lr", agg),
    ("centralised_lr", agg), ("lr", agg, arm, link, N, tuning SNR) for an arm of tuning.arm_lr, (arm, agg, link,
    N, tuning SNR) with a dict for arm "obda" or "aircomp", ("nmse", agg, link, N)), else the configured ones. An OBDA or AirComp point takes the choice at the nearest of its
    tuning SNRs (tuning.obda_snr_db, tuning.aircomp_snr_db; the lower one on a tie)."""
    agg, scheme, f, o = point["lora_aggregation"], point["scheme"], cfg.federated, cfg.obda
    if scheme == "centralised":
        return {"lr": choices.get(("centralised_lr", agg), f.centralised_lr)}
    link, n, snr = point["link"], int(point["num_rx_ant"]), float(point["snr_db"])
    out = {"lr": arm_lr(cfg, choices, agg, scheme, link, n, snr)}
    arms = {"obda": (cfg.tuning.obda_snr_db, {"threshold": o.threshold, "server_lr": o.server_lr}),
            "aircomp": (cfg.tuning.aircomp_snr_db, {"admit_snr_db": cfg.channel.admit_snr_db})}
    if scheme in arms:
        snrs, configured = arms[scheme]
        ref = min(snrs, key=lambda s: (abs(s - snr), s))
        out.update(choices.get((scheme, agg, link, n, float(ref)), configured))
    if scheme == "noisy":
        out["nmse"] = choices[("nmse", agg, link, n)]
    return out


def arm_lr(cfg, choices, agg, scheme, link, n, snr):
    """The device learning rate of `scheme` at (link, N, SNR) for LoRA variant `agg`: its own choice at the
    nearest of tuning.arm_lr_snr_db (the lower on a tie) when tuning.arm_lr lists it, else the lr chosen with
    ideal aggregation (or the configured federated.lr)."""
    shared = choices.get(("lr", agg), cfg.federated.lr)
    if scheme not in cfg.tuning.arm_lr:
        return shared
    ref = min(cfg.tuning.arm_lr_snr_db, key=lambda s: (abs(s - snr), s))
    return choices.get(("lr", agg, scheme, link, n, float(ref)), shared)


def point_federation(setup, point, setting, aggregator):
    """The point's FederatedDEFT as the study runs it (also what a Flower client of the same point trains): PEFT
    weights reset to the point's seed, the seeded partition of the fit split over federated.devices (the
    centralised reference: one device holding the union, K times the local steps), `setting`'s lr."""
    cfg, f, seed = setup.cfg, setup.cfg.federated, int(point["seed"])
    setup.reset(seed)
    if point["scheme"] == "centralised":
        devices, steps = [(setup.train_acts, setup.y_train)], f.local_steps * f.devices
    else:
        parts = partition(setup.y_train, f.devices, cfg.data.partition, cfg.data.alpha, seed=seed)
        devices, steps = [(_split_arrays(setup.train_acts, i), setup.y_train[i]) for i in parts], f.local_steps
    return FederatedDEFT(setup.device, devices, aggregator, setup.start, steps, f.batch_size, setting["lr"],
                         f.local_optimizer, f.server_optimizer, f.server_lr, point["lora_aggregation"],
                         cut_block=f.cut_block if f.mode == "gradient" else None, seed=seed,
                         stateful_clients=f.stateful_clients, fraction=f.fraction,
                         clients_per_round=f.clients_per_round or None, jit_compile=f.jit_compile)


def _run_point(setup, point, setting, validation_only=False, on_round=None):
    """One federated run of `point` with `setting` (`point_setting`); validation_only (the tuning stage): no
    test evaluation (accuracy and emulator_accuracy NaN), the test split is never read; on_round: called with
    each round's rounds.csv row as soon as the round (and its evaluation) is done."""

    cfg, f = setup.cfg, setup.cfg.federated
    t0 = time.time()
    lr = setting["lr"]
    link = _TimedAggregator(point_aggregator(cfg, point, setting))
    fed = point_federation(setup, point, setting, link)
    eval_s = [0.0]

    def timed(fn, *args, **kwargs):
        t = time.time()
        out = fn(*args, **kwargs)
        eval_s[0] += time.time() - t
        return out

    counts = ("channel_uses", "payload_uses", "pilot_uses", "side_info_uses", "downlink_uses", "broadcast_reals")
    server_only = point["scheme"] == "centralised"      # the reference trains at the server: nothing is broadcast
    count = lambda g, c: 0 if server_only and c == "broadcast_reals" else getattr(g, c)     # noqa: E731

    def round_row(g):                                   # the rounds.csv row of the RoundLog g
        return {**point, "round": g.round, "loss": g.loss, "agg_mse": g.agg_mse, "nmse": g.nmse,
                "lora_bias": g.lora_bias, **{c: count(g, c) for c in counts}, "energy": g.energy,
                "devices": g.devices, "sampled": " ".join(map(str, g.sampled)),
                "participants": " ".join(map(str, g.participants)), "val_accuracy": g.accuracy}

    every = f.rounds if validation_only else f.eval_every       # a tuning run is scored on its final round alone
    logs = fed.run(f.rounds, evaluate=lambda: timed(setup.evaluate, validation=True), eval_every=every,
                   progress=None if on_round is None else lambda g: on_round(round_row(g)))
    accuracy = math.nan if validation_only else timed(setup.evaluate)
    val_accuracy = logs[-1].accuracy                     # run() evaluates after the last round
    emu_acc = (accuracy if setup.device is setup.full or validation_only else
               timed(evaluate, setup.device, setup.whole_test[0], setup.whole_test[2], start_block=setup.start,
                     batch_size=setup.EVAL_BATCH, jit_compile=f.jit_compile))
    rounds = [round_row(g) for g in logs]
    totals = {c: sum(count(g, c) for g in logs) for c in counts}
    wall = time.time() - t0
    return {"rounds": rounds, "row": {**point, "lr": lr, "setting": _setting_text(setting), "accuracy": accuracy,
            "val_accuracy": val_accuracy, "emulator_accuracy": emu_acc, **totals, "energy": sum(g.energy for g in logs),
            "latency_s": totals["channel_uses"] / cfg.channel.bandwidth_hz,
            "agg_mse": float(np.mean([g.agg_mse for g in logs])), "nmse": float(np.nanmean([g.nmse for g in logs]))
            if any(np.isfinite(g.nmse) for g in logs) else float("nan"),
            "lora_bias": float(np.mean([g.lora_bias for g in logs])),
            "bits_up": sum(g.bits_up for g in logs), "bits_down": sum(g.bits_down for g in logs),
            "rounds": f.rounds, "samples_seen": sum(g.examples for g in logs),
            "train_s": round(wall - link.seconds - eval_s[0], 2), "link_s": round(link.seconds, 2),
            "eval_s": round(eval_s[0], 2), "wall_s": round(wall, 2)}}


def check_study(cfg):
    """`validate(cfg)` and the checks that need the library, all before any output is written: the seeded
    split holds `data.train_examples` / `data.test_examples` texts, and the PEFT configuration and the
    aggregator of every radio scheme and N build. Raises ConfigError naming the key or section; returns `cfg`."""
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
    builds += [("digital" if s == "digital" else "channel", f"{s} N={n}: ", lambda p=p: point_aggregator(cfg, p))
               for (s, n), p in links.items()]
    for section, what, build in builds:
        try:
            build()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"configuration key {section!r}: {what}{err}") from err
    return cfg


def run_study(out_dir, config=None, quick=False, log=print, log_dir=None, **parallel):
    """Run (or resume) the study into `out_dir` (`deft6g.experiment.run` of `FederatedStudy`); `config`: a TOML
    path, None (the default) or a StudyConfig (`quick` applies to paths and None). Returns the `StudyResult`
    (.rows: {file: rows}; .derived["summary"]: summary.csv's rows). Every check of `check_study` runs before the
    folder is touched. log_dir: TensorBoard folder, one run per point run now (`log_point`; finished points
    skipped by a resumed run write nothing; tuning runs are not logged); None: no events. parallel: workers,
    ray_address, worker_gpus of `deft6g.experiment.run_points` (a first run caches the activations here first,
    every worker loads them from the cache)."""
    cfg = check_study(config if isinstance(config, StudyConfig) else load_config(config, quick))
    if log_dir is not None:
        check_log_dir(log_dir)
    result = run(FederatedStudy(log, log_dir), out_dir, cfg, log=log, **parallel)
    return result.with_legacy("run_study", (result.config, result.rows["results.csv"]))


class _TuningRun:
    """run(setting, seed) of one tuning (`deft6g.experiment.tune`): `point` (without its seed) trained with the
    earlier choices `base` updated by `setting` (a POINT_KEY name in either, e.g. num_bits, sets the point's
    own); -> (final validation accuracy, its tuning.csv columns)."""

    def __init__(self, task, point, base):
        self.task, self.point, self.base = task, point, base

    def __call__(self, setting, seed):
        merged = {**self.base, **setting}
        own = {k: v for k, v in merged.items() if k in POINT_KEY}
        row = _run_point(self.task.setup(), {**self.point, **own, "seed": seed},
                         {k: v for k, v in merged.items() if k not in own}, validation_only=True)["row"]
        return row["val_accuracy"], {k: row[k] for k in TUNING_FIELDS}


WIDTH_RULE = ("fewest mean uplink channel uses over the seeds among the widths whose every tuning run reaches the "
              "target (the ideal reference's mean final validation accuracy minus the equivalence margin); score = "
              "minus the channel uses, -inf (null) below the target; no width reaches it: the first listed")


class _WidthRun(_TuningRun):
    """run(setting, seed) of the digital width tuning: -> (minus the run's uplink channel uses when its final
    validation accuracy reaches `target`, else -inf; its tuning.csv columns), so `tune` picks WIDTH_RULE."""

    def __init__(self, task, point, base, target):
        super().__init__(task, point, base)
        self.target = target

    def __call__(self, setting, seed):
        accuracy, row = super().__call__(setting, seed)
        return (-float(row["channel_uses"]) if accuracy >= self.target else -math.inf), row


def tune_study(cfg, task, tune):
    """The tuning stage (module docstring) through `tune` (a `deft6g.experiment.tuning.tuner`: tuning.csv,
    chosen.json); task.setup() -> this process's setup (picklable, for workers). Per LoRA variant,
    federated.lr with ideal aggregation (when a federated scheme is in `schemes`), centralised_lr with the
    centralised scheme, each arm of tuning.arm_lr's own lr per link and N at each tuning.arm_lr_snr_db, then
    OBDA's threshold x server_lr per link and N at each tuning.obda_snr_db and AirComp's admission threshold at
    each tuning.aircomp_snr_db (when their grids are not empty), then digital's width per link, N and SNR (when
    tuning.digital_num_bits lists widths), each with its arm's lr (`arm_lr`). Returns the `choices` of
    `point_setting` and `study_points`."""
    t, f, o = cfg.tuning, cfg.federated, cfg.obda
    choices = {}

    def run(name, agg, scheme, grid, fixed, base=(), snr=math.inf, n=0, link="none", target=None):
        point = {"scheme": scheme, "snr_db": snr, "num_rx_ant": n, "link": link, "num_bits": 0,
                 "lora_aggregation": agg}
        if target is None:
            return tune(name, grid, _TuningRun(task, point, dict(base)), t.seeds, fixed)
        return tune(name, grid, _WidthRun(task, point, dict(base), target), t.seeds, fixed, rule=WIDTH_RULE)

    for agg in f.lora_aggregation:
        if set(cfg.schemes) - {"centralised"}:
            lr = run(f"federated.lr [{agg}]", agg, "ideal", {"lr": t.lr}, {"lr": f.lr})
            choices[("lr", agg)] = lr.setting["lr"]
        if "centralised" in cfg.schemes:
            choices[("centralised_lr", agg)] = run(f"centralised_lr [{agg}]", agg, "centralised",
                                                   {"lr": t.centralised_lr}, {"lr": f.centralised_lr}).setting["lr"]
        arms = {"obda": ({"threshold": t.obda_threshold, "server_lr": t.obda_server_lr}, t.obda_snr_db,
                         {"threshold": o.threshold, "server_lr": o.server_lr}),
                "aircomp": ({"admit_snr_db": t.aircomp_admit_snr_db}, t.aircomp_snr_db,
                            {"admit_snr_db": cfg.channel.admit_snr_db})}
        for arm in (a for a in t.arm_lr if a in cfg.schemes):     # an arm's own lr, its settings as configured
            configured = arms[arm][2] if arm in arms else {"num_bits": cfg.digital.num_bits[0]}   # digital
            for link in cfg.channel.links:
                for n in cfg.channel.num_rx_ant:
                    for snr in t.arm_lr_snr_db:
                        choices[("lr", agg, arm, link, n, float(snr))] = run(
                            f"federated.lr [{agg}] {arm} {link} N={n} {snr:g} dB", agg, arm, {"lr": t.lr},
                            {"lr": f.lr}, configured, float(snr), n, link).setting["lr"]
        for arm, (grid, snrs, fixed) in arms.items():
            if arm not in cfg.schemes or (arm == "aircomp" and not t.aircomp_admit_snr_db):
                continue                                   # AirComp's admission: tuned only when asked
            for link in cfg.channel.links:
                for n in cfg.channel.num_rx_ant:
                    for snr in snrs:
                        choices[(arm, agg, link, n, float(snr))] = run(
                            f"{arm} [{agg}] {link} N={n} {snr:g} dB", agg, arm, grid, fixed,
                            {"lr": arm_lr(cfg, choices, agg, arm, link, n, float(snr))}, float(snr), n,
                            link).setting
        if "digital" in cfg.schemes and t.digital_num_bits:
            reference = lr.score if math.isfinite(lr.score) else run(   # lr not tuned: its one run, as a tuning
                f"digital width reference [{agg}]", agg, "ideal", {"lr": [choices[("lr", agg)]]}, {}).score
            for link in cfg.channel.links:
                for n in cfg.channel.num_rx_ant:
                    for snr in cfg.digital.snr_db or cfg.channel.snr_db:
                        choices[("digital", agg, link, n, float(snr))] = run(
                            f"digital.num_bits [{agg}] {link} N={n} {snr:g} dB", agg, "digital",
                            {"num_bits": t.digital_num_bits}, {},
                            {"lr": arm_lr(cfg, choices, agg, "digital", link, n, float(snr))}, float(snr), n,
                            link, target=reference - EQUIVALENCE_MARGIN).setting
    return choices


def noise_levels(cfg, rows, log=print):
    """{("nmse", agg, link, N): the mean over seeds of AirComp's NMSE (each run's mean over rounds) at its lowest
    SNR}: the noisy control's noise level. Raises ValueError when those AirComp runs measured no NMSE."""
    low, out = min(cfg.channel.snr_db), {}
    for agg in cfg.federated.lora_aggregation:
        for link in cfg.channel.links:
            for n in cfg.channel.num_rx_ant:
                vals = [r["nmse"] for r in rows if r["scheme"] == "aircomp" and r["snr_db"] == low
                        and r["lora_aggregation"] == agg and r["link"] == link and r["num_rx_ant"] == n]
                vals = [v for v in vals if math.isfinite(v)]
                if not vals:
                    raise ValueError(f"the noisy control needs AirComp's NMSE at {low:g} dB ({agg}, {link}, N={n}), "
                                     "and those runs measured none")
                out[("nmse", agg, link, n)] = math.fsum(vals) / len(vals)
                log(f"noisy control [{agg}] {link} N={n}: ideal + noise at NMSE {out[('nmse', agg, link, n)]:.4g} "
                    f"(AirComp at {low:g} dB, mean over {len(vals)} seed(s))")
    return out


def _noisy_name(r):
    return f"ideal + noise at AirComp's NMSE at {r['snr_db']:g} dB"


def _label(p):
    name = p["scheme"] if p["scheme"] in REFERENCES else f"{p['scheme']} N={p['num_rx_ant']} {float(p['snr_db']):g} dB"
    name = f"{_noisy_name(p)} N={p['num_rx_ant']}" if p["scheme"] == "noisy" else name
    return f"{name} [{p['lora_aggregation']}] seed {p['seed']}"


def _describe(point, row):
    return f"{_label(point)}: accuracy {row['accuracy']:.3f}"


# model.csv: the model's sizes (one row; model.json repeats it): the device model's kept blocks, its and the full
# model's parameters and download bits (float32), the emulator's package (emulator mode, else empty), the split's
# sizes and the PEFT payload of a device in reals
MODEL_TYPES = {"model": str, "pretrained": bool, "mode": str, "kept_blocks": list, "emulator_params": int,
               "full_params": int, "download_bits_emulator": int, "download_bits_full": int, "emulator": dict,
               "train_examples": int, "test_examples": int, "payload_reals_per_device": int}


def model_info(setup):
    """model.csv's row (but its key) of `setup`."""
    cfg = setup.cfg
    return {"pretrained": cfg.model.name != "random-bert", "mode": cfg.federated.mode, "kept_blocks": setup.kept,
            "emulator_params": setup.emulator_params, "full_params": setup.full_params,
            "download_bits_emulator": 32 * setup.emulator_params, "download_bits_full": 32 * setup.full_params,
            "emulator": setup.emulator, "train_examples": int(len(setup.y_train)),
            "test_examples": int(len(setup.y_test)),
            "payload_reals_per_device": int(sum(np.prod(v.shape) for v in setup.device.trainable_variables))}


SUMMARY_VALUES = ["accuracy", "val_accuracy", "channel_uses", "downlink_uses", "energy", "latency_s", "nmse"]
SUMMARY_EXTRA = ["vs_ideal_mean", "vs_ideal_ci", "tost", "tost_low", "tost_high", "overhead_share", "reached",
                 "uses_to_target", "within_budget", "accuracy_at_budget", "cheapest_width", "heard", "uses_per_heard"]
EQUIVALENCE_MARGIN = 0.01         # one accuracy point: the TOST margin and the equal-quality target below ideal


SUMMARY_FIELDS = SUMMARY_BY + ["n"] + [f"{v}_{s}" for v in SUMMARY_VALUES for s in ("mean", "ci")] + SUMMARY_EXTRA


def _measured(value):
    """Whether a typed cell holds a number: a round without an evaluation has NaN (or "" / None from elsewhere)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def uses_to_target(point_rounds, target):
    """Uplink channel uses spent until the first round whose validation accuracy reaches `target` (cumulative,
    that round included), or inf when no round does (censored: never imputed)."""
    spent = 0
    for r in sorted(point_rounds, key=lambda r: r["round"]):
        spent += r["channel_uses"]
        if _measured(r["val_accuracy"]) and r["val_accuracy"] >= target:
            return spent
    return math.inf


def accuracy_within(point_rounds, budget):
    """The validation accuracy of the last evaluated round whose cumulative uplink channel uses are <= `budget`,
    or -inf when not even the first evaluated round fits (censored: the run has no trained model within it)."""
    spent, best = 0, -math.inf
    for r in sorted(point_rounds, key=lambda r: r["round"]):
        spent += r["channel_uses"]
        if spent > budget:
            break
        if _measured(r["val_accuracy"]):
            best = r["val_accuracy"]
    return best


def summary_rows(rows, round_rows=(), margin=EQUIVALENCE_MARGIN, budget=math.inf):
    """Per (scheme, snr_db, num_rx_ant, link, num_bits, lora_aggregation): the seed count n, mean and 95% CI
    half-width of SUMMARY_VALUES, and against ideal aggregation of the same seed (paired): the accuracy
    difference (vs_ideal_mean, vs_ideal_ci) and the TOST verdict at +-`margin` ("equivalent" or "not shown",
    with its 90% interval tost_low, tost_high; blank with fewer than 2 seeds); overhead_share: (pilots + side
    information) / uplink channel uses; reached: the fraction of seeds whose validation accuracy reaches the
    target (that seed's ideal final validation accuracy minus `margin`) and uses_to_target: the median uplink
    channel uses to get there, seeds that never do counted as infinite (inf: the median is not reached);
    accuracy_at_budget: the lower median over seeds of the validation accuracy reached within `budget` total uplink
    channel uses (`accuracy_within`; -inf: the median seed has no evaluated round within it) and within_budget:
    the fraction of seeds with an evaluated round within it; heard: the devices whose update reached the server
    per round (mean over rounds and seeds; none for the centralised reference); uses_per_heard: uplink channel uses
    per device-round heard (pooled over seeds; inf: nobody heard)."""
    out = summarise(rows, SUMMARY_BY, SUMMARY_VALUES)
    ideal = {(r["lora_aggregation"], r["seed"]): r for r in rows if r["scheme"] == "ideal"}
    by_point = {}
    for r in round_rows:
        by_point.setdefault(tuple(str(r[k]) for k in POINT_KEY), []).append(r)
    for s in out:
        members = [r for r in rows if all(r[k] == s[k] for k in SUMMARY_BY)]
        pairs = [(r["accuracy"], ideal[(r["lora_aggregation"], r["seed"])]["accuracy"])
                 for r in members if (r["lora_aggregation"], r["seed"]) in ideal]
        s["vs_ideal_mean"], s["vs_ideal_ci"] = (paired_ci(*zip(*pairs)) if pairs and s["scheme"] != "ideal"
                                                else (float("nan"), float("nan")))
        s["tost"], s["tost_low"], s["tost_high"] = "", float("nan"), float("nan")
        if s["scheme"] != "ideal" and len(pairs) >= 2:
            t = tost(*zip(*pairs), margin=margin)
            s["tost"], s["tost_low"], s["tost_high"] = t["verdict"], t["low"], t["high"]
        uses = sum(r["channel_uses"] for r in members)
        s["overhead_share"] = (sum(r["pilot_uses"] + r["side_info_uses"] for r in members) / uses
                               if uses else float("nan"))
        spent, within, heard, per_heard = [], [], [], []
        for r in members:
            ref = ideal.get((r["lora_aggregation"], r["seed"]))
            point_rounds = by_point.get(tuple(str(r[k]) for k in POINT_KEY))
            if point_rounds:
                within.append(accuracy_within(point_rounds, budget))
                heard.append(np.mean([g["devices"] for g in point_rounds]))
                per_heard.append((r["channel_uses"], sum(g["devices"] for g in point_rounds)))
            if ref is not None and point_rounds and _measured(ref["val_accuracy"]):
                spent.append(uses_to_target(point_rounds, ref["val_accuracy"] - margin))
        channel = s["scheme"] != "noisy"                                  # the noisy control has no channel
        s["reached"] = float(np.mean(np.isfinite(spent))) if spent else float("nan")
        s["uses_to_target"] = censored_median(spent) if spent and channel else float("nan")
        s["within_budget"] = float(np.mean(np.isfinite(within))) if within and channel else float("nan")
        s["accuracy_at_budget"] = censored_median(within) if within and channel else float("nan")
        s["heard"] = float(np.mean(heard)) if heard and s["scheme"] != "centralised" else float("nan")   # no devices
        heard_rounds = sum(d for _, d in per_heard)
        s["uses_per_heard"] = (float("nan") if not per_heard or not uses else
                               sum(u for u, _ in per_heard) / heard_rounds if heard_rounds else math.inf)
    chosen = cheapest_widths(out)
    for s in out:
        s["cheapest_width"] = s["scheme"] == "digital" and chosen.get(_width_key(s)) is s
    return out


def _width_key(s):
    return s["lora_aggregation"], s["link"], str(s["num_rx_ant"]), s["snr_db"]


def cheapest_widths(s_rows):
    """{(lora_aggregation, link, N, SNR): the digital summary row of the quantiser width whose median seed
    reaches the target on validation with the fewest uplink channel uses (a tie: fewer bits)}; a setting where no
    width's median seed reaches it is absent. Descriptive, not a choice made before the reported runs: it reads
    the reported seeds' validation curves (never the test split), so the winner's uses are biased low; the
    choice made on the tuning seeds before the reported runs is tuning.digital_num_bits (`tune_study`)."""
    best = {}
    for s in s_rows:
        if s["scheme"] != "digital" or not math.isfinite(s["uses_to_target"]):
            continue
        key, rank = _width_key(s), (s["uses_to_target"], s["num_bits"])
        if key not in best or rank < (best[key]["uses_to_target"], int(best[key]["num_bits"])):
            best[key] = s
    return best


def _curve_name(cfg, r):
    """A curve's label: scheme, N, and the link accounting and bit width where the grid varies them."""
    if r["scheme"] in REFERENCES:
        name = r["scheme"]
    else:
        name = f"{_noisy_name(r) + ',' if r['scheme'] == 'noisy' else r['scheme']} N={r['num_rx_ant']}"
        name += f" {r['link']}" if len(cfg.channel.links) > 1 else ""
        name += f" {r['num_bits']} bit" if r["scheme"] == "digital" and len(cfg.digital.num_bits) > 1 else ""
    return name + (f" [{r['lora_aggregation']}]" if len(cfg.federated.lora_aggregation) > 1 else "")


def plot_study(out, cfg, summary, rows, round_rows):
    """accuracy_vs_snr.png (mean and 95% CI over seeds, references as bands), accuracy_vs_latency.png,
    accuracy_per_round.png and accuracy_vs_channel_uses.png (validation accuracy per round against the
    cumulative uplink channel uses: the equal-quality view), nmse_per_round.png (log space)."""
    if not summary:
        return
    seeds = max(s["n"] for s in summary)
    note = f"mean and 95% CI over {seeds} seed(s); {cfg.model.name}, {cfg.peft.method} blocks {cfg.peft.blocks}, " \
           f"K={cfg.federated.devices}, {cfg.federated.rounds} rounds, channel {cfg.channel.model}"
    snr_axis = ("mean SNR of the drop's devices, P/sigma^2 [dB]" if cfg.channel.model in ("umi", "uma", "rma")
                else "SNR P/sigma^2 per device [dB]")
    refs = {f"{_curve_name(cfg, s)} (no channel)": (s["accuracy_mean"], s["accuracy_ci"])
            for s in summary if s["scheme"] in REFERENCES + ("noisy",)}
    by_snr, by_latency = {}, {}
    for s in summary:
        if s["scheme"] in REFERENCES + ("noisy",):
            continue
        name, snr = _curve_name(cfg, s), s["snr_db"]
        by_snr.setdefault(name, []).append((snr, s["accuracy_mean"], s["accuracy_ci"]))
        by_latency.setdefault(name, []).append((s["latency_s_mean"], s["accuracy_mean"], s["accuracy_ci"], f"{snr:g} dB"))
    if by_snr:
        line_plot(out / "accuracy_vs_snr.png", by_snr, snr_axis, "test accuracy",
                  "Federated DEFT: accuracy vs SNR (pilots, side information counted)", hlines=refs, note=note)
        line_plot(out / "accuracy_vs_latency.png", by_latency,
                  f"uplink latency over all rounds [s] at {cfg.channel.bandwidth_hz / 1e6:g} MHz (pilots and side "
                  f"information included)", "test accuracy", "Accuracy vs uplink latency (points labelled by SNR)",
                  logx=True, marker_only=True, hlines=refs, note=note)
    per_round, nmse_round, by_uses = {}, {}, {}
    for r in round_rows:
        snr = r["snr_db"]
        name = _curve_name(cfg, r) + ("" if r["scheme"] in REFERENCES + ("noisy",) else f" {snr:g} dB")
        if _measured(r["val_accuracy"]):
            per_round.setdefault(name, {}).setdefault(r["round"] + 1, []).append(r["val_accuracy"])
        if r["scheme"] not in REFERENCES and _measured(r["nmse"]):
            nmse_round.setdefault(name, {}).setdefault(r["round"] + 1, []).append(max(r["nmse"], 1e-12))
    for (name, key), point_rounds in _rounds_by_point(cfg, round_rows).items():
        spent = np.cumsum([r["channel_uses"] for r in point_rounds])
        for r, used in zip(point_rounds, spent):
            if _measured(r["val_accuracy"]) and used > 0:
                by_uses.setdefault(name, {}).setdefault(r["round"], []).append((used, r["val_accuracy"]))
    val_label = f"validation accuracy ({validation_texts(cfg)} texts)"
    rounds = list(range(1, cfg.federated.rounds + 1))
    if per_round:
        line_plot(out / "accuracy_per_round.png", {name: ci_points(v) for name, v in per_round.items()}, "round",
                  val_label, "Accuracy per round (validation)", note=note, xticks=rounds)
    if nmse_round:                   # positive and heavy-tailed: geometric mean, interval in log space
        line_plot(out / "nmse_per_round.png", {name: ci_points(v, log=True) for name, v in nmse_round.items()},
                  "round", "normalised aggregation MSE ||error||^2 / ||update||^2", "Aggregation error per round",
                  logy=True, xticks=rounds,
                  note=note.replace("mean and 95% CI", "geometric mean and 95% CI (log space)"))
    uses_curves = {name: [(float(np.median([u for u, _ in v])), *mean_ci([a for _, a in v])) for v in per.values()]
                   for name, per in by_uses.items()}
    if uses_curves:
        ideal = [s for s in summary if s["scheme"] == "ideal"]
        hl = {"ideal minus 1 point (target)": ideal[0]["val_accuracy_mean"] - EQUIVALENCE_MARGIN} if ideal else None
        line_plot(out / "accuracy_vs_channel_uses.png", uses_curves,
                  "cumulative uplink channel uses (payload + pilots + side information; median over seeds)",
                  val_label, "Equal quality: validation accuracy against channel uses spent", logx=True,
                  hlines=hl, note=note)


def validation_texts(cfg):
    """The number of validation texts each round is evaluated on: the first `federated.round_eval_examples` of
    the data recipe's validation split (0: all of it)."""
    d = cfg.data
    n = len(data_split(load_dataset(d.dataset).y, d.train_examples, d.test_examples, d.validation_fraction).val_rows)
    return min(n, cfg.federated.round_eval_examples or n)


def _rounds_by_point(cfg, round_rows):
    """{(curve name with SNR, point key): that point's rounds in order} for the radio schemes."""
    out = {}
    for r in round_rows:
        if r["scheme"] in REFERENCES:
            continue
        name = f"{_curve_name(cfg, r)} {r['snr_db']:g} dB"
        out.setdefault((name, tuple(str(r[k]) for k in POINT_KEY)), []).append(r)
    return {k: sorted(v, key=lambda r: r["round"]) for k, v in out.items()}


def _cells(s):
    """The printed table's cells of one summary row, in TABLE_COLUMNS order (text)."""
    ref = s["scheme"] in REFERENCES
    nan = math.isnan
    inf_or = lambda x, text, fmt: "" if nan(x) else text if math.isinf(x) else fmt(x)        # noqa: E731
    tost_text = (f"{s['tost']} [{s['tost_low']:+.3f}, {s['tost_high']:+.3f}]" if s["tost"] else "")
    return [s["scheme"], "-" if ref else s["link"], s["lora_aggregation"], str(s["num_rx_ant"] or "-"),
            "-" if ref else f"{s['snr_db']:.0f}", str(s["num_bits"] or "-"),
            f"{s['accuracy_mean']:.3f} +- {_ci(s['accuracy_ci'])}",
            "" if nan(s["vs_ideal_mean"]) else f"{s['vs_ideal_mean']:+.3f} +- {_ci(s['vs_ideal_ci'])}", tost_text,
            "" if nan(s["heard"]) else f"{s['heard']:.1f}",
            f"{s['channel_uses_mean']:,.0f}", inf_or(s["uses_per_heard"], "none heard", lambda x: f"{x:,.0f}"),
            "" if nan(s["overhead_share"]) else f"{100 * s['overhead_share']:.0f}%",
            f"{s['downlink_uses_mean']:,.0f}", f"{s['energy_mean']:,.0f}",
            "" if nan(s["reached"]) else f"{s['reached']:.2f}",
            inf_or(s["uses_to_target"], "not reached", lambda x: f"{x:,.0f}"),
            inf_or(s["accuracy_at_budget"], "none", lambda x: f"{x:.3f}")]


# (header, text width; a negative width aligns left) of the printed table, one per `_cells` entry
TABLE_COLUMNS = [("scheme", -12), ("link", -8), ("LoRA agg", -10), ("N", 3), ("SNR dB", 7), ("bits", 5),
                 ("test accuracy", 17), ("minus ideal (paired)", 22), ("TOST +-1pt [90% CI]", 32),
                 ("heard", 6), ("uplink uses", 13), ("per heard", 11), ("overhead", 9), ("downlink", 10), ("energy", 12), ("reached", 8),
                 ("uses to target", 15), ("val acc @ budget", 17)]


def summary(cfg, rows, round_rows=(), markdown=False):
    """The table per scheme, link, N, SNR and bit width: test accuracy (mean +- 95% CI), minus ideal (paired)
    with the TOST verdict at +-1 point and its 90% interval, uplink channel uses (the pilots' and side
    information's share), downlink uses, the devices' transmit energy [P x channel uses], how many seeds reach
    ideal minus 1 point on validation with the median uses to get there, and the median validation accuracy
    within `channel.use_budget` uplink uses; as aligned text, or as a Markdown table (`markdown`)."""
    s_rows = summary_rows(rows, round_rows, budget=cfg.channel.use_budget)
    n_seeds = max((s["n"] for s in s_rows), default=0)
    order = {name: i for i, name in enumerate(STUDY_SCHEMES)}
    table = [_cells(s) for s in sorted(s_rows, key=lambda s: (s["lora_aggregation"], order[s["scheme"]], s["link"],
                                                               s["num_rx_ant"], s["num_bits"],
                                                               s["snr_db"]))]
    heads = [h for h, _ in TABLE_COLUMNS]
    if markdown:
        right = ["---:" if w > 0 else "---" for _, w in TABLE_COLUMNS]
        body = ["| " + " | ".join(row) + " |" for row in [heads, right] + table]
    else:
        body = ["".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w) in zip(row, TABLE_COLUMNS))
                for row in [heads] + table]
    title = (f"Federated DEFT on {cfg.data.dataset} with {cfg.model.name} + {cfg.peft.method} (blocks "
             f"{cfg.peft.blocks}), K={cfg.federated.devices}, {cfg.federated.rounds} rounds x "
             f"{cfg.federated.local_steps} local steps, mode {cfg.federated.mode}, channel {cfg.channel.model} (SNR: "
             f"the mean over the devices); mean +- 95% CI over {n_seeds} seed(s); accuracy on the test split")
    notes = ["heard: devices whose update reached the server per round (mean); uplink uses: payload + pilots + "
             "side information over all rounds (overhead: the last two's share); per heard: uplink uses per device "
             "heard in a round (pooled over seeds); energy: the devices' transmit "
             "energy over all rounds [P x channel uses]; reached: seeds whose validation accuracy reaches ideal "
             "minus 1 point; uses to target: their lower-median uplink uses (never-reaching seeds counted as "
             "infinite); TOST: paired equivalence with ideal within 1 point ('not shown' is no evidence of a "
             "difference); val acc @ budget: the lower-median seed's validation accuracy after the last round "
             f"within {cfg.channel.use_budget:,.0f} uplink uses ('none': no round fits)"]
    if len(cfg.digital.num_bits) > 1 and not cfg.tuning.digital_num_bits:
        notes.append(_cheapest_line(s_rows))
    notes += _settings_lines(cfg, rows)
    if cfg.model.name == "random-bert":
        notes.append("(random-bert: a randomly initialised model; accuracies are not meaningful)")
    if markdown:                                   # a paragraph, the table, the notes as a list
        return "\n".join([title, "", *body, "", *(f"- {n.strip()}" for n in notes)])
    return "\n".join([title, *body, *notes])


def _cheapest_line(s_rows):
    chosen, parts = cheapest_widths(s_rows), []
    for key in sorted({_width_key(s) for s in s_rows if s["scheme"] == "digital"}):
        _, link, n, snr = key
        c = chosen.get(key)
        parts.append(f"{link} N={n} {snr:g} dB: " + (f"{c['num_bits']} bits ({c['uses_to_target']:,.0f} uses)"
                                                     if c else "no width reaches it"))
    return ("digital's cheapest width, descriptive (the fewest uplink uses for the lower-median reported seed to "
            "reach ideal minus 1 point on validation; read on the reported seeds, so biased low): " + "; ".join(parts))


def _settings_lines(cfg, rows):
    """The values the reported points used (results.csv's lr and setting columns): per LoRA variant the learning
    rates, OBDA's threshold and server_lr, AirComp's admission threshold, digital's chosen width, the noisy
    control's NMSE."""
    t = cfg.tuning
    how = lambda grid: "chosen" if grid else "configured"                      # noqa: E731
    lines = [f"values used: 'chosen' on validation (the highest final validation accuracy on tuning seeds {t.seeds};"
             f" every candidate in tuning.csv, the choices in chosen.json) or 'configured' (empty grid: not tuned):"]
    for agg in cfg.federated.lora_aggregation:
        seen = {}
        for r in rows:
            if r["lora_aggregation"] != agg:
                continue
            if r["scheme"] == "centralised":
                seen.setdefault("centralised_lr", f"centralised_lr {r['lr']:g} ({how(t.centralised_lr)})")
            elif r["scheme"] in t.arm_lr:
                seen.setdefault(("lr", r["scheme"], r["link"], r["num_rx_ant"], r["snr_db"]),
                                f"{r['scheme']} {r['link']} N={r['num_rx_ant']} {r['snr_db']:g} dB: lr "
                                f"{r['lr']:g} (chosen on its own)")
            else:
                seen.setdefault("lr", f"federated.lr {r['lr']:g} ({how(t.lr)})")
            extra = json.loads(r["setting"] or "{}")
            if r["scheme"] == "obda":
                seen.setdefault(("obda", r["link"], r["num_rx_ant"], r["snr_db"]),
                                f"obda {r['link']} N={r['num_rx_ant']} {r['snr_db']:g} dB: threshold "
                                f"{extra['threshold']:g} ({how(t.obda_threshold)}), server_lr {extra['server_lr']:g} "
                                f"({how(t.obda_server_lr)})")
            if r["scheme"] == "digital" and t.digital_num_bits:
                seen.setdefault(("digital", r["link"], r["num_rx_ant"], r["snr_db"]),
                                f"digital {r['link']} N={r['num_rx_ant']} {r['snr_db']:g} dB: {r['num_bits']} "
                                f"bits (chosen)")
            if r["scheme"] == "aircomp" and "admit_snr_db" in extra:
                seen.setdefault(("aircomp", r["link"], r["num_rx_ant"], r["snr_db"]),
                                f"aircomp {r['link']} N={r['num_rx_ant']} {r['snr_db']:g} dB: admit_snr_db "
                                f"{extra['admit_snr_db']:g} ({how(t.aircomp_admit_snr_db)})")
            if r["scheme"] == "noisy":
                seen.setdefault(("noisy", r["link"], r["num_rx_ant"]), f"noisy = {_noisy_name(r)} ({r['link']}, "
                                                                     f"N={r['num_rx_ant']}): NMSE {extra['nmse']:.4g}")
        lines.append(f"  [{agg}] " + "; ".join(seen.values()))
    if t.digital_num_bits:
        lines.append(f"digital's width: of {t.digital_num_bits}, the fewest uplink uses whose tuning run reaches the "
                     f"ideal reference's validation accuracy minus 1 point (none does: the first listed)")
    return lines


def _ci(x):
    return "  nan" if math.isnan(x) else f"{x:.3f}"
