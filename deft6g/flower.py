"""deft6g's radio channel inside Flower (flwr >= 1.42, the Message API): `ChannelFedAvg` is Flower's FedAvg
except that the weighted average of the clients' updates crosses a deft6g aggregator
(`deft6g.finetune.federation.aggregation.make_aggregator`: "ideal", "aircomp", "digital", "obda" or "noisy").

Each round the server remembers the global arrays it sent; every reply's ArrayRecord becomes one flat float32
update [L] (the client's arrays minus the global ones, in the global record's key order, so the model's array
shapes may change between jobs but not within one), the FedAvg weights are the replies' `weighted_by_key`
metric (default "num-examples") normalised to 1, and the aggregator estimates sum_k w_k u_k over the channel.
The new global arrays are the old ones plus that estimate (cast back to each array's dtype), so "ideal" gives
Flower's FedAvg up to float32 rounding.

Clients are devices in a fixed order: with `device_key`, the integer each client reports under that name in its
train MetricRecord (e.g. its "partition-id": the same client is the same device in every run, so a seed gives
the same numbers); without it, the node ids connected when the first round is configured (Flower's FedAvg waits
for `min_available_nodes`), sorted, then later arrivals in the order they appear (node ids are drawn anew by
each simulation). Either way at most `num_clients` devices (default: the nodes connected at the first round). The aggregator
serves all of them; each round it receives the replying clients' indices (`devices`, ascending), so the radio
schemes draw those clients' channels and pilots, and a round with fewer sampled clients (`fraction_train` < 1,
a failed client) works. Flower's server round is the aggregator's round index.

Each round's train MetricRecord holds the clients' own metrics (aggregated as FedAvg does) plus the channel's:
agg_mse (per entry), nmse, uplink_uses (payload + pilots + side information), payload_uses, pilot_uses,
side_info_uses, downlink_uses, devices_heard, and latency_s = uplink_uses / bandwidth_hz. With `log_dir`, every
train and evaluate metric is also written per round as a TensorBoard scalar ("train/NAME", "evaluate/NAME"; step:
the server round; `deft6g.experiment.ScalarWriter`, flushed every round).

Only the server needs deft6g (and TensorFlow); clients may be PyTorch, Keras or NumPy apps.
"""

import numpy as np

FLOWER_HINT = "deft6g.flower needs Flower: pip install 'deft6g[flower]'"

try:
    from flwr.app import Array, ArrayRecord, MetricRecord
    from flwr.serverapp.strategy import FedAvg
except ImportError as err:                       # flwr missing (or too old for the Message API)
    raise ImportError(FLOWER_HINT) from err

from deft6g.experiment import ScalarWriter
from deft6g.finetune.federation.aggregation import SCHEMES, make_aggregator

CHANNEL_METRICS = ("agg_mse", "nmse", "uplink_uses", "payload_uses", "pilot_uses", "side_info_uses", "downlink_uses",
                   "devices_heard", "latency_s")


def flatten(record, keys):
    """One flat float32 vector [L] of the ArrayRecord's arrays `keys`, in that order."""
    return np.concatenate([np.asarray(record[k].numpy(), np.float32).reshape(-1) for k in keys]) if keys \
        else np.zeros(0, np.float32)


