"""A bounded-memory activation cache: frozen activations stored without padding, in float16, read through a
memory map that lives only while a batch is gathered.

A padded cache holds hidden [S, T, H] float32 (Rotten Tomatoes at MiniLM's block 5, T = 48: 754 MB, about
40 % of it padding). `RaggedActivations` keeps each example's first L_s positions (L_s: its last unmasked
position + 1) as rows of one file [N, H] (N = sum_s L_s) in `dtype`, with offsets [S + 1] and the ragged mask
in memory (N + 8 S bytes). Gathering a batch maps the file, copies the batch's rows into a float32 array padded
to the batch's own longest sequence (rounded up to a multiple of 8 tokens, as `training.trim_padding` cuts a
padded batch) and unmaps it, so the process's resident memory holds the batch, not the dataset.

float16 round trip: |x - fp16(x)| <= 2^-11 |x| for |x| in [2^-14, 65504] (round to nearest, 11 significant
bits), and <= 2^-25 below 2^-14 (subnormals); values beyond 65504 are refused (they would be inf).
"""

import json
import math
import os
import shutil
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .data import cache_entry

STORE_DTYPES = ("float16", "float32")
_VALUES, _INDEX, _META = "values.bin", "index.npz", "meta.json"


class RaggedActivations:
    """Cached activations (hidden [S, T, H], mask [S, T]) without padding; see the module docstring.

    store[idx] (idx: int array, bool mask or slice of the store's examples) -> (hidden float32 [B, T_b, H],
    mask [B, T_b]) with T_b = min(T, 8 ceil(max_b L_b / 8)): what `trim_padding(take(padded, idx))` gives, up
    to the storage dtype's rounding; so `training.evaluate`, `training.batches` and `FederatedDEFT` take a
    store where they take the padded pair. store.subset(rows) is a view of some examples (no copy).

    Attributes: lengths int64 [S] (unmasked positions per example, as mask.sum(1)); shape (S, T, H); dtype
    (storage); path (the values file); nbytes (bytes on disk)."""

    def __init__(self, folder, rows=None):
        folder = Path(folder)
        meta = json.loads((folder / _META).read_text())
        with np.load(folder / _INDEX) as z:
            offsets, mask = z["offsets"], z["mask"]
        self.folder, self.path = folder, folder / _VALUES
        self.dtype, self.width, self.hidden = np.dtype(meta["dtype"]), int(meta["width"]), int(meta["hidden"])
        self.mask_dtype = np.dtype(meta["mask_dtype"])
        n = int(meta["num_values"])
        if (offsets.ndim != 1 or len(offsets) != int(meta["num_examples"]) + 1 or offsets[0] != 0
                or offsets[-1] != n or np.any(np.diff(offsets) < 0) or np.any(np.diff(offsets) > self.width)
                or mask.shape != (n,) or self.path.stat().st_size != n * self.hidden * self.dtype.itemsize):
            raise ValueError(f"inconsistent activation store in {folder}")
        self._offsets, self._mask, self._num_values = offsets.astype(np.int64), mask, n
        counts = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        self._real = counts[offsets[1:]] - counts[offsets[:-1]]
        self._rows = np.arange(len(offsets) - 1) if rows is None else np.asarray(rows, np.int64)

    def __len__(self):
        return len(self._rows)

    @property
    def shape(self):
        return len(self._rows), self.width, self.hidden

    @property
    def lengths(self):
        return self._real[self._rows]

    @property
    def nbytes(self):
        return self._num_values * self.hidden * self.dtype.itemsize

    def subset(self, rows):
        """The examples `rows` (int array, bool mask or slice of this store's examples) as a store sharing the file."""
        view = object.__new__(RaggedActivations)
        view.__dict__ = {**self.__dict__, "_rows": self._select(rows)}
        return view

    def _select(self, idx):
        rows = self._rows[idx]
        if np.ndim(rows) != 1:
            raise TypeError(f"index a RaggedActivations with an int array, a bool mask or a slice, got {idx!r}")
        return rows

    def __getitem__(self, idx):
        rows = self._select(idx)
        start = self._offsets[rows]
        n = self._offsets[rows + 1] - start
        t = min(self.width, 8 * max(1, math.ceil((int(n.max()) if len(n) else 0) / 8)))
        b = np.repeat(np.arange(len(rows)), n)
        pos = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        src = np.repeat(start, n) + pos
        hidden = np.zeros((len(rows), t, self.hidden), np.float32)
        mask = np.zeros((len(rows), t), self.mask_dtype)
        if len(src):
            values = np.memmap(self.path, self.dtype, "r", shape=(self._num_values, self.hidden))
            hidden[b, pos] = values[src]
            del values                                  # unmapped here: only the batch stays resident
            mask[b, pos] = self._mask[src]
        return hidden, mask

    def __getstate__(self):
        return {"folder": str(self.folder), "rows": self._rows}

    def __setstate__(self, state):
        self.__init__(state["folder"], state["rows"])


