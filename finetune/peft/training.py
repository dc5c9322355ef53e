"""Training a PeftModel: a compiled step (full inputs or cached activations), evaluation, block importance."""

import math
import weakref

import numpy as np
import tensorflow as tf
import tf_keras as keras

# the training loss of every classifier here: mean cross-entropy of integer labels [B] and logits [B, C]
CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
"""The training loss of every classifier here: mean cross-entropy of integer labels [B] and logits [B, C]."""


def _logits(model, x, start, training):
    return model(x, training=training) if start is None else model.forward_from(x[0], x[1], start, training)


def make_train_step(model, optimizer, start_block=None):
    """A `tf.function` step(x, y) -> loss that applies one optimizer update to the trainable weights.

    x: model inputs, or with `start_block` = j the cached pair (hidden [B, T, H], mask [B, T]) from
    `model.activations(inputs, j)`, so only blocks j.. run forward and backward.
    """
    variables = model.trainable_variables

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = CROSS_ENTROPY(y, _logits(model, x, start_block, True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def make_grad_fn(model, start_block=None):
    """A `tf.function` grads(x, y) -> (loss, [gradient per trainable variable]) with no update."""
    variables = model.trainable_variables

    @tf.function
    def grads(x, y):
        with tf.GradientTape() as tape:
            loss = CROSS_ENTROPY(y, _logits(model, x, start_block, True))
        return loss, tape.gradient(loss, variables)

    return grads


def batches(x, y, batch_size, rng=None):
    """Yield (x_batch, y_batch) over arrays (x: array, dict of arrays or tuple of arrays), shuffled when
    `rng` (np.random.Generator) is given."""
    n = len(y)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        yield take(x, idx), y[idx]


def trim_padding(x, multiple=8):
    """Cut a cached batch (hidden [B, T, H], mask [B, T]) to its longest real sequence, rounded up to a
    multiple of `multiple` tokens (few distinct shapes, so compiled steps are reused). Exact: padded
    positions are masked out of attention and pooling. Other inputs are returned unchanged."""
    if not (isinstance(x, tuple) and len(x) == 2 and np.ndim(x[1]) == 2):
        return x
    h, m = x
    real = np.flatnonzero(np.asarray(m).any(0))
    t = min(m.shape[1], multiple * max(1, math.ceil(((real[-1] + 1) if real.size else 1) / multiple)))
    return h[:, :t], m[:, :t]


def take(x, idx):
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(v[idx] for v in x)
    return x[idx]


_PREDICT = weakref.WeakKeyDictionary()    # model -> {(start_block, jit_compile): compiled predict}


def evaluate(model, x, y, start_block=None, batch_size=256, jit_compile=False):
    """Accuracy of `model` on (x, y); x as in `make_train_step`. The compiled predict (XLA with
    `jit_compile`) is kept per model."""
    fns = _PREDICT.setdefault(model, {})
    if (start_block, jit_compile) not in fns:
        fns[start_block, jit_compile] = tf.function(
            lambda xb: tf.argmax(_logits(model, xb, start_block, False), axis=-1), reduce_retracing=True,
            jit_compile=jit_compile)
    predict = fns[start_block, jit_compile]
    if isinstance(x, tuple) and len(x) == 2 and np.ndim(x[1]) == 2:        # cached: batch by length, trim
        lengths = np.asarray(x[1]).sum(1)
        if np.any(np.diff(lengths) < 0):                                     # (no copy when already sorted)
            order = np.argsort(lengths, kind="stable")
            x, y = take(x, order), np.asarray(y)[order]
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int(np.sum(predict(trim_padding(xb)).numpy() == yb))
    return correct / len(y)


def block_importance(model, x, y, batch_size=32, num_batches=4, start_block=None):
    """Per-block sensitivity: the mean over `num_batches` batches of the squared gradient norm of each
    block's PEFT weights (an empirical-Fisher proxy); float array [num_blocks]. Blocks without PEFT get 0."""
    grads = make_grad_fn(model, start_block)
    block_of = {v.ref(): block for block, v in model.peft_variables_by_block()}
    score = np.zeros(model.num_blocks)
    for b, (xb, yb) in enumerate(batches(x, y, batch_size, np.random.default_rng(0))):
        if b == num_batches:
            break
        _, g = grads(xb, yb)
        for v, gv in zip(model.trainable_variables, g):
            if v.ref() in block_of and gv is not None:
                score[block_of[v.ref()]] += float(tf.reduce_sum(tf.square(gv))) / num_batches
    return score
