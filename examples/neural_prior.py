"""A learned energy as the prior of a NumPyro model, sampled with ne.MALA and ne.ULA.

1. Learn an energy ``E`` from samples of a 2-D toy law with ``ne.EBM``.
2. Use ``exp(-E)`` as the prior of a latent point ``z`` in a NumPyro model
   (registered with ``numpyro.contrib.module.nnx_module``) and observe a noisy
   linear measurement of it: ``y ~ N(a^T z, noise^2)`` -- an inverse problem
   whose posterior follows the learned shape.
3. Sample the posterior with ``ne.MALA`` and ``ne.ULA`` in ``numpyro.infer.MCMC``,
   summarise with ArviZ and compare with the exact posterior of the learned
   model, computed by quadrature on a grid (possible in 2-D).

    python examples/neural_prior.py --law two_moons --num-train-steps 2000

With the default ``--y -2`` only the upper moon explains the measurement and
the posterior has one mode. ``--y 0`` cuts both moons: the posterior has two
modes that Langevin chains do not cross, which ArviZ's r_hat reports.
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import arviz as az
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx
from numpyro.contrib.module import nnx_module
from numpyro.infer import MCMC

import numpyro_ebm as ne
from numpyro_ebm.datasets import TOY_LAWS
from numpyro_ebm.plots import bounds_around, plot_density_2d

DIRECTION = jnp.array([1.0, 0.0])  # the measurement sees the first coordinate


def make_model(prior_net, noise):
    base = dist.Normal(jnp.zeros(2), 4.0).to_event(1)  # keeps the prior proper

    def model(y=None):
        energy = nnx_module("prior", prior_net)
        z = numpyro.sample("z", ne.EnergyDistribution(energy, (2,), base_dist=base))
        numpyro.sample("y", dist.Normal(z @ DIRECTION, noise), obs=y)

    def log_posterior(z, y):
        return (
            -prior_net(z)
            + base.log_prob(z)
            + dist.Normal(z @ DIRECTION, noise).log_prob(y)
        )

    return model, log_posterior


def grid_posterior_moments(log_posterior, y, bounds, num=300):
    (xmin, xmax), (ymin, ymax) = bounds
    xx, yy = np.meshgrid(np.linspace(xmin, xmax, num), np.linspace(ymin, ymax, num))
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    lp = np.asarray(log_posterior(pts, y), np.float64)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    pts = np.asarray(pts, np.float64)
    mean = w @ pts
    return mean, np.sqrt(w @ (pts - mean) ** 2)


def main(args):
    law = TOY_LAWS[args.law]
    data = law.sample(jax.random.key(0), args.num_data)
    print(f"1. learning an energy prior on {args.law} ({args.num_train_steps} steps)")
    ebm = ne.EBM(
        ne.nn.EnergyMLP(2, (args.hidden, args.hidden), rngs=nnx.Rngs(0)),
        optax.adam(optax.cosine_decay_schedule(2e-3, args.num_train_steps, 0.1)),
    )
    start = time.perf_counter()
    trained = ebm.run(
        jax.random.key(1),
        args.num_train_steps,
        data,
        batch_size=128,
        progress_bar=not args.no_progress_bar,
    )
    jax.block_until_ready(trained.params)
    print(f"   done in {time.perf_counter() - start:.1f} s")

    model, log_posterior = make_model(trained.module, args.noise)
    y = jnp.asarray(args.y)
    mean, sd = grid_posterior_moments(log_posterior, y, law.bounds)
    print(f"2. posterior of z given y = {args.y} (noise sd {args.noise})")
    print(f"   exact (grid quadrature): mean {np.round(mean, 3)}, sd {np.round(sd, 3)}")

    print("3. sampling the posterior")
    os.makedirs(args.out, exist_ok=True)
    kernels = {
        "ne.MALA": ne.MALA(model),
        "ne.ULA": ne.ULA(model, step_size=args.ula_step_size, adapt_mass_matrix=True),
    }
    draws = {}
    for name, kernel in kernels.items():
        mcmc = MCMC(
            kernel,
            num_warmup=args.num_warmup,
            num_samples=args.num_samples,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
        )
        start = time.perf_counter()
        mcmc.run(jax.random.key(2), y=y)
        elapsed = time.perf_counter() - start
        idata = az.from_numpyro(mcmc)
        print(f"\n   {name} ({elapsed:.1f} s with compilation)")
        print(az.summary(idata, var_names=["z"]).to_string())
        z = mcmc.get_samples()["z"]
        draws[name] = z[:: max(1, len(z) // 2000)]

    # the learned prior with its training data, then the posterior under each
    # kernel, zoomed on the posterior, with the observation marked
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3), layout="constrained")
    plot_density_2d(
        trained.module,
        law.bounds,
        data[:2000],
        ax=axes[0],
        title=f"learned prior exp(-E), {args.law}\n(dots: 2000 training points)",
        samples_label="training points",
    )
    zoom = bounds_around(np.concatenate(list(draws.values())), margin=0.4)
    for ax, (name, z) in zip(axes[1:], draws.items(), strict=True):
        plot_density_2d(
            lambda p: -log_posterior(p, y),
            zoom,
            z,
            ax=ax,
            title=f"posterior p(z | y = {args.y}), exact shading\n"
            f"(dots: {len(z)} {name} draws)",
            samples_label=f"{name} draws",
        )
        ax.axvline(args.y, color="k", ls="--", lw=1, label=f"observed y = {args.y}")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    axes[0].axvline(args.y, color="k", ls="--", lw=1, label=f"observed y = {args.y}")
    axes[0].legend(loc="upper right", fontsize=8, framealpha=0.8)
    fig.suptitle(
        f"A learned energy as the prior of z, observed through y = z_1 + noise "
        f"(sd {args.noise})"
    )
    fig.savefig(os.path.join(args.out, f"neural_prior_{args.law}.png"), dpi=100)
    print(f"\nfigures written to {args.out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--law",
        choices=sorted(TOY_LAWS),
        default="two_moons",
        help="2-D toy law the energy prior is learned from (default %(default)s)",
    )
    parser.add_argument(
        "--num-train-steps",
        type=int,
        default=2000,
        help="training iterations (optimiser steps) of ne.EBM that learns the "
        "energy (default %(default)s)",
    )
    parser.add_argument(
        "--num-data",
        type=int,
        default=20000,
        help="number of training points drawn from the law (default %(default)s)",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        default=64,
        help="width of each of the energy network's two hidden layers "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--y",
        type=float,
        default=-2.0,
        help="observed value of the measurement y ~ N(z_1, noise^2) of the "
        "first coordinate of z (default %(default)s)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.2,
        help="standard deviation of the measurement noise (default %(default)s)",
    )
    parser.add_argument(
        "--num-warmup",
        type=int,
        default=1000,
        help="MCMC warm-up iterations per chain, for MALA and ULA "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=2000,
        help="posterior draws per chain after warm-up (4 chains), for MALA and "
        "ULA (default %(default)s)",
    )
    parser.add_argument(
        "--ula-step-size",
        type=float,
        default=0.05,
        help="ULA's sampling step size h, z' = z - h A grad U(z) + "
        "sqrt(2h) A^(1/2) xi, in the units of the inverse mass matrix A "
        "adapted during warm-up (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        default="examples/out",
        help="directory the figure neural_prior_<law>.png (the learned prior and "
        "the posteriors) is written to, created if missing (default %(default)s)",
    )
    parser.add_argument(
        "--no-progress-bar",
        action="store_true",
        help="hide the progress bar of the energy's training (the MCMC runs "
        "never show one)",
    )
    main(parser.parse_args())
