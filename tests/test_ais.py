"""Annealed importance sampling: log Z against closed forms, its standard
error against repeated runs, both directions, NNX energies."""

import math

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from flax import nnx
from jax.scipy.special import logsumexp

import numpyro_ebm as ne

D = 10
SCALES = jnp.linspace(0.3, 1.5, D)
MEANS = jnp.linspace(-1.0, 1.0, D)
OFFSET = 3.0
#: log Z of exp(-E) for the anisotropic Gaussian energy below
GAUSS_LOG_Z = float(jnp.sum(jnp.log(math.sqrt(2 * math.pi) * SCALES)) - OFFSET)
BASE = dist.Normal(jnp.zeros(D), 2.0).to_event(1)


def gaussian_energy(x):
    return 0.5 * jnp.sum(((x - MEANS) / SCALES) ** 2, -1) + OFFSET


MIX_WEIGHTS = jnp.array([0.3, 0.7])
MIX_MEANS = jnp.array([[-3.0, -3.0], [3.0, 2.0]])
MIX_LOG_Z = math.log(5.0)


def mixture_energy(x):
    comps = dist.Normal(MIX_MEANS, 0.5).to_event(1).log_prob(x[:, None, :])
    return -(logsumexp(jnp.log(MIX_WEIGHTS) + comps, -1) + MIX_LOG_Z)


@pytest.fixture(scope="module")
def gaussian_runs():
    runs = [
        ne.ais_log_normalizer(
            jax.random.key(r), gaussian_energy, BASE, num_particles=128, num_levels=100
        )
        for r in range(16)
    ]
    est = np.array([float(r.log_normalizer) for r in runs])
    se = np.array([float(r.stderr) for r in runs])
    return est, se


def test_gaussian_log_z_within_three_standard_errors(gaussian_runs):
    est, se = gaussian_runs
    # pooled over runs: the mean of 16 independent estimates
    pooled_se = est.std(ddof=1) / math.sqrt(est.size)
    assert abs(est.mean() - GAUSS_LOG_Z) < 3 * pooled_se + 0.01, (
        est.mean(),
        GAUSS_LOG_Z,
        pooled_se,
    )
    # each run: within 3 of its own standard errors, bar at most 2 of 16
    assert np.sum(np.abs(est - GAUSS_LOG_Z) > 3 * se) <= 2


def test_standard_error_matches_the_spread_of_repeated_runs(gaussian_runs):
    est, se = gaussian_runs
    ratio = np.mean(se) / est.std(ddof=1)
    # the sd of 16 runs is itself uncertain by about 18%
    assert 0.6 < ratio < 1.5, ratio


def test_mixture_log_z_and_samples():
    base = dist.Normal(jnp.zeros(2), 4.0).to_event(1)
    r = ne.ais_log_normalizer(
        jax.random.key(0), mixture_energy, base, num_particles=1024, num_levels=200
    )
    assert abs(float(r.log_normalizer) - MIX_LOG_Z) < 3 * float(r.stderr) + 0.01
    # the weighted particles hold the modes' weights
    w = jax.nn.softmax(r.log_weights)
    right = float(jnp.sum(w * (r.samples[:, 0] > 0)))
    assert abs(right - 0.7) < 0.06, right
    assert 0.5 < float(jnp.mean(r.accept_prob)) < 0.8


def test_reverse_pass_is_an_upper_bound_from_exact_draws():
    draws = MEANS + SCALES * jax.random.normal(jax.random.key(5), (256, D))
    rev = ne.ais_log_normalizer(
        jax.random.key(1),
        gaussian_energy,
        BASE,
        num_levels=200,
        init=draws,
        reverse=True,
    )
    fwd = ne.ais_log_normalizer(
        jax.random.key(2), gaussian_energy, BASE, num_particles=256, num_levels=200
    )
    for r in (rev, fwd):
        assert abs(float(r.log_normalizer) - GAUSS_LOG_Z) < 3 * float(r.stderr) + 0.01
    # the reverse particles end at the base
    assert abs(float(jnp.std(rev.samples)) - 2.0) < 0.15


class ScaledEnergy(nnx.Module):
    def __init__(self, scale):
        self.log_scale = nnx.Param(jnp.log(jnp.asarray(scale)))

    def __call__(self, x):
        return 0.5 * jnp.sum(x**2, -1) / jnp.exp(self.log_scale[...]) ** 2


def test_nnx_energy_parameters_are_read_at_each_call():
    net = ScaledEnergy(0.5)
    base = dist.Normal(jnp.zeros(3), 1.0).to_event(1)
    for scale in (0.5, 1.5):
        net.log_scale[...] = jnp.log(jnp.asarray(scale))
        r = ne.ais_log_normalizer(jax.random.key(0), net, base, num_levels=100)
        exact = 3 * math.log(math.sqrt(2 * math.pi) * scale)
        assert abs(float(r.log_normalizer) - exact) < 3 * float(r.stderr) + 0.01


def test_held_out_likelihood_matches_the_density():
    data = MEANS + SCALES * jax.random.normal(jax.random.key(3), (200, D))
    r = ne.ais_log_likelihood(
        jax.random.key(4),
        gaussian_energy,
        data,
        BASE,
        num_particles=256,
        num_levels=200,
    )
    exact = dist.Normal(MEANS, SCALES).to_event(1).log_prob(data)
    assert (
        abs(float(r.log_likelihood - exact.mean()))
        < 3 * float(r.normalizer.stderr) + 0.01
    )
    assert r.log_likelihoods.shape == (200,)
    assert float(r.stderr) >= float(r.normalizer.stderr)


def test_inside_jit_a_nan_energy_or_a_traced_bad_schedule_gives_nan():
    base = dist.Normal(jnp.zeros(2), 1.0).to_event(1)

    def nan_energy(x):
        return jnp.sum(x, -1) * jnp.nan

    out = jax.jit(
        lambda key: ne.ais_log_normalizer(key, nan_energy, base, num_levels=10)
    )(jax.random.key(0))
    assert np.isnan(float(out.log_normalizer))
    half = jnp.linspace(0.0, 0.5, 11)
    out = jax.jit(
        lambda b: ne.ais_log_normalizer(
            jax.random.key(0), lambda x: 0.5 * jnp.sum(x**2, -1), base, betas=b
        )
    )(half)
    assert np.isnan(float(out.log_normalizer))


def test_few_effective_particles_warn_with_the_figure():
    base = dist.Normal(jnp.zeros(D), 2.0).to_event(1)
    with pytest.warns(UserWarning, match=r"ESS is [0-9.]+ of 64"):
        ne.ais_log_normalizer(
            jax.random.key(0), gaussian_energy, base, num_particles=64, num_levels=1
        )
