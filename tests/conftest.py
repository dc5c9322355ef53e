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


@pytest.fixture(scope="session")
def crandn():
    """`crandn(rng, *shape)`: a unit-variance circularly-symmetric complex Gaussian array drawn from `rng`."""
    def draw(rng, *shape):
        return (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / np.sqrt(2)
    return draw
