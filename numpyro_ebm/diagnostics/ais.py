"""Normalising constants and held-out likelihoods of energy-based models by
annealed importance sampling.

:func:`ais_log_normalizer` estimates ``log Z`` of ``exp(-E)`` from a
normalised base density with the package's MALA step (forward: a stochastic
lower bound; from exact draws of the model, reverse: a stochastic upper
bound). :func:`ais_log_likelihood` turns it into the held-out log-likelihood
of data, in nats per point, with a standard error that counts both sources.
"""

import functools
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import Array

from numpyro_ebm.core import ais as core_ais
from numpyro_ebm.core import validation
from numpyro_ebm.core.compiled import as_pure
from numpyro_ebm.core.metrics import metric_from_inverse_mass_matrix

__all__ = ["AISResult", "HeldOutLikelihood", "ais_log_normalizer", "ais_log_likelihood"]


class AISResult(NamedTuple):
    """The estimate of :func:`ais_log_normalizer`.

    Attributes:
        log_normalizer: the estimate of ``log Z``: ``log mean(w)`` (forward,
            biased low: a stochastic lower bound) or ``-log mean(w)`` (reverse,
            biased high: a stochastic upper bound when the start is exact).
        stderr: its delta-method standard error, ``sd(w) / (mean(w) sqrt(N))``.
        log_weights: ``(N,)`` the particles' log weights.
        ess: the weights' effective sample size, ``(sum w)^2 / sum w^2``.
        accept_prob: ``(T,)`` mean MALA acceptance at each level.
        step_sizes: ``(T + 1,)`` the MALA step at each level.
        betas: ``(T + 1,)`` the inverse temperatures.
        samples: the particles at the end of the pass (approximate draws of
            the model, forward; of the base, reverse).
    """

    log_normalizer: Array
    stderr: Array
    log_weights: Array
    ess: Array
    accept_prob: Array
    step_sizes: Array
    betas: Array
    samples: Array


class HeldOutLikelihood(NamedTuple):
    """The estimate of :func:`ais_log_likelihood`.

    Attributes:
        log_likelihood: mean log-likelihood of the data, nats per point.
        stderr: its standard error: the data's spread over ``sqrt(n)`` and the
            ``log Z`` estimate's, in quadrature.
        log_likelihoods: ``(n,)`` each point's ``-E(x_i) - log Z``.
        normalizer: the :class:`AISResult` of ``log Z``.
    """

    log_likelihood: Array
    stderr: Array
    log_likelihoods: Array
    normalizer: AISResult


def _check_base(base_dist):
    if not isinstance(base_dist, dist.Distribution):
        raise TypeError(
            "`base_dist` must be a numpyro Distribution (a normalised density to "
            f"start from, e.g. dist.Normal(m, s).to_event(1)), got "
            f"{type(base_dist).__name__}."
        )
    if base_dist.batch_shape:
        raise ValueError(
            "`base_dist` must have an empty batch_shape (move its dimensions into "
            f"the event with .to_event()); got batch_shape {base_dist.batch_shape}."
        )
    if not base_dist.event_shape:
        raise ValueError("`base_dist` needs an event_shape of at least one dimension.")
    return tuple(base_dist.event_shape)


def _check_energy(energy_fn, event_shape, dtype):
    if not callable(energy_fn):
        raise TypeError(
            f"`energy_fn` must be callable (an NNX module or a function), got "
            f"{type(energy_fn).__name__}."
        )
    shape = jax.eval_shape(energy_fn, jax.ShapeDtypeStruct((3, *event_shape), dtype))
    if getattr(shape, "shape", None) != (3,):
        raise ValueError(
            f"`energy_fn` must map a batch of shape (n, *{event_shape}) to energies "
            f"of shape (n,); it maps (3, *{event_shape}) to "
            f"{getattr(shape, 'shape', shape)}."
        )


