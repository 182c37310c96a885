"""Random-walk and general Metropolis–Hastings."""

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array, random
from jax.flatten_util import ravel_pytree

from numpyro_ebm.core import metrics
from numpyro_ebm.core.proposals import (
    MHInfo,
    is_finite_tree,
    metropolis_hastings,
    select,
)

__all__ = ["RWMHState", "RWMHInfo", "init", "rwmh_step"]


class RWMHState(NamedTuple):
    """Position and its potential energy."""

    position: object
    potential_energy: Array


#: diagnostics of one random-walk step: the shared :class:`~numpyro_ebm.core.proposals.MHInfo`
RWMHInfo = MHInfo


def init(position, potential_fn: Callable) -> RWMHState:
    """Evaluate the potential at ``position``.

    Example:
        >>> import jax.numpy as jnp
        >>> init(jnp.ones(2), lambda x: 0.5 * jnp.sum(x**2)).potential_energy.item()
        1.0
    """
    return RWMHState(position, potential_fn(position))


def rwmh_step(
    rng_key,
    state: RWMHState,
    potential_fn: Callable,
    step_size=1.0,
    metric: metrics.Metric | None = None,
    proposal: Callable | None = None,
) -> tuple[RWMHState, RWMHInfo]:
    """One Metropolis–Hastings transition.

    Without ``proposal`` the move is the random walk
    ``x' = x + sqrt(step_size) A^{1/2} z`` (proposal covariance
    ``step_size * M^-1``). A user ``proposal(rng_key, position)`` returns
    ``(new_position, log_proposal_ratio)`` with
    ``log_proposal_ratio = log q(x | x') - log q(x' | x)`` (0 when symmetric),
    which makes this general Metropolis–Hastings.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> U = lambda x: 0.5 * jnp.sum(x**2)
        >>> state = init(jnp.zeros(2), U)
        >>> state, info = rwmh_step(jax.random.key(0), state, U, 0.5)
        >>> info.accept_prob.shape
        ()

    References:
        Metropolis et al. (1953); Hastings (1970), Monte Carlo sampling methods
        using Markov chains and their applications. Biometrika 57(1).
    """
    key_move, key_accept = random.split(rng_key)
    if proposal is None:
        x, unravel = ravel_pytree(state.position)
        z = random.normal(key_move, jnp.shape(x), jnp.result_type(x))
        position_new = unravel(x + jnp.sqrt(step_size) * metrics.noise(metric, z))
        log_proposal_ratio = 0.0
    else:
        position_new, log_proposal_ratio = proposal(key_move, state.position)
    pe_new = potential_fn(position_new)
    finite = is_finite_tree(pe_new, position_new, log_proposal_ratio)
    decision = metropolis_hastings(
        key_accept, state.potential_energy - pe_new + log_proposal_ratio, finite
    )
    new_state = select(decision.is_accepted, RWMHState(position_new, pe_new), state)
    return new_state, decision
