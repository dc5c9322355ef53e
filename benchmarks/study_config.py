"""The configuration of `deft6g study`: an embedded default, TOML files, validation before any work starts."""

from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace

from deft6g.deprecation import module_aliases
from deft6g.experiment.config import (MAX_SEED, ConfigError, check_fields, read_toml, require, require_int,
                                     require_positive)
from deft6g.finetune import LOCAL_OPTIMIZERS, LORA_AGGREGATIONS, SERVER_OPTIMIZERS
from deft6g.finetune.peft.data import DATASETS, PARTITIONS
from deft6g.optim import METHODS
from deft6g.phy import CHANNEL_MODELS


STUDY_PEFT_METHODS = ("lora", "adapter", "prompt", "bitfit")     # peft.method: the study's short names
# schemes: the centralised reference, then deft6g.finetune.SCHEMES (the aggregators) in the tables' order
STUDY_SCHEMES = ("centralised", "ideal", "aircomp", "digital", "obda", "noisy")
LINKS = ("counted", "genie")
MODES = ("emulator", "full", "gradient")
# the names before 0.1.0 (they read like deft6g.finetune.SCHEMES / PEFT_METHODS, which differ)
RENAMED = {"SCHEMES": "STUDY_SCHEMES", "PEFT_METHODS": "STUDY_PEFT_METHODS"}
__getattr__ = module_aliases(__name__, {**RENAMED, "load_flat_config": "deft6g.experiment.load_flat_config"})
# per model name: (max_position_embeddings, hidden size): tokens per text, LoRA rank and adapter width are bounded
# by them (MiniLM's packaged config.json; random-bert is built with 512 positions and BERT's small hidden size 64)
MODEL_LIMITS = {"all-MiniLM-L6-v2": (512, 384), "random-bert": (512, 64)}
NUM_BLOCKS = 6                                        # both models have 6 blocks
# the block-relative BERT projections LoRA's target_modules may name (by a suffix of whole name parts)
BERT_PROJECTIONS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                    "intermediate.dense", "output.dense")


@dataclass
class ModelSection:
    """name: the packaged pretrained "all-MiniLM-L6-v2", or "random-bert" (a random 6-block BERT of hidden
    size 64 with the MiniLM tokenizer, for smoke tests; results say so); max_length: tokens per text."""
    name: str = "all-MiniLM-L6-v2"
    max_length: int = 48


@dataclass
class PeftSection:
    """method; size: rank / width / prompt length in every tuned block; blocks: the tuned blocks;
    lora_alpha, target_modules (LoRA)."""
    method: str = "lora"
    size: int = 8
    blocks: list[int] = field(default_factory=lambda: [5])
    lora_alpha: float = 16.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])


@dataclass
class DataSection:
    """dataset; train_examples / test_examples: how many of the seeded 80/20 split to use (0: all of it);
    validation_fraction: the stratified share of the training split held out as validation (per-round curves
    and every choice use it; the test split only gives the final accuracy); partition across devices ("iid",
    "dirichlet" with alpha, "shards")."""
    dataset: str = "rotten_tomatoes"
    train_examples: int = 0
    test_examples: int = 0
    validation_fraction: float = 0.1
    partition: str = "iid"
    alpha: float = 0.5


@dataclass
class FederatedSection:
    """mode: "full" (devices hold the full model), "emulator" (devices tune on a layer-dropped emulator, the
    server plugs the weights into the full model), "gradient" (split fine-tuning at cut_block); devices K;
    rounds; local_steps per round; batch_size; local_optimizer ("adam" or "sgd") with lr; stateful_clients:
    each device keeps its optimiser state (Adam's moments and step) across rounds, or (default) the state is
    reset every round, as stateless federated clients are; fraction of the devices sampled per round (seeded) or clients_per_round
    (0: use fraction), FedAvg and the link over the sampled devices; centralised_lr: the reference's learning rate; server_optimizer ("fedavg" with server_lr, or "fedadam"); lora_aggregation: a list of "factors",
    "frozen_a", "delta_w" (one study point each); eval_every: rounds between the per-round evaluations, which
    use round_eval_examples texts of the validation split (0: all of it; the final test accuracy uses the
    whole test split);
    emulator_bottom / emulator_top / emulator_drop; cut_block; jit_compile: XLA-compile the local step and the
    evaluation (about 13 % faster per point once compiled; numbers move by ~1e-7 relative)."""
    mode: str = "full"
    devices: int = 8
    rounds: int = 10
    local_steps: int = 4
    batch_size: int = 32
    local_optimizer: str = "adam"
    stateful_clients: bool = False
    fraction: float = 1.0
    clients_per_round: int = 0
    lr: float = 1e-2
    centralised_lr: float = 3e-3
    server_optimizer: str = "fedavg"
    server_lr: float = 1.0
    lora_aggregation: list[str] = field(default_factory=lambda: ["factors"])
    eval_every: int = 1
    round_eval_examples: int = 512
    emulator_bottom: int = 1
    emulator_top: int = 1
    emulator_drop: float = 0.5
    cut_block: int = 0
    jit_compile: bool = True