def _check_betas(betas, num_levels):
    if betas is None:
        num_levels = validation.positive_integer("num_levels", num_levels)
        return core_ais.sigmoid_schedule(num_levels)
    concrete = validation.is_concrete(betas)
    if concrete:
        betas = np.asarray(betas)
    if np.ndim(betas) != 1 or np.shape(betas)[0] < 2:
        raise ValueError(
            f"`betas` must be a 1-D schedule of at least 2 inverse temperatures, "
            f"got shape {np.shape(betas)}."
        )
    if concrete:
        b = betas.astype(float)
        if not np.all(np.isfinite(b)):
            raise ValueError(f"`betas` must be finite, got {b}.")
        if b[0] != 0.0 or b[-1] != 1.0:
            raise ValueError(
                "`betas` must start at 0 (the base) and end at exactly 1 (the "
                f"model): it runs from {b[0]} to {b[-1]}."
            )
        if np.any(np.diff(b) <= 0):
            k = int(np.argmax(np.diff(b) <= 0))
            raise ValueError(
                f"`betas` must increase strictly: betas[{k + 1}] = {b[k + 1]} after "
                f"betas[{k}] = {b[k]}."
            )
    betas = jnp.asarray(betas)
    if not jnp.issubdtype(betas.dtype, jnp.floating):
        betas = betas.astype(jnp.result_type(float))
    return betas


@functools.partial(
    jax.jit, static_argnames=("apply", "num_mcmc_steps", "reverse", "tune")
)
def _pass(
    apply,
    params,
    base_dist,
    rng_key,
    init,
    pilot,
    betas,
    step_size,
    target_accept_prob,
    *,
    num_mcmc_steps,
    reverse,
    tune,
):
    def log_target(x):
        return -apply(params, x[None])[0]

    log_base = base_dist.log_prob
    # a diagonal preconditioner: the base density's spread, from its draws
    var = jnp.var(pilot.reshape(pilot.shape[0], -1), axis=0)
    metric = metric_from_inverse_mass_matrix(jnp.maximum(var, 1e-12))
    if tune:
        key_tune, rng_key = jax.random.split(rng_key)
        steps, _ = core_ais.tune_step_sizes(
            key_tune,
            log_target,
            log_base,
            pilot,
            betas,
            step_size,
            num_mcmc_steps=num_mcmc_steps,
            metric=metric,
            target_accept_prob=target_accept_prob,
        )
    else:
        steps = jnp.broadcast_to(step_size, betas.shape)
    positions, info = core_ais.ais(
        rng_key,
        log_target,
        log_base,
        init,
        betas,
        steps,
        num_mcmc_steps=num_mcmc_steps,
        metric=metric,
        reverse=reverse,
    )
    return positions, info, steps


