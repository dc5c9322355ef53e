"""Offline datasets, seeded splits, cached tokenisation and device partitions."""

import numpy as np
import pytest

from deft6g.finetune import (data_split, load_dataset, partition, to_tf_dataset, tokenize, train_test_split,
                             validation_split)
from transformers import AutoTokenizer

from deft6g.finetune.peft.fomo import pretrained_folder


def test_datasets_load_deduplicated():
    rt = load_dataset("rotten_tomatoes")
    assert len(rt) == 12_752 and len(set(rt.x)) == len(rt) and set(rt.y) == {0, 1}
    assert 0.55 < max(rt.y.mean(), 1 - rt.y.mean()) < 0.6     # majority class about 0.57
    bbc = load_dataset("bbc_news")
    assert len(bbc.class_names) == 5 and len(set(bbc.x)) == len(bbc) and 2_000 < len(bbc) < 2_225
    mnist = load_dataset("mnist_5k")
    assert mnist.x.shape == (5000, 28, 28) and np.bincount(mnist.y).tolist() == [500] * 10
    assert 0.0 <= mnist.x.min() and mnist.x.max() <= 1.0
    assert load_dataset("digits").x.shape == (1797, 8, 8)
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("imagenet")


def test_split_is_seeded_and_disjoint():
    a, b = train_test_split(100, 0.2, seed=3)
    a2, b2 = train_test_split(100, 0.2, seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert len(b) == 20 and not set(a) & set(b) and len(a) + len(b) == 100
    assert not np.array_equal(b, train_test_split(100, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(10, 1.5)


def test_validation_split_is_stratified_disjoint_from_test_and_seeded():
    """Rotten Tomatoes: validation (10% of train) and train stay disjoint from test and from each other, their
    union is the training split, each class's share of validation is within one text of 10% of its training
    count, the same seed repeats the split and another seed changes it."""
    data = load_dataset("rotten_tomatoes")
    train, test = train_test_split(len(data), 0.2, seed=0)
    tr, val = validation_split(train, data.y, 0.1, seed=0)
    assert not set(val) & set(test) and not set(tr) & set(test) and not set(tr) & set(val)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, val])), train)
    for c in np.unique(data.y):
        assert abs((data.y[val] == c).sum() - 0.1 * (data.y[train] == c).sum()) <= 1
    np.testing.assert_array_equal(validation_split(train, data.y, 0.1, seed=0)[1], val)
    assert not np.array_equal(validation_split(train, data.y, 0.1, seed=1)[1], val)
    with pytest.raises(ValueError, match="`fraction`"):
        validation_split(train, data.y, 1.0)


def test_the_data_recipe_subsamples_each_side_then_carves_validation_from_train():
    """data_split on Rotten Tomatoes with 3,000 / 500 texts: train, validation and test pairwise disjoint, fit and
    validation partition the 3,000 training texts (in train's order), the subsets are the first texts of a seeded
    permutation of each side of the 80/20 split (built here step by step), the validation share is stratified,
    the same seed repeats it, and a negative size names its argument."""
    y = load_dataset("rotten_tomatoes").y
    s = data_split(y, 3000, 500, 0.1)
    assert len(s.train) == 3000 and len(s.test) == 500
    assert not set(s.train) & set(s.test)
    np.testing.assert_array_equal(np.sort(np.concatenate([s.fit_rows, s.val_rows])), np.arange(3000))
    np.testing.assert_array_equal(s.fit, s.train[s.fit_rows])
    assert np.all(np.diff(s.fit_rows) > 0) and np.all(np.diff(s.val_rows) > 0)          # train's order kept
    train, test = train_test_split(len(y), 0.2, seed=0)
    pick = np.random.default_rng(0)
    np.testing.assert_array_equal(s.train, pick.permutation(train)[:3000])
    np.testing.assert_array_equal(s.test, pick.permutation(test)[:500])
    np.testing.assert_array_equal(np.sort(s.validation), validation_split(s.train, y, 0.1, seed=0)[1])
    for c in (0, 1):
        assert abs((y[s.validation] == c).sum() - 0.1 * (y[s.train] == c).sum()) <= 1
    again = data_split(y, 3000, 500, 0.1)
    assert all(np.array_equal(getattr(s, f), getattr(again, f)) for f in ("train", "test", "fit_rows", "val_rows"))
    whole = data_split(y)
    assert len(whole.train) + len(whole.test) == len(y)
    with pytest.raises(ValueError, match="`test_examples`"):
        data_split(y, 10, -1)


def test_load_study_data_is_the_recipe_step_by_step():
    """load_study_data = load_dataset, data_split (seed 0, a validation share of 0.1 by default), load_study_model,
    tokenize (built here step by step): the same split, the same token arrays, inputs(rows) their rows, the
    tokenizer's vocabulary, and the model's labels."""
    from deft6g.finetune import load_study_data, load_study_model
    got = load_study_data("rotten_tomatoes", "random-bert", 16, 200, 50)
    data = load_dataset("rotten_tomatoes")
    split = data_split(data.y, 200, 50, 0.1, seed=0)
    assert all(np.array_equal(getattr(got.split, f), getattr(split, f)) for f in ("train", "test", "fit_rows",
                                                                                      "val_rows"))
    tok = load_study_model("random-bert")[1]
    assert got.tokenizer.get_vocab() == tok.get_vocab()
    tokens = tokenize(tok, data.x, 16)
    assert set(got.tokens) == set(tokens) and all(np.array_equal(got.tokens[k], tokens[k]) for k in tokens)
    rows = split.fit[:7]
    assert all(np.array_equal(got.inputs(rows)[k], tokens[k][rows]) for k in tokens)
    assert got.inputs(rows)["input_ids"].shape == (7, 16) and got.num_labels == len(data.class_names) == 2
    assert got.model.config.num_hidden_layers == 6 and got.data.name == "rotten_tomatoes"


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_cover_every_example_once(scheme):
    y = np.repeat(np.arange(5), 200)
    parts = partition(y, 8, scheme, alpha=0.1, seed=0)
    assert len(parts) == 8
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(1000))
    classes = [len(np.unique(y[p])) for p in parts if len(p)]
    if scheme == "iid":
        assert min(classes) == 5
    else:                                     # non-IID: devices see few classes
        assert np.mean(classes) <= 3
    assert all(np.array_equal(p, q) for p, q in zip(parts, partition(y, 8, scheme, alpha=0.1, seed=0)))


def test_partition_errors():
    with pytest.raises(ValueError, match="num_devices"):
        partition(np.zeros(5), 0)
    with pytest.raises(ValueError, match="scheme"):
        partition(np.zeros(5), 2, "random")
    with pytest.raises(ValueError, match="alpha"):
        partition(np.zeros(5), 2, "dirichlet", alpha=0)


def test_tokenize_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFT6G_CACHE", str(tmp_path))
    tok = AutoTokenizer.from_pretrained(pretrained_folder("all-MiniLM-L6-v2"))
    texts = ["one film", "another, longer film review"]
    first = tokenize(tok, texts, max_length=8)
    assert first["input_ids"].shape == (2, 8) and first["attention_mask"][0].sum() == 4
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 1
    again = tokenize(tok, texts, max_length=8)
    assert np.array_equal(first["input_ids"], again["input_ids"])
    ds = to_tf_dataset(first, np.array([0, 1]), batch_size=1)
    assert len(list(ds)) == 2
