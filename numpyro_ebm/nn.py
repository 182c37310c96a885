"""Flax NNX networks for energies and scores.

Both networks are ordinary :class:`flax.nnx.Module` objects (keyword-only
``rngs``, parameters as :class:`flax.nnx.Param`), so they can be registered in a
NumPyro model with :func:`numpyro.contrib.module.nnx_module` and trained with
Optax. Smooth activations (swish by default) keep ``grad_x E`` well behaved,
which Langevin sampling and score matching need. Anywhere numpyro_ebm takes a
network, any NNX module or plain function with the same call signature works.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "EnergyMLP",
    "ScoreMLP",
    "DiffusionScoreMLP",
    "GaussianEncoder",
    "MLPDecoder",
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
        if not hasattr(sde, "marginal"):
            raise TypeError(
                "`sde` must be a forward SDE of numpyro_ebm.core.sde (ve_sde(), "
                f"vp_sde(), subvp_sde()), got {type(sde).__name__}."
            )
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
