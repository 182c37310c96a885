"""ScorePosterior: posteriors under score priors, exact on linear Gaussian models."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

import numpyro_ebm as ne
from tests.stats import assert_mean, assert_same_means, assert_variance, ess

M = jnp.array([1.0, -0.5])
S = jnp.array([[1.0, 0.6], [0.6, 0.8]])
SIGMAS = jnp.geomspace(5.0, 0.01, 10)
TAU, Y = 0.3, 2.0


def gaussian_score(x, sigma):
    """The exact score of N(M, S) convolved with N(0, sigma^2 I)."""
    prec = jnp.linalg.inv(S + sigma**2 * jnp.eye(2))
    return -(x - M) @ prec


def inpainting(y):
    x = numpyro.sample("x", ne.ScoreDistribution(gaussian_score, (2,), SIGMAS))
    numpyro.sample("y", dist.Normal(x[0], TAU), obs=y)


def last_level_law(step):
    """The pass's target at the last level, pi_L ~ N(x; M, S + s^2 I)
    N(y; x_0, tau^2 + s^2), and the stationary law of the unadjusted
    Langevin step on it: the same mean, each eigenvalue lam of the
    covariance widened to lam / (1 - step / (2 lam))."""
    s2 = SIGMAS[-1] ** 2
    prior_prec = jnp.linalg.inv(S + s2 * jnp.eye(2))
    a = jnp.array([1.0, 0.0])
    noise = TAU**2 + s2
    cov = jnp.linalg.inv(prior_prec + jnp.outer(a, a) / noise)
    mean = cov @ (prior_prec @ M + a * Y / noise)
    lam, u = jnp.linalg.eigh(cov)
    return mean, cov, (u * (lam / (1 - step / (2 * lam)))) @ u.T


def exact_posterior():
    a = jnp.array([1.0, 0.0])
    cov = jnp.linalg.inv(jnp.linalg.inv(S) + jnp.outer(a, a) / TAU**2)
    return cov @ (jnp.linalg.inv(S) @ M + a * Y / TAU**2), cov


STEP = 0.02  # the stationary stage's


@pytest.fixture(scope="module")
def inpainting_draws():
    kernel = ne.ScorePosterior(
        inpainting,
        step_size=2e-5,
        num_steps_per_level=20,
        num_final_steps=200,
        final_step_size=STEP,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=5,
        num_samples=300,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), Y, extra_fields=("potential_energy", "diverging"))
    return mcmc


def _check_gaussian(draws, mean, cov):
    """Mean and variance of each coordinate and of their sum (the covariance)."""
    sd = np.sqrt(np.diag(cov))
    assert_mean(draws, mean, sd, min_ess=800)
    assert_variance(draws, np.diag(cov), min_ess=800)
    total = draws.sum(-1, keepdims=True)
    assert_variance(total, jnp.sum(cov)[None], min_ess=800)


def test_draws_follow_the_last_levels_law_exactly(inpainting_draws):
    draws = np.asarray(inpainting_draws.get_samples(group_by_chain=True)["x"])
    assert draws.shape == (4, 300, 2)
    mean, _, widened = last_level_law(STEP)
    _check_gaussian(draws, mean, widened)
    # a restart per pass: the draws are nearly independent
    assert ess(draws).min() > 900


def test_the_last_levels_law_is_the_posterior_up_to_sigma_L_squared():
    """pi_L differs from the posterior by O(sigma_L^2): at sigma_L = 0.01 the
    means agree to 1e-4 and the covariances to 0.1%; the draws' law differs
    further by the Langevin step's widening, which the test above includes."""
    mean, cov = exact_posterior()
    pi_mean, pi_cov, _ = last_level_law(STEP)
    assert float(jnp.max(jnp.abs(pi_mean - mean))) < 2e-4
    assert float(jnp.max(jnp.abs(pi_cov - cov) / jnp.diag(cov).max())) < 1e-3


def test_sample_stats_and_arviz(inpainting_draws):
    import arviz as az

    extra = inpainting_draws.get_extra_fields(group_by_chain=True)
    assert extra["potential_energy"].shape == (4, 300)
    assert not bool(jnp.any(extra["diverging"]))
    # the potential is minus the log likelihood of y: finite and plausible
    assert np.all(np.isfinite(np.asarray(extra["potential_energy"])))
    idata = az.from_numpyro(inpainting_draws)
    assert idata.posterior["x"].shape == (4, 300, 2)


