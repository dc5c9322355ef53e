"""Prompt transfer pieces: tasks, the frozen label-name head, the prompt trainer, SPoT similarity and trial choice."""

import numpy as np
import pytest

import dataclasses
import hashlib

from deft6g.finetune import build_fomo, load_dataset, tokenize
from deft6g.finetune.techniques.prompt_transfer import (TASKS, PromptClassifier, PromptTrainer,
                                                        choose_by_similarity, choose_by_trial, cosine_similarities,
                                                        device_split, get_task, initial_prompt, prompt_model,
                                                        task_arrays, task_embedding, task_relation)


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def tiny():
    """A random 4-block BERT (hidden 64) with a 4-token prompt at block 3, a 3-class head, and cached block inputs."""
    model, _ = build_fomo("bert", seed=0)
    peft = prompt_model(model, 3, 4)
    rng = np.random.default_rng(0)
    labels = rng.normal(size=(3, 64))
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    ids = rng.integers(1, 1000, (48, 12)).astype(np.int32)
    x = peft.activations({"input_ids": ids, "attention_mask": np.ones_like(ids)}, 3)
    y = rng.integers(0, 3, 48)
    return peft, labels, x, y


def test_tasks_and_unknown_names():
    assert {"bbc_topics5", "bbc_business_tech", "rt_sentiment", "rt_short", "rt_long"} <= set(TASKS)
    assert get_task("bbc_topics5").classes == ("business", "entertainment", "politics", "sports", "tech")
    with pytest.raises(ValueError, match="unknown task 'bbc_weather'"):
        get_task("bbc_weather")


def test_task_arrays_select_classes_and_word_counts(tmp_path, monkeypatch):
    """Pools cut to 60/30 BBC and 60/30 Rotten Tomatoes texts: a topic pair holds exactly the pool's texts of its
    two classes (counted from the dataset's own labels), labels follow the task's class order, and the short and
    long review subsets split the sentiment task's texts by word count."""
    from deft6g.finetune import load_study_model
    from deft6g.finetune.techniques.prompt_transfer import task_pool
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path))
    model, tok = load_study_model("random-bert")
    peft = prompt_model(model, 5, 2)
    pools = {"bbc_news": (60, 30), "rotten_tomatoes": (60, 30)}
    names = ["bbc_business_tech", "bbc_topics5", "rt_sentiment", "rt_short", "rt_long"]
    got = task_arrays(peft, tok, "random-bert", names, 5, max_length=16, pool_sizes=pools)
    bbc, train, test = task_pool("bbc_news", pools["bbc_news"])
    pair = got["bbc_business_tech"]
    names_of = np.array(bbc.class_names)
    assert len(pair.y_train) == np.isin(names_of[bbc.y[train]], ["business", "tech"]).sum()
    # test texts of the two classes, less those whose 16 tokens equal a training text's (repeated articles)
    inputs = dict(zip(np.concatenate([train, test]), map(bytes, tokenize(
        tok, [bbc.x[i] for i in np.concatenate([train, test])], 16, cache=False)["input_ids"])))
    in_train = {inputs[i] for i in train}
    test_pair = [i for i in test if bbc.class_names[bbc.y[i]] in ("business", "tech")]
    assert sorted(pair.test_ids) == sorted(i for i in test_pair if inputs[i] not in in_train)   # pools: draw order
    assert list(np.bincount(got["bbc_topics5"].y_train, minlength=5)) == list(np.bincount(bbc.y[train], minlength=5))
    assert set(np.unique(pair.y_train)) <= {0, 1} and pair.train[0].shape[1:] == (16, 64)
    rt, rt_train, _ = task_pool("rotten_tomatoes", pools["rotten_tomatoes"])
    short = sum(len(rt.x[i].split()) <= 20 for i in rt_train)
    assert len(got["rt_short"].y_train) == short
    assert len(got["rt_short"].y_train) + len(got["rt_long"].y_train) == len(got["rt_sentiment"].y_train) == 60
    assert np.allclose(np.linalg.norm(pair.labels, axis=1), 1.0, atol=1e-5)
    assert load_dataset("bbc_news").class_names == bbc.class_names


