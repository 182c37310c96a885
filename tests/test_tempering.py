"""Replica exchange: the swap keeps every level's law, and ``ne.ParallelTempering``
recovers the weights of well-separated modes that a single chain cannot."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import numpyro_ebm as ne
from numpyro_ebm.core import tempering
from tests.stats import assert_mean, ess

WEIGHTS = np.array([0.7, 0.3])
LOCS = np.array([-6.0, 6.0])  # 12 sd apart


def bimodal_model():
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.asarray(WEIGHTS)),
        dist.Normal(jnp.asarray(LOCS), 1.0),
    )
    numpyro.sample("x", mixture)


def test_swaps_keep_each_levels_law():
    # exact draws at each level of U = x^2 / 2 (level l: N(0, 1 / beta_l)); a
    # round of swaps must leave every level's variance where it was
    betas = jnp.array([1.0, 0.3, 0.05])
    n = 200_000
    x = jax.random.normal(jax.random.key(0), (3, n)) / jnp.sqrt(betas)[:, None]
    for parity in (0, 1):
        swapped, info = tempering.swap_neighbours(
            jax.random.key(1 + parity), betas, 0.5 * x**2, parity, x
        )
        var = np.asarray(swapped.var(axis=1))
        # iid draws: the variance's standard error is var * sqrt(2 / n)
        bound = 5 * np.sqrt(2 / n) / np.asarray(betas)
        assert np.all(np.abs(var - 1 / np.asarray(betas)) < bound), var
        proposed = np.arange(2) % 2 == parity
        assert np.all(np.asarray(info.is_accepted)[~proposed] == 0)
        assert np.all(np.asarray(info.is_accepted)[proposed].mean(1) > 0.2)
    # several rounds without moves between them: each a valid swap, the laws
    # stay, and the energies travel with their states
    swapped, energy, parity, accept = tempering.swap_rounds(
        jax.random.key(3), betas, 0.5 * x**2, 0, x, 5
    )
    var = np.asarray(swapped.var(axis=1))
    assert np.all(np.abs(var - 1 / np.asarray(betas)) < bound), var
    np.testing.assert_allclose(energy, 0.5 * swapped**2, rtol=1e-6)
    assert int(parity) == 1 and accept.shape == (2, n)


def test_a_non_finite_level_is_never_swapped():
    betas = jnp.array([1.0, 0.5])
    x = jnp.array([[1.0], [2.0]])
    tempered = jnp.array([[0.0], [jnp.inf]])
    swapped, info = tempering.swap_neighbours(jax.random.key(0), betas, tempered, 0, x)
    np.testing.assert_array_equal(swapped, x)
    assert bool(info.diverging[0, 0]) and float(info.accept_prob[0, 0]) == 0.0


def _run(
    kernel, num_warmup=1000, num_samples=2000, chain_method="vectorized", **kwargs
):
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=4,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), **kwargs)
    return mcmc


def _assert_mode_weight(x, weight, k=5.0):
    """The mass right of 0 against ``weight``, within k Monte Carlo standard
    errors from the ESS of the mode indicator."""
    right = (np.asarray(x) > 0).astype(float)
    e = float(ess(right)[0])
    assert e >= 100, f"ESS of the mode indicator {e:.0f}"
    p = right.mean()
    assert abs(p - weight) < k * np.sqrt(weight * (1 - weight) / e), (p, e)
    return e


@pytest.fixture(scope="module")
def tempered_mala():
    kernel = ne.ParallelTempering(ne.MALA(bimodal_model), num_temperatures=6)
    return _run(kernel, extra_fields=("betas",))  # beside the default fields


def test_parallel_tempering_recovers_unequal_mode_weights(tempered_mala):
    x = tempered_mala.get_samples(group_by_chain=True)["x"]
    _assert_mode_weight(x, WEIGHTS[1])
    mean = float(WEIGHTS @ LOCS)
    sd = float(np.sqrt(WEIGHTS @ (LOCS**2 + 1) - mean**2))
    assert_mean(x, mean, sd)


def test_single_chains_do_not(tempered_mala):
    # the same target defeats MALA and NUTS: their chains stay in one mode each
    for kernel in (ne.MALA(bimodal_model), NUTS(bimodal_model)):
        mcmc = _run(kernel, num_warmup=500, num_samples=1000)
        x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
        per_chain = (x > 0).mean(axis=1)
        assert np.all((per_chain < 0.01) | (per_chain > 0.99)), per_chain


def test_the_ladder_equalises_swap_rates_then_stays_fixed(tempered_mala):
    state = tempered_mala.last_state
    betas = np.asarray(state.betas)
    assert betas[0] == 1.0 and np.isclose(betas[-1], 0.01)
    assert np.all(np.diff(betas) < 0)
    rejection = np.asarray(state.rejection)
    assert np.ptp(rejection) < 0.2, rejection
    swap = np.asarray(tempered_mala.get_extra_fields()["swap_accept"])
    assert swap.mean() > 0.2
    # the ladder was fixed in the warm-up's second half: sampling is exact
    # (the ladder of every one of the 2000 draws is the last one; shared by
    # the chains, it comes back levels first)
    ladders = np.asarray(tempered_mala.get_extra_fields(group_by_chain=True)["betas"])
    assert ladders.shape == (6, 2000)
    np.testing.assert_allclose(ladders, np.repeat(betas[:, None], 2000, 1), rtol=1e-5)


def test_a_coarse_ladder_warns_with_its_barrier():
    kernel = ne.ParallelTempering(ne.MALA(bimodal_model), num_temperatures=2)
    with pytest.warns(RuntimeWarning, match=r"barrier Lambda = 0\.\d+ over 2 levels"):
        _run(kernel, num_warmup=200, num_samples=10)


def test_the_levels_metric_is_left_alone_unless_asked(tempered_mala):
    # a level's draws span the modes: an adapted variance would be the spread
    # between them (about 36 here) rather than a mode's (1)
    inv_mass = np.asarray(
        tempered_mala.last_state.replicas.adapt_state.inverse_mass_matrix
    )
    np.testing.assert_array_equal(inv_mass, 1.0)
    adapted = _run(
        ne.ParallelTempering(
            ne.MALA(bimodal_model), num_temperatures=6, adapt_mass_matrix=True
        ),
        num_warmup=300,
        num_samples=5,
    )
    inv_mass = np.asarray(adapted.last_state.replicas.adapt_state.inverse_mass_matrix)
    assert inv_mass.reshape(4, 6)[:, 0].min() > 3.0, inv_mass


def test_any_inner_kernel():
    # (one chain, not vectorized, is the doctest's)
    kernel = ne.ParallelTempering(ne.RWMH(bimodal_model), num_temperatures=6)
    mcmc = _run(kernel)
    _assert_mode_weight(mcmc.get_samples(group_by_chain=True)["x"], WEIGHTS[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_temperatures=1), "at least 2"),
        (dict(min_inverse_temperature=0.0), "min_inverse_temperature"),
        (dict(min_inverse_temperature=1.0), r"\(0, 1\)"),
        (dict(num_swap_rounds=0), "num_swap_rounds"),
    ],
)
def test_bad_ladders_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ne.ParallelTempering(ne.MALA(bimodal_model), **kwargs)


def test_a_foreign_inner_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel of numpyro_ebm"):
        ne.ParallelTempering(NUTS(bimodal_model))
