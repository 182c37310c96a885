"""The functional core on its own: exact formulas and invariance of the target."""

import functools

import numpy as np
import pytest
from scipy import stats

import jax
import jax.numpy as jnp
from numpyro.infer.hmc_util import _initialize_mass_matrix

from numpyro_ebm.core import langevin, metrics, proposals, rwmh

DENSE_A = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])


def quartic(x):
    return 0.25 * jnp.sum(x**4) + jnp.dot(jnp.arange(1.0, 4.0), x)


def test_dense_metric_factor_matches_numpyro():
    m = metrics.metric_from_inverse_mass_matrix(DENSE_A)
    np.testing.assert_allclose(
        m.mass_matrix_sqrt_inv.T @ m.mass_matrix_sqrt_inv, DENSE_A, rtol=1e-5
    )
    _, _, numpyro_factor = _initialize_mass_matrix(
        jnp.zeros(3), jnp.asarray(DENSE_A), True
    )
    np.testing.assert_allclose(m.mass_matrix_sqrt_inv, numpyro_factor, rtol=1e-5)
    # noise(z) has covariance A: check through the linear map itself
    jac = jax.jacfwd(lambda z: metrics.noise(m, z))(jnp.zeros(3))
    np.testing.assert_allclose(jac @ jac.T, DENSE_A, rtol=1e-5)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_mala_acceptance_equals_explicit_proposal_densities(dense, beta):
    A = DENSE_A if dense else np.diag(DENSE_A)
    metric = metrics.metric_from_inverse_mass_matrix(A)
    cov_matrix = A if dense else np.diag(A)
    h = 0.3
    state = langevin.init(jnp.array([0.3, -0.5, 1.0]), quartic)

    def one(key):
        new, info = langevin.langevin_step(
            key, state, quartic, h, metric, inverse_temperature=beta
        )
        key_move, _ = jax.random.split(key)
        x = state.position
        proposal, _ = langevin.langevin_proposal(
            key_move, x, state.potential_energy_grad, h, metric, beta
        )
        return proposal, info.accept_prob

    proposals_, accept = jax.vmap(one)(jax.random.split(jax.random.key(0), 64))
    x = np.asarray(state.position, np.float64)

    def log_q(to, frm):
        grad = np.asarray(jax.grad(quartic)(jnp.asarray(frm, jnp.float32)), np.float64)
        mean = frm - h * cov_matrix @ grad
        return stats.multivariate_normal(mean, 2 * h / beta * cov_matrix).logpdf(to)

    def U(y):
        return float(quartic(jnp.asarray(y, jnp.float32)))

    expected = []
    for y in np.asarray(proposals_, np.float64):
        log_ratio = beta * (U(x) - U(y)) + log_q(x, y) - log_q(y, x)
        expected.append(min(1.0, np.exp(log_ratio)))
    expected = np.asarray(expected)
    assert 0.05 < expected.mean() < 0.95  # a range where the check has power
    np.testing.assert_allclose(accept, expected, rtol=2e-3, atol=1e-5)


def _gaussian_invariance(step_fn, num=100_000, num_steps=5, seed=0):
    """Start from exact N(0, Sigma) draws, apply steps, return the particles."""
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    prec = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    potential = lambda x: 0.5 * x @ prec @ x
    key_init, key_run = jax.random.split(jax.random.key(seed))
    x0 = jax.random.multivariate_normal(key_init, jnp.zeros(2), cov, (num,))
    states = jax.vmap(lambda x: langevin.init(x, potential))(x0)

    def body(states, key):
        keys = jax.random.split(key, num)
        states, _ = jax.vmap(lambda k, s: step_fn(k, s, potential))(keys, states)
        return states, None

    states, _ = jax.lax.scan(body, states, jax.random.split(key_run, num_steps))
    return np.asarray(states.position, np.float64), cov


