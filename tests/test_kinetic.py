"""Kinetic Langevin: the exact stationary law of the unadjusted OBABO scheme on
Gaussians, and exactness of its Metropolis-adjusted trajectories (MALT)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from numpyro_ebm.core import kinetic
from numpyro_ebm.core.metrics import metric_from_inverse_mass_matrix
from tests.stats import assert_mean, assert_variance

SCALES = jnp.array([0.5, 1.0, 2.0])


def potential(x):
    return 0.5 * jnp.sum((x / SCALES) ** 2)


def _chains(step, num_chains=100, num_steps=2000, seed=0):
    """``(chains, draws, 3)`` positions of ``num_chains`` chains of ``step``,
    started at the target's law."""

    def chain(key):
        key_init, key_mom, key_run = jax.random.split(key, 3)
        x0 = SCALES * jax.random.normal(key_init, (3,))
        state = kinetic.init(key_mom, x0, potential)

        def body(state, key):
            state = step(key, state)
            return state, state.position

        return jax.lax.scan(body, state, jax.random.split(key_run, num_steps))[1]

    keys = jax.random.split(jax.random.key(seed), num_chains)
    return np.asarray(jax.jit(jax.vmap(chain))(keys))


@pytest.mark.parametrize("friction", [0.5, 4.0])
def test_obabo_stationary_law_on_a_gaussian_is_the_closed_form(friction):
    # x ~ N(0, s^2 / (1 - h^2 / (4 s^2))) whatever the friction: at h = 0.8
    # the smallest scale's variance is 2.8 times the target's
    h = 0.8

    def step(key, state):
        return kinetic.obabo_step(key, state, potential, h, friction)[0]

    x = _chains(step)
    s2 = np.asarray(SCALES) ** 2
    assert_mean(x, np.zeros(3), np.sqrt(s2 / (1 - h**2 / (4 * s2))))
    assert_variance(x, s2 / (1 - h**2 / (4 * s2)))


def test_obabo_with_a_metric_whitens_the_target():
    # with A = diag(s^2) every coordinate is a unit Gaussian in the metric's
    # units: variance s^2 / (1 - h^2 / 4), the same inflation for all
    h = 1.0
    metric = metric_from_inverse_mass_matrix(SCALES**2)

    def step(key, state):
        return kinetic.obabo_step(key, state, potential, h, 1.0, metric)[0]

    x = _chains(step)
    assert_variance(x, np.asarray(SCALES) ** 2 / (1 - h**2 / 4))


@pytest.mark.parametrize("dense", [False, True])
def test_malt_is_exact_at_a_step_where_obabo_is_biased(dense):
    h = 0.8
    imm = jnp.eye(3) * 0.8 + 0.2 if dense else None
    metric = None if imm is None else metric_from_inverse_mass_matrix(imm)

    def step(key, state):
        return kinetic.malt_step(key, state, potential, h, 1.0, 4, metric)[0]

    x = _chains(step, num_steps=1000)
    assert_mean(x, np.zeros(3), np.asarray(SCALES))
    assert_variance(x, np.asarray(SCALES) ** 2)


def test_adjusted_obabo_is_generalised_hmc_and_exact_where_obabo_is_biased():
    # the same h = 0.8 that inflates the smallest variance 2.8x unadjusted
    h = 0.8

    def step(key, state):
        return kinetic.obabo_step(key, state, potential, h, 0.5, adjusted=True)[0]

    x = _chains(step)
    assert_mean(x, np.zeros(3), np.asarray(SCALES))
    assert_variance(x, np.asarray(SCALES) ** 2)


def test_a_non_finite_step_is_not_taken_and_the_trajectory_is_rejected():
    def walled(x):  # +inf beyond x_0 = 1
        return jnp.where(x[0] > 1.0, jnp.inf, 0.5 * jnp.sum(x**2))

    state = kinetic.init(jax.random.key(0), jnp.array([0.99, 0.0, 0.0]), walled)
    state = state._replace(momentum=jnp.array([5.0, 0.0, 0.0]))
    new, info = kinetic.kinetic_trajectory(
        jax.random.key(1), state, walled, 0.5, 0.0, 3
    )
    assert not bool(info.finite)
    assert float(new.position[0]) <= 1.0
    moved, decision, _ = kinetic.malt_step(
        jax.random.key(2), state, walled, 2.0, 0.0, 3
    )
    assert np.isfinite(float(moved.potential_energy))


def test_the_o_steps_noise_is_exact_at_a_tiny_friction_step():
    # from r = 0, one O B A B O step on a flat potential leaves r with
    # variance 1 - exp(-2 gamma h) exactly; at gamma h = 1e-6 in float32,
    # 1 - damping**2 was 12% off (the step then left no law invariant)
    n, h, gamma = 1_000_000, 1e-3, 1e-3
    flat = lambda x: 0.0 * jnp.sum(x)  # noqa: E731
    state = kinetic.KineticState(jnp.zeros(1), jnp.zeros(1), 0.0, jnp.zeros(1))
    step = jax.vmap(lambda k: kinetic.obabo_step(k, state, flat, h, gamma)[0].momentum)
    r = np.asarray(step(jax.random.split(jax.random.key(0), n)), np.float64)
    exact = -np.expm1(-2.0 * gamma * h)
    assert r.dtype == np.float64 and jnp.result_type(float) == jnp.float32
    assert abs(r.var() / exact - 1.0) < 5 * np.sqrt(2.0 / n)
