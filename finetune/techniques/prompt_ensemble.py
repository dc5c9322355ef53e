r"""On-the-fly prompt-ensemble tuning (DEFT technique 4): a device receives labelled data as a stream of
chunks, trains one soft prompt per chunk on the frozen model, keeps a pool of them under a memory budget and
combines the pool at inference.

Per chunk t (train part D_t, held-out part V_t):
1. score the pool on V_t;
2. train a new member on D_t from a fresh initialisation, or warm-started from the pool's best on V_t;
3. offer it to the pool (`PromptPool.add`): when full, the weakest on V_t -- the new member included -- goes;
4. update the gate on the newest held-out data (V_t and the `gate_memory` - 1 held-out parts before it).

Held-out score: accuracy - CE / (100 n) on the n examples of V_t (the cross-entropy only breaks ties).

Combination rules over the member logits l_m(x) in R^C:
- mean: argmax_c (1/M) sum_m l_m(x)_c;
- vote: the class most members predict, ties broken by the mean logits;
- gate: argmax_c sum_m g_m(x) l_m(x)_c with g(x) = softmax(W^T z(x) + b) over the occupied slots, a convex
  combination; z(x) is the standardised mean-pooled frozen input of the prompt block (free: it is the cached
  activation every member shares). W = 0, b = 0 at the start, so the gate starts as the mean rule; it is
  trained by gradient descent on CE(softmax(sum_m g_m l_m), y) + l2 ||W||^2, whose gradient is, per example,
  dL/da_m = g_m (u_m - sum_k g_k u_k) with u_m = l_m . (softmax(s) - y), s = sum_m g_m l_m.

Heads: every member has its own head. With a frozen body a prompt only moves the pooled features; the head
trained with it on the same chunk turns them into classes, so the (prompt, head) pair is the classifier. A
shared head would either freeze after the first chunk (later prompts can only bend features towards an old
head) or be retrained per chunk (breaking the prompts co-adapted with its earlier versions). A head costs
H C + C floats (770 for MiniLM, 2 classes) against n H for the prompt (3,072 at n = 8); both count in the budget.
"""

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
import tf_keras as keras

from deft6g.rng import derive_seed

from ..peft.tuners import PromptTuningConfig
from ..peft.peft_model import get_peft_model
from .prompt_pool import PromptMember, PromptPool, load_member, member_of, pool_logits
from ..peft.training import batches, make_train_step, trim_padding

RULES = ("mean", "vote", "gate")
"""`combine` rules: the mean of the members' logits, a majority vote (ties by the mean), or per-example gate weights."""
INITS = ("fresh", "warm")


def combine(logits, rule, weights=None):
    """Ensemble prediction, int64 [S], from member logits float [M, S, C] by `rule` (see `RULES`); `weights`
    float [S, M] (rows convex) for "gate"."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 3 or logits.shape[0] < 1:
        raise ValueError(f"`logits` must have shape [M >= 1, S, C], got {logits.shape}")
    mean = logits.mean(0)
    if rule == "mean":
        return mean.argmax(-1)
    if rule == "vote":
        votes = np.zeros_like(mean)
        np.add.at(votes, (np.arange(mean.shape[0])[None], logits.argmax(-1)), 1.0)   # [S, C] vote counts
        top = votes == votes.max(-1, keepdims=True)
        return np.where(top, mean, -np.inf).argmax(-1)
    if rule == "gate":
        w = np.asarray(weights, np.float64)
        if w.shape != logits.shape[:2][::-1]:
            raise ValueError(f"`weights` must have shape [S, M] = {logits.shape[:2][::-1]}, got {w.shape}")
        return np.einsum("sm,msc->sc", w, logits).argmax(-1)
    raise ValueError(f"unknown `rule` {rule!r}; known: {RULES}")


def heldout_scores(logits, labels):
    """Score float [M] of member logits [M, n, C] on labels int [n]: accuracy - CE / (100 n)."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    logp = logits - np.logaddexp.reduce(logits, -1, keepdims=True)
    ce = -np.take_along_axis(logp, labels[None, :, None], -1)[..., 0].mean(-1)
    acc = (logits.argmax(-1) == labels[None]).mean(-1)
    return acc - ce / (100 * len(labels))


def frozen_features(hidden, mask):
    """Mean over the real tokens of a cached block input: float32 [S, H] from hidden [S, T, H], mask [S, T]."""
    m = np.asarray(mask, np.float32)[..., None]
    return (np.asarray(hidden) * m).sum(1) / np.maximum(m.sum(1), 1.0)


