"""The forward SDEs' closed-form marginals: the moment equations of a linear
SDE hold exactly (automatic differentiation), the marginals match an
Euler-Maruyama simulation, and the priors are what the marginals reach."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from numpyro_ebm.core import sde as sdes

SDES = {
    "ve": sdes.ve_sde(0.01, 50.0),
    "vp": sdes.vp_sde(0.1, 20.0),
    "subvp": sdes.subvp_sde(0.1, 20.0),
}


@pytest.mark.parametrize("name", list(SDES))
def test_marginals_solve_the_moment_equations(name):
    # dx = a x dt + g dW: mean' = a mean, (std^2)' = 2 a std^2 + g^2
    sde = SDES[name]
    for t in np.linspace(0.05, 1.0, 8):
        t = jnp.asarray(t)
        mean_dot = jax.grad(lambda s: sde.marginal(s)[0])(t)
        var_dot = jax.grad(lambda s: sde.marginal(s)[1] ** 2)(t)
        mean, std = sde.marginal(t)
        a, g = sde.drift_coefficient(t), sde.diffusion(t)
        np.testing.assert_allclose(mean_dot, a * mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(var_dot, 2 * a * std**2 + g**2, rtol=1e-4, atol=1e-5)
    mean0, std0 = sde.marginal(0.0)
    assert float(mean0) == 1.0 and float(std0) == 0.0


@pytest.mark.optimized
@pytest.mark.parametrize("name", list(SDES))
def test_euler_maruyama_reaches_the_marginal(name):
    # 20,000 paths from x0 = 1 (one coordinate) with 2000 steps to t = 0.5:
    # mean and variance within 5 standard errors of the closed form
    sde, n, steps, t_end = SDES[name], 20_000, 2000, 0.5
    dt = t_end / steps

    def step(x, inputs):
        t, key = inputs
        noise = jax.random.normal(key, x.shape)
        return x + sde.drift(x, t) * dt + sde.diffusion(t) * jnp.sqrt(dt) * noise, None

    times = jnp.arange(steps) * dt
    keys = jax.random.split(jax.random.key(0), steps)
    x, _ = jax.lax.scan(step, jnp.ones((n, 1)), (times, keys))
    mean, std = (float(v) for v in sde.marginal(t_end))
    x = np.asarray(x[:, 0], np.float64)
    assert abs(x.mean() - mean) < 5 * std / np.sqrt(n) + 1e-3 * std, (x.mean(), mean)
    assert abs(x.var() / std**2 - 1) < 5 * np.sqrt(2 / n) + 5e-3, (x.var(), std**2)


@pytest.mark.parametrize("name", list(SDES))
def test_the_prior_is_where_the_marginal_ends(name):
    sde = SDES[name]
    mean, std = sde.marginal(1.0)
    # x_1 | x_0 with data of scale 1: the data's trace is all but gone
    assert float(mean) == 1.0 if name == "ve" else float(mean) < 0.01
    np.testing.assert_allclose(float(std), sde.prior_std, rtol=1e-3)
    x = sde.sample_prior(jax.random.key(0), (50_000, 2))
    np.testing.assert_allclose(np.std(np.asarray(x)), sde.prior_std, rtol=0.02)
    logp = sde.prior_log_prob(jnp.zeros((3, 2)))
    np.testing.assert_allclose(logp, -np.log(2 * np.pi * sde.prior_std**2), rtol=1e-6)


def test_perturb_draws_the_marginal_per_example():
    sde = SDES["vp"]
    t = jnp.array([0.1, 0.9])
    x0 = jnp.ones((2, 3))
    xt, z = sde.perturb(jax.random.key(0), x0, t)
    mean, std = sde.marginal(t)
    np.testing.assert_allclose(xt, mean[:, None] * x0 + std[:, None] * z, rtol=1e-6)


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (sdes.ve_sde, dict(sigma_min=1.0, sigma_max=0.5), "below"),
        (sdes.ve_sde, dict(sigma_min=0.0), "sigma_min"),
        (sdes.vp_sde, dict(beta_min=5.0, beta_max=1.0), "below"),
        (sdes.subvp_sde, dict(beta_max=-1.0), "beta_max"),
    ],
)
def test_bad_schedules_are_refused(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


# ------------------------------------------- continuous denoising score matching
@pytest.mark.parametrize("name", list(SDES))
def test_diffusion_score_matching_is_minimised_by_the_true_score(name):
    # data N(0, c^2 I): x_t ~ N(0, v(t) I) with v = mean^2 c^2 + std^2, whose
    # score is -x / v. Over the family s = -theta x / v the loss is quadratic
    # in theta with its minimum at theta = 1; the minimiser is estimated from
    # the loss's first two derivatives at theta = 1
    from numpyro_ebm.learn.score_matching import diffusion_score_matching_loss

    sde, c = SDES[name], 2.0
    x = c * jax.random.normal(jax.random.key(0), (200_000, 3))

    def loss(theta):
        def score(xt, t):
            mean, std = sde.marginal(t)
            return -theta * xt / (mean**2 * c**2 + std**2)[:, None]

        return diffusion_score_matching_loss(jax.random.key(1), score, x, sde)

    slope, curvature = jax.grad(loss)(1.0), jax.grad(jax.grad(loss))(1.0)
    theta = 1.0 - float(slope) / float(curvature)
    assert abs(theta - 1.0) < 0.01, theta
    # a wrong scale of the score is worse
    assert float(loss(1.2)) > float(loss(1.0)) < float(loss(0.8))


def test_score_matching_trains_a_time_conditional_network_under_an_sde():
    # on N(0, c^2 I) data under VP the score of x_t is -x / (c^2 mean(t)^2 +
    # std(t)^2); a net s = -x / (a mean(t)^2 + b std(t)^2) must learn a = c^2
    # and b = 1 through the trainer (network called as net(x, t))
    import optax
    from flax import nnx

    import numpyro_ebm as ne

    sde, c = SDES["vp"], 2.0

    class Gaussian(nnx.Module):
        def __init__(self):
            self.log_ab = nnx.Param(jnp.zeros(2))

        def __call__(self, x, t):
            mean, std = sde.marginal(t)
            a, b = jnp.exp(self.log_ab[...])
            return -x / (a * mean**2 + b * std**2)[:, None]

    data = c * jax.random.normal(jax.random.key(0), (8192, 2))
    objective = ne.DiffusionScoreMatching(sde)
    result = ne.ScoreMatching(Gaussian(), optax.adam(3e-2), objective).run(
        jax.random.key(1), 1000, data, batch_size=1024, progress_bar=False
    )
    a, b = np.exp(np.asarray(result.module.log_ab[...]))
    assert abs(a - c**2) < 0.1 * c**2 and abs(b - 1.0) < 0.05, (a, b)


def test_diffusion_objective_refuses_bad_input():
    import numpyro_ebm as ne

    with pytest.raises(TypeError, match="forward SDE"):
        ne.DiffusionScoreMatching("vp")
    with pytest.raises(ValueError, match="eps"):
        ne.DiffusionScoreMatching(SDES["vp"], eps=1.5)


# ---------------------------------------------------------- reverse-time sampling
def _gaussian_score(sde, c):
    """The exact score of x_t when x_0 ~ N(0, c^2 I)."""

    def score(x, t):
        mean, std = sde.marginal(t)
        return -x / (mean**2 * c**2 + std**2)[:, None]

    return score


@pytest.mark.optimized
@pytest.mark.parametrize("name", list(SDES))
def test_the_reverse_sde_with_the_exact_score_returns_the_data_law(name):
    # predictor alone, 1000 steps: 40,000 iid coordinates of N(0, c^2); the
    # Euler-Maruyama error is under 1% of the variance at this step
    sde, c, n = SDES[name], 2.0, 20_000
    x1 = sde.sample_prior(jax.random.key(0), (n, 2))
    x0 = sdes.pc_sample(
        jax.random.key(1), _gaussian_score(sde, c), sde, x1, 1000, corrector_steps=0
    )
    x0 = np.asarray(x0, np.float64).ravel()
    se = np.sqrt(2 / x0.size)
    assert abs(x0.mean()) < 5 * c / np.sqrt(x0.size), x0.mean()
    assert abs(x0.var() / c**2 - 1) < 5 * se + 0.01, x0.var() / c**2


@pytest.mark.optimized
def test_the_corrector_widens_by_its_unadjusted_langevin_bias():
    # one corrector per step at snr r widens a Gaussian by at most 1 / (1 - r^2)
    sde, c, n = SDES["vp"], 2.0, 20_000
    x1 = sde.sample_prior(jax.random.key(0), (n, 2))
    se = np.sqrt(2 / (2 * n))
    ratios = []
    for snr in (0.16, 0.05):
        x0 = sdes.pc_sample(
            jax.random.key(1), _gaussian_score(sde, c), sde, x1, 200, snr=snr
        )
        ratio = float(np.var(np.asarray(x0, np.float64))) / c**2
        assert 1 - 5 * se - 0.01 < ratio < 1 / (1 - snr**2) + 5 * se, (snr, ratio)
        ratios.append(ratio)
    assert ratios[1] < ratios[0]


def test_pc_sample_refuses_bad_input():
    sde = SDES["vp"]
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="shape"):
        sdes.pc_sample(jax.random.key(0), lambda x, t: x[:, :1], sde, x, 10)
    with pytest.raises(ValueError, match="batch"):
        sdes.pc_sample(jax.random.key(0), lambda x, t: -x, sde, jnp.zeros(2), 10)
    with pytest.raises(ValueError, match="eps"):
        sdes.pc_sample(jax.random.key(0), lambda x, t: -x, sde, x, 10, eps=1.0)
    key, score = jax.random.key(0), lambda x, t: -x
    for times, match in (
        (jnp.array([0.5, 0.2, 1.0]), "strictly increasing"),
        (jnp.array([0.0, 0.5, 1.0]), r"in \(0, 1\]"),
        (jnp.array([0.1, 0.5, 1.5]), r"in \(0, 1\]"),
        (jnp.array([0.5]), "at least two"),
    ):
        with pytest.raises(ValueError, match=match):
            sdes.pc_sample(key, score, sde, x, times=times)
    with pytest.raises(ValueError, match=r"`t` must be in \(0, 1\]"):
        sdes.reverse_step(key, score, sde, x, 1.2, 0.01)
    with pytest.raises(ValueError, match="`dt` must be in"):
        sdes.reverse_step(key, score, sde, x, 0.01, 0.02)
    with pytest.raises(ValueError, match=r"`t` must be in \(0, 1\]"):
        sdes.langevin_correct(key, score, x, 0.0, 0.16)


def test_a_custom_time_grid_is_the_uniform_one_when_uniform():
    sde, score = SDES["vp"], _gaussian_score(SDES["vp"], 2.0)
    x1 = sde.sample_prior(jax.random.key(0), (64, 2))
    uniform = sdes.pc_sample(jax.random.key(1), score, sde, x1, 50, eps=1e-3)
    grid = jnp.linspace(1.0, 1e-3, 51)[::-1]
    custom = sdes.pc_sample(jax.random.key(1), score, sde, x1, times=grid)
    np.testing.assert_allclose(custom, uniform, rtol=1e-4, atol=1e-5)


def test_a_run_that_goes_non_finite_names_the_step():
    sde = SDES["vp"]

    def blows_up(x, t):  # finite until t < 0.5
        return jnp.where(t[:, None] < 0.5, jnp.inf, -x)

    x1 = sde.sample_prior(jax.random.key(0), (8, 2))
    with pytest.raises(FloatingPointError, match=r"step 5\d of 100"):
        sdes.pc_sample(jax.random.key(1), blows_up, sde, x1, 100, corrector_steps=0)


@pytest.mark.parametrize("name", list(SDES))
def test_noise_time_inverts_the_noise_to_signal_ratio(name):
    sde = SDES[name]
    t = jnp.linspace(1e-3, 1.0, 50)
    np.testing.assert_allclose(sde.noise_time(sde.noise_level(t)), t, rtol=2e-4)


@pytest.mark.parametrize("name", list(SDES))
def test_a_time_score_becomes_the_noise_conditional_score(name):
    """Data N(0, c^2 I): the noise-conditional score is -x / (c^2 + sigma^2)
    at every sigma, whichever SDE the time-conditional score belongs to."""
    sde, c = SDES[name], 2.0
    score = sde.noise_conditional(_gaussian_score(sde, c))
    x = jax.random.normal(jax.random.key(0), (16, 3))
    for sigma in (0.02, 0.5, 3.0):
        np.testing.assert_allclose(
            score(x, sigma), -x / (c**2 + sigma**2), rtol=2e-3, atol=1e-6
        )
    # learned on data / 4, i.e. N(0, (c / 4)^2 I): the same score in data units
    scaled = sde.noise_conditional(_gaussian_score(sde, c / 4), scale=4.0)
    for sigma in (0.02, 0.5, 3.0):
        np.testing.assert_allclose(
            scaled(x, sigma), -x / (c**2 + sigma**2), rtol=2e-3, atol=1e-6
        )
