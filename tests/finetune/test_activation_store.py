"""The ragged float16 activation store: float16's unit round-off bound, batches equal to the padded cache's
trimmed batches (exactly in float32), a tiny BERT's logits on float16 vs float32 activations, views and pickling,
corrupt entries recomputed with a one-line warning, and errors that name the argument."""

import pickle
import warnings

import numpy as np
import pytest

from deft6g.finetune import LoraConfig, build_fomo, evaluate, get_peft_model
from deft6g.finetune.peft.activation_store import RaggedActivations, cached_activations, ragged_activations
from deft6g.finetune.federation.federated import FederatedDEFT
from deft6g.finetune.federation.aggregation import IdealAggregator
from deft6g.finetune.peft.training import take, trim_padding


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path))
    return tmp_path


def padded(rng, lengths, width=24, hidden=5, scale=None):
    """A padded pair (hidden float32 [S, T, H], mask float32 [S, T]) with right padding of the given lengths;
    hidden values log-uniform in magnitude over [2^-14, 2^15] with random signs (float16's normal range) unless
    `scale`; padded positions hold garbage (a padded cache's values there are never used)."""
    s = len(lengths)
    mask = (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.float32)
    if scale is None:
        h = np.exp2(rng.uniform(-14, 15, (s, width, hidden))) * rng.choice([-1, 1], (s, width, hidden))
    else:
        h = scale * rng.standard_normal((s, width, hidden))
    return h.astype(np.float32), mask


def store_of(x, dtype, key="k", chunk=7):
    chunks = lambda: ((x[0][i:i + chunk], x[1][i:i + chunk]) for i in range(0, len(x[1]), chunk))   # noqa: E731
    return cached_activations([key], chunks, dtype)


def test_float16_round_trip_within_unit_round_off(cache, rng):
    """Every stored normal value x: |x - fp16(x)| <= 2^-11 |x| (round to nearest, 11 significant bits); subnormal
    values (|x| < 2^-14): absolute error <= 2^-25 (half the subnormal spacing 2^-24)."""
    lengths = rng.integers(1, 25, 40)
    x = padded(rng, lengths)
    store = store_of(x, "float16")
    h, m = store[np.arange(40)]
    real = x[1][:, :h.shape[1]] > 0
    ref = x[0][:, :h.shape[1]][real]
    assert np.all(np.abs(h[real] - ref) <= 2.0 ** -11 * np.abs(ref))
    assert np.all(h[~real] == 0) and np.array_equal(m, x[1][:, :h.shape[1]])
    tiny = padded(rng, [24] * 4, scale=2.0 ** -16)
    th, _ = store_of(tiny, "float16", key="tiny")[np.arange(4)]
    assert np.max(np.abs(th - tiny[0])) <= 2.0 ** -25


@pytest.mark.parametrize("idx", [[3, 0, 7], [5], list(range(12)), [11, 11, 2]])
def test_float32_batches_equal_trimmed_padded_batches(cache, rng, idx):
    """A float32 store gathers exactly trim_padding(take(padded, idx)) (same width: the batch's longest
    sequence rounded up to 8), including an example with no unmasked position (5) and one of full length (7);
    the store's lengths are mask.sum(1); the entry is 2 bytes per real value in float16."""
    lengths = np.array([3, 9, 1, 16, 8, 0, 2, 24, 5, 17, 4, 12])
    x = padded(rng, lengths, scale=1.0)
    x[0][x[1] == 0] = 0.0                           # model activations are what they are; compare real parts
    store = store_of(x, "float32")
    want = trim_padding(take(x, np.array(idx)))
    got = store[np.array(idx)]
    assert got[0].shape == want[0].shape and got[1].dtype == want[1].dtype
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0] * got[1][..., None], want[0] * want[1][..., None])
    np.testing.assert_array_equal(store.lengths, lengths)
    assert store_of(x, "float16").nbytes == 2 * lengths.sum() * 5


