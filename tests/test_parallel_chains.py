"""``chain_method=ne.parallel_chains``: chains on separate devices that pool
their warm-up, with the draws of the vectorized pooled run (itself tested
for exactness in test_adaptation and test_moments). The suite runs on four
host devices (conftest)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import numpyro_ebm as ne


def model():
    numpyro.sample("x", dist.Normal(0.0, jnp.array([1.0, 10.0])))


def _run(kernel, chain_method, num_chains=4):
    mcmc = MCMC(
        kernel,
        num_warmup=300,
        num_samples=100,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), extra_fields=("adapt_state.step_size",))
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    return x, mcmc


def _steps(mcmc):
    return np.asarray(
        mcmc.get_extra_fields(group_by_chain=True)["adapt_state.step_size"]
    )


@pytest.mark.optimized
@pytest.mark.parametrize("name, tol", [("MALA", 0.0), ("MALT", 1e-2)])
def test_chains_on_four_devices_pool_like_vectorized_chains(name, tol):
    # MALA: bit for bit; MALT's trajectory update reduces in another order
    assert jax.local_device_count() == 4
    x, mcmc = _run(getattr(ne, name)(model), ne.parallel_chains)
    y, vectorized = _run(getattr(ne, name)(model), "vectorized")
    steps = _steps(mcmc)
    assert np.all(steps == steps[:1]), steps[:, -1]  # one step size
    np.testing.assert_allclose(steps, _steps(vectorized), rtol=1e-3)
    assert np.abs(x - y).max() <= tol, np.abs(x - y).max()
    devices = {d for leaf in jax.tree.leaves(mcmc.last_state) for d in leaf.devices()}
    assert len(devices) == 4, devices


def test_per_chain_adaptation_is_what_parallel_gives():
    # NumPyro's "parallel" names no axis: each chain adapts alone
    _, mcmc = _run(ne.MALA(model), "parallel")
    steps = _steps(mcmc)[:, -1]
    assert len(set(steps.tolist())) == 4, steps


def test_more_chains_than_devices_vectorize_and_still_pool():
    with pytest.warns(UserWarning, match="vectorized on one device"):
        x, mcmc = _run(ne.MALA(model), ne.parallel_chains, num_chains=5)
    y, vectorized = _run(ne.MALA(model), "vectorized", num_chains=5)
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(_steps(mcmc), _steps(vectorized))


def test_other_kernels_run_as_under_parallel():
    x, _ = _run(NUTS(model), ne.parallel_chains)
    y, _ = _run(NUTS(model), "parallel")
    np.testing.assert_array_equal(x, y)
