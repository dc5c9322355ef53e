"""AirComp neural connections: the over-the-air sum against the ideal sum, finite-difference gradients, the
server's noise against the design's MSE, channel-use counts, the multi-view model, and clear errors."""

import numpy as np
import pytest
import tensorflow as tf

from deft6g.finetune import AirCompConnection, DigitalConnection, MultiViewModel, evaluate_multiview, \
    feature_stats, side_info_channel_uses, split_views, train_multiview
from deft6g.finetune.techniques.multiview_model import SPLITS, channel_seed
from deft6g.optim import design_aircomp, task_oriented_design
from deft6g.phy.block_codec import info_bits
from deft6g.phy.digital_uplink import HEADER_BITS


def _payloads(rng, b, m, d, scale=None):
    scale = rng.uniform(0.5, 3.0, (m, d)) if scale is None else scale
    return (rng.normal(size=(b, m, d)) * scale + rng.normal(size=(m, d))).astype(np.float32)


@pytest.mark.parametrize("width", [6, 5])
@pytest.mark.parametrize("method", ["mmse", "zf"])
def test_very_high_snr_equals_ideal_sum(rng, width, method):
    """At SNR 150 dB the MMSE and ZF designs are aligned up to ~1e-15, so the estimate is the sum of the
    payloads to float32 precision: max error <= 1e-3 x the sum's largest entry (seed 1234), with each
    block's own statistics (training) and with fixed ones (deployment), odd and even D."""
    conn = AirCompConnection(3, 4, width, snr_db=150.0, method=method)
    x = _payloads(rng, 64, 3, width)
    blocks = conn.draw(2, seed=0)
    ideal = x.sum(1)
    stats = (x.mean(0), x.std(0).max(0))
    for st in (None, stats):
        est = conn(x, *blocks[0], stats=st, seed=1).numpy()
        assert np.max(np.abs(est - ideal)) <= 1e-3 * np.max(np.abs(ideal))
    both = conn(np.stack([x, x]), *blocks[0:2], seed=1).numpy()           # two blocks at once
    assert np.max(np.abs(both - ideal)) <= 1e-3 * np.max(np.abs(ideal))


def test_gradients_match_finite_differences(rng):
    """d/dx of sum(w * connection(x)) at SNR 10 dB with the noise fixed by the seed, in float64, with the
    block's own (differentiable) statistics: tape gradient = central differences (step 1e-6) to 1e-6
    relative, for every entry of x [5, 2, 3] (seed 1234)."""
    conn = AirCompConnection(2, 3, 3, snr_db=10.0, method="mmse")
    H, a, b, split = conn.draw(1, seed=3)[0]
    x = _payloads(rng, 5, 2, 3).astype(np.float64)
    w = rng.normal(size=(5, 3))

    def f(v):
        return tf.reduce_sum(w * conn(v, H, a, b, split, seed=7))

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = f(xt)
    grad = tape.gradient(y, xt).numpy()
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = 1e-6
        num[idx] = (f(tf.constant(x + e)) - f(tf.constant(x - e))).numpy() / 2e-6
    assert np.abs(conn(xt, H, a, b, split, seed=7).numpy() - conn(xt, H, a, b, split, seed=8).numpy()).max() > 1e-3
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-6 * np.abs(num).max())


