"""The ClientApp: device `partition-id` of the study's partition trains its LoRA (and head) from the global
payload with `FederatedDEFT.local_update`, the study's own local training, and replies with the trained payload.
Its batch stream resumes where it stopped: the node's state keeps how many batches it drew."""

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flower_minilm.task import federation, run_point

app = ClientApp()


@app.train()
def train(msg: Message, context: Context):
    return train_device(msg, context, context.run_config)


def train_device(msg, context, run_config):
    """The reply of device `partition-id` under `run_config` (the run config's keys: pyproject.toml)."""
    cfg, point, setting = run_point(run_config)
    k, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    if parts != cfg.federated.devices:
        raise ValueError(f"`num-supernodes` must equal the study's federated.devices = {cfg.federated.devices}, "
                         f"got {parts}")
    _, fed = federation(cfg, point, setting)
    start = msg.content["arrays"]["payload"].numpy()
    drawn = int(context.state["stream"]["batches"]) if "stream" in context.state else 0
    n = len(fed.devices[k][1])
    losses, steps = [0.0], 0
    if n:
        fed.skip_batches(k, drawn)
        _, losses, _ = fed.local_update(k, start)
        steps = len(losses)
        context.state["stream"] = ConfigRecord({"batches": drawn + steps})
    payload = fed.payload_vector() if n else start           # the trained payload itself (no float32 re-rounding)
    reply = RecordDict({"arrays": ArrayRecord({"payload": Array(payload)}),
                        "metrics": MetricRecord({"train_loss": sum(losses) / len(losses), "steps": steps,
                                                 "num-examples": n, "partition-id": k})})
    return Message(content=reply, reply_to=msg)
