"""The likelihood of a diffusion model, as a variational bound.

:func:`diffusion_elbo` bounds the log-likelihood of data under the model that
runs the reverse-time SDE with the learned score from the prior at ``t = 1``
down to ``t = eps`` and then decodes: continuous data with a Gaussian of the
remaining noise, discrete data (``K`` grey levels) with a categorical over
the levels. For discrete data this is the likelihood that counts: the
probability of the grey levels themselves, in bits per dimension.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import Array, random

from numpyro_ebm.core import validation
from numpyro_ebm.core.compiled import as_pure
from numpyro_ebm.core.sde import check_sde
from numpyro_ebm.learn.score_matching import log_snr_range

__all__ = ["DiffusionELBO", "diffusion_elbo"]


class DiffusionELBO(NamedTuple):
    """The bound of :func:`diffusion_elbo`.

    Attributes:
        log_likelihood: the mean lower bound on ``log p(x)`` (``log P(k)`` for
            grey levels), nats per point.
        stderr: its standard error over the data (Monte Carlo noise
            included).
        bits_per_dim: ``-log_likelihood / (D log 2)``: an upper bound.
        log_likelihoods: ``(n,)`` each point's bound.
        reconstruction: mean of ``E log p(x | x_eps)``, the decoder's term.
        diffusion: mean of the diffusion term (the likelihood-weighted score
            matching loss).
        prior: mean of ``KL(q(x_1 | x) || prior)``.
    """

    log_likelihood: Array
    stderr: Array
    bits_per_dim: Array
    log_likelihoods: Array
    reconstruction: Array
    diffusion: Array
    prior: Array


def _check_levels(data, num_levels):
    num_levels = validation.positive_integer("num_levels", num_levels)
    if num_levels < 2:
        raise ValueError(f"`num_levels` must be at least 2, got {num_levels}.")
    if validation.is_concrete(data):
        k = np.asarray(data)
        bad = (k != np.round(k)) | (k < 0) | (k > num_levels - 1)
        if np.any(bad):
            first = k.reshape(-1)[np.argmax(bad.reshape(-1))]
            raise ValueError(
                f"with `num_levels={num_levels}`, `data` must hold integer grey "
                f"levels 0..{num_levels - 1}; it holds {first}."
            )
    return num_levels


@functools.partial(
    jax.jit,
    static_argnames=("apply", "sde", "num_levels", "num_samples", "batch_size"),
)
def _bound(
    apply,
    params,
    sde,
    rng_key,
    x_all,
    levels,
    eps,
    *,
    num_levels,
    num_samples,
    batch_size,
):
    """Each point's bound and its three terms: one compiled program per score
    function, SDE and shapes."""
    event_shape = x_all.shape[1:]
    lo, hi = log_snr_range(sde, eps)
    width = (hi - lo).astype(x_all.dtype)
    mean0, std0 = sde.marginal(jnp.asarray(eps, x_all.dtype))
    mean1, std1 = sde.marginal(jnp.asarray(1.0, x_all.dtype))
    sigma0 = std0 / mean0
    prior_var = jnp.asarray(sde.prior_std, x_all.dtype) ** 2
    grid = (
        jnp.linspace(-1.0, 1.0, num_levels, dtype=x_all.dtype)
        if num_levels is not None
        else None
    )
    axes = tuple(range(1, 1 + len(event_shape)))

    def one(inputs):
        x, k, key = inputs
        key_u, key_z, key_0 = random.split(key, 3)
        u = (random.uniform(key_u, (), x.dtype) + jnp.arange(num_samples)) / num_samples
        gamma = lo + (hi - lo) * u
        t = jnp.clip(sde.noise_time(jnp.exp(0.5 * gamma)), eps, 1.0).astype(x.dtype)
        xs = jnp.broadcast_to(x, (num_samples, *event_shape))
        mean, std = sde.marginal(t)
        z = random.normal(key_z, xs.shape, x.dtype)
        shape = (-1,) + (1,) * len(event_shape)
        noisy = mean.reshape(shape) * xs + std.reshape(shape) * z
        out = std.reshape(shape) * apply(params, noisy, t) + z
        diffusion = 0.5 * width * jnp.mean(jnp.sum(out**2, axis=axes))
        # the decoder at t = eps
        x0 = x + sigma0 * random.normal(key_0, (num_samples, *event_shape), x.dtype)
        if grid is None:
            log_px = -0.5 * ((x - x0) / sigma0) ** 2 - jnp.log(
                math.sqrt(2 * math.pi) * sigma0
            )
        else:
            logits = -0.5 * ((x0[..., None] - grid) / sigma0) ** 2
            log_probs = jax.nn.log_softmax(logits, axis=-1)
            idx = jnp.broadcast_to(k.astype(jnp.int32), x0.shape)[..., None]
            log_px = jnp.take_along_axis(log_probs, idx, axis=-1)[..., 0]
        reconstruction = jnp.mean(jnp.sum(log_px, axis=axes))
        # KL(N(mean1 x, std1^2) || N(0, prior_var)), per dimension, summed
        kl = 0.5 * jnp.sum(
            (std1**2 + (mean1 * x) ** 2) / prior_var
            - 1.0
            - jnp.log(std1**2 / prior_var)
        )
        return reconstruction, diffusion, kl

    keys = random.split(rng_key, x_all.shape[0])
    recon, diff, kl = jax.lax.map(one, (x_all, levels, keys), batch_size=batch_size)
    return recon - diff - kl, recon, diff, kl


def diffusion_elbo(
    rng_key,
    score_fn: Callable,
    sde,
    data,
    *,
    num_levels=None,
    eps=1e-5,
    num_samples=16,
    batch_size=64,
) -> DiffusionELBO:
    """A lower bound on the log-likelihood of ``data`` under a diffusion model
    (Kingma, Salimans, Poole & Ho 2021; Song, Durkan, Murray & Ermon 2021).

    The model: ``x_1 ~ N(0, prior_std^2 I)``, the reverse-time SDE with the
    score ``score_fn(x, t)`` down to ``t = eps``, then a decoder. For each
    point ``x``::

        log p(x) >= E log p(x | x_eps) - KL(q(x_1 | x) || prior)
                    - (gamma(1) - gamma(eps)) / 2 E |std(t) s(x_t, t) + z|^2

    with ``x_t = mean(t) x + std(t) z`` the forward SDE's marginal and ``t``
    uniform in ``gamma(t) = log(std^2 / mean^2)`` (the diffusion term is
    :func:`~numpyro_ebm.diffusion_score_matching_loss` with
    ``weighting="likelihood"``; train with it to train this bound).

    - ``num_levels=None``: continuous data in the network's units; the
      decoder is ``N(x_eps / mean(eps), (std(eps) / mean(eps))^2 I)`` and the
      bound is on a density.
    - ``num_levels=K``: ``data`` are integer grey levels ``0..K-1``, which the
      network saw as ``2 k / (K - 1) - 1`` in ``[-1, 1]``; the decoder is, per
      pixel, the categorical over the ``K`` levels given ``x_eps`` (each
      level's Gaussian likelihood, normalised), so the bound is on the
      probability of the grey levels themselves: discrete bits per dimension,
      comparable with any discrete model.

    ``eps`` trades the two ends: too small, and the network must resolve the
    levels' spacing (the diffusion term grows); too large, and the decoder
    cannot (the reconstruction term falls). Choose it on validation data.

    Args:
        rng_key: a JAX PRNG key.
        score_fn: ``s(x, t)`` on batches ``(m, *event_shape)`` with ``t`` of
            shape ``(m,)``: e.g. a :class:`~numpyro_ebm.nn.DiffusionScoreConvNet`.
        sde: the forward SDE the network was trained under.
        data: ``(n, *event_shape)``.
        num_levels: ``K`` for grey-level data, or ``None``.
        eps: the time at which the decoder takes over, in ``(0, 1)``.
        num_samples: Monte Carlo draws per point (stratified in ``gamma``).
        batch_size: points evaluated at once (each as ``num_samples``
            network inputs).

    Returns:
        :class:`DiffusionELBO`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> import numpyro_ebm as ne
        >>> sde = vp_sde()
        >>> def exact(x, t):  # data N(0, I): every x_t is N(0, I)
        ...     return -x
        >>> x = jax.random.normal(jax.random.key(0), (500, 2))
        >>> r = ne.diffusion_elbo(jax.random.key(1), exact, sde, x)
        >>> truth = jnp.mean(jax.scipy.stats.norm.logpdf(x).sum(-1))
        >>> bool(abs(r.log_likelihood - truth) < 3 * r.stderr)  # tight for the exact score
        True

    References:
        Kingma, Salimans, Poole & Ho (2021), *Variational diffusion models*,
        NeurIPS. Song, Durkan, Murray & Ermon (2021), *Maximum likelihood
        training of score-based diffusion models*, NeurIPS.
    """
    check_sde(sde)
    if not callable(score_fn):
        raise TypeError(f"`score_fn` must be callable, got {type(score_fn).__name__}.")
    if num_levels is not None:
        num_levels = _check_levels(data, num_levels)
    data = jnp.asarray(data)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(
            f"`data` must have shape (n, *event_shape) with n >= 1, got {data.shape}."
        )
    eps = validation.probability("eps", eps)
    num_samples = validation.positive_integer("num_samples", num_samples)
    batch_size = validation.positive_integer("batch_size", batch_size)
    dtype = jnp.result_type(float)
    if num_levels is not None:
        levels = data.astype(dtype)
        valid = jnp.all(
            (levels == jnp.round(levels)) & (levels >= 0) & (levels <= num_levels - 1)
        )
        x_all = 2.0 * levels / (num_levels - 1) - 1.0
    else:
        if not jnp.issubdtype(data.dtype, jnp.floating):
            data = data.astype(dtype)
        if validation.is_concrete(data) and not bool(jnp.all(jnp.isfinite(data))):
            raise ValueError("`data` contains non-finite values.")
        valid = jnp.all(jnp.isfinite(data))
        x_all, levels = data, data
    apply, params = as_pure(score_fn)
    per_point, recon, diff, kl = _bound(
        apply,
        params,
        sde,
        rng_key,
        x_all,
        levels,
        jnp.asarray(eps, x_all.dtype),
        num_levels=num_levels,
        num_samples=num_samples,
        batch_size=batch_size,
    )
    num_dims = math.prod(x_all.shape[1:])
    n = per_point.shape[0]
    mean_ll = jnp.mean(per_point)
    stderr = jnp.std(per_point) / math.sqrt(n) if n > 1 else jnp.zeros((), dtype)
    failed = ~valid | ~jnp.isfinite(mean_ll)
    if validation.is_concrete(mean_ll) and not bool(jnp.isfinite(mean_ll)):
        raise FloatingPointError(
            f"diffusion_elbo: the bound is {float(mean_ll)}: the score is not finite "
            "at some noised point."
        )
    mean_ll = jnp.where(failed, jnp.nan, mean_ll)
    return DiffusionELBO(
        mean_ll,
        stderr,
        -mean_ll / (num_dims * math.log(2.0)),
        per_point,
        jnp.mean(recon),
        jnp.mean(diff),
        jnp.mean(kl),
    )