class ChannelFedAvg(FedAvg):
    """Flower's FedAvg with deft6g's channel in its average (module docstring).

    scheme: "ideal", "aircomp", "digital", "obda" or "noisy"; num_clients: devices the aggregator serves (None:
    the nodes connected at the first round, and the aggregator is built then); num_rx_ant, snr_db [dB], seed, channel, link, aircomp, digital,
    obda, noisy: `make_aggregator`'s arguments; aggregator: a built one instead (callable(updates [k, L], round,
    weights [k], devices [k]) -> `Aggregate`, e.g. a `deft6g study` point's; needs num_clients; scheme names it in
    messages only); bandwidth_hz: one channel use lasts 1 / bandwidth_hz seconds;
    device_key: the train metric holding each client's device index in [0, num_clients) (None: node-id order);
    log_dir: TensorBoard event folder (None: no events); every other keyword is FedAvg's (fraction_train,
    fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes, weighted_by_key, ...)."""

    def __init__(self, scheme="ideal", *, num_clients=None, num_rx_ant=1, snr_db=0.0, seed=0, bandwidth_hz=1e6,
                 channel=None, link=None, aircomp=None, digital=None, obda=None, noisy=None, device_key=None,
                 log_dir=None, aggregator=None, **fedavg_kwargs):
        super().__init__(**fedavg_kwargs)
        if scheme not in SCHEMES:
            raise ValueError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}")
        if aggregator is not None and (num_clients is None or not callable(aggregator)):
            raise ValueError(f"`aggregator` must be a callable and comes with `num_clients`, got {aggregator!r} and "
                             f"num_clients={num_clients!r}")
        if num_clients is not None and (isinstance(num_clients, bool) or not isinstance(num_clients, int)
                                        or num_clients < 1):
            raise ValueError(f"`num_clients` must be a positive integer or None, got {num_clients!r}")
        if isinstance(bandwidth_hz, bool) or not np.isscalar(bandwidth_hz) or not bandwidth_hz > 0:
            raise ValueError(f"`bandwidth_hz` must be a number > 0, got {bandwidth_hz!r}")
        self.scheme, self.num_clients, self.bandwidth_hz = scheme, num_clients, float(bandwidth_hz)
        self._make = dict(num_rx_ant=num_rx_ant, snr_db=snr_db, seed=seed, channel=channel, link=link,
                          aircomp=aircomp, digital=digital, obda=obda, noisy=noisy)
        self.aggregator = aggregator if aggregator is not None else (
            None if num_clients is None else make_aggregator(scheme, num_clients, **self._make))
        self.device_index = {}                    # node id -> device index
        self.device_key, self.log_dir = device_key, log_dir
        self._writer = None if log_dir is None else ScalarWriter(log_dir)    # checks the folder, creates nothing
        self._global = None                       # (keys, flat float32 [L], dtypes, shapes) of the arrays sent

    def _register(self, node_ids):
        """Build the aggregator on first use; without `device_key`, give every node not seen before the next device
        index (sorted within one call). With `device_key` the clients' own indices decide, whatever their node ids."""
        node_ids = sorted(int(n) for n in node_ids)
        if self.aggregator is None:
            self.num_clients = self.num_clients or len(node_ids)
            self.aggregator = make_aggregator(self.scheme, self.num_clients, **self._make)
        if self.device_key is not None:
            return
        for n in node_ids:
            if n not in self.device_index:
                if len(self.device_index) >= self.num_clients:
                    raise ValueError(f"more than `num_clients` = {self.num_clients} clients connected: pass "
                                     f"num_clients = the largest number of clients of the run")
                self.device_index[n] = len(self.device_index)

    def configure_train(self, server_round, arrays, config, grid):
        """FedAvg's sampling and messages; remembers the arrays sent (the reference of the updates)."""
        messages = super().configure_train(server_round, arrays, config, grid)    # waits for min_available_nodes
        self._register(grid.get_node_ids())
        keys = list(arrays.keys())
        self._global = (keys, flatten(arrays, keys), {k: arrays[k].numpy().dtype for k in keys},
                        {k: tuple(arrays[k].shape) for k in keys})
        return messages

    def aggregate_updates(self, updates, server_round, weights, devices):
        """The aggregator's estimate of sum_k weights_k updates_k: updates [k, L] float32, weights [k] (sum 1),
        devices [k] ascending device indices -> `Aggregate`."""
        return self.aggregator(updates, server_round, weights=weights, devices=devices)

    def aggregate_train(self, server_round, replies):
        """The replies' updates across the channel -> (new global ArrayRecord, MetricRecord) (module docstring)."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self._global is None:
            raise RuntimeError("aggregate_train before configure_train: the strategy needs the arrays it sent")
        keys, reference, dtypes, shapes = self._global
        self._register(m.metadata.src_node_id for m in valid)
        devices = np.array([self._device(m) for m in valid])
        if len(set(devices.tolist())) != len(devices):
            raise ValueError(f"two replies report the same `{self.device_key}`: {devices.tolist()}")
        order = np.argsort(devices)
        contents, devices = [valid[i].content for i in order], devices[order]
        examples = np.array([float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents])
        if not np.all(np.isfinite(examples)) or np.any(examples < 0) or not examples.sum() > 0:
            raise ValueError(f"the replies' `{self.weighted_by_key}` must be finite, >= 0 and not all 0, got "
                             f"{examples.tolist()}")
        updates = []
        for c in contents:
            record = next(iter(c.array_records.values()))
            if {k: tuple(record[k].shape) for k in record.keys()} != shapes:
                raise ValueError(f"a client returned arrays {[(k, tuple(record[k].shape)) for k in record.keys()]}"
                                 f", the server sent {list(shapes.items())}")
            updates.append(flatten(record, keys) - reference)
        agg = self.aggregate_updates(np.stack(updates), server_round, examples / examples.sum(), devices)
        flat = reference + agg.mean.astype(np.float32)
        bounds = np.cumsum([0] + [int(np.prod(shapes[k])) for k in keys])
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(flat[lo:hi].reshape(shapes[k]).astype(dtypes[k])))
                              for k, lo, hi in zip(keys, bounds[:-1], bounds[1:])})
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        if self.device_key in metrics:
            del metrics[self.device_key]                  # an index, not a metric to average
        for name, value in zip(CHANNEL_METRICS, (agg.agg_mse, agg.nmse, agg.channel_uses, agg.payload_uses,
                                                 agg.pilot_uses, agg.side_info_uses, agg.downlink_uses, agg.devices,
                                                 agg.channel_uses / self.bandwidth_hz)):
            metrics[name] = float(value) if isinstance(value, float) else int(value)
        self._log("train", server_round, metrics)
        return arrays, metrics

    def _device(self, message):
        """The replying client's device index: its `device_key` metric, or its node id's registered index."""
        if self.device_key is None:
            return self.device_index[int(message.metadata.src_node_id)]
        value = next(iter(message.content.metric_records.values())).get(self.device_key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.num_clients:
            raise ValueError(f"each reply's train metrics must hold `{self.device_key}` (`device_key`), an integer "
                             f"in [0, {self.num_clients}) (`num_clients`), got {value!r}")
        return value

    def aggregate_evaluate(self, server_round, replies):
        """FedAvg's weighted mean of the evaluation metrics (also logged with `log_dir`)."""
        metrics = super().aggregate_evaluate(server_round, replies)
        self._log("evaluate", server_round, metrics)
        return metrics

    def _log(self, split, server_round, metrics):
        """TensorBoard scalars "split/NAME" at step `server_round` (nothing without `log_dir`)."""
        if self._writer is not None and metrics:
            self._writer.write(server_round, dict(metrics), prefix=split)
