"""Partial participation in federated DEFT: the sampled devices' rows, FedAvg weights over them by hand, seeded
samples with inclusion probability m / K, radio aggregators over the sampled devices' channels and pilots,
stateless and stateful clients, Dirichlet partitions without empty devices, and errors naming the argument."""

import numpy as np
import pytest

from deft6g.finetune import LoraConfig, build_fomo, get_peft_model, partition
from deft6g.finetune.federation.aggregation import AirCompAggregator, DigitalAggregator, IdealAggregator
from deft6g.finetune.federation.federated import FederatedDEFT

K = 6


@pytest.fixture(scope="module")
def peft():
    model, _ = build_fomo("bert", seed=0)
    return get_peft_model(model, LoraConfig(r=2, layers_to_transform=[2, 3]), num_labels=2)


def devices_of(peft, sizes, t=8):
    rng = np.random.default_rng(5)
    out = []
    for n in sizes:
        x = {"input_ids": rng.integers(1, 900, (max(n, 1), t)).astype(np.int32),
             "attention_mask": np.ones((max(n, 1), t), np.int32)}
        out.append((tuple(a[:n] for a in peft.activations(x, 2)), rng.integers(0, 2, n)))
    return out


class Recorder:
    """An ideal aggregator that keeps what it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, updates, r, weights, devices):
        self.calls.append((updates.copy(), weights.copy(), np.array(devices)))
        return IdealAggregator()(updates, r, weights)


def test_sampled_rows_and_fedavg_weights_by_hand(peft):
    """3 of 6 unequal devices: the aggregator gets the sampled devices' rows -- equal to those rows of a
    full-participation round from the same start and seed (stateless clients: a fresh optimiser either way) --
    weights S_k / sum of the sampled S, and their indices; the payload moves by that weighted mean; the log
    names the sampled devices, the heard ones among them and the examples stepped through."""
    sizes = [16, 8, 4, 12, 20, 24]                      # multiples of the batch size: every batch holds 4
    devices = devices_of(peft, sizes)
    full, part = Recorder(), Recorder()
    fed_full = FederatedDEFT(peft, devices, full, 2, local_steps=2, batch_size=4, lr=1e-2, seed=3)
    start = fed_full.payload_vector()
    fed_full.run_round(0)
    fed = FederatedDEFT(peft, devices, part, 2, local_steps=2, batch_size=4, lr=1e-2, seed=3, clients_per_round=3)
    fed.set_payload(start)
    log = fed.run_round(0)
    updates, weights, idx = part.calls[0]
    assert len(idx) == 3 and np.array_equal(idx, fed.sample(0)) and np.array_equal(full.calls[0][2], np.arange(K))
    np.testing.assert_allclose(weights, np.array(sizes)[idx] / np.sum(np.array(sizes)[idx]), rtol=1e-6)
    np.testing.assert_allclose(updates, full.calls[0][0][idx], atol=1e-7)
    np.testing.assert_allclose(fed.payload_vector(), start + weights.astype(np.float64) @ updates, atol=1e-6)
    assert log.sampled == tuple(idx) and log.participants == tuple(idx) and log.devices == 3
    assert log.examples == 3 * 2 * 4                    # 3 devices x 2 steps x batches of 4


def test_samples_are_seeded_and_uniform(peft):
    """Same seed and round: same sample; m = round(fraction x devices with data) distinct devices, never an
    empty one; over 3,000 rounds each device is included with frequency m / 5 = 0.4 +- 4 sigma (sigma =
    sqrt(0.4 x 0.6 / 3000) = 0.009)."""
    devices = devices_of(peft, [4, 0, 4, 4, 4, 4])
    fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, seed=7, fraction=0.4)
    again = FederatedDEFT(peft, devices, IdealAggregator(), 2, seed=7, fraction=0.4)
    other = FederatedDEFT(peft, devices, IdealAggregator(), 2, seed=8, fraction=0.4)
    assert fed.per_round == 2
    samples = np.array([fed.sample(r) for r in range(3000)])
    assert np.array_equal(samples, [again.sample(r) for r in range(3000)])
    assert not np.array_equal(samples, [other.sample(r) for r in range(3000)])
    assert np.all(samples[:, 0] < samples[:, 1]) and not np.any(samples == 1)
    freq = np.bincount(samples.ravel(), minlength=K)[[0, 2, 3, 4, 5]] / 3000
    assert np.all(np.abs(freq - 0.4) <= 4 * np.sqrt(0.4 * 0.6 / 3000))
    assert np.array_equal(FederatedDEFT(peft, devices, IdealAggregator(), 2).sample(5), np.arange(K))


@pytest.mark.parametrize("fraction, m", [(0.5, 3), (0.7, 4), (0.4, 2), (0.1, 1), (0.05, 1)])
def test_fraction_rounds_half_up_and_at_least_one(peft, fraction, m):
    """m = max(1, floor(fraction x 5 + 0.5)) of the 5 devices with data: 2.5 -> 3 and 3.5 -> 4 (Python's round()
    would give 2 and 4), 0.25 -> 1; each round samples m distinct devices."""
    fed = FederatedDEFT(peft, devices_of(peft, [4, 0, 4, 4, 4, 4]), IdealAggregator(), 2, seed=1, fraction=fraction)
    assert fed.per_round == m and len(set(fed.sample(0))) == m


@pytest.mark.parametrize("cls", [AirCompAggregator, DigitalAggregator])
def test_radio_aggregators_run_over_the_sampled_devices(cls):
    """With devices [4, 1]: the channel is those columns of the round's K-device draw, tau = 2 pilots (one per
    participant, flat channel: 2 pilot uses), energy and participants per sampled device; with every device
    the channel is the whole draw and tau = K, as without the argument."""
    agg = cls(K, 4, 10.0, seed=2)
    rng = np.random.default_rng(0)
    u = rng.standard_normal((2, 20)).astype(np.float32)
    idx = np.array([4, 1])
    rc = agg.round_channel(3, idx)
    np.testing.assert_array_equal(rc.H, agg.draw_channel(3)[:, idx])
    assert rc.pilot_uses == 2
    out = agg(u, 3, np.array([0.25, 0.75]), idx)
    assert out.pilot_uses == 2 and out.energy.shape == (2,) and out.participants.shape == (2,)
    full = rng.standard_normal((K, 20)).astype(np.float32)
    a, b = agg(full, 3), agg(full, 3, None, np.arange(K))
    assert a.pilot_uses == b.pilot_uses == K and a.channel_uses == b.channel_uses
    np.testing.assert_array_equal(a.mean, b.mean)
    with pytest.raises(ValueError, match="`devices`"):
        agg(u, 3, None, np.array([1, 1]))
    with pytest.raises(ValueError, match="`devices`"):
        agg(u, 3, None, np.array([0, K]))


def test_stateless_by_default_stateful_on_request(peft):
    """Stateless: every device's local Adam starts at step 0 each round (iterations == local_steps after a
    device's steps, no state kept); stateful: a device's step count runs on across the rounds it joins and
    its state costs 8 L + 8 bytes (Adam's two float32 moments per payload weight and an int64 step count)."""
    devices = devices_of(peft, [8, 8])
    fed = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=3, batch_size=4)
    fed.run(2)
    assert int(fed.optimizer.iterations.numpy()) == 3 and fed.devices_with_state == ()
    kept = FederatedDEFT(peft, devices, IdealAggregator(), 2, local_steps=3, batch_size=4, stateful_clients=True)
    kept.run(2)
    assert int(kept.optimizer.iterations.numpy()) == 6 and kept.devices_with_state == (0, 1)
    assert kept.client_state_bytes == 8 * kept.payload_vector().size + 8


