"""Annealed importance sampling (Neal 2001) with the package's MALA step.

The path of laws ``pi_b ∝ p0^(1 - b) f^b`` runs from a normalised base
density ``p0`` (``b = 0``) to an unnormalised target ``f`` (``b = 1``) over a
schedule ``0 = b_0 < b_1 < ... < b_T = 1``. Writing ``g = log f - log p0``:

- **forward**: ``x ~ p0``; at each level ``t = 1..T`` the log weight gains
  ``(b_t - b_{t-1}) g(x)``, then ``x`` moves by MALA steps that leave
  ``pi_{b_t}`` invariant. The weight's mean is ``Z = ∫ f`` exactly, so its
  log is a stochastic lower bound on ``log Z`` (Jensen).
- **reverse** (Grosse, Ghahramani & Adams 2015): ``x`` from the target; at
  each level ``t = T..1`` the log weight loses ``(b_t - b_{t-1}) g(x)``, then
  ``x`` moves at ``b_{t-1}``. The weight's mean is ``1 / Z`` when the start is
  exact, so ``-log`` of it is a stochastic upper bound on ``log Z``.

Each level costs ``num_mcmc_steps`` gradients: the energy and its gradient at
the new level are recovered from the cached ones at the old level and the
base density, ``U_b = -log p0 - b g``, with no extra network call.

One level's move is the shared :func:`~numpyro_ebm.core.langevin.langevin_step`
run by :func:`~numpyro_ebm.core.chains.run_chains`.

References:
    Neal (2001), *Annealed importance sampling*, Statistics and Computing 11.
    Grosse, Ghahramani & Adams (2015), *Sandwiching the marginal likelihood
    using bidirectional Monte Carlo*, arXiv:1511.02543.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, random

from numpyro_ebm.core.chains import run_chains
from numpyro_ebm.core.langevin import LangevinState
from numpyro_ebm.core.metrics import Metric
from numpyro_ebm.core.step_size import robbins_monro

__all__ = ["AISInfo", "sigmoid_schedule", "ais", "tune_step_sizes"]


class AISInfo(NamedTuple):
    """Diagnostics of one annealed pass.

    Attributes:
        log_weights: ``(N,)`` each particle's log importance weight.
        accept_prob: ``(T,)`` the particles' mean MALA acceptance probability
            at each level.
        num_diverging: ``(T,)`` proposals rejected at each level for a
            non-finite energy or gradient.
        first_bad: the first level (1-based) at which a weight became NaN,
            or ``-1``.
    """

    log_weights: Array
    accept_prob: Array
    num_diverging: Array
    first_bad: Array


def sigmoid_schedule(num_levels: int, steepness: float = 4.0) -> Array:
    """``num_levels + 1`` inverse temperatures from 0 to 1, dense at both ends:
    the sigmoid of a linear grid on ``[-steepness, steepness]``, rescaled to
    start at exactly 0 and end at exactly 1 (Grosse et al. 2015).

    Example:
        >>> b = sigmoid_schedule(10)
        >>> float(b[0]), float(b[-1]), b.shape
        (0.0, 1.0, (11,))
    """
    s = jax.nn.sigmoid(jnp.linspace(-steepness, steepness, num_levels + 1))
    return (s - s[0]) / (s[-1] - s[0])


def _potential(log_target_fn, log_base_fn, beta):
    """``U_b = -(1 - b) log p0 - b log f`` of one particle."""
    return lambda x: -(1.0 - beta) * log_base_fn(x) - beta * log_target_fn(x)


def _start(positions, log_target_fn, log_base_fn, beta):
    """The gap ``g`` of every particle and its state at ``beta``, with the
    target evaluated once."""

    def one(x):
        lt, glt = jax.value_and_grad(log_target_fn)(x)
        lb, glb = jax.value_and_grad(log_base_fn)(x)
        u = -(1.0 - beta) * lb - beta * lt
        grad = jax.tree.map(lambda a, b: -(1.0 - beta) * b - beta * a, glt, glb)
        return lt - lb, LangevinState(x, u, grad)

    return jax.vmap(one)(positions)


def _next_level(states, log_base_fn, beta, new_beta):
    """The gap ``g = log f - log p0`` of every particle and its state at
    ``new_beta``, recovered from its cached state at ``beta > 0`` (``U_b =
    -log p0 - b g``) and the base density alone."""
    lb, grad_lb = jax.vmap(jax.value_and_grad(log_base_fn))(states.position)
    safe = jnp.where(beta > 0, beta, 1.0)
    g = -(states.potential_energy + lb) / safe
    grad_g = jax.tree.map(
        lambda gu, gb: -(gu + gb) / _expand(safe, gu),
        states.potential_energy_grad,
        grad_lb,
    )
    new = LangevinState(
        states.position,
        -lb - new_beta * g,
        jax.tree.map(lambda gb, gg: -gb - new_beta * gg, grad_lb, grad_g),
    )
    return g, new


def _expand(value, like):
    return jnp.reshape(
        value, jnp.shape(value) + (1,) * (jnp.ndim(like) - jnp.ndim(value))
    )


def _anneal(
    rng_key,
    log_target_fn,
    log_base_fn,
    init,
    levels,
    step_sizes,
    num_mcmc_steps,
    metric,
    adapt,
):
    """One pass over ``levels`` (in the order visited). ``step_sizes[k]`` is
    the step of the moves at ``levels[k]``; with ``adapt = (target,
    rate)`` the step is instead adapted from level to level (Robbins-Monro on
    its log, from ``step_sizes[0]``) and the steps used are returned."""
    levels = jnp.asarray(levels)
    num_moves = levels.shape[0] - 1
    g, states = _start(init, log_target_fn, log_base_fn, levels[1])
    log_w = (levels[1] - levels[0]) * g
    first_bad = jnp.where(jnp.any(jnp.isnan(log_w)), 1, -1)
    nxt = jnp.concatenate([levels[2:], levels[-1:]])

    def body(carry, inputs):
        states, log_w, first_bad, log_h = carry
        k, beta, new_beta, h, key = inputs
        h = jnp.exp(log_h) if adapt is not None else h
        states, info = run_chains(
            key,
            _potential(log_target_fn, log_base_fn, beta),
            states,
            num_mcmc_steps,
            h,
            metric=metric,
        )
        accept = jnp.mean(info.accept_prob)
        if adapt is not None:
            target, rate = adapt
            log_h = robbins_monro(log_h, accept, target, rate)
        g, states = _next_level(states, log_base_fn, beta, new_beta)
        step = new_beta - beta
        log_w = log_w + jnp.where(step != 0, step * g, 0.0)
        bad = jnp.any(jnp.isnan(log_w))
        first_bad = jnp.where((first_bad < 0) & bad, k + 1, first_bad)
        out = (accept, jnp.sum(info.num_diverging), h)
        return (states, log_w, first_bad, log_h), out

    log_h0 = jnp.log(jnp.asarray(step_sizes)[0])
    keys = random.split(rng_key, num_moves)
    ks = jnp.arange(1, num_moves + 1)
    hs = jnp.broadcast_to(jnp.asarray(step_sizes), (num_moves,))
    (states, log_w, first_bad, _), (accept, diverging, used) = jax.lax.scan(
        body,
        (states, log_w, first_bad, log_h0),
        (ks, levels[1:], nxt, hs, keys),
    )
    return states.position, AISInfo(log_w, accept, diverging, first_bad), used


def ais(
    rng_key,
    log_target_fn: Callable,
    log_base_fn: Callable,
    init,
    betas,
    step_sizes,
    *,
    num_mcmc_steps: int = 1,
    metric: Metric | None = None,
    reverse: bool = False,
):
    """One annealed pass of ``N`` particles; see the module notes.

    Args:
        rng_key: a JAX PRNG key.
        log_target_fn: ``log f`` of one particle (unnormalised).
        log_base_fn: ``log p0`` of one particle (normalised).
        init: ``(N, ...)`` starting particles: draws of ``p0`` (forward) or of
            the target (``reverse=True``).
        betas: ``(T + 1,)`` inverse temperatures, 0 first, 1 last, increasing.
        step_sizes: ``(T + 1,)`` MALA step at each level (or a scalar).
        num_mcmc_steps: MALA steps per level (static).
        metric: an inverse mass matrix for the moves.
        reverse: run from the target to the base.

    Returns:
        ``(positions, info)``: the particles at the end and :class:`AISInfo`
        (forward: ``log mean exp(log_weights)`` estimates ``log Z``; reverse:
        it estimates ``-log Z``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> log_f = lambda x: -0.5 * jnp.sum(x**2) / 0.25  # Z = 2 pi 0.25
        >>> log_p0 = lambda x: -0.5 * jnp.sum(x**2) - jnp.log(2 * jnp.pi)
        >>> x0 = jax.random.normal(jax.random.key(0), (500, 2))
        >>> _, info = ais(jax.random.key(1), log_f, log_p0, x0,
        ...               sigmoid_schedule(100), 0.05)
        >>> est = jax.nn.logsumexp(info.log_weights) - jnp.log(500)
        >>> bool(abs(est - jnp.log(2 * jnp.pi * 0.25)) < 0.05)
        True
    """
    betas = jnp.asarray(betas)
    steps = jnp.broadcast_to(jnp.asarray(step_sizes, betas.dtype), betas.shape)
    levels, steps = (betas[::-1], steps[::-1]) if reverse else (betas, steps)
    positions, info, _ = _anneal(
        rng_key,
        log_target_fn,
        log_base_fn,
        init,
        levels,
        steps[1:],
        num_mcmc_steps,
        metric,
        None,
    )
    return positions, info


def tune_step_sizes(
    rng_key,
    log_target_fn: Callable,
    log_base_fn: Callable,
    init,
    betas,
    initial_step_size,
    *,
    num_mcmc_steps: int = 1,
    metric: Metric | None = None,
    target_accept_prob: float = 0.65,
    learning_rate: float = 1.0,
):
    """MALA steps for every level of ``betas`` from a pilot forward pass whose
    step follows the particles' acceptance rate from level to level
    (``log h += learning_rate (accept - target_accept_prob)``). A pass that
    then uses these fixed steps with fresh draws is unbiased: the steps do not
    depend on its own particles.

    Returns:
        ``(T + 1,)`` steps (the one of level 0, used only by a reverse pass,
        is that of level 1) and the pilot's :class:`AISInfo`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> log_f = lambda x: -0.5 * jnp.sum(x**2) / 0.01
        >>> log_p0 = lambda x: -0.5 * jnp.sum(x**2)
        >>> x0 = jax.random.normal(jax.random.key(0), (32, 2))
        >>> h, info = tune_step_sizes(jax.random.key(1), log_f, log_p0, x0,
        ...                           sigmoid_schedule(200), 0.5)
        >>> bool(h[-1] < 0.05), bool(abs(info.accept_prob[-50:].mean() - 0.65) < 0.1)
        (True, True)
    """
    betas = jnp.asarray(betas)
    _, info, used = _anneal(
        rng_key,
        log_target_fn,
        log_base_fn,
        init,
        betas,
        jnp.asarray(initial_step_size, betas.dtype)[None],
        num_mcmc_steps,
        metric,
        (target_accept_prob, learning_rate),
    )
    return jnp.concatenate([used[:1], used]), info
