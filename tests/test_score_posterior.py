"""ScorePosterior: exact posteriors under score priors (conditional SMC along
the reverse diffusion) and the biased annealed pass, against closed forms,
quadrature and NUTS."""

import functools

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
        method="annealed",
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


def _check_gaussian(draws, mean, cov, min_ess=800):
    """Mean and variance of each coordinate and of their sum (the covariance)."""
    sd = np.sqrt(np.diag(cov))
    assert_mean(draws, mean, sd, min_ess=min_ess)
    assert_variance(draws, np.diag(cov), min_ess=min_ess)
    total = draws.sum(-1, keepdims=True)
    assert_variance(total, jnp.sum(cov)[None], min_ess=min_ess)


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
        inpainting,
        method="annealed",
        step_size=2e-5,
        num_steps_per_level=10,
        anneal_likelihood=False,
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


# ------------------------------------------------------------ exact default
# Table 3c's prior: a two-mode mixture given by its exact noised score
W2 = jnp.array([0.7, 0.3])
M2 = jnp.array([[-1.5, -1.5], [1.5, 1.5]])
V2, SY2 = 0.25, 0.5
LEVELS2 = jnp.geomspace(4.0, 0.05, 10)  # table 3c's original ladder


def mixture_score(x, sigma):
    v = V2 + sigma**2
    logp = jnp.log(W2) - 0.5 * jnp.sum((x[:, None, :] - M2) ** 2, -1) / v
    r = jax.nn.softmax(logp, -1)
    return jnp.einsum("nk,nkd->nd", r, (M2 - x[:, None, :]) / v)


def noised_mixture(sigma):
    return dist.MixtureSameFamily(
        dist.Categorical(W2), dist.Normal(M2, jnp.sqrt(V2 + sigma**2)).to_event(1)
    )


def two_modes(y):
    x = numpyro.sample("x", ne.ScoreDistribution(mixture_score, (2,), LEVELS2))
    numpyro.sample("y", dist.Normal(x[0], SY2), obs=y)


def upper_weight(y):
    """The posterior's weight of the upper mode, in closed form."""
    lw = jnp.log(W2) + dist.Normal(M2[:, 0], jnp.sqrt(V2 + SY2**2)).log_prob(y)
    return float(jax.nn.softmax(lw)[1])


def _upper(mcmc):
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    up = (draws[..., 1] > 0).astype(float)
    return up.mean(), ess(up[..., None])[0]


def test_mode_weights_at_the_defaults():
    """Table 3c's prior and levels (sigma 4 -> 0.05): the observation
    re-weights the modes (prior 0.3 for the upper one, posterior 0.896 at y =
    0.5 and 0.994 at y = 1), where the annealed pass gives 0.50 and 0.64. The
    defaults' draws are within 0.02 of the exact weights, beside 3 Monte
    Carlo se; the draws mix (ESS gate)."""
    mcmc = MCMC(
        ne.ScorePosterior(two_modes),
        num_warmup=10,
        num_samples=350,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
        jit_model_args=True,
    )
    for y in (0.5, 1.0):
        mcmc.run(jax.random.key(7), y)
        p, e = _upper(mcmc)
        assert e > 1000, e
        exact = upper_weight(y)
        se = np.sqrt(exact * (1 - exact) / e)
        assert abs(p - exact) < 0.02 + 3 * se, (y, p, exact, se)


def discretised_gaussian_law(levels, init_mean, init_cov):
    """The law of the reverse diffusion of N(M, S)'s exact score over
    ``levels``: every ancestral step is linear and Gaussian, so the law stays
    Gaussian; its mean and covariance, exactly."""
    m, c = np.asarray(init_mean, np.float64), np.asarray(init_cov, np.float64)
    s_, mu = np.asarray(S, np.float64), np.asarray(M, np.float64)
    for a, b in zip(levels[:-1], levels[1:], strict=True):
        drop = a**2 - b**2
        step = drop * np.linalg.inv(s_ + a**2 * np.eye(2))
        m = m + step @ (mu - m)
        c = (np.eye(2) - step) @ c @ (np.eye(2) - step).T + drop * b**2 / a**2 * np.eye(
            2
        )
    return m, c


