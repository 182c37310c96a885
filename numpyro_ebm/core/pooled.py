"""Many Langevin chains with one step size tuned on all of them.

:func:`pooled_langevin` samples an unnormalised density of unknown scale
without hand tuning: a burn-in tunes one step size on the acceptance rate
pooled over every chain (dual averaging, core.step_size), then the chains run until
their mean energy has stopped moving. It is the default sampler of
:meth:`numpyro_ebm.EnergyDistribution.sample`. Pure JAX.
"""

import warnings
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import Array, random

from numpyro_ebm.core import validation
from numpyro_ebm.core.chains import run_chains
from numpyro_ebm.core.langevin import init as langevin_init
from numpyro_ebm.core.langevin import langevin_step
from numpyro_ebm.core.step_size import dual_averaging, pooled_acceptance_gap

__all__ = ["PooledInfo", "pooled_langevin"]

#: chains below which the stopping rule cannot be assessed
MIN_CHAINS_FOR_CHECK = 8


class PooledInfo(NamedTuple):
    """Diagnostics of :func:`pooled_langevin`.

    Attributes:
        accept_prob: mean acceptance probability of the last round of steps,
            pooled over the chains.
        step_size: the step size used for sampling.
        num_steps: sampling steps taken after the burn-in.
        energy_shift: change of the chains' mean energy over the last round, in
            standard errors (the rule asks for less than 3).
        start_correlation: root mean square over coordinates of the
            correlation, across chains, between each chain's start and its
            final position (the rule asks for its square to be below 0.01
            plus the 99.9% quantile of its noise).
        converged: whether the stopping rule was met.
        assessed: whether there were enough chains (8) to apply the rule;
            with fewer, ``num_steps=None`` runs two rounds and ``converged``
            is ``False``.
    """

    accept_prob: Array
    step_size: Array
    num_steps: Array
    energy_shift: Array
    start_correlation: Array
    converged: Array
    assessed: Array


def _mean_and_se(potential_energy):
    n = potential_energy.shape[0]
    mean = jnp.mean(potential_energy)
    se = jnp.std(potential_energy) / jnp.sqrt(jnp.maximum(n, 1))
    return mean, se


