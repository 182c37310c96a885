"""Step sizes tuned on acceptance rates: one module for the kernels' warm-up,
the distributions' samplers and the estimators.

- :func:`dual_averaging`: Hoffman & Gelman's scheme on ``log(step size)``
  (NumPyro's formulas and state layout, so that NumPyro's ``HMCAdaptState``
  can hold its state), fed the acceptance pooled over chains by
  :func:`pooled_acceptance_gap`. For a warm-up that ends: the step size it
  leaves is the average of its iterates.
- :func:`robbins_monro`: a constant-gain update of ``log(step size)``, for
  targets that keep moving (an estimator's latents while its parameters
  learn, AIS from one temperature to the next).

Pure JAX.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

from numpyro_ebm.core import validation

__all__ = [
    "DualAveragingState",
    "dual_averaging",
    "pooled_acceptance_gap",
    "robbins_monro",
]


class DualAveragingState(NamedTuple):
    """State of :func:`dual_averaging` (a tuple in NumPyro's order).

    Attributes:
        x: the current iterate (``log(step size)``).
        x_avg: the weighted average of the iterates, the final value.
        g_avg: the average of the statistics fed so far.
        t: the number of updates.
        prox_center: the point the iterates are pulled towards.
    """

    x: Array
    x_avg: Array
    g_avg: Array
    t: Array
    prox_center: Array


def dual_averaging(t0=10, kappa=0.75, gamma=0.05):
    """``(init, update)`` of the dual averaging scheme (Nesterov 2009) as
    adapted to MCMC step sizes by Hoffman & Gelman (2014, section 3.2):
    after ``t`` statistics ``g_1..g_t`` (target acceptance minus acceptance),

        ``x_t = mu - sqrt(t) / gamma * mean_{s<=t} g_s``  (the average with
        ``t0`` stabilising its start), ``x_avg`` its ``t^-kappa``-weighted
        average.

    ``init(prox_center)`` starts at ``mu = prox_center`` (e.g.
    ``log(10 h0)``); ``update(g, state)`` adds one statistic.

    Example:
        >>> import jax.numpy as jnp
        >>> init, update = dual_averaging()
        >>> state = init(jnp.log(10.0))
        >>> for _ in range(50):  # accepting too often: the step grows
        ...     state = update(0.8 - 1.0, state)
        >>> bool(state.x > jnp.log(10.0))
        True

    References:
        Nesterov (2009), *Primal-dual subgradient methods for convex
        problems*, Math. Program. 120. Hoffman & Gelman (2014), *The No-U-Turn
        Sampler*, JMLR 15.
    """

    t0 = validation.non_negative("t0", t0)
    gamma = validation.positive("gamma", gamma)
    if not 0.5 < validation.as_float("kappa", kappa) <= 1.0:
        raise ValueError(f"`kappa` must be in (0.5, 1], got {kappa!r}.")

    def init(prox_center=0.0):
        zero = jnp.zeros(())
        return DualAveragingState(
            zero, zero, zero, jnp.array(0, jnp.result_type(int)), prox_center
        )

    def update(g, state):
        x, x_avg, g_avg, t, prox_center = state
        t = t + 1
        g_avg = (1 - 1 / (t + t0)) * g_avg + g / (t + t0)
        x = prox_center - (t**0.5) / gamma * g_avg
        weight = t ** (-kappa)
        x_avg = (1 - weight) * x_avg + weight * x
        return DualAveragingState(x, x_avg, g_avg, t, prox_center)

    return init, update


def pooled_acceptance_gap(target_accept_prob, accept_probs):
    """The statistic of :func:`dual_averaging` for a batch of chains sharing
    one step size: the target minus their mean acceptance.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(pooled_acceptance_gap(0.5, jnp.array([0.2, 0.4]))), 6)
        0.2
    """
    return target_accept_prob - jnp.mean(accept_probs)


def robbins_monro(log_step_size, accept_prob, target_accept_prob, gain):
    """``log h + gain (accept - target)``: up when the chains accept more
    often than the target.

    Example:
        >>> round(float(robbins_monro(0.0, 0.9, 0.5, 0.1)), 6)
        0.04
    """
    validation.positive("gain", gain)
    if validation.is_concrete(target_accept_prob):
        validation.probability("target_accept_prob", target_accept_prob)
    return log_step_size + gain * (accept_prob - target_accept_prob)
