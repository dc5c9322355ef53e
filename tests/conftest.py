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


TINY_STUDY = """
schemes = ["centralised", "ideal", "aircomp", "digital"]
seeds = [0]
[model]
name = "random-bert"
[data]
train_examples = 64
test_examples = 32
[federated]
devices = 2
rounds = 2
local_steps = 1
[channel]
snr_db = [0.0, 20.0]
num_rx_ant = [2]
[digital]
snr_db = [0.0, 20.0]
"""


@pytest.fixture
def tiny_study(tmp_path):
    """A 6-point `deft6g study` configuration file (random-bert, 64/32 texts, K = 2, 2 rounds, one seed:
    centralised, ideal, AirComp and digital at 0 and 20 dB with N = 2), for the study's and the parallel tests."""
    path = tmp_path / "tiny_study.toml"
    path.write_text(TINY_STUDY)
    return path
