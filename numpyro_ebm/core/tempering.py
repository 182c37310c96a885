"""Replica exchange between tempered levels, and the spacing of the ladder.

Level ``l`` of a ladder of inverse temperatures targets ``pi_l ∝ exp(-beta_l
D(x)) r(x)`` for some reference ``r`` (``r = 1`` for tempering a potential
``D = U``; a Gaussian ``q0`` and ``D = E - U0`` for the bridge of
:class:`~numpyro_ebm.TemperedPCD`). Swapping the states of levels ``i`` and
``j`` is then accepted with probability
``min(1, exp((beta_i - beta_j) (D(x_i) - D(x_j))))``: only ``D`` at the two
states is needed.

:func:`swap_neighbours` proposes swaps between neighbouring levels ``(l, l +
1)`` whose ``l`` has the parity given; alternating the parity every iteration
is the deterministic even-odd scheme, whose index process is non-reversible
and travels the ladder in ``O(L)`` iterations rather than the ``O(L^2)`` of
random pair choices (Syed, Bouchard-Côté, Deligiannidis & Doucet 2022).
:func:`equalise_ladder` moves the inner levels so that each neighbouring pair
has the same rejection rate, the optimal spacing of that scheme.

References:
    1. Swendsen & Wang (1986), *Replica Monte Carlo simulation of spin
       glasses*, PRL 57.
    2. Geyer (1991), *Markov chain Monte Carlo maximum likelihood*.
    3. Syed, Bouchard-Côté, Deligiannidis & Doucet (2022), *Non-reversible
       parallel tempering: a scalable highly parallel MCMC scheme*, JRSS B 84.
"""

import jax
import jax.numpy as jnp
from jax import random

from numpyro_ebm.core.proposals import MHInfo, metropolis_hastings

__all__ = ["swap_neighbours", "swap_rounds", "equalise_ladder"]


def swap_neighbours(rng_key, betas, tempered, parity, states):
    """Propose swaps between neighbouring levels of the given parity.

    Args:
        rng_key: a JAX key.
        betas: inverse temperatures, shape ``(L,)``.
        tempered: ``D`` at each level's state, shape ``(L, *batch)`` (a batch
            of independent ladders after the level axis).
        parity: 0 or 1 (may be traced): the pairs ``(l, l + 1)`` with
            ``l % 2 == parity`` are proposed.
        states: a pytree of arrays with leading axes ``(L, *batch)``, swapped
            along the level axis where a swap is accepted.

    Returns:
        ``(states, info)``: the states after the swaps, and an
        :class:`~numpyro_ebm.core.proposals.MHInfo` of shape ``(L - 1,
        *batch)`` for *every* pair (``is_accepted`` only where proposed), so
        that swap rates can be estimated for all pairs each iteration. A
        non-finite ``D`` on either side rejects the pair.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0], [1.0], [2.0]])
        >>> betas = jnp.array([1.0, 0.5, 0.25])
        >>> same = jnp.zeros(3)  # equal D: every swap is accepted
        >>> swapped, info = swap_neighbours(jax.random.key(0), betas, same, 0, x)
        >>> swapped[:, 0].tolist(), info.accept_prob.tolist()
        ([1.0, 0.0, 2.0], [1.0, 1.0])
    """
    num_levels = betas.shape[0]
    batch = tempered.shape[1:]
    gaps = (betas[:-1] - betas[1:]).reshape((-1,) + (1,) * len(batch))
    log_ratio = gaps * (tempered[:-1] - tempered[1:])
    finite = jnp.isfinite(tempered[:-1]) & jnp.isfinite(tempered[1:])
    keys = random.split(rng_key, log_ratio.shape)
    decide = metropolis_hastings
    for _ in range(log_ratio.ndim):
        decide = jax.vmap(decide)
    decision = decide(keys, log_ratio, finite)
    pairs = jnp.arange(num_levels - 1).reshape(gaps.shape)
    swap = (pairs % 2 == parity) & decision.is_accepted
    none = jnp.zeros((1,) + batch, bool)
    take_up = jnp.concatenate([swap, none], 0)  # level l takes level l + 1's
    take_down = jnp.concatenate([none, swap], 0)  # level l + 1 takes level l's

    def exchange(x):
        expand = lambda m: m.reshape(m.shape + (1,) * (x.ndim - m.ndim))  # noqa: E731
        up = jnp.concatenate([x[1:], x[-1:]], 0)
        down = jnp.concatenate([x[:1], x[:-1]], 0)
        return jnp.where(expand(take_up), up, jnp.where(expand(take_down), down, x))

    info = MHInfo(decision.accept_prob, swap, decision.diverging)
    return jax.tree.map(exchange, states), info


def swap_rounds(rng_key, betas, tempered, parity, states, num_rounds):
    """``num_rounds`` rounds of :func:`swap_neighbours`, parities alternating.

    Swaps need only ``D`` at the current states, so several rounds between
    two moves of the levels cost no gradient; states then travel up to
    ``num_rounds`` levels per move, towards the infinite-swapping limit
    (Dupuis, Liu, Plattner & Doll 2012). ``tempered`` travels with its
    states.

    Returns:
        ``(states, tempered, parity, accept_prob)``: the states and their
        ``D`` after the rounds, the parity of the next round, and every
        pair's swap acceptance probability averaged over the rounds, shape
        ``(L - 1, *batch)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0], [1.0], [2.0]])
        >>> betas = jnp.array([1.0, 0.5, 0.25])
        >>> out = swap_rounds(jax.random.key(0), betas, jnp.zeros(3), 0, x, 2)
        >>> out[0][:, 0].tolist(), int(out[2])  # 0 climbs two levels
        ([1.0, 2.0, 0.0], 0)
    """

    def one_round(carry, key):
        states, tempered, parity = carry
        (states, tempered), info = swap_neighbours(
            key, betas, tempered, parity, (states, tempered)
        )
        return (states, tempered, 1 - parity), info.accept_prob

    parity = jnp.asarray(parity, jnp.int32)
    (states, tempered, parity), accept = jax.lax.scan(
        one_round, (states, tempered, parity), random.split(rng_key, num_rounds)
    )
    return states, tempered, parity, jnp.mean(accept, axis=0)


def equalise_ladder(betas, rejection):
    """Inverse temperatures that split the cumulative rejection evenly.

    ``betas`` decrease along the ladder (``betas[0]`` the target's, usually
    1); ``rejection[l]`` estimates the swap rejection rate of the pair ``(l, l
    + 1)``. The cumulative rejection ``Lambda(beta)`` is taken as piecewise
    linear between the current levels, and the new inner levels split it into
    equal parts; the two end levels are kept (Syed et al. 2022).

    Example:
        >>> import jax.numpy as jnp
        >>> betas = jnp.array([1.0, 0.5, 0.1])
        >>> new = equalise_ladder(betas, jnp.array([0.1, 0.5]))
        >>> [round(b, 3) for b in new.tolist()]
        [1.0, 0.34, 0.1]
    """
    increasing = betas[::-1]
    cumulative = jnp.concatenate(
        [jnp.zeros(1, betas.dtype), jnp.cumsum(jnp.maximum(rejection[::-1], 1e-3))]
    )
    targets = jnp.linspace(0.0, cumulative[-1], betas.shape[0])
    new = jnp.interp(targets, cumulative, increasing)[::-1]
    return new.at[0].set(betas[0]).at[-1].set(betas[-1])
