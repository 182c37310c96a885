"""Likelihood training of diffusion models: the likelihood-weighted loss and
the bound against closed forms, the discrete-data convention, the weights'
moving average."""

import math

import numpy as np

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.scipy.stats import norm

import numpyro_ebm as ne
from numpyro_ebm.core.sde import vp_sde
from numpyro_ebm.learn.score_matching import log_snr_range

SDE = vp_sde()


def gaussian_score(m, s):
    """The exact score of x_t when x ~ N(m, s^2) per coordinate."""

    def score(x, t):
        mean, std = SDE.marginal(t)
        shape = (-1,) + (1,) * (x.ndim - 1)
        mean, std = mean.reshape(shape), std.reshape(shape)
        return -(x - mean * m) / (mean**2 * s**2 + std**2)

    return score


def test_likelihood_weighted_loss_matches_its_closed_form():
    # E |std s* + z|^2 = d (1 - std^2 / v_t) for the exact score, so the loss
    # is d/2 int s^2 / (s^2 + e^gamma) dgamma = d/2 [gamma - log(s^2 + e^gamma)]
    d, s, eps = 3, 0.7, 1e-3
    lo, hi = (float(g) for g in log_snr_range(SDE, eps))

    def antiderivative(g):
        return g - math.log(s**2 + math.exp(g))

    exact = 0.5 * d * (antiderivative(hi) - antiderivative(lo))
    x = s * jax.random.normal(jax.random.key(0), (20000, d))
    losses = jax.vmap(
        lambda k: ne.diffusion_score_matching_loss(
            k, gaussian_score(0.0, s), x[:2000], SDE, eps, weighting="likelihood"
        )
    )(jax.random.split(jax.random.key(1), 10))
    # one more estimate on the whole sample, for the spread
    per_run_sd = float(jnp.std(losses))
    assert abs(float(jnp.mean(losses)) - exact) < 4 * per_run_sd / math.sqrt(10), (
        float(jnp.mean(losses)),
        exact,
    )
    # the variance weighting gives another number: the weighting matters
    other = ne.diffusion_score_matching_loss(
        jax.random.key(1), gaussian_score(0.0, s), x, SDE, eps
    )
    assert abs(float(other) - exact) > 1.0


def test_continuous_bound_is_tight_for_the_exact_score():
    m, s = 0.3, 0.8
    x = m + s * jax.random.normal(jax.random.key(0), (400, 2))
    r = ne.diffusion_elbo(
        jax.random.key(1), gaussian_score(m, s), SDE, x, eps=1e-4, num_samples=32
    )
    truth = float(jnp.mean(jnp.sum(norm.logpdf(x, m, s), -1)))
    assert abs(float(r.log_likelihood) - truth) < 3 * float(r.stderr), (
        float(r.log_likelihood),
        truth,
        float(r.stderr),
    )
    assert r.log_likelihoods.shape == (400,)
    np.testing.assert_allclose(
        float(r.bits_per_dim), -float(r.log_likelihood) / (2 * math.log(2)), rtol=1e-6
    )


def test_discrete_bound_against_the_model_probability_of_the_levels():
    # the model: the exact reverse SDE of N(m, s^2) per pixel down to eps,
    # then the categorical decoder over K levels on [-1, 1]. Its probability
    # of each level is a 1-D integral; the bound must sit just below it.
    K, m, s, d = 17, 0.1, 0.3, 4
    sigma0 = 0.03  # a quarter of the levels' spacing
    eps = float(SDE.noise_time(jnp.asarray(sigma0)))
    grid = np.linspace(-1.0, 1.0, K)
    z = np.linspace(-3.0, 3.0, 24001)
    dz = z[1] - z[0]
    v = s**2 + sigma0**2  # the law of x_eps / mean(eps)
    density = np.exp(-0.5 * (z - m) ** 2 / v) / math.sqrt(2 * math.pi * v)
    logits = -0.5 * ((z[:, None] - grid) / sigma0) ** 2
    decoder = np.exp(logits - logits.max(1, keepdims=True))
    decoder /= decoder.sum(1, keepdims=True)
    p_levels = (density[:, None] * decoder).sum(0) * dz
    assert abs(p_levels.sum() - 1.0) < 1e-6
    rng = np.random.default_rng(0)
    levels = rng.choice(K, size=(300, d), p=p_levels / p_levels.sum())
    exact = np.log(p_levels)[levels].sum(1)  # log P(k) per image
    r = ne.diffusion_elbo(
        jax.random.key(2),
        gaussian_score(m, s),
        SDE,
        levels,
        num_levels=K,
        eps=eps,
        num_samples=32,
    )
    gap = exact.mean() - float(r.log_likelihood)
    # a bound: never above the truth beyond Monte Carlo error; and tight here
    # (the decoder's width is a quarter of the spacing), within 0.05 nats/pixel
    assert gap > -3 * float(r.stderr), (gap, float(r.stderr))
    assert gap < 0.05 * d + 3 * float(r.stderr), (gap, float(r.stderr))
    # bits per dimension of the grey levels
    np.testing.assert_allclose(
        float(r.bits_per_dim), -float(r.log_likelihood) / (d * math.log(2)), rtol=1e-6
    )


def test_moving_average_of_the_weights():
    data = jax.random.normal(jax.random.key(0), (256, 2))
    net = ne.nn.EnergyMLP(2, (8,), rngs=nnx.Rngs(0))
    sm = ne.ScoreMatching(
        net, optax.sgd(1e-2), ne.DenoisingScoreMatching(0.5), ema_decay=0.9
    )
    result = sm.run(jax.random.key(1), 30, data, batch_size=32, progress_bar=False)
    raw = jax.tree.leaves(result.state.params)
    ema = jax.tree.leaves(result.params)
    assert any(
        float(jnp.max(jnp.abs(a - b))) > 1e-6 for a, b in zip(raw, ema, strict=True)
    )
    # the average lies between the start and the end, nearer the end
    start = jax.tree.leaves(nnx.split(ne.nn.EnergyMLP(2, (8,), rngs=nnx.Rngs(0)))[1])
    for a, b, c in zip(start, ema, raw, strict=True):
        if float(jnp.max(jnp.abs(c - a))) > 1e-4:
            frac = float(jnp.sum((b - a) * (c - a)) / jnp.sum((c - a) ** 2))
            assert 0.5 < frac < 1.0, frac
    # the module is the average too, and training goes on from the raw weights
    again = sm.run(
        jax.random.key(1),
        31,
        data,
        batch_size=32,
        progress_bar=False,
        init_state=result.state,
    )
    assert int(again.state.step) == 61