@dataclass
class ChannelSection:
    """model (deft6g.phy.CHANNEL_MODELS; the drop models "umi", "uma", "rma" keep each seed's drop of the
    devices across rounds, near and far, and redraw the small-scale fading every round: snr_db is then the
    drop's mean SNR); num_rx_ant N (a list: one study point per N); snr_db grid (P / sigma^2 per device);
    links: "counted" (CSI from tau = num_pilots pilots at the link's SNR, side information and downlink over the
    link, all counted) and/or "genie" (perfect CSI, or the explicit csi_error variance; free side information
    and downlink: a labelled bound); num_pilots (0: K); downlink_offset_db: downlink SNR minus uplink SNR;
    method (deft6g.optim.METHODS) designed every round; select_devices with mse_target; bandwidth_hz converts
    channel uses to latency [s]; use_budget: the fixed total of uplink channel uses (payload + pilots + side
    information, all rounds) within which every scheme's validation accuracy is compared; admit_snr_db: AirComp's
    admission threshold on a device's mean SNR [dB] (snr_db plus its large-scale gain): a device below it stays
    silent that round (pilots only), the weights renormalised over the rest; the default -100 admits every device
    the control link can reach (its lowest entry, 1,024 repetitions, needs about -31 dB); num_subcarriers (OFDM
    models: TDL, CDL, UMi/UMa/RMa)."""
    model: str = "umi"
    links: list[str] = field(default_factory=lambda: ["counted"])
    num_pilots: int = 0
    downlink_offset_db: float = 0.0
    num_rx_ant: list[int] = field(default_factory=lambda: [2])
    snr_db: list[float] = field(default_factory=lambda: [-30.0, -10.0, 0.0])
    method: str = "sdr"
    csi_error: float = 0.0
    select_devices: bool = False
    mse_target: float = 0.1
    bandwidth_hz: float = 1e6
    use_budget: float = 1e6
    admit_snr_db: float = -100.0
    num_subcarriers: int = 8


@dataclass
class DigitalSection:
    """The digital baseline (MU-MIMO LMMSE, adaptive MCS, CRC; `deft6g.finetune.DigitalAggregator`):
    snr_db, its own SNR grid (empty: channel.snr_db); mcs "adaptive" (per device from its post-detection
    SINR) or "fixed"; detector "lmmse" or "zf"; num_bits: the quantiser's bits per real (a list: one point
    per width, 1..16; widths below 8 round stochastically, unbiased); QAM bits per symbol, LDPC code rate and
    decoder iterations where the MCS is fixed (bit-true decoding)."""
    snr_db: list[float] = field(default_factory=lambda: [-10.0, 0.0, 10.0])
    mcs: str = "adaptive"
    detector: str = "lmmse"
    num_bits: list[int] = field(default_factory=lambda: [8])
    num_bits_per_symbol: int = 2
    code_rate: float = 0.5
    num_iter: int = 10


@dataclass
class ObdaSection:
    """One-bit over-the-air aggregation (`deft6g.finetune.OBDAAggregator`): snr_db, its own SNR grid (empty:
    channel.snr_db); threshold: truncation threshold on the effective gain (linear); server_lr: the step of the
    sign update."""
    snr_db: list[float] = field(default_factory=list)
    threshold: float = 0.1
    server_lr: float = 0.02


