"""Stochastic-gradient MCMC on a logistic regression with 10^6 rows.

``ne.SGLD`` and ``ne.SGHMC``, each with and without control variates, on
minibatches of ``--batch`` rows from the model's subsampled plate, against
full-data ``ne.MALA`` and NumPyro's ``NUTS`` on the same model without
subsampling; all run 4 vectorized chains in one run of this script and see
the data as arguments of the compiled sampler.

Accuracy is measured against the Laplace approximation at the mode (L-BFGS,
then the exact Hessian, in float64 on the host): with 10^6 rows the
posterior's departure from it is of order ``N^(-1/2)`` of a posterior sd,
far below the Monte Carlo errors here. Columns: wall time (compilation
included) and the part spent compiling; data passes (full-data gradient
evaluations, a minibatch counting ``batch / N``); min bulk ESS; the largest
error of the posterior mean over the coordinates, in posterior sds; the
largest relative error of the posterior sds.

Step sizes of the stochastic-gradient samplers are set from the Laplace
precision's largest eigenvalue ``L``: SGLD ``h = 0.1 / L``, SGHMC
``h = 0.5 / sqrt(L)`` with friction ``2 sqrt(L)`` (what a user would pick
after one look at the curvature); MALA and NUTS tune their own.

Usage (from the repository's root)::

    python benchmarks/bench_sgmcmc.py                 # 10^6 rows
    python benchmarks/bench_sgmcmc.py --rows 100000   # a quicker run
"""

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import numpyro_ebm as ne

if __package__ in (None, ""):  # run as a script: the repository's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.timing import timed  # noqa: E402

DIM = 10
CHAINS = 4


def make_data(rows, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, DIM)).astype(np.float32)
    w = rng.normal(size=DIM) / np.sqrt(DIM)
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(X @ w)))).astype(np.float32)
    return X, y


def logistic_model(subsample_size=None):
    """The model, its plate subsampled to ``subsample_size`` rows."""

    def logistic(X, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([DIM]).to_event(1))
        with numpyro.plate("data", X.shape[0], subsample_size=subsample_size):
            xb = numpyro.subsample(X, event_dim=1)
            yb = numpyro.subsample(y, event_dim=0)
            numpyro.sample("y", dist.Bernoulli(logits=xb @ w), obs=yb)

    return logistic


def laplace(X, y):
    """Mode and covariance of the Laplace approximation, in float64."""
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    w = np.zeros(DIM)
    for _ in range(50):  # Newton's method: the log posterior is concave
        p = 1 / (1 + np.exp(-(X64 @ w)))
        grad = X64.T @ (y64 - p) - w
        hess = (X64 * (p * (1 - p))[:, None]).T @ X64 + np.eye(DIM)
        step = np.linalg.solve(hess, grad)
        w += step
        if np.max(np.abs(step)) < 1e-12:
            break
    p = 1 / (1 + np.exp(-(X64 @ w)))
    hess = (X64 * (p * (1 - p))[:, None]).T @ X64 + np.eye(DIM)
    return w, np.linalg.inv(hess), hess


def ess(draws):
    from arviz_stats.base import array_stats

    return np.asarray(
        array_stats.ess(np.asarray(draws, np.float64), chain_axis=0, draw_axis=1)
    )


def run(name, kernel, args, num_warmup, num_samples, passes_per_step, mean, cov):
    print(f"# running {name} ...", file=sys.stderr, flush=True)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )

    def go():
        extra = ("num_steps",) if passes_per_step is None else ()
        mcmc.run(jax.random.key(1), *args, extra_fields=extra)
        return np.asarray(mcmc.get_samples(group_by_chain=True)["w"])

    w, seconds, compile_seconds = timed(go)
    sd = np.sqrt(np.diag(cov))
    flat = w.reshape(-1, DIM)
    mean_error = np.max(np.abs(flat.mean(0) - mean) / sd)
    sd_error = np.max(np.abs(flat.std(0) / sd - 1))
    if passes_per_step is None:  # NUTS: its leapfrog steps
        steps = np.asarray(mcmc.get_extra_fields()["num_steps"]).sum() / CHAINS
        passes = float(steps) * (num_warmup + num_samples) / num_samples
    else:
        passes = passes_per_step * (num_warmup + num_samples)
    row = (
        name,
        seconds,
        compile_seconds,
        passes,
        float(ess(w).min()),
        mean_error,
        sd_error,
    )
    print(f"# {row}", file=sys.stderr, flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--sg-samples", type=int, default=20_000)
    parser.add_argument("--full-samples", type=int, default=1000)
    args = parser.parse_args()
    X, y = make_data(args.rows)
    mean, cov, precision = laplace(X, y)
    largest = float(np.linalg.eigvalsh(precision).max())
    data = (jnp.asarray(X), jnp.asarray(y))
    logistic, minibatched = logistic_model(), logistic_model(args.batch)
    fraction = args.batch / args.rows
    rows = []
    h_sgld = 0.1 / largest
    h_sghmc, friction = 0.5 / np.sqrt(largest), 2 * np.sqrt(largest)
    warmup = args.sg_samples // 10
    for cv in (False, True):
        tag = " + CV" if cv else ""
        per_step = fraction * (2 if cv else 1)
        rows.append(
            run(
                f"ne.SGLD{tag}",
                ne.SGLD(minibatched, step_size=h_sgld, control_variates=cv),
                data,
                warmup,
                args.sg_samples,
                per_step,
                mean,
                cov,
            )
        )
        rows.append(
            run(
                f"ne.SGHMC{tag}",
                ne.SGHMC(
                    minibatched,
                    step_size=h_sghmc,
                    friction=friction,
                    control_variates=cv,
                ),
                data,
                warmup,
                args.sg_samples,
                per_step,
                mean,
                cov,
            )
        )
    full_warmup = args.full_samples
    rows.append(
        run(
            "ne.MALA (full data)",
            ne.MALA(logistic),
            data,
            full_warmup,
            args.full_samples,
            1.0,
            mean,
            cov,
        )
    )
    rows.append(
        run(
            "NUTS (full data)",
            NUTS(logistic),
            data,
            full_warmup,
            args.full_samples,
            None,
            mean,
            cov,
        )
    )
    print(
        f"# {platform.machine()}, {jax.device_count()} x {jax.devices()[0].platform}, "
        f"jax {jax.__version__}; logistic regression {args.rows} x {DIM}, "
        f"batch {args.batch}, {CHAINS} chains"
    )
    print(
        f"# SG samplers: {warmup} warm-up + {args.sg_samples} draws per chain; "
        f"full-data samplers: {full_warmup} + {args.full_samples}"
    )
    print(
        "| sampler | wall s | compile s | data passes | min ESS | "
        "max mean error (sd) | max sd error |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, seconds, compile_s, passes, e, me, se in rows:
        print(
            f"| {name} | {seconds:.1f} | {compile_s:.1f} | {passes:.0f} | {e:.0f} | "
            f"{me:.3f} | {se:.1%} |"
        )


if __name__ == "__main__":
    main()
