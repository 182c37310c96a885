"""Quickstart: swap numpyro_ebm's Langevin kernels into numpyro.infer.MCMC.

Fits a small Bayesian logistic regression with NUTS, MALA, ULA and RWMH and
prints ArviZ summaries side by side.

    python examples/quickstart.py --num-samples 2000
"""

import argparse
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import numpyro_ebm as ne


def model(X, y=None):
    coef = numpyro.sample(
        "coef", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1)
    )
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 2.0))
    numpyro.sample("y", dist.Bernoulli(logits=X @ coef + intercept), obs=y)


def make_data(rng_key, num_data=200, dim=3):
    key_x, key_y = jax.random.split(rng_key)
    X = jax.random.normal(key_x, (num_data, dim))
    true_coef = jnp.linspace(-1.0, 1.0, dim)
    y = jax.random.bernoulli(key_y, jax.nn.sigmoid(X @ true_coef)).astype(jnp.float32)
    return X, y


def main(args):
    X, y = make_data(jax.random.key(0))
    kernels = {
        "NUTS": NUTS(model),
        "ne.MALA": ne.MALA(model),
        "ne.ULA": ne.ULA(model, step_size=0.01),
        "ne.RWMH": ne.RWMH(model),
    }
    for name, kernel in kernels.items():
        mcmc = MCMC(
            kernel,
            num_warmup=args.num_warmup,
            num_samples=args.num_samples,
            num_chains=args.num_chains,
            chain_method="vectorized",
            progress_bar=False,
        )
        start = time.perf_counter()
        mcmc.run(jax.random.key(1), X, y)
        elapsed = time.perf_counter() - start
        idata = az.from_numpyro(mcmc)
        print(f"\n=== {name}  ({elapsed:.1f} s with compilation)")
        print(az.summary(idata, var_names=["coef", "intercept"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num-warmup",
        type=int,
        default=1000,
        help="warm-up (adaptation) iterations per chain, for each of NUTS, "
        "MALA, ULA and RWMH (default %(default)s)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=2000,
        help="draws kept per chain after warm-up, for each kernel "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--num-chains",
        type=int,
        default=4,
        help="chains per kernel, run vectorised (default %(default)s)",
    )
    main(parser.parse_args())
