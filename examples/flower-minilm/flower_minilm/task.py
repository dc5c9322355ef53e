"""What the ServerApp and the ClientApp share: one `deft6g study` point read from the run config, the study's own
data and model setup (the same split, cached activations and seeded initialisation; built once per process) and
the point's `FederatedDEFT`, whose `local_update` is each client's training (the study's code, not a copy)."""

import functools
import json
import math

import numpy as np

from deft6g.benchmarks.study import FederatedStudy, point_federation, point_setting
from deft6g.benchmarks.study_config import load_config

SCHEMES = ("ideal", "aircomp", "digital", "obda")


def run_point(run_config):
    """(StudyConfig, point dict of the study's POINT_KEY, setting {"lr", ...}) of the run config's keys
    study-config ("" : the default), quick, scheme, snr-db, num-rx-ant, link, num-bits, lora-aggregation, seed
    and lr (0: the configuration's federated.lr; the study's tuning stage may have chosen another: pass it).
    Raises ValueError naming the key the app cannot follow."""
    rc = run_config
    cfg = load_config(str(rc["study-config"]) or None, bool(rc["quick"]))
    f, scheme = cfg.federated, str(rc["scheme"])
    for ok, key, why in ((scheme in SCHEMES, "scheme", f"one of {SCHEMES}, got {scheme!r}"),
                         (f.mode != "gradient", "federated.mode", "'emulator' or 'full' (split training keeps the "
                                                                   "head at the server)"),
                         (f.server_optimizer == "fedavg" and f.server_lr == 1.0, "federated.server_optimizer",
                          "'fedavg' with server_lr 1 (Flower's FedAvg step)"),
                         (not f.stateful_clients, "federated.stateful_clients", "false (clients keep no optimiser state)"),
                         (not f.clients_per_round, "federated.clients_per_round", "0 (use fraction: Flower samples)")):
        if not ok:
            raise ValueError(f"`{key}` must be {why}")
    agg = str(rc["lora-aggregation"]) or f.lora_aggregation[0]
    if agg == "delta_w":
        raise ValueError("`lora-aggregation` 'delta_w' merges residuals into the server's kernels: not in this app")
    ideal = scheme == "ideal"
    point = {"scheme": scheme, "snr_db": math.inf if ideal else float(rc["snr-db"]),
             "num_rx_ant": 0 if ideal else int(rc["num-rx-ant"]), "link": "none" if ideal else str(rc["link"]),
             "num_bits": int(rc["num-bits"]) if scheme == "digital" else 0, "lora_aggregation": agg,
             "seed": int(rc["seed"])}
    setting = point_setting(cfg, {}, point)
    if float(rc["lr"]) > 0:
        setting["lr"] = float(rc["lr"])
    return cfg, point, setting


@functools.lru_cache(maxsize=2)
def _setup(cfg_json):
    from deft6g.benchmarks.study_config import build_config
    return FederatedStudy(print).setup(build_config(json.loads(cfg_json)))


def study_setup(cfg):
    """The study's `_Setup` of `cfg` (data, models, activations cached on disk under DEFT6G_CACHE), once per process."""
    return _setup(json.dumps(cfg.to_dict(), sort_keys=True))


def federation(cfg, point, setting):
    """(setup, the point's FederatedDEFT) as `deft6g study` builds them: PEFT weights reset to the point's seed, the
    study's partition of the training split over federated.devices devices, each device's seeded batch stream.
    Its aggregator is unused (the server's ChannelFedAvg aggregates)."""
    setup = study_setup(cfg)
    return setup, point_federation(setup, point, setting, None)


def mean_step_loss(records, weighting_key):
    """The round's train metrics as the study logs its loss: the mean over every local step of every client
    ("train_loss" x "steps" summed over the replies / steps), and the examples (`weighting_key`) summed."""
    from flwr.app import MetricRecord
    metrics = [next(iter(r.metric_records.values())) for r in records]
    steps = np.array([float(m["steps"]) for m in metrics])
    loss = float(np.dot(steps, [float(m["train_loss"]) for m in metrics]) / steps.sum()) if steps.sum() else math.nan
    return MetricRecord({"train_loss": loss, weighting_key: int(sum(int(m[weighting_key]) for m in metrics))})
