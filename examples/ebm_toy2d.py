"""Train an energy-based model on a 2-D toy law with tempered PCD, PCD, CD or short-run.

Prints the held-out log-likelihood of the learned energy (normalised on a grid)
next to the true law's, and saves the learned density with its negatives and
the training curves as PNGs.

    python examples/ebm_toy2d.py --law eight_gaussians --method tempered --num-steps 2000

``--method pcd`` shows the failure of plain persistent chains: the buffer
holds every mode while the learned density loses the relative mode weights.
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import numpyro_ebm as ne
from numpyro_ebm.datasets import TOY_LAWS
from numpyro_ebm.diagnostics import grid_log_likelihood
from numpyro_ebm.learn import langevin_chains
from numpyro_ebm.plots import plot_density_2d, plot_history

METHODS = {
    "tempered": lambda a: ne.TemperedPCD(
        num_steps=a.langevin_steps or 5, step_size=a.step_size
    ),
    "pcd": lambda a: ne.PCD(num_steps=a.langevin_steps or 20, step_size=a.step_size),
    "cd": lambda a: ne.CD(num_steps=a.langevin_steps or 5, step_size=a.step_size),
    "shortrun": lambda a: ne.ShortRun(
        num_steps=a.langevin_steps or 50, step_size=a.step_size
    ),
}


def main(args):
    law = TOY_LAWS[args.law]
    data = law.sample(jax.random.key(0), args.num_data)
    test = law.sample(jax.random.key(1), 5000)
    ebm = ne.EBM(
        ne.nn.EnergyMLP(2, (args.hidden, args.hidden), rngs=nnx.Rngs(args.seed)),
        # a decaying learning rate settles the mode weights, which oscillate
        # under a constant one
        optax.chain(
            optax.clip_by_global_norm(10.0),
            optax.adam(
                optax.cosine_decay_schedule(args.learning_rate, args.num_steps, 0.1)
            ),
        ),
        method=METHODS[args.method](args),
        energy_regularization=args.energy_regularization,
    )
    start = time.perf_counter()
    result = ebm.run(
        jax.random.key(args.seed),
        args.num_steps,
        data,
        batch_size=args.batch_size,
        progress_bar=not args.no_progress_bar,
    )
    jax.block_until_ready(result.params)
    print(f"trained {args.num_steps} steps in {time.perf_counter() - start:.1f} s")
    learned = float(grid_log_likelihood(result.module, test, law.bounds))
    print(f"held-out log-likelihood, learned energy (grid-normalised): {learned:.3f}")
    if law.log_prob is not None:
        print(
            f"held-out log-likelihood, true law:                       "
            f"{float(jnp.mean(law.log_prob(test))):.3f}"
        )

    # negatives for the picture: the persistent chains, or fresh chains
    sampler_state = result.state.sampler_state
    if args.method == "pcd":
        negatives = sampler_state["buffer"][:2000]
    elif args.method == "tempered":
        negatives = sampler_state["chains"][0]
    else:
        negatives = langevin_chains(
            jax.random.key(2),
            lambda x: result.module(x[None])[0],
            test[:2000],
            50,
            args.step_size,
        )[0]
    os.makedirs(args.out, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.2), layout="constrained")
    plot_density_2d(
        lambda x: -law.log_prob(x) if law.log_prob else 0 * x[:, 0],
        law.bounds,
        test[:2000],
        ax=axes[0],
        title=f"data: {args.law}",
    )
    plot_density_2d(
        result.module,
        law.bounds,
        negatives,
        ax=axes[1],
        title=f"learned exp(-E), {args.method} negatives",
    )
    fig.savefig(os.path.join(args.out, f"ebm_{args.law}_{args.method}.png"), dpi=100)
    plot_history(
        result.history, ["loss", "energy_data", "energy_negative", "grad_norm"]
    )
    plt.savefig(
        os.path.join(args.out, f"ebm_{args.law}_{args.method}_history.png"), dpi=100
    )
    print(f"figures written to {args.out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--law",
        choices=sorted(TOY_LAWS),
        default="eight_gaussians",
        help="2-D toy law the training data are drawn from (default %(default)s)",
    )
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default="tempered",
        help="sampler of the negatives: tempered (ne.TemperedPCD, parallel "
        "tempering), pcd (persistent chains), cd (chains from the data batch) "
        "or shortrun (chains from noise) (default %(default)s)",
    )
    parser.add_argument(
        "--num-steps",
        type=int,
        default=2000,
        help="training iterations, i.e. optimiser steps (default %(default)s)",
    )
    parser.add_argument(
        "--num-data",
        type=int,
        default=20000,
        help="number of training points drawn from the law (default %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="data points per training iteration, and as many negatives "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--langevin-steps",
        type=int,
        default=None,
        help="Langevin steps of the negative chains per training iteration "
        "(per temperature level for tempered); default by method: tempered 5, "
        "pcd 20, cd 5, shortrun 50",
    )
    parser.add_argument(
        "--step-size",
        type=float,
        default=0.01,
        help="Langevin step size h of the negative chains, "
        "x' = x - h grad E(x) + sqrt(2h) xi (for tempered, the step at "
        "beta = 1); also the step of the 50-step chains drawn for the cd and "
        "shortrun figures (default %(default)s)",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        default=64,
        help="width of each of the energy network's two hidden layers "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="initial Adam learning rate, cosine-decayed to a tenth of it over "
        "--num-steps (default %(default)s)",
    )
    parser.add_argument(
        "--energy-regularization",
        type=float,
        default=0.0,
        help="weight alpha of the penalty alpha (mean E(data)^2 + "
        "mean E(negatives)^2) that keeps the energies near zero; 0 turns it "
        "off (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the network initialisation and of training "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--out",
        default="examples/out",
        help="directory the figures ebm_<law>_<method>.png and "
        "ebm_<law>_<method>_history.png are written to, created if missing "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--no-progress-bar",
        action="store_true",
        help="hide the training progress bar",
    )
    main(parser.parse_args())
