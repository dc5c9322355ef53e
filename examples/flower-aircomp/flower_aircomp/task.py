"""The model and data, NumPy only (the clients need neither TensorFlow nor deft6g): softmax regression
W [64, 10], b [10] on scikit-learn's packaged 8 x 8 digits (1797 images, no download); 20 % held out for the
server's evaluation, the rest split IID over the clients by a seeded permutation."""

import numpy as np
from sklearn.datasets import load_digits

NUM_FEATURES, NUM_CLASSES = 64, 10


def load_split(seed=0):
    """(x_train [n, 64] float32 in [0, 1], y_train [n], x_test, y_test): a seeded 80/20 split."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = (x[order] / 16.0).astype(np.float32), y[order]
    cut = int(0.8 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def partition(partition_id, num_partitions, seed=0):
    """Client `partition_id`'s share of the training split: (x [n_k, 64], y [n_k])."""
    x, y, _, _ = load_split(seed)
    parts = np.array_split(np.arange(len(y)), num_partitions)
    return x[parts[partition_id]], y[parts[partition_id]]


def initial_arrays(seed=0):
    """{"w": [64, 10], "b": [10]} float32: small seeded weights, zero bias."""
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(0.0, 0.01, (NUM_FEATURES, NUM_CLASSES)).astype(np.float32),
            "b": np.zeros(NUM_CLASSES, np.float32)}


def loss_and_grads(w, b, x, y):
    """Mean cross-entropy and its gradients (dW [64, 10], db [10])."""
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    p[np.arange(len(y)), y] -= 1.0
    return loss, x.T @ p / len(y), p.mean(axis=0)


def accuracy(w, b, x, y):
    return float(np.mean(np.argmax(x @ w + b, axis=1) == y))


def local_sgd(w, b, x, y, epochs, batch_size, lr, seed):
    """Minibatch SGD from (w, b); the batch order is seeded. Returns (w, b, mean training loss)."""
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            loss, dw, db = loss_and_grads(w, b, x[idx], y[idx])
            w, b = w - lr * dw, b - lr * db
            losses.append(loss)
    return w.astype(np.float32), b.astype(np.float32), float(np.mean(losses))
