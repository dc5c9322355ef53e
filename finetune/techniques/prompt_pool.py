"""A pool of soft prompts under a memory budget, and its batched multi-prompt forward pass.

A member is one soft prompt -- deep prompts {block: [n_b, H]} -- with its own classification head (kernel
[H, C], bias [C]) over the mean-pooled output of the frozen model. The pool holds at most `capacity` members
(or as many as `budget_bytes` allows); when it is full, a new member replaces the weakest on the newest
held-out data, or is itself dropped when it is the weakest.

Batched pass. With every prompt inserted at blocks >= j (j = the lowest prompt block), the input of block j
does not depend on the prompt: it is computed once (or read from the activation cache), and blocks j..L-1 run
once on a batch of (prompt, example) pairs -- hidden [M B, n + T, H], rows m B .. (m + 1) B - 1 carrying
member m's prompt. Blocks run per example: j + M (L - j), against M L for one full forward per prompt.
"""

import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..peft.training import take, trim_padding


@dataclass
class PromptMember:
    """One pool entry: `prompts` {block: float32 [n_b, H]}, head `kernel` float32 [H, C] and `bias` [C];
    `origin`: the index of the stream chunk it was trained on; `steps`: the optimizer steps behind it, those of
    the member it was warm-started from included (its lineage; 0 for an untrained member)."""
    prompts: dict
    kernel: np.ndarray
    bias: np.ndarray
    origin: int = 0
    steps: int = 0

    def signature(self):
        """({block: (n_b, H)}, kernel shape): members of one pool must agree on it."""
        return {b: tuple(p.shape) for b, p in sorted(self.prompts.items())}, tuple(self.kernel.shape)

    @property
    def prompt_bytes(self):
        """Bytes of the soft prompts alone (float32)."""
        return int(sum(p.nbytes for p in self.prompts.values()))

    @property
    def nbytes(self):
        """Bytes the member occupies: prompts + head (float32)."""
        return self.prompt_bytes + int(self.kernel.nbytes + self.bias.nbytes)


def member_of(peft, origin=0):
    """Snapshot of a prompt-tuned PeftModel's prompts and head as a PromptMember (copies)."""
    if not peft.prompts or peft.head is None:
        raise ValueError("`peft` must hold soft prompts and a head "
                         "(get_peft_model(model, PromptTuningConfig(...), num_labels))")
    return PromptMember({b: p.numpy().copy() for b, p in peft.prompts.items()}, peft.head.kernel.numpy().copy(),
                        peft.head.bias.numpy().copy(), origin)


def check_member(peft, member, name="member"):
    """Raise ValueError naming `name` when `member` does not fit `peft`'s prompt blocks, lengths and head."""
    mine = member_of(peft).signature()
    if member.signature() != mine:
        raise ValueError(f"`{name}` has prompt/head shapes {member.signature()}, the model needs {mine}")


def load_member(peft, member):
    """Assign a member's prompts and head to `peft` (shapes checked)."""
    check_member(peft, member)
    for b, p in member.prompts.items():
        peft.prompts[b].assign(p)
    peft.head.kernel.assign(member.kernel)
    peft.head.bias.assign(member.bias)


