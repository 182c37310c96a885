"""The convolutional networks: shapes on image batches, and each learns the
exact score of a Gaussian on image-shaped data (closed form)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import numpyro_ebm as ne
from numpyro_ebm.core.sde import vp_sde

SDE = vp_sde()
H, W, C = 4, 4, 2
#: a position-dependent mean in channel 0, a constant one in channel 1
MU = jnp.stack(
    [jnp.linspace(-1.0, 1.0, H * W).reshape(H, W), jnp.full((H, W), 0.5)], -1
)
SD = jnp.array([0.5, 1.5])


def gaussian_images(key, n):
    return MU + SD * jax.random.normal(key, (n, H, W, C))


def relative_error(got, exact):
    return float(jnp.sum((got - exact) ** 2) / jnp.sum(exact**2))


@pytest.mark.parametrize(
    "make, args, out",
    [
        (
            lambda r: ne.nn.ScoreConvNet((8, 8, 3), features=8, rngs=r),
            (0.3,),
            (6, 8, 8, 3),
        ),
        (
            lambda r: ne.nn.DiffusionScoreConvNet((8, 8, 1), SDE, features=8, rngs=r),
            (jnp.full(6, 0.3),),
            (6, 8, 8, 1),
        ),
        (lambda r: ne.nn.EnergyConvNet((8, 8, 1), features=8, rngs=r), (), (6,)),
        (
            lambda r: ne.nn.ScoreConvNet(
                (28, 28, 1), features=8, num_blocks=1, fourier_exponents=(7, 8), rngs=r
            ),
            (0.3,),
            (6, 28, 28, 1),
        ),
        (
            lambda r: ne.nn.EnergyConvNet((17, 15, 1), features=8, rngs=r),
            (),
            (6,),
        ),
    ],
    ids=[
        "noise-conditional",
        "time-conditional",
        "energy",
        "28x28-fourier",
        "odd-size",
    ],
)
def test_output_shapes_and_jit(make, args, out):
    net = make(nnx.Rngs(0))
    x = jnp.ones((6, *net.image_shape))
    graphdef, state = nnx.split(net)
    assert jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, *args))(state, x).shape == out
    assert bool(net.trunk.downsample) == (min(net.image_shape[:2]) >= 16)


def train(net, objective, num_steps=600, batch_size=64):
    learner = ne.ScoreMatching(
        net, optax.adam(optax.cosine_decay_schedule(3e-3, num_steps, 0.05)), objective
    )
    data = gaussian_images(jax.random.key(0), 4096)
    module = learner.run(
        jax.random.key(1), num_steps, data, batch_size=batch_size, progress_bar=False
    ).module
    graphdef, state = nnx.split(module)
    return jax.jit(lambda *a: nnx.merge(graphdef, state)(*a))


X0 = gaussian_images(jax.random.key(2), 512)


def test_time_conditional_net_learns_the_gaussian_score():
    net = ne.nn.DiffusionScoreConvNet(
        (H, W, C), SDE, features=8, num_blocks=2, rngs=nnx.Rngs(0)
    )
    model = train(net, ne.DiffusionScoreMatching(SDE))
    for t in (0.3, 0.6, 0.9):
        xt, _ = SDE.perturb(jax.random.key(3), X0, jnp.full(512, t))
        mean, std = SDE.marginal(jnp.asarray(t))
        exact = -(xt - mean * MU) / (mean**2 * SD**2 + std**2)
        err = relative_error(model(xt, jnp.full(512, t)), exact)
        assert err < 0.1, (t, err)  # untrained: 100%


@pytest.mark.optimized
def test_noise_conditional_net_learns_the_gaussian_score():
    sigmas = jnp.array([1.0, 0.5])
    net = ne.nn.ScoreConvNet((H, W, C), features=8, num_blocks=2, rngs=nnx.Rngs(0))
    model = train(net, ne.DenoisingScoreMatching(sigmas=sigmas))
    for sigma in sigmas:
        x = X0 + sigma * jax.random.normal(jax.random.key(4), X0.shape)
        exact = -(x - MU) / (SD**2 + sigma**2)
        err = relative_error(model(x, sigma), exact)
        assert err < 0.1, (float(sigma), err)


@pytest.mark.slow
@pytest.mark.optimized
def test_energy_net_learns_the_gaussian_score():
    sigma = 0.25
    net = ne.nn.EnergyConvNet((H, W, C), features=16, num_blocks=2, rngs=nnx.Rngs(0))
    model = train(net, ne.DenoisingScoreMatching(sigma), 400, 128)
    x = X0 + sigma * jax.random.normal(jax.random.key(4), X0.shape)
    exact = -(x - MU) / (SD**2 + sigma**2)
    got = -jax.grad(lambda y: jnp.sum(model(y)))(x)
    err = relative_error(got, exact)
    assert err < 0.15, err  # untrained: 100%


@pytest.mark.parametrize(
    "size, padding",
    [(3, "SAME"), (1, "SAME"), (2, "SAME"), (3, "VALID"), (3, ((2, 0), (1, 1)))],
)
def test_convolution_by_shifted_views_is_the_xla_convolution(size, padding):
    # on CPU the networks' convolutions are matrix products of shifted views
    # (XLA's convolution gradient is slow inside the training loop); value and
    # gradients must be those of jax.lax.conv_general_dilated
    from numpyro_ebm.nn import _NHWC, _conv

    x = jax.random.normal(jax.random.key(0), (3, 7, 6, 4))
    w = jax.random.normal(jax.random.key(1), (size, size, 4, 5))

    def ours(x, w):
        return _conv(x, w, (1, 1), padding, dimension_numbers=_NHWC)

    def xla(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), padding, dimension_numbers=_NHWC
        )

    np.testing.assert_allclose(ours(x, w), xla(x, w), rtol=1e-5, atol=1e-5)
    for argnum in (0, 1):
        np.testing.assert_allclose(
            jax.grad(lambda *a: jnp.sum(jnp.sin(ours(*a))), argnum)(x, w),
            jax.grad(lambda *a: jnp.sum(jnp.sin(xla(*a))), argnum)(x, w),
            rtol=1e-4,
            atol=1e-4,
        )
    # the matrix-product form holds no convolution
    assert "conv_general_dilated" not in str(
        jax.make_jaxpr(jax.grad(lambda w: jnp.sum(ours(x, w))))(w)
    )