@dataclass
class TuningSection:
    """The choices made on the validation split before the reported points (`deft6g.experiment.tune`: the
    highest mean final validation accuracy over `seeds`, ties to the first value listed; tuning.csv and
    chosen.json). Per LoRA aggregation variant: lr (federated.lr, chosen with ideal aggregation, used by every
    federated scheme), centralised_lr (chosen with the centralised reference); obda_threshold x obda_server_lr
    (their product, chosen with the obda scheme per link and N at each SNR of obda_snr_db; an OBDA point uses
    the choice at the nearest of them, the lower one on a tie); aircomp_admit_snr_db (channel.admit_snr_db, chosen
    with the aircomp scheme per link and N at each SNR of aircomp_snr_db, which must then list every AirComp SNR:
    the threshold is an absolute SNR); digital_num_bits (the quantiser width of every digital point, replacing
    digital.num_bits: per link, N and SNR of the digital grid, the width with the fewest mean uplink channel uses
    among those whose final validation accuracy reaches the ideal reference's (mean over the tuning seeds) minus
    the equivalence margin on every tuning seed; no width reaches it: the first listed, so list the widest first); arm_lr: radio schemes
    ("aircomp", "digital", "obda") whose device learning rate is chosen on their own, from the lr grid, per
    link and N at each SNR of arm_lr_snr_db (a point uses the nearest, the lower on a tie), before that arm's
    other settings, which then use it (the other schemes keep the lr chosen with ideal). An empty list
    keeps the configured value (not tuned, recorded as such). seeds: the tuning runs' seeds (default 1000, a seed no default run reports)."""
    seeds: list[int] = field(default_factory=lambda: [1000])
    lr: list[float] = field(default_factory=lambda: [1e-2, 3e-3, 3e-2])
    centralised_lr: list[float] = field(default_factory=lambda: [3e-3, 1e-3, 1e-2])
    obda_threshold: list[float] = field(default_factory=lambda: [0.1, 0.03, 0.3])
    obda_server_lr: list[float] = field(default_factory=lambda: [0.02, 0.01, 0.04])
    obda_snr_db: list[float] = field(default_factory=lambda: [0.0])
    aircomp_admit_snr_db: list[float] = field(default_factory=list)
    aircomp_snr_db: list[float] = field(default_factory=lambda: [0.0])
    digital_num_bits: list[int] = field(default_factory=list)
    arm_lr: list[str] = field(default_factory=list)
    arm_lr_snr_db: list[float] = field(default_factory=lambda: [0.0])


