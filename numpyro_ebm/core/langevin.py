"""The Langevin step: ULA, MALA and tempered Langevin in one transition.

Every Langevin move in numpyro_ebm goes through :func:`langevin_proposal`
(the preconditioned Euler–Maruyama move) and :func:`langevin_step` (the move
plus, when ``adjusted``, the Metropolis–Hastings correction). The NumPyro
kernels, the EBM samplers and the latent-variable estimators all call these.

Step-size convention: for a potential ``U`` (``pi ∝ exp(-U)``), inverse
temperature ``beta`` and inverse mass matrix ``A``, one step is::

    x' = x - step_size * A grad U(x) + sqrt(2 * step_size / beta) * A^{1/2} z

``step_size`` is BlackJAX MALA's ``tau``; TFP's ``h = 2 * step_size``; NumPyro
``HMC(num_steps=1)`` with step ``eps`` matches ``step_size = eps**2 / 2``.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
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

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "init",
    "langevin_proposal",
    "langevin_step",
]


class LangevinState(NamedTuple):
    """Position with its cached potential and gradient.

    Attributes:
        position: a pytree of arrays.
        potential_energy: ``U(position)``.
        potential_energy_grad: ``grad U(position)``, same structure as position.
    """

    position: object
    potential_energy: Array
    potential_energy_grad: object


#: diagnostics of one Langevin step: the shared :class:`~numpyro_ebm.core.proposals.MHInfo`
LangevinInfo = MHInfo


def init(position, potential_fn: Callable) -> LangevinState:
    """Evaluate the potential and its gradient at ``position``.

    Example:
        >>> import jax.numpy as jnp
        >>> init(jnp.ones(2), lambda x: 0.5 * jnp.sum(x**2)).potential_energy.item()
        1.0
    """
    potential_energy, grad = jax.value_and_grad(potential_fn)(position)
    return LangevinState(position, potential_energy, grad)


def langevin_proposal(
    rng_key,
    position: Array,
    potential_grad: Array,
    step_size,
    metric: metrics.Metric | None = None,
    inverse_temperature=1.0,
):
    """The preconditioned Euler–Maruyama move on flat vectors.

    Returns ``(new_position, scaled_grad)`` where ``scaled_grad = A grad U(x)``
    is reused by the MALA correction.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.zeros(3)
        >>> new, _ = langevin_proposal(jax.random.key(0), x, x, 0.1)
        >>> new.shape
        (3,)
    """
    scaled_grad = metrics.scale(metric, potential_grad)
    z = random.normal(rng_key, jnp.shape(position), jnp.result_type(position))
    noise_scale = jnp.sqrt(2.0 * step_size / inverse_temperature)
    new_position = (
        position - step_size * scaled_grad + noise_scale * metrics.noise(metric, z)
    )
    return new_position, scaled_grad


def langevin_step(
    rng_key,
    state: LangevinState,
    potential_fn: Callable,
    step_size,
    metric: metrics.Metric | None = None,
    inverse_temperature=1.0,
    adjusted: bool = True,
) -> tuple[LangevinState, LangevinInfo]:
    """One ULA (``adjusted=False``) or MALA (``adjusted=True``) transition.

    Targets ``exp(-inverse_temperature * U)``. With ``adjusted=True`` the move
    is a Metropolis–Hastings proposal with density
    ``N(x - step_size A grad U(x), 2 step_size / beta A)``, so the chain is
    exact. A proposal whose potential or gradient is not finite is always
    rejected and reported as ``diverging``.

    Args:
        rng_key: a JAX PRNG key.
        state: the current :class:`LangevinState`.
        potential_fn: ``U``, a function of a position pytree returning a scalar.
        step_size: positive scalar (may be traced).
        metric: a :class:`~numpyro_ebm.core.metrics.Metric` or ``None`` (identity).
        inverse_temperature: ``beta``; 1 for the target itself.
        adjusted: add the MALA accept/reject correction (a Python or traced
            boolean).

    Returns:
        ``(new_state, info)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> U = lambda x: 0.5 * jnp.sum(x**2)
        >>> state = init(jnp.zeros(2), U)
        >>> state, info = langevin_step(jax.random.key(0), state, U, 0.5)
        >>> state.position.shape
        (2,)

    References:
        Roberts & Tweedie (1996), Exponential convergence of Langevin
        distributions and their discrete approximations. Bernoulli 2(4).
    """
    key_move, key_accept = random.split(rng_key)
    x, unravel = ravel_pytree(state.position)
    g, _ = ravel_pytree(state.potential_energy_grad)
    x_new, scaled_g = langevin_proposal(
        key_move, x, g, step_size, metric, inverse_temperature
    )
    position_new = unravel(x_new)
    pe_new, grad_new = jax.value_and_grad(potential_fn)(position_new)
    finite = is_finite_tree(pe_new, grad_new)
    proposal = LangevinState(position_new, pe_new, grad_new)
    g_new, _ = ravel_pytree(grad_new)
    scaled_g_new = metrics.scale(metric, g_new)
    delta = x_new - x
    # log q(x | x') - log q(x' | x), simplified so that M itself is never needed
    log_proposal_ratio = 0.5 * jnp.dot(delta, g + g_new) - 0.25 * step_size * (
        jnp.dot(g_new, scaled_g_new) - jnp.dot(g, scaled_g)
    )
    log_accept_ratio = inverse_temperature * (
        state.potential_energy - pe_new + log_proposal_ratio
    )
    decision = metropolis_hastings(key_accept, log_accept_ratio, finite)
    accept_prob = decision.accept_prob
    # an unadjusted step moves whenever the proposal is finite; its MALA
    # acceptance probability is still reported, as a gauge of the
    # discretisation error and a signal for warm-up adaptation
    accepted = jnp.where(adjusted, decision.is_accepted, finite)
    new_state = select(accepted, proposal, state)
    return new_state, MHInfo(accept_prob, accepted, ~finite)
