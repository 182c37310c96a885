"""Score-matching objectives and the ScoreMatching trainer."""

import os
import shutil

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import numpyro_ebm as ne

DIM = 2
MU = np.array([1.0, -2.0])
COV = np.array([[1.5, 0.6], [0.6, 0.8]])


def gaussian_data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.multivariate_normal(MU, COV, size=n), jnp.float32)


def linear_score(params, x):
    # s(x) = -P (x - m): the score family of Gaussian models
    return -(x - params["m"]) @ params["P"].T


# ------------------------------------------------------------------ exact SM
def test_exact_score_matching_minimiser_is_the_mle():
    x = gaussian_data()
    mean = x.mean(0)
    cov_mle = jnp.cov(x.T, bias=True)
    mle = {"m": mean, "P": jnp.linalg.inv(cov_mle)}
    loss = lambda p: ne.exact_score_matching_loss(lambda y: linear_score(p, y), x)
    grads = jax.grad(loss)(mle)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-4
    # and it is a strict minimum: moving away increases the loss
    for direction in (
        {"m": jnp.ones(2), "P": jnp.zeros((2, 2))},
        {"m": jnp.zeros(2), "P": jnp.eye(2)},
    ):
        moved = jax.tree.map(lambda a, b: a + 0.05 * b, mle, direction)
        assert loss(moved) > loss(mle)


def test_trainer_reaches_the_mle_with_exact_score_matching():
    x = gaussian_data(n=1000)
    init = {"m": jnp.zeros(2), "P": jnp.eye(2)}
    sm = ne.ScoreMatching(
        (linear_score, init), optax.adam(0.05), ne.ExactScoreMatching()
    )
    result = sm.run(jax.random.key(0), 600, x, batch_size=1000, progress_bar=False)
    np.testing.assert_allclose(result.params["m"], x.mean(0), atol=1e-2)
    np.testing.assert_allclose(
        result.params["P"], np.linalg.inv(np.cov(np.asarray(x).T, bias=True)), atol=2e-2
    )
    assert result.history["loss"][-1] < result.history["loss"][0]
    fn, params = result.module
    assert fn is linear_score


