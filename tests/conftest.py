"""Shared fixtures: every test starts from the same library seed."""

import numpy as np
import pytest

from deft6g.rng import reseed


@pytest.fixture(autouse=True)
def _seed():
    reseed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def crandn(rng, *shape):
    """Unit-variance circularly-symmetric complex Gaussian array."""
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)
