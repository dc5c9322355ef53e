"""Federated DEFT (technique 3): K devices tune PEFT weights locally, their updates cross the uplink, the
server aggregates (weighted by device data size) and applies a server optimiser. Devices either hold a FoMo
emulator (or the full model) and train on cached activations, or hold only the bottom blocks and download
cut-layer gradients (split fine-tuning).

Partial participation: each round samples m of the K devices (`clients_per_round`, or m = max(1, floor(fraction x
K_data + 0.5)) for the K_data devices with data: halves round up, 0.5 x 5 -> 3 and 0.7 x 5 -> 4), uniformly without
replacement from a generator seeded by derive_seed(seed, SAMPLING_STREAM, round), so the same seed gives the same
samples; FedAvg weights S_k / sum S over the sampled devices; the aggregator receives the
sampled devices' updates [m, L], weights [m] and global indices [m] (the radio aggregators draw those devices'
channels, and the AirComp design, the digital schedule and the pilots run over them). With the default
fraction 1 every device takes part in every round, as before. Memory per round: m update vectors.

Local optimiser state: clients are stateless by default (the local optimiser starts fresh every round, as a
device that joins rarely would); with `stateful_clients` every device keeps its Adam moments and step count
across the rounds it takes part in, restored before and saved after its local steps, at a cost of
`client_state_bytes` per device that has taken part (Adam: 8 L + 8 bytes for L payload weights; SGD: 8).
Server optimiser (`deft6g.finetune.federation.server_optimizers`, Reddi et al., ICLR 2021): "fedavg" applies
x <- x + eta * Delta, "fedadam" feeds Delta to Adam (beta1 0.9, beta2 0.99, tau 1e-3), or pass an optimiser
object (e.g. FedAdamServer with other constants).

LoRA aggregation ("lora_aggregation"): "factors" averages A and B separately, which is biased -- the mean of
the products A_k B_k is not the product of the means (the bias is logged per round); "frozen_a" (FFA-LoRA)
keeps every A at its shared, seeded initialisation and trains and sends only B, so the average of the
updates A dB_k is exact; "delta_w" averages the factors and merges the residual sum_k w_k A_k B_k - A B into
the frozen kernel at the server (FedEx-LoRA), exact whenever the server receives each device's factors
(ideal or digital links; AirComp delivers only their sum).

The server's broadcast (`RoundLog.broadcast_reals`): after each round the server sends every device the new
global PEFT state, counted in reals (float32 values; no digital downlink of the model is simulated, so no
channel uses): the new payload vector -- "factors": every trainable real (A, B and, without a cut, the head);
"frozen_a": B (and the head) only, since A never changes and each device keeps its initial copy (drawn from the
shared seed by `reset_parameters(seed)`; the round-0 state is not counted for any variant); "delta_w": the
averaged factors plus, per LoRA layer, the dense residual sum_k w_k A_k B_k - A B [d_in, d_out] that the server
merges into the frozen kernel. Split mode ("gradient") counts this broadcast beside its cut-layer bits_down.
"""

import math
import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras

from deft6g.deprecation import warn_renamed
from deft6g.rng import derive_seed

from ..peft.activation_store import RaggedActivations
from .server_optimizers import SERVER_OPTIMIZERS, FedAvgServer
from ..peft.architecture import projection_kernel
from ..peft.tuners import LoraLayer
from ..peft.training import CROSS_ENTROPY, take, trim_padding

SAMPLING_STREAM = 0x5A3D   # the derive_seed stream of the per-round device samples: derive_seed(seed, it, round)
BATCH_STREAM = 0xBA7C      # the derive_seed stream of device k's batch order: derive_seed(seed, it, k)
LOCAL_OPTIMIZERS = ("adam", "sgd")
"""The devices' local optimisers."""
LORA_AGGREGATIONS = ("factors", "frozen_a", "delta_w")
"""How LoRA updates are aggregated: the factors, B alone with A frozen, or the dense product."""