@dataclass
class StudyConfig:
    """schemes: "centralised" (the same PEFT trained on the union of the devices' data, as many samples),
    "ideal", "aircomp", "digital", "obda", "noisy" (the control: ideal aggregation plus Gaussian noise at the
    NMSE AirComp measured at its lowest SNR, mean over its seeds, per N and link; needs "aircomp"); seeds: one
    run per seed and point (each changes initialisation, partition, batches, channels and noise). The default
    leaves the centralised bound out (configs/paper.toml runs it), to keep the main job's run time."""
    schemes: list[str] = field(default_factory=lambda: ["ideal", "aircomp", "digital"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: ModelSection = field(default_factory=ModelSection)
    peft: PeftSection = field(default_factory=PeftSection)
    data: DataSection = field(default_factory=DataSection)
    federated: FederatedSection = field(default_factory=FederatedSection)
    channel: ChannelSection = field(default_factory=ChannelSection)
    digital: DigitalSection = field(default_factory=DigitalSection)
    obda: ObdaSection = field(default_factory=ObdaSection)
    tuning: TuningSection = field(default_factory=TuningSection)

    def to_dict(self):
        return asdict(self)


QUICK = {"schemes": ["centralised", "ideal", "aircomp", "digital"],        # every path, the bound included
         "seeds": [0, 1],
         "data": {"train_examples": 256, "test_examples": 128},
         "federated": {"devices": 4, "rounds": 2, "local_steps": 2, "batch_size": 8, "eval_every": 1,
                       "jit_compile": False},       # compiling costs more than it saves on two rounds
         "channel": {"snr_db": [0.0, 20.0]}, "digital": {"snr_db": []}}


def _section_types():
    return {f.name: f.type for f in fields(StudyConfig) if is_dataclass(f.type)}


def build_config(overrides=None):
    """StudyConfig from nested dicts of overrides ({"channel": {"snr_db": [...]}, "seeds": [...]}).
    Unknown sections or keys raise ConfigError naming them; values are checked by `validate`."""
    overrides = {} if overrides is None else overrides
    if not isinstance(overrides, dict):
        raise TypeError(f"`overrides` must be a dict of sections and keys, got {type(overrides).__name__}")
    cfg = StudyConfig()
    sections = _section_types()
    for key, value in overrides.items():
        if key in ("schemes", "seeds"):
            cfg = replace(cfg, **{key: list(value) if isinstance(value, tuple) else value})
            continue
        if key not in sections:
            raise ConfigError(f"unknown configuration key {key!r}; known: {sorted(list(sections) + ['schemes', 'seeds'])}")
        if not isinstance(value, dict):
            raise ConfigError(f"configuration key {key!r} must be a table (section), got {value!r}")
        known = {f.name for f in fields(sections[key])}
        bad = sorted(set(value) - known, key=str)
        if bad:
            raise ConfigError(f"unknown configuration key {key}.{bad[0]!r}; known in [{key}]: {sorted(known)}")
        if key == "digital" and isinstance(value.get("num_bits"), int) and not isinstance(value["num_bits"], bool):
            value = {**value, "num_bits": [value["num_bits"]]}      # one width, as before the width sweep
        cfg = replace(cfg, **{key: replace(getattr(cfg, key), **value)})
    validate(cfg)
    return cfg


def load_config(path=None, quick=False):
    """The default configuration, updated by a TOML file at `path` (if any) and by the quick settings.
    A file that cannot be read, is no TOML or holds a refused value raises ConfigError."""
    overrides = {}
    if quick:
        overrides = {k: dict(v) if isinstance(v, dict) else v for k, v in QUICK.items()}
    if path is not None:
        user = read_toml(path)
        for key, value in user.items():
            if isinstance(value, dict) and isinstance(overrides.get(key), dict):
                overrides[key] = {**overrides[key], **value}
            else:
                overrides[key] = value
    return build_config(overrides)


def validate(cfg):
    """Check every value of the StudyConfig `cfg` (types, names, ranges, grids, how keys combine) before any
    work starts; returns `cfg`. Errors are ConfigError (a ValueError) naming the key."""
    if not isinstance(cfg, StudyConfig):
        raise TypeError(f"`cfg` must be a StudyConfig, got {type(cfg).__name__}")
    check_fields(cfg)
    require(cfg.schemes and set(cfg.schemes) <= set(STUDY_SCHEMES), "schemes",
            f"must be a non-empty list from {STUDY_SCHEMES}, got {cfg.schemes!r}")
    require(cfg.seeds, "seeds", "must be a non-empty list of integers")
    for s in cfg.seeds:
        require_int(s, "seeds", 0, MAX_SEED)
    m, p, d, f, c, g = cfg.model, cfg.peft, cfg.data, cfg.federated, cfg.channel, cfg.digital
    require(m.name in MODEL_LIMITS, "model.name", f"must be one of {sorted(MODEL_LIMITS)}, got {m.name!r}")
    positions, hidden = MODEL_LIMITS[m.name]
    require_int(m.max_length, "model.max_length", 2, positions)
    require(p.method in STUDY_PEFT_METHODS, "peft.method", f"must be one of {STUDY_PEFT_METHODS}, got {p.method!r}")
    size_limit = {"lora": hidden, "adapter": hidden, "prompt": positions - m.max_length}.get(p.method)  # bitfit: unused
    require(1 <= p.size <= (size_limit or p.size), "peft.size",
            f"must be in [1, {size_limit}] for {p.method!r} with {m.name!r} (LoRA rank and adapter width: at most "
            f"the hidden size; prompt tokens: at most max_position_embeddings - model.max_length), got {p.size}")
    require(p.blocks and all(0 <= b < NUM_BLOCKS for b in p.blocks), "peft.blocks",
            f"must list block indices in [0, {NUM_BLOCKS}), got {p.blocks!r}")
    require_positive(p.lora_alpha, "peft.lora_alpha")
    names = [f"encoder.layer.{i}.{r}" for i in range(NUM_BLOCKS) for r in BERT_PROJECTIONS]   # as LoraConfig.targets
    unmatched = [t for t in p.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    require(p.target_modules and not unmatched, "peft.target_modules",
            f"must be a non-empty list of BERT module-name suffixes (of {BERT_PROJECTIONS}, e.g. 'query' or "
            f"'dense'), got {p.target_modules!r}" + (f": {unmatched} match none" if unmatched else ""))
    require(d.dataset in DATASETS and DATASETS[d.dataset][2] == "text", "data.dataset",
            f"must be a text dataset of {sorted(k for k, v in DATASETS.items() if v[2] == 'text')}, got {d.dataset!r}")
    require_int(d.train_examples, "data.train_examples", 0)
    require_int(d.test_examples, "data.test_examples", 0)
    require(d.partition in PARTITIONS, "data.partition", f"must be one of {PARTITIONS}, got {d.partition!r}")
    require_positive(d.alpha, "data.alpha")
    require(f.mode in MODES, "federated.mode", f"must be one of {MODES}, got {f.mode!r}")
    require_int(f.devices, "federated.devices", 1)
    require(0 < f.fraction <= 1, "federated.fraction", f"must be in (0, 1], got {f.fraction}")
    require_int(f.clients_per_round, "federated.clients_per_round", 0, f.devices)
    require(not (f.clients_per_round and f.fraction != 1), "federated.clients_per_round",
            f"sets the devices per round, as federated.fraction = {f.fraction} does: give one of them")
    require(not d.train_examples or f.devices <= d.train_examples, "federated.devices",
            "must not exceed data.train_examples")
    for key in ("rounds", "local_steps", "batch_size", "eval_every"):
        require_int(getattr(f, key), f"federated.{key}", 1)
    require_int(f.round_eval_examples, "federated.round_eval_examples", 0)
    for key in ("lr", "centralised_lr", "server_lr"):
        require_positive(getattr(f, key), f"federated.{key}")
    require(f.local_optimizer in LOCAL_OPTIMIZERS, "federated.local_optimizer",
            f"must be one of {LOCAL_OPTIMIZERS}, got {f.local_optimizer!r}")
    require(f.server_optimizer in SERVER_OPTIMIZERS, "federated.server_optimizer",
            f"must be one of {tuple(SERVER_OPTIMIZERS)}, got {f.server_optimizer!r}")
    require(f.lora_aggregation and set(f.lora_aggregation) <= set(LORA_AGGREGATIONS), "federated.lora_aggregation",
            f"must be a non-empty list from {LORA_AGGREGATIONS}, got {f.lora_aggregation!r}")
    require(p.method == "lora" or f.lora_aggregation == ["factors"], "federated.lora_aggregation",
            f"'frozen_a' and 'delta_w' need peft.method 'lora'; use ['factors'] for {p.method!r}")
    require("delta_w" not in f.lora_aggregation or "aircomp" not in cfg.schemes, "federated.lora_aggregation",
            "'delta_w' needs each device's factors, which AirComp (a sum) does not deliver; drop 'aircomp' or 'delta_w'")
    require("delta_w" not in f.lora_aggregation or f.mode != "emulator", "federated.lora_aggregation",
            "'delta_w' merges into the devices' frozen kernels, which the emulator plug-in does not carry over")
    require("delta_w" not in f.lora_aggregation or (f.server_optimizer == "fedavg" and f.server_lr == 1.0),
            "federated.lora_aggregation", "'delta_w' is exact only with server_optimizer 'fedavg' and server_lr 1")
    require_int(f.emulator_bottom, "federated.emulator_bottom", 0, NUM_BLOCKS - 1)
    require_int(f.emulator_top, "federated.emulator_top", 1, NUM_BLOCKS)
    require(f.emulator_bottom + f.emulator_top <= NUM_BLOCKS, "federated.emulator_top",
            f"emulator_bottom + emulator_top must be <= {NUM_BLOCKS}")
    require(0.0 <= f.emulator_drop <= 1.0, "federated.emulator_drop", f"must be in [0, 1], got {f.emulator_drop}")
    if f.mode == "emulator":
        require(min(p.blocks) >= NUM_BLOCKS - f.emulator_top or max(p.blocks) < f.emulator_bottom,
                "peft.blocks", "tuned blocks must lie in the emulator's kept top (or bottom) blocks")
    if f.mode == "gradient":
        require_int(f.cut_block, "federated.cut_block", 1)
        require(max(p.blocks) < f.cut_block <= NUM_BLOCKS, "federated.cut_block",
                f"must lie above every tuned block {p.blocks} and be <= {NUM_BLOCKS}, got {f.cut_block}")
    require(c.model in CHANNEL_MODELS, "channel.model", f"must be one of {CHANNEL_MODELS}, got {c.model!r}")
    require(c.num_rx_ant, "channel.num_rx_ant", "must be a non-empty list")
    for n in c.num_rx_ant:
        require_int(n, "channel.num_rx_ant", 1)
    require(c.snr_db, "channel.snr_db", "must be a non-empty list of finite numbers")
    require(c.method in METHODS, "channel.method", f"must be one of {METHODS}, got {c.method!r}")
    require(c.csi_error >= 0, "channel.csi_error", f"must be >= 0, got {c.csi_error}")
    require_positive(c.mse_target, "channel.mse_target")
    require_positive(c.bandwidth_hz, "channel.bandwidth_hz")
    require_positive(c.use_budget, "channel.use_budget")
    require_int(c.num_subcarriers, "channel.num_subcarriers", 1)
    require(not (c.select_devices and c.model not in ("rayleigh", "correlated")), "channel.select_devices",
            "device selection needs a flat channel model (rayleigh or correlated)")
    require(g.mcs in ("adaptive", "fixed"), "digital.mcs", f"must be 'adaptive' or 'fixed', got {g.mcs!r}")
    require(g.detector in ("lmmse", "zf"), "digital.detector", f"must be 'lmmse' or 'zf', got {g.detector!r}")
    require(g.num_bits, "digital.num_bits", "must be a non-empty list of bit widths")
    for b in g.num_bits:
        require_int(b, "digital.num_bits", 1, 16)
    require(c.links and set(c.links) <= set(LINKS), "channel.links",
            f"must be a non-empty list from {LINKS}, got {c.links!r}")
    require(c.csi_error == 0 or c.links == ["genie"], "channel.csi_error",
            "an explicit CSI error variance replaces the pilots: it needs channel.links = ['genie']")
    require(c.num_pilots == 0 or c.num_pilots >= f.devices, "channel.num_pilots",
            f"must be 0 (K pilots) or >= federated.devices = {f.devices} (orthogonal pilots), got {c.num_pilots}")
    require(c.num_pilots >= 0, "channel.num_pilots", f"must be >= 0, got {c.num_pilots}")
    require(0 < d.validation_fraction <= 0.5, "data.validation_fraction",
            f"must be in (0, 0.5], got {d.validation_fraction}")
    o = cfg.obda
    require(o.threshold >= 0, "obda.threshold", f"must be >= 0, got {o.threshold}")
    require_positive(o.server_lr, "obda.server_lr")
    require("noisy" not in cfg.schemes or "aircomp" in cfg.schemes, "schemes",
            "'noisy' adds noise at the NMSE AirComp measured at its lowest SNR: it needs 'aircomp' too")
    t = cfg.tuning
    require(t.seeds, "tuning.seeds", "must be a non-empty list of integers")
    for s in t.seeds:
        require_int(s, "tuning.seeds", 0, MAX_SEED)
    require(not set(t.seeds) & set(cfg.seeds), "tuning.seeds",
            f"must not share a seed with the reported seeds (a reported run would be the tuning's winner, its "
            f"validation accuracy the best of the grid), shared: {sorted(set(t.seeds) & set(cfg.seeds))}")
    for key in ("lr", "centralised_lr", "obda_server_lr"):
        for v in getattr(t, key):
            require_positive(v, f"tuning.{key}")
    for v in t.obda_threshold:
        require(v >= 0, "tuning.obda_threshold", f"must list values >= 0, got {v}")
    require(set(t.arm_lr) <= {"aircomp", "digital", "obda"} and len(set(t.arm_lr)) == len(t.arm_lr),
            "tuning.arm_lr", f"must list radio schemes among 'aircomp', 'digital', 'obda', once each, got {t.arm_lr}")
    require(not t.arm_lr or t.lr, "tuning.arm_lr", "needs the lr grid (tuning.lr) to choose from; it is empty")
    require(t.arm_lr_snr_db, "tuning.arm_lr_snr_db", "must be a non-empty list of finite numbers")
    for b in t.digital_num_bits:
        require_int(b, "tuning.digital_num_bits", 1, 16)
    require(len(set(t.digital_num_bits)) == len(t.digital_num_bits), "tuning.digital_num_bits",
            f"must not repeat a width, got {t.digital_num_bits}")
    require(t.obda_snr_db, "tuning.obda_snr_db", "must be a non-empty list of finite numbers")
    require(t.aircomp_snr_db, "tuning.aircomp_snr_db", "must be a non-empty list of finite numbers")
    require(not t.aircomp_admit_snr_db or "aircomp" not in cfg.schemes or set(c.snr_db) <= set(t.aircomp_snr_db),
            "tuning.aircomp_snr_db", f"must list every AirComp SNR {c.snr_db} when tuning.aircomp_admit_snr_db is "
            f"tuned: the admission threshold is an absolute SNR, so a choice made at one SNR does not carry to "
            f"another (got {t.aircomp_snr_db})")
    require_int(g.num_bits_per_symbol, "digital.num_bits_per_symbol", 1)
    require(0 < g.code_rate < 1, "digital.code_rate", f"must be in (0, 1), got {g.code_rate}")
    require_int(g.num_iter, "digital.num_iter", 1)
    return cfg
