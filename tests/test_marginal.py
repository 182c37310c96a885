"""Normalising constants of energy priors and importance-sampled likelihoods."""

import re

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

import numpyro_ebm as ne

X = jnp.asarray(np.random.default_rng(0).normal(1.0, 2.0, size=200), jnp.float32)


def _quadratic_prior(c, dim=()):
    # exp(-c z^2 / 2) N(z; 0, 1) = N(0, 1 / (1 + c)) / Z with Z = (1 + c)^(-1/2)
    base = dist.Normal(jnp.zeros(dim), 1.0).to_event(len(dim))
    energy = lambda z: 0.5 * c * jnp.sum(z**2, tuple(range(-len(dim), 0)))  # noqa: E731
    return ne.EnergyDistribution(energy, dim, base)


def test_log_normalizer_matches_the_closed_form():
    c, d = 3.0, 2
    log_z, se = _quadratic_prior(c, (d,)).log_normalizer(jax.random.key(0))
    exact = -0.5 * d * np.log1p(c)
    assert 0 < float(se) < 0.01
    assert abs(float(log_z) - exact) < 4 * float(se), (float(log_z), exact)


def test_log_normalizer_needs_a_base_density():
    d = ne.EnergyDistribution(lambda z: jnp.sum(z**2, -1), (2,))
    with pytest.raises(ValueError, match="base_dist"):
        d.log_normalizer(jax.random.key(0))


def _linear_model(x, subsample_size=None):
    with numpyro.plate("data", x.shape[0], subsample_size=subsample_size):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        obs = numpyro.subsample(x, event_dim=0)
        numpyro.sample("x", dist.Normal(2.0 * z + 1.0, 0.5), obs=obs)


def _mismatched_guide(x, subsample_size=None):
    with numpyro.plate("data", x.shape[0], subsample_size=subsample_size):
        numpyro.sample("z", dist.Normal(0.3 * numpyro.subsample(x, event_dim=0), 0.8))


def test_importance_samples_are_vectorized_by_default():
    # lax.map with no batch size ran the samples one at a time (a scan of
    # num_samples steps); by default 64 run at once
    def call():
        return ne.importance_log_likelihood(
            jax.random.key(1), _linear_model, _mismatched_guide, {}, X, num_samples=128
        )

    lengths = re.findall(r"length=(\d+)", str(jax.make_jaxpr(call)()))
    assert "2" in lengths and "128" not in lengths


def test_importance_sampling_converges_to_the_marginal_likelihood():
    exact = dist.Normal(1.0, np.sqrt(4.25)).log_prob(X)  # x ~ N(1, 2^2 + 0.5^2)
    ll = ne.importance_log_likelihood(
        jax.random.key(1),
        _linear_model,
        _mismatched_guide,
        {},
        X,
        num_samples=4000,
        batch_size=500,
    )
    elbo = ne.importance_log_likelihood(
        jax.random.key(1), _linear_model, _mismatched_guide, {}, X, num_samples=1
    )
    assert ll.shape == (200,)
    assert abs(float(jnp.mean(ll - exact))) < 0.02
    assert float(jnp.mean(exact - elbo)) > 0.5  # the guide is poor: IS matters


def test_energy_prior_is_normalised_by_its_log_normalizer():
    prior = _quadratic_prior(3.0)  # N(0, 1/4)

    def model(x):
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", prior)
            numpyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(0.2 * x, 0.5))

    log_z, _ = prior.log_normalizer(jax.random.key(0), 400_000)
    ll = ne.importance_log_likelihood(
        jax.random.key(2),
        model,
        guide,
        {},
        X,
        num_samples=2000,
        log_normalizers={"z": log_z},
    )
    exact = dist.Normal(0.0, np.sqrt(1.25)).log_prob(X)
    assert abs(float(jnp.mean(ll - exact))) < 0.01
    auto = ne.importance_log_likelihood(
        jax.random.key(2),
        model,
        guide,
        {},
        X,
        num_samples=2000,
        log_normalizers="estimate",
    )
    assert abs(float(jnp.mean(auto - exact))) < 0.01
    with pytest.raises(ValueError, match="'z' has an unnormalised density"):
        ne.importance_log_likelihood(jax.random.key(2), model, guide, {}, X)


def test_subsampled_or_global_sites_are_refused():
    with pytest.raises(ValueError, match="scaled"):
        ne.importance_log_likelihood(
            jax.random.key(0),
            _linear_model,
            _mismatched_guide,
            {},
            X,
            subsample_size=20,
        )

    def global_model(x):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x):
        numpyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'mu' lies outside the plate 'data'"):
        ne.importance_log_likelihood(
            jax.random.key(0), global_model, global_guide, {}, X
        )


def test_wrapped_energy_priors_are_normalised_per_draw():
    # an energy prior seen through a transform, or several draws under
    # .to_event: log Z is found inside the wrappers and counted per draw
    from numpyro.distributions.transforms import AffineTransform

    x = X[:50]
    base = dist.Normal(jnp.zeros(1), 1.0).to_event(1)
    prior = ne.EnergyDistribution(lambda v: 1.5 * jnp.sum(v**2, -1), (1,), base)

    def transformed(x):  # z = 2 u, u ~ N(0, 1/4): z ~ N(0, 1)
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample(
                "z", dist.TransformedDistribution(prior, AffineTransform(0.0, 2.0))
            )
            numpyro.sample("x", dist.Normal(z[..., 0], 1.0), obs=x)

    def guide(x):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(0.5 * x[:, None], 0.8).to_event(1))

    ll = ne.importance_log_likelihood(
        jax.random.key(0),
        transformed,
        guide,
        {},
        x,
        num_samples=4000,
        log_normalizers="estimate",
    )
    exact = dist.Normal(0.0, np.sqrt(2.0)).log_prob(x)
    assert abs(float(jnp.mean(ll - exact))) < 0.02

    def three_draws(x):  # three independent N(0, 1/4) draws, the first observed
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", prior.expand([3]).to_event(1))
            numpyro.sample("x", dist.Normal(z[..., 0, 0], 1.0), obs=x)

    def guide3(x):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(jnp.zeros((3, 1)), 0.6).to_event(2))

    ll = ne.importance_log_likelihood(
        jax.random.key(0),
        three_draws,
        guide3,
        {},
        x,
        num_samples=4000,
        log_normalizers="estimate",
    )
    exact = dist.Normal(0.0, np.sqrt(1.25)).log_prob(x)
    assert abs(float(jnp.mean(ll - exact))) < 0.02


def test_a_latent_missing_from_the_guide_is_refused():
    def model(x):
        with numpyro.plate("data", x.shape[0]):
            u = numpyro.sample("u", dist.Normal(0.0, 1.0))
            z = numpyro.sample("z", dist.Normal(u, 1.0))
            numpyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="latent site 'u' has no site in the guide"):
        ne.importance_log_likelihood(jax.random.key(0), model, guide, {}, X)
