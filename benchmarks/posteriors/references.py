"""Reference moments of the suite's posteriors without closed forms.

Long NUTS runs in double precision (``numpyro.enable_x64``): 8 chains x
(4000 warm-up + 25000 draws), ``target_accept_prob=0.95`` (0.99 for the
posteriors in ``TARGET_ACCEPT`` whose NUTS runs diverge at 0.95), checked
to have R-hat below 1.005 on every coordinate; divergences are recorded. Writes ``references.json`` beside this
module: per posterior and site the mean, sd and bulk ESS of every coordinate
(constrained values), with the run's settings and checks.

Usage::

    python -m benchmarks.posteriors.references [names ...]
"""

import argparse
import json
import time

import numpyro

numpyro.enable_x64()

import numpy as np  # noqa: E402
from arviz_stats.base import array_stats  # noqa: E402

import jax  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from benchmarks.posteriors import POSTERIORS, REFERENCE_FILE, _stored_references  # noqa: E402

NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 8, 4000, 25000
#: posteriors that need a higher acceptance target to avoid divergences
TARGET_ACCEPT = {"stochastic_volatility": 0.99, "horseshoe_logistic": 0.99}


def reference(posterior, seed=0):
    kwargs = {
        k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v
        for k, v in posterior.kwargs().items()
    }
    target = TARGET_ACCEPT.get(posterior.name, 0.95)
    mcmc = MCMC(
        NUTS(posterior.model, target_accept_prob=target),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.key(seed), extra_fields=("diverging",), **kwargs)
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples(group_by_chain=True)
    sites, worst_rhat, least_ess = {}, 0.0, np.inf
    for site, draws in samples.items():
        x = np.asarray(draws, np.float64)
        ess = np.asarray(array_stats.ess(x, chain_axis=0, draw_axis=1, method="bulk"))
        rhat = np.asarray(array_stats.rhat(x, chain_axis=0, draw_axis=1))
        worst_rhat = max(worst_rhat, float(np.max(rhat)))
        least_ess = min(least_ess, float(np.min(ess)))
        sites[site] = {
            "mean": x.mean((0, 1)).tolist(),
            "sd": x.std((0, 1)).tolist(),
            "n": ess.tolist(),
        }
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    return {
        "sites": sites,
        "method": (
            f"NUTS(target_accept_prob={target}), float64, {NUM_CHAINS} chains x "
            f"({NUM_WARMUP} warm-up + {NUM_SAMPLES} draws), seed {seed}"
        ),
        "max_rhat": worst_rhat,
        "min_bulk_ess": least_ess,
        "divergences": divergences,
        "seconds": round(seconds, 1),
    }


def main(names):
    stored = dict(_stored_references())
    for name in names:
        result = reference(POSTERIORS[name])
        print(
            f"{name:30s} R-hat {result['max_rhat']:.4f}  min ESS "
            f"{result['min_bulk_ess']:8.0f}  divergences {result['divergences']:5d}"
            f"  {result['seconds']:7.1f} s",
            flush=True,
        )
        if result["max_rhat"] > 1.005:
            print(f"  {name}: R-hat above 1.005, not stored")
            continue
        stored[name] = result
        with open(REFERENCE_FILE, "w") as f:
            json.dump(stored, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names",
        nargs="*",
        help="posteriors to run (default: every one without an exact reference)",
    )
    args = parser.parse_args()
    main(args.names or [n for n, p in POSTERIORS.items() if p.exact is None])
