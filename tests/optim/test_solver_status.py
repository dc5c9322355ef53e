"""Tests of the shared helpers of `deft6g.optim.solver_status`: `installed` and `compiled_per_shape`."""

import pytest

import deft6g.optim as optim
from deft6g.optim.solver_status import KEPT_SHAPES


def test_installed_keeps_order_and_drops_missing():
    """The installed solvers come back in the order asked, the missing ones dropped (CLARABEL and SCS ship with
    CVXPY)."""
    assert optim.installed(("SCS", "NOT_A_SOLVER", "CLARABEL")) == ["SCS", "CLARABEL"]
    assert optim.installed(("CLARABEL", "SCS")) == ["CLARABEL", "SCS"]


def test_installed_names_the_solvers_when_none_is():
    with pytest.raises(ValueError, match=r"none of the solvers \('NOPE', 'NADA'\) is installed"):
        optim.installed(("NOPE", "NADA"))


def test_compiled_per_shape_keeps_the_most_recent_shapes():
    """Same arguments, same instance; a shape built more than KEPT_SHAPES shapes ago is built again."""
    class Built:
        made = 0

        def __init__(self, n):
            Built.made += 1
            self.n = n

        @optim.compiled_per_shape
        def compiled(cls, n):
            return cls(n)

    first = Built.compiled(1)
    assert Built.compiled(1) is first and Built.made == 1
    for n in range(2, KEPT_SHAPES + 2):
        Built.compiled(n)
    assert Built.compiled(1) is not first and Built.made == KEPT_SHAPES + 2
