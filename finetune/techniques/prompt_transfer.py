r"""Device-to-device prompt transfer (DEFT technique 5; SPoT, Vu et al., ACL 2022).

A device starting a new task initialises its soft prompt from a neighbour's prompt trained on a related
task, then fine-tunes it. The pieces:

- `TASKS`: related tasks from the offline data -- BBC News topic pairs and 5-way topics, Rotten Tomatoes
  sentiment and its short/long-review subsets. Every task names its label words.
- `PromptClassifier`: a frozen FoMo with a deep soft prompt in one block and a *frozen label-name head*:
  :math:`\mathrm{logits}_c = s \cos(\bar h, e_c)`, :math:`\bar h` the mean-pooled output over the real tokens
  and :math:`e_c` the mean-pooled embedding of class c's label word (no prompt). The head is not trained and
  not transferred: as in SPoT (a frozen T5 reading labels as words) all task learning sits in the prompt, so
  the prompt alone is the transferable object and the D2D payload, and a task with other labels needs no new
  head -- a trained head would learn most of the task and hide the prompt's contribution.
- `task_embedding`: SPoT's task embedding, the mean over tokens of a prompt's change from the shared initial
  prompt; `choose_by_similarity` (cosine between task embeddings) and `choose_by_trial` (accuracy of each
  source prompt on a few labelled target examples).
- `initial_prompt`: random N(0, 0.02^2) or vocabulary init (embeddings of random vocabulary tokens).
- `device_split`: the target devices' texts (own training and validation) and the neighbours' training texts,
  disjoint across every task of a dataset (docs/design.md §8); `task_relation` says how close a source task
  is to a target (a near-duplicate shares the target's classes on the same corpus).
"""

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras as keras

from deft6g.rng import derive_seed

from ..peft.tuners import PromptTuningConfig
from ..peft.data import (cached_arrays, content_digest, data_split, load_dataset, tokenize, tokenizer_digest,
                         validation_split)
from ..peft.fomo import model_key
from ..peft.peft_model import get_peft_model
from ..peft.training import batches, make_train_step


@dataclass(frozen=True)
class TransferTask:
    """A classification task: `classes` of `dataset` (in label order), read out through `label_words`;
    `max_words`/`min_words` keep texts by word count (None: no limit)."""
    name: str
    dataset: str
    classes: tuple
    label_words: tuple
    min_words: int = None
    max_words: int = None


SHORT_REVIEW_WORDS = 20         # Rotten Tomatoes reviews have a median of about 21 words
TASKS = {t.name: t for t in (
    TransferTask("bbc_topics5", "bbc_news", ("business", "entertainment", "politics", "sports", "tech"),
                 ("business", "entertainment", "politics", "sport", "technology")),
    TransferTask("bbc_business_tech", "bbc_news", ("business", "tech"), ("business", "technology")),
    TransferTask("bbc_sport_entertainment", "bbc_news", ("sports", "entertainment"), ("sport", "entertainment")),
    TransferTask("bbc_politics_business", "bbc_news", ("politics", "business"), ("politics", "business")),
    TransferTask("rt_sentiment", "rotten_tomatoes", ("rotten", "fresh"), ("negative", "positive")),
    TransferTask("rt_short", "rotten_tomatoes", ("rotten", "fresh"), ("negative", "positive"),
                 max_words=SHORT_REVIEW_WORDS),
    TransferTask("rt_long", "rotten_tomatoes", ("rotten", "fresh"), ("negative", "positive"),
                 min_words=SHORT_REVIEW_WORDS + 1),
)}
"""The transfer tasks (`TransferTask`) by name."""


def get_task(name):
    """The `TransferTask` called `name`; an unknown name raises ValueError listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


@dataclass
class TaskArrays:
    """Cached block inputs of one task. train/test: (hidden float32 [S, T, H], mask float32 [S, T]);
    y_train/y_test int64 [S] in 0..C-1; labels float32 [C, H]: unit-norm label-word embeddings;
    train_ids/test_ids int64 [S]: the texts' rows in the task's dataset (`load_dataset(task.dataset).x`);
    train_groups int64 [S]: the smallest dataset row among the texts with the same model input (the same tokens
    after truncation: BBC News repeats some articles with small edits, the same example to the model)."""
    task: TransferTask
    train: tuple
    y_train: np.ndarray
    test: tuple
    y_test: np.ndarray
    labels: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray
    train_groups: np.ndarray


def task_pool(dataset, pool_sizes):
    """(dataset, train rows, test rows) of the data recipe (`data_split`, seed 0), cut to `pool_sizes`
    (train, test) (None: whole); the device's validation texts are carved later, by `device_split`."""
    data = load_dataset(dataset)
    split = data_split(data.y, *(pool_sizes or (0, 0)))
    return data, split.train, split.test


