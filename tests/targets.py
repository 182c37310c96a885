"""Targets with known moments, and reference runs shared across test modules."""

import functools

import numpy as np

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS


def run_chains(kernel, num_warmup, num_samples, *args, init_params=None, seed=0):
    """Four vectorized chains, the set-up every sampler test uses."""
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), *args, init_params=init_params)
    return mcmc


# ----------------------------------------------------------------- Gaussians
CORR = 0.9
COV_2D = np.array([[1.0, CORR * 0.5], [CORR * 0.5, 0.25]])
PREC_2D = np.linalg.inv(COV_2D)
SCALES_100 = np.linspace(0.1, 1.0, 100)


def standard_normal_model():
    numpyro.sample("x", dist.Normal(0.0, 1.0))


def corr2d_potential(x):
    return 0.5 * x @ jnp.asarray(PREC_2D, x.dtype) @ x


def diag100_potential(x):
    return 0.5 * jnp.sum((x / jnp.asarray(SCALES_100, x.dtype)) ** 2)


# ------------------------------------------------------- constrained sites
CONSTRAINED_Y = np.array([0.3, -1.2, 0.8, 0.1, -0.4, 1.5])
CONSTRAINED_SUCCESSES = 3
CONSTRAINED_TRIALS = 12


def constrained_model():
    # a positive and a unit-interval site (exp and sigmoid transforms, with
    # their Jacobians). The Beta(2, 2) prior and binomial likelihood of `prob`
    # are written as one factor: numpyro's Beta and Binomial log densities
    # (lgamma, via Dirichlet) triple the compile time of every sampler on
    # this model, and the posterior, Beta(2 + k, 2 + n - k), is the same.
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    prob = numpyro.sample("prob", dist.Uniform(0.0, 1.0))
    numpyro.sample("y", dist.Normal(0.0, scale), obs=jnp.asarray(CONSTRAINED_Y))
    k, n = CONSTRAINED_SUCCESSES, CONSTRAINED_TRIALS
    numpyro.factor("k", (1 + k) * jnp.log(prob) + (1 + n - k) * jnp.log1p(-prob))


@functools.cache
def constrained_moments():
    """Exact posterior means and sds of ``(scale, prob)`` under
    :func:`constrained_model`: ``prob ~ Beta(2 + k, 2 + n - k)``, and the 1-d
    density of ``scale`` integrated on a fine grid."""
    s = np.linspace(1e-4, 12.0, 400_001)
    y2 = float(np.sum(CONSTRAINED_Y**2))
    log_density = -0.5 * s**2 - CONSTRAINED_Y.size * np.log(s) - 0.5 * y2 / s**2
    w = np.exp(log_density - log_density.max())
    w /= w.sum()
    scale_mean = float(np.sum(w * s))
    scale_sd = float(np.sqrt(np.sum(w * s**2) - scale_mean**2))
    a = 2.0 + CONSTRAINED_SUCCESSES
    b = 2.0 + CONSTRAINED_TRIALS - CONSTRAINED_SUCCESSES
    prob_mean = a / (a + b)
    prob_sd = float(np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))))
    return np.array([scale_mean, prob_mean]), np.array([scale_sd, prob_sd])


# --------------------------------------------------------- logistic regression
def logistic_data(num_data=200, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_data, dim)).astype(np.float32)
    coef = np.linspace(-1.0, 1.0, dim)
    y = (rng.uniform(size=num_data) < 1 / (1 + np.exp(-(X @ coef + 0.3)))).astype(
        np.float32
    )
    return jnp.asarray(X), jnp.asarray(y)


def logistic_model(X, y=None):
    coef = numpyro.sample(
        "coef", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1)
    )
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 2.0))
    numpyro.sample("y", dist.Bernoulli(logits=X @ coef + intercept), obs=y)


def stack_sites(samples, names):
    """(chains, draws, k) array of the named sites, flattened and concatenated."""
    parts = [
        np.asarray(samples[n]).reshape(*np.shape(samples[n])[:2], -1) for n in names
    ]
    return np.concatenate(parts, axis=-1)


@functools.cache
def nuts_reference(name):
    """Long NUTS runs as references for models without closed-form moments."""
    if name == "logistic":
        model, args, sites = logistic_model, logistic_data(), ("coef", "intercept")
    else:
        raise KeyError(name)
    mcmc = MCMC(
        NUTS(model),
        num_warmup=500,
        num_samples=3000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2024), *args)
    return stack_sites(mcmc.get_samples(group_by_chain=True), sites)
