"""VAEs on scikit-learn's digits with NumPyro's SVI: Gaussian prior vs latent EBM prior.

Both models share the decoder ``p(x | z)`` (a Binomial(16) likelihood per
pixel, the digits' own 0..16 grey levels) and the amortised Gaussian encoder
``q(z | x)`` of :mod:`numpyro_ebm.nn`; they differ in the prior of ``z``:

* ``N(0, I)``;
* a latent energy-based prior ``p(z) ∝ exp(-E(z)) N(z; 0, I)`` (Pang et al.
  2020): an :class:`numpyro_ebm.EnergyDistribution` with ``contrastive=True``,
  whose ``log_prob`` gradient carries ``E_p[grad E]`` estimated by short-run
  Langevin chains on the prior, so NumPyro's ``Trace_ELBO`` trains it as it is.

Both are trained with ``numpyro.infer.SVI`` on the first 1000 images,
monitored on images 1000-1349 and scored on images 1350-1796 by the
importance-sampled negative log-likelihood (nats per image,
:func:`numpyro_ebm.importance_log_likelihood`; the EBM prior's ``log Z`` is
estimated from 100,000 base draws). Figures: ELBO curves, samples and
reconstructions.

    python examples/vae_digits.py --num-steps 6000
"""

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx
from numpyro.contrib.module import nnx_module
from numpyro.handlers import seed, substitute, trace
from numpyro.infer import SVI, Trace_ELBO

import numpyro_ebm as ne
from numpyro_ebm.plots import plot_image_grid

from digits_model import LEVELS, add_arguments, load_counts, make_generator


def make_vae(args, prior):
    model = make_generator(args, prior)
    encoder_net = ne.nn.GaussianEncoder(
        64, args.latent_dim, (args.hidden,), rngs=nnx.Rngs(args.seed + 1)
    )

    def guide(x, batch_size=None, contrastive=True):
        encoder = nnx_module("encoder", encoder_net)
        with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
            loc, scale = encoder(numpyro.subsample(x, event_dim=1) / LEVELS)
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide


