"""The ServerApp: deft6g's ChannelFedAvg carrying the study point's own aggregator (ideal, MIMO AirComp, digital
or OBDA at its SNR, N and link), the validation accuracy after every `eval_every`-th round and the last (as
`deft6g study` evaluates), the test accuracy after the last round; `out-file` writes it all as JSON."""

import json
import time

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from deft6g.benchmarks.study import point_aggregator
from deft6g.flower import ChannelFedAvg
from flower_minilm.task import federation, mean_step_loss, run_point

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    serve(grid, context.run_config)


def serve(grid, rc):
    """The study point of the run config `rc` (its keys: pyproject.toml) through Flower -> the JSON dict written
    to `out-file`."""
    t0 = time.time()
    cfg, point, setting = run_point(rc)
    f = cfg.federated
    setup, fed = federation(cfg, point, setting)
    study_round = point_aggregator(cfg, point, setting)                    # the study's point aggregator
    k = f.devices

    def evaluate(server_round, arrays):
        if server_round == 0 or (server_round % f.eval_every and server_round != f.rounds):
            return None
        fed.set_payload(arrays["payload"].numpy())
        return MetricRecord({"val_accuracy": float(setup.evaluate(validation=True))})

    strategy = ChannelFedAvg(
        point["scheme"], num_clients=k, aggregator=lambda u, r, **kw: study_round(u, r - 1, **kw),  # study: from 0
        device_key="partition-id", min_available_nodes=k, min_train_nodes=max(1, round(f.fraction * k)),
        fraction_train=f.fraction, fraction_evaluate=0.0, train_metrics_aggr_fn=mean_step_loss,
        bandwidth_hz=cfg.channel.bandwidth_hz, log_dir=str(rc["log-dir"]) or None)
    result = strategy.start(grid, ArrayRecord({"payload": Array(fed.payload_vector())}), num_rounds=f.rounds,
                            train_config=ConfigRecord(), evaluate_fn=evaluate)
    fed.set_payload(result.arrays["payload"].numpy())
    accuracy = float(setup.evaluate())
    rounds = []
    for server_round, m in sorted(result.train_metrics_clientapp.items()):
        val = result.evaluate_metrics_serverapp.get(server_round, {}).get("val_accuracy", float("nan"))
        rounds.append({"round": server_round - 1, "loss": m["train_loss"], "val_accuracy": val,
                       **{name: m[name] for name in ("agg_mse", "nmse", "uplink_uses", "pilot_uses",
                                                      "side_info_uses", "downlink_uses", "devices_heard")}})
        print(f"round {server_round}: loss {m['train_loss']:.4f}, validation accuracy {val:.4f}, "
              f"nmse {m['nmse']:.3g}, uplink {m['uplink_uses']} uses")
    out = {"point": point, "lr": setting["lr"], "accuracy": accuracy, "rounds": rounds,
           "channel_uses": sum(r["uplink_uses"] for r in rounds), "wall_s": round(time.time() - t0, 2)}
    print(f"{point['scheme']} seed {point['seed']}: test accuracy {accuracy:.4f} ({out['wall_s']} s)")
    if str(rc["out-file"]):
        with open(str(rc["out-file"]), "w") as fh:
            json.dump(out, fh, indent=1, default=float)
    return out
