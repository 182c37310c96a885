"""EnergyDistribution, ScoreDistribution and annealed Langevin."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from flax import nnx
from numpyro.contrib.module import nnx_module
from numpyro.infer import NUTS

import numpyro_ebm as ne
from tests.stats import assert_mean, assert_variance
from tests.targets import run_chains

MU = np.array([1.0, -0.5])
COV = np.array([[1.0, 0.6], [0.6, 0.8]])
PREC = np.linalg.inv(COV)


def quadratic_energy(x):
    d = x - MU
    return 0.5 * jnp.einsum("...i,ij,...j->...", d, jnp.asarray(PREC, x.dtype), d)


def test_log_prob_differs_from_gaussian_by_a_constant():
    d = ne.EnergyDistribution(quadratic_energy, (2,))
    x = jax.random.normal(jax.random.key(0), (50, 2)) * 2
    diff = d.log_prob(x) - dist.MultivariateNormal(MU, COV).log_prob(x)
    np.testing.assert_allclose(diff, diff[0], atol=1e-4)
    # the constant is log Z = log((2 pi) ** (d / 2) sqrt(det COV))
    np.testing.assert_allclose(
        diff[0], np.log(2 * np.pi) + 0.5 * np.log(np.linalg.det(COV)), atol=1e-4
    )
    assert d.log_prob(x).shape == (50,)
    assert d.support.event_dim == 1


def test_log_prob_with_base_dist_and_batch_shape():
    base = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
    d = ne.EnergyDistribution(quadratic_energy, (2,), base_dist=base)
    x = jnp.ones((3, 2))
    np.testing.assert_allclose(d.log_prob(x), -quadratic_energy(x) + base.log_prob(x))
    batched = ne.EnergyDistribution(lambda x: jnp.sum(x**2, -1), (2,), batch_shape=(4,))
    assert batched.sample(jax.random.key(0), (5,)).shape == (5, 4, 2)


@pytest.mark.parametrize("adjusted", [False, True])
def test_sample_reproduces_moments(adjusted):
    # independent chains: the draws are independent, ESS = their number
    num = 4000
    d = ne.EnergyDistribution(
        quadratic_energy, (2,), num_steps=300, step_size=0.05, adjusted=adjusted
    )
    x = np.asarray(d.sample(jax.random.key(1), (num,)), np.float64)
    assert x.shape == (num, 2)
    # ULA's stationary covariance for a Gaussian: per eigenvalue lambda of COV,
    # lambda / (1 - h / (2 lambda)); MALA's is COV itself
    lam, vec = np.linalg.eigh(COV)
    h = 0.05
    cov = COV if adjusted else (vec * (lam / (1 - h / (2 * lam)))) @ vec.T
    draws = x.reshape(1, num, 2)  # one "chain" of independent draws
    assert_mean(draws, MU, np.sqrt(np.diag(cov)), min_ess=2000)
    assert_variance(draws, np.diag(cov), min_ess=2000)


def test_mala_on_model_with_energy_prior():
    def model():
        numpyro.sample("z", ne.EnergyDistribution(quadratic_energy, (2,)))

    z = run_chains(ne.MALA(model), 500, 2000).get_samples(group_by_chain=True)["z"]
    assert_mean(z, MU, np.sqrt(np.diag(COV)))
    assert_variance(z, np.diag(COV))


# --------------------------------------------- a neural prior in a model
def _grid_moments(log_density, lim=6.0, num=400):
    g = np.linspace(-lim, lim, num)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    lp = np.asarray(log_density(pts), np.float64)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    pts = np.asarray(pts, np.float64)
    mean = w @ pts
    var = w @ (pts - mean) ** 2
    return mean, var


@pytest.fixture(scope="module")
def neural_prior_model():
    net = ne.nn.EnergyMLP(2, (16, 16), rngs=nnx.Rngs(3))
    base = dist.Normal(jnp.zeros(2), 1.5).to_event(1)
    y = jnp.array([0.8, -0.4])

    def model():
        energy = nnx_module("energy", net)
        z = numpyro.sample("z", ne.EnergyDistribution(energy, (2,), base_dist=base))
        numpyro.sample("y", dist.Normal(z, 0.7).to_event(1), obs=y)

    def log_posterior(z):
        return -net(z) + base.log_prob(z) + dist.Normal(z, 0.7).to_event(1).log_prob(y)

    return model, _grid_moments(log_posterior)


@pytest.mark.parametrize("kernel_cls", [ne.MALA, NUTS])
def test_neural_energy_prior_latent_is_sampled_correctly(
    neural_prior_model, kernel_cls
):
    model, (mean, var) = neural_prior_model
    z = run_chains(kernel_cls(model), 500, 2000).get_samples(group_by_chain=True)["z"]
    # the truth by quadrature on a grid (2-D)
    assert_mean(z, mean, np.sqrt(var))
    assert_variance(z, var, kurtosis=4.0)


# ------------------------------------------------------------ bad input
def test_default_sample_is_accurate_for_an_energy_of_unknown_scale():
    # N(m, 4 I): the former default (100 unadjusted steps of 0.01 from N(0, I))
    # left the draws' mean 0.4 sd off; the default now tunes its step on all
    # chains and runs until the mean energy settles
    m = jnp.array([1.0, -2.0])
    d = ne.EnergyDistribution(lambda x: jnp.sum((x - m) ** 2, -1) / 8.0, (2,))
    num = 4000
    x, info = d.sample_with_diagnostics(jax.random.key(1), (num,))
    assert bool(info.converged) and 0.45 < float(info.accept_prob) < 0.7
    draws = np.asarray(x, np.float64).reshape(1, num, 2)  # independent chains
    assert_mean(draws, np.asarray(m), np.full(2, 2.0), k=4, min_ess=2000)
    assert_variance(draws, np.full(2, 4.0), k=4, min_ess=2000)
    # Predictive draws through sample() and gets the same law
    from numpyro.infer import Predictive

    def model():
        numpyro.sample("z", d)

    z = Predictive(model, num_samples=num)(jax.random.key(2))["z"]
    z = np.asarray(z, np.float64).reshape(1, num, 2)
    assert_mean(z, np.asarray(m), np.full(2, 2.0), k=4, min_ess=2000)


def test_sample_warns_when_its_chains_did_not_settle():
    d = ne.EnergyDistribution(
        lambda x: jnp.sum((x - 5.0) ** 2, -1), (2,), num_steps=4, step_size=1e-4
    )
    with pytest.warns(RuntimeWarning, match="may not have mixed: after 4 sampling"):
        d.sample(jax.random.key(0), (500,))
    # inside jit too
    with pytest.warns(RuntimeWarning, match="may not have mixed"):
        jax.block_until_ready(jax.jit(lambda k: d.sample(k, (500,)))(jax.random.key(1)))


def test_energy_distribution_bad_input():
    with pytest.raises(ValueError, match="callable"):
        ne.EnergyDistribution(3.0, (2,))
    with pytest.raises(ValueError, match="step_size"):
        ne.EnergyDistribution(quadratic_energy, (2,), step_size=0.0)
    with pytest.raises(ValueError, match="num_steps"):
        ne.EnergyDistribution(quadratic_energy, (2,), num_steps=0)
    with pytest.raises(ValueError, match="event_shape"):
        ne.EnergyDistribution(quadratic_energy, (2,), base_dist=dist.Normal(0.0, 1.0))


# ----------------------------------------------------------- scores
WEIGHTS = np.array([0.8, 0.2])
CENTRES = np.array([[5.0, 5.0], [-5.0, -5.0]])


def mixture_score(x, sigma):
    """Exact score of 0.8 N((5,5), I) + 0.2 N((-5,-5), I) convolved with N(0, sigma^2 I)."""
    var = 1.0 + sigma**2
    log_w = (
        jnp.log(jnp.asarray(WEIGHTS, x.dtype))
        - 0.5
        * jnp.sum((x[..., None, :] - jnp.asarray(CENTRES, x.dtype)) ** 2, -1)
        / var
    )
    resp = jax.nn.softmax(log_w, -1)
    return (resp @ jnp.asarray(CENTRES, x.dtype) - x) / var


def test_annealed_langevin_recovers_mode_weights_plain_langevin_does_not():
    num, steps = 5000, 100
    sigmas = jnp.geomspace(20.0, 0.1, 10)
    init = jax.random.uniform(jax.random.key(0), (num, 2), minval=-8.0, maxval=8.0)
    x = ne.noise_annealed_langevin(
        jax.random.key(1), mixture_score, init, sigmas, 5e-3, steps
    )
    frac = float(jnp.mean(x[:, 0] > 0))
    assert abs(frac - 0.8) < 0.03
    # plain Langevin on grad log p with the same budget (10 x 100 steps at the
    # smallest level's step size... and a generous larger step): weights are lost
    for step_size in (5e-3, 0.1):
        plain = ne.noise_annealed_langevin(
            jax.random.key(1), mixture_score, init, sigmas[-1:], step_size, steps * 10
        )
        assert abs(float(jnp.mean(plain[:, 0] > 0)) - 0.8) > 0.15


def test_annealed_langevin_trajectory_and_denoise():
    init = jnp.zeros((7, 2))
    sigmas = jnp.array([2.0, 1.0, 0.5])
    x, traj = ne.noise_annealed_langevin(
        jax.random.key(0), mixture_score, init, sigmas, 0.01, 5, return_trajectory=True
    )
    assert traj.shape == (3, 7, 2)
    np.testing.assert_allclose(traj[-1], x)
    d = ne.noise_annealed_langevin(
        jax.random.key(0), mixture_score, init, sigmas, 0.01, 5, denoise=True
    )
    np.testing.assert_allclose(d, x + 0.25 * mixture_score(x, 0.5), rtol=1e-5)
    # pure and jittable, with noise levels traced or closed over
    closed = jax.jit(
        lambda key, x: ne.noise_annealed_langevin(
            key, mixture_score, x, sigmas, 0.01, 5
        )
    )
    np.testing.assert_allclose(closed(jax.random.key(0), init), x, rtol=1e-6)
    f = jax.jit(ne.noise_annealed_langevin, static_argnums=(1, 5))
    np.testing.assert_allclose(
        f(jax.random.key(0), mixture_score, init, sigmas, 0.01, 5), x, rtol=1e-6
    )


def test_score_distribution():
    d = ne.ScoreDistribution(
        mixture_score,
        (2,),
        jnp.geomspace(20.0, 0.1, 10),
        step_size=5e-3,
        num_steps_per_level=100,
        init_dist=dist.Uniform(-8.0 * jnp.ones(2), 8.0).to_event(1),
    )
    x = d.sample(jax.random.key(0), (2000,))
    assert x.shape == (2000, 2)
    assert abs(float(jnp.mean(x[:, 0] > 0)) - 0.8) < 0.04
    with pytest.raises(ValueError, match="normalising constant"):
        d.log_prob(x)


@pytest.mark.parametrize(
    "sigmas, match",
    [
        ([0.1, 1.0], "strictly decreasing"),
        ([1.0, -0.5], "positive"),
        ([], "non-empty"),
        ([[1.0, 0.5]], "1-D"),
    ],
)
def test_bad_sigmas(sigmas, match):
    with pytest.raises(ValueError, match=match):
        ne.noise_annealed_langevin(
            jax.random.key(0),
            mixture_score,
            jnp.zeros((2, 2)),
            jnp.asarray(sigmas),
            0.1,
            5,
        )
    with pytest.raises(ValueError, match=match):
        ne.ScoreDistribution(mixture_score, (2,), jnp.asarray(sigmas))


def test_bad_annealed_langevin_steps():
    with pytest.raises(ValueError, match="step_size"):
        ne.noise_annealed_langevin(
            jax.random.key(0),
            mixture_score,
            jnp.zeros((2, 2)),
            jnp.array([1.0]),
            0.0,
            5,
        )
    with pytest.raises(ValueError, match="num_steps_per_level"):
        ne.noise_annealed_langevin(
            jax.random.key(0),
            mixture_score,
            jnp.zeros((2, 2)),
            jnp.array([1.0]),
            0.1,
            0,
        )


def test_contrastive_log_prob_gradient_is_the_normalised_one():
    # E(x) = (x - mu)^2 / (2 s^2): the normalised log density is log N(x; mu, s),
    # whose gradient in s includes -d log Z / d log s = -1 per point
    z = jnp.linspace(-1.0, 2.0, 20)[:, None]
    params = {"mu": jnp.array(0.5), "log_s": jnp.log(0.8)}

    def log_prob(params, key, contrastive):
        energy = lambda x: (
            0.5 * jnp.sum(((x - params["mu"]) / jnp.exp(params["log_s"])) ** 2, -1)
        )
        d = ne.EnergyDistribution(
            energy,
            (1,),
            num_steps=200,
            step_size=0.05,
            adjusted=True,
            contrastive=contrastive,
            num_contrastive_samples=64,
            rng_key=key,
        )
        return d.log_prob(z).sum()

    def exact(params):
        return (
            dist.Normal(params["mu"], jnp.exp(params["log_s"])).log_prob(z[:, 0]).sum()
        )

    truth = jax.grad(exact)(params)
    keys = jax.random.split(jax.random.key(0), 100)
    grads = jax.jit(
        jax.vmap(jax.grad(log_prob), in_axes=(None, 0, None)), static_argnums=2
    )(params, keys, True)
    for name in ("mu", "log_s"):
        g = np.asarray(grads[name], np.float64)  # independent estimates over keys
        assert abs(g.mean() - float(truth[name])) < 5 * g.std() / np.sqrt(g.size) + 1e-3
    # without the contrastive term the scale's gradient misses d log Z / d log s
    plain = jax.grad(log_prob)(params, keys[0], False)
    assert abs(float(plain["log_s"]) - float(truth["log_s"]) - z.shape[0]) < 1e-3
    with pytest.raises(ValueError, match="random key"):
        ne.EnergyDistribution(quadratic_energy, (2,), contrastive=True).log_prob(
            jnp.zeros(2)
        )


def test_a_contrastive_log_prob_runs_no_loop_of_unknown_length_nor_callback():
    # with the default num_steps its draws ran the stopping rule's while_loop
    # and a host callback (the mixing warning) inside every gradient
    d = ne.EnergyDistribution(
        quadratic_energy,
        (2,),
        contrastive=True,
        num_contrastive_samples=16,
        rng_key=jax.random.key(0),
    )
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: d.log_prob(x).sum()))(jnp.ones(2)))
    assert "while" not in jaxpr and "callback" not in jaxpr
