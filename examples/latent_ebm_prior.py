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

Written to ``--out``: samples (prior chains pushed through the generator),
reconstructions of training images from their posterior particles, and the
log-joint trace.

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
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx
from numpyro.contrib.module import nnx_module
from numpyro.handlers import seed, substitute, trace

import numpyro_ebm as ne
from numpyro_ebm.datasets import load_digits
from numpyro_ebm.plots import plot_image_grid

LEVELS = 16


def make_model(args):
    rngs = nnx.Rngs(args.seed)
    decoder_net = ne.nn.MLPDecoder(args.latent_dim, 64, (args.hidden,), rngs=rngs)
    energy_net = ne.nn.EnergyMLP(args.latent_dim, (args.energy_hidden,) * 2, rngs=rngs)
    base = dist.Normal(jnp.zeros(args.latent_dim), 1.0).to_event(1)

    def model(x, batch_size=None):
        decoder = nnx_module("decoder", decoder_net)
        net = nnx_module("energy", energy_net)

        def energy(z):  # a bounded tilt of the base: |E| <= max_tilt
            return args.max_tilt * jnp.tanh(net(z) / args.max_tilt)

        prior = ne.EnergyDistribution(
            energy,
            (args.latent_dim,),
            base,
            num_steps=args.prior_steps,
            step_size=args.prior_step_size,
            contrastive=True,
            num_contrastive_samples=args.batch_size,
        )
        with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
            z = numpyro.sample("z", prior)
            numpyro.sample(
                "x",
                dist.BinomialLogits(decoder(z), total_count=LEVELS).to_event(1),
                obs=numpyro.subsample(x, event_dim=1),
            )

    return model


def decode(model, params, x, z):
    """Prior draws of the trained model (``z=None``) or decoded ``z``."""
    data = dict(params) if z is None else {**params, "z": z}
    tr = trace(seed(substitute(model, data=data), jax.random.key(3))).get_trace(x)
    return tr["z"]["value"], tr["x"]["fn"].mean


def main(args):
    images, _ = load_digits()
    x = jnp.asarray(np.rint(images * LEVELS), jnp.float32)[: args.num_data]
    model = make_model(args)
    soul = ne.SOUL(
        model,
        optax.adam(
            optax.cosine_decay_schedule(args.learning_rate, args.num_steps, 0.1)
        ),
        step_size=args.posterior_step_size,
        num_langevin_steps=args.posterior_steps,
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
    elapsed = time.perf_counter() - start
    log_joint = np.asarray(result.history["log_joint"]) / x.shape[0]
    print(
        f"SOUL, {args.num_steps} iterations of {args.posterior_steps} posterior "
        f"Langevin steps on {args.batch_size} of {x.shape[0]} images: {elapsed:.1f} s"
    )
    if args.adjusted:
        accept = np.asarray(result.history["accept_prob"])
        print(f"posterior MALA acceptance: {accept[len(accept) // 2 :].mean():.2f}")
    print(
        f"log p(x, z) per image: {log_joint[: max(1, len(log_joint) // 10)].mean():.1f}"
        f" over the first tenth, {log_joint[-len(log_joint) // 10 :].mean():.1f} "
        "over the last"
    )

    os.makedirs(args.out, exist_ok=True)
    z = result.particles["z"][0]  # the persistent posterior particles
    _, recon = decode(model, result.params, x[:64], z[:64])
    _, samples = decode(model, result.params, x[:64], None)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (title, imgs) in zip(
        axes,
        (("samples", samples), ("training images", x[:64]), ("reconstructions", recon)),
        strict=True,
    ):
        plot_image_grid(imgs, (8, 8), ax=ax, title=title, vmin=0, vmax=LEVELS)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "latent_ebm_prior_samples.png"), dpi=100)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(log_joint)
    ax.set_xlabel("SOUL iteration")
    ax.set_ylabel("log p(x, z) per image (mini-batch)")
    ax.set_ylim(bottom=np.percentile(log_joint, 5))
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "latent_ebm_prior_trace.png"), dpi=100)
    print(f"figures written to {args.out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=3000)
    parser.add_argument("--num-data", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--energy-hidden", type=int, default=64)
    parser.add_argument("--max-tilt", type=float, default=4.0)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--posterior-steps", type=int, default=20)
    parser.add_argument("--posterior-step-size", type=float, default=0.005)
    parser.add_argument(
        "--adjusted",
        action="store_true",
        help="MALA posterior moves (one accept/reject per image)",
    )
    parser.add_argument("--prior-steps", type=int, default=60)
    parser.add_argument("--prior-step-size", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="examples/out")
    parser.add_argument("--no-progress-bar", action="store_true")
    main(parser.parse_args())