def test_a_pass_that_goes_non_finite_is_discarded_and_named():
    """Without the likelihood's annealing, the first level's step (5 here)
    is far beyond the sharp likelihood's stability limit (2 tau^2 = 0.18):
    every pass blows up, is discarded, and the warning names the level."""
    kernel = ne.ScorePosterior(
        inpainting, step_size=2e-5, num_steps_per_level=10, anneal_likelihood=False
    )
    mcmc = MCMC(kernel, num_warmup=0, num_samples=5, progress_bar=False)
    with pytest.warns(RuntimeWarning, match=r"non-finite at noise level [12] of 10"):
        mcmc.run(jax.random.key(1), Y, extra_fields=("diverging",))
    assert bool(jnp.all(mcmc.get_extra_fields()["diverging"]))


def _noise_model(prior):
    def model(y):
        x = numpyro.sample("x", prior)
        tau = numpyro.sample("tau", dist.LogNormal(jnp.log(0.5), 0.5))
        with numpyro.plate("obs", y.shape[0]):
            numpyro.sample("y", dist.Normal(x, tau).to_event(1), obs=y)

    return model


def test_other_latent_sites_are_sampled_in_the_same_pass():
    """An unknown noise scale beside the score prior N(0, I): the joint
    posterior's means match NUTS on the same model with the prior's density."""
    score = lambda x, sigma: -x / (1.0 + sigma**2)
    y = jnp.array([[0.8, -0.4], [1.4, 0.3], [1.0, -0.9], [0.5, 0.1], [1.2, -0.2]])
    prior = ne.ScoreDistribution(score, (2,), SIGMAS)
    kernel = ne.ScorePosterior(
        _noise_model(prior),
        step_size=2e-5,
        num_steps_per_level=10,
        num_final_steps=300,
        final_step_size=0.004,
        latent_step_size=0.004,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=20,
        num_samples=400,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), y)
    draws = mcmc.get_samples(group_by_chain=True)
    assert bool(jnp.all(draws["tau"] > 0))  # the constrained site, back in its support
    nuts = MCMC(
        NUTS(_noise_model(dist.Normal(jnp.zeros(2), 1.0).to_event(1))),
        num_warmup=300,
        num_samples=1000,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    nuts.run(jax.random.key(3), y)
    ref = nuts.get_samples(group_by_chain=True)
    assert_same_means(np.asarray(draws["x"]), np.asarray(ref["x"]), min_ess=300)
    assert_same_means(
        np.log(np.asarray(draws["tau"]))[..., None],
        np.log(np.asarray(ref["tau"]))[..., None],
        min_ess=100,
    )


def test_samplers_that_need_a_density_name_the_site():
    y = jnp.asarray(Y)
    for run in (
        lambda: MCMC(
            NUTS(inpainting), num_warmup=2, num_samples=2, progress_bar=False
        ).run(jax.random.key(0), y),
        lambda: MCMC(
            ne.MALA(inpainting), num_warmup=2, num_samples=2, progress_bar=False
        ).run(jax.random.key(0), y),
        lambda: SVI(
            inpainting, AutoNormal(inpainting), optax.adam(1e-2), Trace_ELBO()
        ).run(jax.random.key(0), 2, y, progress_bar=False),
    ):
        with pytest.raises(ValueError, match=r"site 'x'.*ScorePosterior"):
            run()


def test_bad_models_and_settings_are_refused():
    def no_score(y):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    def in_plate(y):
        with numpyro.plate("n", 3):
            numpyro.sample("x", ne.ScoreDistribution(gaussian_score, (2,), SIGMAS))
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    def two_ladders(y):
        a = numpyro.sample("a", ne.ScoreDistribution(gaussian_score, (2,), SIGMAS))
        b = numpyro.sample("b", ne.ScoreDistribution(gaussian_score, (2,), SIGMAS[:-1]))
        numpyro.sample("y", dist.Normal(a[0] + b[0], 1.0), obs=y)

    def wrong_shape(y):
        score = lambda x, sigma: jnp.sum(x, -1)
        x = numpyro.sample("x", ne.ScoreDistribution(score, (2,), SIGMAS))
        numpyro.sample("y", dist.Normal(x[0], 1.0), obs=y)

    for model, match in (
        (no_score, "no ScoreDistribution site"),
        (wrong_shape, r"score of site 'x' must return scores of its input's shape"),
        (in_plate, "site 'x' is inside a plate"),
        (two_ladders, "'a' and 'b' have different noise levels"),
    ):
        with pytest.raises(ValueError, match=match):
            MCMC(ne.ScorePosterior(model), num_warmup=1, num_samples=1).run(
                jax.random.key(0), Y
            )
    with pytest.raises(ValueError, match="step_size"):
        ne.ScorePosterior(inpainting, step_size=-1.0)
    with pytest.raises(ValueError, match="num_final_steps"):
        ne.ScorePosterior(inpainting, num_final_steps=-3)
    with pytest.raises(ValueError, match="final_step_size"):
        ne.ScorePosterior(inpainting, final_step_size=0.0)
    with pytest.raises(ValueError, match="latent_step_size"):
        ne.ScorePosterior(inpainting, latent_step_size=0.0)


def test_a_diffusion_models_score_is_a_prior():
    """ScoreDistribution.from_sde: the exact time-conditional score of N(M, S)
    under the VP SDE, as the prior of the inpainting model."""
    from numpyro_ebm.core.sde import vp_sde

    sde = vp_sde()

    def time_score(x, t):
        mean, std = sde.marginal(t)
        cov = mean[:, None, None] ** 2 * S + std[:, None, None] ** 2 * jnp.eye(2)
        return -jnp.linalg.solve(cov, (x - mean[:, None] * M)[..., None])[..., 0]

    prior = ne.ScoreDistribution.from_sde(
        time_score, sde, (2,), num_levels=10, eps=1e-2
    )

    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0], TAU), obs=y)

    # the prior's step size, 0.2 sigma_L^2: at every level a fifth of the
    # level's noise variance
    kernel = ne.ScorePosterior(
        model, num_steps_per_level=20, num_final_steps=200, final_step_size=STEP
    )
    mcmc = MCMC(
        kernel,
        num_warmup=0,
        num_samples=300,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(4), Y)
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    mean, _ = exact_posterior()
    _, _, widened = last_level_law(STEP)
    # sigma_L = 0.045 here: pi_L's mean is within 0.003 of the posterior's
    assert_mean(draws, mean, np.sqrt(np.diag(widened)), min_ess=800)


