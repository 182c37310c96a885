"""Flax NNX networks for energies and scores.

The multilayer perceptrons take vectors ``(..., d)``; the convolutional
networks (:class:`ScoreConvNet`, :class:`DiffusionScoreConvNet`,
:class:`EnergyConvNet`) take batches of images ``(n, H, W, C)`` (NHWC). All are
ordinary :class:`flax.nnx.Module` objects (keyword-only
``rngs``, parameters as :class:`flax.nnx.Param`), so they can be registered in a
NumPyro model with :func:`numpyro.contrib.module.nnx_module` and trained with
Optax. Smooth activations (swish by default) keep ``grad_x E`` well behaved,
which Langevin sampling and score matching need. Anywhere numpyro_ebm takes a
network, any NNX module or plain function with the same call signature works.
"""

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from numpyro_ebm.core.sde import check_sde

__all__ = [
    "EnergyMLP",
    "ScoreMLP",
    "DiffusionScoreMLP",
    "GaussianEncoder",
    "MLPDecoder",
    "ScoreConvNet",
    "DiffusionScoreConvNet",
    "EnergyConvNet",
]


class _MLP(nnx.Module):
    def __init__(self, sizes, activation, *, rngs):
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, rngs=rngs)
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        self.activation = activation

    def __call__(self, h):
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        return self.layers[-1](h)


class EnergyMLP(nnx.Module):
    """A multilayer perceptron energy ``E: R^d -> R``.

    Called on ``x`` of shape ``(..., d)`` it returns energies of shape ``(...)``;
    the unnormalised density is ``exp(-E(x))``.

    Args:
        dim: input dimension ``d``.
        hidden: widths of the hidden layers.
        activation: a smooth activation (default :func:`jax.nn.swish`).
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> net = EnergyMLP(2, (32, 32), rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((5, 2))).shape
        (5,)

    References:
        LeCun, Chopra, Hadsell, Ranzato & Huang (2006), *A tutorial on
        energy-based learning*.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (128, 128),
        activation: Callable = jax.nn.swish,
        *,
        rngs: nnx.Rngs,
    ):
        self.dim = dim
        self.mlp = _MLP((dim, *hidden, 1), activation, rngs=rngs)

    def __call__(self, x):
        return self.mlp(x)[..., 0]


class ScoreMLP(nnx.Module):
    """A noise-conditional score network ``s(x, sigma) ~ grad_x log p_sigma(x)``.

    Parameterised as ``s(x, sigma) = f([x, log sigma]) / sigma`` (Song & Ermon
    2020), so the output scales like the score of data noised at level
    ``sigma``. Called with ``x`` of shape ``(..., d)`` and ``sigma`` a scalar
    or of shape ``(...)``; returns ``(..., d)``.

    Args:
        dim: data dimension ``d``.
        hidden: widths of the hidden layers.
        activation: a smooth activation (default :func:`jax.nn.swish`).
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> net = ScoreMLP(2, (32, 32), rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((5, 2)), 0.5).shape
        (5, 2)

    References:
        Song & Ermon (2019), *Generative modeling by estimating gradients of
        the data distribution*, NeurIPS. Song & Ermon (2020), *Improved
        techniques for training score-based generative models*, NeurIPS.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (128, 128),
        activation: Callable = jax.nn.swish,
        *,
        rngs: nnx.Rngs,
    ):
        self.dim = dim
        self.mlp = _MLP((dim + 1, *hidden, dim), activation, rngs=rngs)

    def __call__(self, x, sigma):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:-1])
        h = jnp.concatenate([x, jnp.log(sigma)[..., None]], axis=-1)
        return self.mlp(h) / sigma[..., None]


