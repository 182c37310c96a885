"""Forward diffusions of score-based generative models (Song et al. 2021).

Each SDE ``dx = f(x, t) dt + g(t) dW`` on ``t in [0, 1]`` turns data into
noise. The three of Song et al. (2021) are linear in ``x``, so the law of
``x_t`` given ``x_0`` is Gaussian, ``N(mean(t) x_0, std(t)^2 I)``, in closed
form:

- **VE** (variance exploding, the continuous limit of NCSN's noise ladder):
  ``f = 0``, ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))`` with
  ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``; ``mean = 1`` and
  ``std(t)^2 = sigma(t)^2 - sigma_min^2``; prior ``N(0, sigma_max^2 I)``.
- **VP** (variance preserving, the continuous DDPM): ``f = -beta(t) x / 2``,
  ``g(t) = sqrt(beta(t))`` with ``beta(t) = beta_min + t (beta_max -
  beta_min)``; ``mean = exp(-B(t) / 2)``, ``std(t)^2 = 1 - exp(-B(t))``,
  ``B(t) = int_0^t beta``; prior ``N(0, I)``.
- **sub-VP**: VP's drift, ``g(t) = sqrt(beta(t) (1 - exp(-2 B(t))))``;
  the same mean, ``std(t) = 1 - exp(-B(t))`` (below VP's at every ``t``);
  prior ``N(0, I)``.

The mean and variance solve the moment equations of a linear SDE,
``mean' = a mean`` and ``(std^2)' = 2 a std^2 + g^2`` with ``f = a(t) x``,
which the tests check by automatic differentiation.

References:
    1. Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
       *Score-based generative modeling through stochastic differential
       equations*, ICLR.
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
from jax import random

from numpyro_ebm.core import validation

__all__ = ["SDE", "ve_sde", "vp_sde", "subvp_sde"]


class SDE(NamedTuple):
    """A linear forward diffusion ``dx = a(t) x dt + g(t) dW`` on ``[0, 1]``.

    Attributes:
        name: ``"ve"``, ``"vp"`` or ``"subvp"``.
        drift_coefficient: ``a(t)``: the drift is ``f(x, t) = a(t) x``.
        diffusion: ``g(t)``.
        marginal: ``t -> (mean(t), std(t))``: ``x_t | x_0 ~ N(mean(t) x_0,
            std(t)^2 I)``.
        prior_std: the standard deviation of the prior ``N(0, prior_std^2
            I)`` that ``x_1`` approximately follows.
    """

    name: str
    drift_coefficient: object
    diffusion: object
    marginal: object
    prior_std: float

    def drift(self, x, t):
        """``f(x, t) = a(t) x`` (``t`` a scalar or broadcastable to ``x``'s
        leading axes)."""
        a = jnp.asarray(self.drift_coefficient(t))
        return _expand(a, x) * x

    def perturb(self, rng_key, x0, t):
        """A draw of ``x_t`` given ``x_0`` and the noise used:
        ``(mean(t) x_0 + std(t) z, z)``, ``t`` of shape ``x0.shape[:1]`` or
        a scalar."""
        mean, std = self.marginal(t)
        z = random.normal(rng_key, jnp.shape(x0), jnp.result_type(x0, float))
        return _expand(mean, x0) * x0 + _expand(std, x0) * z, z

    def sample_prior(self, rng_key, shape):
        """Draws of the prior ``N(0, prior_std^2 I)`` of the given shape."""
        return self.prior_std * random.normal(rng_key, shape)

    def prior_log_prob(self, x, event_ndims=1):
        """The prior's log density, summed over the last ``event_ndims`` axes."""
        axes = tuple(range(-event_ndims, 0))
        d = math.prod(jnp.shape(x)[-event_ndims:]) if event_ndims else 1
        s2 = self.prior_std**2
        return -0.5 * jnp.sum(x**2, axis=axes) / s2 - 0.5 * d * jnp.log(2 * jnp.pi * s2)


def _expand(coefficient, x):
    """A per-example (or scalar) coefficient against ``x``'s event axes."""
    coefficient = jnp.asarray(coefficient)
    return coefficient.reshape(coefficient.shape + (1,) * (x.ndim - coefficient.ndim))


def ve_sde(sigma_min=0.01, sigma_max=50.0):
    """The variance-exploding SDE (the continuous limit of NCSN's noise
    ladder from ``sigma_max`` down to ``sigma_min``).

    Example:
        >>> sde = ve_sde(0.01, 50.0)
        >>> mean, std = sde.marginal(1.0)
        >>> float(mean), round(float(std), 3)
        (1.0, 50.0)
    """
    lo = validation.positive("sigma_min", sigma_min)
    hi = validation.positive("sigma_max", sigma_max)
    if not lo < hi:
        raise ValueError(
            f"`sigma_min` must be below `sigma_max`, got {sigma_min} and {sigma_max}."
        )
    log_ratio = math.log(hi / lo)

    def sigma(t):
        return lo * jnp.exp(jnp.asarray(t) * log_ratio)

    def marginal(t):
        s = sigma(t)
        return jnp.ones_like(s), jnp.sqrt(jnp.maximum(s**2 - lo**2, 0.0))

    return SDE(
        "ve",
        lambda t: jnp.zeros_like(jnp.asarray(t, float)),
        lambda t: sigma(t) * math.sqrt(2 * log_ratio),
        marginal,
        float(hi),
    )


def _beta_fns(beta_min, beta_max):
    lo = validation.positive("beta_min", beta_min)
    hi = validation.positive("beta_max", beta_max)
    if not lo < hi:
        raise ValueError(
            f"`beta_min` must be below `beta_max`, got {beta_min} and {beta_max}."
        )

    def beta(t):
        return lo + jnp.asarray(t) * (hi - lo)

    def integral(t):
        t = jnp.asarray(t)
        return lo * t + 0.5 * (hi - lo) * t**2

    return beta, integral


def vp_sde(beta_min=0.1, beta_max=20.0):
    """The variance-preserving SDE (the continuous limit of DDPM).

    Example:
        >>> sde = vp_sde()
        >>> mean, std = sde.marginal(1.0)
        >>> round(float(mean), 4), round(float(std), 4)  # data all but gone
        (0.0066, 1.0)
    """
    beta, integral = _beta_fns(beta_min, beta_max)

    def marginal(t):
        b = integral(t)
        return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))

    return SDE(
        "vp", lambda t: -0.5 * beta(t), lambda t: jnp.sqrt(beta(t)), marginal, 1.0
    )


def subvp_sde(beta_min=0.1, beta_max=20.0):
    """The sub-VP SDE: VP's drift with less noise (``std(t) = 1 - exp(-B(t))``).

    Example:
        >>> sde = subvp_sde()
        >>> _, std = sde.marginal(0.1)
        >>> _, vp_std = vp_sde().marginal(0.1)
        >>> bool(std < vp_std)
        True
    """
    beta, integral = _beta_fns(beta_min, beta_max)

    def marginal(t):
        b = integral(t)
        return jnp.exp(-0.5 * b), -jnp.expm1(-b)

    def diffusion(t):
        return jnp.sqrt(beta(t) * -jnp.expm1(-2.0 * integral(t)))

    return SDE("subvp", lambda t: -0.5 * beta(t), diffusion, marginal, 1.0)
