"""deft6g.flower inside a real Flower simulation (Flower's Ray simulation engine, 8 NumPy clients): the ideal
strategy equals Flower's FedAvg, AirComp's measured error matches deft6g.phy's closed form, rounds with fewer
sampled clients work, and the TensorBoard events hold the round metrics. One simulation runs every strategy in
turn (one Ray start, about a minute on 2 cores). Then the example app examples/flower-minilm (LoRA on the packaged
MiniLM) reproduces `deft6g study`'s ideal run."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

flwr = pytest.importorskip("flwr", reason="Flower is not installed: pip install 'deft6g[flower]'")

import sys  # noqa: E402

# Flower's simulation engine (Ray, which brings cloudpickle) ships the client app to its workers
cloudpickle = pytest.importorskip("cloudpickle", reason="Flower's simulation extra is not installed: pip install "
                                                        "'deft6g[flower]'")
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from deft6g.flower import CHANNEL_METRICS, ChannelFedAvg  # noqa: E402
from deft6g.optim import design_aircomp  # noqa: E402
from deft6g.phy import aircomp_mse, payload_correlation, pilot_channel_uses  # noqa: E402

NUM_CLIENTS, D_IN, D_OUT, ROUNDS = 8, 64, 32, 3          # L = 64 x 32 + 32 = 2080 reals per update

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the workers need not import this file

client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context):
    """Two full-batch gradient steps of least squares on the client's own data (20 + 5 p examples)."""
    p = int(context.node_config["partition-id"])
    rng = np.random.default_rng(100 + p)
    n = 20 + 5 * p
    x = rng.normal(size=(n, D_IN)).astype(np.float32)
    y = (x @ rng.normal(size=(D_IN, D_OUT)) + p).astype(np.float32)
    arrays = msg.content["arrays"]
    w, b = arrays["w"].numpy().copy(), arrays["b"].numpy().copy()
    for _ in range(2):
        r = x @ w + b - y
        w, b = w - 0.05 * x.T @ r / n, b - 0.05 * r.mean(0)
    loss = float(np.mean((x @ w + b - y) ** 2))
    reply = RecordDict({"arrays": ArrayRecord({"w": Array(w.astype(np.float32)), "b": Array(b.astype(np.float32))}),
                        "metrics": MetricRecord({"train_loss": loss, "num-examples": n, "partition-id": p})})
    return Message(content=reply, reply_to=msg)


class Recording(ChannelFedAvg):
    """The real strategy, also keeping each round's aggregator inputs and result (to re-derive them)."""

    def aggregate_updates(self, updates, server_round, weights, devices):
        agg = super().aggregate_updates(updates, server_round, weights, devices)
        self.rounds = getattr(self, "rounds", []) + [(server_round, updates, weights, devices, agg)]
        return agg


