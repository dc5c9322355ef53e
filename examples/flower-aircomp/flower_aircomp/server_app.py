"""The ServerApp: deft6g's ChannelFedAvg in place of Flower's FedAvg (the lines a Flower user changes are marked)
and a central evaluation on the held-out 20 % after every round."""

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from deft6g.flower import ChannelFedAvg                        # 1. import deft6g's strategy
from flower_aircomp.task import accuracy, initial_arrays, load_split

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    _, _, x_test, y_test = load_split(int(cfg["seed"]))

    def evaluate(server_round, arrays):
        return MetricRecord({"accuracy": accuracy(arrays["w"].numpy(), arrays["b"].numpy(), x_test, y_test)})

    strategy = ChannelFedAvg(                                    # 2. FedAvg(...) -> ChannelFedAvg(scheme, ...)
        str(cfg["scheme"]), snr_db=float(cfg["snr-db"]), num_rx_ant=int(cfg["num-rx-ant"]),
        link={"genie": bool(cfg["genie"])}, seed=int(cfg["seed"]), log_dir=str(cfg["log-dir"]) or None,
        num_clients=int(cfg["num-clients"]), min_available_nodes=int(cfg["num-clients"]),
        device_key="partition-id",                               # client p is device p in every run
        min_train_nodes=max(1, int(float(cfg["fraction-train"]) * int(cfg["num-clients"]))),
        fraction_train=float(cfg["fraction-train"]), fraction_evaluate=0.0)
    result = strategy.start(grid, ArrayRecord({k: Array(v) for k, v in initial_arrays(int(cfg["seed"])).items()}),
                            num_rounds=int(cfg["num-server-rounds"]), train_config=ConfigRecord(),
                            evaluate_fn=evaluate)
    for server_round, metrics in sorted(result.train_metrics_clientapp.items()):   # 3. the channel's metrics
        print(f"round {server_round}: accuracy {result.evaluate_metrics_serverapp[server_round]['accuracy']:.3f}, "
              f"nmse {metrics['nmse']:.2e}, uplink {metrics['uplink_uses']} uses, "
              f"downlink {metrics['downlink_uses']} uses, latency {metrics['latency_s'] * 1e3:.2f} ms")