@dataclass
class RoundLog:
    """One round: mean local loss; aggregation MSE (per entry) and channel uses of the uplink (payload + pilots +
    side information); devices heard; bits_up / bits_down: split-mode cut-layer traffic (activations + labels
    up, gradients down), all devices; lora_bias: ||sum_k w_k A_k B_k - A_bar B_bar|| / ||sum_k w_k A_k B_k -
    A_0 B_0|| over the LoRA layers (0 when A is frozen; NaN without LoRA); accuracy: the `evaluate` callback's
    accuracy after the round (NaN when not evaluated); payload_uses, pilot_uses, side_info_uses: the parts of
    channel_uses; downlink_uses: the server's downlink symbols; nmse: the aggregate's normalised MSE; energy:
    the devices' transmit energy [P x channel uses], summed; participants: the devices aggregated (global
    indices, among the sampled); sampled: the devices sampled this round (global indices); examples: training
    examples the sampled devices stepped through this round; broadcast_reals: reals (float32 values) the server
    broadcasts to every device after the round, the sizes of the arrays it sends (the new payload, and for
    "delta_w" each LoRA layer's dense residual [d_in, d_out]; module docstring), not channel uses."""
    round: int
    loss: float
    agg_mse: float
    channel_uses: int
    devices: int
    bits_up: int = 0
    bits_down: int = 0
    lora_bias: float = float("nan")
    accuracy: float = float("nan")
    payload_uses: int = 0
    pilot_uses: int = 0
    side_info_uses: int = 0
    downlink_uses: int = 0
    nmse: float = float("nan")
    energy: float = 0.0
    participants: tuple = ()
    sampled: tuple = ()
    examples: int = 0
    broadcast_reals: int = 0


class BatchStream:
    """Endless minibatches of one device's data: an epoch is a fresh permutation cut into windows of 16
    batches, each window sorted by length (so a batch's padding can be trimmed), batch order shuffled."""

    def __init__(self, lengths, batch_size, rng):
        self.lengths, self.batch_size, self.rng, self.queue = lengths, batch_size, rng, []

    def __next__(self):
        if not self.queue:
            order, b = self.rng.permutation(len(self.lengths)), self.batch_size
            for s in range(0, len(order), 16 * b):
                window = order[s:s + 16 * b]
                window = window[np.argsort(self.lengths[window], kind="stable")]
                self.queue += [window[i:i + b] for i in range(0, len(window), b)]
            self.queue = [self.queue[i] for i in self.rng.permutation(len(self.queue))]
        return self.queue.pop()


def _lengths(x):
    """Unmasked positions per example [S] of cached activations: a (hidden, mask) pair or a RaggedActivations."""
    return x.lengths if isinstance(x, RaggedActivations) else np.asarray(x[1]).sum(1).astype(int)


_COMPILED = weakref.WeakKeyDictionary()      # model -> {configuration: (optimizer, step)}


def _compiled_step(model, payload, optimizer, dropout, start, cut, server, jit_compile):
    """A `tf.function` local step and its optimizer, built once per model and configuration and reused by
    every FederatedDEFT on that model (so study points do not retrace); with `jit_compile`, XLA-compiled."""
    key = (tuple(v.ref() for v in payload), optimizer, dropout, start, cut, tuple(v.ref() for v in server),
           jit_compile)
    cache = _COMPILED.setdefault(model, {})
    if key in cache:
        return cache[key]
    opt = keras.optimizers.Adam(1e-3) if optimizer == "adam" else keras.optimizers.SGD(1e-3)
    opt.build(payload)
    server_opt = keras.optimizers.Adam(1e-3)
    if server:
        server_opt.build(server)

    if cut is None:
        @tf.function(reduce_retracing=True, jit_compile=jit_compile)
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = CROSS_ENTROPY(y, model.forward_from(x[0], x[1], start, dropout))
            opt.apply_gradients(zip(tape.gradient(loss, payload), payload))
            return loss
    else:
        @tf.function(reduce_retracing=True, jit_compile=jit_compile)
        def step(x, y):
            with tf.GradientTape() as device_tape:                       # device: blocks start..cut-1
                h_cut, m_cut = model.run_blocks(x[0], x[1], start, cut, dropout)
            with tf.GradientTape() as server_tape:                       # server: frozen rest + head
                server_tape.watch(h_cut)
                loss = CROSS_ENTROPY(y, model.forward_from(h_cut, m_cut, cut, dropout))
            g_cut, *g_srv = server_tape.gradient(loss, [h_cut] + server)
            g_dev = device_tape.gradient(h_cut, payload, output_gradients=g_cut)   # downloaded gradient
            opt.apply_gradients(zip(g_dev, payload))
            if server:
                server_opt.apply_gradients(zip(g_srv, server))
            return loss
    cache[key] = (opt, server_opt, step)
    return cache[key]


