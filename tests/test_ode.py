"""The probability-flow ODE: exact on Gaussian data, whose flow is linear."""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.scipy.stats import multivariate_normal

from numpyro_ebm.core.ode import bits_per_dim, ode_log_likelihood, ode_sample
from numpyro_ebm.core.sde import subvp_sde, ve_sde, vp_sde

SDES = {"ve": ve_sde(0.01, 20.0), "vp": vp_sde(), "subvp": subvp_sde()}

# data N(0, S) with S = U diag(lam) U': the marginal at t is N(0, S_t),
# S_t = mean(t)^2 S + std(t)^2 I, with the same eigenvectors U
_Q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(7), (3, 3)))
LAM = jnp.array([4.0, 1.0, 0.25])


def _cov(sde, t):
    mean, std = sde.marginal(t)
    return mean**2 * LAM + std**2  # eigenvalues of S_t


@functools.cache
def _exact_score(sde):
    # one function per SDE: the solves compile once for every test using it
    def score(x, t):
        lam_t = jax.vmap(lambda t: _cov(sde, t))(t)  # (n, 3)
        return -(((x @ _Q) / lam_t) @ _Q.T)

    return score


def _flow(sde, x, t_from, t_to):
    """The exact flow map: the PF ODE of a Gaussian scales each eigendirection
    by sqrt(lam(t_to) / lam(t_from))."""
    ratio = jnp.sqrt(_cov(sde, t_to) / _cov(sde, t_from))
    return ((x @ _Q) * ratio) @ _Q.T


@pytest.fixture(scope="module")
def points():
    return jax.random.normal(jax.random.key(0), (200, 3)) * 1.5


@pytest.mark.parametrize("name", list(SDES))
def test_sampling_follows_the_exact_flow(name, points):
    sde = SDES[name]
    x1 = points * sde.prior_std
    out = ode_sample(_exact_score(sde), sde, x1, eps=1e-3)
    np.testing.assert_allclose(out, _flow(sde, x1, 1.0, 1e-3), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", list(SDES))
def test_log_likelihood_is_exact_for_gaussian_data(name, points):
    """ll = log N(x; 0, S_eps) + [log prior(x_1) - log p_1(x_1)], x_1 the flow
    of x to t = 1: exact, the prior's mismatch with p_1 accounted for."""
    sde, eps = SDES[name], 1e-5
    x = points
    ll = ode_log_likelihood(_exact_score(sde), sde, x, eps=eps)

    def log_gauss(x, lam):
        return multivariate_normal.logpdf(x, jnp.zeros(3), (_Q * lam) @ _Q.T)

    x1 = _flow(sde, x, eps, 1.0)
    truth = (
        log_gauss(x, _cov(sde, eps))
        + sde.prior_log_prob(x1)
        - log_gauss(x1, _cov(sde, 1.0))
    )
    np.testing.assert_allclose(ll, truth, atol=2e-3)
    # the prior's mismatch is small, so this is the data's density, nearly
    np.testing.assert_allclose(ll, log_gauss(x, LAM), atol=0.05)


def test_hutchinson_is_unbiased_and_differs_point_by_point(points):
    sde = SDES["vp"]
    score = _exact_score(sde)
    exact = ode_log_likelihood(score, sde, points)
    one = ode_log_likelihood(
        score, sde, points, trace_estimator="hutchinson", rng_key=jax.random.key(1)
    )
    again = ode_log_likelihood(
        score, sde, points, trace_estimator="hutchinson", rng_key=jax.random.key(1)
    )
    np.testing.assert_array_equal(one, again)  # the probes are fixed by the key
    diff = np.asarray(one - exact)
    assert np.std(diff) > 0.05  # the rotated covariance has off-diagonal terms
    se = np.std(diff) / np.sqrt(diff.size)
    assert abs(np.mean(diff)) < 4 * se, (np.mean(diff), se)
    many = ode_log_likelihood(
        score,
        sde,
        points,
        trace_estimator="hutchinson",
        rng_key=jax.random.key(2),
        num_probes=16,
    )
    assert np.std(np.asarray(many - exact)) < 0.5 * np.std(diff)


def test_jit_matches_eager_and_bits_per_dim(points):
    sde = SDES["vp"]
    score = _exact_score(sde)
    eager = ode_log_likelihood(score, sde, points)
    jitted = jax.jit(lambda x: ode_log_likelihood(score, sde, x))(points)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    np.testing.assert_allclose(
        bits_per_dim(eager, 3), -eager / (3 * np.log(2.0)), rtol=1e-6
    )


def test_a_failed_solve_names_the_time():
    sde = SDES["vp"]

    def score(x, t):  # non-finite above t = 0.5
        return jnp.where(t[:, None] > 0.5, jnp.nan, -x)

    x = jnp.ones((4, 3))
    with pytest.raises(RuntimeError, match=r"failed at t = 0\.[45]"):
        ode_log_likelihood(score, sde, x, max_steps=256)
    with pytest.raises(RuntimeError, match=r"ode_sample.*failed at t = 1"):
        ode_sample(score, sde, x, max_steps=256)


def test_bad_input_is_refused(points):
    sde, score = SDES["vp"], _exact_score(SDES["vp"])
    with pytest.raises(ValueError, match="eps"):
        ode_log_likelihood(score, sde, points, eps=1.5)
    with pytest.raises(ValueError, match="eps"):
        ode_sample(score, sde, points, eps=0.0)
    with pytest.raises(ValueError, match="trace_estimator"):
        ode_log_likelihood(score, sde, points, trace_estimator="skilling")
    with pytest.raises(ValueError, match="rng_key"):
        ode_log_likelihood(score, sde, points, trace_estimator="hutchinson")
    with pytest.raises(ValueError, match="shape"):
        ode_log_likelihood(lambda x, t: x[:, :2], sde, points)
    with pytest.raises(ValueError, match="batch"):
        ode_sample(score, sde, points[0])
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(0.0, 0)


def test_a_trained_network_reaches_the_data_likelihood():
    """DiffusionScoreMLP trained by continuous DSM on a correlated 2-D
    Gaussian: the flow's held-out log-likelihood is the data law's."""
    import optax
    from flax import nnx

    import numpyro_ebm as ne

    sde = vp_sde()
    cov = jnp.array([[1.0, 0.8], [0.8, 1.0]])
    chol = jnp.linalg.cholesky(cov)
    data = jax.random.normal(jax.random.key(0), (8192, 2)) @ chol.T
    test = jax.random.normal(jax.random.key(1), (500, 2)) @ chol.T
    net = ne.nn.DiffusionScoreMLP(2, sde, (64, 64), rngs=nnx.Rngs(0))
    result = ne.ScoreMatching(
        net,
        optax.adam(optax.cosine_decay_schedule(3e-3, 2000, 0.1)),
        ne.DiffusionScoreMatching(sde),
    ).run(jax.random.key(2), 2000, data, batch_size=256, progress_bar=False)
    ll = ode_log_likelihood(result.module, sde, test)
    truth = multivariate_normal.logpdf(test, jnp.zeros(2), cov)
    gap = float(jnp.mean(ll) - jnp.mean(truth))
    se = float(jnp.std(ll - truth)) / np.sqrt(test.shape[0])
    assert abs(gap) < 0.05 + 3 * se, (gap, se)
