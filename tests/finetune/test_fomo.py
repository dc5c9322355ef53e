"""The packaged pretrained MiniLM: hash checks before loading, offline port vs a NumPy forward pass, TF re-save, a
partial weights file refused, errors; the random BERT-base-sized study model has BERT-base's parameter count."""

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy.special import erf

from deft6g.finetune import PRETRAINED, build_fomo, load_fomo, load_study_model, port_folder, save_tf
from deft6g.finetune.peft import fomo
from deft6g.finetune.peft.fomo import model_key, pretrained_folder, sha256_file

NAME = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm():
    return load_fomo(NAME)


def layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def numpy_first_block(sd, ids, mask, heads=12):
    """Embeddings + block 0 of BERT in float64 from the PyTorch state dict (weights [out, in])."""
    w = {k: v.astype(np.float64) for k, v in sd.items()}
    t = ids.shape[1]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t] \
        + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    p = "encoder.layer.0."
    lin = lambda z, name: z @ w[p + name + ".weight"].T + w[p + name + ".bias"]  # noqa: E731
    b, d = x.shape[0], x.shape[-1]
    split = lambda z: z.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(lin(x, f"attention.self.{n}")) for n in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads) + (1.0 - mask[:, None, None, :]) * -10000.0
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    h = layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                   w[p + "attention.output.LayerNorm.bias"])
    f = lin(h, "intermediate.dense")
    f = 0.5 * f * (1.0 + erf(f / np.sqrt(2.0)))
    return layer_norm(lin(f, "output.dense") + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])


def test_ported_minilm_matches_numpy_first_block(minilm):
    model, tok = minilm
    enc = tok(["a gripping, beautifully acted film", "dull"], padding=True, return_tensors="np")
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
    sd = load_file(str(pretrained_folder(NAME) / "model.safetensors"))
    ref = numpy_first_block(sd, enc["input_ids"], enc["attention_mask"].astype(np.float64))
    assert model.count_params() == 22_713_216
    np.testing.assert_allclose(out.hidden_states[1].numpy(), ref, atol=1e-4)


def test_embeddings_rank_similar_sentences_higher(minilm):
    model, tok = minilm
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    enc = tok(texts, padding=True, return_tensors="np")
    h = model(**enc).last_hidden_state.numpy()
    m = enc["attention_mask"][..., None]
    e = (h * m).sum(1) / m.sum(1)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_save_as_tf_weights_and_reload(minilm, tmp_path):
    model, tok = minilm
    save_tf(model, tok, tmp_path)
    again, tok2 = load_fomo(str(tmp_path))
    enc = tok2(["offline reload"], return_tensors="np")
    np.testing.assert_allclose(again(**enc).last_hidden_state.numpy(), model(**enc).last_hidden_state.numpy(), atol=1e-6)


def test_hash_mismatch_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        port_folder(pretrained_folder(NAME), hashes={"model.safetensors": "0" * 64})
    with pytest.raises(ValueError, match="name_or_path"):
        load_fomo("gpt-17")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_fomo(str(tmp_path))
    assert PRETRAINED[NAME][2]["model.safetensors"].startswith("53aa5117")


def test_random_bert_base_has_the_published_bert_base_size():
    """109,482,240 parameters: BERT-base (uncased, 30,522-token vocabulary) with its pooler, as published; its
    cache key names its own configuration, not the smoke model's."""
    model, tok = load_study_model("random-bert-base")
    assert len(tok) == 30522 and model.count_params() == 109_482_240
    assert model_key("random-bert-base")["config"]["hidden_size"] == 768 != model_key("random-bert")["config"][
        "hidden_size"]


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(PRETRAINED, "ghost", ("no-such-dist-xyz", "m", {"config.json": "0" * 64}))
    with pytest.raises(FileNotFoundError, match="no-such-dist-xyz"):
        load_fomo("ghost")


def test_recorded_hashes_are_the_installed_files():
    """The sha256 constants of PRETRAINED are those of the installed package's files (re-measured here)."""
    folder = pretrained_folder(NAME)
    assert set(PRETRAINED[NAME][2]) >= {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt"}
    assert {f: sha256_file(folder / f) for f in PRETRAINED[NAME][2]} == PRETRAINED[NAME][2]


@pytest.mark.parametrize("tampered", ["config.json", "vocab.txt", "tokenizer.json"])
def test_tampered_config_or_tokenizer_file_is_refused_before_loading(tampered, tmp_path, monkeypatch):
    """A packaged copy whose config or tokenizer file differs by one appended byte: load_fomo raises the hash
    error naming that file, before any file is parsed (HF's config and tokenizer readers are never called)."""
    src = pretrained_folder(NAME)
    for f in PRETRAINED[NAME][2]:
        (tmp_path / f).symlink_to(src / f)
    (tmp_path / tampered).unlink()
    (tmp_path / tampered).write_bytes((src / tampered).read_bytes() + b" ")
    monkeypatch.setattr(fomo, "pretrained_folder", lambda name: tmp_path)
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("a file was loaded before the hash check")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", never)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", never)
    with pytest.raises(ValueError, match=rf"{tampered} has sha256 .*expected {PRETRAINED[NAME][2][tampered]}"):
        load_fomo(NAME)


def test_partial_tf_weights_are_an_error(tmp_path):
    """A tf_model.h5 lacking block 3's weights (deleted from the file, as a partial copy would): loading raises,
    naming the file, instead of leaving block 3 randomly initialised; the whole file loads back exactly."""
    model, _ = build_fomo("bert", seed=0)
    save_tf(model, None, tmp_path)
    again, _ = load_fomo(str(tmp_path))
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.weights, again.weights))
    with h5py.File(tmp_path / "tf_model.h5", "r+") as f:
        names = list(f["bert"].attrs["weight_names"])
        keep = [n for n in names if "layer_._3/" not in n]
        for n in set(names) - set(keep):
            del f["bert"][n]
        f["bert"].attrs["weight_names"] = keep
    assert len(keep) < len(names)
    with pytest.raises(ValueError, match=r"tf_model.h5 lacks 16 weight\(s\).*layer_._3"):
        load_fomo(str(tmp_path))