class PromptPool:
    """At most `capacity` members, or as many as fit in `budget_bytes` (give exactly one of the two).

    `members` is in slot order: a member that replaces another takes its slot (the gate's columns follow the
    slots). `add(member, scores)` never lets the pool exceed its budget.
    """

    def __init__(self, capacity=None, budget_bytes=None):
        if (capacity is None) == (budget_bytes is None):
            raise ValueError(f"give exactly one of `capacity` and `budget_bytes`, got {capacity!r} and "
                             f"{budget_bytes!r}")
        for name, value in (("capacity", capacity), ("budget_bytes", budget_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        self.budget_bytes = budget_bytes
        self.capacity = capacity
        self.members = []

    @property
    def nbytes(self):
        return sum(m.nbytes for m in self.members)

    def _fix_capacity(self, member):
        if self.capacity is None:
            self.capacity = int(self.budget_bytes // member.nbytes)
            if self.capacity < 1:
                raise ValueError(f"`budget_bytes` {self.budget_bytes} cannot hold one member of {member.nbytes} bytes")

    def add(self, member, scores):
        """Offer `member`; `scores` float [len(members) + 1]: the held-out score of every member, then of the
        new one (higher is better). Returns (slot the new member took or None, dropped member or None)."""
        if self.members and member.signature() != self.members[0].signature():
            raise ValueError(f"`member` has prompt/head shapes {member.signature()}, the pool holds "
                             f"{self.members[0].signature()}")
        scores = np.asarray(scores, np.float64)
        if scores.shape != (len(self.members) + 1,):
            raise ValueError(f"`scores` must have shape ({len(self.members) + 1},), got {scores.shape}")
        self._fix_capacity(member)
        if len(self.members) < self.capacity:
            self.members.append(member)
            return len(self.members) - 1, None
        weakest = int(np.argmin(scores))
        if weakest == len(self.members):
            return None, member
        dropped, self.members[weakest] = self.members[weakest], member
        return weakest, dropped


_POOL_FNS = weakref.WeakKeyDictionary()     # peft -> {start block: compiled batched pass}


def _pool_fn(peft, start):
    fns = _POOL_FNS.setdefault(peft, {})
    if start not in fns:
        @tf.function(reduce_retracing=True)
        def run(h, m, prompts, kernels, biases):
            num, b = tf.shape(kernels)[0], tf.shape(h)[0]
            per_row = {blk: tf.repeat(p, b, axis=0) for blk, p in prompts.items()}     # member-major rows
            out, out_mask = peft.run_blocks(tf.tile(h, [num, 1, 1]), tf.tile(m, [num, 1]), start, prompts=per_row)
            feats = tf.reshape(peft.pooled(out, out_mask), [num, b, -1])
            return tf.einsum("mbh,mhc->mbc", feats, kernels) + biases[:, None]
        fns[start] = run
    return fns[start]


def _by_length(mask, rows):
    """Index batches of at most `rows` examples, shortest sequences first (so trimming pads little)."""
    order = np.argsort(np.asarray(mask).sum(1), kind="stable")
    return [order[s:s + rows] for s in range(0, len(order), rows)]


def pool_logits(peft, members, hidden, mask, start, batch_rows=512):
    """Logits of every member in one batched pass per batch: float32 [M, S, C].

    peft: the prompt-tuned PeftModel the members fit; hidden float32 [S, T, H], mask [S, T]: the frozen input
    of block `start` (`peft.activations(inputs, start)`), `start` <= the lowest prompt block. Each batch
    holds batch_rows // M examples, sorted by length and trimmed of padding (exact).
    """
    if not members:
        raise ValueError("`members` is empty")
    for i, m in enumerate(members):
        check_member(peft, m, f"members[{i}]")
    if not 0 <= start <= peft.lowest_tuned_block():
        raise ValueError(f"`start` must be in [0, {peft.lowest_tuned_block()}] (lowest prompt block), got {start}")
    prompts = {b: tf.constant(np.stack([m.prompts[b] for m in members])) for b in members[0].prompts}
    kernels = tf.constant(np.stack([m.kernel for m in members]))
    biases = tf.constant(np.stack([m.bias for m in members]))
    run = _pool_fn(peft, start)
    out = np.zeros((len(members), len(mask), kernels.shape[-1]), np.float32)
    for idx in _by_length(mask, max(1, batch_rows // len(members))):
        h, m = trim_padding((hidden[idx], mask[idx]))
        out[:, idx] = run(tf.constant(h), tf.constant(m, tf.float32), prompts, kernels, biases).numpy()
    return out


def one_by_one_logits(peft, members, inputs, start=None, batch_size=512):
    """The baseline of `pool_logits`: load each member into `peft` and run it alone; float32 [M, S, C].

    start None: `inputs` are tokens (dict input_ids, attention_mask [S, T]) and every member runs a full
    forward; start = j: `inputs` is the cached pair (hidden [S, T, H], mask [S, T]) of block j and every member
    runs blocks j.. on it. Batches are sorted by length and trimmed like `pool_logits`'. Leaves the last member
    loaded in `peft`.
    """
    if start is None:
        mask = inputs["attention_mask"]
        fn = _full_fn(peft)
    else:
        mask = inputs[1]
        fn = _from_fn(peft, start)
    out = []
    for member in members:
        load_member(peft, member)
        logits = np.zeros((len(mask), peft.head.units), np.float32)
        for idx in _by_length(mask, batch_size):
            xb = take(inputs, idx)
            logits[idx] = fn(_trim_tokens(xb) if start is None else trim_padding(xb)).numpy()
        out.append(logits)
    return np.stack(out)


INFERENCE_MODES = ("one_by_one", "shared", "batched")
"""`pool_logits_from_tokens` modes: a full forward per member, frozen blocks shared, or all members in one batch."""


def pool_logits_from_tokens(peft, members, inputs, mode="batched", batch_size=64):
    """The pool's inference from tokens (dict input_ids, attention_mask [S, T]): member logits float32 [M, S, C].

    mode "batched": per batch of `batch_size` examples, blocks < j run once and blocks j.. once on the
    (prompt, example) rows; "shared": blocks < j once, blocks j.. once per member; "one_by_one": a full
    forward per member (`one_by_one_logits`). Batches are sorted by length and trimmed in every mode.
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"`mode` must be one of {INFERENCE_MODES}, got {mode!r}")
    if mode == "one_by_one":
        return one_by_one_logits(peft, members, inputs, batch_size=batch_size)
    start = peft.lowest_tuned_block()
    out = np.zeros((len(members), len(inputs["attention_mask"]), peft.head.units), np.float32)
    for idx in _by_length(inputs["attention_mask"], batch_size):
        h, m = peft.activations(_trim_tokens(take(inputs, idx)), start, batch_size=len(idx))
        if mode == "batched":
            out[:, idx] = pool_logits(peft, members, h, m, start, batch_rows=len(members) * len(idx))
        else:
            out[:, idx] = one_by_one_logits(peft, members, (h, m), start=start, batch_size=len(idx))
    return out


def _trim_tokens(x, multiple=8):
    """Token batch (dict input_ids, attention_mask [B, T]) cut to its longest sequence, rounded up to `multiple`."""
    m = np.asarray(x["attention_mask"])
    t = min(m.shape[1], multiple * max(1, -(-int(m.sum(1).max()) // multiple)))
    return {k: v[:, :t] for k, v in x.items()}


def _full_fn(peft):
    return _cached_fn(peft, None, lambda x: peft(x, training=False))


def _from_fn(peft, start):
    return _cached_fn(peft, start, lambda x: peft.forward_from(x[0], tf.cast(x[1], tf.float32), start))


_ONE_FNS = weakref.WeakKeyDictionary()


def _cached_fn(peft, key, f):
    fns = _ONE_FNS.setdefault(peft, {})
    if key not in fns:
        fns[key] = tf.function(f, reduce_retracing=True, autograph=False)     # no tensor-dependent Python flow
    return fns[key]