def test_mala_leaves_target_invariant_with_mismatched_metric():
    metric = metrics.metric_from_inverse_mass_matrix(
        jnp.array([[1.0, -0.5], [-0.5, 1.0]])
    )
    step = lambda k, s, U: langevin.langevin_step(k, s, U, 1.2, metric)
    x, cov = _gaussian_invariance(step)
    n = x.shape[0]  # independent particles: ESS = n
    assert np.all(np.abs(x.mean(0)) < 5 * np.sqrt(np.diag(cov) / n))
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    assert np.all(np.abs(np.cov(x.T) - cov) < 5 * se)


def test_ula_does_not_leave_target_invariant():
    # the control for the test above: the unadjusted move inflates the variance
    step = lambda k, s, U: langevin.langevin_step(k, s, U, 0.3, adjusted=False)
    x, cov = _gaussian_invariance(step)
    se = np.sqrt(2 / x.shape[0]) * np.diag(cov)
    assert np.any(np.abs(np.diag(np.cov(x.T)) - np.diag(cov)) > 5 * se)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _ula_chains(s, h, num, num_steps):
    """``num`` ULA chains from 0, ``num_steps`` steps of ``h`` on
    U = x^2 / (2 s^2); ``s`` and ``h`` are traced, so one compiled program
    serves every case below."""
    potential = lambda x: 0.5 * x**2 / s**2
    states = jax.vmap(lambda x: langevin.init(x, potential))(jnp.zeros(num))

    def body(states, key):
        keys = jax.random.split(key, num)
        step = lambda k, st: langevin.langevin_step(k, st, potential, h, adjusted=False)
        return jax.vmap(step)(keys, states)[0], None

    states, _ = jax.lax.scan(
        body, states, jax.random.split(jax.random.key(1), num_steps)
    )
    return states.position


@pytest.mark.optimized
@pytest.mark.parametrize("s, h", [(2.0, 1.0), (1.0, 0.5), (0.5, 0.2)])
def test_ula_stationary_variance_closed_form_core(s, h):
    # ULA on U = x^2 / (2 s^2) is stationary at N(0, s^2 / (1 - h / (2 s^2)))
    num, num_steps = 50_000, 300
    x = np.asarray(_ula_chains(s, h, num, num_steps), np.float64)
    var = s**2 / (1 - h / (2 * s**2))
    assert abs(x.var() - var) < 5 * np.sqrt(2 / num) * var
    assert abs(x.mean()) < 5 * np.sqrt(var / num)


def test_metropolis_hastings_rejects_non_finite():
    key = jax.random.key(0)
    for ratio, finite in [(jnp.nan, True), (10.0, False), (jnp.inf, False)]:
        d = proposals.metropolis_hastings(key, jnp.asarray(ratio), jnp.asarray(finite))
        assert not bool(d.is_accepted) and float(d.accept_prob) == 0.0
        assert bool(d.diverging) == (not finite)
    d = proposals.metropolis_hastings(key, jnp.asarray(50.0), jnp.asarray(True))
    assert bool(d.is_accepted) and float(d.accept_prob) == 1.0


def test_langevin_step_on_pytrees():
    potential = lambda p: 0.5 * (p["a"] ** 2).sum() + 0.5 * p["b"] ** 2
    state = langevin.init({"a": jnp.ones(3), "b": jnp.array(0.5)}, potential)
    new, info = langevin.langevin_step(jax.random.key(0), state, potential, 0.1)
    assert jax.tree.structure(new.position) == jax.tree.structure(state.position)
    np.testing.assert_allclose(new.potential_energy, potential(new.position), rtol=1e-6)


def test_rwmh_step_symmetric_ratio():
    potential = lambda x: 0.5 * jnp.sum(x**2)
    state = rwmh.init(jnp.array([0.5, -0.5]), potential)

    def one(key):
        new, info = rwmh.rwmh_step(key, state, potential, 0.8)
        key_move, _ = jax.random.split(key)
        z = jax.random.normal(key_move, (2,))
        y = state.position + jnp.sqrt(0.8) * z
        return info.accept_prob, jnp.minimum(
            1.0, jnp.exp(potential(state.position) - potential(y))
        )

    got, expected = jax.vmap(one)(jax.random.split(jax.random.key(3), 32))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