def test_classifier_logits_are_scaled_cosines(tiny):
    """logits = s cos(pooled features, label embedding), checked in NumPy from the PeftModel's pooled features."""
    peft, labels, x, _ = tiny
    clf = PromptClassifier(peft, labels, scale=7.0)
    feats = peft.forward_from(x[0], x[1], 3).numpy()                    # [B, H]: no head on this PeftModel
    expected = 7.0 * (feats / np.linalg.norm(feats, axis=1, keepdims=True)) @ labels.T
    assert np.allclose(clf.forward_from(x[0], x[1], 3).numpy(), expected, atol=1e-4)
    assert [v.name for v in clf.trainable_variables] == [clf.prompt.name]


def test_trainer_is_deterministic_and_resets_adam(tiny):
    """Two runs from the same start and seed give the same prompt and curve (the optimizer state is reset between
    runs), the prompt moves, and the trial choice is the arg-max of the accuracies it reports."""
    peft, labels, x, y = tiny
    trainer = PromptTrainer(PromptClassifier(peft, labels), learning_rate=0.05)
    start = initial_prompt("random", (4, 64), seed=0)
    p1, c1 = trainer.run(start, x, y, steps=5, batch_size=8, seed=3, eval_set=(x, y), eval_every=2)
    p2, c2 = trainer.run(start, x, y, steps=5, batch_size=8, seed=3, eval_set=(x, y), eval_every=2)
    assert np.array_equal(p1, p2) and c1 == c2 and [s for s, _ in c1] == [0, 2, 4]
    assert np.abs(p1 - start).max() > 1e-3
    name, scores = choose_by_trial(trainer, {"a": start, "b": p1}, x, y)
    assert scores["b"] == trainer.accuracy(x, y)                       # the last prompt set was "b"
    assert name == max(scores, key=scores.get)


def test_similarity_picks_the_more_similar_source():
    """Constructed case: source A's change from the shared init is the target's plus 10 % noise, scaled by 3;
    source B's is orthogonal to the target's. Cosines match the NumPy formula and A is chosen."""
    rng = np.random.default_rng(0)
    init = rng.normal(size=(4, 16))
    t = rng.normal(size=(4, 16))
    a = 3 * (t + 0.1 * rng.normal(size=(4, 16)))
    b_mean = rng.normal(size=16)
    t_mean = t.mean(0)
    b_mean -= (b_mean @ t_mean) / (t_mean @ t_mean) * t_mean            # orthogonal to the target's embedding
    b = np.tile(b_mean, (4, 1))
    emb_t = task_embedding(init + t, init)
    assert np.allclose(emb_t, t.mean(0))
    sources = {"B": task_embedding(init + b, init), "A": task_embedding(init + a, init)}
    name, sims = choose_by_similarity(emb_t, sources)
    ea = a.mean(0)
    assert name == "A"
    assert sims["A"] == pytest.approx(ea @ t_mean / np.linalg.norm(ea) / np.linalg.norm(t_mean), abs=1e-12)
    assert abs(sims["B"]) < 1e-12


def test_shape_mismatches_raise(tiny):
    peft, labels, _, _ = tiny
    clf = PromptClassifier(peft, labels)
    with pytest.raises(ValueError, match=r"`prompt` must have shape \(4, 64\), got \(8, 64\)"):
        clf.set_prompt(np.zeros((8, 64)))
    with pytest.raises(ValueError, match="`labels` must have shape"):
        PromptClassifier(peft, labels[:, :10])
    with pytest.raises(ValueError, match="`prompt` and `init` must both have shape"):
        task_embedding(np.zeros((4, 64)), np.zeros((8, 64)))
    with pytest.raises(ValueError, match="source 'x' has shape"):
        cosine_similarities(np.ones(64), {"x": np.ones(32)})
    with pytest.raises(ValueError, match="`embedding_table` must have shape"):
        initial_prompt("vocab", (4, 64), 0, np.zeros((10, 32)))
    with pytest.raises(ValueError, match="`kind`"):
        initial_prompt("zeros", (4, 64), 0)