def ais_log_normalizer(
    rng_key,
    energy_fn: Callable,
    base_dist,
    *,
    num_particles: int = 256,
    num_levels: int = 1000,
    betas=None,
    num_mcmc_steps: int = 1,
    step_size=None,
    target_accept_prob: float = 0.65,
    num_tuning_particles: int = 64,
    init=None,
    reverse: bool = False,
) -> AISResult:
    """``log Z`` of ``exp(-E(x))`` by annealed importance sampling.

    The particles start from ``base_dist`` (normalised, e.g. a Gaussian fitted
    to the data) and pass through ``pi_b ∝ base^(1 - b) exp(-b E)`` for ``b``
    from 0 to 1, each level moved by ``num_mcmc_steps`` MALA steps (the
    package's Langevin step with its Metropolis correction, preconditioned by
    the base's per-coordinate variance). ``mean(w)`` is an unbiased estimate of
    ``Z``; its log, returned, is biased low: a stochastic lower bound on ``log
    Z``, tight when the weights' ``ess`` is near ``num_particles``.

    The MALA steps are tuned first, by a pilot pass of
    ``num_tuning_particles`` whose step follows their acceptance rate from
    level to level; the estimate then uses these steps fixed, with fresh
    particles, so that it stays unbiased.

    With ``reverse=True`` and ``init`` draws of the model itself, the pass runs
    from ``b = 1`` to 0 and the estimate, ``-log mean(w)``, is a stochastic
    upper bound on ``log Z`` (exactly so when ``init`` is exact): the two
    directions sandwich ``log Z`` (bidirectional Monte Carlo).

    Args:
        rng_key: a JAX PRNG key.
        energy_fn: the energy ``E``: maps a batch of shape ``(n, *event_shape)``
            to ``(n,)``. A Flax NNX module is passed to the compiled pass as
            state, so training it further needs no recompilation.
        base_dist: a normalised numpyro distribution with the data's
            ``event_shape`` and no batch shape.
        num_particles: ``N >= 2`` forward particles (reverse: the number of
            ``init`` draws).
        num_levels: ``T``, levels of the default sigmoid schedule.
        betas: the schedule itself, ``(T + 1,)``, from 0 to exactly 1,
            increasing; overrides ``num_levels``.
        num_mcmc_steps: MALA steps per level.
        step_size: a fixed MALA step for every level instead of the tuned ones.
        target_accept_prob: the acceptance rate the tuning aims for.
        num_tuning_particles: particles of the pilot pass.
        init: ``(N, *event_shape)`` draws of the model, for ``reverse=True``.
        reverse: run from the model to the base (an upper bound).

    Returns:
        :class:`AISResult`.

    Raises:
        ValueError: a schedule that does not start at 0 and end at 1 or does
            not increase, energies of the wrong shape, a base density with a
            batch shape, a bad setting.
        FloatingPointError: a weight went NaN (naming the level), or every
            weight is zero. Under :func:`jax.jit` the estimate is NaN instead.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> energy = lambda x: 0.5 * jnp.sum((x - 3.0) ** 2, -1) / 0.5**2
        >>> base = dist.Normal(jnp.zeros(4), 2.0).to_event(1)
        >>> r = ne.ais_log_normalizer(jax.random.key(0), energy, base, num_levels=200)
        >>> exact = 4 * jnp.log(jnp.sqrt(2 * jnp.pi) * 0.5)
        >>> bool(abs(r.log_normalizer - exact) < 4 * r.stderr + 0.02)
        True

    References:
        Neal (2001), *Annealed importance sampling*, Statistics and Computing
        11. Grosse, Ghahramani & Adams (2015), *Sandwiching the marginal
        likelihood using bidirectional Monte Carlo*, arXiv:1511.02543.
    """
    event_shape = _check_base(base_dist)
    dtype = jnp.result_type(float)
    _check_energy(energy_fn, event_shape, dtype)
    betas = _check_betas(betas, num_levels)
    num_mcmc_steps = validation.positive_integer("num_mcmc_steps", num_mcmc_steps)
    target_accept_prob = validation.probability(
        "target_accept_prob", target_accept_prob
    )
    num_tuning_particles = validation.positive_integer(
        "num_tuning_particles", num_tuning_particles
    )
    if num_tuning_particles < 2:
        raise ValueError(
            f"`num_tuning_particles` must be >= 2, got {num_tuning_particles}."
        )
    reverse = bool(reverse)
    key_base, key_pilot, key_pass = jax.random.split(rng_key, 3)
    pilot = base_dist.sample(key_pilot, (num_tuning_particles,))
    if reverse:
        if init is None:
            raise ValueError(
                "a reverse pass starts from draws of the model: pass `init`, of "
                f"shape (N, *{event_shape})."
            )
        init = jnp.asarray(init)
        if not jnp.issubdtype(init.dtype, jnp.floating):
            init = init.astype(dtype)
        if init.ndim != 1 + len(event_shape) or tuple(init.shape[1:]) != event_shape:
            raise ValueError(
                f"`init` must have shape (N, *{event_shape}), got {init.shape}."
            )
        if init.shape[0] < 2:
            raise ValueError(f"`init` needs at least 2 draws, got {init.shape[0]}.")
        if validation.is_concrete(init) and not bool(jnp.all(jnp.isfinite(init))):
            raise ValueError("`init` contains non-finite values.")
    else:
        if init is not None:
            raise ValueError(
                "`init` is for reverse=True only: a forward pass starts from "
                "`base_dist`, which is what makes its weights unbiased."
            )
        num_particles = validation.positive_integer("num_particles", num_particles)
        if num_particles < 2:
            raise ValueError(f"`num_particles` must be >= 2, got {num_particles}.")
        init = base_dist.sample(key_base, (num_particles,))
    tune = step_size is None
    # the moves are preconditioned by the base's spread, so the pilot's first
    # step is in whitened units
    step_size = 0.1 if tune else validation.positive("step_size", step_size)
    apply, params = as_pure(energy_fn)
    positions, info, steps = _pass(
        apply,
        params,
        base_dist,
        key_pass,
        init,
        pilot,
        betas,
        jnp.asarray(step_size, dtype),
        jnp.asarray(target_accept_prob, dtype),
        num_mcmc_steps=num_mcmc_steps,
        reverse=reverse,
        tune=tune,
    )
    log_w = info.log_weights
    n = log_w.shape[0]
    log_mean = jax.scipy.special.logsumexp(log_w) - math.log(n)
    w = jnp.exp(log_w - log_mean)
    stderr = jnp.std(w) / math.sqrt(n)
    ess = jnp.sum(w) ** 2 / jnp.sum(w**2)
    estimate = -log_mean if reverse else log_mean
    # a traced schedule is checked here: a bad one gives NaN, not a number
    valid = (betas[0] == 0) & (betas[-1] == 1) & jnp.all(jnp.diff(betas) > 0)
    failed = (info.first_bad >= 0) | ~jnp.isfinite(log_mean) | ~valid
    if validation.is_concrete(log_w):
        if int(info.first_bad) >= 0:
            k = int(info.first_bad)
            level = betas.shape[0] - 1 - k if reverse else k
            raise FloatingPointError(
                f"ais_log_normalizer: a weight became NaN at level {level} "
                f"(beta = {float(betas[level]):.4g}): the energy or the base density "
                "is NaN at a particle."
            )
        if not bool(jnp.isfinite(log_mean)):
            raise FloatingPointError(
                f"ais_log_normalizer: the estimate is {float(log_mean)}: every weight "
                "is zero or one is infinite (the energy is infinite where the base "
                "puts its mass, or -infinite somewhere)."
            )
        if float(ess) < 0.1 * n:
            warnings.warn(
                f"ais_log_normalizer: the weights' ESS is {float(ess):.1f} of {n} "
                "particles: the estimate and its standard error are unreliable. "
                "Use more levels (num_levels) or MALA steps per level, or a base "
                "density closer to the model.",
                stacklevel=2,
            )
    estimate = jnp.where(failed, jnp.nan, estimate)
    return AISResult(
        estimate, stderr, log_w, ess, info.accept_prob, steps, betas, positions
    )