def test_views_slices_and_pickling(cache, rng):
    """subset(rows)[i] == store[rows[i]]; slices and bool masks select the same examples; a pickled store
    reopens its file (no values in the pickle)."""
    x = padded(rng, rng.integers(0, 25, 30), scale=1.0)
    store = store_of(x, "float16")
    rows = np.array([29, 4, 17, 8, 0])
    view = store.subset(rows)
    assert len(view) == 5 and view.shape == (5, 24, 5)
    for a, b in zip(view[np.array([1, 3])], store[rows[[1, 3]]]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(store[2:6][0], store[np.arange(2, 6)][0])
    np.testing.assert_array_equal(store[np.arange(30) % 3 == 0][0], store[np.arange(0, 30, 3)][0])
    blob = pickle.dumps(view)
    assert len(blob) < 2000
    np.testing.assert_array_equal(pickle.loads(blob)[np.arange(5)][0], view[np.arange(5)][0])
    np.testing.assert_array_equal(view.subset([2, 0]).lengths, store.lengths[[17, 29]])


def tiny_model():
    model, _ = build_fomo("bert", seed=0)
    return get_peft_model(model, LoraConfig(r=2, layers_to_transform=[2, 3]), num_labels=2)


def test_logits_on_float16_store_match_float32(cache):
    """A tiny BERT's logits from block 2 on the ragged float16 store vs the padded float32 activations (batches
    trimmed the same way): max |difference| <= 2e-3 (the inputs' relative error is at most 2^-11 ~ 4.9e-4,
    measured 1.2e-4 here); a float32 store gives the padded cache's accuracy exactly."""
    peft = tiny_model()
    rng = np.random.default_rng(2)
    lengths = rng.integers(2, 17, 48)
    inputs = {"input_ids": rng.integers(1, 900, (48, 16)).astype(np.int32),
              "attention_mask": (np.arange(16)[None] < lengths[:, None]).astype(np.int32)}
    x = peft.activations(inputs, 2)
    store = ragged_activations(peft, inputs, 2, ["tiny", 0], chunk_size=20)
    idx = np.arange(48)
    want = trim_padding(take(x, idx))
    got = store[idx]
    diff = np.abs(peft.forward_from(*got, 2).numpy() - peft.forward_from(*want, 2).numpy())
    assert diff.max() <= 2e-3
    y = rng.integers(0, 2, 48)
    exact = ragged_activations(peft, inputs, 2, ["tiny", 0], dtype="float32")
    assert evaluate(peft, exact, y, start_block=2) == evaluate(peft, x, y, start_block=2)


def test_federated_rounds_on_store_equal_padded(cache, rng):
    """FederatedDEFT on float32 stores (one view per device) reaches the same payload as on the padded pairs:
    the same batches (lengths from the store) and the same trimmed inputs."""
    peft = tiny_model()
    inputs = {"input_ids": rng.integers(1, 900, (24, 8)).astype(np.int32),
              "attention_mask": (np.arange(8)[None] < rng.integers(2, 9, 24)[:, None]).astype(np.int32)}
    x, y = peft.activations(inputs, 2), rng.integers(0, 2, 24)
    store = ragged_activations(peft, inputs, 2, ["fed"], dtype="float32")
    parts = [np.arange(0, 10), np.arange(10, 24)]
    start = FederatedDEFT(peft, [(take(x, p), y[p]) for p in parts], IdealAggregator(), 2, 2, 4, 1e-2).payload_vector()
    payloads = []
    for devices in ([(take(x, p), y[p]) for p in parts], [(store.subset(p), y[p]) for p in parts]):
        fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=2, batch_size=4, lr=1e-2, seed=1)
        fed.set_payload(start)
        fed.run(2)
        payloads.append(fed.payload_vector())
    np.testing.assert_allclose(payloads[0], payloads[1], atol=1e-6)


@pytest.mark.parametrize("damage", ["values", "index", "meta"])
def test_corrupt_entry_is_recomputed(cache, rng, damage):
    """A truncated values file, a garbage index or meta file: one warning naming the entry, the activations are
    recomputed and the new entry is read silently afterwards."""
    x = padded(rng, rng.integers(1, 25, 10), scale=1.0)
    calls = []

    def chunks():
        calls.append(1)
        return iter([x])

    cached_activations(["c"], chunks)
    (folder,) = (cache / "activations").glob("*.ragged")
    target = {"values": "values.bin", "index": "index.npz", "meta": "meta.json"}[damage]
    raw = (folder / target).read_bytes()
    (folder / target).write_bytes(raw[:len(raw) // 2] if damage == "values" else b"garbage")
    with pytest.warns(RuntimeWarning) as record:
        store = cached_activations(["c"], chunks)
    assert len(record) == 1 and str(folder) in str(record[0].message) and "\n" not in str(record[0].message)
    assert len(calls) == 2 and len(store) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_activations(["c"], chunks)
    assert len(calls) == 2 and not list((cache / "activations").glob("*.tmp"))


def test_bad_input_named(cache, rng):
    x = padded(rng, [3, 4], scale=1.0)
    with pytest.raises(ValueError, match="`dtype`"):
        store_of(x, "bfloat8")
    with pytest.raises(ValueError, match="float16's range"):
        store_of((x[0] * 1e5, x[1]), "float16", key="big")
    with pytest.raises(OSError, match="GB free .*key"):
        cached_activations(["huge"], lambda: iter([x]), max_bytes=10 ** 18)
    with pytest.raises(ValueError, match="`mask`"):
        store_of((x[0], x[1] * 0.5), "float16", key="mask")
    with pytest.raises(ValueError, match="`chunk_size`"):
        ragged_activations(None, {"input_ids": np.zeros((2, 3), np.int32)}, 0, ["k"], chunk_size=0)
    with pytest.raises(TypeError, match="int array"):
        store_of(x, "float16")[0]
    assert not list((cache / "activations").glob("*.tmp"))
