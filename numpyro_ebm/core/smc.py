"""Sequential Monte Carlo along a path of Gaussian transitions, plain or
conditional (the particle Gibbs update).

The Feynman–Kac model: a start ``x_0 ~ mu``, Gaussian transitions
``f_k(x_{k+1} | x_k) = N(m_k(x_k), v_k I)`` (``k = 0..L-2``) and positive
potentials ``G_k`` (the *twist*) with the last one, ``G_{L-1}``, the function
whose product with the path's law is the target. Particles move by the
proposal ``q_k = N(m'_k(x_k), v_k I)`` (the same variance, a shifted mean:
e.g. towards a higher potential) and are weighted by

    ``w_{k+1} = f_k(x_{k+1} | x_k) G_{k+1}(x_{k+1}) / (q_k(x_{k+1} | x_k) G_k(x_k))``,

so that whatever the intermediate potentials and the shifts, the weighted
paths at the last level target ``mu(x_0) prod f_k G_{L-1}(x_{L-1})``
normalised, and the product of mean weights estimates its normaliser without
bias (Del Moral 2004). The particles are resampled only when the weights'
effective sample size falls below ``ess_threshold`` times their number.

With a ``reference`` path, particle 0 is that path at every level and keeps
its own ancestor; the others are resampled from all (conditional multinomial
resampling). Drawing one path from the final weights is then an MCMC
transition that leaves the normalised target invariant for any number of
particles >= 2 (Andrieu, Doucet & Holenstein 2010).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, random
from jax.scipy.special import logsumexp

__all__ = ["SMCInfo", "ess_fraction", "resample", "gaussian_path_smc", "trace_path"]


class SMCInfo(NamedTuple):
    """Diagnostics of one sweep.

    Attributes:
        ess: ``(L,)`` the weights' effective sample size over the number of
            particles after the reweighting at each level (before resampling).
        resampled: ``(L,)`` whether the particles were resampled after that
            level (always ``False`` at the last).
        log_evidence: the log of the product of the mean weights, an unbiased
            estimate of the normaliser in the plain (unconditional) case.
        first_bad: the first level at which a particle or a weight went
            non-finite (NaN, or every weight zero), or ``-1``.
    """

    ess: Array
    resampled: Array
    log_evidence: Array
    first_bad: Array


def ess_fraction(log_weights):
    """``1 / (N sum W_i^2)`` for normalised weights ``W``: 1 when they are
    equal, ``1/N`` when one particle holds them all.

    Example:
        >>> import jax.numpy as jnp
        >>> float(ess_fraction(jnp.zeros(4)))
        1.0
    """
    w = jax.nn.softmax(log_weights)
    return 1.0 / (log_weights.shape[0] * jnp.sum(w**2))


def resample(rng_key, log_weights, *, conditional=False):
    """Ancestor indices: systematic resampling, or with ``conditional=True``
    multinomial resampling that keeps particle 0's ancestor 0 (the
    reference path of conditional SMC).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> idx = resample(jax.random.key(0), jnp.log(jnp.array([0.0, 0.0, 1.0])))
        >>> idx.tolist()
        [2, 2, 2]
    """
    n = log_weights.shape[0]
    if conditional:
        idx = random.categorical(rng_key, log_weights, shape=(n,))
        return idx.at[0].set(0)
    u = (random.uniform(rng_key) + jnp.arange(n)) / n
    cdf = jnp.cumsum(jax.nn.softmax(log_weights))
    return jnp.clip(jnp.searchsorted(cdf, u), 0, n - 1)


def gaussian_path_smc(
    rng_key,
    init: Array,
    evaluate: Callable,
    transition: Callable,
    num_levels: int,
    *,
    reference: Array | None = None,
    use_reference=True,
    ess_threshold=0.5,
    keep_paths: bool = False,
):
    """One SMC sweep over ``num_levels`` levels (a pure, jittable function).

    Args:
        rng_key: a JAX PRNG key.
        init: ``(N, D)`` draws of the start law ``mu``.
        evaluate: ``evaluate(k, x) -> (log_potential, aux)`` for the ``(N, D)``
            particles at level ``k`` (traced): ``log G_k`` per particle and
            whatever ``transition`` needs.
        transition: ``transition(k, x, aux) -> (mean, proposal_mean,
            variance)`` of the move from level ``k`` to ``k + 1``:
            ``f_k``'s mean and ``q_k``'s, ``(N, D)`` each, and their common
            scalar variance.
        num_levels: ``L`` (static).
        reference: ``(L, D)`` the reference path of conditional SMC, or
            ``None``.
        use_reference: a boolean, traced or not: ``False`` runs the sweep
            without its ``reference`` (a plain sweep in the same compiled
            program, e.g. the first sweep of a particle Gibbs chain, whose
            starting value is no draw of the path's law).
        ess_threshold: resample when the ESS falls below this fraction of
            ``N`` (1: at every level; 0: never).
        keep_paths: also return the particles at every level and their
            ancestors, for :func:`trace_path`.

    Returns:
        ``(x, log_weights, info)``: the last level's particles and normalised
        log weights, and :class:`SMCInfo`; with ``keep_paths`` also
        ``(levels, ancestors)``, shapes ``(L, N, D)`` and ``(L, N)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> # a Gaussian random walk x_k = x_{k-1} + N(0, 1) from N(0, 1),
        >>> # weighted at the end by N(y=1; x_4, 1)
        >>> def evaluate(k, x):
        ...     last = -0.5 * (x[:, 0] - 1.0) ** 2 - 0.5 * jnp.log(2 * jnp.pi)
        ...     return jnp.where(k == 4, last, 0.0), None
        >>> transition = lambda k, x, aux: (x, x, 1.0)
        >>> init = jax.random.normal(jax.random.key(0), (4000, 1))
        >>> _, _, info = gaussian_path_smc(jax.random.key(1), init, evaluate,
        ...                                transition, 5)
        >>> # p(y) = N(1; 0, 6)
        >>> exact = -0.5 * jnp.log(2 * jnp.pi * 6.0) - 1 / 12
        >>> bool(abs(info.log_evidence - exact) < 0.05)
        True

    References:
        Del Moral (2004), *Feynman–Kac formulae*, Springer. Andrieu, Doucet
        & Holenstein (2010), *Particle Markov chain Monte Carlo methods*,
        JRSS B 72(3). Wu, Trippe, Naesseth, Blei & Cunningham (2023),
        *Practical and asymptotically exact conditional sampling in
        diffusion models*, NeurIPS.
    """
    n = init.shape[0]
    conditional = reference is not None
    log_n = jnp.log(n)
    use_reference = jnp.asarray(use_reference, bool)
    if conditional:
        init = jnp.where(use_reference, init.at[0].set(reference[0]), init)
    logpot, aux = evaluate(0, init)
    log_w = logpot - log_n
    log_z = logsumexp(log_w)
    log_w = log_w - log_z
    ok = jnp.all(jnp.isfinite(init)) & ~jnp.any(jnp.isnan(logpot)) & jnp.isfinite(log_z)
    bad = jnp.where(ok, -1, 0)

    def level(carry, inputs):
        x, aux, logpot, log_w, log_z, bad = carry
        key, k = inputs
        key_resample, key_move = random.split(key)
        ess = ess_fraction(log_w)
        again = ess < ess_threshold
        picked = resample(key_resample, log_w)
        if conditional:
            picked = jnp.where(
                use_reference,
                resample(key_resample, log_w, conditional=True),
                picked,
            )
        idx = jnp.where(again, picked, jnp.arange(n))
        x, aux, logpot = jax.tree.map(lambda v: v[idx], (x, aux, logpot))
        log_w = jnp.where(again, -log_n, log_w)
        mean, proposal_mean, var = transition(k, x, aux)
        new = proposal_mean + jnp.sqrt(var) * random.normal(key_move, x.shape)
        if conditional:
            new = jnp.where(use_reference, new.at[0].set(reference[k + 1]), new)
        new_logpot, new_aux = evaluate(k + 1, new)
        # log f - log q: two Gaussians of one variance
        log_ratio = jnp.sum((new - proposal_mean) ** 2 - (new - mean) ** 2, axis=-1) / (
            2 * var
        )
        log_g = log_ratio + new_logpot - logpot
        # a particle whose potential is -inf carries no weight (it is never
        # resampled); NaN anywhere, or every weight zero, is a failure
        log_g = jnp.where(new_logpot == -jnp.inf, -jnp.inf, log_g)
        increment = logsumexp(log_w + log_g)
        ok = (
            jnp.all(jnp.isfinite(new))
            & ~jnp.any(jnp.isnan(log_g))
            & jnp.isfinite(increment)
        )
        bad = jnp.where((bad < 0) & ~ok, k + 1, bad)
        log_w = log_w + log_g - increment
        carry = (new, new_aux, new_logpot, log_w, log_z + increment, bad)
        return carry, (ess, again, (new, idx) if keep_paths else None)

    keys = random.split(rng_key, num_levels - 1)
    carry = (init, aux, logpot, log_w, log_z, bad)
    carry, (ess, again, kept) = jax.lax.scan(
        level, carry, (keys, jnp.arange(num_levels - 1))
    )
    x, _, _, log_w, log_z, bad = carry
    info = SMCInfo(
        jnp.append(ess, ess_fraction(log_w)),
        jnp.append(again, False),
        log_z,
        bad,
    )
    if not keep_paths:
        return x, log_w, info
    xs, ancestors = kept
    levels = jnp.concatenate([init[None], xs])
    ancestors = jnp.concatenate([jnp.arange(n)[None], ancestors])
    return x, log_w, info, (levels, ancestors)


def trace_path(index, levels, ancestors):
    """The path ``(L, D)`` that ends in particle ``index`` at the last level,
    followed back through ``ancestors`` (:func:`gaussian_path_smc` with
    ``keep_paths=True``)."""

    def back(j, inputs):
        x, parents = inputs
        return parents[j], x[j]

    _, path = jax.lax.scan(back, index, (levels, ancestors), reverse=True)
    return path
