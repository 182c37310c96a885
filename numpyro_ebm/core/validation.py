"""Argument checks shared by every public entry point.

Each check names the argument, says what was expected and what was given, and
raises before anything is compiled. Python, NumPy and JAX scalars are all
accepted where a number is expected; traced values (inside ``jax.jit``) cannot
be inspected and are passed through unchanged, to be guarded where they are
used.
"""

import math
import numbers

import numpy as np

import jax
import jax.numpy as jnp

__all__ = [
    "is_concrete",
    "as_float",
    "positive",
    "non_negative",
    "positive_integer",
    "non_negative_integer",
    "probability",
    "schedule",
    "schedule_length",
]

#: iterations over which a callable schedule is checked when the run length is
#: not known in advance (e.g. an MCMC kernel's sampling phase)
SCHEDULE_CHECK_HORIZON = 1_000_000


def is_concrete(value) -> bool:
    """True unless ``value`` (or a leaf of it) is a JAX tracer.

    Example:
        >>> is_concrete(1.0)
        True
    """
    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(value))


def as_float(name, value):
    """``value`` as a Python float: a Python, NumPy or 0-d JAX number.

    Example:
        >>> import numpy as np
        >>> as_float("step_size", np.float32(0.5))
        0.5
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be a number, got the boolean {value!r}.")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray | jax.Array) and np.ndim(value) == 0:
        if not np.issubdtype(np.asarray(value).dtype, np.number):
            raise TypeError(f"`{name}` must be a number, got {value!r}.")
        return float(value)
    if hasattr(value, "shape") and np.ndim(value) != 0:
        raise ValueError(
            f"`{name}` must be a scalar, got an array of shape {np.shape(value)}."
        )
    raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}.")


def positive(name, value, *, finite=True):
    """Check ``value > 0`` (and finite); returns it unchanged.

    Example:
        >>> positive("step_size", 0.1)
        0.1
        >>> positive("step_size", -1.0)
        Traceback (most recent call last):
        ...
        ValueError: `step_size` must be positive and finite, got -1.0.
    """
    if not is_concrete(value):
        return value
    x = as_float(name, value)
    if not (x > 0 and (math.isfinite(x) or not finite)):
        what = "positive and finite" if finite else "positive"
        raise ValueError(f"`{name}` must be {what}, got {x!r}.")
    return value


def non_negative(name, value):
    """Check ``0 <= value < inf``; returns it unchanged.

    Example:
        >>> non_negative("energy_regularization", 0.0)
        0.0
    """
    if not is_concrete(value):
        return value
    x = as_float(name, value)
    if not (x >= 0 and math.isfinite(x)):
        raise ValueError(f"`{name}` must be non-negative and finite, got {x!r}.")
    return value


def _integer(name, value):
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be an integer, got the boolean {value!r}.")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, jax.core.Tracer):  # before np.asarray, which fails on it
        raise TypeError(
            f"`{name}` must be a Python integer, got a traced value: it fixes an "
            "array shape or a loop length, so pass it as a static argument under "
            "jax.jit."
        )
    if (
        isinstance(value, np.ndarray | jax.Array)
        and np.ndim(value) == 0
        and np.issubdtype(np.asarray(value).dtype, np.integer)
    ):
        return int(value)
    raise TypeError(
        f"`{name}` must be an integer, got {type(value).__name__} {value!r} "
        "(it is never rounded)."
    )


def positive_integer(name, value):
    """Check that ``value`` is an integer ``>= 1``; returns it as an ``int``.

    Floats are refused rather than truncated.

    Example:
        >>> positive_integer("num_steps", 3)
        3
        >>> positive_integer("num_steps", 2.7)
        Traceback (most recent call last):
        ...
        TypeError: `num_steps` must be an integer, got float 2.7 (it is never rounded).
    """
    n = _integer(name, value)
    if n < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {n}.")
    return n


def non_negative_integer(name, value):
    """Check that ``value`` is an integer ``>= 0``; returns it as an ``int``.

    Example:
        >>> non_negative_integer("burn_in", 0)
        0
    """
    n = _integer(name, value)
    if n < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {n}.")
    return n


def probability(name, value, *, closed=False):
    """Check ``0 < value < 1`` (``0 <= value <= 1`` with ``closed``).

    Example:
        >>> probability("target_accept_prob", 0.574)
        0.574
    """
    x = as_float(name, value)
    ok = 0 <= x <= 1 if closed else 0 < x < 1
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"`{name}` must be in {interval}, got {x!r}.")
    return value


def _schedule_values(name, fn, num_iterations):
    """Evaluate a callable schedule at every iteration it will be used."""
    steps = jnp.arange(num_iterations)
    try:
        values = jax.vmap(fn)(steps)
    except Exception:  # Python control flow in the user's function: sample it
        probe = np.unique(np.geomspace(1, num_iterations, 64).astype(int) - 1)
        try:
            values = jnp.stack([jnp.asarray(fn(jnp.asarray(i))) for i in probe])
        except Exception as err:
            raise ValueError(
                f"the `{name}` schedule could not be evaluated at iteration 0: "
                f"{type(err).__name__}: {err}"
            ) from err
        steps = jnp.asarray(probe)
    values = jnp.asarray(values)
    if values.shape != steps.shape:
        raise ValueError(
            f"the `{name}` schedule must return a scalar per iteration, got shape "
            f"{values.shape[1:]}."
        )
    return np.asarray(steps), np.asarray(values, np.float64)


def schedule(name, value, *, num_iterations=None, decreasing=False):
    """Check a scalar, 1-D array or callable schedule of positive values.

    A callable is evaluated at every iteration ``0 .. num_iterations - 1``
    (``SCHEDULE_CHECK_HORIZON`` iterations when the run length is unknown), so
    a schedule that turns zero, negative or non-finite later is refused too.
    Returns a scalar or 1-D array unchanged in kind (arrays as ``jnp`` arrays).

    Example:
        >>> import jax.numpy as jnp
        >>> schedule("step_size", lambda i: 0.1 / (i + 1.0)) is not None
        True
        >>> schedule("step_size", lambda i: 1.0 - 0.25 * i, num_iterations=10)
        Traceback (most recent call last):
        ...
        ValueError: the `step_size` schedule must be positive and finite at every iteration; at iteration 4 it is 0.
    """
    if callable(value):
        n = SCHEDULE_CHECK_HORIZON if num_iterations is None else int(num_iterations)
        steps, values = _schedule_values(name, value, max(n, 1))
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"the `{name}` schedule must be positive and finite at every "
                f"iteration; at iteration {int(steps[i])} it is {values[i]:.3g}."
            )
        return value
    if isinstance(value, list | tuple):
        value = np.asarray(value, dtype=float)
    if not hasattr(value, "shape") or np.ndim(value) == 0:
        positive(name, value)
        return value
    if not is_concrete(value):
        return value
    values = np.asarray(value)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a number, a non-empty 1-D array or a callable of the "
            f"iteration; got an array of shape {values.shape}."
        )
    if not np.issubdtype(values.dtype, np.number):
        raise TypeError(f"`{name}` must hold numbers, got dtype {values.dtype}.")
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"every value of the `{name}` schedule must be positive and finite; "
            f"entry {i} is {values[i]}."
        )
    if decreasing and not np.all(np.diff(values) <= 0):
        i = int(np.argmax(np.diff(values) > 0))
        raise ValueError(
            f"the `{name}` schedule must be non-increasing; entry {i + 1} "
            f"({values[i + 1]}) exceeds entry {i} ({values[i]})."
        )
    return jnp.asarray(values)


def schedule_length(name, value, num_iterations, *, what="the run"):
    """Refuse a 1-D schedule shorter than the iterations it must cover.

    Example:
        >>> schedule_length("step_size", [0.1, 0.05], 5)
        Traceback (most recent call last):
        ...
        ValueError: the `step_size` schedule has 2 values but the run takes 5 iterations; give one value per iteration (the last value is held after the schedule ends).
    """
    if callable(value) or np.ndim(value) == 0:
        return
    length = np.shape(value)[0]
    if length < num_iterations:
        raise ValueError(
            f"the `{name}` schedule has {length} values but {what} takes "
            f"{num_iterations} iterations; give one value per iteration (the last "
            "value is held after the schedule ends)."
        )