def task_arrays(peft, tokenizer, model_name, task_names, block, max_length=32, pool_sizes=None):
    """Inputs of block `block` (frozen, computed once, cached on disk as float16) for each task's train pool and
    test split. `pool_sizes`: {dataset: (train, test)} cuts a dataset's pools (seeded), e.g. to keep Rotten
    Tomatoes' 12,751 texts affordable. `model_name`: what `peft` was built from (a name of `load_study_model`;
    with the tokenizer and the texts, it keys the cache by content). A test text whose model input (tokens after
    truncation to `max_length`) equals a training-pool text's is left out of the test split (BBC News repeats
    some articles with small edits), so no evaluation text is one a device could train on. Returns
    {task name: TaskArrays}."""
    tasks = [get_task(n) for n in task_names]
    out = {}
    for dataset in sorted({t.dataset for t in tasks}):
        data, train, test = task_pool(dataset, (pool_sizes or {}).get(dataset))
        idx = np.concatenate([train, test])
        texts = [data.x[i] for i in idx]
        key = [model_key(model_name), tokenizer_digest(tokenizer), max_length, block, content_digest(texts)]
        tokens = tokenize(tokenizer, texts, max_length)

        def compute():
            h, m = peft.activations(tokens, block)
            return {"h": h.astype(np.float16), "m": m.astype(np.float16)}

        acts = cached_arrays(key, compute)
        h, m = acts["h"].astype(np.float32), acts["m"].astype(np.float32)
        words = np.array([len(t.split()) for t in texts])
        is_train = np.arange(len(idx)) < len(train)
        code = np.unique(tokens["input_ids"], axis=0, return_inverse=True)[1].reshape(-1)
        first = np.full(code.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, code, idx)
        groups = first[code]                                              # same model input, same group
        is_test = ~is_train & ~np.isin(code, code[is_train])
        for t in (t for t in tasks if t.dataset == dataset):
            missing = set(t.classes) - set(data.class_names)
            if missing:
                raise ValueError(f"task {t.name!r}: classes {sorted(missing)} are not in {dataset!r}")
            codes = [data.class_names.index(c) for c in t.classes]
            y_all = data.y[idx]
            keep = np.isin(y_all, codes) & (words >= (t.min_words or 0)) & (words <= (t.max_words or 10 ** 9))
            remap = np.full(len(data.class_names), -1, np.int64)
            remap[codes] = np.arange(len(codes))
            y = remap[y_all]                                              # the task's label order
            tr, te = np.flatnonzero(keep & is_train), np.flatnonzero(keep & is_test)
            out[t.name] = TaskArrays(t, (h[tr], m[tr]), y[tr], (h[te], m[te]), y[te],
                                     label_embeddings(peft, tokenizer, t.label_words), idx[tr], idx[te], groups[tr])
    return {n: out[n] for n in task_names}


def task_relation(source, target):
    """How source task `source` relates to target task `target` (names of `TASKS`), as a short label:
    "near-duplicate" (same dataset, the source's classes include all of the target's: it has solved the target
    on its own data), "sub-task" (same dataset, a part of the target's classes), "overlapping classes",
    "same corpus, other classes", or "different corpus" (another dataset)."""
    s, t = get_task(source), get_task(target)
    if s.dataset != t.dataset:
        return "different corpus"
    sc, tc = set(s.classes), set(t.classes)
    if sc >= tc:
        return "near-duplicate"
    if sc < tc:
        return "sub-task"
    return "overlapping classes" if sc & tc else "same corpus, other classes"


HOLDINGS_STREAM = 0          # derive_seed(seed, HOLDINGS_STREAM, i): the texts target device i holds