def gaussian_update(m, c, y=Y):
    """The posterior and log evidence of N(m, c) observed through
    y = x_0 + N(0, TAU^2)."""
    a = np.array([1.0, 0.0])
    gain = c @ a / (c[0, 0] + TAU**2)
    mean = m + gain * (y - m[0])
    cov = c - np.outer(gain, a @ c)
    log_z = float(dist.Normal(m[0], np.sqrt(c[0, 0] + TAU**2)).log_prob(y))
    return mean, cov, log_z


EXACT_START = dist.MultivariateNormal(M, S + SIGMAS[0] ** 2 * jnp.eye(2))


def gaussian_prior_model(y):
    prior = ne.ScoreDistribution(gaussian_score, (2,), SIGMAS, init_dist=EXACT_START)
    x = numpyro.sample("x", prior)
    numpyro.sample("y", dist.Normal(x[0], TAU), obs=y)


def test_linear_gaussian_posterior_of_the_discretised_law_exactly():
    """With the exact start law, the prior's law over 30 levels is a
    Gaussian known in closed form; the draws' means and variances match its
    posterior (no tolerance beyond Monte Carlo's), and the evidence is
    within 3 standard errors of its closed form."""
    levels = np.geomspace(float(SIGMAS[0]), float(SIGMAS[-1]), 30)
    m, c = discretised_gaussian_law(levels, M, S + SIGMAS[0] ** 2 * jnp.eye(2))
    mean, cov, log_z = gaussian_update(m, c)
    kernel = ne.ScorePosterior(gaussian_prior_model, num_particles=8, num_levels=30)
    mcmc = MCMC(
        kernel,
        num_warmup=20,
        num_samples=400,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(5), Y, extra_fields=("ess",))
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    _check_gaussian(draws, mean, cov)
    # the discretised law is within 1e-2 of N(M, S + sigma_L^2 I) here
    assert np.abs(m - np.asarray(M)).max() < 1e-2
    evidence = kernel.log_evidence(jax.random.key(6), Y, num_particles=256)
    assert abs(evidence.log_evidence - log_z) < 3 * evidence.stderr + 1e-3, (
        evidence,
        log_z,
    )
    # diagnostics: each level's weights' ESS per draw, and ArviZ
    import arviz as az

    ess_field = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["ess"])
    assert ess_field.shape == (4, 400, 30)
    assert np.all((ess_field > 0) & (ess_field <= 1 + 1e-6))
    idata = az.from_numpyro(mcmc)
    assert idata.posterior["x"].shape == (4, 400, 2)
    assert "ess" in idata.sample_stats


def test_a_bernoulli_likelihood_against_quadrature():
    """Any observation distribution, through the model's log density: three
    Bernoulli observations with logits 2 x_0 on the two-mode prior (exact
    start law), the upper mode's weight against quadrature on the mixture's
    density smoothed to the last level."""
    prior = ne.ScoreDistribution(
        mixture_score, (2,), LEVELS2, init_dist=noised_mixture(LEVELS2[0])
    )
    obs = jnp.array([1.0, 1.0, 0.0])

    def model(y):
        x = numpyro.sample("x", prior)
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=2.0 * x[0]), obs=y)

    mcmc = MCMC(
        ne.ScorePosterior(model, num_particles=8, num_levels=30),
        num_warmup=20,
        num_samples=500,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(8), obs)
    p, e = _upper(mcmc)
    assert e > 400, e
    g = jnp.linspace(-6.0, 6.0, 481)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_lik = dist.Bernoulli(logits=2.0 * grid[:, :1]).log_prob(obs).sum(-1)
    w = jax.nn.softmax(noised_mixture(LEVELS2[-1]).log_prob(grid) + log_lik)
    exact = float(w @ (grid[:, 1] > 0))
    assert 0.3 < exact < 0.9  # re-weighted: the prior gives 0.3
    se = np.sqrt(exact * (1 - exact) / e)
    # 30 levels leave the law within 0.01 of the smoothed mixture here
    assert abs(p - exact) < 0.01 + 4 * se, (p, exact, se)