def ais_log_likelihood(
    rng_key, energy_fn: Callable, data, base_dist, **kwargs
) -> HeldOutLikelihood:
    """Held-out log-likelihood of ``data`` under ``exp(-E(x)) / Z``, with
    ``log Z`` by :func:`ais_log_normalizer` (keyword arguments go to it).

    Each point gets ``-E(x_i) - log Z``; the mean is in nats per point (divide
    by the number of dimensions and ``log 2`` for bits per dimension, e.g.
    with :func:`numpyro_ebm.core.ode.bits_per_dim`). AIS's ``log Z`` is biased
    low, so the likelihood is biased high by as much (negligible when the
    weights' ESS is large).

    Args:
        rng_key: a JAX PRNG key.
        energy_fn: the energy, as for :func:`ais_log_normalizer`.
        data: ``(n, *event_shape)`` held-out points.
        base_dist: the normalised base density.

    Returns:
        :class:`HeldOutLikelihood`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> energy = lambda x: 0.5 * jnp.sum(x**2, -1)  # N(0, I) unnormalised
        >>> data = jax.random.normal(jax.random.key(1), (100, 2))
        >>> base = dist.Normal(jnp.zeros(2), 2.0).to_event(1)
        >>> r = ne.ais_log_likelihood(jax.random.key(0), energy, data, base,
        ...                           num_levels=100)
        >>> exact = dist.Normal(0.0, 1.0).log_prob(data).sum(-1).mean()
        >>> bool(abs(r.log_likelihood - exact) < 4 * r.normalizer.stderr + 0.02)
        True
    """
    event_shape = _check_base(base_dist)
    data = jnp.asarray(data)
    if not jnp.issubdtype(data.dtype, jnp.floating):
        data = data.astype(jnp.result_type(float))
    if data.ndim != 1 + len(event_shape) or tuple(data.shape[1:]) != event_shape:
        raise ValueError(
            f"`data` must have shape (n, *{event_shape}), got {data.shape}."
        )
    if data.shape[0] < 1:
        raise ValueError("`data` is empty.")
    if validation.is_concrete(data) and not bool(jnp.all(jnp.isfinite(data))):
        raise ValueError("`data` contains non-finite values.")
    normalizer = ais_log_normalizer(rng_key, energy_fn, base_dist, **kwargs)
    per_point = -jnp.asarray(energy_fn(data)) - normalizer.log_normalizer
    n = per_point.shape[0]
    spread = jnp.std(per_point) / math.sqrt(n) if n > 1 else jnp.zeros(())
    stderr = jnp.sqrt(spread**2 + normalizer.stderr**2)
    return HeldOutLikelihood(jnp.mean(per_point), stderr, per_point, normalizer)
