"""The chain runner: many Langevin chains, many steps, one compiled loop.

Every batch of Langevin chains in numpyro_ebm (EBM negatives, samples of
energy distributions, latent moves of the maximum-likelihood estimators) runs
through :func:`run_chains`: ``jax.vmap`` over chains, ``jax.lax.scan`` over
steps, the shared :func:`~numpyro_ebm.core.langevin.langevin_step` inside.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, random

from numpyro_ebm.core.langevin import LangevinState, langevin_step
from numpyro_ebm.core.langevin import init as langevin_init
from numpyro_ebm.core.metrics import Metric

__all__ = ["ChainsInfo", "run_chains"]


class ChainsInfo(NamedTuple):
    """Diagnostics of :func:`run_chains`, per chain.

    Attributes:
        accept_prob: mean MALA acceptance probability over the steps (for
            unadjusted chains, a gauge of the discretisation error).
        num_diverging: proposals rejected for a non-finite potential or gradient.
    """

    accept_prob: Array
    num_diverging: Array


def run_chains(
    rng_key,
    potential_fn: Callable,
    init,
    num_steps: int,
    step_size,
    *,
    adjusted: bool = True,
    metric: Metric | None = None,
    inverse_temperature=1.0,
    chain_axis: bool = True,
) -> tuple[LangevinState, ChainsInfo]:
    """Run ``num_steps`` Langevin steps on each chain of ``init``.

    Args:
        rng_key: a JAX PRNG key.
        potential_fn: ``U`` of one chain's position (a scalar).
        init: the starting positions, a pytree whose leaves have a leading
            chain axis (or one chain's position with ``chain_axis=False``), or a
            :class:`~numpyro_ebm.core.langevin.LangevinState` to continue from.
        num_steps: steps per chain (static).
        step_size: the step, shared by every chain (may be traced).
        adjusted: MALA (``True``) or ULA steps.
        metric: an inverse mass matrix shared by the chains.
        inverse_temperature: ``beta`` of the target ``exp(-beta U)``.
        chain_axis: whether ``init`` has a leading chain axis.

    Returns:
        ``(states, info)``: the final :class:`LangevinState` of every chain and
        their :class:`ChainsInfo`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> states, info = run_chains(jax.random.key(0), lambda x: 0.5 * x @ x,
        ...                           jnp.zeros((4, 2)), 10, 0.5)
        >>> states.position.shape, info.accept_prob.shape
        ((4, 2), (4,))
    """

    def chain(key, start):
        state = (
            start
            if isinstance(start, LangevinState)
            else langevin_init(start, potential_fn)
        )

        def body(state, key):
            state, info = langevin_step(
                key,
                state,
                potential_fn,
                step_size,
                metric,
                inverse_temperature=inverse_temperature,
                adjusted=adjusted,
            )
            return state, (info.accept_prob, info.diverging)

        state, (accept, diverging) = jax.lax.scan(
            body, state, random.split(key, num_steps)
        )
        return state, ChainsInfo(accept.mean(), jnp.sum(diverging))

    if not chain_axis:
        return chain(rng_key, init)
    num_chains = jax.tree.leaves(init)[0].shape[0]
    return jax.vmap(chain)(random.split(rng_key, num_chains), init)