def _noise_model(prior):
    def model(y):
        x = numpyro.sample("x", prior)
        tau = numpyro.sample("tau", dist.LogNormal(jnp.log(0.5), 0.5))
        with numpyro.plate("obs", y.shape[0]):
            numpyro.sample("y", dist.Normal(x, tau).to_event(1), obs=y)

    return model


def _discretised_unit_variance(levels):
    """The variance of the reverse diffusion's law for the exact score of
    N(0, 1) started from its exact law at the first level."""
    v = 1.0 + levels[0] ** 2
    for a, b in zip(levels[:-1], levels[1:], strict=True):
        drop = a**2 - b**2
        v = (1 - drop / (1 + a**2)) ** 2 * v + drop * b**2 / a**2
    return v


def test_other_latent_sites_by_gibbs_and_the_evidence():
    """An unknown noise scale beside the score prior N(0, I): conditional SMC
    on x and MALA on tau, alternately; the joint posterior's means and sds
    match NUTS on the same model with the prior's density. The evidence,
    integrating tau by importance sampling around these draws, is within 3
    standard errors of its value by quadrature over tau."""
    score = lambda x, sigma: -x / (1.0 + sigma**2)
    y = jnp.array([[0.8, -0.4], [1.4, 0.3], [1.0, -0.9], [0.5, 0.1], [1.2, -0.2]])
    start = dist.Normal(jnp.zeros(2), jnp.sqrt(1.0 + SIGMAS[0] ** 2)).to_event(1)
    prior = ne.ScoreDistribution(score, (2,), SIGMAS, init_dist=start)
    kernel = ne.ScorePosterior(_noise_model(prior), num_particles=8, num_levels=30)
    mcmc = MCMC(
        kernel,
        num_warmup=100,
        num_samples=400,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), y, extra_fields=("accept_prob",))
    draws = mcmc.get_samples(group_by_chain=True)
    assert bool(jnp.all(draws["tau"] > 0))  # the constrained site, back in its support
    accept = float(jnp.mean(mcmc.get_extra_fields()["accept_prob"]))
    assert 0.4 < accept < 0.8, accept  # adapted towards 0.574
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
    # the evidence: given tau, each coordinate's 5 observations are
    # N(0, tau^2 I + v 1 1^T) under the discretised prior law N(0, v I)
    v = _discretised_unit_variance(
        np.geomspace(float(SIGMAS[0]), float(SIGMAS[-1]), 30)
    )
    log_tau = np.linspace(np.log(0.02), np.log(5.0), 4000)
    t2 = np.exp(2 * log_tau)[:, None]
    obs = np.asarray(y, np.float64)
    # Sherman-Morrison: |tau^2 I + v 1 1^T| and its quadratic form, per column
    quad = (np.sum(obs**2, 0) - v * np.sum(obs, 0) ** 2 / (t2 + 5 * v)) / t2
    log_det = 4 * np.log(t2) + np.log(t2 + 5 * v)
    log_lik = np.sum(-0.5 * (quad + log_det + 5 * np.log(2 * np.pi)), -1)
    log_prior = np.asarray(dist.Normal(np.log(0.5), 0.5).log_prob(log_tau))
    integrand = log_lik + log_prior
    top = integrand.max()
    exact = top + np.log(np.trapezoid(np.exp(integrand - top), log_tau))
    evidence = kernel.log_evidence(
        jax.random.key(4), y, num_particles=128, posterior_samples=mcmc.get_samples()
    )
    assert evidence.stderr < 0.1, evidence
    assert abs(evidence.log_evidence - exact) < 3 * evidence.stderr + 1e-3, (
        evidence.log_evidence,
        evidence.stderr,
        exact,
    )