def device_split(data, targets, examples, val_fraction, seed):
    """Who holds which training texts: each target device and the neighbours (docs/design.md §8: a device's
    texts are never in another party's training data; all tasks of one dataset draw on one corpus).

    Each target device holds `examples` labelled texts of its task, drawn (seeded) from the task's training
    pool and disjoint from the texts of every target device before it in `targets` on the same dataset; a
    stratified validation split of `val_fraction` of them (`validation_split`) is never trained on. Every task
    of `data` keeps, as a neighbour's training set, its training pool minus every text held by a target device
    of its dataset. Texts are compared by model input (`TaskArrays.train_groups`), so a repeated article of a
    device's text is the device's too. The test split is left alone (no party trains on it).

    Parameters
    ----------
    data : {task name: TaskArrays}
        As `task_arrays` returns it
    targets : list of str
        Target tasks, each a key of `data`
    examples : int
        Labelled texts per target device (training + validation), >= 2
    val_fraction : float in (0, 1)
        Share of each class of a device's texts moved to its validation split
    seed : int
        Target device i's texts are drawn from derive_seed(seed, HOLDINGS_STREAM, i), its validation split by
        `validation_split` from `seed`

    Output
    ------
    devices : {target: (train_rows, val_rows)}
        int64 sorted rows of `data[target].train`: the device's own training and validation texts
    neighbours : {task: rows}
        int64 sorted rows of `data[task].train` that task's neighbour trains on, for every task of `data`
    """
    if isinstance(examples, bool) or not isinstance(examples, (int, np.integer)) or examples < 2:
        raise ValueError(f"`examples` must be an integer >= 2, got {examples!r}")
    unknown = [t for t in targets if t not in data]
    if unknown:
        raise ValueError(f"`targets` {unknown} are not tasks of `data` ({sorted(data)})")
    held, devices = {}, {}
    for i, target in enumerate(targets):
        d = data[target]
        taken = held.setdefault(d.task.dataset, np.array([], np.int64))
        free = np.flatnonzero(~np.isin(d.train_groups, taken))
        if examples > len(free):
            raise ValueError(f"`examples` = {examples} exceeds the {len(free)} training texts of target {target!r} "
                             "not held by an earlier target device")
        own = np.sort(np.random.default_rng(derive_seed(seed, HOLDINGS_STREAM, i)).choice(free, examples,
                                                                                         replace=False))
        devices[target] = validation_split(own, d.y_train, val_fraction, seed)
        held[d.task.dataset] = np.concatenate([taken, d.train_groups[own]])
    neighbours = {name: np.flatnonzero(~np.isin(d.train_groups, held.get(d.task.dataset, [])))
                  for name, d in data.items()}
    return devices, neighbours


def label_embeddings(peft, tokenizer, words):
    """Unit-norm mean-pooled outputs of the frozen model (no prompt) for each label word: float32 [C, H]."""
    x = tokenize(tokenizer, list(words), 8, cache=False)
    h = peft.base.bert(input_ids=x["input_ids"], attention_mask=x["attention_mask"], training=False).last_hidden_state
    m = tf.cast(x["attention_mask"], h.dtype)[..., None]
    return tf.math.l2_normalize(tf.reduce_sum(h * m, 1) / tf.reduce_sum(m, 1), -1).numpy()


def prompt_model(model, block, num_tokens):
    """A PeftModel with `num_tokens` soft-prompt vectors at the input of block `block` only, no head."""
    return get_peft_model(model, PromptTuningConfig(num_virtual_tokens=0, tokens_pattern={block: num_tokens},
                                                    prompt_init="random"), num_labels=None)


class PromptClassifier(keras.Model):
    """A prompt-tuned model read out by a frozen label-name head (see the module docstring).

    peft: a `prompt_model`; labels: float [C, H] unit-norm label embeddings; scale: s, the logit scale.
    `forward_from(h, mask, start)` -> logits [B, C]; the prompt of `peft` is the only trainable weight.
    Several classifiers (one per task) may share one `peft` and so one prompt.
    """

    def __init__(self, peft, labels, scale=20.0):
        super().__init__(name="prompt_classifier")
        if len(peft.prompts) != 1:
            raise ValueError(f"`peft` must hold a prompt in exactly one block, got blocks {sorted(peft.prompts)}")
        self.peft, self.scale = peft, float(scale)
        self.block = next(iter(peft.prompts))
        labels = np.asarray(labels, np.float32)
        if labels.ndim != 2 or labels.shape[1] != peft.hidden or labels.shape[0] < 2:
            raise ValueError(f"`labels` must have shape [C >= 2, {peft.hidden}], got {labels.shape}")
        self.labels = tf.constant(labels)

    @property
    def prompt(self):
        return self.peft.prompts[self.block]

    def set_prompt(self, value):
        """Assign the prompt; value float [tokens, H] of the prompt's shape (a mismatch raises ValueError)."""
        value = np.asarray(value, np.float32)
        if value.shape != tuple(self.prompt.shape):
            raise ValueError(f"`prompt` must have shape {tuple(self.prompt.shape)}, got {value.shape}")
        self.prompt.assign(value)

    def forward_from(self, h, mask, start, training=False):
        """Logits [B, C] from block `start`'s input; the frozen model always runs in inference mode (no dropout),
        so a run is a deterministic function of its seed."""
        pooled = self.peft.forward_from(h, mask, start, training=False)
        return self.scale * tf.matmul(tf.math.l2_normalize(pooled, -1), self.labels, transpose_b=True)

    def call(self, inputs, training=False):
        h, mask = self.peft.embed(inputs)
        return self.forward_from(h, mask, 0)


