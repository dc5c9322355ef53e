"""Server optimisers: FedAvg's step and FedAdam against a hand computation of Reddi et al.'s Algorithm 2
(tests/finetune/test_federated.py checks an optimiser object driving FederatedDEFT's rounds)."""

import numpy as np
import pytest

from deft6g.finetune import SERVER_OPTIMIZERS, FedAdamServer, FedAvgServer


def test_fedavg_steps_by_the_server_learning_rate():
    x, d = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.25], np.float32)
    np.testing.assert_array_equal(FedAvgServer(2.0).step(x, d), [2.0, -1.5])


def test_fedadam_matches_two_steps_by_hand():
    """Two steps with Delta = 0.2 then -0.1 (lr 0.5, beta1 0.9, beta2 0.99, tau 1e-3): m1 = 0.02, v1 = 4e-4,
    x1 = 0.5 * 0.02 / (0.02 + 1e-3); m2 = 0.018 - 0.01 = 0.008, v2 = 3.96e-4 + 1e-4 = 4.96e-4,
    x2 = x1 + 0.5 * 0.008 / (sqrt(4.96e-4) + 1e-3); reset() forgets the moments."""
    opt = FedAdamServer(0.5)
    x1 = opt.step(np.zeros(1, np.float32), np.array([0.2], np.float32))
    np.testing.assert_allclose(x1, 0.5 * 0.02 / (0.02 + 1e-3), rtol=1e-6)
    x2 = opt.step(x1, np.array([-0.1], np.float32))
    np.testing.assert_allclose(x2, x1 + 0.5 * 0.008 / (np.sqrt(4.96e-4) + 1e-3), rtol=1e-5)
    opt.reset()
    np.testing.assert_allclose(opt.step(np.zeros(1, np.float32), np.array([0.2], np.float32)), x1, rtol=1e-7)


@pytest.mark.parametrize("kwargs, name", [({"lr": 0.0}, "lr"), ({"beta1": 1.0}, "beta1"), ({"tau": 0.0}, "tau")])
def test_bad_constants_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        FedAdamServer(**kwargs)


def test_names_map_to_the_classes():
    assert SERVER_OPTIMIZERS == {"fedavg": FedAvgServer, "fedadam": FedAdamServer}
