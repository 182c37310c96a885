"""Energy-based models by maximum likelihood: methods, quality, contract."""

import os
import shutil
import warnings

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import numpyro_ebm as ne
from numpyro_ebm.datasets import TOY_LAWS, eight_gaussians, gaussian_mixture
from numpyro_ebm.diagnostics import grid_log_likelihood


@pytest.fixture(scope="module")
def eight():
    law = eight_gaussians()
    return (
        law,
        law.sample(jax.random.key(0), 8_000),
        law.sample(jax.random.key(1), 5_000),
    )


@pytest.mark.optimized
def test_default_on_eight_gaussians_reaches_the_true_likelihood(eight):
    law, data, test = eight
    ebm = ne.EBM(
        ne.nn.EnergyMLP(2, (64, 64), rngs=nnx.Rngs(0)),
        optax.adam(optax.cosine_decay_schedule(2e-3, 2000, 0.1)),
    )
    assert isinstance(ebm.method, ne.TemperedPCD)
    result = ebm.run(jax.random.key(2), 2000, data, batch_size=128, progress_bar=False)
    learned = float(grid_log_likelihood(result.module, test, law.bounds))
    true = float(jnp.mean(law.log_prob(test)))
    assert learned > true - 0.3, (learned, true)
    assert np.all(np.isfinite(result.history["loss"]))
    assert float(np.mean(result.history["swap_accept"][-100:])) > 0.3


