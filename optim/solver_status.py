"""The solver-status policy of deft6g.optim, and `solve_in_order`, the one loop that applies it to CVXPY problems.

Policy. Every design result carries `status` (one string per realisation when it is batched), which starts with

- "closed form": no solver involved (a detail may follow: "closed form (peak budget)"; truncated inversion
  says "nobody transmits" where no device passes its threshold);
- "optimal (SOLVER)": SOLVER reported `cvxpy.OPTIMAL` (SOLVER "barrier": deft6g's NumPy barrier method reached
  its duality gap, `sdr_barrier`);
- "infeasible (SOLVER)": SOLVER certified infeasibility, for the problems that may be infeasible (the DC
  selection's sub-problems); for the others an infeasible answer is a failure of that solver;
- "inaccurate (SOLVER)": no solver reached OPTIMAL, and the answer of the last one that returned
  `cvxpy.OPTIMAL_INACCURATE` is used -- accepted, reported, never called optimal;
- "failed (SOLVER: what; ...)": every solver raised `cvxpy.SolverError` or returned no solution; the values are
  NaN, or a documented fallback named after a colon ("failed (...): MRC direction used"), and `ok` is False.

Solvers are tried in the order each problem names (`ZfSdr.SOLVERS`, `SubcarrierPower.SOLVERS`, ...); a failed or
inaccurate answer moves on to the next solver. A solver failure never raises: deft6g raises `ValueError` or
`TypeError` for bad input only, before anything is solved. A refinement appends "; " and its own outcome
("; SCA converged", "; SCA max_iter", "; SCA stopped at iteration i: reason").

Each problem keeps only the solvers that are `installed` (in its order), and its class builds it through
`compiled_per_shape`, which keeps the 8 most recently built instances, one per shape (and solvers), so repeated
calls re-solve the same compiled problem.
"""

import warnings
from dataclasses import dataclass
from functools import lru_cache

import cvxpy as cp

KEPT_SHAPES = 8


def installed(solvers):
    """The solvers of `solvers` that CVXPY has installed, in their order.

    Input
    -----
    solvers : sequence of str -- solver names, in the order they should be tried

    Output
    ------
    list of str

    Raises `ValueError` naming `solvers` when none of them is installed.
    """
    have = set(cp.installed_solvers())
    kept = [s for s in solvers if s in have]
    if not kept:
        raise ValueError(f"none of the solvers {tuple(solvers)} is installed (have {sorted(have)})")
    return kept


def compiled_per_shape(build):
    """Turn `build(cls, *shape)` into a classmethod that keeps the `KEPT_SHAPES` most recently built problems.

    The arguments are the key (shape and, where a problem takes them, solvers: pass a tuple); the same arguments
    return the same instance, so its compiled (DPP) problem is re-solved rather than rebuilt.
    """
    return classmethod(lru_cache(maxsize=KEPT_SHAPES)(build))


@dataclass
class Solve:
    """What `solve_in_order` got.

    Parameters
    ----------
    outcome : str -- "optimal" | "infeasible" | "inaccurate" | "failed"
    solver : str -- the solver whose answer is used ("" when failed)
    tried : str -- what each solver before it did, e.g. "SCS: error ...; CLARABEL: optimal_inaccurate"
    value : object -- `read()` at the answer used (None when infeasible or failed)
    """
    outcome: str
    solver: str
    tried: str
    value: object

    @property
    def status(self):
        """The policy's status string: "optimal (SCS)", "inaccurate (CLARABEL)", "failed (SCS: ...; ...)"."""
        return f"failed ({self.tried})" if self.outcome == "failed" else f"{self.outcome} ({self.solver})"


def solve_in_order(problem, solvers, read, options=None, warm_start=False, infeasible_ok=False):
    """Solve `problem` under the policy: each solver in turn until one reports OPTIMAL.

    Input
    -----
    problem : cvxpy.Problem -- built once (DPP), its Parameters already set
    solvers : sequence of str -- solver names, in order
    read : callable() -> object -- reads the answer off the problem's variables (and duals); called right after
        the solve whose answer is kept, so later solvers cannot overwrite it
    options : None | dict -- solver name -> keyword arguments of `problem.solve`
    warm_start : bool -- passed to `problem.solve`
    infeasible_ok : bool -- an INFEASIBLE certificate is an answer ("infeasible") rather than a failure

    Output
    ------
    Solve
    """
    tried, kept = [], None
    for solver in solvers:
        try:
            with warnings.catch_warnings():    # CVXPY's "Solution may be inaccurate": the status below says it
                warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
                problem.solve(solver=solver, warm_start=warm_start, **(options or {}).get(solver, {}))
        except cp.SolverError as err:
            tried.append(f"{solver}: error {err}")
            continue
        if problem.status == cp.OPTIMAL:
            return Solve("optimal", solver, "; ".join(tried), read())
        if problem.status == cp.INFEASIBLE and infeasible_ok:
            return Solve("infeasible", solver, "; ".join(tried), None)
        if problem.status == cp.OPTIMAL_INACCURATE and all(v.value is not None for v in problem.variables()):
            kept = Solve("inaccurate", solver, "", read())
        tried.append(f"{solver}: {problem.status}")
    if kept is not None:
        kept.tried = "; ".join(tried)
        return kept
    return Solve("failed", "", "; ".join(tried), None)