def test_initial_prompts():
    """Vocabulary init copies table rows at the seeded token ids; random init has std 0.02 (4,096 draws, 5 %)."""
    table = np.arange(40.0).reshape(10, 4)
    ids = np.random.default_rng(5).integers(0, 10, 3)
    assert np.array_equal(initial_prompt("vocab", (3, 4), 5, table), table[ids])
    assert initial_prompt("random", (64, 64), 1).std() == pytest.approx(0.02, rel=0.05)


def test_task_relation_labels():
    """A source covering the target's classes on the same corpus is a near-duplicate; the other relations."""
    assert task_relation("bbc_topics5", "bbc_business_tech") == "near-duplicate"
    assert task_relation("rt_sentiment", "rt_short") == "near-duplicate"
    assert task_relation("bbc_business_tech", "bbc_topics5") == "sub-task"
    assert task_relation("bbc_politics_business", "bbc_business_tech") == "overlapping classes"
    assert task_relation("bbc_sport_entertainment", "bbc_business_tech") == "same corpus, other classes"
    assert task_relation("rt_sentiment", "bbc_business_tech") == "different corpus"


@pytest.fixture(scope="module")
def study_tasks(tmp_path_factory):
    """The default study's five tasks on random-bert, BBC pool 400/60 and Rotten Tomatoes 80/30 (cached block
    inputs in a temporary cache folder)."""
    from deft6g.finetune import load_study_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEFT6G_CACHE", str(tmp_path_factory.mktemp("cache")))
        model, tok = load_study_model("random-bert")
        peft = prompt_model(model, 5, 2)
        names = ["bbc_topics5", "bbc_business_tech", "bbc_sport_entertainment", "bbc_politics_business",
                 "rt_sentiment"]
        return tok, task_arrays(peft, tok, "random-bert", names, 5, max_length=16,
                                pool_sizes={"bbc_news": (400, 60), "rotten_tomatoes": (80, 30)})


