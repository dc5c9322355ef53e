"""Federated DEFT (technique 3): K devices tune PEFT weights locally, their updates cross the uplink, the
server aggregates and broadcasts. Devices either hold a FoMo emulator (or the full model) and train on
cached activations, or hold only the bottom blocks and download cut-layer gradients (split fine-tuning).
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras

from .training import _LOSS, take


@dataclass
class RoundLog:
    """One round: mean local loss; aggregation MSE (per entry) and channel uses of the uplink; devices heard;
    bits_up / bits_down: split-mode cut-layer traffic (activations + labels up, gradients down), all devices."""
    round: int
    loss: float
    agg_mse: float
    channel_uses: int
    devices: int
    bits_up: int = 0
    bits_down: int = 0


def _reset(optimizer):
    for v in optimizer.variables:
        v.assign(tf.zeros_like(v))


class FederatedDEFT:
    """Run federated rounds on a PeftModel whose inputs are cached at block `start_block`.

    Parameters
    ----------
    model : PeftModel -- the devices' model (an emulator, or the full model)
    devices : list of (x, y) -- per device, x = (hidden [S_k, T, H], mask [S_k, T]) from
        `model.activations(inputs, start_block)`, y int [S_k]
    aggregator : callable(updates [K, L], round) -> Aggregate (see `deft6g.finetune.aggregation`)
    start_block : int -- the cached block (<= the model's lowest tuned block)
    local_steps, batch_size, lr : local Adam steps per round (state reset every round), batch, learning rate
    cut_block : None | int -- split mode: devices run blocks start_block..cut_block-1 (all PEFT weights must
        lie there) and upload cut-layer activations; the server runs the rest, updates the head, and sends
        the cut-layer gradients back. None: devices train every trainable weight locally.
    dropout : bool -- run the blocks in training mode (dropout on); off by default, so runs are exact repeats
    seed : int -- local batch sampling
    """

    def __init__(self, model, devices, aggregator, start_block, local_steps=5, batch_size=8, lr=3e-3,
                 cut_block=None, dropout=False, seed=0):
        if not devices:
            raise ValueError("`devices` must hold at least one device's data")
        for name, v in (("local_steps", local_steps), ("batch_size", batch_size)):
            if v < 1:
                raise ValueError(f"`{name}` must be >= 1, got {v}")
        if not 0 <= start_block <= model.lowest_tuned_block():
            raise ValueError(f"`start_block` must be in [0, {model.lowest_tuned_block()}], got {start_block}")
        self.model, self.devices, self.aggregator = model, devices, aggregator
        self.start, self.local_steps, self.batch_size, self.seed = start_block, local_steps, batch_size, seed
        self.cut = cut_block
        head = list(model.head.trainable_weights) if model.head is not None else []
        if cut_block is None:
            self.payload, self.server = list(model.trainable_variables), []
        else:
            tuned = [i for i, s in enumerate(model.sizes) if s]
            if not tuned or not start_block < cut_block <= model.num_blocks or max(tuned) >= cut_block:
                raise ValueError(f"`cut_block` must lie above every tuned block {tuned} and <= {model.num_blocks}, "
                                 f"got {cut_block}")
            self.payload, self.server = list(model.peft_variables), head
        self.optimizer = keras.optimizers.Adam(lr)
        self.server_optimizer = keras.optimizers.Adam(lr)
        self._step = self._split_step(dropout) if cut_block is not None else self._local_step(dropout)

    # --- steps --------------------------------------------------------------------------------------------
    def _local_step(self, dropout):
        model, variables, start = self.model, self.payload, self.start

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = _LOSS(y, model.forward_from(x[0], x[1], start, dropout))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss
        return step

    def _split_step(self, dropout):
        model, dev_vars, srv_vars, start, cut = self.model, self.payload, self.server, self.start, self.cut

        @tf.function
        def step(x, y):
            with tf.GradientTape() as device_tape:                       # device: blocks start..cut-1
                h_cut, m_cut = model.run_blocks(x[0], x[1], start, cut, dropout)
            with tf.GradientTape() as server_tape:                       # server: frozen rest + head
                server_tape.watch(h_cut)
                loss = _LOSS(y, model.forward_from(h_cut, m_cut, cut, dropout))
            g_cut, *g_srv = server_tape.gradient(loss, [h_cut] + srv_vars)
            g_dev = device_tape.gradient(h_cut, dev_vars, output_gradients=g_cut)   # downloaded gradient
            self.optimizer.apply_gradients(zip(g_dev, dev_vars))
            if srv_vars:
                self.server_optimizer.apply_gradients(zip(g_srv, srv_vars))
            return loss
        return step

    # --- state --------------------------------------------------------------------------------------------
    def payload_vector(self):
        """The payload weights as one float32 vector [L]."""
        return np.concatenate([v.numpy().ravel() for v in self.payload]).astype(np.float32)

    def set_payload(self, vector):
        offset = 0
        for v in self.payload:
            n = int(np.prod(v.shape))
            v.assign(vector[offset:offset + n].reshape(v.shape))
            offset += n

    def _cut_bits(self, num_examples):
        if self.cut is None:
            return 0
        x0 = self.devices[0][0][0]
        tokens = x0.shape[1] + sum(int(p.shape[0]) for i, p in self.model.prompts.items() if i < self.cut)
        return int(num_examples) * (tokens * self.model.hidden * 32)

    # --- rounds -------------------------------------------------------------------------------------------
    def run_round(self, r):
        """One round: local updates on every device, aggregation over the uplink, global update."""
        start = self.payload_vector()
        updates, losses, examples = [], [], 0
        for k, (x, y) in enumerate(self.devices):
            self.set_payload(start)
            _reset(self.optimizer)
            rng = np.random.default_rng([self.seed, r, k])
            for _ in range(self.local_steps):
                idx = rng.choice(len(y), size=min(self.batch_size, len(y)), replace=False)
                losses.append(float(self._step(take(x, idx), y[idx])))
                examples += len(idx)
            updates.append(self.payload_vector() - start)
        agg = self.aggregator(np.stack(updates), r)
        self.set_payload(start + agg.mean)
        bits = self._cut_bits(examples)
        return RoundLog(r, float(np.mean(losses)), agg.agg_mse, agg.channel_uses, agg.devices,
                        bits_up=bits + (32 * examples if bits else 0), bits_down=bits)

    def run(self, rounds, progress=None):
        """`rounds` rounds; returns the list of RoundLog. `progress`: optional callable(RoundLog)."""
        logs = []
        for r in range(rounds):
            logs.append(self.run_round(r))
            if progress is not None:
                progress(logs[-1])
        return logs

