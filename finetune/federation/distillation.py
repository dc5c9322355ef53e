"""Distillation alignment of a FoMo emulator (offsite-tuning's recipe, Xiao, Lin, Han 2023).

The emulator keeps the full model's bottom and top blocks; its middle blocks stand in for the dropped ones.
Before devices receive it, the middle blocks are trained on public unlabelled text (not the devices' data)
so that, from the same input (the output of the bottom blocks), their output matches the full model's
hidden state at the input of the top blocks:

    min  sum_{tokens real}  || f_mid(h_bottom) - h_full(kept[n - top]) ||^2 / (tokens * H)

The bottom output and the full model's target are computed once (frozen), so a step runs only the middle
blocks forward and backward.
"""

import time
import weakref

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ..peft.architecture import transformer_blocks


def public_texts(texts, num_texts, min_words=8, seed=0):
    """Up to `num_texts` paragraphs (blank-line or line separated, at least `min_words` words) of the public
    corpus `texts` (list of str), in a seeded random order."""
    paragraphs = [p.strip() for t in texts for p in t.splitlines() if len(p.split()) >= min_words]
    order = np.random.default_rng(seed).permutation(len(paragraphs))[:num_texts]
    return [paragraphs[i] for i in order]


def _extended(mask):
    return (1.0 - tf.cast(mask, tf.float32)[:, None, None, :]) * -10000.0


def run_blocks(blocks, h, mask, training=False):
    """Run HF TF BERT blocks on hidden [B, T, H] with mask [B, T]; returns hidden [B, T, H]."""
    ext = _extended(mask)
    for blk in blocks:
        h = blk(hidden_states=h, attention_mask=ext, head_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, past_key_value=None, output_attentions=False, training=training)[0]
    return h


_STATES = weakref.WeakKeyDictionary()     # model -> compiled (ids, mask) -> all hidden states


def hidden_state(model, tokens, index, batch_size=64):
    """Input of block `index` of an HF TF BERT model (index = num blocks: the last output) for tokens (dict
    input_ids, attention_mask [S, T]); float32 [S, T, H]."""
    if model not in _STATES:
        _STATES[model] = tf.function(lambda ids, m: model(input_ids=ids, attention_mask=m,
                                                          output_hidden_states=True).hidden_states,
                                     reduce_retracing=True)
    states = _STATES[model]
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    return np.concatenate([states(ids[s:s + batch_size], mask[s:s + batch_size])[index].numpy()
                           for s in range(0, len(ids), batch_size)])


def masked_mse(a, b, mask):
    """Mean over real tokens and features of (a - b)^2; a, b [S, T, H], mask [S, T]."""
    m = np.asarray(mask, np.float64)[..., None]
    return float(np.sum((np.asarray(a, np.float64) - b) ** 2 * m) / (m.sum() * a.shape[-1]))


def boundary_states(full, emulator, kept, tokens, bottom=1, top=1):
    """(source, target) float32 [S, T, H]: the emulator's output of its `bottom` blocks and the full model's
    input of block kept[n - top] on `tokens`, what `align_emulator` trains the middle blocks between."""
    return hidden_state(emulator, tokens, bottom), hidden_state(full, tokens, kept[len(kept) - top])


def align_emulator(full, emulator, kept, tokens, bottom=1, top=1, steps=200, batch_size=32, lr=1e-4,
                   heldout=0.1, seed=0, states=None, heldout_seed=0, split=None):
    """Train the emulator's middle blocks (emulator indices bottom .. n-top-1) in place to match the full
    model at the top boundary on public `tokens` (dict input_ids, attention_mask [S, T]).

    full, emulator: HF TF BERT models (same vocabulary), emulator block i = full block kept[i]. A `heldout`
    fraction of the texts (chosen by `heldout_seed`, so every `seed` is measured on the same texts) measures
    the boundary MSE before and after; `seed` draws the training batches: the same seed gives the same
    weights. states: `boundary_states(...)` when already computed. split: (train_idx, heldout_idx), disjoint int
    indices into `tokens` that replace the `heldout` / `heldout_seed` choice (a fixed validation set shared by
    runs that train on different texts). Returns dict mse_before, mse_after (held-out, per entry), train_mse
    (last 20 steps), seconds."""
    n = len(kept)
    if not (0 <= bottom and 0 <= top and bottom + top < n):
        raise ValueError(f"the emulator's {n} blocks leave no middle to align with `bottom` {bottom}, `top` {top}")
    if not 0.0 < heldout < 1.0:
        raise ValueError(f"`heldout` must be in (0, 1), got {heldout}")
    t0 = time.time()
    mask = np.asarray(tokens["attention_mask"], np.float32)
    source, target = boundary_states(full, emulator, kept, tokens, bottom, top) if states is None else states
    middle = transformer_blocks(emulator)[bottom:n - top]
    variables = [v for blk in middle for v in blk.trainable_weights]
    if split is None:
        order = np.random.default_rng(heldout_seed).permutation(len(mask))
        n_held = max(1, int(round(heldout * len(mask))))
        held, train = order[:n_held], order[n_held:]
    else:
        train, held = (np.asarray(i, np.int64) for i in split)
        if not (train.size and held.size and np.intersect1d(train, held).size == 0
                and min(train.min(), held.min()) >= 0 and max(train.max(), held.max()) < len(mask)):
            raise ValueError(f"`split` must be two non-empty, disjoint index arrays into the {len(mask)} texts")
    rng = np.random.default_rng(seed)

    def predict(idx):
        return np.concatenate([run_blocks(middle, source[idx[s:s + 128]], mask[idx[s:s + 128]]).numpy()
                               for s in range(0, len(idx), 128)])

    before = masked_mse(predict(held), target[held], mask[held])
    opt = keras.optimizers.Adam(lr)

    @tf.function(reduce_retracing=True)
    def step(h, m, y):
        with tf.GradientTape() as tape:
            err = tf.reduce_sum(tf.square(run_blocks(middle, h, m) - y), -1)
            loss = tf.reduce_sum(err * m) / (tf.reduce_sum(m) * tf.cast(tf.shape(y)[-1], tf.float32))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    losses = []
    for _ in range(steps):
        idx = rng.choice(train, min(batch_size, len(train)), replace=False)
        losses.append(float(step(source[idx], mask[idx], target[idx])))
    return {"mse_before": before, "mse_after": masked_mse(predict(held), target[held], mask[held]),
            "train_mse": float(np.mean(losses[-20:])) if losses else float("nan"), "seconds": time.time() - t0}