class FederatedDEFT:
    """Run federated rounds on a PeftModel whose inputs are cached at block `start_block`.

    Parameters
    ----------
    model : PeftModel -- the devices' model (an emulator, or the full model)
    devices : list of (x, y) -- per device, x = (hidden [S_k, T, H], mask [S_k, T]) from
        `model.activations(inputs, start_block)` or a `RaggedActivations` (read batch by batch), y int [S_k];
        S_k = 0 is allowed (a device without data is never trained and has weight 0); at most one device per
        example
    aggregator : callable(updates [m, L], round, weights [m], devices [m]) -> Aggregate
        (`deft6g.finetune.federation.aggregation`): the sampled devices' updates, FedAvg weights w_k = S_k / sum S over
        them and their global indices
    start_block : int -- the cached block (<= the model's lowest tuned block)
    local_steps, batch_size : local minibatch steps per round and batch size (batches trim their padding)
    local_optimizer, lr : "adam" or "sgd", and its learning rate
    stateful_clients : bool -- keep each device's optimiser state across rounds (memory: module docstring)
    fraction : float in (0, 1] -- share of the devices with data sampled per round (1: all K devices)
    clients_per_round : None | int in [1, devices with data] -- sampled per round (instead of `fraction`)
    server_optimizer, server_lr : "fedavg" (server learning rate eta) or "fedadam", built with server_lr; or
        an object with step(x, delta) and reset() (`server_optimizers`; server_lr is then unused)
    lora_aggregation : "factors", "frozen_a" or "delta_w" (see the module docstring)
    cut_block : None | int -- split mode: devices run blocks start_block..cut_block-1 (all PEFT weights must
        lie there) and upload cut-layer activations; the server runs the rest, updates the head (its own
        Adam, lr), and sends the cut-layer gradients back. None: devices train every trainable weight.
    dropout : bool -- run the blocks in training mode (dropout on); off by default, so runs are exact repeats
    jit_compile : bool -- XLA-compile the local step: about 13 % faster per step on a 2-core CPU once compiled
        (a few seconds per new batch shape; losses move by ~1e-7 relative), so it pays for long runs only
    seed : int -- local batch order and the per-round samples

    `local_step(x, y)` -> loss: one step of the local optimiser on a batch (x: hidden [B, T, H] and mask [B, T] at
    `start_block`, y int [B]), compiled once per federation; in split mode it also steps the server's part.
    `devices_with_state`: the devices whose optimiser state is kept (`stateful_clients`; empty when stateless).
    """

    def __init__(self, model, devices, aggregator, start_block, local_steps=5, batch_size=32, lr=1e-3,
                 local_optimizer="adam", server_optimizer="fedavg", server_lr=1.0, lora_aggregation="factors",
                 cut_block=None, dropout=False, seed=0, stateful_clients=False, fraction=1.0, clients_per_round=None,
                 jit_compile=False):
        if not devices:
            raise ValueError("`devices` must hold at least one device's data")
        for name, v in (("local_steps", local_steps), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {v!r}")
        by_name = isinstance(server_optimizer, str)
        for name, v, known in (("local_optimizer", local_optimizer, LOCAL_OPTIMIZERS),
                               ("server_optimizer", server_optimizer if by_name else "fedavg", tuple(SERVER_OPTIMIZERS)),
                               ("lora_aggregation", lora_aggregation, LORA_AGGREGATIONS)):
            if v not in known:
                raise ValueError(f"`{name}` must be one of {known}, got {v!r}")
        if not by_name and not (callable(getattr(server_optimizer, "step", None))
                                and callable(getattr(server_optimizer, "reset", None))):
            raise ValueError(f"`server_optimizer` must be a name or have step(x, delta) and reset(), got "
                             f"{server_optimizer!r}")
        if not (lr > 0 and server_lr > 0):
            raise ValueError(f"`lr` and `server_lr` must be > 0, got {lr}, {server_lr}")
        if not 0 <= start_block <= model.lowest_tuned_block():
            raise ValueError(f"`start_block` must be in [0, {model.lowest_tuned_block()}], got {start_block}")
        sizes = np.array([len(y) for _, y in devices])
        if sizes.sum() == 0:
            raise ValueError("`devices` hold no examples at all")
        if len(devices) > sizes.sum():
            raise ValueError(f"`devices`: {len(devices)} devices for {sizes.sum()} examples; at most one device "
                             "per example")
        self._with_data = np.flatnonzero(sizes > 0)
        self.per_round = self._per_round(fraction, clients_per_round, len(self._with_data))
        self.loras = [w.layer for w in model.wrappers if isinstance(w.layer, LoraLayer)]
        if lora_aggregation != "factors" and not self.loras:
            raise ValueError(f"`lora_aggregation` {lora_aggregation!r} needs a LoRA model")
        server = SERVER_OPTIMIZERS[server_optimizer](server_lr) if by_name else server_optimizer
        if lora_aggregation == "delta_w" and not (type(server) is FedAvgServer and server.lr == 1.0):
            raise ValueError("`lora_aggregation` 'delta_w' is exact only with plain FedAvg (server_optimizer 'fedavg' "
                             "with server_lr 1, or FedAvgServer(1.0))")
        self.model, self.devices, self.aggregator = model, devices, aggregator
        self.start, self.local_steps, self.lr, self.seed, self.cut = start_block, local_steps, lr, seed, cut_block
        self.sizes, self.stateful = sizes, bool(stateful_clients)
        self.lora_aggregation, self.server_lr = lora_aggregation, server_lr
        self.server = server
        frozen = {w.lora_A.ref() for w in self.loras} if lora_aggregation == "frozen_a" else set()
        head = list(model.head.trainable_weights) if model.head is not None else []
        if cut_block is None:
            self.payload = [v for v in model.trainable_variables if v.ref() not in frozen]
            server = []
        else:
            tuned = [i for i, s in enumerate(model.sizes) if s]
            if not tuned or not start_block < cut_block <= model.num_blocks or max(tuned) >= cut_block:
                raise ValueError(f"`cut_block` must lie above every tuned block {tuned} and <= {model.num_blocks}, "
                                 f"got {cut_block}")
            self.payload, server = [v for v in model.peft_variables if v.ref() not in frozen], head
        self.optimizer, server_opt, self.local_step = _compiled_step(model, self.payload, local_optimizer, dropout,
                                                                     start_block, cut_block, server, bool(jit_compile))
        self.optimizer.learning_rate.assign(lr)
        server_opt.learning_rate.assign(lr)
        for v in server_opt.variables:
            v.assign(tf.zeros_like(v))
        self._fresh_state = [np.zeros(v.shape, v.dtype.as_numpy_dtype) for v in self.optimizer.variables]
        self.client_state_bytes = sum(a.nbytes for a in self._fresh_state)
        self._states = {}
        lengths = [_lengths(x) if len(y) else np.zeros(0, int) for x, y in devices]
        self._streams = [BatchStream(lengths[k], batch_size,
                                     np.random.default_rng(derive_seed(seed, BATCH_STREAM, k)))
                         for k in range(len(devices))]
        self.server.reset()                              # a new federation: the server optimiser starts fresh
        self._offsets = self._payload_offsets()

    @staticmethod
    def _per_round(fraction, count, available):
        """Devices sampled per round (None: all K, no sampling): `count`, or fraction x available rounded half up
        (not Python's round(), which halves to even), at least 1."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)) or not 0 < fraction <= 1:
            raise ValueError(f"`fraction` must be a number in (0, 1], got {fraction!r}")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= available:
                raise ValueError(f"`clients_per_round` must be an int in [1, {available}] (the devices with data), "
                                 f"got {count!r}")
            if fraction != 1:
                raise ValueError("give `fraction` or `clients_per_round`, not both")
            return int(count)
        return None if fraction == 1 else max(1, math.floor(fraction * available + 0.5))

    def sample(self, r):
        """The devices of round `r` (sorted global indices [m]): all K devices without sampling, else
        `per_round` of the devices with data, uniformly without replacement, seeded by
        derive_seed(seed, SAMPLING_STREAM, r)."""
        if self.per_round is None:
            return np.arange(len(self.devices))
        rng = np.random.default_rng(derive_seed(self.seed, SAMPLING_STREAM, r))
        return np.sort(rng.choice(self._with_data, self.per_round, replace=False))

    # --- state --------------------------------------------------------------------------------------------
    def payload_vector(self):
        """The payload weights as one float32 vector [L]."""
        return np.concatenate([v.numpy().ravel() for v in self.payload]).astype(np.float32)

    def set_payload(self, vector):
        for v, (a, b) in zip(self.payload, self._offsets.values()):
            v.assign(vector[a:b].reshape(v.shape))

    def _payload_offsets(self):
        out, offset = {}, 0
        for v in self.payload:
            n = int(np.prod(v.shape))
            out[v.ref()] = (offset, offset + n)
            offset += n
        return out

    def _swap_state(self, k, save):
        """Save device k's optimiser state (stateful clients only) or load it (fresh when stateless or new)."""
        if save:
            if self.stateful:
                self._states[k] = [v.numpy() for v in self.optimizer.variables]
        else:
            for v, s in zip(self.optimizer.variables, self._states.get(k, self._fresh_state)):
                v.assign(s)

    @property
    def devices_with_state(self):
        """The devices whose local optimiser state is kept between rounds, sorted (tuple of int; memory:
        `client_state_bytes` each)."""
        return tuple(sorted(self._states))

    def _cut_bits(self, num_examples):
        if self.cut is None:
            return 0
        x0 = self.devices[0][0]
        width = x0.shape[1] if isinstance(x0, RaggedActivations) else x0[0].shape[1]
        tokens = width + sum(int(p.shape[0]) for i, p in self.model.prompts.items() if i < self.cut)
        return int(num_examples) * (tokens * self.model.hidden * 32)

    @property
    def server_optimizer(self):
        """Deprecated (removed in 0.2.0): the server optimiser's name in SERVER_OPTIMIZERS (None for another
        object); use `server`, the optimiser itself."""
        warn_renamed("FederatedDEFT.server_optimizer", "FederatedDEFT.server (the optimiser object)")
        return next((name for name, cls in SERVER_OPTIMIZERS.items() if type(self.server) is cls), None)

    # --- LoRA products --------------------------------------------------------------------------------------
    def lora_factors(self, vector, layer):
        """(A [in, r], B [r, out]) of a LoRA layer in a payload vector (A from the model when frozen)."""
        get = (lambda v: vector[slice(*self._offsets[v.ref()])].reshape(v.shape) if v.ref() in self._offsets
               else v.numpy())
        return get(layer.lora_A).astype(np.float64), get(layer.lora_B).astype(np.float64)

    def _lora_products(self, start, finals, weights, merged):
        """(bias ratio, per-layer residual sum_k w_k A_k B_k - A B of the merged factors)."""
        num = den = 0.0
        residuals = []
        for layer in self.loras:
            a0, b0 = self.lora_factors(start, layer)
            mean_prod = sum(w * np.matmul(*self.lora_factors(f, layer)) for w, f in zip(weights, finals) if w)
            res = mean_prod - np.matmul(*self.lora_factors(merged, layer))
            residuals.append(res)
            num += float(np.sum(res ** 2))
            den += float(np.sum((mean_prod - a0 @ b0) ** 2))
        return (math.sqrt(num / den) if den > 0 else 0.0), residuals

    # --- rounds -------------------------------------------------------------------------------------------

    def local_update(self, k, start):
        """Device k's local training from the global payload `start` [L] float32: `local_steps` steps of the local
        optimiser (fresh, or device k's own state with `stateful_clients`) on the next batches of its stream.
        Returns (update [L] float32: trained payload minus `start`, the steps' losses [local_steps], examples
        stepped through). `run_round` calls it for each sampled device; a Flower client calls it for its own."""
        x, y = self.devices[k]
        if not len(y):
            raise ValueError(f"device `k` = {k} holds no examples")
        self.set_payload(start)
        self._swap_state(k, save=False)
        losses, examples = [], 0
        for _ in range(self.local_steps):
            idx = next(self._streams[k])
            losses.append(float(self.local_step(trim_padding(take(x, idx)), y[idx])))
            examples += len(idx)
        self._swap_state(k, save=True)
        return self.payload_vector() - start, losses, examples

    def skip_batches(self, k, n):
        """Draw and drop device k's next `n` batches: a device that resumes in a fresh object (a Flower client
        keeps only how many batches it drew) continues its stream where it stopped."""
        for _ in range(n):
            next(self._streams[k])

    def run_round(self, r):
        """One round: the sampled devices' local updates (those with data), aggregation over the uplink, server
        update."""
        sampled = self.sample(r)
        start = self.payload_vector()
        updates = np.zeros((len(sampled), start.size), np.float32)
        weights = self.sizes[sampled] / self.sizes[sampled].sum()
        losses, examples = [], 0
        for i, k in enumerate(sampled):
            if len(self.devices[k][1]):
                updates[i], device_losses, device_examples = self.local_update(k, start)
                losses += device_losses
                examples += device_examples
        agg = self.aggregator(updates, r, weights.astype(np.float32), sampled)
        new = self.server.step(start, agg.mean)
        sent = [new]                                     # what the server broadcasts to every device
        bias = float("nan")
        if self.loras:
            received = agg.per_device if agg.per_device is not None else updates
            bias, residuals = self._lora_products(start, start + updates, weights, new)
            if self.lora_aggregation == "delta_w":
                if agg.per_device is None:
                    raise ValueError(f"`lora_aggregation` 'delta_w' needs each device's update; the "
                                     f"{type(self.aggregator).__name__} delivers only their sum")
                _, residuals = self._lora_products(start, start + received, weights, new)
                for layer, res in zip(self.loras, residuals):
                    projection_kernel(layer.base).assign_add((layer.scale * res).astype(np.float32))
                sent += residuals
        self.set_payload(new)
        bits = self._cut_bits(examples)
        heard = agg.participants if agg.participants is not None else weights > 0
        return RoundLog(r, float(np.mean(losses)), agg.agg_mse, agg.channel_uses, agg.devices,
                        bits_up=bits + (32 * examples if bits else 0), bits_down=bits, lora_bias=bias,
                        payload_uses=agg.payload_uses, pilot_uses=agg.pilot_uses, side_info_uses=agg.side_info_uses,
                        downlink_uses=agg.downlink_uses, nmse=agg.nmse,
                        energy=float(np.sum(agg.energy)) if agg.energy is not None else 0.0,
                        participants=tuple(int(k) for k in sampled[np.flatnonzero(heard)]),
                        sampled=tuple(int(k) for k in sampled), examples=examples,
                        broadcast_reals=sum(int(a.size) for a in sent))

    def run(self, rounds, evaluate=None, eval_every=1, progress=None):
        """`rounds` rounds; returns the list of RoundLog. evaluate() -> accuracy is called after every
        `eval_every`-th round and after the last; progress: optional callable(RoundLog)."""
        logs = []
        for r in range(rounds):
            log = self.run_round(r)
            if evaluate is not None and ((r + 1) % eval_every == 0 or r == rounds - 1):
                log.accuracy = float(evaluate())
            logs.append(log)
            if progress is not None:
                progress(log)
        return logs
