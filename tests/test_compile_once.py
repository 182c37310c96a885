"""Every learner and estimator compiles its loop once: data are arguments.

Compilations are counted with JAX's monitoring events (backend compiles, not
traces): a second ``run`` on data of the same shape must compile nothing, and
the training loop must have exactly one compiled version even when the
initial state holds weakly typed leaves (Python scalars).
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx
from jax import monitoring

import numpyro_ebm as ne

_COMPILES = []


def _listener(name, *args, **kwargs):
    if name == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(name)


monitoring.register_event_duration_secs_listener(_listener)


def compiles(fn):
    """``(result, number of backend compilations during fn())``."""
    before = len(_COMPILES)
    result = fn()
    jax.block_until_ready(jax.tree.leaves(result))
    return result, len(_COMPILES) - before


def loop_versions(owner):
    """Compiled versions of each training loop an estimator or learner holds."""
    return [f._cache_size() for k, f in owner._compiled.items() if k[0] == "loop"]


def toy_model(y):
    theta = numpyro.param("theta", 0.0)  # weakly typed: a Python float
    x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([y.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)


ESTIMATORS = {
    "PGD": lambda: ne.PGD(toy_model, step_size=0.01, num_particles=4),
    "PGD-tuned": lambda: ne.PGD(toy_model, num_particles=4),
    "IPLA-pqn": lambda: ne.IPLA(toy_model, num_particles=4, preconditioner="pqn"),
    "SOUL": lambda: ne.SOUL(toy_model, step_size=0.05, learning_rate=0.05),
    "SOUL-tuned": lambda: ne.SOUL(toy_model, num_particles=4),
    "MCEM": lambda: ne.MCEM(toy_model, num_langevin_steps=3, num_particles=4),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimators_compile_once(name):
    estimator = ESTIMATORS[name]()
    y1 = jnp.linspace(-1.0, 1.0, 20)
    y2 = y1 + 3.0  # same shape, other values: the MLE moves by 3
    first = estimator.run(jax.random.key(0), 300, y1, progress_bar=True)
    second, n = compiles(
        lambda: estimator.run(jax.random.key(0), 300, y2, progress_bar=True)
    )
    assert n == 0, f"the second run compiled {n} time(s)"
    assert loop_versions(estimator) == [1]
    # the data really are arguments: the estimate moves towards the new MLE
    # (3 higher; 300 iterations from theta = 0 do not all get there)
    shift = float(second.history["params"]["theta"][-1]) - float(
        first.history["params"]["theta"][-1]
    )
    assert 1.5 < shift < 3.5, shift


def _moons(seed):
    return ne.datasets.two_moons().sample(jax.random.key(seed), 512)


def _energy_net():
    return ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0))


LEARNERS = {
    "EBM-CD": lambda: ne.EBM(
        _energy_net(), optax.adam(1e-3), method=ne.CD(num_steps=2, step_size=0.01)
    ),
    "EBM-PCD": lambda: ne.EBM(
        _energy_net(),
        optax.adam(1e-3),
        method=ne.PCD(num_steps=2, step_size=0.01, buffer_size=128),
    ),
    "EBM-ShortRun": lambda: ne.EBM(
        _energy_net(), optax.adam(1e-3), method=ne.ShortRun(num_steps=2)
    ),
    "EBM-TemperedPCD": lambda: ne.EBM(
        _energy_net(), optax.adam(1e-3), method=ne.TemperedPCD(num_steps=2)
    ),
    "ScoreMatching": lambda: ne.ScoreMatching(_energy_net(), optax.adam(1e-3)),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learners_compile_once(name):
    learner = LEARNERS[name]()
    kw = dict(batch_size=32, progress_bar=True)
    learner.run(jax.random.key(0), 40, _moons(0), **kw)
    _, n = compiles(lambda: learner.run(jax.random.key(1), 40, _moons(1), **kw))
    assert n == 0, f"the second run compiled {n} time(s)"
    assert loop_versions(learner) == [1]


def test_weakly_typed_initial_state_compiles_the_loop_once():
    # a state built from Python scalars used to be weakly typed for the first
    # chunk only, and the loop compiled twice
    estimator = ne.PGD(toy_model, step_size=0.01, num_particles=2)
    y = jnp.linspace(-1.0, 1.0, 5)
    state = estimator.init(jax.random.key(0), y)
    assert state.params["theta"].weak_type
    estimator.run(jax.random.key(0), 50, y, init_state=state, progress_bar=True)
    assert loop_versions(estimator) == [1]
    assert np.isfinite(float(state.params["theta"]))


def test_a_changed_configuration_or_data_dependent_support_is_not_served_stale():
    # the compiled loop reads the configuration when traced: a changed
    # hyperparameter must give a new loop
    learner = LEARNERS["EBM-PCD"]()
    kw = dict(batch_size=32, progress_bar=False)
    plain = learner.run(jax.random.key(0), 20, _moons(0), **kw)
    learner.energy_regularization = 1.0
    regularised = learner.run(jax.random.key(0), 20, _moons(0), **kw)
    assert not np.allclose(plain.history["loss"], regularised.history["loss"])

    # a support that depends on the data: a second run on other data must use
    # the new support (the first run's bound would be a stale constant)
    def model(y):
        z = numpyro.sample(
            "z", dist.Uniform(0.0, y.max()).expand([y.shape[0]]).to_event(1)
        )
        scale = numpyro.param("scale", 1.0, constraint=dist.constraints.positive)
        numpyro.sample("y", dist.Normal(z, scale).to_event(1), obs=y)

    estimator = ne.PGD(model, step_size=0.01, num_particles=4)
    y = jnp.linspace(0.1, 2.0, 10)
    estimator.run(jax.random.key(0), 50, y, progress_bar=False)
    wide = estimator.run(jax.random.key(0), 50, 3.0 * y, progress_bar=False)
    z = np.asarray(wide.particles["z"])
    assert z.max() > 2.0 and z.max() < 6.0


class _Scale(nnx.Module):
    """A score ``-x / v`` (data ``N(0, v I)``) with ``v`` a parameter."""

    def __init__(self, v):
        self.v = nnx.Param(jnp.asarray(v))

    def __call__(self, x, t=None):
        return -x / self.v[...]


def test_likelihood_estimators_compile_once_and_read_current_parameters():
    from numpyro_ebm.core.sde import ve_sde

    sde = ve_sde(0.01, 5.0)
    net = _Scale(1.0)
    x = jax.random.normal(jax.random.key(0), (64, 2))

    def bound():
        return ne.diffusion_elbo(jax.random.key(1), net, sde, x, num_samples=4)

    first, _ = compiles(bound)
    again, count = compiles(bound)
    assert count == 0, count
    net.v[...] = jnp.asarray(4.0)  # no stale constant: the new score is used
    changed, count = compiles(bound)
    assert count == 0 and float(changed.diffusion) != float(first.diffusion)

    base = dist.Normal(jnp.zeros(2), 2.0).to_event(1)
    # a plain function is the same function only when it is the same object
    fn = lambda y: 0.5 * jnp.sum(y**2, -1)  # noqa: E731
    compiles(lambda: ne.ais_log_normalizer(jax.random.key(2), fn, base, num_levels=10))
    _, count = compiles(
        lambda: ne.ais_log_normalizer(jax.random.key(3), fn, base, num_levels=10)
    )
    assert count == 0, count


def test_energy_distribution_sample_compiles_once_per_shape():
    # an eager sample() compiled its chains anew at every call (7-17 s each)
    d = ne.EnergyDistribution(lambda x: 0.5 * jnp.sum(x**2, -1), (2,), num_steps=50)
    _, first = compiles(lambda: d.sample(jax.random.key(0), (64,)))
    x, again = compiles(lambda: d.sample(jax.random.key(1), (64,)))
    assert first > 0 and again == 0
    assert x.shape == (64, 2)


class _Tilt(nnx.Module):
    """E(x) = |x|^2 / 2 + w . x: the law N(-w, I)."""

    def __init__(self):
        self.w = nnx.Param(jnp.zeros(2))

    def __call__(self, x):
        return 0.5 * jnp.sum(x**2, -1) + x @ self.w[...]


def test_energy_distribution_sample_reads_the_current_weights():
    # compiled once, an energy's weights are still read at every call: an
    # NNX module's (its state an argument), and an array a closure reads
    # (rebound: the program is traced again, not served stale)
    tilt = _Tilt()
    shift = jnp.zeros(2)
    closure = lambda x: 0.5 * jnp.sum((x - shift) ** 2, -1)  # noqa: E731
    settings = dict(num_warmup=0, num_steps=60, step_size=0.5)
    for energy in (tilt, closure):
        d = ne.EnergyDistribution(energy, (2,), **settings)
        before = np.asarray(d.sample(jax.random.key(0), (256,))).mean(0)
        tilt.w[...] = jnp.array([-3.0, 3.0])  # mean (3, -3)
        shift = jnp.array([3.0, -3.0])  # noqa: F841 (read by the closure)
        after = np.asarray(d.sample(jax.random.key(0), (256,))).mean(0)
        tilt.w[...] = jnp.zeros(2)
        shift = jnp.zeros(2)  # noqa: F841
        assert np.all(np.abs(before) < 0.4), before
        np.testing.assert_allclose(after, [3.0, -3.0], atol=0.4)