def test_non_finite_scores_are_discarded_named_and_refused_by_the_evidence():
    """A score that returns NaN below sigma = 0.05: every sweep is discarded
    with a warning naming the level, the draws stay finite; the evidence
    raises FloatingPointError."""

    def broken(x, sigma):
        return jnp.where(sigma < 0.05, jnp.nan, -x / (1.0 + sigma**2))

    def model(y):
        x = numpyro.sample("x", ne.ScoreDistribution(broken, (2,), SIGMAS))
        numpyro.sample("y", dist.Normal(x[0], TAU), obs=y)

    kernel = ne.ScorePosterior(model, num_particles=4, num_levels=10)
    mcmc = MCMC(kernel, num_warmup=0, num_samples=5, progress_bar=False)
    with pytest.warns(RuntimeWarning, match=r"non-finite at noise level \d+ of 10"):
        mcmc.run(jax.random.key(1), Y, extra_fields=("diverging",))
    assert bool(jnp.all(mcmc.get_extra_fields()["diverging"]))
    assert np.all(np.isfinite(np.asarray(mcmc.get_samples()["x"])))
    with pytest.raises(FloatingPointError, match=r"noise level \d+ of 10"):
        kernel.log_evidence(jax.random.key(2), Y, num_particles=8, num_runs=2)


def test_collapsing_weights_are_named():
    """Two particles, a sharp likelihood, no guidance and no widening: the
    weights hold one particle at the last level, and the warning at the end
    of warm-up names it."""
    sharp = lambda y: inpainting(y)  # noqa: E731
    kernel = ne.ScorePosterior(
        sharp,
        num_particles=2,
        num_levels=10,
        guidance=False,
        anneal_likelihood=False,
        ess_threshold=0.0,
    )
    mcmc = MCMC(kernel, num_warmup=20, num_samples=1, progress_bar=False)
    with pytest.warns(RuntimeWarning, match=r"collapse at noise level \d+ of 10"):
        mcmc.run(jax.random.key(3), 40.0)


def test_collapsing_weights_are_named_in_a_short_run():
    """No warm-up and 10 draws: the warning comes 10 draws into sampling (it
    once waited for 100, so short runs that kept repeating one draw, as in
    MNIST inpainting, finished without a word)."""
    kernel = ne.ScorePosterior(
        inpainting,
        num_particles=2,
        num_levels=10,
        guidance=False,
        anneal_likelihood=False,
        ess_threshold=0.0,
    )
    mcmc = MCMC(kernel, num_warmup=0, num_samples=10, progress_bar=False)
    with pytest.warns(RuntimeWarning, match=r"collapse at noise level \d+ of 10"):
        mcmc.run(jax.random.key(3), 40.0)


def test_the_first_sweep_is_not_held_by_the_starting_value():
    """The first sweep runs without a reference: the score sites' starting
    value is no path of the reverse diffusion, and as a constant reference
    it held MNIST inpainting chains at NumPyro's uniform start (speckle noise
    in [-2, 2]) sweep after sweep. The same key now gives the same first
    draw from any starting value."""
    kernel = ne.ScorePosterior(inpainting, num_particles=4, num_levels=10)
    mcmc = MCMC(kernel, num_warmup=0, num_samples=1, progress_bar=False)
    firsts = []
    for start in ([0.0, 0.0], [1.8, 0.5]):  # both plausible
        mcmc.run(jax.random.key(4), Y, init_params={"x": jnp.array(start)})
        firsts.append(np.asarray(mcmc.get_samples()["x"][0]))
    np.testing.assert_array_equal(firsts[0], firsts[1])
    assert np.all(np.abs(firsts[0]) < 10.0)


