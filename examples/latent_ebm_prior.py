"""A generator with a latent energy-based prior, learned on digits by SOUL.

The model of Pang et al. (2020) written as a NumPyro model::

    z_i ~ p_alpha(z) ∝ exp(-E_alpha(z)) N(z; 0, I)      (ne.EnergyDistribution)
    x_i | z_i ~ Binomial(16, sigmoid(g_beta(z_i)))        (ne.nn.MLPDecoder)

with ``alpha`` and ``beta`` the parameters of two Flax NNX networks registered
by ``nnx_module``. ``ne.SOUL`` maximises the marginal likelihood: each
iteration takes a mini-batch of images (a subsampled ``numpyro.plate``), moves
their persistent latent particles by short-run posterior Langevin steps, and
takes one Adam step on ``(alpha, beta)`` with Fisher's identity. The prior's
``contrastive=True`` term supplies ``E_{p_alpha}[grad E_alpha]`` from short-run
prior chains, so the energy is trained by the same gradient as the generator.

The same generator with a ``N(0, I)`` prior is trained alongside. Both are
scored on held-out images (1350-1796; training uses the first 1000) by the
importance-sampled negative log-likelihood: posterior chains on the test
images (SOUL with the parameters frozen, MALA moves) give each image a
Gaussian proposal, and :func:`numpyro_ebm.importance_log_likelihood` does the
rest (the EBM's ``log Z`` estimated from its base).

Written to ``--out``: samples (prior chains pushed through the generator),
reconstructions of training images from their posterior particles, and the
log-joint traces.

    python examples/latent_ebm_prior.py --num-steps 3000
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jax
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.handlers import seed, substitute, trace

import numpyro_ebm as ne
from numpyro_ebm.plots import plot_image_grid

from digits_model import LEVELS, add_arguments, load_counts, make_generator


def train(args, model, x):
    soul = ne.SOUL(
        model,
        optimizer=optax.adam(
            optax.cosine_decay_schedule(args.learning_rate, args.num_steps, 0.1)
        ),
        step_size=args.posterior_step_size,
        num_langevin_steps=args.posterior_steps,
        num_particles=1,
        adjusted=args.adjusted,
    )
    start = time.perf_counter()
    result = soul.run(
        jax.random.key(args.seed),
        args.num_steps,
        x,
        batch_size=args.batch_size,
        progress_bar=not args.no_progress_bar,
    )
    jax.block_until_ready(result.params)
    return result, time.perf_counter() - start


def test_nll(args, model, params, x_test, log_normalizers="estimate"):
    """Per-image NLL (nats) by importance sampling around posterior chains;
    the EBM prior's ``log Z`` estimated from its base unless given as
    ``{"z": log_z}``."""
    # posterior particles for the test images: SOUL with the parameters frozen
    chains = ne.SOUL(
        model,
        optimizer=optax.set_to_zero(),
        step_size=args.posterior_step_size,
        num_langevin_steps=args.posterior_steps,
        num_particles=args.num_eval_particles,
        adjusted=True,
    )
    state = chains.init(jax.random.key(1), x_test, batch_size=args.batch_size)
    state = state._replace(params=params)  # all parameters are unconstrained
    steps = args.num_eval_steps
    z = chains.run(
        jax.random.key(2),
        steps,
        x_test,
        batch_size=args.batch_size,
        init_state=state,
        progress_bar=not args.no_progress_bar,
    ).particles["z"]  # (particles, images, latent_dim)
    loc, scale = z.mean(0), 1.5 * z.std(0) + 1e-3  # a widened Gaussian proposal

    def guide(x, batch_size=None, contrastive=True):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return -ne.importance_log_likelihood(
        jax.random.key(3),
        model,
        guide,
        params,
        x_test,
        num_samples=args.num_is_samples,
        batch_size=100,
        contrastive=False,
        log_normalizers=log_normalizers,
    )


def decode(model, params, x, z):
    """Prior draws of the trained model (``z=None``) or decoded ``z``."""
    data = dict(params) if z is None else {**params, "z": z}
    tr = trace(seed(substitute(model, data=data), jax.random.key(3))).get_trace(x)
    return tr["z"]["value"], tr["x"]["fn"].mean


def _se(values):
    return float(np.std(values) / np.sqrt(len(values)))


def main(args):
    x = load_counts()
    x_train, x_test = x[: args.num_data], x[1350:][: args.num_test]
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for prior in ("ebm", "gaussian"):
        model = make_generator(args, prior)
        result, elapsed = train(args, model, x_train)
        log_joint = np.asarray(result.history["log_joint"]) / x_train.shape[0]
        tenth = max(1, len(log_joint) // 10)
        print(
            f"{prior} prior: SOUL, {args.num_steps} iterations of "
            f"{args.posterior_steps} posterior Langevin steps on {args.batch_size} "
            f"of {x_train.shape[0]} images: {elapsed:.1f} s; log p(x, z) per image "
            f"{log_joint[:tenth].mean():.1f} over the first tenth, "
            f"{log_joint[-tenth:].mean():.1f} over the last"
        )
        if args.adjusted:
            accept = np.asarray(result.history["accept_prob"])
            print(
                f"   posterior MALA acceptance {accept[len(accept) // 2 :].mean():.2f}"
            )
        nll = test_nll(args, model, result.state.params, x_test)
        print(
            f"   test NLL {nll.mean():.2f} ± {_se(nll):.2f} nats per image "
            f"({x_test.shape[0]} held-out images, {args.num_is_samples} "
            "importance samples)"
        )
        results[prior] = (model, result, log_joint, nll)
    gain = results["gaussian"][3] - results["ebm"][3]
    print(
        f"the EBM prior lowers the test NLL by {gain.mean():.2f} ± {_se(gain):.2f} "
        "nats per image (paired)"
    )
    plot(args, results, x_train)


def plot(args, results, x):
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.4), layout="constrained")
    for row, (prior, (model, result, _, _)) in enumerate(results.items()):
        z = result.particles["z"][0]  # the persistent posterior particles
        panels = (
            ("samples", decode(model, result.params, x[:64], None)[1]),
            ("training images", x[:64]),
            ("reconstructions", decode(model, result.params, x[:64], z[:64])[1]),
        )
        for ax, (title, imgs) in zip(axes[row], panels, strict=True):
            plot_image_grid(imgs, (8, 8), ax=ax, vmin=0, vmax=LEVELS)
            ax.set_title(f"{prior} prior: {title}", fontsize=9)
    fig.savefig(os.path.join(args.out, "latent_ebm_prior_samples.png"), dpi=100)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for prior, (_, _, log_joint, _) in results.items():
        log_joint = np.asarray(log_joint)
        w = max(1, len(log_joint) // 50)  # a moving average over 2% of the run
        (line,) = ax.plot(log_joint, alpha=0.2, lw=0.6)
        ax.plot(
            np.arange(w - 1, len(log_joint)),
            np.convolve(log_joint, np.ones(w) / w, "valid"),
            color=line.get_color(),
            label=f"{prior} prior (moving average of {w})",
        )
    ax.set_xlabel("SOUL iteration")
    ax.set_ylabel("log p(x, z) per image (mini-batch)")
    ax.set_title("SOUL: the particles' log joint per image", fontsize=10)
    ax.set_ylim(bottom=np.percentile(results["ebm"][2], 5))
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "latent_ebm_prior_trace.png"), dpi=100)
    print(f"figures written to {args.out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num-steps",
        type=int,
        default=3000,
        help="SOUL training iterations (one Adam step each) per prior "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--num-data",
        type=int,
        default=1000,
        help="training images, the first ones of the 1797 digits (default %(default)s)",
    )
    parser.add_argument(
        "--num-test",
        type=int,
        default=447,
        help="held-out images scored, taken from image 1350 on (at most 447) "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--posterior-steps",
        type=int,
        default=20,
        help="posterior Langevin steps on the latents per SOUL iteration, in "
        "training and in the evaluation chains (default %(default)s)",
    )
    parser.add_argument(
        "--posterior-step-size",
        type=float,
        default=0.005,
        help="Langevin step size h of the posterior moves of the latents, "
        "z' = z + h grad_z log p(x, z) + sqrt(2h) xi, in training and "
        "evaluation (default %(default)s)",
    )
    parser.add_argument(
        "--adjusted",
        action="store_true",
        help="Metropolis-adjust (MALA, one accept/reject per image) the "
        "posterior moves in training; unadjusted (ULA) without it (the "
        "evaluation chains are always MALA)",
    )
    parser.add_argument(
        "--num-eval-particles",
        type=int,
        default=16,
        help="posterior chains per test image whose mean and sd give its "
        "Gaussian importance proposal (default %(default)s)",
    )
    parser.add_argument(
        "--num-eval-steps",
        type=int,
        default=300,
        help="iterations of SOUL with frozen parameters that run those chains "
        "on the test images; each takes --posterior-steps MALA steps on a "
        "mini-batch of --batch-size images (default %(default)s)",
    )
    parser.add_argument(
        "--num-is-samples",
        type=int,
        default=1000,
        help="importance samples per test image for the test NLL (default %(default)s)",
    )
    add_arguments(parser)
    main(parser.parse_args())
