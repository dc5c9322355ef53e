"""The library's one seeded random source: Sionna's global generators (`sionna.phy.config`)."""

import sionna.phy


def reseed(seed):
    """Re-seed Sionna's TF, NumPy and Python generators when `seed` is not None.

    Every deft6g function that draws random numbers takes `seed`; passing the same seed gives the
    same numbers, passing None continues the current random stream.
    """
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"`seed` must be a non-negative int or None, got {seed!r}")
        sionna.phy.config.seed = seed


def np_rng():
    """Sionna's seeded NumPy generator (`numpy.random.Generator`)."""
    return sionna.phy.config.np_rng


def tf_rng():
    """Sionna's seeded TensorFlow generator (`tf.random.Generator`)."""
    return sionna.phy.config.tf_rng
