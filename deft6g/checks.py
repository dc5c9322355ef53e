"""Argument checks shared by every layer of deft6g: each error names the argument and what was expected."""

import numpy as np
import tensorflow as tf


def is_tensor(*values):
    """True when any of `values` is a TF tensor or variable (results are then returned as tensors)."""
    return any(isinstance(v, (tf.Tensor, tf.Variable)) for v in values)


def as_tensor(value, name, dtype=None, min_rank=0):
    """Convert `value` to a tensor, checking rank and (when eager) finiteness.

    Complex dtypes are kept; NumPy float64/complex128 stays in double precision unless `dtype` is given.
    """
    if value is None:
        raise ValueError(f"`{name}` is required, got None")
    try:
        if not is_tensor(value):
            value = np.asarray(value)          # Python scalars and lists keep double precision
        t = tf.convert_to_tensor(value) if dtype is None else tf.cast(tf.convert_to_tensor(value), dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a numeric array or tensor, got {type(value).__name__}") from err
    if t.shape.rank is not None and t.shape.rank < min_rank:
        raise ValueError(f"`{name}` must have at least {min_rank} dimensions, got shape {t.shape.as_list()}")
    if not (t.dtype.is_floating or t.dtype.is_complex or t.dtype.is_integer):
        raise TypeError(f"`{name}` must be numeric, got dtype {t.dtype.name}")
    if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(tf.abs(t) if t.dtype.is_complex else tf.cast(t, tf.float64)))):
        raise ValueError(f"`{name}` contains non-finite values (NaN or inf)")
    return t


def check_nonnegative(t, name):
    """Raise when a real tensor `t` has a negative entry (checked when eager)."""
    if tf.executing_eagerly() and bool(tf.reduce_any(tf.math.real(t) < 0)):
        raise ValueError(f"`{name}` must be non-negative, got minimum {float(tf.reduce_min(tf.math.real(t)))}")
    return t


def check_noise_var(noise_var, dtype=None, positive=False):
    r"""Return the noise variance :math:`\sigma^2` as a tensor after checking it (values checked when eager).

    Input
    -----
    noise_var : scalar or [...], float -- linear noise variance per receive antenna (per complex dimension)
    dtype : None | tf.DType -- cast to it (None: keep the input precision)
    positive : bool -- require :math:`\sigma^2 > 0` (receivers that divide by it) instead of :math:`\ge 0`

    Output
    ------
    noise_var : scalar or [...], tf.float

    Raises `ValueError` "`noise_var` must be non-negative and finite ..." (or "positive and finite").
    """
    nv = as_tensor(noise_var, "noise_var", dtype)
    if tf.executing_eagerly():
        bad = nv <= 0 if positive else nv < 0
        if bool(tf.reduce_any(bad)):
            raise ValueError(f"`noise_var` must be {'positive' if positive else 'non-negative'} and finite (linear, "
                             f"per receive antenna), got minimum {float(tf.reduce_min(nv))}")
    return nv


def check_dim(t, axis, expected, name, what):
    """Raise when static dimension `axis` of `t` is known and differs from `expected`."""
    dim = t.shape[axis] if t.shape.rank is not None else None
    if dim is not None and expected is not None and dim != expected:
        raise ValueError(f"`{name}` must have {what} = {expected} in dimension {axis}, got shape {t.shape.as_list()}")


def check_count(value, name, minimum=1):
    """Return `value` as an int >= `minimum` (a device, antenna or sample count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def to_output(t, numpy_out):
    """Return `t` as a NumPy array when the caller passed NumPy inputs, else as a tensor."""
    return t.numpy() if numpy_out else t