def test_a_sweep_without_its_reference_is_the_plain_sweep():
    from numpyro_ebm.core import smc

    def evaluate(k, x):
        return -0.5 * jnp.sum((x - 1.0) ** 2, -1) * (k + 1) / 5, None

    transition = lambda k, x, aux: (0.9 * x, 0.9 * x + 0.05, 0.1)  # noqa: E731
    init = jax.random.normal(jax.random.key(0), (8, 3))
    reference = jnp.full((5, 3), 7.0)

    @jax.jit
    def sweep(use_reference):
        return smc.gaussian_path_smc(
            jax.random.key(1),
            init,
            evaluate,
            transition,
            5,
            reference=reference,
            use_reference=use_reference,
            ess_threshold=1.0,
        )

    plain = smc.gaussian_path_smc(
        jax.random.key(1), init, evaluate, transition, 5, ess_threshold=1.0
    )
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sweep(False)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    x, _, _ = sweep(True)
    np.testing.assert_array_equal(x[0], reference[-1])


def test_no_call_back_to_the_host_in_an_ordinary_iteration(monkeypatch):
    # the warnings are host callbacks; they run at the milestones only (here
    # 10 draws into sampling), never once per iteration or per chain
    calls = []
    kernel = ne.ScorePosterior(inpainting, num_particles=4, num_levels=10)
    monkeypatch.setattr(kernel, "_warn_collapse", lambda *a: calls.append("c"))
    monkeypatch.setattr(kernel, "_warn_diverged", lambda *a: calls.append("d"))
    mcmc = MCMC(
        kernel,
        num_warmup=3,
        num_samples=30,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(5), Y)
    assert calls == ["c"]


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
    annealed = functools.partial(ne.ScorePosterior, inpainting, method="annealed")
    for kwargs, match in (
        ({"step_size": -1.0}, "step_size"),
        ({"num_final_steps": -3}, "num_final_steps"),
        ({"final_step_size": 0.0}, "final_step_size"),
        ({"latent_step_size": 0.0}, "latent_step_size"),
        ({"num_particles": 8}, r"`num_particles` belong to method='smc'"),
    ):
        with pytest.raises(ValueError, match=match):
            annealed(**kwargs)
    for kwargs, match in (
        ({"method": "nuts"}, "`method` must be 'smc' or 'annealed'"),
        ({"step_size": 1e-3}, r"`step_size` belong to method='annealed'"),
        ({"num_particles": 1}, "`num_particles` must be at least 2"),
        ({"num_levels": 1}, "`num_levels` must be at least 2"),
        ({"ess_threshold": 1.5}, "ess_threshold"),
        ({"ess_threshold": float("nan")}, "ess_threshold"),
        ({"latent_steps": 0}, "latent_steps"),
    ):
        with pytest.raises(ValueError, match=match):
            ne.ScorePosterior(inpainting, **kwargs)
    with pytest.raises(TypeError, match="num_particles"):
        ne.ScorePosterior(inpainting, num_particles=2.5)


def test_a_diffusion_models_score_is_a_prior():
    """ScoreDistribution.from_sde: the exact time-conditional score of N(M, S)
    under the VP SDE, as the prior of the inpainting model; the posterior of
    its discretised law (from the kernel's Gaussian start, sigma_1 = 152
    here) in closed form."""
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

    kernel = ne.ScorePosterior(model, num_particles=8, num_levels=40)
    mcmc = MCMC(
        kernel,
        num_warmup=20,
        num_samples=300,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(4), Y)
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    top, bottom = float(prior.sigmas[0]), float(prior.sigmas[-1])
    levels = np.geomspace(top, bottom, 40)
    # the start law the kernel estimated from the score at the first level
    start_mean, start_sd = (np.asarray(v) for v in kernel._reverse.starts[0])
    m, c = discretised_gaussian_law(levels, start_mean, np.diag(start_sd**2))
    mean, cov, _ = gaussian_update(m, c)
    _check_gaussian(draws, mean, cov, min_ess=400)


