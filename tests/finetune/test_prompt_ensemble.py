"""Prompt pool and on-the-fly prompt ensemble on tiny random BERTs: the batched multi-prompt pass against each
prompt run alone, ensembles of identical prompts, the budget, the gate (convex, uniform at the start, its
gradient against finite differences) and the argument checks."""

import numpy as np
import pytest

from deft6g.finetune import (INFERENCE_MODES, EnsembleGate, MemberTrainer, OnTheFlyEnsemble, PromptMember,
                             PromptPool, RULES, build_fomo, combine, frozen_features, heldout_scores, member_of,
                             one_by_one_logits, pool_logits, pool_logits_from_tokens)

HIDDEN, LABELS = 32, 3


def tiny_trainer(tokens_pattern, seed=0, **kwargs):
    model, _ = build_fomo("bert", seed=seed, vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=3,
                          num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    return MemberTrainer(model, LABELS, tokens_pattern, seed=seed, **kwargs)


def tokens(rng, n, length=12):
    lengths = rng.integers(2, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    return {"input_ids": (rng.integers(1, 100, (n, length)) * mask).astype(np.int32), "attention_mask": mask}


def random_member(rng, trainer, origin=0):
    m = member_of(trainer.peft, origin)
    return PromptMember({b: rng.standard_normal(p.shape).astype(np.float32) for b, p in m.prompts.items()},
                        rng.standard_normal(m.kernel.shape).astype(np.float32),
                        rng.standard_normal(m.bias.shape).astype(np.float32), origin)


def test_batched_pass_equals_each_prompt_alone(rng):
    """Deep prompts at blocks 1 and 2 of a 3-block BERT, 4 members: one batched pass over (prompt, example)
    rows from the shared block-1 input equals each member's own full forward from the tokens, and each
    member run alone from the cached input, and so does inference from the tokens in every mode (tolerance 1e-5
    in float32; lengths 2..12, so batches are trimmed)."""
    trainer = tiny_trainer({1: 3, 2: 2})
    x = tokens(rng, 37)
    members = [random_member(rng, trainer, i) for i in range(4)]
    h, m = trainer.activations(x)
    batched = pool_logits(trainer.peft, members, h, m, trainer.start, batch_rows=40)
    full = one_by_one_logits(trainer.peft, members, x)
    cached = one_by_one_logits(trainer.peft, members, (h, m), start=trainer.start)
    assert batched.shape == (4, 37, LABELS)
    np.testing.assert_allclose(batched, full, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched, cached, atol=1e-5, rtol=0)
    for mode in INFERENCE_MODES:
        np.testing.assert_allclose(pool_logits_from_tokens(trainer.peft, members, x, mode, batch_size=16), full,
                                   atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="`mode`"):
        pool_logits_from_tokens(trainer.peft, members, x, "sideways")
    assert np.ptp(batched, axis=0).max() > 1e-2            # the members really differ


def test_ensemble_of_identical_prompts_equals_the_single_prompt(rng):
    """Three copies of one member: every rule (and any convex gate) predicts the single member's argmax."""
    trainer = tiny_trainer({2: 4})
    x = tokens(rng, 25)
    h, m = trainer.activations(x)
    one = random_member(rng, trainer)
    single = pool_logits(trainer.peft, [one], h, m, trainer.start)[0]
    logits = pool_logits(trainer.peft, [one, one, one], h, m, trainer.start)
    weights = rng.dirichlet(np.ones(3), size=25)
    for rule in RULES:
        np.testing.assert_array_equal(combine(logits, rule, weights), single.argmax(-1))


def test_vote_and_mean_against_brute_force(rng):
    """Majority vote (ties broken by the mean logits) and the mean rule re-derived example by example."""
    logits = rng.standard_normal((4, 200, 3))
    vote = combine(logits, "vote")
    for s in range(200):
        counts = np.bincount(logits[:, s].argmax(-1), minlength=3)
        tied = np.flatnonzero(counts == counts.max())
        assert vote[s] == tied[np.argmax(logits[:, s].mean(0)[tied])]
    np.testing.assert_array_equal(combine(logits, "mean"), logits.sum(0).argmax(-1))
    with pytest.raises(ValueError, match="`rule`"):
        combine(logits, "median")
    with pytest.raises(ValueError, match="`weights`"):
        combine(logits, "gate", np.ones((200, 3)) / 3)


def test_pool_never_exceeds_its_budget_and_drops_the_weakest(rng):
    """60 offers with random held-out scores into pools of 1, 3 and a byte budget of 2.5 members: the pool
    holds min(offers, capacity) members, its bytes stay within the budget, and the member that leaves is the
    lowest-scored of pool + candidate (brute force over the scores)."""
    shape = (np.zeros((4, 8), np.float32), np.zeros((8, 2), np.float32), np.zeros(2, np.float32))
    size = PromptMember({3: shape[0]}, shape[1], shape[2]).nbytes
    assert size == 4 * (4 * 8 + 8 * 2 + 2)
    for pool in (PromptPool(capacity=1), PromptPool(capacity=3), PromptPool(budget_bytes=int(2.5 * size))):
        for t in range(60):
            cand = PromptMember({3: shape[0]}, shape[1], shape[2], origin=t)
            scores = rng.random(len(pool.members) + 1)
            before = [m.origin for m in pool.members] + [t]
            slot, dropped = pool.add(cand, scores)
            expected_out = before[int(np.argmin(scores))] if len(before) > pool.capacity else None
            assert (dropped.origin if dropped is not None else None) == expected_out
            assert (slot is None) == (expected_out == t)
            assert len(pool.members) == min(t + 1, pool.capacity)
            if pool.budget_bytes is not None:
                assert pool.capacity == 2 and pool.nbytes <= pool.budget_bytes


@pytest.mark.parametrize("kwargs, name", [
    (dict(capacity=0), "capacity"), (dict(capacity=-2), "capacity"), (dict(capacity=2.5), "capacity"),
    (dict(capacity=True), "capacity"), (dict(budget_bytes=0), "budget_bytes"),
    (dict(capacity=2, budget_bytes=100), "capacity"), (dict(), "capacity"),
])
def test_bad_pool_sizes_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        PromptPool(**kwargs)


def test_budget_below_one_member_and_mismatched_prompts_are_refused(rng):
    member = PromptMember({3: np.zeros((4, 8), np.float32)}, np.zeros((8, 2), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="`budget_bytes` 100 cannot hold one member of 200 bytes"):
        PromptPool(budget_bytes=100).add(member, [0.0])
    pool = PromptPool(capacity=3)
    pool.add(member, [0.0])
    longer = PromptMember({3: np.zeros((5, 8), np.float32)}, member.kernel, member.bias)
    with pytest.raises(ValueError, match=r"`member` has prompt/head shapes \(\{3: \(5, 8\)\}"):
        pool.add(longer, [0.0, 0.0])
    with pytest.raises(ValueError, match="`scores`"):
        pool.add(member, [0.0])
    trainer = tiny_trainer({2: 4})
    h, m = trainer.activations(tokens(rng, 5))
    good = random_member(rng, trainer)
    other_block = PromptMember({1: good.prompts[2]}, good.kernel, good.bias)
    with pytest.raises(ValueError, match=r"`members\[1\]` has prompt/head shapes"):
        pool_logits(trainer.peft, [good, other_block], h, m, trainer.start)
    with pytest.raises(ValueError, match="`start`"):
        pool_logits(trainer.peft, [good], h, m, 3)


def test_gate_starts_uniform_stays_convex_and_its_gradient_matches_finite_differences(rng):
    """W = b = 0 gives weights 1/M; after fitting, rows are non-negative and sum to 1; the analytic gradient
    matches central differences (step 1e-6, rtol 1e-5, float64); fitting lowers the loss when member 0 is
    right exactly where feature 0 is positive and member 1 elsewhere, and moves weight to the right member."""
    f, n = 5, 300
    gate = EnsembleGate(f, capacity=3, l2=1e-3, lr=0.5, steps=200)
    feats = rng.standard_normal((n, f))
    np.testing.assert_array_equal(gate.weights(feats, [0, 1, 2]), np.full((n, 3), 1 / 3))
    y = rng.integers(0, 2, n)
    onehot = np.eye(2)[y] * 4 - 2
    first = feats[:, 0] > 0
    logits = np.stack([np.where(first[:, None], onehot, -onehot), np.where(first[:, None], -onehot, onehot)])
    before, after = gate.update(feats, logits, y, [0, 1])
    assert after < 0.5 * before
    w = gate.weights(feats, [0, 1])
    assert np.all(w >= 0) and np.allclose(w.sum(1), 1.0)
    assert np.mean(w[first, 0]) > 0.8 and np.mean(w[~first, 1]) > 0.8
    gate.W[:] = rng.standard_normal(gate.W.shape) * 0.3
    z = gate._z(feats)
    _, d_w, d_b = gate.loss_and_grads(z, logits, y, [0, 1])
    for idx in [(0, 0), (3, 1), (4, 0)]:
        gate.W[idx] += 1e-6
        up = gate.loss_and_grads(z, logits, y, [0, 1])[0]
        gate.W[idx] -= 2e-6
        down = gate.loss_and_grads(z, logits, y, [0, 1])[0]
        gate.W[idx] += 1e-6
        np.testing.assert_allclose(d_w[idx], (up - down) / 2e-6, rtol=1e-5)
    gate.b[1] += 1e-6
    up = gate.loss_and_grads(z, logits, y, [0, 1])[0]
    gate.b[1] -= 2e-6
    down = gate.loss_and_grads(z, logits, y, [0, 1])[0]
    np.testing.assert_allclose(d_b[1], (up - down) / 2e-6, rtol=1e-5)


def test_held_out_score_and_frozen_features(rng):
    """Scores: accuracy minus CE / (100 n), CE re-derived with softmax; features: masked token means."""
    logits = rng.standard_normal((2, 10, 3))
    y = rng.integers(0, 3, 10)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ce = -np.log(p[:, np.arange(10), y]).mean(1)
    np.testing.assert_allclose(heldout_scores(logits, y), (logits.argmax(-1) == y).mean(1) - ce / 1000)
    h, m = rng.standard_normal((3, 4, 2)), np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(frozen_features(h, m), [h[0, :2].mean(0), h[1, 0], h[2].mean(0)], rtol=1e-6)


def test_stream_with_warm_start_keeps_the_budget_and_predicts_every_rule(rng):
    """Four chunks into a pool of 2 with warm starts: the pool stays at 2, the second member starts from the
    first, the members' held-out scores match a fresh batched pass (1e-6), and predictions come for every rule."""
    trainer = tiny_trainer({2: 2}, epochs=1, batch_size=8)
    ens = OnTheFlyEnsemble(trainer, PromptPool(capacity=2), init="warm", gate_memory=2, steps=5)
    logs = []
    for t in range(4):
        h, m = trainer.activations(tokens(rng, 20))
        y = rng.integers(0, LABELS, 20)
        logs.append(ens.observe((h[:16], m[:16], y[:16]), (h[16:], m[16:], y[16:])))
        assert len(ens.pool.members) == min(t + 1, 2)
        fresh_scores = heldout_scores(pool_logits(trainer.peft, ens.pool.members, h[16:], m[16:], trainer.start), y[16:])
        np.testing.assert_allclose(ens.scores, fresh_scores, atol=1e-6)
        assert ens.selected() is ens.pool.members[int(np.argmax(fresh_scores))]
    with pytest.raises(ValueError, match="`candidate` origin 3"):
        ens.observe((h[:16], m[:16], y[:16]), (h[16:], m[16:], y[16:]), candidate=ens.newest)
    assert logs[0].init_from is None and logs[1].init_from == 0
    assert [lg.origin for lg in logs] == [0, 1, 2, 3] and len(logs[3].scores) == 3
    h, m = trainer.activations(tokens(rng, 9))
    pred = ens.predict(h, m)
    assert set(pred) == set(RULES) and all(p.shape == (9,) for p in pred.values())
    with pytest.raises(ValueError, match="`init`"):
        OnTheFlyEnsemble(trainer, PromptPool(capacity=2), init="lukewarm")


def test_training_steps_are_counted_and_a_warm_member_carries_its_lineage(rng):
    """20 texts, batch 8, 2 epochs: ceil(20/8) * 2 = 6 steps by default, exactly 7 when asked (a third pass cut
    short), the counter adds both; a member warm-started from the 7-step one has 13 steps behind it."""
    trainer = tiny_trainer({2: 2}, epochs=2, batch_size=8)
    h, m = trainer.activations(tokens(rng, 20))
    y = rng.integers(0, LABELS, 20)
    assert trainer.steps_for(20) == 6
    first = trainer.train(h, m, y, origin=0)
    longer = trainer.train(h, m, y, origin=0, steps=7)
    assert (first.steps, longer.steps, trainer.steps_taken) == (6, 7, 13)
    assert trainer.train(h, m, y, init=longer, origin=1).steps == 13 and trainer.steps_taken == 19
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="`steps`"):
            trainer.train(h, m, y, steps=bad)
