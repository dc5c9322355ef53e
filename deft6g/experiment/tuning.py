"""Choose a setting on validation from a recorded grid (the validation protocol of docs/design.md §8).

A tuning is a name, a grid {parameter: [values]} and a function run(setting, seed) -> (score, row) that trains
one candidate with one seed and returns its validation score (higher is better) and whatever columns it wants
to keep. The candidates are the Cartesian product of the grid's non-empty lists, in the grid's order (the last
parameter varies fastest); a parameter whose list is empty is not tuned and keeps its `fixed` value. Every
(candidate, seed) is a row of a resumable ResultStore (tuning.csv: tuning, setting as JSON, seed, score, the
run's columns), so an interrupted tuning re-runs only the candidates it has no row for.

Rule: the candidate with the highest mean score over the seeds (an exact sum, math.fsum, so equal scores tie
exactly) wins; a NaN score counts as the lowest; ties go to the first candidate in grid order (so a grid lists
its preferred values first, e.g. the configured default). The choice, every candidate's mean score and the
rule go to chosen.json beside the store (one entry per tuning name, written atomically, standard JSON: a score
that is not a finite number, e.g. NaN when nothing was tuned, is written as null).
"""

import itertools
import json
import math
from dataclasses import dataclass

from .runner import run_points
from .store import ResultStore, load_json, write_json_atomic

TUNING_KEY = ["tuning", "setting", "seed"]
TUNING_TYPES = {"tuning": str, "setting": str, "seed": int, "score": float}
RULE = ("highest mean validation score over the seeds (NaN lowest); ties: the first candidate in grid order "
        "(Cartesian product, last parameter fastest)")


def tuning_store(path, fields=()):
    """The resumable, typed tuning.csv at `path`: TUNING_KEY, score (TUNING_TYPES) and the run's own columns
    `fields`, a dict {column: type} (a list of names: columns read back as their CSV text)."""
    own = fields if isinstance(fields, dict) else dict.fromkeys(fields, str)
    types = {**TUNING_TYPES, **own}
    return ResultStore(path, list(types), TUNING_KEY, types=types)


def candidates(grid, fixed=None):
    """The settings of `grid` {name: [values]} as dicts, in grid order (Cartesian product of the non-empty
    lists, last name fastest); names with an empty list take their value from `fixed` (required then).
    Raises ValueError naming the parameter for a non-list, a repeated value or a missing fixed value."""
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"`grid` must be a non-empty dict of parameter -> list of values, got {grid!r}")
    fixed = fixed or {}
    for name, values in grid.items():
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"grid parameter {name!r} must be a list of values, got {values!r}")
        if any(v in values[:i] for i, v in enumerate(values)):
            raise ValueError(f"grid parameter {name!r} repeats a value: {list(values)!r}")
        if not values and name not in fixed:
            raise ValueError(f"grid parameter {name!r} is empty (not tuned) but has no value in `fixed`")
    tuned = [n for n, v in grid.items() if v]
    return [{**{n: fixed[n] for n in grid if not grid[n]}, **dict(zip(tuned, combo))}
            for combo in itertools.product(*(grid[n] for n in tuned))]


def _json_score(score):
    """`score` for standard JSON: None (null) when it is not a finite number (NaN, inf)."""
    return score if math.isfinite(score) else None


def _setting_text(setting):
    return json.dumps(setting, sort_keys=True)


class _Candidate:
    """run_points' point function: point {tuning, setting (JSON), seed} -> its tuning.csv row (picklable
    when `run` is)."""

    def __init__(self, run):
        self.run = run

    def __call__(self, point):
        score, row = self.run(json.loads(point["setting"]), int(point["seed"]))
        return {**row, **point, "score": float(score)}


@dataclass
class Choice:
    """setting: the chosen value of every grid parameter (tuned or fixed); score: its mean validation score
    (NaN when nothing was tuned); scores: [(setting, mean score)] of every candidate in grid order; tuned:
    the parameters that were tuned."""
    setting: dict
    score: float
    scores: list
    tuned: list


def tune(name, grid, run, store, seeds=(0,), fixed=None, log=print, rule=RULE, **parallel):
    """Run (or resume) the tuning `name` and return its Choice (module docstring: the grid and the rule).

    Parameters
    ----------
    name : str
        The tuning's name in tuning.csv and chosen.json (e.g. "federated.lr [factors]")
    grid : dict
        {parameter: list of values}; an empty list keeps `fixed[parameter]` (not tuned, recorded as such)
    run : callable
        run(setting dict, seed int) -> (validation score float, row dict of the store's own columns); picklable
        for parallel runs
    store : ResultStore
        From `tuning_store`; its finished (tuning, setting, seed) rows are not run again
    seeds : sequence of int
        One run per candidate and seed; the score is the mean over them
    fixed : dict or None
        Values of the parameters that are not tuned
    rule : str
        How the scores rank, recorded in chosen.json: the default RULE, or the meaning of a score that `run`
        builds otherwise (e.g. minus the channel uses of a candidate that reaches a target)
    parallel : workers, ray_address, worker_gpus, ray_timeout of `run_points`
    """
    settings = candidates(grid, fixed)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("`seeds` must name at least one seed")
    tuned = [n for n, v in grid.items() if v]
    if tuned:
        points = [{"tuning": name, "setting": _setting_text(s), "seed": seed} for s in settings for seed in seeds]
        run_points(points, _Candidate(run), store, desc=f"tuning {name}", log=log, **parallel,
                   describe=lambda p, r: f"{p['setting']} seed {p['seed']}: score {r['score']:.4f}")
    done = {}
    for r in store.rows():
        if r["tuning"] == name:
            done[(_setting_text(json.loads(r["setting"])), r["seed"])] = r["score"]
    scores = [(s, math.fsum(done[(_setting_text(s), seed)] for seed in seeds) / len(seeds))
              for s in (settings if tuned else [])]
    if scores:
        best = max(range(len(scores)), key=lambda i: (-math.inf if math.isnan(scores[i][1]) else scores[i][1], -i))
        choice = Choice(dict(scores[best][0]), scores[best][1], scores, tuned)
    else:
        choice = Choice(dict(settings[0]), math.nan, [], [])
    path = store.path.with_name("chosen.json")
    record = load_json(path, {})
    record[name] = {"setting": choice.setting, "score": _json_score(choice.score), "tuned": tuned,
                    "not_tuned": [n for n in grid if n not in tuned], "seeds": seeds, "rule": rule,
                    "candidates": [{"setting": s, "score": _json_score(v)} for s, v in scores]}
    write_json_atomic(path, record, indent=2, sort_keys=True)
    if tuned:
        grid_text = ", ".join(f"{_short(s, tuned)}: {v:.4f}" for s, v in scores)
        log(f"tuning {name}: chose {_short(choice.setting, list(grid))} on validation ({grid_text})")
    else:
        log(f"tuning {name}: not tuned (empty grid), the configured {_short(choice.setting, list(grid))}")
    return choice


def tuner(store, log=print, **parallel):
    """`tune` bound to `store`, `log` and the parallel options (workers, ray_address, worker_gpus, ray_timeout):
    tuner(name, grid, run, seeds=(0,), fixed=None, rule=RULE) -> Choice (what a study's `Tuning` gets)."""
    def bound(name, grid, run, seeds=(0,), fixed=None, rule=RULE):
        return tune(name, grid, run, store, seeds, fixed, log, rule, **parallel)
    return bound


def _short(setting, names):
    return " ".join(f"{n}={setting[n]:g}" if isinstance(setting[n], float) else f"{n}={setting[n]}" for n in names)