def pooled_langevin(
    rng_key,
    potential_fn,
    init,
    *,
    num_warmup=None,
    num_steps=None,
    step_size=None,
    adjusted=True,
    target_accept_prob=0.574,
    round_steps=100,
    max_rounds=20,
):
    """Sample ``exp(-U)`` with a batch of chains sharing a tuned step size.

    **Burn-in.** With ``step_size=None``, ``num_warmup`` steps of every chain
    tune one step size by dual averaging (Hoffman & Gelman 2014, as in
    NumPyro's warm-up) so that the MALA acceptance probability averaged over
    the chains is ``target_accept_prob``; the acceptance of all chains enters
    each update, so the tuning is fast and the same for every chain. A given
    ``step_size`` is used as it is, after ``num_warmup`` steps (default none).

    **Stopping rule.** With ``num_steps=None`` the chains then run in rounds
    of ``round_steps`` steps, at least two, at most ``max_rounds``. The run
    stops after a round in which (a) the chains' mean energy agrees with its
    value one round earlier within 3 standard errors (the sd of the energies
    across chains over ``sqrt(num_chains)``) and (b) the chains have
    forgotten where they started: across chains, each coordinate's
    correlation between start and current position is about 0.1 at most (its
    mean square over the ``d`` coordinates below ``0.01`` plus the 99.9%
    quantile of ``chi2_d / (d num_chains)``, its law for independent draws). Chains drifting towards
    the typical set fail (a); chains that hardly move (a step too small)
    fail (b). With ``num_steps`` given the chains run exactly that long and
    the same rule is checked between the half-way point and the end. The rule
    needs at least 8 chains; it cannot tell that chains miss a mode of a
    multimodal target they never cross to.

    Args:
        rng_key: a JAX PRNG key.
        potential_fn: ``U`` of one chain's position.
        init: starting positions with a leading chain axis.
        num_warmup: burn-in steps (default 200 when tuning, else 0 if ``None``).
        num_steps: sampling steps, or ``None`` for the stopping rule.
        step_size: a fixed step size, or ``None`` to tune it.
        adjusted: Metropolis-adjusted steps (MALA; exact) or ULA.
        target_accept_prob: the acceptance rate the tuning aims for.
        round_steps: steps per round of the stopping rule.
        max_rounds: most rounds of the stopping rule.

    Returns:
        ``(positions, info)``: the final positions (one draw per chain) and a
        :class:`PooledInfo`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> U = lambda x: 0.5 * jnp.sum(x**2) / 4.0  # N(0, 4 I): scale unknown
        >>> x, info = pooled_langevin(jax.random.key(0), U, jnp.zeros((500, 2)))
        >>> bool(info.converged), round(float(jnp.var(x)), 0)
        (True, 4.0)

    References:
        Roberts & Tweedie (1996), *Exponential convergence of Langevin
        distributions and their discrete approximations*, Bernoulli 2(4).
        Hoffman & Gelman (2014), *The No-U-Turn Sampler*, JMLR 15 (dual
        averaging).
    """
    validation.probability("target_accept_prob", target_accept_prob)
    round_steps = validation.positive_integer("round_steps", round_steps)
    max_rounds = validation.positive_integer("max_rounds", max_rounds)
    if step_size is not None:
        validation.positive("step_size", step_size)
    if num_warmup is None:
        num_warmup = 200 if step_size is None else 0
    num_warmup = validation.non_negative_integer("num_warmup", num_warmup)
    if num_steps is not None:
        num_steps = validation.positive_integer("num_steps", num_steps)
    key_warmup, key_sample = random.split(rng_key)
    num_coordinates = max(1, int(np.prod(jnp.shape(init)[1:])))
    states = jax.vmap(lambda x: langevin_init(x, potential_fn))(init)
    dtype = jnp.result_type(states.potential_energy)

    if step_size is None:
        states, step = _tune(
            key_warmup,
            potential_fn,
            states,
            num_warmup,
            adjusted,
            target_accept_prob,
            dtype,
        )
    else:
        step = jnp.asarray(step_size, dtype)
        if num_warmup:
            states, _ = run_chains(
                key_warmup, potential_fn, states, num_warmup, step, adjusted=adjusted
            )

    def run(key, states, n):
        return run_chains(key, potential_fn, states, n, step, adjusted=adjusted)

    if num_steps is not None:
        key_a, key_b = random.split(key_sample)
        half = max(num_steps // 2, 1)
        states, _ = run(key_a, states, half)
        before = _mean_and_se(states.potential_energy)
        if num_steps - half:
            states, chains_info = run(key_b, states, num_steps - half)
            accept = jnp.mean(chains_info.accept_prob)
        else:  # one step: nothing to compare
            accept = jnp.asarray(1.0, dtype)
        after = _mean_and_se(states.potential_energy)
        taken = jnp.asarray(num_steps)
    else:
        num_chains = states.potential_energy.shape[0]
        # too few chains to assess the rule: two rounds, no more
        limit = max_rounds if num_chains >= MIN_CHAINS_FOR_CHECK else 2

        def cond(carry):
            _, states, rounds, _, shift, _ = carry
            settled = _settled(
                shift,
                _start_correlation(init, states.position),
                num_chains,
                num_coordinates,
            )
            return (rounds < 2) | (~settled & (rounds < limit))

        def body(carry):
            key, states, rounds, previous, _, _ = carry
            key, sub = random.split(key)
            states, chains_info = run(sub, states, round_steps)
            current = _mean_and_se(states.potential_energy)
            shift = _shift(previous, current)
            accept = jnp.mean(chains_info.accept_prob)
            return key, states, rounds + 1, current, shift, accept

        start = _mean_and_se(states.potential_energy)
        init_carry = (
            key_sample,
            states,
            jnp.asarray(0),
            start,
            jnp.asarray(jnp.inf, dtype),
            jnp.asarray(0.0, dtype),
        )
        _, states, rounds, after, shift, accept = jax.lax.while_loop(
            cond, body, init_carry
        )
        before = None
        taken = rounds * round_steps
    shift = _shift(before, after) if before is not None else shift
    num_chains = states.potential_energy.shape[0]
    correlation = _start_correlation(init, states.position)
    assessed = num_chains >= MIN_CHAINS_FOR_CHECK
    converged = jnp.asarray(assessed) & _settled(
        shift, correlation, num_chains, num_coordinates
    )
    info = PooledInfo(
        accept, step, taken, shift, correlation, converged, jnp.asarray(assessed)
    )
    return states.position, info


def _start_correlation(start, position):
    """Root mean square, over coordinates, of the across-chain correlation
    between the chains' starting points and their current positions."""
    a = start.reshape(start.shape[0], -1)
    b = position.reshape(position.shape[0], -1)
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = jnp.sqrt(jnp.sum(a**2, 0) * jnp.sum(b**2, 0))
    corr = jnp.where(denom > 0, jnp.sum(a * b, 0) / jnp.where(denom > 0, denom, 1), 0)
    return jnp.sqrt(jnp.mean(corr**2))


def _correlation_bound(num_chains, num_coordinates):
    """Bound on the mean square start correlation: 0.01 (|corr| about 0.1)
    plus the 99.9% quantile of its sampling noise for independent draws,
    chi2_d / (d n) (Wilson–Hilferty)."""
    d = num_coordinates
    z = 3.09  # the 99.9% normal quantile
    chi2 = d * (1 - 2 / (9 * d) + z * (2 / (9 * d)) ** 0.5) ** 3
    return 0.01 + chi2 / (d * num_chains)


def _settled(shift, correlation, num_chains, num_coordinates):
    # the energy has stopped moving and the chains have forgotten their starts
    bound = _correlation_bound(num_chains, num_coordinates)
    return (shift < 3.0) & (correlation**2 < bound)


def _shift(previous, current):
    (m0, se0), (m1, se1) = previous, current
    se = jnp.sqrt(se0**2 + se1**2)
    return jnp.where(se > 0, jnp.abs(m1 - m0) / se, jnp.where(m1 == m0, 0.0, jnp.inf))


def _tune(key, potential_fn, states, num_warmup, adjusted, target, dtype):
    """Burn-in with a step size tuned on the acceptance pooled over chains."""
    da_init, da_update = dual_averaging()
    initial = jnp.asarray(0.1, dtype)
    da_state = da_init(jnp.log(10.0 * initial))

    def body(carry, key):
        states, da_state = carry
        step = jnp.exp(da_state[0])
        keys = random.split(key, states.potential_energy.shape[0])
        states, info = jax.vmap(
            lambda k, s: langevin_step(k, s, potential_fn, step, adjusted=adjusted)
        )(keys, states)
        da_state = da_update(pooled_acceptance_gap(target, info.accept_prob), da_state)
        return (states, da_state), None

    if num_warmup == 0:
        return states, initial
    (states, da_state), _ = jax.lax.scan(
        body, (states, da_state), random.split(key, num_warmup)
    )
    return states, jnp.exp(da_state[1])


def warn_if_not_mixed(info: PooledInfo, what="the chains"):
    """Warn, with the figures, when :func:`pooled_langevin` did not settle.

    Works on concrete values and, through :func:`jax.debug.callback`, inside
    ``jax.jit``. With fewer than 8 chains the rule cannot be applied, and only
    a chain that hardly moves is reported.
    """

    def emit(accept, step, taken, shift, correlation, converged, assessed):
        accept, shift = float(np.mean(accept)), float(np.max(shift))
        if not bool(np.all(converged | ~assessed)):
            warnings.warn(
                f"{what} may not have mixed: after {int(np.max(taken))} sampling "
                f"steps (step size {float(np.mean(step)):.3g}, acceptance "
                f"{accept:.2f}) their mean energy moved by {shift:.1f} standard "
                "errors in the last stretch (the rule asks for less than 3) and "
                "their positions keep a correlation of "
                f"{float(np.max(correlation)):.2f} with their starts (about 0.1 at "
                "most). Raise num_steps / num_warmup, or leave them to the "
                "defaults.",
                RuntimeWarning,
                stacklevel=2,
            )
        elif accept < 0.1:
            warnings.warn(
                f"{what} hardly moved: acceptance {accept:.3f} at step size "
                f"{float(np.mean(step)):.3g}; lower step_size or let it be tuned "
                "(step_size=None).",
                RuntimeWarning,
                stacklevel=2,
            )

    jax.debug.callback(emit, *info)
