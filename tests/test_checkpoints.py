"""Checkpoints resume only the run that made them, and resume it the way
people use them: longer runs continue, other runs are refused."""

import os

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx

import numpyro_ebm as ne


def _data(seed=0, n=256):
    return jax.random.normal(jax.random.key(seed), (n, 2)) * jnp.array([1.0, 0.5])


def _learner(learning_rate=1e-2, width=16):
    net = ne.nn.EnergyMLP(2, (width,), rngs=nnx.Rngs(0))
    return ne.ScoreMatching(net, optax.adam(learning_rate), ne.SlicedScoreMatching())


def _train(learner, num_steps, *, key=0, data=None, **kw):
    return learner.run(
        jax.random.key(key),
        num_steps,
        _data() if data is None else data,
        batch_size=32,
        progress_bar=False,
        **kw,
    )


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_longer_run_continues_from_the_checkpoint(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    learner = _learner()
    _train(learner, 20, checkpoint_dir=ckpt)
    longer = _train(learner, 40, checkpoint_dir=ckpt)
    plain = _train(_learner(), 40)
    _assert_same(plain.state, longer.state)
    np.testing.assert_array_equal(plain.history["loss"], longer.history["loss"])
    # a shorter run than the checkpoint cannot be served from it
    with pytest.raises(ValueError, match="beyond num_steps=30"):
        _train(learner, 30, checkpoint_dir=ckpt)


def test_checkpoints_land_on_multiples_of_checkpoint_every_and_are_kept(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    _learner().run(
        jax.random.key(0),
        40,
        _data(),
        batch_size=32,
        progress_bar=True,  # 20 chunks of 2 steps: the policy must not follow them
        checkpoint_dir=ckpt,
        checkpoint_every=15,
    )
    steps = sorted(int(e) for e in os.listdir(ckpt) if e.isdigit())
    assert steps == [15, 30, 40]
    assert "run.json" in os.listdir(ckpt)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(key=1), "rng_key"),
        (dict(data=_data(seed=1)), "data"),
        (dict(learner=_learner(learning_rate=1.0)), "optimizer"),
    ],
    ids=["other-key", "other-data", "100x-learning-rate"],
)
def test_checkpoints_of_another_run_are_refused(tmp_path, change, match):
    ckpt = str(tmp_path / "ckpt")
    _train(_learner(), 20, checkpoint_dir=ckpt)
    learner = change.pop("learner", None) or _learner()
    with pytest.raises(ValueError, match=f"made by another run: .*{match}"):
        _train(learner, 20, checkpoint_dir=ckpt, **change)
    # asked to, the run starts afresh and gives its own result
    fresh = _train(learner, 20, checkpoint_dir=ckpt, resume=False, **change)
    plain = _train(learner, 20, **change)
    _assert_same(plain.params, fresh.params)


def test_bad_checkpoint_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="`checkpoint_every` needs `checkpoint_dir`"):
        _train(_learner(), 20, checkpoint_every=5)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="cannot be written to"):
        _train(_learner(), 20, checkpoint_dir=str(blocker / "ckpt"))


def test_init_state_of_another_network_is_named():
    state = _train(_learner(width=8), 5).state
    with pytest.raises(ValueError, match="made for another network: its params"):
        _train(_learner(width=16), 5, init_state=state)


def toy_model(y):
    theta = numpyro.param("theta", 0.0)
    x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([y.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)


def test_mml_estimators_checkpoint_and_resume(tmp_path):
    ckpt = str(tmp_path / "mml")
    y = jnp.linspace(-1.0, 2.0, 20)

    def run(n, estimator=None, **kw):
        if estimator is None:
            estimator = ne.PGD(toy_model, num_particles=4)
        return estimator.run(jax.random.key(0), n, y, progress_bar=False, **kw)

    run(100, checkpoint_dir=ckpt, checkpoint_every=50)
    # a new estimator resumes (as a restarted process would); the plain run
    # of the same length then reuses its compiled loop
    resumer = ne.PGD(toy_model, num_particles=4)
    longer = run(200, resumer, checkpoint_dir=ckpt, checkpoint_every=50)
    plain = run(200, resumer)
    _assert_same(plain.state, longer.state)
    np.testing.assert_array_equal(
        plain.history["params"]["theta"], longer.history["params"]["theta"]
    )
    with pytest.raises(ValueError, match="made by another run: .*data"):
        ne.PGD(toy_model, num_particles=4).run(
            jax.random.key(0), 200, y + 1.0, progress_bar=False, checkpoint_dir=ckpt
        )
    other = ne.PGD(toy_model, num_particles=3).init(jax.random.key(0), y)
    with pytest.raises(ValueError, match="another model, number of particles"):
        ne.PGD(toy_model, num_particles=4).run(
            jax.random.key(0), 10, y, init_state=other, progress_bar=False
        )


def test_a_checkpoint_of_another_model_or_network_is_refused(tmp_path):
    ckpt = str(tmp_path / "model")
    y = jnp.linspace(-1.0, 2.0, 20)

    def narrower(y):  # toy_model with another likelihood scale
        theta = numpyro.param("theta", 0.0)
        x = numpyro.sample(
            "x", dist.Normal(theta, 1.0).expand([y.shape[0]]).to_event(1)
        )
        numpyro.sample("y", dist.Normal(x, 0.5).to_event(1), obs=y)

    ne.PGD(toy_model, num_particles=4).run(
        jax.random.key(0), 20, y, progress_bar=False, checkpoint_dir=ckpt
    )
    with pytest.raises(ValueError, match="made by another run: .*model"):
        ne.PGD(narrower, num_particles=4).run(
            jax.random.key(0), 40, y, progress_bar=False, checkpoint_dir=ckpt
        )
    # a network of another activation, same parameter shapes and values
    net_dir = str(tmp_path / "net")
    relu = ne.nn.EnergyMLP(2, (16,), activation=nnx.relu, rngs=nnx.Rngs(0))
    tanh = ne.nn.EnergyMLP(2, (16,), activation=nnx.tanh, rngs=nnx.Rngs(0))
    make = lambda net: ne.ScoreMatching(net, optax.adam(1e-2))
    _train(make(relu), 10, checkpoint_dir=net_dir)
    with pytest.raises(ValueError, match="made by another run: .*network_code"):
        _train(make(tanh), 20, checkpoint_dir=net_dir)
