"""The ClientApp: plain Flower and NumPy (no deft6g, no TensorFlow): local SGD, reply with the new arrays."""

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flower_aircomp.task import local_sgd, partition

app = ClientApp()


@app.train()
def train(msg: Message, context: Context):
    pid, parts = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    cfg = context.run_config
    x, y = partition(pid, parts, int(cfg["seed"]))
    arrays = msg.content["arrays"]
    server_round = int(msg.content["config"]["server-round"])
    w, b, loss = local_sgd(arrays["w"].numpy(), arrays["b"].numpy(), x, y, int(cfg["local-epochs"]),
                           int(cfg["batch-size"]), float(cfg["lr"]), seed=[int(cfg["seed"]), pid, server_round])
    reply = RecordDict({"arrays": ArrayRecord({"w": Array(w), "b": Array(b)}),
                        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y), "partition-id": pid})})
    return Message(content=reply, reply_to=msg)