class DiffusionScoreMLP(nnx.Module):
    """A time-conditional score network ``s(x, t) ~ grad_x log p_t(x)`` for a
    forward SDE of :mod:`numpyro_ebm.core.sde`.

    Parameterised as ``s(x, t) = f([x, sin(w t), cos(w t)]) / std(t)``, with
    ``std(t)`` the SDE marginal's standard deviation and fixed frequencies
    ``w`` spaced geometrically from 1 to 100 (a sinusoidal time embedding, as
    in Song et al. 2021), so the output scales like the score of data noised to
    time ``t``. Called with ``x`` of shape ``(..., d)`` and ``t`` a scalar or of
    shape ``(...)``; returns ``(..., d)``. Train it with
    :class:`~numpyro_ebm.DiffusionScoreMatching` under the same SDE.

    Args:
        dim: data dimension ``d``.
        sde: the forward SDE (:func:`~numpyro_ebm.core.sde.vp_sde`, ...).
        hidden: widths of the hidden layers.
        num_frequencies: frequencies of the time embedding.
        activation: a smooth activation (default :func:`jax.nn.swish`).
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> net = DiffusionScoreMLP(2, vp_sde(), (32, 32), rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((5, 2)), jnp.full(5, 0.5)).shape
        (5, 2)

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
        *Score-based generative modeling through stochastic differential
        equations*, ICLR.
    """

    def __init__(
        self,
        dim: int,
        sde,
        hidden: Sequence[int] = (128, 128),
        num_frequencies: int = 16,
        activation: Callable = jax.nn.swish,
        *,
        rngs: nnx.Rngs,
    ):
        check_sde(sde)
        if int(num_frequencies) < 1:
            raise ValueError(
                f"`num_frequencies` must be a positive integer, got {num_frequencies}."
            )
        self.dim = dim
        self.sde = sde
        self.num_frequencies = int(num_frequencies)
        self.mlp = _MLP(
            (dim + 2 * self.num_frequencies, *hidden, dim), activation, rngs=rngs
        )

    def __call__(self, x, t):
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:-1])
        w = jnp.geomspace(1.0, 100.0, self.num_frequencies).astype(x.dtype)
        wt = t[..., None] * w
        h = jnp.concatenate([x, jnp.sin(wt), jnp.cos(wt)], axis=-1)
        _, std = self.sde.marginal(t)
        return self.mlp(h) / std[..., None]


class GaussianEncoder(nnx.Module):
    """An amortised Gaussian posterior ``q(z | x) = N(loc(x), diag scale(x)^2)``.

    The inference network of a VAE: called on ``x`` of shape ``(..., in_dim)``
    it returns ``(loc, scale)``, each of shape ``(..., latent_dim)``, with
    ``scale = softplus(.) + min_scale > 0``. Use it in a NumPyro guide through
    :func:`numpyro.contrib.module.nnx_module`.

    Args:
        in_dim: data dimension.
        latent_dim: latent dimension.
        hidden: widths of the hidden layers.
        activation: the activation (default :func:`jax.nn.swish`).
        min_scale: floor of the posterior scale.
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> encoder = GaussianEncoder(64, 4, (32,), rngs=nnx.Rngs(0))
        >>> loc, scale = encoder(jnp.zeros((10, 64)))
        >>> loc.shape, bool((scale > 0).all())
        ((10, 4), True)

    References:
        Kingma & Welling (2014), *Auto-encoding variational Bayes*, ICLR.
    """

    def __init__(
        self,
        in_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (128,),
        activation: Callable = jax.nn.swish,
        min_scale: float = 1e-3,
        *,
        rngs: nnx.Rngs,
    ):
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.mlp = _MLP((in_dim, *hidden, 2 * latent_dim), activation, rngs=rngs)

    def __call__(self, x):
        loc, raw = jnp.split(self.mlp(x), 2, axis=-1)
        return loc, jax.nn.softplus(raw) + self.min_scale


