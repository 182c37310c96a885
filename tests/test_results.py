"""Every learner and MML estimator carries one state type and returns a result
of one family, which ArviZ reads."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx

import numpyro_ebm as ne


def toy_model(y):
    theta = numpyro.param("theta", 0.0)
    x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([y.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)


Y = jnp.linspace(-1.0, 2.0, 20)
DATA = jax.random.normal(jax.random.key(0), (128, 2))


@pytest.fixture(scope="module")
def learner_result():
    learner = ne.ScoreMatching(
        ne.nn.EnergyMLP(2, (8,), rngs=nnx.Rngs(0)), optax.adam(1e-3)
    )
    return learner, learner.run(
        jax.random.key(1), 30, DATA, batch_size=32, progress_bar=False
    )


@pytest.fixture(scope="module", params=["PGD", "SOUL"])
def mml_result(request):
    estimator = getattr(ne, request.param)(toy_model, num_particles=4)
    return estimator, estimator.run(jax.random.key(0), 60, Y, progress_bar=False)


def test_one_state_type_and_one_result_family(learner_result, mml_result):
    _, trained = learner_result
    _, fitted = mml_result
    for result in (trained, fitted):
        assert isinstance(result, ne.RunResult)
        assert isinstance(result.state, ne.TrainState)
        assert set(result.history) >= {"loss"} or "log_joint" in result.history
    assert isinstance(trained, ne.TrainResult)
    assert isinstance(trained.module, nnx.Module)
    assert isinstance(fitted, ne.MMLRunResult)
    assert isinstance(fitted.state.sampler_state, ne.ParticleState)
    assert fitted.particles["x"].shape == (4, 20)
    assert fitted.state.sampler_state.particles["x"].shape == (4, 20)


def test_learner_runs_convert_to_arviz(learner_result):
    _, result = learner_result
    tree = result.to_datatree(burn_in=10)
    loss = tree["sample_stats"]["loss"]
    assert loss.shape == (1, 20)
    np.testing.assert_allclose(loss.values[0], np.asarray(result.history["loss"])[10:])
    assert "posterior" not in tree.children
    with pytest.raises(ValueError, match="burn_in"):
        result.to_datatree(burn_in=-1)


def test_mml_runs_convert_to_arviz(mml_result):
    _, result = mml_result
    tree = result.to_datatree(burn_in=20)
    theta = tree["posterior"]["theta"]
    assert theta.shape == (1, 40)
    np.testing.assert_allclose(
        theta.values[0], np.asarray(result.history["params"]["theta"])[20:]
    )
    assert tree["latent_particles"]["x"].shape == (4, 1, 20)
    assert tree["sample_stats"]["log_joint"].shape == (1, 40)


def test_mml_runs_continue_from_their_state(mml_result):
    estimator, result = mml_result
    # 60 + 40 iterations from the state equal one run of 100
    more = estimator.run(
        jax.random.key(0), 40, Y, init_state=result.state, progress_bar=False
    )
    whole = estimator.run(jax.random.key(0), 100, Y, progress_bar=False)
    assert int(more.state.step) == 100
    for a, b in zip(
        jax.tree.leaves(more.state), jax.tree.leaves(whole.state), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_state_of_the_other_kind_is_refused(learner_result, mml_result):
    learner, trained = learner_result
    estimator, fitted = mml_result
    with pytest.raises(TypeError, match="holding no particles"):
        estimator.run(
            jax.random.key(0), 5, Y, init_state=trained.state, progress_bar=False
        )
    with pytest.raises(ValueError, match="made for another network"):
        learner.run(
            jax.random.key(0),
            5,
            DATA,
            batch_size=32,
            init_state=fitted.state,
            progress_bar=False,
        )
    with pytest.raises(TypeError, match="state of a previous run"):
        estimator.run(jax.random.key(0), 5, Y, init_state=(), progress_bar=False)
