"""The generative model of digits shared by ``vae_digits.py`` and
``latent_ebm_prior.py``.

``x_i | z_i ~ Binomial(16, sigmoid(g(z_i)))`` per pixel (the digits' own 0..16
grey levels) with ``g`` an :class:`numpyro_ebm.nn.MLPDecoder`, and ``z_i``
either ``N(0, I)`` or a latent energy-based prior
``exp(-E(z)) N(z; 0, I)`` (Pang et al. 2020) whose energy, an
:class:`numpyro_ebm.nn.EnergyMLP`, is bounded, ``|E| <= max_tilt``: the prior
then stays within ``exp(±max_tilt)`` of its base, which keeps its normaliser
estimable by importance sampling from the base.
"""

import numpy as np

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from flax import nnx
from numpyro.contrib.module import nnx_module

import numpyro_ebm as ne
from numpyro_ebm.datasets import load_digits

LEVELS = 16  # digits' grey levels are 0..16


def load_counts():
    """The 1797 digits as grey-level counts, float32 of shape (1797, 64)."""
    images, _ = load_digits()
    return jnp.asarray(np.rint(images * LEVELS), jnp.float32)


def make_generator(args, prior):
    """``model(x, batch_size=None, contrastive=True)`` with a ``"gaussian"`` or
    ``"ebm"`` prior; ``contrastive=False`` for evaluation (no prior chains)."""
    rngs = nnx.Rngs(args.seed)
    decoder_net = ne.nn.MLPDecoder(args.latent_dim, 64, (args.hidden,), rngs=rngs)
    energy_net = ne.nn.EnergyMLP(args.latent_dim, (args.energy_hidden,) * 2, rngs=rngs)
    base = dist.Normal(jnp.zeros(args.latent_dim), 1.0).to_event(1)

    def model(x, batch_size=None, contrastive=True):
        decoder = nnx_module("decoder", decoder_net)
        if prior == "gaussian":
            prior_dist = base
        else:
            net = nnx_module("energy", energy_net)

            def energy(z):  # a bounded tilt of the base: |E| <= max_tilt
                return args.max_tilt * jnp.tanh(net(z) / args.max_tilt)

            prior_dist = ne.EnergyDistribution(
                energy,
                (args.latent_dim,),
                base,
                num_steps=args.prior_steps,
                step_size=args.prior_step_size,
                adjusted=False,  # short unadjusted prior chains, as measured
                contrastive=contrastive,
                num_contrastive_samples=args.batch_size,
            )
        with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
            z = numpyro.sample("z", prior_dist)
            numpyro.sample(
                "x",
                dist.BinomialLogits(decoder(z), total_count=LEVELS).to_event(1),
                obs=numpyro.subsample(x, event_dim=1),
            )

    return model


def add_arguments(parser):
    """The model's command-line arguments, shared by both examples."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="images per training mini-batch (a subsampled plate); also the "
        "number of prior chains of the EBM prior's contrastive term "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--latent-dim",
        type=int,
        default=8,
        help="dimension of the latent z of each image (default %(default)s)",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        default=256,
        help="width of the decoder's hidden layer (and of the encoder's, where "
        "there is one) (default %(default)s)",
    )
    parser.add_argument(
        "--energy-hidden",
        type=int,
        default=64,
        help="width of each of the two hidden layers of the latent energy "
        "network E(z) (default %(default)s)",
    )
    parser.add_argument(
        "--max-tilt",
        type=float,
        default=4.0,
        help="bound on the latent energy, |E(z)| <= max_tilt via "
        "max_tilt * tanh(E / max_tilt), so the EBM prior stays within "
        "exp(+-max_tilt) of its N(0, I) base (default %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=2e-3,
        help="initial Adam learning rate, cosine-decayed to a tenth of it over "
        "the training steps (default %(default)s)",
    )
    parser.add_argument(
        "--prior-steps",
        type=int,
        default=60,
        help="unadjusted Langevin steps of each prior chain (started from the "
        "N(0, I) base) that draws from the EBM prior, for the contrastive term "
        "and the sample figures (default %(default)s)",
    )
    parser.add_argument(
        "--prior-step-size",
        type=float,
        default=0.05,
        help="Langevin step size h of the prior chains, "
        "z' = z - h grad U(z) + sqrt(2h) xi with U(z) = E(z) + |z|^2 / 2 "
        "(default %(default)s)",
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
        help="directory the PNG figures are written to, created if missing "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--no-progress-bar",
        action="store_true",
        help="hide the progress bars",
    )
