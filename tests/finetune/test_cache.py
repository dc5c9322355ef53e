"""The on-disk array cache: keyed by content (library versions, tokenizer content, data content, the model's
files or random-init seed and configuration), corrupt entries recomputed with a one-line warning, atomic writes."""

import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from deft6g.finetune.peft import data as data_mod
from deft6g.finetune.peft.data import Dataset, cached_arrays, content_digest, tokenize, tokenizer_digest
from deft6g.finetune.peft.fomo import PRETRAINED, SMOKE_MODEL, model_key, pretrained_folder, save_tf, build_fomo

NAME = "all-MiniLM-L6-v2"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path))
    return tmp_path


class Counter:
    """compute() for cached_arrays that counts its calls; returns {"a": [calls]}."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"a": np.array([self.calls])}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_entry_is_recomputed_with_one_line_warning(cache, damage):
    """A damaged .npz (random bytes, cut in half, empty): the next call warns once, on one line naming the file,
    recomputes, and rewrites a good entry that the call after reads silently."""
    compute = Counter()
    assert cached_arrays(["k"], compute)["a"][0] == 1
    (path,) = (cache / "activations").glob("*.npz")
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"not a zip file" * 10, "truncated": raw[:len(raw) // 2], "empty": b""}[damage])
    with pytest.warns(RuntimeWarning) as record:
        assert cached_arrays(["k"], compute)["a"][0] == 2
    assert len(record) == 1 and str(path) in str(record[0].message) and "\n" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cached_arrays(["k"], compute)["a"][0] == 2
    assert compute.calls == 2


def test_interrupted_write_leaves_no_entry_and_no_temporary_file(cache, monkeypatch):
    """np.savez failing half way (disk full, simulated: it writes a partial zip, then raises): the error
    propagates, no entry and no temporary file are left, and the next call computes and stores the entry."""
    def partial_savez(file, **arrays):
        with open(file, "ab") if isinstance(file, (str, Path)) else nullcontext(file) as f:
            f.write(b"PK\x03\x04partial")
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(np, "savez", partial_savez)
        with pytest.raises(OSError, match="No space"):
            cached_arrays(["k"], Counter())
    assert list((cache / "activations").iterdir()) == []
    assert cached_arrays(["k"], Counter())["a"][0] == 1
    assert [f.suffix for f in (cache / "activations").iterdir()] == [".npz"]


def test_library_versions_key_every_entry(cache, monkeypatch):
    """The same key under another transformers version is another entry (recomputed); back to the real
    versions, the first entry is read again."""
    compute = Counter()
    cached_arrays(["k"], compute)
    real = data_mod.library_versions()
    assert real["transformers"] and real["tensorflow"] and real["numpy"]
    monkeypatch.setattr(data_mod, "library_versions", lambda: {**real, "transformers": "0.0.1"})
    assert cached_arrays(["k"], compute)["a"][0] == 2
    monkeypatch.setattr(data_mod, "library_versions", lambda: real)
    assert cached_arrays(["k"], compute)["a"][0] == 1
    assert compute.calls == 2


def test_tokens_are_keyed_by_tokenizer_content(cache):
    """Two tokenizers with the same name and vocabulary size but different normalisation (the second also maps
    'film' to 'movie'): the second tokenises anew (no stale entry), and equal tokenizers share the entry."""
    from tokenizers import normalizers
    folder = pretrained_folder(NAME)
    tok, same, other = (AutoTokenizer.from_pretrained(folder) for _ in range(3))
    other.backend_tokenizer.normalizer = normalizers.Sequence([other.backend_tokenizer.normalizer,
                                                               normalizers.Replace("film", "movie")])
    assert other.name_or_path == tok.name_or_path and len(other) == len(tok)
    texts = ["one film", "another film review"]
    first = tokenize(tok, texts, max_length=8)
    assert tokenizer_digest(same) == tokenizer_digest(tok) != tokenizer_digest(other)
    assert np.array_equal(tokenize(same, texts, max_length=8)["input_ids"], first["input_ids"])
    changed = tokenize(other, texts, max_length=8)["input_ids"]
    assert np.array_equal(changed, tokenize(other, texts, max_length=8, cache=False)["input_ids"])
    assert not np.array_equal(changed, first["input_ids"])
    assert len(list((cache / "tokens").glob("*.npz"))) == 2


def test_content_digest_follows_content_not_names():
    """Equal texts, labels and arrays give equal digests; one changed label, text or pixel changes it; a
    non-content object is refused."""
    a = Dataset("d", ["x", "y"], np.array([0, 1]), ["n", "p"])
    assert content_digest(a) == content_digest(Dataset("d", ["x", "y"], np.array([0, 1]), ["n", "p"]))
    assert content_digest(a) != content_digest(Dataset("d", ["x", "y"], np.array([1, 1]), ["n", "p"]))
    assert content_digest(a) != content_digest(Dataset("d", ["x", "z"], np.array([0, 1]), ["n", "p"]))
    assert content_digest(["ab", "c"]) != content_digest(["a", "bc"])
    img = np.zeros((2, 3, 3), np.float32)
    assert content_digest(img) != content_digest(img.astype(np.float64))
    img2 = img.copy()
    img2[1, 2, 2] = 1.0
    assert content_digest(img) != content_digest(img2)
    with pytest.raises(TypeError, match="parts"):
        content_digest(object())


def test_model_key_is_the_content_of_the_model(tmp_path):
    """model_key: the packaged model by its recorded file hashes, random-bert by seed and configuration (with its
    tokenizer's hashes), a folder by the sha256 of its files (re-saving other weights changes it)."""
    assert model_key(NAME) == {"files": PRETRAINED[NAME][2]}
    key = model_key(SMOKE_MODEL)
    assert key["seed"] == 0 and key["config"]["num_hidden_layers"] == 6 and key["config"]["hidden_size"] == 64
    assert key["tokenizer"]["vocab.txt"] == PRETRAINED[NAME][2]["vocab.txt"]
    save_tf(build_fomo("bert", seed=0)[0], None, tmp_path)
    first = model_key(str(tmp_path))
    assert set(first["files"]) == {"config.json", "tf_model.h5"}
    save_tf(build_fomo("bert", seed=1)[0], None, tmp_path)
    assert model_key(str(tmp_path))["files"]["tf_model.h5"] != first["files"]["tf_model.h5"]
    with pytest.raises(ValueError, match="name"):
        model_key(str(tmp_path / "nowhere"))


def test_emulator_package_key_has_bottom_and_top_blocks():
    """Two emulator settings keeping the same blocks (all 6: drop 0) but leaving out different bottom/top blocks
    (so distillation and low rank touch different middles) get different package keys; equal settings equal."""
    from deft6g.benchmarks.emulator_study import EmulatorStudyConfig, package_key
    from deft6g.finetune.federation.emulator import emulator_blocks
    a, b = EmulatorStudyConfig(bottom=1, top=1, drop=0.0), EmulatorStudyConfig(bottom=2, top=2, drop=0.0)
    kept = emulator_blocks(6, a.bottom, a.top, a.drop)
    assert kept == emulator_blocks(6, b.bottom, b.top, b.drop) == list(range(6))
    for variant, distill in (("drop+lowrank", False), ("drop", True)):
        assert package_key(a, kept, variant, distill, 0) != package_key(b, kept, variant, distill, 0)
        assert package_key(a, kept, variant, distill, 0) == package_key(EmulatorStudyConfig(bottom=1, top=1, drop=0.0),
                                                                         kept, variant, distill, 0)
    assert package_key(a, kept, "drop", True, 0) != package_key(a, kept, "drop", True, 1)