class MLPDecoder(nnx.Module):
    """A generator network ``z -> parameters of p(x | z)``.

    Maps ``z`` of shape ``(..., latent_dim)`` to ``(..., out_dim)`` unbounded
    outputs: the logits of a Bernoulli or Binomial likelihood, or the mean of
    a Gaussian one. Use it in a NumPyro model through
    :func:`numpyro.contrib.module.nnx_module`, for a VAE (with
    :class:`GaussianEncoder` in the guide) or for a latent-variable model
    learned by maximum marginal likelihood (:class:`~numpyro_ebm.SOUL`,
    :class:`~numpyro_ebm.PGD`).

    Args:
        latent_dim: latent dimension.
        out_dim: data dimension.
        hidden: widths of the hidden layers.
        activation: the activation (default :func:`jax.nn.swish`).
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> decoder = MLPDecoder(4, 64, (32,), rngs=nnx.Rngs(0))
        >>> decoder(jnp.zeros((10, 4))).shape
        (10, 64)

    References:
        Kingma & Welling (2014), *Auto-encoding variational Bayes*, ICLR.
    """

    def __init__(
        self,
        latent_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (128,),
        activation: Callable = jax.nn.swish,
        *,
        rngs: nnx.Rngs,
    ):
        self.latent_dim = latent_dim
        self.mlp = _MLP((latent_dim, *hidden, out_dim), activation, rngs=rngs)

    def __call__(self, z):
        return self.mlp(z)


# ------------------------------------------------------------ convolutional
_NHWC = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """:func:`jax.lax.conv_general_dilated`, computed on CPU as one matrix
    product of the input's shifted views (stride 1, no dilation, NHWC).

    XLA's CPU backend runs the weight gradient of a convolution about 50 times
    slower inside a loop than outside one (jax-ml/jax#12868), and every
    training run of the package is one compiled loop; as a matrix product the
    same convolution, value and gradients, runs at full speed in the loop.
    Elsewhere (GPU, TPU, strided or dilated convolutions) this is the XLA
    convolution itself.
    """
    dilated = any(d != 1 for d in (lhs_dilation or ())) or any(
        d != 1 for d in (rhs_dilation or ())
    )
    if (
        jax.default_backend() != "cpu"
        or jnp.ndim(lhs) != 4
        or any(s != 1 for s in window_strides)
        or dilated
        or feature_group_count != 1
        or dimension_numbers != _NHWC
        or kwargs.get("out_sharding") is not None
        or kwargs.get("preferred_element_type") is not None
    ):
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
            **kwargs,
        )
    kh, kw, cin, cout = rhs.shape
    if padding == "SAME":
        pads = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    elif padding == "VALID":
        pads = ((0, 0), (0, 0))
    else:
        pads = tuple(tuple(p) for p in padding)
    x = jnp.pad(lhs, ((0, 0), *pads, (0, 0)))
    height = x.shape[1] - kh + 1
    width = x.shape[2] - kw + 1
    patches = jnp.concatenate(
        [x[:, i : i + height, j : j + width, :] for i in range(kh) for j in range(kw)],
        axis=-1,
    )
    return jnp.matmul(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)


def _conv_layer(in_features, out_features, size, *, rngs, **kwargs):
    return nnx.Conv(
        in_features,
        out_features,
        (size, size),
        conv_general_dilated=_conv,
        rngs=rngs,
        **kwargs,
    )


def _check_image_shape(image_shape):
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"`image_shape` must be (height, width, channels), got {image_shape}."
        )
    return shape