def test_dirichlet_keeps_every_device_non_empty():
    """150 devices on 200 labels at alpha 0.1 (many devices draw nothing): every device holds an example and
    the parts cover every example once; without empty draws (4 devices, 1,000 labels) the split is the plain
    Dirichlet one, re-derived here from the same generator."""
    labels = np.random.default_rng(1).integers(0, 2, 200)
    parts = partition(labels, 150, "dirichlet", alpha=0.1, seed=0)
    assert min(len(p) for p in parts) >= 1
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(200))
    labels = np.random.default_rng(1).integers(0, 3, 1000)
    rng, ref = np.random.default_rng(4), [[] for _ in range(4)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(0.5 * np.ones(4)))[:-1] * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            ref[k].extend(chunk)
    assert min(len(r) for r in ref) > 0
    for got, want in zip(partition(labels, 4, "dirichlet", alpha=0.5, seed=4), ref):
        np.testing.assert_array_equal(got, np.sort(want))


def test_bad_input_named(peft):
    devices = devices_of(peft, [4, 4, 4])
    for kwargs, name in [({"fraction": 0.0}, "`fraction`"), ({"fraction": 1.5}, "`fraction`"),
                         ({"fraction": True}, "`fraction`"), ({"clients_per_round": 0}, "`clients_per_round`"),
                         ({"clients_per_round": 4}, "`clients_per_round`"),
                         ({"clients_per_round": 2, "fraction": 0.5}, "`fraction` or `clients_per_round`")]:
        with pytest.raises(ValueError, match=name):
            FederatedDEFT(peft, devices, IdealAggregator(), 2, **kwargs)
    with pytest.raises(ValueError, match="`devices`: 3 devices for 2 examples"):
        FederatedDEFT(peft, devices_of(peft, [1, 1, 0]), IdealAggregator(), 2)
    with pytest.raises(ValueError, match="`num_devices`"):
        partition(np.zeros(5), 6)
