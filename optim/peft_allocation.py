"""Per-block PEFT size allocation (DEFT technique 1): an integer program over candidate sizes per block.

Choose one size s_i from `choices` for every transformer block i to maximise
sum_i importance_i * log2(1 + s_i) (diminishing returns in the size) subject to

    uplink:  bits_per_param * sum_i params[i, s_i]                                   <= bits_budget
    memory:  fixed_memory + bytes_per_param * sum_i params[i, s_i] + sum_i reach_i act_memory_i <= memory_budget
    compute: fixed_flops + sum_i reach_i backward_flops_i                            <= flops_budget

where reach_i = 1 when backprop must pass block i (some block <= i holds PEFT weights). The problem is a
MILP, built once with the budgets as CVXPY Parameters and solved by HiGHS; re-solving for new budgets
reuses it. Inputs are plain arrays (costs from `deft6g.finetune.peft.cost`, scores from measured gradients).
"""

from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from .solver_status import installed, solve_in_order


@dataclass
class Allocation:
    r"""The PEFT sizes chosen per block and what they cost.

    Parameters
    ----------
    sizes : [L], list of int
        Chosen size per block, one of `PeftAllocator.choices` (0: no PEFT in that block)
    params : int
        Trainable parameters of the choice
    bits : int
        Uplink bits of one upload of them [bit], `bits_per_param` x `params`
    memory : float
        Device memory of training [bytes]: fixed + trainable parameters + activations of the reached blocks
    flops : float
        Training FLOPs per example [FLOPs]: the forward pass + the backward the choice needs
    objective : float
        :math:`\sum_i \mathrm{importance}_i \log_2(1 + s_i)` of the choice
    status : str
        Per `deft6g.optim.solver_status`: "optimal (HIGHS)", "inaccurate (SOLVER)", or
        "failed (...): no PEFT used" (sizes all 0, always within the budgets); `ok` is False exactly then
    """
    sizes: list
    params: int
    bits: int
    memory: float
    flops: float
    objective: float
    status: str

    @property
    def ok(self):
        """False when no solver answered and the all-zero fallback was returned."""
        return not self.status.startswith("failed")