def train(args, prior, x_train, x_val):
    model, guide = make_vae(args, prior)
    schedule = optax.cosine_decay_schedule(args.learning_rate, args.num_steps, 0.1)
    svi = SVI(model, guide, optax.adam(schedule), Trace_ELBO())
    state = svi.init(jax.random.key(args.seed), x_train, batch_size=args.batch_size)
    chunk = min(args.eval_every, args.num_steps)

    @jax.jit
    def run_chunk(state):
        def body(state, _):
            return svi.update(state, x_train, batch_size=args.batch_size)

        return jax.lax.scan(body, state, None, length=chunk)

    log_z_samples = 20_000  # during training; 100,000 for the final figures

    @jax.jit
    def val_elbo(params, key):  # one importance sample: the ELBO, normalised
        return ne.importance_log_likelihood(
            key,
            model,
            guide,
            params,
            x_val,
            num_samples=1,
            contrastive=False,
            log_normalizers=(
                {"z": prior_log_z(model, params, key, log_z_samples)[0]}
                if prior == "ebm"
                else None
            ),
        ).mean()

    losses, curve, best = [], [], (-np.inf, None)
    start = time.perf_counter()
    chunks = range(args.num_steps // chunk)
    for i in tqdm(chunks, desc=f"SVI, {prior} prior", disable=args.no_progress_bar):
        state, loss = run_chunk(state)
        losses.append(np.asarray(loss))
        params = svi.get_params(state)
        elbo = float(val_elbo(params, jax.random.key(i)))
        curve.append(((i + 1) * chunk, elbo))
        if elbo > best[0]:  # early stopping on the validation ELBO
            best = (elbo, params)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start
    return model, guide, best[1], np.concatenate(losses), curve, elapsed


def prior_log_z(model, params, key, num_samples):
    """log Z of the trained energy prior and its standard error (importance
    sampling from its base)."""
    tr = trace(seed(substitute(model, data=params), key)).get_trace(
        jnp.zeros((1, 64)), contrastive=False
    )
    return tr["z"]["fn"].base_dist.log_normalizer(key, num_samples)


def decode_mean(model, params, z):
    """Mean image LEVELS * sigmoid(decoder(z)) of the trained model."""
    tr = trace(
        seed(substitute(model, data={**params, "z": z}), jax.random.key(0))
    ).get_trace(jnp.zeros((z.shape[0], 64)), contrastive=False)
    return tr["x"]["fn"].mean


def negative_log_likelihood(model, guide, params, data, num_samples, log_z=None):
    """Per-image NLL (nats) by importance sampling with the encoder as proposal."""
    return -ne.importance_log_likelihood(
        jax.random.key(100),
        model,
        guide,
        params,
        data,
        num_samples=num_samples,
        batch_size=100,
        contrastive=False,
        log_normalizers=None if log_z is None else {"z": log_z},
    )


def _se(values):
    return float(np.std(values) / np.sqrt(len(values)))


def main(args):
    x = load_counts()
    x_train, x_val, x_test = x[:1000], x[1000:1350], x[1350:]
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for prior in ("gaussian", "ebm"):
        model, guide, params, losses, curve, elapsed = train(
            args, prior, x_train, x_val
        )
        log_z, log_z_se = (
            prior_log_z(model, params, jax.random.key(100), 100_000)
            if prior == "ebm"
            else (None, None)
        )
        r = results[prior] = dict(
            model=model,
            guide=guide,
            params=params,
            losses=losses,
            curve=curve,
            val=negative_log_likelihood(
                model, guide, params, x_val, args.num_is_samples, log_z
            ),
            test=negative_log_likelihood(
                model, guide, params, x_test, args.num_is_samples, log_z
            ),
            test_elbo=negative_log_likelihood(model, guide, params, x_test, 1, log_z),
        )
        print(
            f"{prior:>8} prior: {elapsed:.1f} s training; test NLL "
            f"{r['test'].mean():.2f} ± {_se(r['test']):.2f} nats per image "
            f"(IS, {args.num_is_samples} samples), validation NLL "
            f"{r['val'].mean():.2f}, test -ELBO {r['test_elbo'].mean():.2f}"
            + ("" if log_z is None else f"; log Z {log_z:.3f} ± {log_z_se:.3f}")
        )
    gain = results["gaussian"]["test"] - results["ebm"]["test"]
    print(
        f"the EBM prior lowers the test NLL by {gain.mean():.2f} ± {_se(gain):.2f} "
        "nats per image (paired over the test images)"
    )
    plot(args, results, x_test)


def plot(args, results, x_test):
    fig, ax = plt.subplots(figsize=(6, 4))
    for prior, r in results.items():
        steps, elbo = zip(*r["curve"], strict=True)
        ax.plot(steps, elbo, "o-", label=f"{prior} prior: validation ELBO")
        losses = r["losses"]
        w = max(1, len(losses) // 100)
        smooth = -np.convolve(losses, np.ones(w) / w, "valid") / 1000
        if prior == "gaussian":  # the EBM's training loss lacks log Z
            ax.plot(
                np.arange(len(smooth)) + w,
                smooth,
                alpha=0.5,
                label="gaussian prior: training ELBO",
            )
    ax.set_xlabel("SVI step")
    ax.set_ylabel("ELBO per image (nats)")
    ax.set_title(
        "VAE on 8x8 digits: training ELBO (mini-batch, moving average)\n"
        "and validation ELBO (the EBM prior's with its estimated log Z)",
        fontsize=9,
    )
    ax.set_ylim(bottom=max(ax.get_ylim()[0], -200))
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "vae_digits_elbo.png"), dpi=100)

    fig, axes = plt.subplots(2, 3, figsize=(9, 6.4), layout="constrained")
    key = jax.random.key(7)
    for row, (prior, r) in enumerate(results.items()):
        model, guide, params = r["model"], r["guide"], r["params"]
        z_prior = trace(seed(substitute(model, data=params), key)).get_trace(
            x_test[:64], contrastive=False
        )["z"]["value"]
        z_posterior = trace(seed(substitute(guide, data=params), key)).get_trace(
            x_test[:64], contrastive=False
        )["z"]["value"]
        panels = (
            ("samples", decode_mean(model, params, z_prior)),
            ("test images", x_test[:64]),
            ("reconstructions", decode_mean(model, params, z_posterior)),
        )
        for col, (title, images) in enumerate(panels):
            ax = axes[row, col]
            plot_image_grid(images, (8, 8), ax=ax, vmin=0, vmax=LEVELS)
            ax.set_title(f"{prior} prior: {title}", fontsize=9)
    fig.savefig(os.path.join(args.out, "vae_digits_samples.png"), dpi=100)
    print(f"figures written to {args.out}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--num-steps",
        type=int,
        default=6000,
        help="SVI steps per prior, rounded down to a multiple of --eval-every "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=500,
        help="SVI steps between evaluations of the validation ELBO on images "
        "1000-1349; the parameters with the best one are kept (early "
        "stopping) (default %(default)s)",
    )
    parser.add_argument(
        "--num-is-samples",
        type=int,
        default=1000,
        help="importance samples per image for the validation and test NLL "
        "(default %(default)s)",
    )
    add_arguments(parser)
    main(parser.parse_args())