class PromptTrainer:
    """Fine-tunes a classifier's prompt from a given start, reusing one compiled step (Adam, state reset per run).

    run(init, train, y, steps, batch_size, seed, eval_set=None, eval_every=0) -> the final prompt [tokens, H]
    and the accuracy curve [(step, accuracy on eval_set)], step 0 included when eval_set is given;
    predict(hidden [S, T, H], mask [S, T]) -> the predicted labels [S] (int64 tensor) under the current prompt.
    """

    def __init__(self, classifier, learning_rate):
        self.clf = classifier
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.step = make_train_step(classifier, self.optimizer, start_block=classifier.block)
        spec = [tf.TensorSpec([None, None, classifier.peft.hidden], tf.float32), tf.TensorSpec([None, None], tf.float32)]
        self.predict = tf.function(lambda h, m: tf.argmax(classifier.forward_from(h, m, classifier.block), -1),
                                   input_signature=spec)         # one trace for every set size

    def accuracy(self, x, y, batch_size=256):
        """Accuracy on cached block inputs x = (hidden [S, T, H], mask [S, T]) with labels y [S]."""
        hits = sum(int(np.sum(self.predict(*xb).numpy() == yb)) for xb, yb in batches(x, y, batch_size))
        return hits / len(y)

    def run(self, init, train, y, steps, batch_size, seed, eval_set=None, eval_every=0):
        if len(y) < batch_size:                      # only full batches are used: nothing to train on
            raise ValueError(f"`batch_size` = {batch_size} exceeds the {len(y)} training examples")
        self.clf.set_prompt(init)
        for v in self.optimizer.variables():
            v.assign(tf.zeros_like(v))
        rng = np.random.default_rng(seed)
        curve = [(0, self.accuracy(*eval_set))] if eval_set is not None else []
        done = 0
        while done < steps:
            for xb, yb in batches(train, y, batch_size, rng):
                if len(yb) < batch_size:             # keep one batch shape: one trace
                    continue
                self.step(xb, yb)
                done += 1
                if eval_set is not None and eval_every and done % eval_every == 0:
                    curve.append((done, self.accuracy(*eval_set)))
                if done == steps:
                    break
        return self.clf.prompt.numpy(), curve


def initial_prompt(kind, shape, seed, embedding_table=None):
    """A starting prompt float32 [tokens, H]: "random" N(0, 0.02^2) entries, or "vocab": rows of
    `embedding_table` [V, H] (the model's word embeddings) at uniformly drawn token ids."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)
    if kind == "vocab":
        table = np.asarray(embedding_table)
        if table.ndim != 2 or table.shape[1] != shape[1]:
            raise ValueError(f"`embedding_table` must have shape [V, {shape[1]}], got {table.shape}")
        return table[rng.integers(0, table.shape[0], shape[0])].astype(np.float32)
    raise ValueError(f"`kind` must be 'random' or 'vocab', got {kind!r}")


def task_embedding(prompt, init):
    """SPoT's task embedding: the mean over tokens of prompt - init (both float [tokens, H]) -> float64 [H]."""
    prompt, init = np.asarray(prompt, np.float64), np.asarray(init, np.float64)
    if prompt.shape != init.shape or prompt.ndim != 2:
        raise ValueError(f"`prompt` and `init` must both have shape [tokens, H], got {prompt.shape} and {init.shape}")
    return (prompt - init).mean(axis=0)


def cosine_similarities(target, sources):
    """Cosine between a target task embedding [H] and each source's: {name: [H]} -> {name: float}."""
    target = np.asarray(target, np.float64)
    out = {}
    for name, emb in sources.items():
        emb = np.asarray(emb, np.float64)
        if emb.shape != target.shape:
            raise ValueError(f"task embedding of source {name!r} has shape {emb.shape}, target has {target.shape}")
        out[name] = float(emb @ target / max(np.linalg.norm(emb) * np.linalg.norm(target), 1e-30))
    return out


def choose_by_similarity(target, sources):
    """The source whose task embedding is most cosine-similar to the target's: (name, {name: cosine})."""
    if not sources:
        raise ValueError("`sources` must hold at least one task embedding")
    sims = cosine_similarities(target, sources)
    return max(sims, key=sims.get), sims


def choose_by_trial(trainer, prompts, x, y):
    """The source prompt {name: [tokens, H]} with the best accuracy on a few target examples (x, y) without any
    training: (name, {name: accuracy}); ties go to the first in `prompts`' order."""
    if not prompts:
        raise ValueError("`prompts` must hold at least one source prompt")
    scores = {}
    for name, p in prompts.items():
        trainer.clf.set_prompt(p)
        scores[name] = trainer.accuracy(x, y)
    return max(scores, key=scores.get), scores
