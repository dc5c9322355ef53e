"""The library's one seeded random source: Sionna's global generators (`sionna.phy.config`)."""

import numpy as np
import sionna.phy


def reseed(seed):
    """Re-seed Sionna's TF, NumPy and Python generators when `seed` is not None.

    Every deft6g function that draws random numbers takes `seed`; passing the same seed gives the
    same numbers, passing None continues the current random stream.

    Sionna's `config.seed = s` starts TensorFlow's Philox generator at counter s with key 0, so seed s + 1
    gives seed s's stream shifted by one counter step (four values): neighbouring seeds would share almost
    all their channels and noise. Here the Philox key is a hash of the seed (`numpy.random.SeedSequence`)
    and the counter starts at 0, so different seeds draw from unrelated streams. The NumPy and Python
    generators are Sionna's, seeded with `seed` (NumPy's `default_rng` hashes it already).
    """
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int or None, got {seed!r}")
        seed = int(seed)
        sionna.phy.config.seed = seed
        key = int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> np.uint64(1))   # < 2^63
        sionna.phy.config.tf_rng.reset_from_key_counter(key=key, counter=[0, 0])


def np_rng():
    """Sionna's seeded NumPy generator (`numpy.random.Generator`)."""
    return sionna.phy.config.np_rng


def tf_rng():
    """Sionna's seeded TensorFlow generator (`tf.random.Generator`)."""
    return sionna.phy.config.tf_rng