def test_a_learned_score_prior_gives_the_quadrature_posterior():
    """A ScoreMLP learned by multi-noise denoising score matching on a 2-D
    mixture (weights 0.7 / 0.3); y = x_0 + N(0, 0.5^2) observed at 0, which
    moves each mode but not their weights. The posterior's means and its mode
    weight against quadrature on the law's exact density, allowing the
    learned score an error of 0.1 beside 4 Monte Carlo se. (An observation
    that re-weights the modes is beyond the annealing: see the docs.)"""
    from flax import nnx

    from numpyro_ebm.datasets import gaussian_mixture

    law = gaussian_mixture(
        jnp.array([[-1.5, -1.5], [1.5, 1.5]]), jnp.full(2, 0.5), jnp.array([0.7, 0.3])
    )
    sigmas = jnp.geomspace(4.0, 0.05, 10)
    learner = ne.ScoreMatching(
        ne.nn.ScoreMLP(2, (64, 64), rngs=nnx.Rngs(0)),
        optax.adam(optax.cosine_decay_schedule(3e-3, 2000, 0.05)),
        ne.DenoisingScoreMatching(sigmas=sigmas),
    )
    data = law.sample(jax.random.key(0), 4000)
    net = learner.run(
        jax.random.key(1), 2000, data, batch_size=256, progress_bar=False
    ).module
    prior = ne.ScoreDistribution(net, (2,), sigmas, step_size=0.2 * 0.05**2)
    y = 0.0

    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0], 0.5), obs=y)

    mcmc = MCMC(
        ne.ScorePosterior(
            model, num_steps_per_level=20, num_final_steps=100, final_step_size=2e-3
        ),
        num_warmup=0,
        num_samples=250,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), y)
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    g = jnp.linspace(-5.0, 5.0, 401)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    w = jax.nn.softmax(law.log_prob(grid) + dist.Normal(grid[:, 0], 0.5).log_prob(y))
    mean = np.asarray(w @ grid)
    sd = np.sqrt(np.asarray(w @ (grid - mean) ** 2))
    upper = float(w @ (grid[:, 1] > 0))
    e = ess(draws)
    assert e.min() > 500, e
    flat = draws.reshape(-1, 2)
    err = np.abs(flat.mean(0) - mean)
    assert np.all(err < 0.1 + 4 * sd / np.sqrt(e)), (flat.mean(0), mean)
    p = float(np.mean(flat[:, 1] > 0))
    assert abs(p - upper) < 0.05 + 4 * np.sqrt(upper * (1 - upper) / e[1]), (p, upper)
