r"""A split multi-view classifier: device projections W_m z_m, a connection that sums them, a server head.

Device m maps its frozen features :math:`z_m \in \mathbb{R}^F` (standardised with training statistics)
to :math:`x_m = W_m z_m + c_m \in \mathbb{R}^D`; the server receives :math:`\hat s \approx \sum_m x_m`
through a connection (`deft6g.finetune.aircomp_connection`) and runs the head
:math:`\mathrm{softmax}(V_2\,\mathrm{relu}(V_1 \hat s + v_1) + v_2)`. What trains: every W_m, c_m and
the head; the FoMo that produced z_m is frozen. Training through the AirComp connection ("noise-aware")
draws a fresh channel and design per batch and the noise in the forward pass, and back-propagates through
the de-normalisation, the superposition and the standardisation to every device's projection.
"""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from deft6g.rng import reseed

from .aircomp_connection import AirCompConnection, DigitalConnection, IdealConnection, payload_stats
from .training import CROSS_ENTROPY


class MultiViewModel(tf.Module):
    """Projections of M devices (F -> D each) and a server head (D -> hidden -> C).

    Parameters: num_devices M, in_features F, width D, num_classes C, hidden (head width), seed,
    feature_stats (mean, std) of the training features, each [M, F] (None: no standardisation).
    `payloads(z)`: z [B, M, F] -> x [B, M, D]; `head(s)`: s [B, D] -> logits [B, C].
    """

    def __init__(self, num_devices, in_features, width, num_classes, hidden=64, seed=0, feature_stats=None):
        super().__init__(name="multiview")
        rng = np.random.default_rng(seed)

        def init(fan_in, *shape):
            return tf.Variable((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

        self.num_devices, self.in_features, self.width = num_devices, in_features, width
        self.W = init(in_features, num_devices, in_features, width)
        self.c = tf.Variable(tf.zeros([num_devices, width]))
        self.V1, self.v1 = init(width, width, hidden), tf.Variable(tf.zeros([hidden]))
        self.V2, self.v2 = init(hidden, hidden, num_classes), tf.Variable(tf.zeros([num_classes]))
        mean, std = feature_stats if feature_stats is not None else (np.zeros((num_devices, in_features)),
                                                                     np.ones((num_devices, in_features)))
        self.mean, self.std = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)

    @property
    def device_variables(self):
        return [self.W, self.c]

    @property
    def server_variables(self):
        return [self.V1, self.v1, self.V2, self.v2]

    def payloads(self, z):
        z = (tf.convert_to_tensor(z, tf.float32) - self.mean) / self.std
        return tf.einsum("bmf,mfd->bmd", z, self.W) + self.c

    def head(self, s):
        return tf.nn.relu(s @ self.V1 + self.v1) @ self.V2 + self.v2


def feature_stats(x):
    """Per-device, per-feature mean and std (floored at 1e-6) of training features x [S, M, F]."""
    return x.mean(0), np.maximum(x.std(0), 1e-6)


def _batches(n, batch_size, rng):
    order = rng.permutation(n)
    return [order[s:s + batch_size] for s in range(0, n - batch_size + 1, batch_size)]


def train_multiview(model, x, y, connection=None, epochs=10, batch_size=64, lr=3e-3, seed=0):
    """Train every variable of `model` on features x [S, M, F] and labels y [S] (Adam, `epochs` passes of
    full batches, the remainder of each shuffled epoch dropped). connection: None / IdealConnection (the
    noise-free sum) or an AirCompConnection (noise-aware: a fresh channel and design per batch, seeded by
    `seed`). Returns the mean training loss of each epoch."""
    if len(y) < batch_size:
        raise ValueError(f"`batch_size` {batch_size} exceeds the {len(y)} training examples")
    _check_features(model, x)
    rng = np.random.default_rng(seed)
    opt = keras.optimizers.Adam(lr)
    variables = model.device_variables + model.server_variables
    over_air = isinstance(connection, AirCompConnection)

    @tf.function
    def step(xb, yb, *block):
        with tf.GradientTape() as tape:
            p = model.payloads(xb)
            s = connection(p, *block) if over_air else tf.reduce_sum(p, axis=1)
            loss = CROSS_ENTROPY(yb, model.head(s))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    steps = len(y) // batch_size
    blocks = connection.draw(epochs * steps, seed=seed) if over_air else None     # one design call, vectorised
    reseed(seed * 104729 + 1)                                                       # the noise of the run
    losses = []
    for epoch in range(epochs):
        total = 0.0
        for t, idx in enumerate(_batches(len(y), batch_size, rng)):
            args = blocks[epoch * steps + t] if over_air else ()
            total += float(step(x[idx], y[idx], *args))
        losses.append(total / steps)
    return losses


def _check_features(model, x):
    if x.ndim != 3 or x.shape[1:] != (model.num_devices, model.in_features):
        raise ValueError(f"`x` must have shape [S, {model.num_devices} devices, {model.in_features} features], "
                         f"got {list(x.shape)}")


def evaluate_multiview(model, x, y, connection=None, block=128, repeats=1, stats=None, seed=0):
    """Accuracy of `model` on features x [S, M, F], labels y [S] through `connection` (None: ideal sum).

    Radio connections cut the examples into blocks of `block` (one channel realisation each, every block
    drawn `repeats` times); AirComp normalises with `stats` (mean [M, D], scale [D]; None: each block's own).
    Returns (accuracy, nmse, channel uses per example): nmse is the squared error of the server's input
    against the ideal sum over the ideal sum's mean power (0 for the ideal connection); channel uses count
    the payload (AirComp: ceil(D/2); digital: the uplink's count, headers included; ideal: 0).
    """
    _check_features(model, x)
    payloads = model.payloads(x).numpy()                                           # [S, M, D]
    ideal = payloads.sum(1)
    if connection is None or isinstance(connection, IdealConnection):
        return _accuracy(model, ideal, y), 0.0, 0.0
    if not isinstance(connection, (AirCompConnection, DigitalConnection)):
        raise TypeError(f"`connection` must be None, IdealConnection, AirCompConnection or DigitalConnection, "
                        f"got {type(connection).__name__}")
    n = len(y)
    pad = -n % block                                                              # wrap to whole blocks
    order = np.concatenate([np.arange(n), np.arange(pad) % n]).reshape(-1, block)  # [T, block]
    blocks = connection.draw(len(order) * repeats, seed=seed)
    acc, err, uses = [], 0.0, 0.0
    for r in range(repeats):
        part = slice(r * len(order), (r + 1) * len(order))
        if isinstance(connection, AirCompConnection):
            est = connection(payloads[order], *blocks[part], stats=stats, seed=seed * 1_000_003 + r).numpy()
            uses += connection.channel_uses() / repeats
        else:
            est, cu = connection(payloads[order], blocks[part], seed=seed * 1_000_003 + r)
            uses += float(np.sum(cu)) / order.size / repeats
        est = est.reshape(-1, model.width)[:n]
        acc.append(_accuracy(model, est, y))
        err += float(np.mean((est - ideal) ** 2)) / repeats
    return float(np.mean(acc)), err / float(np.mean(ideal ** 2)), uses


def _accuracy(model, s, y):
    return float(np.mean(np.argmax(model.head(tf.constant(s, tf.float32)).numpy(), -1) == y))


def training_stats(model, x):
    """`payload_stats` of the model's payloads over training features x [S, M, F]: the normalisation
    (mean [M, D], scale [D]) a deployed AirComp connection uses, sent once as side information."""
    return tuple(v.numpy() for v in payload_stats(model.payloads(x)))


def task_importance(model, x, y, batch_size=256):
    r"""Importance of each server-input dimension for the task, [D] float64 (> 0):
    :math:`\omega_d = \mathrm{E}[(\partial L / \partial s_d)^2] \cdot c_d^2`, the head's mean squared loss
    gradient at the ideal sum times the square of the normalisation scale :math:`c_d` of dimension d
    (`training_stats`: an error e in the standardised domain is c_d e at the head's input)."""
    _check_features(model, x)
    grad_sq = np.zeros(model.width)
    for s in range(0, len(y), batch_size):
        sums = tf.reduce_sum(model.payloads(x[s:s + batch_size]), axis=1)
        with tf.GradientTape() as tape:
            tape.watch(sums)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y[s:s + batch_size], model.head(sums),
                                                                              from_logits=True))
        grad_sq += np.sum(tape.gradient(loss, sums).numpy() ** 2, axis=0)
    scale = training_stats(model, x)[1]
    return np.maximum(grad_sq / len(y) * scale ** 2, 1e-30)
