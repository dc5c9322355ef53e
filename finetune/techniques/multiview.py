"""Multi-view text tasks: each of M devices sees its own consecutive segment of one example, encoded by a frozen FoMo.

An example's text is cut into M consecutive segments of (nearly) equal word counts; device m observes
segment m only (BBC News: M segments of an article; Rotten Tomatoes: the two halves of a review, M = 2).
Each device runs the frozen model on its segment and mean-pools the last hidden states over the real tokens;
these features are computed once and cached on disk (`cached_arrays`).
"""

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ..peft.data import cached_arrays, content_digest, data_split, load_dataset, tokenize


def split_views(texts, num_views):
    """Cut every text into `num_views` consecutive segments of nearly equal word counts.

    Input: texts (list of str), num_views M >= 1. Output: list of M lists of str (segment m of every text; a
    text with fewer than M words gives empty segments at the end, which the tokenizer turns into [CLS][SEP]).
    """
    if isinstance(num_views, bool) or not isinstance(num_views, (int, np.integer)) or num_views < 1:
        raise ValueError(f"`num_views` must be an integer >= 1, got {num_views!r}")
    views = [[] for _ in range(num_views)]
    for text in texts:
        words = text.split()
        cuts = np.linspace(0, len(words), num_views + 1).round().astype(int)
        for m in range(num_views):
            views[m].append(" ".join(words[cuts[m]:cuts[m + 1]]))
    return views


@dataclass
class MultiViewData:
    """Cached frozen features of a multi-view task.

    x_train [S_train, M, F] float32, x_test [S_test, M, F] float32: per-view mean-pooled features (F = the
    model's hidden size); y_train, y_test int64; class_names; name (dataset), model (FoMo name), num_views M.
    """
    name: str
    model: str
    num_views: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list

    @property
    def num_classes(self):
        return len(self.class_names)


def pooled_features(model, tokens, batch_size=64):
    """Mean-pooled last hidden states of a frozen HF TF encoder: tokens (dict input_ids, attention_mask, int
    [S, T]) -> float32 [S, hidden], in inference mode."""
    @tf.function
    def step(ids, mask):
        h = model(input_ids=ids, attention_mask=mask, training=False).last_hidden_state
        m = tf.cast(mask, h.dtype)[..., None]
        return tf.reduce_sum(h * m, 1) / tf.maximum(tf.reduce_sum(m, 1), 1.0)

    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    return np.concatenate([step(ids[s:s + batch_size], mask[s:s + batch_size]).numpy()
                           for s in range(0, len(ids), batch_size)]).astype(np.float32)


def load_multiview(dataset, num_views, model_name="all-MiniLM-L6-v2", max_length=64, train_examples=None,
                   test_examples=None, split_seed=0, log=None):
    """Frozen per-view features of `dataset` ("bbc_news" or "rotten_tomatoes") cut into `num_views` views.

    The data recipe (`data_split` with `split_seed`) gives the texts; `train_examples` / `test_examples`
    (None: all) keep a seeded random subset of each side. Each view is tokenised to `max_length` tokens and
    encoded by `model_name` (see `load_study_model`; "random-bert" for smoke tests). Features are cached on
    disk, keyed by all of these. Returns `MultiViewData`.
    """
    from ..peft.fomo import load_study_model, model_key
    data = load_dataset(dataset)
    if not isinstance(data.x, list):
        raise ValueError(f"`dataset` must be a text dataset, got {dataset!r}")
    whole = data_split(data.y, seed=split_seed)
    for name, idx, cap in (("train_examples", whole.train, train_examples), ("test_examples", whole.test,
                                                                            test_examples)):
        if cap is not None and not 1 <= cap <= len(idx):
            raise ValueError(f"`{name}` must be in [1, {len(idx)}] for {dataset!r}, got {cap}")
    split = data_split(data.y, train_examples or 0, test_examples or 0, seed=split_seed)
    train, test = split.train, split.test
    keep = np.concatenate([train, test])

    def compute():
        model, tok = load_study_model(model_name)
        views = split_views([data.x[i] for i in keep], num_views)
        feats = [pooled_features(model, tokenize(tok, v, max_length)) for v in views]
        return {"x": np.stack(feats, axis=1)}

    t0 = time.process_time()
    key = ["multiview", model_key(model_name), max_length, num_views, content_digest([data.x[i] for i in keep])]
    x = cached_arrays(key, compute)["x"]
    if log is not None:
        log(f"{dataset}, {num_views} views: features of {len(keep)} examples ready "
            f"({time.process_time() - t0:.1f} s CPU; cached in the deft6g cache)")
    n = len(train)
    return MultiViewData(dataset, model_name, num_views, x[:n], data.y[train], x[n:], data.y[test],
                         list(data.class_names))
