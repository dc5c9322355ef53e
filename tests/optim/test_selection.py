"""Device selection: the largest set meeting an MSE target, checked against brute force on small cases."""

import itertools

import numpy as np
import pytest

import deft6g.optim as optim
from tests.conftest import crandn


def test_selection_meets_target_and_is_maximal_or_near(rng):
    """Greedy-with-SDR keeps within one device of the brute-force largest feasible set (6 devices, 4 channels)."""
    for trial in range(4):
        H = crandn(rng, 3, 6)
        sel = optim.select_devices(H, 1.0, 0.1, mse_target=0.08, seed=trial)
        assert sel.met and sel.design.mse <= 0.08
        assert sorted(sel.selected + sel.dropped) == list(range(6))
        best = 0
        for r in range(6, 0, -1):
            for subset in itertools.combinations(range(6), r):
                d = optim.design_aircomp(H[:, list(subset)], 1.0, 0.1, method="sdr", seed=0, progress=False)
                if d.mse <= 0.08:
                    best = r
                    break
            if best:
                break
        assert len(sel.selected) >= best - 1


def test_all_kept_when_target_is_loose(rng):
    H = crandn(rng, 4, 3)
    sel = optim.select_devices(H, 1.0, 0.01, mse_target=10.0)
    assert sel.selected == [0, 1, 2] and sel.dropped == []


def test_selection_errors():
    with pytest.raises(ValueError, match="`mse_target` must be a positive"):
        optim.select_devices(np.ones((2, 2)) + 0j, 1.0, 0.1, mse_target=0.0)
