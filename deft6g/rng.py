"""The library's one seeded random source: Sionna's global generators (`sionna.phy.config`), and the one way
to derive the seed of a sub-stream (`derive_seed`)."""

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


def derive_seed(seed, *stream):
    """The seed of the sub-stream `stream` of `seed`: what a run seeded `seed` passes to a part of it (a stage,
    a device, a round), so that parts never share random numbers and seed s + 1 is not a shifted seed s.

    It is `numpy.random.SeedSequence(seed, spawn_key=stream)`'s first 32-bit word: the child `stream` of the
    seed's sequence (`SeedSequence(seed).spawn` numbers its children the same way), hashed, so that distinct
    (seed, stream) pairs give unrelated seeds (two collide with probability 2^-32). A stream is one or more
    ints, e.g. a stage's number and then a device's index; derive_seed(seed) is the root's own word.

    Input
    -----
    seed : int in [0, 2^64 - 1] (a larger seed would fill the words that `stream` takes: derive_seed(a + 2^128 b)
        would equal derive_seed(a, b))
    *stream : ints in [0, 2^32 - 1] (a larger entry would split into two words: (x) would equal (x mod 2^32, x >> 32))

    Output
    ------
    int in [0, 2^32 - 1], the same for the same inputs on every platform and NumPy version
    """
    for name, value in (("seed", seed), *((f"stream[{i}]", v) for i, v in enumerate(stream))):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative int, got {value!r}")
    if seed >= 2 ** 64:
        raise ValueError(f"`seed` must be below 2^64, got {seed!r}")
    if any(v >= 2 ** 32 for v in stream):
        raise ValueError(f"`stream` values must be below 2^32, got {stream!r}")
    sequence = np.random.SeedSequence(int(seed), spawn_key=tuple(int(v) for v in stream))
    return int(sequence.generate_state(1, np.uint32)[0])
