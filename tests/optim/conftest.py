"""Fixtures of the optim tests."""

import importlib

import numpy as np
import pytest


@pytest.fixture
def no_barrier(monkeypatch):
    """Make the barrier method report no convergence, so that every realisation goes to CVXPY."""
    def unconverged(H, power, active):
        b, n, k = H.shape
        return np.full((b, n, n), np.nan, complex), np.full((b, k), np.nan), np.full(b, np.nan), np.zeros(b, bool)
    monkeypatch.setattr(importlib.import_module("deft6g.optim.design"), "sdr_barrier", unconverged)
