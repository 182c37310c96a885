"""A fast smoke run of the digits likelihood pipeline of
``benchmarks/bench_images.py``: the split, a baseline in the discrete
convention, and a convolutional diffusion model trained with the
likelihood-weighted loss and scored by its bound on the grey levels."""

import math

import numpy as np

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import numpyro_ebm as ne
from benchmarks.bench_images import K, categorical, digits_split
from numpyro_ebm.core.sde import vp_sde


def test_digits_pipeline_smoke():
    train, val, test = digits_split()
    assert (
        train.shape == (1000, 64) and val.shape == (350, 64) and test.shape == (447, 64)
    )
    # the independent categorical, exact, in bits per dimension of the levels
    nats, _ = categorical(train, val, test)
    assert 2.3 < nats.mean() / (64 * math.log(2)) < 2.5
    sde = vp_sde()
    net = ne.nn.DiffusionScoreConvNet(
        (8, 8, 1), sde, features=8, num_blocks=1, rngs=nnx.Rngs(0)
    )
    images = jnp.asarray(2.0 * train.reshape(-1, 8, 8, 1) / (K - 1) - 1.0, jnp.float32)
    eps = float(sde.noise_time(jnp.asarray(0.3 * 2.0 / (K - 1))))

    def bound(model):
        r = ne.diffusion_elbo(
            jax.random.key(2),
            model,
            sde,
            test[:64].reshape(-1, 8, 8, 1),
            num_levels=K,
            eps=eps,
            num_samples=4,
        )
        return float(r.bits_per_dim), r

    before, _ = bound(net)
    learner = ne.ScoreMatching(
        net,
        optax.adam(3e-3),
        ne.DiffusionScoreMatching(sde, weighting="likelihood"),
        ema_decay=0.9,
    )
    result = learner.run(
        jax.random.key(1), 100, images, batch_size=32, progress_bar=False
    )
    after, r = bound(result.module)
    assert np.isfinite(after) and after < before - 1.0, (before, after)
    assert r.log_likelihoods.shape == (64,)
