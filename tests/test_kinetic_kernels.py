"""``ne.MALT`` and ``ne.UnderdampedLangevin`` in ``numpyro.infer.MCMC``: MALT is
exact under its own adaptation (pooled and per chain, diagonal and dense), its
ChEES-tuned trajectory length lands near the criterion's first maximum, and the
unadjusted kernel has the closed-form stationary law of OBABO on a Gaussian,
with a fixed step and with a tuned one."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import numpyro_ebm as ne
from tests.stats import assert_mean, assert_variance

SCALES = np.array([0.5, 1.0, 2.0, 4.0])
COV = (
    np.array([[1.0, 0.95], [0.95, 1.0]])
    * np.array([1.0, 3.0])[:, None]
    * np.array([1.0, 3.0])
)


def diagonal_model():
    numpyro.sample("x", dist.Normal(0.0, jnp.asarray(SCALES)))


def correlated_model():
    numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(2), jnp.asarray(COV)))


def run(
    kernel, model, *, num_warmup=500, num_samples=1000, chain_method="vectorized", **kw
):
    mcmc = MCMC(
        kernel(model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=4,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), **kw)
    return mcmc


@pytest.fixture(scope="module")
def pooled():
    return run(ne.MALT, diagonal_model, extra_fields=("num_steps",))


def test_malt_samples_the_target_exactly(pooled):
    x = pooled.get_samples(group_by_chain=True)["x"]
    assert_mean(x, np.zeros(4), SCALES, min_ess=400)
    assert_variance(x, SCALES**2, min_ess=400)


def test_malt_tunes_one_trajectory_length_near_the_chees_optimum(pooled):
    state = pooled.last_state
    # one length and one step for the run; in the adapted metric's units the
    # target is a unit Gaussian, whose jitter-averaged ChEES peaks at T = 2.4
    # (the next maxima are at 5.6 and 8.7)
    length = float(state.trajectory.trajectory_length)
    assert 1.2 < length < 4.0, length
    assert np.ptp(np.asarray(state.adapt_state.step_size)) == 0
    np.testing.assert_allclose(
        state.adapt_state.inverse_mass_matrix, SCALES**2, rtol=0.35
    )
    steps = np.asarray(pooled.get_extra_fields(group_by_chain=True)["num_steps"])
    # jittered lengths: ceil(u T / h) steps, equal across chains at each step
    assert steps.min() >= 1 and len(np.unique(steps)) > 1
    assert np.all(steps == steps[:1])
    step = float(state.adapt_state.step_size[0])
    assert abs(steps.mean() - (0.5 * length / step + 0.5)) < 0.5


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_malt_adapted_per_chain_or_dense_is_exact(chain_method):
    # sequential chains adapt alone (diagonal); vectorized ones pool a dense
    # metric on a target with correlation 0.95
    if chain_method == "sequential":
        mcmc = run(ne.MALT, diagonal_model, chain_method="sequential")
        x = mcmc.get_samples(group_by_chain=True)["x"]
        assert_mean(x, np.zeros(4), SCALES, min_ess=300)
        assert_variance(x, SCALES**2, min_ess=300)
        return
    mcmc = run(lambda m: ne.MALT(m, dense_mass=True), correlated_model)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert_mean(x, np.zeros(2), np.sqrt(np.diag(COV)), min_ess=400)
    assert_variance(x, np.diag(COV), min_ess=400)
    centred = np.asarray(x).reshape(-1, 2)
    corr = np.corrcoef(centred.T)[0, 1]
    assert abs(corr - 0.95) < 0.02


def test_underdamped_langevin_has_obabos_stationary_law():
    # fixed step h = 0.8, no adaptation: x_i ~ N(0, s_i^2 / (1 - h^2 / (4 s_i^2))),
    # 2.8 times the target's variance for s = 0.5, whatever the friction
    h = 0.8
    kernel = lambda m: ne.UnderdampedLangevin(m, step_size=h, friction=0.5)  # noqa: E731
    x = run(kernel, diagonal_model, num_warmup=100, num_samples=3000).get_samples(
        group_by_chain=True
    )["x"]
    law = SCALES**2 / (1 - h**2 / (4 * SCALES**2))
    assert_mean(x, np.zeros(4), np.sqrt(law), min_ess=400)
    assert_variance(x, law, min_ess=400)
    assert law[0] / SCALES[0] ** 2 > 2.5  # the test can tell biased from exact


def test_underdamped_langevin_tuned_warmup_then_unadjusted_sampling():
    # warm-up: adjusted steps tune h and the metric A; sampling is unadjusted,
    # so coordinate i follows the closed form in the metric's units:
    # variance s_i^2 / (1 - h^2 A_i / (4 s_i^2))
    kernel = lambda m: ne.UnderdampedLangevin(  # noqa: E731
        m,
        step_size=0.1,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        target_accept_prob=0.6,
    )
    mcmc = run(kernel, diagonal_model, num_samples=3000)
    state = mcmc.last_state
    h = float(np.asarray(state.adapt_state.step_size)[0])
    imm = np.asarray(state.adapt_state.inverse_mass_matrix)
    law = SCALES**2 / (1 - h**2 * imm / (4 * SCALES**2))
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert_variance(x, law, min_ess=400)
    assert h > 0.5  # a step large enough for the bias to be seen
    accept = np.asarray(mcmc.get_extra_fields()["accept_prob"]).mean()
    assert 0.4 < accept < 0.95
