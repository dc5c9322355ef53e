"""FoMo emulator compression, download size, distillation alignment and plug-in, on tiny random BERTs."""

import json

import numpy as np
import pytest

from deft6g.finetune import (LoraConfig, align_emulator, build_emulator, build_fomo, dequantize, download_bits,
                             emulator_blocks, emulator_config, get_peft_model, hidden_state, low_rank_factors,
                             pack_emulator, plug_in, quantize_int8, remap_tokens, token_map, unpack_emulator)

V, H, F, L, P = 120, 64, 128, 4, 128      # vocabulary, hidden, FFN, blocks, positions (ARCHITECTURES["bert"])
UNK = 1


@pytest.fixture(scope="module")
def full():
    model, _ = build_fomo("bert", seed=0, vocab_size=V, num_hidden_layers=L)
    return model


@pytest.fixture(scope="module")
def kept():
    return emulator_blocks(L, 1, 1, 0.5)          # [0, 1, 3]


def tokens(rng, n, t=12, low=2, high=V):
    ids = rng.integers(low, high, (n, t)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[:, t - 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def masked(h, mask):
    return h * mask[..., None]


def test_vocabulary_pruning_keeps_in_vocabulary_outputs_and_maps_the_rest_to_unk(full, kept):
    """Pruned to ids {0, 1} U [40, 80): texts using only kept ids give the float emulator's last hidden state
    (1e-5); a text with 3 of its 9 real tokens outside the set equals the same text with those ids replaced by
    [UNK], and the measured UNK rate is 12 / 36 real tokens on 4 texts."""
    rng = np.random.default_rng(0)
    emu = build_emulator(full, kept)
    keep = np.r_[0, UNK, 40:80]
    package = pack_emulator(emu, kept, vocab_ids=keep)
    device = unpack_emulator(package)
    assert device.config.vocab_size == keep.size
    lookup = token_map(package, UNK)
    x = tokens(rng, 6, low=40, high=80)
    mapped, unk = remap_tokens(x, lookup, UNK)
    assert unk == 0.0
    np.testing.assert_allclose(masked(hidden_state(device, mapped, 3), x["attention_mask"]),
                               masked(hidden_state(emu, x, 3), x["attention_mask"]), atol=1e-5)
    x = tokens(rng, 4, low=40, high=80)
    x["input_ids"][:, :3] = [5, 90, 119]
    mapped, unk = remap_tokens(x, lookup, UNK)
    assert unk == pytest.approx(3 / 9)
    as_unk = {**x, "input_ids": np.where(np.isin(x["input_ids"], keep), x["input_ids"], UNK)}
    np.testing.assert_allclose(hidden_state(device, mapped, 3), hidden_state(emu, as_unk, 3), atol=1e-5)
    with pytest.raises(ValueError, match="`vocab_ids`"):
        pack_emulator(emu, kept, vocab_ids=[V + 3])


def test_int8_weights_within_half_a_step_and_outputs_within_two_percent(full, kept):
    """Entrywise |w - q s| <= s/2 with s = max|column| / 127 (NumPy); the int8 emulator's last hidden state is
    within 2% of the float one in relative Frobenius norm over the real tokens (measured 0.5% on this seed-0
    model; a 2-D weight rounding error of 1/254 of the column maximum per entry)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 5)).astype(np.float32)
    q, s = quantize_int8(w, 0)
    np.testing.assert_allclose(s, np.abs(w).max(0) / 127, rtol=1e-6)
    assert q.dtype == np.int8 and np.all(np.abs(w - dequantize(q, s, 0)) <= s / 2 + 1e-7)
    emu = build_emulator(full, kept)
    device = unpack_emulator(pack_emulator(emu, kept, int8=True))
    x = tokens(rng, 8)
    ref, got = masked(hidden_state(emu, x, 3), x["attention_mask"]), masked(hidden_state(device, x, 3), x["attention_mask"])
    assert 0 < np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02


def test_low_rank_factors_are_the_truncated_svd():
    """U V equals the rank-k truncated SVD (Eckart-Young: error^2 = sum of the dropped squared singular values)."""
    w = np.random.default_rng(2).standard_normal((20, 12))
    u, v = low_rank_factors(w, 5)
    s = np.linalg.svd(w, compute_uv=False)
    assert u.shape == (20, 5) and v.shape == (5, 12)
    assert np.sum((w - u @ v) ** 2) == pytest.approx(np.sum(s[5:] ** 2), rel=1e-5)
    with pytest.raises(ValueError, match="`rank`"):
        low_rank_factors(w, 13)


def test_download_bits_count_every_sent_tensor(full, kept):
    """Vocabulary (42 ids) + int8 + low rank 1/4 in emulator block 1, counted by hand from the shapes: int8
    matrices 8 bits per entry + a 32-bit scale per column (kernels, factors) or row (embeddings), float32
    vectors, the packed vocabulary mask (ceil(V/8) bytes) and the JSON config bytes."""
    emu = build_emulator(full, kept)
    keep = np.r_[0, UNK, 40:80]
    package = pack_emulator(emu, kept, vocab_ids=keep, int8=True, low_rank_blocks=(1,), rank_fraction=0.25)

    def mat(rows, cols, per_row=False):
        return 8 * rows * cols + 32 * (rows if per_row else cols)

    emb = mat(keep.size, H, True) + mat(P, H, True) + mat(2, H, True) + 32 * 2 * H
    vectors = 32 * (4 * H + F + H + 4 * H)                 # q, k, v, o biases; FFN biases; two LayerNorms
    dense = 4 * mat(H, H) + mat(H, F) + mat(F, H)
    k_att, k_ffn = 16, 16                                   # round(0.25 * min(in, out))
    factored = 4 * (mat(H, k_att) + mat(k_att, H)) + mat(H, k_ffn) + mat(k_ffn, F) + mat(F, k_ffn) + mat(k_ffn, H)
    config_bits = 8 * len(package["config.json"])
    expected = emb + 3 * vectors + 2 * dense + factored + 8 * int(np.ceil(V / 8)) + config_bits
    assert download_bits(package) == expected
    assert json.loads(package["config.json"].tobytes())["deft6g_kept_blocks"] == kept
    assert download_bits(pack_emulator(full, list(range(L)))) == 32 * (full.count_params() - H * H - H) + \
        8 * len(pack_emulator(full, list(range(L)))["config.json"])          # float32, pooler not sent


def test_distillation_reduces_the_boundary_mse(full, kept):
    """30 Adam steps (lr 1e-3, seed 0) on random public tokens: the held-out MSE between the emulator's middle
    output and the full model's input of the top block falls by at least half; bottom and top blocks untouched."""
    emu = build_emulator(full, kept)
    before = [w.copy() for i in (0, 2) for w in emu.bert.encoder.layer[i].get_weights()]
    x = tokens(np.random.default_rng(3), 64)
    out = align_emulator(full, emu, kept, x, steps=30, lr=1e-3, heldout=0.25)
    assert out["mse_after"] < 0.5 * out["mse_before"]
    after = [w for i in (0, 2) for w in emu.bert.encoder.layer[i].get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError, match="no middle"):
        align_emulator(full, emu, kept, x, bottom=2, top=1)


def test_each_seed_distils_its_own_emulator(full, kept):
    """The study distils one emulator per seed: 10 Adam steps (lr 1e-3) with seed 0 twice give the same middle
    weights and held-out MSE; seed 1 other weights and another MSE, measured on the same held-out texts (the
    same MSE before); each seed lowers the boundary MSE."""
    x = tokens(np.random.default_rng(5), 48)

    def distil(seed):
        emu = build_emulator(full, kept)
        out = align_emulator(full, emu, kept, x, steps=10, lr=1e-3, heldout=0.25, seed=seed)
        return out, [w for blk in emu.bert.encoder.layer[1:2] for w in blk.get_weights()]

    (a, wa), (b, wb), (c, wc) = distil(0), distil(0), distil(1)
    assert all(np.array_equal(u, v) for u, v in zip(wa, wb))
    assert a["mse_after"] == b["mse_after"] and a["mse_before"] == c["mse_before"]
    assert not all(np.array_equal(u, v) for u, v in zip(wa, wc)) and a["mse_after"] != c["mse_after"]
    for out in (a, c):
        assert out["mse_after"] < out["mse_before"]


def test_plug_in_state_of_a_compressed_emulator_loads_into_the_full_model(full, kept):
    """LoRA in the top block of the int8, vocabulary-pruned emulator: after plug_in the full model holds the
    same LoRA factors and head, and its top block maps the same input to the same output as the emulator's
    float top block with those factors (1e-5)."""
    import tensorflow as tf
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], layers_to_transform=[L - 1])
    base, _ = build_fomo("bert", seed=0, vocab_size=V, num_hidden_layers=L)
    full_peft = get_peft_model(base, cfg, num_labels=2)
    package = pack_emulator(build_emulator(full, kept), kept, vocab_ids=np.r_[0, UNK, 2:60], int8=True)
    device = get_peft_model(unpack_emulator(package), emulator_config(cfg, kept, L), num_labels=2, seed=5)
    rng = np.random.default_rng(4)
    for v in device.trainable_variables:
        v.assign(rng.standard_normal(v.shape).astype(np.float32) * 0.1)
    plug_in(full_peft, device, kept)
    state = full_peft.peft_state()
    for k, v in device.peft_state().items():
        np.testing.assert_array_equal(state[k.replace(".layer.2.", f".layer.{L - 1}.")], v)
    np.testing.assert_array_equal(full_peft.head.kernel.numpy(), device.head.kernel.numpy())
    h, m = tf.constant(rng.standard_normal((2, 6, H)), tf.float32), tf.ones((2, 6))
    float_top = get_peft_model(build_emulator(full, kept), emulator_config(cfg, kept, L), num_labels=2)
    float_top.load_peft_state(device.peft_state())
    float_top.load_head_state(device.head_state())
    np.testing.assert_allclose(full_peft.forward_from(h, m, L - 1).numpy(),
                               float_top.forward_from(h, m, len(kept) - 1).numpy(), atol=1e-5)


