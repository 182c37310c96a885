import jax
import jax.numpy as jnp
from numpyro.infer import MCMC

import numpyro_ebm as ne
from tests.stats import assert_mean, assert_variance


def test_mala_standard_normal():
    potential = lambda x: 0.5 * jnp.sum(x**2)
    mcmc = MCMC(
        ne.MALA(potential_fn=potential),
        num_warmup=500,
        num_samples=2000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), init_params=jnp.zeros((4, 2)))
    draws = mcmc.get_samples(group_by_chain=True)
    assert_mean(draws, jnp.zeros(2), jnp.ones(2))
    assert_variance(draws, jnp.ones(2))