@pytest.mark.parametrize("task", [False, True])
def test_server_noise_variance_is_the_designs_mse(rng, task):
    """Payloads with equal spread c = 2 on every device (rho = 1) and the true statistics as fixed ones: the
    error of dimension d at the server input has variance c^2 e_d, e_d the design's per-dimension MSE
    (MSE design: `design_aircomp(...).mse` for every d; task-oriented: `dimension_mse`). 40,000 examples,
    N = 4, M = 3, D = 4, SNR 5 dB: within 4 % (about 5 standard errors of a variance estimate; seed 1234)."""
    m, d, n_ex = 3, 4, 40_000
    importance = np.array([4.0, 1.0, 0.25, 2.0]) if task else None
    conn = AirCompConnection(m, 4, d, snr_db=5.0, method="mmse", importance=importance)
    blocks = conn.draw(1, seed=11)
    mean = rng.normal(size=(m, d))
    x = mean + 2.0 * rng.normal(size=(n_ex, m, d))
    est = conn(x, *blocks[0], stats=(mean, np.full(d, 2.0)), seed=2).numpy()
    var = np.var(est - x.sum(1), axis=0)
    H = blocks.H[0].astype(np.complex128)
    if task:
        predicted = task_oriented_design(H, 1.0, conn.noise_var, importance, "mmse", seed=11).dimension_mse
    else:
        predicted = np.full(d, design_aircomp(H, 1.0, conn.noise_var, "mmse", seed=11).mse)
    np.testing.assert_allclose(var, 4.0 * predicted, rtol=0.04)
    np.testing.assert_allclose(blocks.mse[0], np.mean(predicted), rtol=1e-4)