def _check_images(x, image_shape, what):
    x = jnp.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != image_shape:
        channels = image_shape[-1]
        raise ValueError(
            f"{what} takes a batch of images of shape (n, {image_shape[0]}, "
            f"{image_shape[1]}, {channels}) (NHWC, {channels} channel"
            f"{'s' if channels > 1 else ''}), got shape {x.shape}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _groups(features, num_groups):
    groups = min(int(num_groups), int(features))
    if features % groups:
        raise ValueError(
            f"`features` ({features}) must be divisible by the number of groups of "
            f"the group normalisation ({groups})."
        )
    return groups


class _Embedding(nnx.Module):
    """Sinusoidal features of a scalar condition, then a two-layer MLP."""

    def __init__(self, features, num_frequencies, low, high, *, rngs):
        self.frequencies = nnx.Variable(jnp.geomspace(low, high, num_frequencies))
        self.mlp = _MLP(
            (2 * num_frequencies, features, features), jax.nn.swish, rngs=rngs
        )

    def __call__(self, c):
        wc = c[:, None] * self.frequencies[...].astype(c.dtype)
        return jax.nn.swish(self.mlp(jnp.concatenate([jnp.sin(wc), jnp.cos(wc)], -1)))


class _ResidualBlock(nnx.Module):
    """GroupNorm, swish, 3x3 convolution, plus the condition's embedding,
    twice, around a skip connection."""

    def __init__(self, features, embedding, groups, *, rngs):
        self.norm1 = nnx.GroupNorm(features, groups, rngs=rngs)
        self.conv1 = _conv_layer(features, features, 3, rngs=rngs)
        self.project = nnx.Linear(embedding, features, rngs=rngs) if embedding else None
        self.norm2 = nnx.GroupNorm(features, groups, rngs=rngs)
        self.conv2 = _conv_layer(
            features, features, 3, kernel_init=nnx.initializers.zeros, rngs=rngs
        )

    def __call__(self, h, emb):
        r = self.conv1(jax.nn.swish(self.norm1(h)))
        if self.project is not None:
            r = r + self.project(emb)[:, None, None, :]
        r = self.conv2(jax.nn.swish(self.norm2(r)))
        return h + r


class _ConvTrunk(nnx.Module):
    """A residual network on images: an input convolution, ``num_blocks``
    residual blocks at full resolution (or, with ``downsample``, one block at
    full resolution, ``num_blocks`` at half and one more at full after
    joining the skip connection), and a final normalisation."""

    def __init__(
        self,
        image_shape,
        features,
        num_blocks,
        embedding,
        fourier_exponents,
        num_groups,
        downsample,
        *,
        rngs,
    ):
        channels = image_shape[-1]
        self.fourier = nnx.Variable(
            jnp.asarray([2.0**e * math.pi for e in fourier_exponents], jnp.float32)
        )
        in_features = channels * (1 + 2 * len(fourier_exponents))
        groups = _groups(features, num_groups)
        self.conv_in = _conv_layer(in_features, features, 3, rngs=rngs)
        self.downsample = bool(downsample)
        if self.downsample:
            self.high_in = _ResidualBlock(features, embedding, groups, rngs=rngs)
            self.join = _conv_layer(2 * features, features, 1, rngs=rngs)
            self.high_out = _ResidualBlock(features, embedding, groups, rngs=rngs)
        self.blocks = nnx.List(
            [
                _ResidualBlock(features, embedding, groups, rngs=rngs)
                for _ in range(num_blocks)
            ]
        )
        self.norm_out = nnx.GroupNorm(features, groups, rngs=rngs)

    def __call__(self, x, emb=None):
        w = self.fourier[...].astype(x.dtype)
        if w.shape[0]:
            wx = x[..., None] * w
            feats = jnp.concatenate([jnp.sin(wx), jnp.cos(wx)], -1)
            x = jnp.concatenate([x, feats.reshape(*x.shape[:-1], -1)], -1)
        h = self.conv_in(x)
        if self.downsample:
            skip = self.high_in(h, emb)
            n, height, width, f = skip.shape
            h = nnx.avg_pool(skip, (2, 2), strides=(2, 2), padding="SAME")
        for block in self.blocks:
            h = block(h, emb)
        if self.downsample:
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)[:, :height, :width]
            h = self.high_out(self.join(jnp.concatenate([h, skip], -1)), emb)
        return jax.nn.swish(self.norm_out(h))


def _trunk_settings(image_shape, features, num_blocks, num_groups, downsample):
    image_shape = _check_image_shape(image_shape)
    features = int(features)
    num_blocks = int(num_blocks)
    if features < 1 or num_blocks < 0:
        raise ValueError(
            "`features` must be positive and `num_blocks` non-negative, got "
            f"{features} and {num_blocks}."
        )
    _groups(features, num_groups)
    if downsample is None:
        downsample = min(image_shape[:2]) >= 16
    return image_shape, features, num_blocks, bool(downsample)