def _mode_weight(energy, n=300):
    """Mass of x > 0 under exp(-E), normalised on a grid covering both modes."""
    gx, gy = jnp.linspace(-9.0, 9.0, n), jnp.linspace(-5.0, 5.0, n)
    grid = jnp.stack(jnp.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
    return float(jnp.sum(jax.nn.softmax(-energy(grid)) * (grid[:, 0] > 0)))


@pytest.fixture(scope="module")
def two_modes():
    # weights 0.65 / 0.35, modes 8.7 sd apart
    law = gaussian_mixture(
        jnp.array([[-4.35, 0.0], [4.35, 0.0]]), jnp.ones(2), jnp.array([0.65, 0.35])
    )
    return law.sample(jax.random.key(0), 5_000)


@pytest.mark.optimized
@pytest.mark.parametrize(
    "method, expect_right, num_steps",
    [
        (None, True, 3000),
        # plain PCD has lost the light mode (weight ~1e-5) by half that budget
        (ne.PCD(num_steps=20, step_size=0.01, reinit_prob=0.05), False, 1500),
    ],
    ids=["default", "plain-PCD"],
)
def test_mode_weights(two_modes, method, expect_right, num_steps):
    ebm = ne.EBM(
        ne.nn.EnergyMLP(2, (64, 64), rngs=nnx.Rngs(0)),
        optax.adam(optax.cosine_decay_schedule(1e-3, num_steps, 0.1)),
        method=method,
    )
    result = ebm.run(
        jax.random.key(2), num_steps, two_modes, batch_size=128, progress_bar=False
    )
    weight = _mode_weight(result.module)
    if expect_right:
        assert abs(weight - 0.35) < 0.07, weight
    else:
        # chains that never cross: the light mode's weight is lost, although
        # the persistent buffer still holds both modes
        assert weight < 0.1, weight
        buffer = result.state.sampler_state["buffer"]
        assert float(jnp.mean(buffer[:, 0] > 0)) > 0.2


def test_ladder_equalises_rejection():
    from numpyro_ebm.core.tempering import equalise_ladder as _equalise_ladder

    betas = jnp.array([1.0, 0.5, 0.2, 0.0])
    np.testing.assert_allclose(
        _equalise_ladder(betas, jnp.full(3, 0.3)), betas, atol=1e-6
    )
    # the pair (0.5, 1) rejects most: the new ladder puts more levels there
    new = _equalise_ladder(betas, jnp.array([0.9, 0.1, 0.1]))
    assert (
        new[0] == 1.0
        and new[-1] == 0.0
        and new[1] > 0.5
        and bool(jnp.all(jnp.diff(new) < 0))
    )


@pytest.fixture(scope="module")
def moons():
    return ne.datasets.two_moons().sample(jax.random.key(0), 2000)


def test_divergent_training_stops_and_names_the_step(moons):
    ebm = ne.EBM(
        ne.nn.EnergyMLP(2, (32, 32), rngs=nnx.Rngs(0)),
        optax.sgd(10.0),
        method=ne.PCD(num_steps=10, step_size=0.01, buffer_size=1000),
    )
    with pytest.raises(FloatingPointError, match=r"EBM diverged at step \d+: the loss"):
        ebm.run(jax.random.key(1), 300, moons, batch_size=64, progress_bar=False)


def test_energy_drift_is_reported_and_prevented(moons):
    # short-run negatives that barely move: the contrastive loss falls without
    # bound by pushing the data's energies down and the negatives' up
    def train(alpha):
        ebm = ne.EBM(
            ne.nn.EnergyMLP(2, (32, 32), rngs=nnx.Rngs(0)),
            optax.adam(0.1),
            method=ne.ShortRun(num_steps=5, step_size=1e-5),
            energy_regularization=alpha,
        )
        return ebm.run(jax.random.key(1), 500, moons, batch_size=64, progress_bar=False)

    with pytest.warns(RuntimeWarning, match="energies drifted from a scale of"):
        drifting = train(0.0)
    assert float(drifting.history["energy_scale"][-1]) > 1e3
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        bounded = train(0.1)
    assert float(jnp.max(bounded.history["energy_scale"])) < 10.0


def test_tempered_ladder_and_negatives_stay_finite_with_a_nan_region():
    # an energy that is NaN in a small region away from the data: the replica
    # swaps reject there (the core accept step), the ladder's swap rates leave
    # those pairs out (it used to turn NaN within 5 iterations), and chains that
    # start in the region are replaced, so the negatives stay finite
    def energy(x):
        bad = jnp.sum((x - jnp.array([2.5, 0.0])) ** 2) < 0.5**2
        return jnp.where(bad, jnp.nan, 0.5 * jnp.sum(x**2))

    method = ne.TemperedPCD(num_steps=2, step_size=0.05)
    data = jax.random.normal(jax.random.key(0), (256, 2))
    state = method.init_sampler(jax.random.key(1), data, 64)

    @jax.jit
    def iterate(state, key):
        negatives, state, info = method.sample(key, energy, data[:64], state)
        return state, (negatives, info["swap_accept"])

    # chains that start in the NaN region are replaced by finite draws from
    # the tempered levels; none enters it afterwards
    state, (negatives, swap) = jax.lax.scan(
        iterate, state, jax.random.split(jax.random.key(2), 30)
    )
    assert bool(jnp.all(jnp.isfinite(state["betas"])))
    assert bool(jnp.all(jnp.isfinite(swap)))
    energies = jax.vmap(jax.vmap(energy))(negatives[-10:])
    assert bool(jnp.all(jnp.isfinite(energies))), int(jnp.sum(~jnp.isfinite(energies)))


@pytest.mark.slow
@pytest.mark.parametrize("law_name", sorted(TOY_LAWS))
@pytest.mark.parametrize(
    "method",
    [
        ne.CD(num_steps=1, step_size=0.01),
        ne.PCD(num_steps=20, step_size=0.01),
        ne.TemperedPCD(),
        ne.ShortRun(num_steps=50, step_size=0.02),
    ],
    ids=["CD-1", "PCD", "TemperedPCD", "ShortRun"],
)
def test_methods_train_without_divergence(law_name, method):
    law = TOY_LAWS[law_name]
    data = law.sample(jax.random.key(0), 5000)
    ebm = ne.EBM(
        ne.nn.EnergyMLP(2, (64, 64), rngs=nnx.Rngs(0)),
        optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
        method=method,
        energy_regularization=0.1,
    )
    result = ebm.run(jax.random.key(1), 1000, data, batch_size=128, progress_bar=False)
    h = result.history
    assert all(np.all(np.isfinite(v)) for v in h.values())
    # training separates data from negatives less and less: the energy gap
    # closes (it is the loss) and energies stay bounded
    assert abs(float(np.mean(h["loss"][-100:]))) < 1.0
    assert float(np.max(np.abs(h["energy_data"]))) < 100


def test_no_retracing_per_iteration(eight):
    _, data, _ = eight
    traces = []

    def energy(params, x):
        traces.append(1)  # runs at trace time only
        return jnp.sum((x - params["m"]) ** 2, -1) * params["s"]

    params = {"m": jnp.zeros(2), "s": jnp.ones(())}
    ebm = ne.EBM(
        (energy, params), optax.adam(1e-2), method=ne.CD(num_steps=2, step_size=0.01)
    )
    counts = []
    for num_steps in (10, 20, 200):  # the first run fills JAX's global caches
        traces.clear()
        ebm.run(
            jax.random.key(0),
            num_steps,
            data,
            batch_size=32,
            progress_bar=True,
        )
        counts.append(len(traces))
    # the progress bar runs 20 chunks either way; traces do not grow with steps
    assert counts[1] == counts[2]


@pytest.mark.parametrize(
    "method", [ne.CD(), ne.PCD(buffer_size=256), ne.ShortRun(num_steps=5)]
)
def test_checkpoint_resume_bit_identical(tmp_path, eight, method):
    _, data, _ = eight

    def run(ebm=None, **kw):
        if ebm is None:  # a new learner, as a restarted process builds
            ebm = ne.EBM(
                ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)),
                optax.adam(1e-3),
                method=method,
            )
        return ebm.run(
            jax.random.key(0),
            30,
            data[:512],
            batch_size=32,
            progress_bar=False,
            **kw,
        )

    first = ne.EBM(
        ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)), optax.adam(1e-3), method=method
    )
    plain = run(first)
    ckpt = str(tmp_path / "ckpt")
    run(first, checkpoint_dir=ckpt, checkpoint_every=10)  # its loop compiled once
    shutil.rmtree(os.path.join(ckpt, "30"))
    resumed = run(checkpoint_dir=ckpt, checkpoint_every=10)
    for a, b in zip(
        jax.tree.leaves(plain.state), jax.tree.leaves(resumed.state), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_data_parallel_matches_single_device(eight):
    _, data, _ = eight
    results = []
    for num_devices in (None, 4):
        ebm = ne.EBM(
            ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)),
            optax.adam(1e-3),
            method=ne.PCD(num_steps=5, buffer_size=256),
        )
        results.append(
            ebm.run(
                jax.random.key(0),
                20,
                data[:512],
                batch_size=32,
                progress_bar=False,
                num_devices=num_devices,
            )
        )
    for a, b in zip(
        jax.tree.leaves(results[0].params),
        jax.tree.leaves(results[1].params),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_input(eight):
    _, data, _ = eight
    net = ne.nn.EnergyMLP(2, (8,), rngs=nnx.Rngs(0))
    ebm = ne.EBM(net, optax.adam(1e-3))
    with pytest.raises(ValueError, match="NaN"):
        ebm.run(jax.random.key(0), 5, data[:100].at[0, 0].set(jnp.nan), batch_size=16)
    with pytest.raises(ValueError, match="cannot be applied to data"):
        ebm.run(jax.random.key(0), 5, jnp.ones((100, 5)), batch_size=16)
    with pytest.raises(ValueError, match="larger than the data"):
        ebm.run(jax.random.key(0), 5, data[:10], batch_size=16)
    with pytest.raises(ValueError, match="buffer_size"):
        ne.EBM(net, optax.adam(1e-3), ne.PCD(buffer_size=8)).run(
            jax.random.key(0), 5, data[:100], batch_size=16
        )
    for method in (
        ne.CD(step_size=0.0),
        ne.PCD(step_size=-1.0),
        ne.ShortRun(num_steps=0),
    ):
        with pytest.raises(ValueError, match="step_size|num_steps"):
            ne.EBM(net, optax.adam(1e-3), method).run(
                jax.random.key(0), 5, data[:100], batch_size=16
            )
    with pytest.raises(ValueError, match="num_temperatures"):
        ne.EBM(net, optax.adam(1e-3), ne.TemperedPCD(num_temperatures=1)).run(
            jax.random.key(0), 5, data[:100], batch_size=16
        )
    with pytest.raises(ValueError, match="reinit_prob"):
        ne.EBM(net, optax.adam(1e-3), ne.PCD(reinit_prob=1.5)).run(
            jax.random.key(0), 5, data, batch_size=16
        )
    with pytest.raises(ValueError, match="one energy per point"):
        score_net = ne.nn.ScoreMLP(2, (8,), rngs=nnx.Rngs(0))
        ne.EBM((lambda p, x: score_net(x, 1.0), None), optax.adam(1e-3)).run(
            jax.random.key(0), 5, data[:100], batch_size=16
        )


def test_ebm_trains_on_data_of_any_event_shape():
    images = jax.random.normal(jax.random.key(0), (256, 2, 2))
    net = ne.nn.EnergyMLP(4, (8,), rngs=nnx.Rngs(0))
    apply, params, _ = ne.learn.training.split_network(net)
    on_images = lambda p, x: apply(p, x.reshape(x.shape[0], -1))
    results = [
        ne.EBM(
            (fn, params),
            optax.adam(1e-2),
            method=ne.PCD(num_steps=3, step_size=0.05, buffer_size=64),
        ).run(jax.random.key(1), 20, data, batch_size=16, progress_bar=False)
        for fn, data in ((on_images, images), (apply, images.reshape(256, 4)))
    ]
    np.testing.assert_allclose(
        results[0].history["loss"], results[1].history["loss"], rtol=1e-5, atol=1e-6
    )
    assert results[0].state.sampler_state["buffer"].shape == (64, 2, 2)


def test_tempered_chains_sample_the_energy_at_fixed_parameters():
    # at a fixed energy the beta = 1 chains must be draws of exp(-E): on a
    # 0.7 / 0.3 mixture of two modes 12 sd apart, their fraction in the right
    # mode is 0.3 (plain persistent chains keep whatever split they started in)
    from tests.stats import assert_mean

    weights, centres, sd = jnp.array([0.7, 0.3]), jnp.array([-3.0, 3.0]), 0.5

    def energy(x):
        log_p = jax.scipy.stats.norm.logpdf(x[0], centres, sd) + jnp.log(weights)
        return -jax.scipy.special.logsumexp(log_p)

    key = jax.random.key(0)
    mode = jax.random.bernoulli(key, 0.3, (512,))
    data = (jnp.where(mode, 3.0, -3.0) + sd * jax.random.normal(key, (512,)))[:, None]
    method = ne.TemperedPCD(num_steps=5, step_size=0.05)
    state = method.init_sampler(jax.random.key(1), data, 64)

    @jax.jit
    def iterate(state, key):
        negatives, state, _ = method.sample(key, energy, data[:64], state)
        return state, negatives[:, 0] > 0

    _, right = jax.lax.scan(iterate, state, jax.random.split(jax.random.key(2), 600))
    draws = np.asarray(right[100:], np.float64).T  # (chains, iterations)
    assert_mean(draws, 0.3, np.sqrt(0.3 * 0.7), min_ess=200)