# ---------------------------------------------------------------- sliced SM
@pytest.fixture(scope="module")
def energy_net():
    return ne.nn.EnergyMLP(DIM, (16, 16), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("variance_reduced", [True, False])
def test_sliced_equals_exact_in_expectation(energy_net, distribution, variance_reduced):
    score = ne.score_from_energy(energy_net)
    x = gaussian_data(n=64)
    exact = float(ne.exact_score_matching_loss(score, x))
    keys = jax.random.split(jax.random.key(1), 2000)
    sliced = jax.jit(
        jax.vmap(
            lambda k: ne.sliced_score_matching_loss(
                k, score, x, 1, distribution, variance_reduced
            )
        )
    )(keys)
    sliced = np.asarray(sliced, np.float64)  # independent draws over v
    se = sliced.std() / np.sqrt(sliced.size)
    assert sliced.std() > 0
    assert abs(sliced.mean() - exact) < 5 * se


# --------------------------------------------------------------- denoising
def test_dsm_optimum_is_the_noised_score():
    # population DSM gradient vanishes at the noised score (Sigma + s^2 I)^-1
    # and not at the clean one Sigma^-1
    sigma = 0.7
    x = gaussian_data(n=100_000, seed=1)
    cov_noised = COV + sigma**2 * np.eye(2)
    noised = {
        "m": jnp.asarray(MU, jnp.float32),
        "P": jnp.asarray(np.linalg.inv(cov_noised), jnp.float32),
    }
    clean = {"m": noised["m"], "P": jnp.asarray(np.linalg.inv(COV), jnp.float32)}

    def grad_draws(params):
        def one(key, xb):
            loss = lambda p: ne.denoising_score_matching_loss(
                key, lambda y: linear_score(p, y), xb, sigma
            )
            return jax.flatten_util.ravel_pytree(jax.grad(loss)(params))[0]

        keys = jax.random.split(jax.random.key(2), 100)
        return np.asarray(
            jax.jit(jax.vmap(one))(keys, x.reshape(100, 1000, 2)), np.float64
        )

    g = grad_draws(noised)  # 100 independent minibatch gradients
    assert np.all(np.abs(g.mean(0)) < 5 * g.std(0) / np.sqrt(len(g)))
    g = grad_draws(clean)
    assert np.any(np.abs(g.mean(0)) > 10 * g.std(0) / np.sqrt(len(g)))


def test_multi_noise_dsm_trains_a_noise_conditional_net():
    x = gaussian_data(n=2000)
    sigmas = jnp.geomspace(3.0, 0.1, 6)
    net = ne.nn.ScoreMLP(DIM, (64, 64), rngs=nnx.Rngs(1))
    sm = ne.ScoreMatching(
        net, optax.adam(3e-3), ne.DenoisingScoreMatching(sigmas=sigmas)
    )
    result = sm.run(jax.random.key(0), 1500, x, batch_size=128, progress_bar=False)
    # compare with the exact noised score at a middle level, on data points
    s = 0.6
    xs = x[:200] + s * jax.random.normal(jax.random.key(3), (200, 2))
    truth = -(xs - MU) @ np.linalg.inv(COV + s**2 * np.eye(2)).T
    err = jnp.mean(jnp.sum((result.module(xs, s) - truth) ** 2, -1))
    scale = jnp.mean(jnp.sum(truth**2, -1))
    assert float(err / scale) < 0.05
    first, last = (
        result.history["loss"][:100].mean(),
        result.history["loss"][-100:].mean(),
    )
    assert last < first


# ------------------------------------------------------------- bad input
def test_bad_input(energy_net):
    sm = ne.ScoreMatching(energy_net, optax.adam(1e-3))
    x = gaussian_data(n=100)
    with pytest.raises(ValueError, match="NaN"):
        sm.run(jax.random.key(0), 10, x.at[3, 1].set(jnp.nan), batch_size=16)
    with pytest.raises(ValueError, match="cannot be applied to data"):
        sm.run(jax.random.key(0), 10, jnp.ones((100, 3)), batch_size=16)
    with pytest.raises(ValueError, match="larger than the data"):
        sm.run(jax.random.key(0), 10, x, batch_size=1000)
    with pytest.raises(ValueError, match="num_steps"):
        sm.run(jax.random.key(0), 0, x, batch_size=16, progress_bar=False)
    with pytest.raises(ValueError, match="shape"):
        sm.run(jax.random.key(0), 10, x[:, 0], batch_size=16)
    with pytest.raises(ValueError, match="positive"):
        ne.DenoisingScoreMatching(sigma=0.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        ne.DenoisingScoreMatching(sigmas=[0.1, 1.0])
    with pytest.raises(ValueError, match="exactly one"):
        ne.DenoisingScoreMatching()
    with pytest.raises(ValueError, match="optax"):
        ne.ScoreMatching(energy_net, "adam")
    with pytest.raises(ValueError, match="nnx.Module"):
        ne.ScoreMatching(lambda x: x, optax.adam(1e-3))


# ---------------------------------------------- checkpoints and devices
def _sm(objective="sliced"):
    if objective == "diffusion":  # a time-conditional net under an SDE
        from numpyro_ebm.core.sde import vp_sde

        sde = vp_sde()
        net = ne.nn.DiffusionScoreMLP(DIM, sde, (16,), rngs=nnx.Rngs(0))
        return ne.ScoreMatching(net, optax.adam(1e-2), ne.DiffusionScoreMatching(sde))
    net = ne.nn.EnergyMLP(DIM, (16,), rngs=nnx.Rngs(0))
    return ne.ScoreMatching(net, optax.adam(1e-2), ne.SlicedScoreMatching())


@pytest.mark.parametrize("objective", ["sliced", "diffusion"])
def test_checkpoint_resume_is_bit_identical(tmp_path, objective):
    x = gaussian_data(n=256)
    # the plain and the checkpointed run by one learner (one compiled loop);
    # the resumed run by a new one, as a restarted process builds
    first = _sm(objective)
    run = lambda learner, **kw: learner.run(
        jax.random.key(0), 40, x, batch_size=32, progress_bar=False, **kw
    )
    plain = run(first)
    ckpt = str(tmp_path / "ckpt")
    full = run(first, checkpoint_dir=ckpt, checkpoint_every=10)
    assert sorted(os.listdir(ckpt)) == ["10", "20", "30", "40", "run.json"]
    # interrupt: drop the final checkpoint, run again: resumes at step 30
    shutil.rmtree(os.path.join(ckpt, "40"))
    resumed = run(_sm(objective), checkpoint_dir=ckpt, checkpoint_every=10)
    for result in (full, resumed):
        for a, b in zip(
            jax.tree.leaves(plain.params), jax.tree.leaves(result.params), strict=True
        ):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(plain.history["loss"], result.history["loss"])
    assert int(resumed.state.step) == 40


@pytest.mark.parametrize("objective", ["sliced", "diffusion"])
def test_data_parallel_matches_single_device(objective):
    assert jax.device_count() >= 4
    x = gaussian_data(n=256)
    runs = [
        _sm(objective).run(
            jax.random.key(0),
            30,
            x,
            batch_size=32,
            progress_bar=False,
            num_devices=n,
        )
        for n in (None, 4)
    ]
    for a, b in zip(
        jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        _sm().run(
            jax.random.key(0), 5, x, batch_size=30, progress_bar=False, num_devices=4
        )


def test_divergent_score_matching_stops_and_names_the_step():
    data = ne.datasets.two_moons().sample(jax.random.key(0), 2000)
    sm = ne.ScoreMatching(
        ne.nn.EnergyMLP(2, (32, 32), rngs=nnx.Rngs(0)), optax.sgd(10.0)
    )
    with pytest.raises(
        FloatingPointError, match=r"score matching diverged at step \d+: the loss"
    ):
        sm.run(jax.random.key(1), 300, data, batch_size=64, progress_bar=False)


@pytest.mark.parametrize(
    "objective",
    [
        ne.ExactScoreMatching(),
        ne.SlicedScoreMatching(),
        ne.DenoisingScoreMatching(sigma=0.3),
    ],
    ids=["exact", "sliced", "denoising"],
)
def test_data_of_any_event_shape(objective):
    # 2 x 2 "images" and the same points as vectors give the same training
    images = jax.random.normal(jax.random.key(0), (128, 2, 2))
    vectors = images.reshape(128, 4)
    net = ne.nn.EnergyMLP(4, (8,), rngs=nnx.Rngs(0))
    apply, params, _ = ne.learn.training.split_network(net)
    on_images = lambda p, x: apply(p, x.reshape(x.shape[0], -1))
    results = [
        ne.ScoreMatching((fn, params), optax.adam(1e-2), objective).run(
            jax.random.key(1), 20, data, batch_size=16, progress_bar=False
        )
        for fn, data in ((on_images, images), (apply, vectors))
    ]
    np.testing.assert_allclose(
        results[0].history["loss"], results[1].history["loss"], rtol=1e-5, atol=1e-6
    )