def test_device_split_keeps_target_texts_out_of_every_neighbour(study_tasks):
    """Per seed, two target devices (BBC 5-way, business vs tech) of 40 texts each: by SHA-256 of the texts and
    of their 16-token model inputs, no text a target device holds (training or validation) is in any task's
    neighbour set, across all five tasks of the two corpora; the two devices hold different texts; no test text
    is any party's; the validation split is 25 % of each class (`validation_split`, rounded); a neighbour keeps
    every pool text whose model input no device holds (sizes add up); the same seed gives the same split,
    another seed another."""
    tok, data = study_tasks
    texts = {name: load_dataset(d.task.dataset).x for name, d in data.items()}
    inputs = {}                  # (task, dataset row) -> SHA-256 of the dataset's name and the text's 16 tokens
    for name, d in data.items():
        ids = np.concatenate([d.train_ids, d.test_ids])
        tokens = tokenize(tok, [texts[name][i] for i in ids], 16, cache=False)["input_ids"]
        inputs.update({(name, i): sha(d.task.dataset + bytes(r).hex()) for i, r in zip(ids, tokens)})

    def hashes(name, ids, model_input=False):
        return {inputs[name, i] if model_input else sha(texts[name][i]) for i in ids}

    tests = set().union(*(hashes(n, d.test_ids) for n, d in data.items()))
    test_inputs = set().union(*(hashes(n, d.test_ids, True) for n, d in data.items()))
    targets = ["bbc_topics5", "bbc_business_tech"]
    for seed in (0, 1):
        devices, neighbours = device_split(data, targets, 40, 0.25, seed)
        held = {}
        for t, (own, val) in devices.items():
            assert len(own) + len(val) == 40 and not set(own) & set(val)
            y = data[t].y_train
            counts = np.bincount(y[np.concatenate([own, val])], minlength=len(data[t].labels))
            expected = [min(c - 1, max(1, int(round(0.25 * c)))) if c > 1 else 0 for c in counts]
            assert list(np.bincount(y[val], minlength=len(counts))) == expected
            held[t] = hashes(t, data[t].train_ids[np.concatenate([own, val])])
            assert len(held[t]) == 40
        assert not held["bbc_topics5"] & held["bbc_business_tech"]
        device_texts = set().union(*held.values())
        device_inputs = set().union(*(hashes(t, data[t].train_ids[np.concatenate(devices[t])], True) for t in targets))
        for name, rows in neighbours.items():
            mine = hashes(name, data[name].train_ids[rows])
            assert not mine & device_texts, name
            assert not hashes(name, data[name].train_ids[rows], True) & (device_inputs | test_inputs), name
            assert not mine & tests, name
            pool = data[name].train_ids
            kept = [i for i in pool if not hashes(name, [i], True) <= device_inputs]
            assert sorted(data[name].train_ids[rows]) == sorted(kept), name
        assert not device_texts & tests and not device_inputs & test_inputs
    again = device_split(data, targets, 40, 0.25, 0)
    other = device_split(data, targets, 40, 0.25, 1)
    first = device_split(data, targets, 40, 0.25, 0)
    assert all(np.array_equal(a, b) for t in targets for a, b in zip(first[0][t], again[0][t]))
    assert not np.array_equal(first[0]["bbc_topics5"][0], other[0]["bbc_topics5"][0])


def test_device_split_holds_repeated_articles_together(study_tasks):
    """Texts with the same model input (BBC News repeats some articles) share a group, and a group a device holds
    is never in a neighbour set. Constructed case: the 5-way task's rows paired into groups of two, so every
    text the device draws has a twin that must stay out of the neighbour's set."""
    data = dict(study_tasks[1])
    d = data["bbc_topics5"]
    groups = d.train_groups.copy()
    groups[1::2] = groups[0::2][:len(groups[1::2])]                          # pair the rows up: 2 per group
    data["bbc_topics5"] = dataclasses.replace(d, train_groups=groups)
    devices, neighbours = device_split(data, ["bbc_topics5"], 40, 0.25, 0)
    own = np.concatenate(devices["bbc_topics5"])
    assert not set(groups[own]) & set(groups[neighbours["bbc_topics5"]])
    assert len(neighbours["bbc_topics5"]) < len(groups) - len(own)           # the twins left too


def test_device_split_and_trainer_reject_bad_sizes(study_tasks, tiny):
    study_tasks = study_tasks[1]
    with pytest.raises(ValueError, match="`examples` = 5000 exceeds"):
        device_split(study_tasks, ["bbc_topics5"], 5000, 0.25, 0)
    with pytest.raises(ValueError, match="`examples` must be an integer >= 2"):
        device_split(study_tasks, ["bbc_topics5"], 1, 0.25, 0)
    with pytest.raises(ValueError, match=r"`targets` \['rt_short'\]"):
        device_split(study_tasks, ["rt_short"], 10, 0.25, 0)
    with pytest.raises(ValueError, match="`fraction`"):
        device_split(study_tasks, ["bbc_topics5"], 10, 1.5, 0)
    peft, labels, x, y = tiny
    trainer = PromptTrainer(PromptClassifier(peft, labels), learning_rate=0.05)
    with pytest.raises(ValueError, match="`batch_size` = 64 exceeds the 48 training examples"):
        trainer.run(initial_prompt("random", (4, 64), 0), x, y, steps=1, batch_size=64, seed=0)
