"""Inpainting digits with a learned diffusion prior, by ``ne.ScorePosterior``.

A VP diffusion model (``ne.nn.DiffusionScoreMLP``, continuous denoising score
matching) learns the 8x8 digits (the first 1000 images, standardised). It
becomes the prior of a NumPyro model through ``ScoreDistribution.from_sde``;
the top half of each held-out image is observed with Gaussian noise, and
``ne.ScorePosterior`` (its exact default, conditional SMC along the prior's
reverse diffusion) draws the whole image given it. The figure shows, per
image, the truth, what was observed, the posterior mean and three draws, the
observed rows outlined in red; the
script prints the error of the posterior mean on the hidden half beside that
of the training images' mean.

    python examples/score_prior_digits.py --num-steps 20000
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx
from numpyro.infer import MCMC

import numpyro_ebm as ne
from numpyro_ebm.core.sde import vp_sde
from numpyro_ebm.datasets import load_digits

OBSERVED = np.arange(32)  # the top four rows of pixels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=20_000, help="training steps")
    parser.add_argument(
        "--hidden", type=int, default=256, help="hidden width (3 layers)"
    )
    parser.add_argument("--num-images", type=int, default=6, help="held-out images")
    parser.add_argument("--num-samples", type=int, default=100, help="draws per image")
    parser.add_argument(
        "--num-levels", type=int, default=100, help="levels of the reverse diffusion"
    )
    parser.add_argument(
        "--num-particles", type=int, default=16, help="SMC particles per sweep"
    )
    parser.add_argument(
        "--noise", type=float, default=0.05, help="observation noise (pixel units)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", default=".", help="directory for the figure")
    parser.add_argument(
        "--no-progress-bar", action="store_true", help="hide the progress bars"
    )
    args = parser.parse_args()

    images, _ = load_digits()
    train, test = images[:1000], images[1350 : 1350 + args.num_images]
    mean, sd = float(train.mean()), float(train.std())
    standard = lambda x: (x - mean) / sd

    sde = vp_sde()
    net = ne.nn.DiffusionScoreMLP(64, sde, (args.hidden,) * 3, rngs=nnx.Rngs(args.seed))
    learner = ne.ScoreMatching(
        net,
        optax.adam(optax.cosine_decay_schedule(1e-3, args.num_steps, 0.01)),
        ne.DiffusionScoreMatching(sde),
    )
    start = time.perf_counter()
    result = learner.run(
        jax.random.key(args.seed),
        args.num_steps,
        jnp.asarray(standard(train)),
        batch_size=min(256, train.shape[0]),
        progress_bar=not args.no_progress_bar,
    )
    print(f"trained {args.num_steps} steps in {time.perf_counter() - start:.0f} s")

    prior = ne.ScoreDistribution.from_sde(result.module, sde, (64,), eps=1e-3)
    noise = args.noise / sd

    def model(y):
        u = numpyro.sample("u", prior)  # the standardised image
        numpyro.sample("y", dist.Normal(u[OBSERVED], noise).to_event(1), obs=y)

    # the exact default: conditional SMC along the prior's reverse diffusion
    kernel = ne.ScorePosterior(
        model, num_particles=args.num_particles, num_levels=args.num_levels
    )
    mcmc = MCMC(
        kernel,
        num_warmup=max(1, args.num_samples // 5),
        num_samples=args.num_samples,
        progress_bar=not args.no_progress_bar,
        jit_model_args=True,  # one compilation for every image
    )
    rng = np.random.default_rng(args.seed)
    hidden = np.setdiff1d(np.arange(64), OBSERVED)
    rows, errors, baseline = [], [], []
    for k, image in enumerate(test):
        y = standard(image[OBSERVED]) + noise * rng.normal(size=OBSERVED.size)
        mcmc.run(jax.random.key(args.seed + 1 + k), jnp.asarray(y, jnp.float32))
        draws = np.asarray(mcmc.get_samples()["u"]) * sd + mean
        post_mean = draws.mean(0)
        errors.append(np.sqrt(np.mean((post_mean[hidden] - image[hidden]) ** 2)))
        baseline.append(np.sqrt(np.mean((train.mean(0)[hidden] - image[hidden]) ** 2)))
        shown = np.full(64, np.nan)
        shown[OBSERVED] = image[OBSERVED]
        rows.append([image, shown, post_mean, *draws[:3]])
    print(
        f"root mean squared error on the hidden half (pixel units 0..1): posterior "
        f"mean {np.mean(errors):.3f}, training images' mean {np.mean(baseline):.3f}"
    )

    titles = ["truth", "observed", "posterior mean", "draw", "draw", "draw"]
    fig, axes = plt.subplots(len(rows), 6, figsize=(7, 1.2 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            axes[i, j].imshow(
                np.clip(picture, 0, 1).reshape(8, 8)
                if j != 1
                else picture.reshape(8, 8),
                cmap="gray_r",
                vmin=0,
                vmax=1,
            )
            if j != 1:  # the observed rows, outlined
                axes[i, j].add_patch(
                    Rectangle((-0.45, -0.45), 7.9, 3.9, fill=False, ec="tab:red", lw=1)
                )
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=8)
    fig.tight_layout()
    path = os.path.join(args.out, "score_prior_digits.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
