"""Warm-up adaptation: pooled over vectorized chains, dense estimates that
stay well conditioned, stragglers restarted, and no per-step factorisation."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import numpyro_ebm as ne
from numpyro_ebm.infer import adaptation
from tests.stats import assert_mean, assert_variance

D = 50
_rng = np.random.default_rng(0)
_Q = np.linalg.qr(_rng.normal(size=(D, D)))[0]
VARIANCES = np.geomspace(0.1, 10.0, D)
COV = (_Q * VARIANCES) @ _Q.T
SCALE_TRIL = jnp.asarray(np.linalg.cholesky(COV), jnp.float32)


def rotated_model():
    numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(D), scale_tril=SCALE_TRIL))


def _run(kernel, num_warmup=1000, num_samples=1000, num_chains=4, **kw):
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), **kw)
    return mcmc


@pytest.fixture(scope="module")
def dense_run():
    return _run(ne.MALA(rotated_model, dense_mass=True), num_samples=4000)


def test_pooled_chains_share_one_step_size_and_mass_matrix(dense_run):
    state = dense_run.last_state.adapt_state
    step = np.asarray(state.step_size)
    assert step.shape == (4,) and np.all(step == step[0])
    assert np.shape(state.inverse_mass_matrix) == (D, D)


def test_dense_adaptation_learns_every_direction_in_50d(dense_run):
    # along each eigenvector of the target covariance (variances 0.1..10),
    # the ratio of adapted to true variance: NumPyro's adapter (25-draw first
    # window, no shrinkage) left most of the 50 directions of such targets
    # near 1e-5 of their variance
    imm = np.asarray(dense_run.last_state.adapt_state.inverse_mass_matrix)
    ratios = np.einsum("ij,jk,ki->i", _Q.T, imm, _Q) / VARIANCES
    assert np.all((ratios > 0.5) & (ratios < 2.0)), ratios
    x = np.asarray(dense_run.get_samples(group_by_chain=True)["x"])
    assert_mean(x, np.zeros(D), np.sqrt(np.diag(COV)))
    assert_variance(x, np.diag(COV))


@pytest.mark.parametrize(
    "kernel",
    [
        lambda m: ne.MALA(m, dense_mass=True, pool_chains=False),
        # ULA once dropped pool_chains=False and pooled anyway
        lambda m: ne.ULA(
            m,
            step_size=0.1,
            adapt_step_size=True,
            dense_mass=True,
            adapt_mass_matrix=True,
            pool_chains=False,
        ),
        lambda m: ne.MALT(m, dense_mass=True, pool_chains=False),
    ],
    ids=["MALA", "ULA", "MALT"],
)
def test_per_chain_adaptation_stays_available(kernel):
    mcmc = _run(kernel(rotated_model), num_warmup=300, num_samples=10)
    state = mcmc.last_state.adapt_state
    assert np.shape(state.inverse_mass_matrix) == (4, D, D)
    assert len(set(np.asarray(state.step_size).tolist())) == 4


def _cholesky_outside_cond(jaxpr):
    """Cholesky factorisations at the top level of a jaxpr (or of its
    scans/loops), that is, not inside a ``cond`` branch."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cholesky":
            count += 1
        elif eqn.primitive.name != "cond":
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        count += _cholesky_outside_cond(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        count += _cholesky_outside_cond(sub)
    return count


@pytest.mark.parametrize("pool_chains", [True, False])
def test_window_end_factorisation_is_not_run_at_every_step(pool_chains):
    # vmapping a cond whose predicate is batched turns it into a select that
    # runs both branches: the dense factorisation then ran at every step for
    # every chain (10 chains in 1000-d: 26x the cost of one chain)
    kernel = ne.MALA(rotated_model, dense_mass=True, pool_chains=pool_chains)
    state = kernel.init(jax.random.split(jax.random.key(0), 3), 100, None, (), {})
    jaxpr = jax.make_jaxpr(lambda s: kernel.sample(s, (), {}))(state)
    assert _cholesky_outside_cond(jaxpr.jaxpr) == 0


def far_start_model():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([5]).to_event(1))


def test_a_chain_started_far_away_is_restarted_in_warm_up():
    # one chain of eight starts at +40 in every coordinate: the shared step
    # is sized for the others, so alone it would stay there
    init = {"x": jnp.zeros((8, 5)).at[0].set(40.0)}
    mcmc = _run(
        ne.MALA(far_start_model), num_warmup=300, num_chains=8, init_params=init
    )
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    assert np.abs(x[0].mean(0)).max() < 1.0
    assert_mean(x, np.zeros(5), np.ones(5))


def test_stragglers_need_both_a_high_energy_and_a_low_acceptance():
    pe = jnp.array([1.0, 2.0, 60.0, 3.0, 61.0])
    accept = jnp.array([0.6, 0.5, 0.0, 0.55, 0.7])  # the last one mixes
    z = jnp.arange(5.0)
    (moved, _), count = adaptation.restart_stragglers(
        jax.random.key(0), pe, accept, 1, z, pe
    )
    assert int(count) == 1
    assert moved[2] in (0.0, 1.0, 3.0, 4.0) and moved[4] == 4.0


def test_shrinkage_keeps_the_previous_scale_in_unseen_directions():
    # 20 draws in 50 dimensions: the raw sample covariance is singular
    x = jax.random.normal(jax.random.key(0), (20, 50))
    state = adaptation.pooled_welford(x, (jnp.zeros(50), jnp.zeros((50, 50)), 0))
    raw = np.linalg.eigvalsh(np.asarray(state[1]) / 19)
    _, m2, _ = adaptation.shrink_towards(state, jnp.eye(50))
    shrunk = np.linalg.eigvalsh(np.asarray(m2) / 19)
    assert raw[0] < 1e-5
    assert shrunk[0] > 0.99 * 50 / 70  # w = d / (n + d) of the identity


def test_the_cores_dual_averaging_is_numpyros():
    from numpyro.infer.hmc_util import dual_averaging as numpyro_dual_averaging

    from numpyro_ebm.core.step_size import dual_averaging

    ours, theirs = dual_averaging(), numpyro_dual_averaging()
    a, b = ours[0](jnp.log(10.0)), theirs[0](jnp.log(10.0))
    for g in np.random.default_rng(0).uniform(-0.5, 0.5, 50):
        a, b = ours[1](g, a), theirs[1](g, b)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
