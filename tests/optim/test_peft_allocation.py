"""PEFT size allocation MILP against brute force; budgets; infeasibility."""

import itertools
import re

import numpy as np
import pytest

from deft6g.finetune import LoraConfig, allocation_table
from deft6g.optim import PeftAllocator

CHOICES = [0, 2, 8]


def brute_force(imp, table, bits, mem, flops):
    best = None
    for pick in itertools.product(range(len(CHOICES)), repeat=len(imp)):
        params = sum(table["params"][i, c] for i, c in enumerate(pick))
        tuned = [i for i, c in enumerate(pick) if c]
        reach = np.zeros(len(imp))
        if tuned:
            reach[min(tuned):] = 1
        m = table["fixed_memory"] + 16 * params + table["act_memory"] @ reach
        f = table["fixed_flops"] + table["backward_flops"] @ reach
        if 32 * params <= bits and m <= mem and f <= flops:
            u = sum(imp[i] * np.log2(1 + CHOICES[c]) for i, c in enumerate(pick))
            best = u if best is None else max(best, u)
    return best


def test_matches_brute_force_and_respects_budgets():
    table = allocation_table("all-MiniLM-L6-v2", LoraConfig(), CHOICES, tokens=64, batch_size=16, num_labels=2)
    imp = np.array([0.2, 0.1, 0.5, 0.3, 1.0, 0.8])
    alloc = PeftAllocator(imp, CHOICES, **table)
    full = alloc.solve()
    assert full.sizes == [8] * 6
    for frac_bits, frac_mem, frac_flops in [(0.3, 1, 1), (1, 0.5, 1), (1, 1, 0.6), (0.5, 0.7, 0.8)]:
        bits = frac_bits * full.bits
        mem = table["fixed_memory"] + frac_mem * (full.memory - table["fixed_memory"])
        flops = table["fixed_flops"] + frac_flops * (full.flops - table["fixed_flops"])
        got = alloc.solve(bits, mem, flops)
        assert got.bits <= bits and got.memory <= mem and got.flops <= flops
        assert got.objective == pytest.approx(brute_force(imp, table, bits, mem, flops), abs=1e-6)


def test_infeasible_budget_names_the_minimum():
    table = allocation_table("bert-base", LoraConfig(), CHOICES)
    alloc = PeftAllocator(np.ones(12), CHOICES, **table)
    with pytest.raises(ValueError, match="memory_budget.*smallest feasible value is " + re.escape(f"{table['fixed_memory']:.4g}")):
        alloc.solve(memory_budget=0.5 * table["fixed_memory"])
    with pytest.raises(ValueError, match="importance"):
        PeftAllocator(-np.ones(12), CHOICES, **table)
    with pytest.raises(ValueError, match="params"):
        PeftAllocator(np.ones(11), CHOICES, **table)