class PeftAllocator:
    r"""Build the allocation MILP once for a model; `solve(bits_budget, memory_budget, flops_budget)`.

    Maximises :math:`\sum_i \mathrm{importance}_i \log_2(1 + s_i)` over one size :math:`s_i` per block under the
    uplink, memory and compute budgets of the module docstring. The budgets are nonnegative CVXPY Parameters,
    so every `solve` re-uses the same problem. Solved by HiGHS, with SciPy's MILP interface as the second
    solver (`SOLVERS`), under the policy of `solver_status`.

    Parameters
    ----------
    importance : [L], float
        Per-block score >= 0 (e.g. squared gradient norm of the block's PEFT weights)
    choices : [C], int
        Candidate sizes >= 0 (rank, width, prompt length); 0 is always added
    params : [L, C], int
        Trainable parameters of block i at size `choices[c]` (0 for size 0)
    act_memory : [L], float
        Activations block i keeps for backprop when it is reached [bytes]
    backward_flops : [L], float
        Backward FLOPs through block i per example when it is reached [FLOPs]
    fixed_memory : float
        Frozen weights, head, buffers, paid whatever the choice [bytes] (default 0)
    fixed_flops : float
        The forward pass per example [FLOPs] (default 0)
    bits_per_param : float
        Uplink bits per trainable parameter [bit] (default 32)
    bytes_per_param : float
        Memory per trainable parameter: weight + gradient + optimizer states [bytes] (default 16, fp32 Adam)

    Note
    ----
    Block i is reached (pays `act_memory[i]` and `backward_flops[i]`) when some block <= i holds PEFT
    weights. `choices` and `params` are stored sorted by size, with size 0 first.

    Example
    -------
    >>> import deft6g.optim as optim
    >>> alloc = optim.PeftAllocator(importance=[1.0, 2.0], choices=[4, 8], params=[[100, 200], [100, 200]],
    ...                             act_memory=[1e3, 1e3], backward_flops=[1e6, 1e6])
    >>> res = alloc.solve(bits_budget=32 * 300)                 # 300 fp32 parameters per upload
    >>> res.sizes, res.params, res.bits, res.status
    ([4, 8], 300, 9600, 'optimal (HIGHS)')
    >>> alloc.solve(bits_budget=32 * 200).sizes                 # same MILP, new budget
    [4, 4]
    """

    SOLVERS = ("HIGHS", "SCIPY")

    def __init__(self, importance, choices, params, act_memory, backward_flops, fixed_memory=0.0,
                 fixed_flops=0.0, bits_per_param=32, bytes_per_param=16):
        imp = np.asarray(importance, float)
        if imp.ndim != 1 or imp.size < 1 or not np.all(np.isfinite(imp)) or np.any(imp < 0):
            raise ValueError("`importance` must be a 1-D array of finite scores >= 0")
        choices = [int(c) for c in choices]
        if any(c < 0 for c in choices):
            raise ValueError(f"`choices` must be sizes >= 0, got {choices}")
        params = np.asarray(params, float)
        if params.shape != (imp.size, len(choices)):
            raise ValueError(f"`params` must have shape [L, C] = {(imp.size, len(choices))}, got {params.shape}")
        if 0 not in choices:
            choices, params = [0] + choices, np.concatenate([np.zeros((imp.size, 1)), params], axis=1)
        order = np.argsort(choices)
        self.choices, self.params = [choices[i] for i in order], params[:, order]
        self.act_memory = self._vector(act_memory, imp.size, "act_memory")
        self.backward_flops = self._vector(backward_flops, imp.size, "backward_flops")
        self.fixed_memory, self.fixed_flops = float(fixed_memory), float(fixed_flops)
        self.bits_per_param, self.bytes_per_param = float(bits_per_param), float(bytes_per_param)
        num_blocks, num_choices = self.params.shape

        self.x = cp.Variable((num_blocks, num_choices), boolean=True)
        self.reach = cp.Variable(num_blocks, boolean=True)
        self.bits_budget = cp.Parameter(nonneg=True)
        self.memory_budget = cp.Parameter(nonneg=True)
        self.flops_budget = cp.Parameter(nonneg=True)
        self.utility = utility = np.outer(imp, np.log2(1.0 + np.asarray(self.choices, float)))
        n_params = cp.sum(cp.multiply(self.params, self.x))
        tuned = cp.sum(self.x[:, 1:], axis=1)                            # 1 where block i holds PEFT
        cost_memory = self.bytes_per_param * n_params + self.act_memory @ self.reach
        cost_flops = self.backward_flops @ self.reach
        cons = [cp.sum(self.x, axis=1) == 1,
                self.bits_per_param * n_params <= self.bits_budget,
                cost_memory <= self.memory_budget,
                cost_flops <= self.flops_budget]
        cons += [self.reach[i] >= tuned[j] for i in range(num_blocks) for j in range(i + 1)]
        self.problem = cp.Problem(cp.Maximize(cp.sum(cp.multiply(utility, self.x))), cons)
        self.solvers = installed(self.SOLVERS)

    @staticmethod
    def _vector(v, n, name):
        v = np.asarray(v, float)
        if v.shape != (n,) or np.any(v < 0) or not np.all(np.isfinite(v)):
            raise ValueError(f"`{name}` must be {n} finite values >= 0, got shape {v.shape}")
        return v

    def solve(self, bits_budget=np.inf, memory_budget=np.inf, flops_budget=np.inf):
        """Best sizes within the budgets; only sets the budget Parameters and re-solves the built MILP.

        Input
        -----
        bits_budget : float
            Uplink bits of one upload [bit], >= 0 (default inf: no limit)
        memory_budget : float
            Device memory [bytes], >= `fixed_memory` (default inf: no limit)
        flops_budget : float
            FLOPs per example [FLOPs], >= `fixed_flops` (default inf: no limit)

        Output
        ------
        allocation : `Allocation`
            Sizes per block, their costs and the solver status

        Note
        ----
        Raises ValueError naming the budget and its smallest feasible value when even no PEFT at all
        (size 0 everywhere) does not fit. A solver failure does not raise: the status says so and no PEFT
        (size 0 everywhere) is returned.
        """
        for name, value, least in (("memory_budget", memory_budget, self.fixed_memory),
                                   ("flops_budget", flops_budget, self.fixed_flops),
                                   ("bits_budget", bits_budget, 0.0)):
            if not value >= least:
                raise ValueError(f"`{name}` = {value:.4g} is infeasible: the smallest feasible value is {least:.4g}")
        big = 1e30   # stands in for "no limit" (a Parameter must be finite)
        self.bits_budget.value = min(bits_budget, big)
        self.memory_budget.value = min(memory_budget - self.fixed_memory, big)
        self.flops_budget.value = min(flops_budget - self.fixed_flops, big)
        got = solve_in_order(self.problem, self.solvers, read=lambda: np.round(self.x.value))
        if got.value is None:
            pick, status = np.zeros(len(self.params), int), f"{got.status}: no PEFT used"
        else:
            pick, status = np.argmax(got.value, axis=1), got.status
        sizes = [self.choices[c] for c in pick]
        n_params = float(self.params[np.arange(len(pick)), pick].sum())
        reach = np.zeros(len(sizes))
        tuned = [i for i, s in enumerate(sizes) if s]
        if tuned:
            reach[min(tuned):] = 1.0
        return Allocation(sizes=sizes, params=int(n_params), bits=int(self.bits_per_param * n_params),
                          memory=self.fixed_memory + self.bytes_per_param * n_params + float(self.act_memory @ reach),
                          flops=self.fixed_flops + float(self.backward_flops @ reach),
                          objective=float(np.sum(self.utility[np.arange(len(pick)), pick])), status=status)