class ScoreConvNet(nnx.Module):
    """A noise-conditional convolutional score network ``s(x, sigma) ~
    grad_x log (p * N(0, sigma^2 I))(x)`` for batches of images.

    A residual network (3x3 convolutions, group normalisation, swish), with
    ``log sigma`` embedded by sinusoidal features and an MLP and added in
    every block. Parameterised as ``s(x, sigma) = -f(x / sqrt(1 + sigma^2),
    log sigma) / sigma``: ``f`` predicts the standardised noise, so the output
    scales like the score at every level for data of unit scale. Called with
    ``x`` of shape ``(n, H, W, C)`` and ``sigma`` a scalar or of shape
    ``(n,)``; returns ``(n, H, W, C)``. For
    :class:`~numpyro_ebm.ScoreDistribution` (``event_shape=(H, W, C)``) and
    :class:`~numpyro_ebm.DenoisingScoreMatching`.

    Args:
        image_shape: ``(H, W, C)``.
        features: channels of the hidden layers.
        num_blocks: residual blocks.
        num_groups: groups of the group normalisation (at most ``features``).
        fourier_exponents: add ``sin(2^e pi x)``, ``cos(2^e pi x)`` of every
            input value as channels, for each ``e`` (Kingma et al. 2021): they
            let the network see the fine structure of discrete data (for ``K``
            grey levels scaled to ``[-1, 1]``, ``e`` near ``log2(K)``).
        downsample: one level of average-pool downsampling in the middle (a
            U-Net of depth one); default for images of 16 pixels or more per
            side. Without it every layer keeps the full resolution, which pays
            at small sizes such as 8x8.
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> net = ScoreConvNet((8, 8, 1), features=16, rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((5, 8, 8, 1)), 0.5).shape
        (5, 8, 8, 1)

    References:
        Song & Ermon (2019), *Generative modeling by estimating gradients of
        the data distribution*, NeurIPS. Ho, Jain & Abbeel (2020), *Denoising
        diffusion probabilistic models*, NeurIPS. Kingma, Salimans, Poole & Ho
        (2021), *Variational diffusion models*, NeurIPS.
    """

    def __init__(
        self,
        image_shape,
        features: int = 64,
        num_blocks: int = 4,
        num_groups: int = 8,
        fourier_exponents: Sequence[int] = (),
        downsample: bool | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.image_shape, features, num_blocks, downsample = _trunk_settings(
            image_shape, features, num_blocks, num_groups, downsample
        )
        self.embed = _Embedding(4 * features, 16, 0.05, 50.0, rngs=rngs)
        self.trunk = _ConvTrunk(
            self.image_shape,
            features,
            num_blocks,
            4 * features,
            tuple(fourier_exponents),
            num_groups,
            downsample,
            rngs=rngs,
        )
        self.conv_out = _conv_layer(
            features,
            self.image_shape[-1],
            3,
            kernel_init=nnx.initializers.zeros,
            rngs=rngs,
        )

    def _noise(self, x, log_sigma, scale_in):
        emb = self.embed(log_sigma)
        return self.conv_out(self.trunk(x * scale_in[:, None, None, None], emb))

    def __call__(self, x, sigma):
        x = _check_images(x, self.image_shape, type(self).__name__)
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), x.shape[:1])
        eps = self._noise(x, jnp.log(sigma), jax.lax.rsqrt(1.0 + sigma**2))
        return -eps / sigma[:, None, None, None]


