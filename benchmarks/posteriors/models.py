"""The posteriors of the benchmark suite, as NumPyro models.

Each model takes its data as keyword arguments (see ``data.py``); the
registry in ``__init__.py`` pairs them with their data and references.
Parametrisations follow the usual benchmark choices (posteriordb, Inference
Gym): hierarchical models are non-centred unless the name says otherwise.
"""

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


# --------------------------------------------------------------- Gaussians
def gaussian(scale):
    """Independent Gaussians with the given standard deviations."""
    numpyro.sample("x", dist.Normal(0.0, scale).to_event(1))


def rotated_gaussian(scale_tril):
    """A Gaussian with a dense covariance ``L L^T``."""
    numpyro.sample(
        "x",
        dist.MultivariateNormal(jnp.zeros(scale_tril.shape[0]), scale_tril=scale_tril),
    )


def funnel(dim):
    """Neal's funnel, centred: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, e^v)``."""
    v = numpyro.sample("v", dist.Normal(0.0, 3.0))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2)).expand([dim - 1]).to_event(1))


def gaussian_mixture(weights, locs, scale):
    """A mixture of isotropic Gaussians with a common standard deviation."""
    numpyro.sample(
        "x",
        dist.MixtureSameFamily(
            dist.Categorical(probs=weights),
            dist.Normal(locs, scale).to_event(1),
        ),
    )


# ------------------------------------------------------ regression models
def eight_schools_noncentered(y, sigma):
    """Rubin's eight schools, non-centred (posteriordb ``eight_schools_noncentered``)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", y.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


def logistic_regression(X, y):
    """Bayesian logistic regression, ``N(0, 1)`` priors, no intercept."""
    coef = numpyro.sample(
        "coef", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1)
    )
    numpyro.sample("y", dist.Bernoulli(logits=X @ coef).to_event(1), obs=y)


def linear_regression(X, y):
    """Bayesian linear regression with an intercept and a noise scale."""
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 1.0))
    coef = numpyro.sample(
        "coef", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1)
    )
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(intercept + X @ coef, sigma).to_event(1), obs=y)


def hierarchical_logistic_regression(X, y, group, num_groups):
    """Varying intercepts and slopes by group, non-centred."""
    k = X.shape[1]
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([k + 1]).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0).expand([k + 1]).to_event(1))
    z = numpyro.sample(
        "z", dist.Normal(0.0, 1.0).expand([num_groups, k + 1]).to_event(2)
    )
    beta = mu + tau * z
    logits = beta[group, 0] + jnp.sum(X * beta[group, 1:], axis=-1)
    numpyro.sample("y", dist.Bernoulli(logits=logits).to_event(1), obs=y)


def radon_hierarchical(log_radon, floor, county, log_uranium):
    """Varying-intercept radon model with a county-level uranium predictor
    (Gelman & Hill 2007, ch. 12), non-centred."""
    num_counties = log_uranium.shape[0]
    g = numpyro.sample("gamma", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(1.0))
    sigma_y = numpyro.sample("sigma_y", dist.HalfNormal(1.0))
    eta = numpyro.sample(
        "eta", dist.Normal(0.0, 1.0).expand([num_counties]).to_event(1)
    )
    a = g[0] + g[1] * log_uranium + sigma_a * eta
    numpyro.sample(
        "log_radon",
        dist.Normal(a[county] + beta * floor, sigma_y).to_event(1),
        obs=log_radon,
    )


def item_response_2pl(correct, num_students, num_items):
    """Two-parameter logistic item response theory model, non-centred
    (as in Inference Gym's synthetic IRT)."""
    mean_ability = numpyro.sample("mean_ability", dist.Normal(0.75, 1.0))
    ability = numpyro.sample(
        "ability", dist.Normal(0.0, 1.0).expand([num_students]).to_event(1)
    )
    difficulty = numpyro.sample(
        "difficulty", dist.Normal(0.0, 1.0).expand([num_items]).to_event(1)
    )
    log_discrimination = numpyro.sample(
        "log_discrimination", dist.Normal(0.0, 0.5).expand([num_items]).to_event(1)
    )
    logits = jnp.exp(log_discrimination) * (
        mean_ability + ability[:, None] - difficulty
    )
    numpyro.sample("correct", dist.Bernoulli(logits=logits).to_event(2), obs=correct)


def stochastic_volatility(returns):
    """Stochastic volatility with a non-centred AR(1) log-variance
    (Kim, Shephard & Chib 1998; posteriordb ``stochastic_volatility``)."""
    T = returns.shape[0]
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    phi_raw = numpyro.sample("phi_raw", dist.Beta(20.0, 1.5))
    phi = 2.0 * phi_raw - 1.0
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.5))
    eps = numpyro.sample("eps", dist.Normal(0.0, 1.0).expand([T]).to_event(1))

    def step(h, e):
        h = mu + phi * (h - mu) + sigma * e
        return h, h

    h0 = mu + sigma / jnp.sqrt(1.0 - phi**2) * eps[0]
    _, rest = jax.lax.scan(step, h0, eps[1:])
    h = jnp.concatenate([h0[None], rest])
    numpyro.sample("returns", dist.Normal(0.0, jnp.exp(h / 2)).to_event(1), obs=returns)


def horseshoe_logistic(X, y):
    """Sparse logistic regression with a non-centred horseshoe prior
    (Carvalho, Polson & Scott 2010)."""
    p = X.shape[1]
    tau = numpyro.sample("tau", dist.HalfCauchy(1.0))
    lam = numpyro.sample("lambda", dist.HalfCauchy(1.0).expand([p]).to_event(1))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([p]).to_event(1))
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 5.0))
    coef = tau * lam * z
    numpyro.sample("y", dist.Bernoulli(logits=intercept + X @ coef).to_event(1), obs=y)


def brownian_motion(observations, observed):
    """A Gaussian random walk seen through noise with its middle missing, both
    noise scales unknown (Inference Gym's Brownian motion with missing middle
    observations)."""
    T = observations.shape[0]
    innovation = numpyro.sample("innovation_noise", dist.LogNormal(0.0, 2.0))
    observation = numpyro.sample("observation_noise", dist.LogNormal(0.0, 2.0))
    x = numpyro.sample("x", dist.GaussianRandomWalk(innovation, num_steps=T))
    numpyro.sample(
        "observations",
        dist.Normal(x, observation).mask(observed).to_event(1),
        obs=jnp.where(observed, observations, 0.0),
    )
