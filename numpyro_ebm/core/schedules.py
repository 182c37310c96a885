"""Schedules over iterations: step sizes and inverse temperatures.

A schedule is either a 1-D array (value ``k`` is used at iteration ``k``; the
last value is held after its end) or a callable of the iteration index. The
helpers below build the common ones.
"""

import math

import jax.numpy as jnp

from numpyro_ebm.core import validation

__all__ = ["geometric_schedule", "linear_schedule", "polynomial_schedule", "evaluate"]


def geometric_schedule(start, end, num_steps):
    """``num_steps`` values from ``start`` to ``end`` in geometric progression.

    Example:
        >>> geometric_schedule(0.1, 10.0, 3).tolist()
        [0.1..., 1.0..., 10.0...]
    """
    if validation.as_float("start", start) <= 0 or validation.as_float("end", end) <= 0:
        raise ValueError("geometric_schedule needs positive start and end values.")
    validation.positive("start", start)
    validation.positive("end", end)
    num_steps = validation.positive_integer("num_steps", num_steps)
    return jnp.geomspace(start, end, num_steps)


def linear_schedule(start, end, num_steps):
    """``num_steps`` evenly spaced values from ``start`` to ``end``.

    Example:
        >>> linear_schedule(0.5, 1.0, 3).tolist()
        [0.5, 0.75, 1.0]
    """
    for name, value in (("start", start), ("end", end)):
        if not math.isfinite(validation.as_float(name, value)):
            raise ValueError(f"`{name}` must be finite, got {value!r}.")
    num_steps = validation.positive_integer("num_steps", num_steps)
    return jnp.linspace(start, end, num_steps)


def polynomial_schedule(scale, exponent, offset=1.0):
    """The Robbins–Monro-type decay ``scale * (i + offset) ** -exponent``.

    With ``0.5 < exponent <= 1`` the values sum to infinity while their squares
    do not, which is what removes ULA's bias and makes stochastic-approximation
    schemes converge.

    Example:
        >>> sched = polynomial_schedule(0.1, 0.8)
        >>> round(float(sched(0)), 6)
        0.1
    """
    if validation.as_float("scale", scale) <= 0:
        raise ValueError("polynomial_schedule needs a positive scale.")
    validation.positive("scale", scale)
    validation.non_negative("exponent", exponent)
    # i + offset must stay positive from i = 0: (0)^-exponent is infinite
    validation.positive("offset", offset)

    def schedule(i):
        return scale * (jnp.asarray(i, jnp.result_type(float)) + offset) ** (-exponent)

    return schedule


def evaluate(schedule, i):
    """Value of ``schedule`` (scalar, 1-D array or callable) at iteration ``i``.

    Arrays hold their last value after their end.

    Example:
        >>> import jax.numpy as jnp
        >>> float(evaluate(jnp.array([1.0, 0.5]), 7))
        0.5
    """
    if callable(schedule):
        return schedule(i)
    schedule = jnp.asarray(schedule)
    if schedule.ndim == 0:
        return schedule
    return schedule[jnp.minimum(i, schedule.shape[0] - 1)]