@pytest.fixture(scope="module")
def learned_mixture_score():
    """A ScoreMLP learned by multi-noise denoising score matching on a 2-D
    mixture 0.7 N((-1.5,-1.5), 0.25 I) + 0.3 N((1.5,1.5), 0.25 I)."""
    from flax import nnx

    from numpyro_ebm.datasets import gaussian_mixture

    law = gaussian_mixture(
        jnp.array([[-1.5, -1.5], [1.5, 1.5]]), jnp.full(2, 0.5), jnp.array([0.7, 0.3])
    )
    sigmas = jnp.geomspace(8.0, 0.05, 10)
    learner = ne.ScoreMatching(
        ne.nn.ScoreMLP(2, (64, 64), rngs=nnx.Rngs(0)),
        optax.adam(optax.cosine_decay_schedule(3e-3, 2000, 0.05)),
        ne.DenoisingScoreMatching(sigmas=sigmas),
    )
    data = law.sample(jax.random.key(0), 4000)
    net = learner.run(
        jax.random.key(1), 2000, data, batch_size=256, progress_bar=False
    ).module
    return law, net, sigmas


def _observed_first_coordinate(prior):
    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0], 0.5), obs=y)

    return model


def test_a_learned_score_prior_gives_the_quadrature_posterior(learned_mixture_score):
    """The learned prior; y = x_0 + N(0, 0.5^2) observed at 0.5, which
    re-weights the modes (posterior weight of the upper mode 0.90). The
    posterior's means and its mode weight against quadrature on the law's
    exact density, allowing the learned score an error of 0.1 (0.05 for the
    weight) beside 4 Monte Carlo se."""
    law, net, sigmas = learned_mixture_score
    y = 0.5
    mcmc = MCMC(
        ne.ScorePosterior(
            _observed_first_coordinate(ne.ScoreDistribution(net, (2,), sigmas)),
            num_particles=8,
            num_levels=50,
        ),
        num_warmup=20,
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


def test_simulation_based_calibration_on_a_learned_prior(learned_mixture_score):
    """Simulation-based calibration (Talts et al. 2018) of the exact default
    on the learned prior: 400 replications of x from the learned model's own
    law (its start law, then reverse_diffusion over its 20 levels), y =
    x_0 + N(0, 0.5^2), one chain of 40 iterations each (7 dropped, every
    third kept: 11 draws); the rank of each coordinate of x among its draws is
    uniform on 0..11. Chi-square test on 4 bins at level 0.001 per coordinate.
    The annealed pass (10 levels x 20 steps, 100 final steps) fails the same
    test, on x_0 with p = 2e-13."""
    from scipy import stats

    _, net, sigmas = learned_mixture_score
    num_levels, replications = 20, 400
    kernel = ne.ScorePosterior(
        _observed_first_coordinate(ne.ScoreDistribution(net, (2,), sigmas)),
        num_particles=4,
        num_levels=num_levels,
    )
    key_x, key_start, key_y, key_run = jax.random.split(jax.random.key(11), 4)
    levels = jnp.geomspace(float(sigmas[0]), float(sigmas[-1]), num_levels)
    state = kernel.init(jax.random.split(key_run, replications), 0, model_args=(0.0,))
    # the prior's law: the kernel's start at the first level, then the
    # reverse diffusion over its levels
    start_mean, start_sd = kernel._reverse.starts[0]
    start = start_mean + start_sd * jax.random.normal(key_start, (replications, 2))
    truth = ne.reverse_diffusion(key_x, net, start, levels)
    y = truth[:, 0] + 0.5 * jax.random.normal(key_y, (replications,))

    @jax.jit
    def run(state, y):
        def chain(state, y):
            def step(state, _):
                state, _ = kernel._transition(state, (y,), {})
                return state, state.z["x"]

            return jax.lax.scan(step, state, None, length=40)[1]

        return jax.vmap(chain)(state, y)

    draws = np.asarray(run(state, y))[:, 7::3]
    assert draws.shape == (replications, 11, 2)
    truth = np.asarray(truth)
    for d in range(2):
        ranks = np.sum(draws[:, :, d] < truth[:, None, d], axis=1)
        counts = np.bincount(ranks * 4 // 12, minlength=4)
        p_value = stats.chisquare(counts).pvalue
        assert p_value > 1e-3, (d, counts, p_value)
