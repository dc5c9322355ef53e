"""`deft6g.experiment.tune`: the choice is the argmax of the mean validation score (checked by brute force),
never depends on test labels, breaks ties by grid order, resumes an interrupted grid without re-running
finished candidates, and records every candidate and the choice."""

import json

import numpy as np
import pytest

from deft6g.experiment import candidates, tune, tuning_store

QUIET = lambda *_: None                                                     # noqa: E731


def ridge_problem(seed=0):
    """A linear model y = x w + noise (12 features, small weights, noise sd 2) split into train (30 rows: few,
    so the penalty matters), validation (40) and test (40)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(110, 12))
    y = x @ (0.3 * rng.normal(size=12)) + rng.normal(scale=2.0, size=110)
    return (x[:30], y[:30]), (x[30:70], y[30:70]), (x[70:], y[70:])


class RidgeRun:
    """run(setting, seed): ridge regression with penalty `lam` on a bootstrap of the training rows drawn with
    `seed`; score: minus the validation MSE; the row keeps the test MSE (which the tuner must ignore)."""

    def __init__(self, train, val, test):
        self.train, self.val, self.test, self.calls = train, val, test, []

    def fit(self, lam, seed):
        x, y = self.train
        rows = np.random.default_rng(seed).integers(0, len(y), len(y))
        x, y = x[rows], y[rows]
        return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)

    def __call__(self, setting, seed):
        self.calls.append((setting["lam"], seed))
        w = self.fit(setting["lam"], seed)
        mse = lambda part: float(np.mean((part[0] @ w - part[1]) ** 2))          # noqa: E731
        return -mse(self.val), {"test_mse": mse(self.test)}


GRID = {"lam": [0.01, 1.0, 10.0, 30.0, 100.0, 300.0]}
SEEDS = [0, 1, 2]


def brute_force(run):
    """The candidate with the highest mean validation score over SEEDS, computed without the tuner: an
    augmented least-squares solve (not the normal equations) per candidate, np.argmax (first maximum)."""
    means = []
    for lam in GRID["lam"]:
        scores = []
        for seed in SEEDS:
            x, y = run.train
            rows = np.random.default_rng(seed).integers(0, len(y), len(y))
            a = np.vstack([x[rows], np.sqrt(lam) * np.eye(x.shape[1])])
            w = np.linalg.lstsq(a, np.concatenate([y[rows], np.zeros(x.shape[1])]), rcond=None)[0]
            scores.append(-np.mean((run.val[0] @ w - run.val[1]) ** 2))
        means.append(np.mean(scores))
    return GRID["lam"][int(np.argmax(means))], means


def test_choice_is_the_argmax_of_mean_validation_scores_and_ignores_test_labels(tmp_path):
    """Brute force picks the same lambda and the same mean scores (to 1e-9); with the test labels permuted the
    test column changes but the scores, the choice and chosen.json do not. Every candidate and seed is a row."""
    train, val, test = ridge_problem()
    run = RidgeRun(train, val, test)
    choice = tune("ridge", GRID, run, tuning_store(tmp_path / "a" / "tuning.csv", ["test_mse"]), SEEDS, log=QUIET)
    best, means = brute_force(run)
    assert choice.setting == {"lam": best} and choice.tuned == ["lam"]
    assert [s["lam"] for s, _ in choice.scores] == GRID["lam"]
    np.testing.assert_allclose([v for _, v in choice.scores], means, rtol=1e-9)
    assert best not in (GRID["lam"][0], GRID["lam"][-1])                     # the grid brackets the optimum
    rows = tuning_store(tmp_path / "a" / "tuning.csv", {"test_mse": float}).rows()
    assert len(rows) == len(GRID["lam"]) * len(SEEDS)
    assert {(type(r["seed"]), type(r["score"]), type(r["test_mse"])) for r in rows} == {(int, float, float)}
    untyped = tuning_store(tmp_path / "a" / "tuning.csv", ["test_mse"]).rows()     # own columns as CSV text
    assert [float(r["test_mse"]) for r in untyped] == [r["test_mse"] for r in rows]
    np.testing.assert_allclose(sorted(v for _, v in choice.scores),                # score: the mean of its rows
                               sorted(np.mean([r["score"] for r in rows if json.loads(r["setting"]) == s])
                                      for s, _ in choice.scores), rtol=1e-12)

    scrambled = (test[0], np.random.default_rng(7).permutation(test[1]))
    again = tune("ridge", GRID, RidgeRun(train, val, scrambled),
                 tuning_store(tmp_path / "b" / "tuning.csv", ["test_mse"]), SEEDS, log=QUIET)
    other = tuning_store(tmp_path / "b" / "tuning.csv", ["test_mse"]).rows()
    assert again == choice
    assert [r["score"] for r in other] == [r["score"] for r in rows]
    assert [r["test_mse"] for r in other] != [r["test_mse"] for r in rows]     # the scrambling bites
    assert (tmp_path / "a" / "chosen.json").read_text() == (tmp_path / "b" / "chosen.json").read_text()
    record = json.loads((tmp_path / "a" / "chosen.json").read_text())["ridge"]
    assert record["setting"] == {"lam": best} and record["seeds"] == SEEDS and len(record["candidates"]) == 6


def _strict_json(text):
    """json.loads refusing NaN and Infinity (not standard JSON)."""
    def refuse(constant):
        raise ValueError(f"not standard JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_ties_go_to_the_first_candidate_and_nan_is_lowest(tmp_path):
    """Equal mean scores: the first in grid order wins (product order, last parameter fastest); a NaN score
    never wins over a number."""
    store = tuning_store(tmp_path / "tuning.csv")
    score = {(1, "x"): 0.5, (1, "y"): 0.7, (2, "x"): 0.7, (2, "y"): float("nan")}
    choice = tune("tie", {"a": [1, 2], "b": ["x", "y"]}, lambda s, seed: (score[(s["a"], s["b"])], {}), store,
                  log=QUIET)
    assert choice.setting == {"a": 1, "b": "y"} and choice.score == 0.7
    nan_first = tune("nan", {"a": [2, 1]}, lambda s, seed: (float("nan") if s["a"] == 2 else -5.0, {}), store,
                     log=QUIET)
    assert nan_first.setting == {"a": 1}
    record = _strict_json((tmp_path / "chosen.json").read_text())
    assert [c["score"] for c in record["nan"]["candidates"]] == [None, -5.0] and record["nan"]["score"] == -5.0
    assert [c["score"] for c in record["tie"]["candidates"]] == [0.5, 0.7, 0.7, None]


def test_interrupted_tuning_resumes_without_rerunning_finished_candidates(tmp_path):
    """A run interrupted at its 5th (candidate, seed) keeps the 4 finished rows; the resumed run calls only
    the other 14 and ends with the rows and the choice of an uninterrupted run."""
    problem = ridge_problem()

    class Interrupting(RidgeRun):
        def __call__(self, setting, seed):
            if len(self.calls) == 4:
                raise KeyboardInterrupt
            return super().__call__(setting, seed)

    path = tmp_path / "cut" / "tuning.csv"
    with pytest.raises(KeyboardInterrupt):
        tune("ridge", GRID, Interrupting(*problem), tuning_store(path, ["test_mse"]), SEEDS, log=QUIET)
    assert len(tuning_store(path, ["test_mse"]).rows()) == 4
    resumed_run = RidgeRun(*problem)
    resumed = tune("ridge", GRID, resumed_run, tuning_store(path, ["test_mse"]), SEEDS, log=QUIET)
    everything = [(lam, seed) for lam in GRID["lam"] for seed in SEEDS]
    assert resumed_run.calls == everything[4:]
    fresh = tune("ridge", GRID, RidgeRun(*problem), tuning_store(tmp_path / "fresh" / "tuning.csv", ["test_mse"]),
                 SEEDS, log=QUIET)
    assert resumed == fresh
    assert tuning_store(path, ["test_mse"]).rows() == tuning_store(tmp_path / "fresh" / "tuning.csv",
                                                                   ["test_mse"]).rows()
    again = RidgeRun(*problem)
    tune("ridge", GRID, again, tuning_store(path, ["test_mse"]), SEEDS, log=QUIET)
    assert again.calls == []                                                 # finished: nothing runs


def test_empty_grid_keeps_the_fixed_value_and_records_it(tmp_path):
    """A parameter with an empty list is not tuned: it takes `fixed`, nothing runs when no parameter is tuned,
    and chosen.json says which were not tuned."""
    assert candidates({"a": [1, 2], "b": [], "c": ["x", "y"]}, {"b": 5}) == [
        {"a": 1, "b": 5, "c": "x"}, {"a": 1, "b": 5, "c": "y"}, {"a": 2, "b": 5, "c": "x"}, {"a": 2, "b": 5, "c": "y"}]
    store = tuning_store(tmp_path / "tuning.csv")
    calls = []
    choice = tune("fixed", {"lr": []}, lambda s, seed: calls.append(s) or (0.0, {}), store, fixed={"lr": 0.01},
                  log=QUIET)
    assert choice.setting == {"lr": 0.01} and choice.tuned == [] and calls == [] and store.rows() == []
    record = _strict_json((tmp_path / "chosen.json").read_text())["fixed"]
    assert record["not_tuned"] == ["lr"] and record["candidates"] == [] and record["score"] is None


@pytest.mark.parametrize("grid, fixed, match", [
    ({"lr": 0.01}, None, "'lr' must be a list"),
    ({"lr": [0.01, 0.01]}, None, "'lr' repeats a value"),
    ({"lr": []}, None, "'lr' is empty"),
    ({}, None, "`grid` must be a non-empty dict"),
])
def test_bad_grids_name_the_parameter(grid, fixed, match):
    with pytest.raises(ValueError, match=match):
        candidates(grid, fixed)