def initial():
    rng = np.random.default_rng(0)
    return ArrayRecord({"w": Array(rng.normal(0, 0.1, (D_IN, D_OUT)).astype(np.float32)),
                        "b": Array(np.zeros(D_OUT, np.float32))})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (strategy, Flower Result)} for Flower's FedAvg and deft6g's ideal, AirComp (genie CSI, 20 dB, all
    clients), AirComp with pilots at half the clients per round, and digital."""
    log_dir = tmp_path_factory.mktemp("tb")
    # min_train_nodes: Flower counts the nodes before it waits for min_available_nodes, and at the simulation's
    # start fewer may be registered (FedAvg then samples fewer in round 1)
    common = dict(fraction_evaluate=0.0, min_available_nodes=NUM_CLIENTS, min_train_nodes=NUM_CLIENTS)
    strategies = {
        "fedavg": FedAvg(**common),
        "ideal": ChannelFedAvg("ideal", **common),
        "aircomp": Recording("aircomp", num_rx_ant=4, snr_db=20.0, seed=3, link={"genie": True}, log_dir=log_dir,
                             **common),
        "half": Recording("aircomp", num_rx_ant=4, snr_db=20.0, seed=3, device_key="partition-id", **{**common, "fraction_train": 0.5,
                                                                                "min_train_nodes": NUM_CLIENTS // 2}),
        "digital": ChannelFedAvg("digital", num_rx_ant=4, snr_db=20.0, seed=3, **common),
    }
    out = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        for name, strategy in strategies.items():
            out[name] = (strategy, strategy.start(grid, initial(), num_rounds=ROUNDS, train_config=ConfigRecord()))

    run_simulation(server_app, client_app, num_supernodes=NUM_CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}})
    assert set(out) == set(strategies), "the ServerApp did not finish every strategy"
    return out, log_dir


def final(result):
    return {k: v.numpy() for k, v in result.arrays.items()}


def test_ideal_equals_flower_fedavg(runs):
    out, _ = runs
    ours, theirs = final(out["ideal"][1]), final(out["fedavg"][1])
    assert not np.allclose(theirs["w"], initial()["w"].numpy(), atol=1e-3)        # the model did train
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6)
    metrics = out["ideal"][1].train_metrics_clientapp[ROUNDS]
    assert metrics["agg_mse"] == 0.0 and metrics["uplink_uses"] == 0 and metrics["devices_heard"] == NUM_CLIENTS


def test_aircomp_error_matches_the_closed_form(runs):
    """Genie CSI at 20 dB, N = 4, 8 clients: per-entry error = c_max^2 aircomp_mse(H, a, b, sigma^2, C) with
    c_k = w_k std_k and C the scaled correlation of the standardised updates (AirCompUplink's docstring), H and
    the SDR design re-derived from the aggregator's seed; summed over 3 rounds x 2080 entries (noise part: about
    2 % Monte-Carlo standard deviation; 3 sigma allowed)."""
    out, _ = runs
    strategy, result = out["aircomp"]
    agg = strategy.aggregator
    measured, expected = 0.0, 0.0
    for server_round, u, w, devices, res in strategy.rounds:
        assert list(devices) == list(range(NUM_CLIENTS))
        H = agg.draw_channel(server_round)[..., devices]
        d = design_aircomp(H, 1.0, agg.noise_var, "sdr", seed=agg.round_seed(server_round, "design"))
        c = w * u.std(axis=1)
        scale = c / c.max()
        cov = scale[:, None] * payload_correlation(u).numpy() * scale[None, :]
        expected += c.max() ** 2 * float(aircomp_mse(H, d.a, d.b, agg.noise_var, payload_cov=cov))
        measured += res.agg_mse
        metrics = result.train_metrics_clientapp[server_round]
        assert metrics["agg_mse"] == pytest.approx(res.agg_mse) and metrics["nmse"] == pytest.approx(res.nmse)
        assert metrics["uplink_uses"] == metrics["payload_uses"] == 2080 // 2     # genie: no pilots, free stats
    assert measured == pytest.approx(expected, rel=0.06)        # measured 0.995 x expected
    assert 0 < result.train_metrics_clientapp[ROUNDS]["nmse"] < 0.1


def test_rounds_with_fewer_sampled_clients(runs):
    """fraction_train 0.5: 4 of 8 clients per round, 4 pilots each round, at most 4 heard, the model moves; the
    devices are the clients' partition ids (device_key): each row's FedAvg weight is (20 + 5 p) / sum."""
    out, _ = runs
    strategy, result = out["half"]
    assert [len(r[3]) for r in strategy.rounds] == [NUM_CLIENTS // 2] * ROUNDS
    for _, _, w, devices, _ in strategy.rounds:
        assert np.all(np.diff(devices) > 0)
        np.testing.assert_allclose(w, (20 + 5 * devices) / np.sum(20 + 5 * devices), rtol=1e-12)
    assert len({tuple(r[3]) for r in strategy.rounds}) > 1           # Flower sampled different clients
    assert "partition-id" not in result.train_metrics_clientapp[1]
    for server_round in range(1, ROUNDS + 1):
        m = result.train_metrics_clientapp[server_round]
        assert m["pilot_uses"] == pilot_channel_uses(NUM_CLIENTS // 2) and 0 < m["devices_heard"] <= NUM_CLIENTS // 2
        assert m["latency_s"] == pytest.approx(m["uplink_uses"] / 1e6)
    assert np.all(np.isfinite(final(result)["w"]))


def test_digital_round_metrics(runs):
    out, _ = runs
    metrics = out["digital"][1].train_metrics_clientapp
    for server_round in range(1, ROUNDS + 1):
        assert set(CHANNEL_METRICS) <= set(metrics[server_round])
        assert metrics[server_round]["uplink_uses"] > metrics[server_round]["pilot_uses"] == NUM_CLIENTS


def test_tensorboard_events_hold_the_round_metrics(runs):
    out, log_dir = runs
    import tensorflow as tf
    found = {}
    for path in tf.io.gfile.glob(str(log_dir / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                found[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor))
    metrics = out["aircomp"][1].train_metrics_clientapp
    for server_round in range(1, ROUNDS + 1):
        for name in ("nmse", "uplink_uses", "train_loss"):
            assert found[(f"train/{name}", server_round)] == pytest.approx(metrics[server_round][name], rel=1e-6)


def test_bad_arguments_are_named(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="log_dir"):                # deft6g.experiment.ScalarWriter's check
        ChannelFedAvg("ideal", log_dir=tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="scheme"):
        ChannelFedAvg("analog")
    with pytest.raises(ValueError, match="num_clients"):
        ChannelFedAvg("ideal", num_clients=0)
    with pytest.raises(ValueError, match="bandwidth_hz"):
        ChannelFedAvg("ideal", bandwidth_hz=-1)
    with pytest.raises(ValueError, match="snr_db"):                 # make_aggregator's check, at construction
        ChannelFedAvg("aircomp", num_clients=8, snr_db=float("nan"))
    with pytest.raises(ValueError, match="aggregator"):             # a built aggregator needs its device count
        ChannelFedAvg("ideal", aggregator=lambda *a, **k: None)


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower-minilm"
# the study's --quick settings (4 devices, 256 / 128 texts, 2 local steps of 8), 3 rounds, ideal only, lr not tuned
MINILM_STUDY = """
schemes = ["ideal"]
seeds = [0]
[federated]
rounds = 3
[tuning]
lr = []
centralised_lr = []
"""


def test_minilm_app_reproduces_the_study_ideal_run(tmp_path, monkeypatch):
    """examples/flower-minilm with the ideal strategy against `deft6g study` (the same configuration, seed 0):
    the same partition, batch streams and initialisation, so every round's mean local loss and validation
    accuracy and the final test accuracy agree to float32 rounding (rtol 1e-5 on the loss; the accuracies are
    counts of texts: exactly equal). 70-112 s measured on 2 cores at load 5-10, the study run included."""
    from deft6g.benchmarks.study import run_study
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(EXAMPLE))                     # the app, here and in Flower's Ray workers
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))        # simulate() prepends the app
    from flower_minilm.simulate import simulate
    config = tmp_path / "study.toml"
    config.write_text(MINILM_STUDY)
    run_study(tmp_path / "study", str(config), quick=True, log=lambda m: None)
    with open(tmp_path / "study" / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    with open(tmp_path / "study" / "rounds.csv") as f:
        rounds = sorted(csv.DictReader(f), key=lambda r: int(r["round"]))
    app = simulate({"study-config": str(config), "scheme": "ideal", "seed": 0,
                    "out-file": str(tmp_path / "app.json")}, num_supernodes=4)
    assert app["lr"] == float(row["lr"]) and len(app["rounds"]) == len(rounds) == 3
    for ours, theirs in zip(app["rounds"], rounds):
        assert ours["round"] == int(theirs["round"])
        assert ours["loss"] == pytest.approx(float(theirs["loss"]), rel=1e-5)
        assert ours["val_accuracy"] == float(theirs["val_accuracy"])
        assert ours["uplink_uses"] == 0 and ours["devices_heard"] == 4
    assert app["accuracy"] == float(row["accuracy"])
    assert rounds[0]["loss"] != rounds[-1]["loss"]                    # it trained