class DiffusionScoreConvNet(ScoreConvNet):
    """A time-conditional convolutional score network ``s(x, t) ~ grad_x log
    p_t(x)`` for a forward SDE of :mod:`numpyro_ebm.core.sde`, on batches of
    images.

    The network of :class:`ScoreConvNet`, conditioned on the log
    noise-to-signal ratio ``log sigma(t)``, ``sigma = std(t) / mean(t)`` (half
    the log of the inverse SNR: the conditioning of Kingma et al. 2021, the
    same for every SDE), with input ``x / sqrt(mean(t)^2 + std(t)^2)`` and
    output ``s(x, t) = -f / std(t)``: ``f`` predicts the noise ``z`` of ``x_t
    = mean(t) x_0 + std(t) z``. Called with ``x`` of shape ``(n, H, W, C)``
    and ``t`` a scalar or of shape ``(n,)``; returns ``(n, H, W, C)``. Train it
    with :class:`~numpyro_ebm.DiffusionScoreMatching` under the same SDE;
    ``sde.noise_conditional(net)`` turns it into the score of a
    :class:`~numpyro_ebm.ScoreDistribution` prior.

    Args:
        image_shape: ``(H, W, C)``.
        sde: the forward SDE.
        features, num_blocks, num_groups, fourier_exponents, downsample: as
            for :class:`ScoreConvNet`.
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> net = DiffusionScoreConvNet((8, 8, 1), vp_sde(), features=16,
        ...                             rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((5, 8, 8, 1)), jnp.full(5, 0.5)).shape
        (5, 8, 8, 1)

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
        *Score-based generative modeling through stochastic differential
        equations*, ICLR. Kingma, Salimans, Poole & Ho (2021), *Variational
        diffusion models*, NeurIPS.
    """

    def __init__(
        self,
        image_shape,
        sde,
        features: int = 64,
        num_blocks: int = 4,
        num_groups: int = 8,
        fourier_exponents: Sequence[int] = (),
        downsample: bool | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        check_sde(sde)
        super().__init__(
            image_shape,
            features,
            num_blocks,
            num_groups,
            fourier_exponents,
            downsample,
            rngs=rngs,
        )
        self.sde = sde

    def __call__(self, x, t):
        x = _check_images(x, self.image_shape, type(self).__name__)
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        mean, std = self.sde.marginal(t)
        eps = self._noise(x, jnp.log(std / mean), jax.lax.rsqrt(mean**2 + std**2))
        return -eps / std[:, None, None, None]


class EnergyConvNet(nnx.Module):
    """A convolutional energy ``E: (n, H, W, C) -> (n,)`` for energy-based
    models of images and latent EBM priors on image-shaped latents.

    The residual network of :class:`ScoreConvNet` (no conditioning), then
    the mean over positions and a linear map to one number per image. Swish
    activations keep ``grad_x E`` smooth, as Langevin sampling needs. The
    network alone is bounded, so ``exp(-E)`` is integrable only on a bounded
    domain or with a base density (``EnergyDistribution(..., base_dist=...)``,
    :func:`~numpyro_ebm.ais_log_normalizer`).

    Args:
        image_shape: ``(H, W, C)``.
        features, num_blocks, num_groups, fourier_exponents, downsample: as
            for :class:`ScoreConvNet`.
        rngs: :class:`flax.nnx.Rngs` for the initial parameters (keyword-only).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> net = EnergyConvNet((8, 8, 1), features=16, rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((5, 8, 8, 1))).shape
        (5,)

    References:
        Du & Mordatch (2019), *Implicit generation and modeling with
        energy-based models*, NeurIPS. Nijkamp, Hill, Zhu & Wu (2019),
        *Learning non-convergent non-persistent short-run MCMC toward
        energy-based model*, NeurIPS.
    """

    def __init__(
        self,
        image_shape,
        features: int = 32,
        num_blocks: int = 2,
        num_groups: int = 8,
        fourier_exponents: Sequence[int] = (),
        downsample: bool | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        self.image_shape, features, num_blocks, downsample = _trunk_settings(
            image_shape, features, num_blocks, num_groups, downsample
        )
        self.trunk = _ConvTrunk(
            self.image_shape,
            features,
            num_blocks,
            0,
            tuple(fourier_exponents),
            num_groups,
            downsample,
            rngs=rngs,
        )
        self.out = nnx.Linear(features, 1, rngs=rngs)

    def __call__(self, x):
        x = _check_images(x, self.image_shape, type(self).__name__)
        return self.out(jnp.mean(self.trunk(x), axis=(1, 2)))[:, 0]
