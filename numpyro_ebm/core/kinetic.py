"""Kinetic (underdamped) Langevin dynamics: the OBABO step and trajectories.

The diffusion on position ``x`` and momentum ``p``::

    dx = A p dt,    dp = -grad U(x) dt - gamma p dt + sqrt(2 gamma) M^{1/2} dW

(``A = M^-1``) leaves ``exp(-U(x) - p^T A p / 2)`` invariant and mixes like
HMC: its discretisations need ``O(d^{1/4})`` steps where overdamped Langevin
(MALA) needs ``O(d^{1/3})``. Everything here works in *whitened* momentum
``r = L p`` (``A = L^T L``, the :class:`~numpyro_ebm.core.metrics.Metric`
factor), ``r ~ N(0, I)`` at equilibrium, so that the kinetic energy is
``|r|^2 / 2`` and no mass matrix needs inverting::

    O:  r <- eta r + sqrt(1 - eta^2) xi,       eta = exp(-gamma h / 2)
    B:  r <- r - (h / 2) L grad U(x)
    A:  x <- x + h L^T r

One :func:`obabo_step` is ``O B A B O`` with one gradient (the last ``B``'s is
cached for the next step). ``B A B`` is the leapfrog map, which preserves
volume and is reversible; the ``O`` half-steps preserve ``N(0, I)``. So a
trajectory of OBABO steps can be Metropolis-adjusted on the sum of the
leapfrog steps' energy errors (Metropolis-adjusted Langevin trajectories,
Riou-Durand & Vogrinc 2022), which :func:`kinetic_trajectory` returns.

**Bias of the unadjusted scheme on a Gaussian** ``N(0, s^2)`` (identity
metric): OBABO's stationary law has ``x ~ N(0, s^2 / (1 - h^2 / (4 s^2)))``
and ``r ~ N(0, 1)`` independent, whatever ``gamma``: the leapfrog map
preserves ``r^2 + (1 - h^2 / (4 s^2)) x^2 / s^2`` exactly and the ``O``
steps preserve ``N(0, 1)``. Stable for ``h < 2 s``.

References:
    1. Horowitz (1991), *A generalized guided Monte Carlo algorithm*, Phys.
       Lett. B 268 (persistent momentum with partial refreshment).
    2. Bussi & Parrinello (2007), *Accurate sampling using Langevin
       dynamics*, Phys. Rev. E 75 (the OBABO splitting).
    3. Leimkuhler & Matthews (2013), *Rational construction of stochastic
       numerical methods for molecular sampling*, AMRX (splittings and their
       bias on harmonic potentials).
    4. Riou-Durand & Vogrinc (2022), *Metropolis adjusted Langevin
       trajectories: a robust alternative to Hamiltonian Monte Carlo*,
       arXiv:2202.13230.
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
    "KineticState",
    "TrajectoryInfo",
    "init",
    "refresh",
    "leapfrog",
    "obabo_step",
    "kinetic_trajectory",
    "malt_step",
]


class KineticState(NamedTuple):
    """Position, whitened momentum, and the cached potential and gradient.

    Attributes:
        position: a pytree of arrays.
        momentum: whitened momentum ``r = L p``, a flat vector.
        potential_energy: ``U(position)``.
        potential_energy_grad: ``grad U(position)``, same structure as position.
    """

    position: object
    momentum: Array
    potential_energy: Array
    potential_energy_grad: object


class TrajectoryInfo(NamedTuple):
    """Diagnostics of a trajectory of OBABO steps.

    Attributes:
        energy_error: sum over its leapfrog steps of the change in
            ``U(x) + |r|^2 / 2`` (what a Metropolis test of the trajectory uses).
        finite: every potential and gradient along it was finite.
    """

    energy_error: Array
    finite: Array


def init(rng_key, position, potential_fn: Callable) -> KineticState:
    """Evaluate ``U`` and its gradient at ``position``; momentum ``~ N(0, I)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> s = init(jax.random.key(0), jnp.ones(2), lambda x: 0.5 * jnp.sum(x**2))
        >>> s.momentum.shape, s.potential_energy.item()
        ((2,), 1.0)
    """
    potential_energy, grad = jax.value_and_grad(potential_fn)(position)
    flat, _ = ravel_pytree(position)
    momentum = random.normal(rng_key, flat.shape, flat.dtype)
    return KineticState(position, momentum, potential_energy, grad)


def refresh(rng_key, momentum: Array, rate) -> Array:
    """The ``O`` step over a time in which friction ``gamma`` acts for
    ``rate = gamma dt``: ``exp(-rate) r + sqrt(1 - exp(-2 rate)) xi``
    (``rate`` 0 keeps ``r``, ``inf`` draws afresh). The noise's variance is
    ``-expm1(-2 rate)``, exact to rounding at any rate: ``1 - damping**2``
    loses it at small ``gamma h`` in float32 (12% off at ``1e-6``), and the
    kinetic step stops leaving its target invariant.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> refresh(jax.random.key(0), jnp.ones(3), 0.0).tolist()
        [1.0, 1.0, 1.0]
    """
    xi = random.normal(rng_key, momentum.shape, momentum.dtype)
    rate = jnp.asarray(rate, momentum.dtype)
    return jnp.exp(-rate) * momentum + jnp.sqrt(-jnp.expm1(-2.0 * rate)) * xi


def _whiten(metric, vector):
    """``L v`` (the transpose of :func:`~numpyro_ebm.core.metrics.noise`)."""
    if metric is None:
        return vector
    if metric.mass_matrix_sqrt_inv.ndim == 1:
        return metric.mass_matrix_sqrt_inv * vector
    return metric.mass_matrix_sqrt_inv @ vector


def leapfrog(state: KineticState, potential_fn: Callable, step_size, metric=None):
    """One ``B A B`` map: ``(new_state, energy_error, finite)``.

    Example:
        >>> import jax.numpy as jnp
        >>> U = lambda x: 0.5 * jnp.sum(x**2)
        >>> s = KineticState(jnp.ones(1), jnp.zeros(1), 0.5, jnp.ones(1))
        >>> new, error, finite = leapfrog(s, U, 0.1)
        >>> round(float(new.position[0]), 4), bool(finite)
        (0.995, True)
    """
    x, unravel = ravel_pytree(state.position)
    g, _ = ravel_pytree(state.potential_energy_grad)
    r = state.momentum - 0.5 * step_size * _whiten(metric, g)
    x_new = x + step_size * metrics.noise(metric, r)
    position = unravel(x_new)
    pe, grad = jax.value_and_grad(potential_fn)(position)
    g_new, _ = ravel_pytree(grad)
    r = r - 0.5 * step_size * _whiten(metric, g_new)
    finite = is_finite_tree(pe, grad, r)
    kinetic_change = 0.5 * (jnp.sum(r**2) - jnp.sum(state.momentum**2))
    energy_error = pe - state.potential_energy + kinetic_change
    return KineticState(position, r, pe, grad), energy_error, finite


def obabo_step(
    rng_key,
    state: KineticState,
    potential_fn: Callable,
    step_size,
    friction,
    metric=None,
    *,
    adjusted=False,
):
    """One kinetic Langevin step ``O B A B O``: ``(new_state, info,
    energy_error)``; ``energy_error`` is that of the leapfrog part, and
    ``info`` an :class:`~numpyro_ebm.core.proposals.MHInfo` whose
    ``accept_prob`` is ``min(1, exp(-energy_error))`` (what an adjusted step
    accepts with), ``is_accepted`` whether the leapfrog move was kept, and
    ``diverging`` whether it was not finite.

    ``friction`` is ``gamma``; each ``O`` half-step damps the momentum by
    ``exp(-gamma h / 2)``. A non-finite step is not taken (the position is
    kept). ``adjusted=True`` (may be traced) Metropolis-tests the leapfrog
    part on ``energy_error`` and, on rejection, keeps the position and
    negates the momentum before the last ``O``: generalised HMC (Horowitz
    1991), exact for ``exp(-U)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> U = lambda x: 0.5 * jnp.sum(x**2)
        >>> s = init(jax.random.key(0), jnp.ones(2), U)
        >>> new, info, _ = obabo_step(jax.random.key(1), s, U, 0.1, 1.0)
        >>> new.position.shape, bool(info.is_accepted), bool(info.diverging)
        ((2,), True, False)
    """
    key_first, key_accept, key_last = random.split(rng_key, 3)
    rate = 0.5 * friction * step_size  # each O is half a step
    start = state._replace(momentum=refresh(key_first, state.momentum, rate))
    moved, energy_error, finite = leapfrog(start, potential_fn, step_size, metric)
    decision = metropolis_hastings(key_accept, -energy_error, finite)
    keep = finite & (decision.is_accepted | ~jnp.asarray(adjusted))
    flipped = start._replace(momentum=jnp.where(finite, -1.0, 1.0) * start.momentum)
    moved = select(keep, moved, flipped)
    moved = moved._replace(momentum=refresh(key_last, moved.momentum, rate))
    return moved, decision._replace(is_accepted=keep), energy_error


def kinetic_trajectory(
    rng_key,
    state: KineticState,
    potential_fn: Callable,
    step_size,
    friction,
    num_steps,
    metric=None,
) -> tuple[KineticState, TrajectoryInfo]:
    """``num_steps`` OBABO steps (``num_steps`` may be traced), with the summed
    leapfrog energy error for a Metropolis test of the whole trajectory.

    Steps after a non-finite one are not taken; the trajectory is then
    reported as not finite (and is to be rejected).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> U = lambda x: 0.5 * jnp.sum(x**2)
        >>> s = init(jax.random.key(0), jnp.ones(2), U)
        >>> new, info = kinetic_trajectory(jax.random.key(1), s, U, 0.2, 1.0, 5)
        >>> bool(info.finite), bool(jnp.abs(info.energy_error) < 0.1)
        (True, True)
    """

    def body(i, carry):
        state, total, finite = carry
        new, info, error = obabo_step(
            random.fold_in(rng_key, i), state, potential_fn, step_size, friction, metric
        )
        ok = ~info.diverging & finite
        new = select(ok, new, state)
        return new, total + jnp.where(ok, error, 0.0), ok

    zero = jnp.zeros((), jnp.result_type(state.potential_energy))
    state, total, finite = jax.lax.fori_loop(
        0, num_steps, body, (state, zero, jnp.array(True))
    )
    return state, TrajectoryInfo(total, finite)


def malt_step(
    rng_key,
    state: KineticState,
    potential_fn: Callable,
    step_size,
    friction,
    num_steps,
    metric=None,
) -> tuple[KineticState, MHInfo, KineticState]:
    """One Metropolis-adjusted Langevin trajectory (MALT): fresh momentum,
    ``num_steps`` OBABO steps, and a Metropolis test of the whole trajectory
    on its summed leapfrog energy error. Exact for ``exp(-U)`` whatever the
    step, friction and length; ``friction = 0`` is HMC with ``num_steps``
    leapfrog steps, ``num_steps = 1`` is MALA with step ``h^2 / 2``.

    Returns ``(new_state, info, proposal)``, ``proposal`` the trajectory's end
    (what trajectory-length adaptation looks at). The momentum of ``state``
    is not used (it may be ``None``): each trajectory draws its own. A
    rejected trajectory leaves the position where it was.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> U = lambda x: 0.5 * jnp.sum(x**2)
        >>> s = init(jax.random.key(0), jnp.ones(2), U)
        >>> s, info, _ = malt_step(jax.random.key(1), s, U, 0.3, 1.0, 4)
        >>> bool(0 < info.accept_prob <= 1)
        True
    """
    key_momentum, key_path, key_accept = random.split(rng_key, 3)
    flat, _ = ravel_pytree(state.position)
    start = state._replace(momentum=random.normal(key_momentum, flat.shape, flat.dtype))
    end, info = kinetic_trajectory(
        key_path, start, potential_fn, step_size, friction, num_steps, metric
    )
    decision = metropolis_hastings(key_accept, -info.energy_error, info.finite)
    return select(decision.is_accepted, end, start), decision, end