def _ragged(h, m, dtype):
    """(values [n, H] in dtype, mask [n] uint8, lengths [b]) of a padded chunk h [b, T, H], m [b, T]."""
    m = np.asarray(m)
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("`mask` of the activations must hold 0 and 1 only")
    last = np.where(m.any(1), m.shape[1] - np.argmax(m[:, ::-1] != 0, axis=1), 0)
    keep = np.arange(m.shape[1])[None, :] < last[:, None]
    values = np.asarray(h)[keep]
    if dtype == "float16" and np.any(np.abs(values) > np.finfo(np.float16).max):
        raise ValueError(f"activations up to {np.abs(values).max():.3g} exceed float16's range (65504); "
                         "use `dtype`='float32'")
    return values.astype(dtype, copy=False), m[keep].astype(np.uint8), last


def _write(folder, chunks, dtype):
    """Stream `chunks` of (hidden [b, T, H], mask [b, T]) into a store folder; everything fsync'd."""
    folder.mkdir(parents=True)
    offsets, masks, width, hidden, mask_dtype, total = [np.zeros(1, np.int64)], [], None, None, None, 0
    with open(folder / _VALUES, "wb") as f:
        for h, m in chunks:
            if width is None:
                width, hidden, mask_dtype = h.shape[1], h.shape[2], np.asarray(m).dtype
            if h.ndim != 3 or h.shape[1:] != (width, hidden) or np.shape(m) != h.shape[:2]:
                raise ValueError(f"activation chunks must share [T, H] = {[width, hidden]}, got hidden "
                                 f"{list(h.shape)} and mask {list(np.shape(m))}")
            values, mask, lengths = _ragged(h, m, dtype)
            f.write(np.ascontiguousarray(values).tobytes())
            masks.append(mask)
            offsets.append(total + np.cumsum(lengths))
            total += int(lengths.sum())
        f.flush()
        os.fsync(f.fileno())
    if width is None:
        raise ValueError("`chunks` yielded no activations")
    offsets = np.concatenate(offsets)
    with open(folder / _INDEX, "wb") as f:
        np.savez(f, offsets=offsets, mask=np.concatenate(masks))
        f.flush()
        os.fsync(f.fileno())
    meta = {"dtype": dtype, "width": int(width), "hidden": int(hidden), "mask_dtype": mask_dtype.name,
            "num_values": total, "num_examples": len(offsets) - 1}
    with open(folder / _META, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())


def cached_activations(key, chunks, dtype="float16", kind="activations", max_bytes=None):
    """A `RaggedActivations` computed once and kept on disk under `cache_dir()/kind` (a folder per entry).

    key : JSON-able description of everything the activations depend on, by content (as for `cached_arrays`);
        the storage dtype is added to it
    chunks : callable() -> iterable of (hidden [b, T, H], mask [b, T]) in example order; streamed, so memory
        holds one chunk
    dtype : "float16" (default) or "float32" (exact)
    max_bytes : None | int -- an upper bound on the values file (e.g. S T H x itemsize); when the disk has less
        free space, OSError before any work

    The entry is written to a temporary folder (fsync'd) and renamed, so concurrent or interrupted runs never
    read a partial one; an unreadable or inconsistent entry is recomputed and replaced, with a one-line warning.
    """
    if dtype not in STORE_DTYPES:
        raise ValueError(f"`dtype` must be one of {STORE_DTYPES}, got {dtype!r}")
    folder = cache_entry([key, "ragged", dtype], kind).with_suffix(".ragged")
    if folder.is_dir():
        try:
            return RaggedActivations(folder)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            reason = (str(err).splitlines() or [""])[0]
            warnings.warn(f"cache entry {folder} is unreadable ({type(err).__name__}: {reason}); recomputing it",
                          RuntimeWarning, stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if max_bytes is not None and shutil.disk_usage(folder.parent).free < max_bytes:
        raise OSError(f"the activation cache needs up to {max_bytes / 1e9:.2f} GB but {folder.parent} has "
                      f"{shutil.disk_usage(folder.parent).free / 1e9:.2f} GB free (key {key!r}); set DEFT6G_CACHE "
                      "to a larger disk")
    tmp = folder.with_name(f"{folder.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        _write(tmp, chunks(), dtype)
        try:
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():                 # another process won the race: its entry is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RaggedActivations(folder)


def ragged_activations(model, inputs, block, key, dtype="float16", chunk_size=1024, kind="activations"):
    """`model.activations(inputs, block)` as a cached `RaggedActivations`, computed `chunk_size` examples at a
    time (memory: one chunk). key: JSON-able, by content, of the model and the inputs (block is added);
    inputs: a dict of arrays [S, T] (or pixels [S, ...])."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be an int >= 1, got {chunk_size!r}")
    n = len(inputs["input_ids"]) if isinstance(inputs, dict) else len(inputs)
    bound = (n * inputs["input_ids"].shape[1] * model.hidden * np.dtype(dtype).itemsize   # T real positions at most
             if isinstance(inputs, dict) else None)

    def chunks():
        for s in range(0, n, chunk_size):
            part = {k: v[s:s + chunk_size] for k, v in inputs.items()} if isinstance(inputs, dict) \
                else inputs[s:s + chunk_size]
            yield model.activations(part, block)

    return cached_activations([key, block], chunks, dtype, kind, max_bytes=bound)