def _softmax(a, axis=-1):
    e = np.exp(a - a.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


class EnsembleGate:
    """Input-dependent convex weights over the pool's slots: g(x) = softmax(W^T z(x) + b) (see the module).

    num_features: F; capacity: slots K; l2, lr, steps: the gradient-descent fit per update. Features are
    standardised with the running mean and variance of every feature row the gate has been updated with.
    """

    def __init__(self, num_features, capacity, l2=1e-2, lr=0.5, steps=50):
        if capacity < 1:
            raise ValueError(f"`capacity` must be >= 1, got {capacity}")
        self.W = np.zeros((num_features, capacity))
        self.b = np.zeros(capacity)
        self.l2, self.lr, self.steps = l2, lr, steps
        self.count, self.mu, self.m2 = 0, np.zeros(num_features), np.zeros(num_features)

    def _z(self, features):
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[1] != self.W.shape[0]:
            raise ValueError(f"`features` must have shape [S, {self.W.shape[0]}], got {features.shape}")
        return (features - self.mu) / np.sqrt(self.m2 / max(self.count - 1, 1) + 1e-6)

    def weights(self, features, slots):
        """Convex weights float64 [S, len(slots)] over the given occupied `slots` for features [S, F]."""
        slots = list(slots)
        return _softmax(self._z(features) @ self.W[:, slots] + self.b[slots])

    def reset_slot(self, slot, others):
        """A new member took `slot`: its column starts at the mean of the `others` (occupied slots)."""
        others = [o for o in others if o != slot]
        self.W[:, slot] = self.W[:, others].mean(1) if others else 0.0
        self.b[slot] = self.b[others].mean() if others else 0.0

    def loss_and_grads(self, z, logits, labels, slots):
        """Mean CE of the gated logits and its gradients (dW [F, M], db [M]) over `slots`; z standardised [S, F],
        logits [M, S, C], labels [S]."""
        g = _softmax(z @ self.W[:, slots] + self.b[slots])                       # [S, M]
        s = np.einsum("sm,msc->sc", g, logits)
        p = _softmax(s)
        n = len(labels)
        loss = -np.log(p[np.arange(n), labels] + 1e-300).mean() + self.l2 * np.sum(self.W[:, slots] ** 2)
        d_s = p.copy()
        d_s[np.arange(n), labels] -= 1.0
        u = np.einsum("msc,sc->sm", logits, d_s)                                  # dL/dg per example
        d_a = g * (u - (g * u).sum(1, keepdims=True)) / n
        return loss, z.T @ d_a + 2 * self.l2 * self.W[:, slots], d_a.sum(0)

    def update(self, features, logits, labels, slots):
        """Fold `features` [S, F] into the running statistics, then `steps` gradient steps on (logits [M, S, C]
        of the members in `slots`, labels [S]). Returns the loss before and after."""
        features = np.asarray(features, np.float64)
        for row in features:                                                       # Welford
            self.count += 1
            delta = row - self.mu
            self.mu += delta / self.count
            self.m2 += delta * (row - self.mu)
        slots, z = list(slots), self._z(features)
        logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
        before = self.loss_and_grads(z, logits, labels, slots)[0]
        for _ in range(self.steps):
            _, d_w, d_b = self.loss_and_grads(z, logits, labels, slots)
            self.W[:, slots] -= self.lr * d_w
            self.b[slots] -= self.lr * d_b
        return before, self.loss_and_grads(z, logits, labels, slots)[0]


@dataclass
class ChunkLog:
    """What one chunk did: the new member's origin, where it came from, its slot (None: rejected), the
    dropped member's origin (None: nothing dropped), held-out scores of [pool..., new]."""
    origin: int
    init_from: object
    slot: object
    dropped: object
    scores: list = field(default_factory=list)


# sub-streams of a member's origin (`derive_seed(seed, origin, stream)`)
INIT_STREAM, BATCH_STREAM = 0, 1


class MemberTrainer:
    """Trains (prompt, head) members on cached activations of the frozen model.

    model: an HF TF bert/vit model; num_labels: C; tokens_pattern: {block: n_b} deep prompts (blocks >= j, the
    lowest one: everything below j is computed once, `activations`); lr, epochs, batch_size: Adam training
    per member; seed: the base of every random choice (a member's fresh init and its batch order are drawn from
    derive_seed(seed, origin, INIT_STREAM) and derive_seed(seed, origin, BATCH_STREAM); reassign it between
    streams). One PeftModel and one compiled step serve all members (Adam's state
    is zeroed between members); `steps_taken` counts the optimizer steps run so far.
    """

    def __init__(self, model, num_labels, tokens_pattern, lr=1e-2, epochs=4, batch_size=32, seed=0):
        if not tokens_pattern or any(n < 1 for n in tokens_pattern.values()):
            raise ValueError(f"`tokens_pattern` must give >= 1 prompt token to some block, got {tokens_pattern!r}")
        cfg = PromptTuningConfig(num_virtual_tokens=tokens_pattern.get(0, 0), tokens_pattern=dict(tokens_pattern),
                                 prompt_init="random", seed=seed)
        self.peft = get_peft_model(model, cfg, num_labels=num_labels, seed=seed)
        self.start = self.peft.lowest_tuned_block()
        self.epochs, self.batch_size, self.seed, self.steps_taken = epochs, batch_size, seed, 0
        self.optimizer = keras.optimizers.Adam(lr)
        self.step = make_train_step(self.peft, self.optimizer, start_block=self.start)

    def activations(self, inputs):
        """Frozen input of the lowest prompt block: (hidden float32 [S, T, H], mask [S, T])."""
        return self.peft.activations(inputs, self.start)

    def fresh_member(self, hidden, mask, origin):
        """A fresh init: every prompt row a real token's block-j input drawn from (hidden, mask) (the deep-prompt
        analogue of vocabulary init), head N(0, 0.02^2), bias 0; seeded by derive_seed(seed, origin, INIT_STREAM)."""
        rng = np.random.default_rng(derive_seed(self.seed, origin, INIT_STREAM))
        real = np.argwhere(np.asarray(mask) > 0)
        prompts = {b: np.asarray(hidden)[tuple(real[rng.integers(0, len(real), p.shape[0])].T)].astype(np.float32)
                   for b, p in self.peft.prompts.items()}
        kernel = (0.02 * rng.standard_normal(self.peft.head.kernel.shape)).astype(np.float32)
        return PromptMember(prompts, kernel, np.zeros(kernel.shape[1], np.float32), origin)

    def steps_for(self, num_examples):
        """Optimizer steps of one `train` call with `epochs` on `num_examples` texts: epochs ceil(n / batch_size)."""
        return self.epochs * -(-num_examples // self.batch_size)

    def train(self, hidden, mask, labels, init=None, origin=0, steps=None):
        """A member trained on (hidden, mask, labels) from `init` (a PromptMember; None: `fresh_member`) for
        `steps` optimizer steps (None: `epochs` passes, `steps_for(len(labels))` steps; else passes over
        reshuffled batches until exactly `steps`). The member's `steps` is init's plus these; `steps_taken`
        counts every step this trainer has run."""
        if steps is None:
            steps = self.steps_for(len(labels))
        elif isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"`steps` must be an int >= 1 or None, got {steps!r}")
        load_member(self.peft, init if init is not None else self.fresh_member(hidden, mask, origin))
        for v in self.optimizer.variables():
            v.assign(tf.zeros_like(v))
        rng = np.random.default_rng(derive_seed(self.seed, origin, BATCH_STREAM))
        done = 0
        while done < steps:
            for xb, yb in batches((hidden, mask.astype(np.float32)), np.asarray(labels), self.batch_size, rng):
                self.step(trim_padding(xb), yb)
                done += 1
                if done == steps:
                    break
        self.steps_taken += done
        member = member_of(self.peft, origin)
        member.steps = done + (init.steps if init is not None else 0)
        return member

    def logits(self, members, hidden, mask):
        """Member logits float32 [M, S, C] by the batched pass (`pool_logits`)."""
        return pool_logits(self.peft, members, hidden, mask, self.start)


class OnTheFlyEnsemble:
    """A pool of prompts tuned on the fly from a stream (see the module): `observe` one chunk at a time,
    `predict` with every rule.

    trainer: a MemberTrainer; pool: a PromptPool; init: "fresh" or "warm" (from the pool's best on the newest
    held-out data); gate_memory: how many of the newest held-out parts the gate is fitted on; gate_kwargs go
    to EnsembleGate. `scores` holds the members' scores on the newest held-out part (slot order), `newest` the
    last member trained. Member logits on the held-out parts are computed once each (keyed by the member's
    `origin`, unique in a stream).
    """

    def __init__(self, trainer, pool, init="fresh", gate_memory=4, **gate_kwargs):
        if init not in INITS:
            raise ValueError(f"`init` must be one of {INITS}, got {init!r}")
        if gate_memory < 1:
            raise ValueError(f"`gate_memory` must be >= 1, got {gate_memory}")
        if not isinstance(pool, PromptPool):
            raise TypeError(f"`pool` must be a PromptPool, got {type(pool).__name__}")
        self.trainer, self.pool, self.init, self.gate_memory = trainer, pool, init, gate_memory
        self.gate_kwargs, self.gate, self.newest, self.chunks = gate_kwargs, None, None, 0
        self.buffer, self.scores, self._origins, self._logits = [], np.zeros(0), set(), {}

    def _heldout_logits(self, members, part):
        """Logits [M, n, C] of `members` on buffered held-out part `part`, each computed once."""
        h, m, _ = dict(self.buffer)[part]
        todo = [mb for mb in members if (mb.origin, part) not in self._logits]
        if todo:
            for mb, lg in zip(todo, self.trainer.logits(todo, h, m)):
                self._logits[mb.origin, part] = lg
        return np.stack([self._logits[mb.origin, part] for mb in members])

    def observe(self, chunk, heldout, candidate=None):
        """Process one chunk: chunk and heldout are (hidden [S, T, H], mask [S, T], labels [S]) of the
        trainer's block. `candidate`: an already trained member to offer instead of training one (a fresh
        member does not depend on the pool, so pools of several sizes can share it). Returns a ChunkLog."""
        t, yv = self.chunks, heldout[2]
        self.buffer = (self.buffer + [(t, heldout)])[-self.gate_memory:]
        parts = [p for p, _ in self.buffer]
        self._logits = {k: v for k, v in self._logits.items() if k[1] in parts}
        members = self.pool.members
        old_scores = heldout_scores(self._heldout_logits(members, t), yv) if members else np.zeros(0)
        init_from = None
        if candidate is None:
            init = None
            if self.init == "warm" and members:
                init = members[int(np.argmax(old_scores))]
                init_from = init.origin
            candidate = self.trainer.train(*chunk, init=init, origin=t)
        if candidate.origin in self._origins:
            raise ValueError(f"`candidate` origin {candidate.origin} was offered before; origins must be unique")
        self._origins.add(candidate.origin)
        new_score = heldout_scores(self._heldout_logits([candidate], t), yv)[0]
        slot, dropped = self.pool.add(candidate, np.append(old_scores, new_score))
        scores = list(old_scores)
        if slot is not None:
            scores[slot:slot + 1] = [new_score]
        self.scores, self.newest, self.chunks = np.array(scores), candidate, t + 1
        if self.gate is None:
            self.gate = EnsembleGate(heldout[0].shape[-1], self.pool.capacity, **self.gate_kwargs)
        slots = list(range(len(self.pool.members)))
        if slot is not None:
            self.gate.reset_slot(slot, slots)
        feats = np.concatenate([frozen_features(b[0], b[1]) for _, b in self.buffer])
        logits = np.concatenate([self._heldout_logits(self.pool.members, p) for p in parts], axis=1)
        self.gate.update(feats, logits, np.concatenate([b[2] for _, b in self.buffer]), slots)
        return ChunkLog(candidate.origin, init_from, slot, None if dropped is None else dropped.origin,
                        [float(s) for s in np.append(old_scores, new_score)])

    def selected(self):
        """The member rated best on the newest held-out part (the pool's single-prompt choice)."""
        return self.pool.members[int(np.argmax(self.scores))]

    def gate_weights(self, hidden, mask):
        """The gate's convex weights float64 [S, M] over the pool's members for cached inputs."""
        return self.gate.weights(frozen_features(hidden, mask), range(len(self.pool.members)))

    def predict(self, hidden, mask, logits=None):
        """{rule: int64 [S]} for every rule of `RULES`; `logits` [M, S, C] of the pool's members when already
        computed (else the batched pass computes them)."""
        if not self.pool.members:
            raise ValueError("the pool is empty: `observe` a chunk first")
        if logits is None:
            logits = self.trainer.logits(self.pool.members, hidden, mask)
        w = self.gate_weights(hidden, mask)
        return {rule: combine(logits, rule, w) for rule in RULES}
