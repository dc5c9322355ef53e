r"""A split multi-view classifier: device projections W_m z_m, a connection that sums them, a server head.

Device m maps its frozen features :math:`z_m \in \mathbb{R}^F` (standardised with training statistics)
to :math:`x_m = W_m z_m + c_m \in \mathbb{R}^D`; the server receives :math:`\hat s \approx \sum_m x_m`
through a connection (`deft6g.finetune.techniques.aircomp_connection`) and runs the head
:math:`\mathrm{softmax}(V_2\,\mathrm{relu}(V_1 \hat s + v_1) + v_2)`. What trains: every W_m, c_m and
the head; the FoMo that produced z_m is frozen. Training through the AirComp connection ("noise-aware")
draws a fresh channel and design per batch and the noise in the forward pass, and back-propagates through
the de-normalisation, the superposition and the standardisation to every device's projection; through the
digital connection it quantises every batch and drops the entries whose blocks failed, with the gradient of
the ideal sum (straight-through). Training, validation and test channels and noise come from disjoint
seed streams (`channel_seed`).
"""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from deft6g.rng import reseed

from .aircomp_connection import AirCompConnection, DigitalConnection, IdealConnection, payload_stats
from ..peft.training import CROSS_ENTROPY


SPLITS = ("train", "validation", "test")


def channel_seed(seed, split, stream=0):
    """The seed of one random stream (0: channel draws, 1: noise and block failures) of `split` ("train",
    "validation" or "test") for the run seed `seed` (int >= 0): a hash of the three
    (`numpy.random.SeedSequence`), so the splits never share a channel or a noise sample. Returns int < 2^63."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    for name, v in (("seed", seed), ("stream", stream)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"`{name}` must be a non-negative int, got {v!r}")
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split), int(stream)]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


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
    noise-free sum) or noise-aware, a fresh channel realisation per batch from the "train" streams of
    `channel_seed(seed, ...)`: an AirCompConnection (its design and noise in the forward pass, differentiable)
    or a DigitalConnection (each batch quantised and only the entries that arrived summed; the gradient is
    the ideal sum's). Returns the mean training loss of each epoch."""
    if len(y) < batch_size:
        raise ValueError(f"`batch_size` {batch_size} exceeds the {len(y)} training examples")
    _check_features(model, x)
    rng = np.random.default_rng(seed)
    opt = keras.optimizers.Adam(lr)
    variables = model.device_variables + model.server_variables
    over_air, digital = isinstance(connection, AirCompConnection), isinstance(connection, DigitalConnection)
    if connection is not None and not (over_air or digital or isinstance(connection, IdealConnection)):
        raise TypeError(f"`connection` must be None, IdealConnection, AirCompConnection or DigitalConnection, "
                        f"got {type(connection).__name__}")

    @tf.function
    def step(xb, yb, *block):
        with tf.GradientTape() as tape:
            p = model.payloads(xb)
            s = tf.reduce_sum(p, axis=1)
            if over_air:
                s = connection(p, *block)
            elif digital:
                s = s + tf.stop_gradient(connection.deliver(p, *block) - s)            # straight-through
            loss = CROSS_ENTROPY(yb, model.head(s))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    steps = len(y) // batch_size
    blocks = None
    if over_air or digital:                                       # every batch's channel at once, vectorised
        blocks = connection.draw(epochs * steps, seed=channel_seed(seed, "train"))
    if digital:
        blocks = connection.delivered(blocks, batch_size, seed=channel_seed(seed, "train", 1))
    reseed(channel_seed(seed, "train", 1))                                          # the noise of the run
    losses = []
    for epoch in range(epochs):
        total = 0.0
        for t, idx in enumerate(_batches(len(y), batch_size, rng)):
            args = () if blocks is None else (blocks[epoch * steps + t],) if digital else blocks[epoch * steps + t]
            total += float(step(x[idx], y[idx], *args))
        losses.append(total / steps)
    return losses


def _check_features(model, x):
    if x.ndim != 3 or x.shape[1:] != (model.num_devices, model.in_features):
        raise ValueError(f"`x` must have shape [S, {model.num_devices} devices, {model.in_features} features], "
                         f"got {list(x.shape)}")


def evaluate_multiview(model, x, y, connection=None, block=128, repeats=1, stats=None, seed=0, split="test"):
    """Accuracy of `model` on features x [S, M, F], labels y [S] through `connection` (None: ideal sum).

    Radio connections cut the examples into blocks of `block` (one channel realisation each, every block
    drawn `repeats` times, all in one call); AirComp normalises with `stats` (mean [M, D], scale [D]; None:
    each block's own). Channels and noise come from the `split` streams of `channel_seed(seed, ...)` ("test"
    or "validation"; never the training ones).
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
    if split == "train":
        raise ValueError("`split` must be 'validation' or 'test' (the training streams are train_multiview's)")
    n = len(y)
    pad = -n % block                                                              # wrap to whole blocks
    order = np.tile(np.concatenate([np.arange(n), np.arange(pad) % n]).reshape(-1, block), (repeats, 1))
    blocks = connection.draw(len(order), seed=channel_seed(seed, split))          # [repeats T, block]
    noise_seed = channel_seed(seed, split, 1)
    if isinstance(connection, AirCompConnection):
        est = connection(payloads[order], *blocks[:], stats=stats, seed=noise_seed).numpy()
        uses = connection.channel_uses()
    else:
        est, cu = connection(payloads[order], blocks, seed=noise_seed)
        uses = float(np.sum(cu)) / order.size
    est = est.reshape(repeats, -1, model.width)[:, :n]                            # [repeats, S, D]
    acc = np.mean([_accuracy(model, e, y) for e in est])
    return float(acc), float(np.mean((est - ideal) ** 2) / np.mean(ideal ** 2)), float(uses)


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