@pytest.mark.parametrize("width", [1, 7, 16])
def test_channel_uses_are_the_analytic_count(width):
    """AirComp: ceil(D/2) channel uses per example (two reals per complex symbol, all devices at once), the
    number of symbols the connection's estimate carries; side information: 2 D float32 per device at 1 bit
    per use, sent once. Digital, TDMA with a fixed MCS (QPSK, rate 1/2, n = 1200): every device sends
    64 header bits + q B D payload bits in blocks of round(0.5 n) - 24 information bits, n / 2 symbols each."""
    conn = AirCompConnection(3, 2, width, snr_db=10.0, method="zf")
    assert conn.channel_uses(10) == 10 * ((width + 1) // 2)
    assert side_info_channel_uses(conn.side_info_reals(), 3) == 3 * 2 * width * 32
    blocks, b, q = 3, 20, 4
    dig = DigitalConnection(3, 2, width, snr_db=30.0, num_bits=q, mcs=(2, 0.5), streams=1, link="bits")
    x = np.random.default_rng(0).normal(size=(blocks, b, 3, width)).astype(np.float32)
    est, uses = dig(x, dig.draw(blocks, seed=0), seed=1)
    per_device = -(-(HEADER_BITS + q * b * width) // info_bits(0.5, 1200)) * 1200 // 2
    np.testing.assert_array_equal(uses, np.full(blocks, 3 * per_device))
    assert est.shape == (blocks, b, width)


def test_digital_at_high_snr_is_the_quantised_sum():
    """At 40 dB every block passes its CRC: the digital sum equals the sum of the q-bit quantised payloads,
    error per device <= half a quantiser step (range / (2^q - 1) / 2), so <= M / 2 steps in the sum."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 16, 3, 4)).astype(np.float32)
    dig = DigitalConnection(3, 4, 4, snr_db=40.0, num_bits=8)
    est, _ = dig(x, dig.draw(2, seed=0), seed=1)
    step = (x.max((1, 3)) - x.min((1, 3))) / 255                                   # [T, M]
    assert np.all(np.abs(est - x.sum(2)) <= step.sum(-1)[:, None, None] / 2 + 1e-5)


def test_noise_aware_training_reaches_every_device_and_beats_chance(rng):
    """One training epoch through the AirComp connection (SNR 10 dB) changes every device's projection,
    and a separable 3-class toy task (class means 2 apart per view) is learnt to >= 0.9 test accuracy
    over the channel (seed 0; chance 1/3)."""
    s, m, f, d = 600, 3, 8, 4
    y = rng.integers(0, 3, s)
    x = (2.0 * np.eye(3, f)[y][:, None, :] + rng.normal(size=(s, m, f))).astype(np.float32)
    model = MultiViewModel(m, f, d, 3, hidden=16, seed=0, feature_stats=feature_stats(x))
    before = model.W.numpy().copy()
    conn = AirCompConnection(m, 4, d, snr_db=10.0, method="mmse")
    losses = train_multiview(model, x[:400], y[:400], conn, epochs=8, batch_size=50, lr=1e-2, seed=0)
    assert np.all(np.abs(model.W.numpy() - before).reshape(m, -1).max(-1) > 0)
    assert losses[-1] < losses[0]
    acc, nmse, uses = evaluate_multiview(model, x[400:], y[400:], conn, block=50, repeats=2)
    assert acc >= 0.9 and 0 < nmse < 1 and uses == 2


def test_digital_deliver_is_the_uplinks_sum():
    """`deliver(x, delivered(H, B, seed))` (training's split of a call: outcomes drawn once, payloads quantised
    per batch) equals the call's estimate with the same seed, to float32 rounding, at -15 dB where about
    half the entries are lost (M = 4 devices, N = 2, D = 3, 4-bit quantiser, 8 blocks of 16 examples)."""
    rng = np.random.default_rng(3)
    dig = DigitalConnection(4, 2, 3, snr_db=-15.0, num_bits=4)
    x = rng.normal(size=(8, 16, 4, 3)).astype(np.float32) * rng.uniform(0.5, 2.0, (4, 3))
    H = dig.draw(8, seed=5)
    est, _ = dig(x, H, seed=9)
    valid = dig.delivered(H, 16, seed=9)
    assert valid.shape == (8, 16, 4, 3) and 0 < valid.mean() < 1
    mine = np.stack([dig.deliver(x[t], valid[t]).numpy() for t in range(8)])
    np.testing.assert_allclose(mine, est, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="`link` must be 'abstract'"):
        DigitalConnection(4, 2, 3, snr_db=0.0, link="bits").delivered(H, 16)


def test_noise_aware_digital_training_learns_through_the_quantiser(rng):
    """Training through a 2-bit digital link at 0 dB (straight-through gradient) changes every device's
    projection and learns the separable 3-class toy task to >= 0.9 test accuracy over that link (seed 0)."""
    s, m, f, d = 600, 3, 8, 4
    y = rng.integers(0, 3, s)
    x = (2.0 * np.eye(3, f)[y][:, None, :] + rng.normal(size=(s, m, f))).astype(np.float32)
    model = MultiViewModel(m, f, d, 3, hidden=16, seed=0, feature_stats=feature_stats(x))
    before = model.W.numpy().copy()
    conn = DigitalConnection(m, 4, d, snr_db=0.0, num_bits=2)
    losses = train_multiview(model, x[:400], y[:400], conn, epochs=8, batch_size=50, lr=1e-2, seed=0)
    assert np.all(np.abs(model.W.numpy() - before).reshape(m, -1).max(-1) > 0)
    assert losses[-1] < losses[0]
    acc, nmse, uses = evaluate_multiview(model, x[400:], y[400:], conn, block=50, repeats=2)
    assert acc >= 0.9 and 0 < nmse and uses > 0


def test_training_and_evaluation_channels_come_from_disjoint_seeds(monkeypatch):
    """channel_seed: for run seeds 0..199 the train, validation and test streams (channels and noise) are 1,200
    distinct seeds. And what the functions use: every seed train_multiview passes to the connection (draw,
    delivered, noise) differs from every seed evaluate_multiview passes on validation and test, and no test
    channel realisation equals a training one (AirComp and digital)."""
    all_seeds = {channel_seed(r, split, stream) for r in range(200) for split in SPLITS for stream in (0, 1)}
    assert len(all_seeds) == 200 * len(SPLITS) * 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2, 3)).astype(np.float32)
    y = rng.integers(0, 2, 100)
    for conn in (AirCompConnection(2, 2, 2, snr_db=10.0), DigitalConnection(2, 2, 2, snr_db=10.0, num_bits=4)):
        seen = {"train": ([], []), "validation": ([], []), "test": ([], [])}
        phase = ["train"]
        cls = type(conn)
        draw, call = cls.draw, cls.__call__

        def spy_draw(self, num_blocks, seed, draw=draw):
            seen[phase[0]][0].append(seed)
            blocks = draw(self, num_blocks, seed)
            seen[phase[0]][1].append(blocks.H if hasattr(blocks, "H") else blocks)
            return blocks

        def spy_call(self, *args, seed=None, call=call, **kwargs):
            seen[phase[0]][0].append(seed)
            return call(self, *args, seed=seed, **kwargs)

        monkeypatch.setattr(cls, "draw", spy_draw)
        monkeypatch.setattr(cls, "__call__", spy_call)
        if cls is DigitalConnection:
            delivered = cls.delivered
            monkeypatch.setattr(cls, "delivered", lambda self, H, b, seed=None: seen["train"][0].append(seed)
                                or delivered(self, H, b, seed=seed))
        model = MultiViewModel(2, 3, 2, 2, hidden=4, seed=0)
        train_multiview(model, x, y, conn, epochs=2, batch_size=25, seed=0)
        for split in ("validation", "test"):
            phase[0] = split
            evaluate_multiview(model, x, y, conn, block=25, repeats=2, seed=0, split=split)
        train_seeds = set(seen["train"][0]) | {channel_seed(0, "train", 1)}          # + the reseeded noise
        for split in ("validation", "test"):
            assert seen[split][0] and not train_seeds & set(seen[split][0]), (cls.__name__, split)
        train_H = np.concatenate(seen["train"][1]).reshape(-1, 4)
        test_H = np.concatenate(seen["test"][1]).reshape(-1, 4)
        assert not np.any(np.all(np.isclose(test_H[:, None], train_H[None]), -1))


def test_split_views_keeps_the_words_in_order():
    views = split_views(["a b c d e", "one two", ""], 3)
    assert [v[0] for v in views] == ["a b", "c", "d e"]
    assert [" ".join(w for w in (v[1] for v in views) if w)] == ["one two"]
    assert [v[2] for v in views] == ["", "", ""]


def test_mismatches_raise_clear_errors(rng):
    conn = AirCompConnection(3, 2, 4, snr_db=10.0, method="zf")
    H, a, b, split = conn.draw(1, seed=0)[0]
    with pytest.raises(ValueError, match=r"`x` must have shape \[\.\.\., B, 3 devices, 4 dimensions\], "
                                         r"got \[8, 2, 4\]"):
        conn(np.zeros((8, 2, 4), np.float32), H, a, b, split)
    with pytest.raises(ValueError, match="`x` must have shape"):
        conn(np.zeros((8, 3, 5), np.float32), H, a, b, split)
    with pytest.raises(ValueError, match="`b`"):                              # H of 4 devices, b of 3
        conn(np.zeros((8, 3, 4), np.float32), np.ones((2, 4), np.complex64), a, b, split)
    with pytest.raises(ValueError, match=r"`importance` must have shape \[4\]"):
        conn.set_importance([1.0, 2.0])
    with pytest.raises(ValueError, match="`importance`"):
        conn.set_importance([1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="`num_rx_ant`"):
        AirCompConnection(3, 0, 4, snr_db=0.0)
    with pytest.raises(ValueError, match="`snr_db`"):
        AirCompConnection(3, 2, 4, snr_db=float("nan"))
    model = MultiViewModel(3, 8, 4, 2)
    with pytest.raises(ValueError, match=r"`x` must have shape \[S, 3 devices, 8 features\], got \[10, 2, 8\]"):
        train_multiview(model, np.zeros((10, 2, 8), np.float32), np.zeros(10, int), batch_size=5)
    with pytest.raises(ValueError, match="`num_views`"):
        split_views(["a"], 0)
    with pytest.raises(ValueError, match="`split` must be one of"):
        channel_seed(0, "val")
    with pytest.raises(ValueError, match="`seed` must be a non-negative int"):
        channel_seed(-1, "test")
    with pytest.raises(ValueError, match="`split` must be 'validation' or 'test'"):
        evaluate_multiview(model, np.zeros((10, 3, 8), np.float32), np.zeros(10, int),
                           AirCompConnection(3, 2, 4, snr_db=10.0), block=5, split="train")