def test_emulator_cli_quick(tmp_path):
    """`deft6g emulator --quick` writes the tables, the plot and a summary naming every emulator, one distilled
    emulator per seed; a re-run, reading the files anew, finds every point done and adds no row."""
    from deft6g.benchmarks.cli import main
    out = tmp_path / "emu"
    assert main(["emulator", "--quick", "--out", str(out)]) == 0
    for f in ("emulators.csv", "results.csv", "summary.csv", "download_vs_accuracy.png", "config.json"):
        assert (out / f).is_file(), f
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 3                  # full; compressed emulator with and without distillation
    import csv
    with (out / "results.csv").open() as f:
        distilled = [r for r in csv.DictReader(f) if r["distill"] == "True"]
    assert len(distilled) == 2 and distilled[0]["mse_after"] != distilled[1]["mse_after"]   # one per seed
    files = {f: (out / f).read_text() for f in ("emulators.csv", "results.csv")}
    assert main(["emulator", "--quick", "--out", str(out)]) == 0
    assert {f: (out / f).read_text() for f in files} == files      # every point found done, none re-run


def test_distillation_split_scores_every_run_on_the_same_validation_texts(full, kept):
    """align_emulator(split=(train, held)): runs training on different texts (the first 16 or all 40 of the
    non-held ones) start from the same held-out MSE (the same 8 validation texts: equal to masked_mse of the
    untouched emulator's middle output there), and a split that overlaps or leaves the texts raises."""
    from deft6g.finetune import boundary_states, masked_mse
    from deft6g.finetune.federation.distillation import run_blocks
    x = tokens(np.random.default_rng(6), 48)
    held = np.arange(8)
    src, tgt = boundary_states(full, build_emulator(full, kept), kept, x)
    mid = run_blocks(build_emulator(full, kept).bert.encoder.layer[1:2], src[held], x["attention_mask"][held]).numpy()
    want = masked_mse(mid, tgt[held], x["attention_mask"][held])
    outs = [align_emulator(full, build_emulator(full, kept), kept, x, steps=3, lr=1e-3, split=(np.arange(8, n), held))
            for n in (24, 48)]
    assert outs[0]["mse_before"] == pytest.approx(want, rel=1e-5) and outs[1]["mse_before"] == outs[0]["mse_before"]
    for bad in ((np.arange(4, 20), held), (np.arange(8, 60), held)):
        with pytest.raises(ValueError, match="`split`"):
            align_emulator(full, build_emulator(full, kept), kept, x, steps=1, split=bad)
