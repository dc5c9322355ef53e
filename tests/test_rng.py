"""The library seed: the same seed repeats the stream, and neighbouring seeds draw unrelated streams."""

import numpy as np
import pytest

from deft6g.rng import np_rng, reseed, tf_rng


def _tf_stream(seed, n=2000):
    reseed(seed)
    return tf_rng().normal([n]).numpy()


def test_same_seed_same_numbers():
    np.testing.assert_array_equal(_tf_stream(7), _tf_stream(7))
    reseed(7)
    a = np_rng().normal(size=5)
    reseed(7)
    np.testing.assert_array_equal(a, np_rng().normal(size=5))


def test_neighbouring_seeds_share_no_stream():
    """Seeds 0..9 (and seeds 7919 apart, as rounds are seeded): the values of one seed's first 2,000 draws that
    also occur among another's (at any offset) stay under 1% (float32 coincidences only; measured 0); with
    Sionna's plain `config.seed`, seed s + 1 repeats seed s's stream shifted by four values (99.8% shared)."""
    streams = [_tf_stream(s) for s in list(range(10)) + [7919, 2 * 7919]]
    for i, a in enumerate(streams):
        for b in streams[i + 1:]:
            assert np.isin(a, b).mean() < 0.01


def test_bad_seed():
    with pytest.raises(ValueError, match="`seed`"):
        reseed(-1)
    with pytest.raises(ValueError, match="`seed`"):
        reseed(1.5)
