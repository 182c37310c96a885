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

Sampling runs the reverse-time SDE ``dx = [f - g^2 s(x, t)] dt + g dW`` from
the prior at ``t = 1`` with a score ``s(x, t) ~ grad log p_t(x)``:
:func:`reverse_step` (the Euler-Maruyama predictor), :func:`langevin_correct`
(the Langevin corrector, through the core's Langevin move) and
:func:`pc_sample` (predictor-corrector, one compiled loop).

References:
    1. Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
       *Score-based generative modeling through stochastic differential
       equations*, ICLR.
"""

import math
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import random

from numpyro_ebm.core import validation
from numpyro_ebm.core.langevin import langevin_proposal

__all__ = [
    "SDE",
    "ve_sde",
    "vp_sde",
    "subvp_sde",
    "reverse_step",
    "langevin_correct",
    "pc_sample",
]


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
        noise_time: ``sigma -> t``, the inverse of the noise-to-signal ratio
            ``noise_level(t) = std(t) / mean(t)``: ``x_t / mean(t)`` is the
            data plus ``N(0, sigma^2 I)`` noise at that time.
    """

    name: str
    drift_coefficient: object
    diffusion: object
    marginal: object
    prior_std: float
    noise_time: object

    def noise_level(self, t):
        """``std(t) / mean(t)``: ``x_t / mean(t) ~ x_0 + N(0, sigma^2 I)``."""
        mean, std = self.marginal(t)
        return std / mean

    def noise_conditional(self, score_fn, scale=1.0):
        """A noise-conditional score ``(x, sigma) -> grad log (p * N(0,
        sigma^2 I))(x)`` from a time-conditional one of this SDE: with ``t =
        noise_time(sigma)`` and ``m = mean(t)``, the law of ``x_t`` is that of
        ``m (x_0 + sigma z)``, so the score is ``m s(m x, t)``. It is what
        :class:`~numpyro_ebm.ScoreDistribution` and
        :class:`~numpyro_ebm.ScorePosterior` take.

        ``scale``: the score was learned on data divided by ``scale`` (e.g.
        standardised); the result is the score in the data's own units,
        ``(m / scale) s(m x / scale, noise_time(sigma / scale))``.

        Example:
            >>> import jax.numpy as jnp
            >>> sde = vp_sde()
            >>> def exact(x, t):  # data N(0, 4 I)
            ...     mean, std = sde.marginal(t)
            ...     return -x / (4 * mean**2 + std**2)[:, None]
            >>> s = sde.noise_conditional(exact)
            >>> float(s(jnp.ones((1, 1)), 0.5)[0, 0])  # -x / (4 + sigma^2)
            -0.2352...
        """
        scale = validation.positive("scale", scale)

        def noise_score(x, sigma):
            n = jnp.shape(x)[0]
            t = jnp.broadcast_to(self.noise_time(sigma / scale), (n,)).astype(
                jnp.result_type(x, float)
            )
            mean, _ = self.marginal(t)
            mean = _expand(mean, x)
            return mean / scale * score_fn(mean * x / scale, t)

        return noise_score

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

    def noise_time(noise):
        noise = jnp.asarray(noise)
        return jnp.log(jnp.sqrt(noise**2 + lo**2) / lo) / log_ratio

    return SDE(
        "ve",
        lambda t: jnp.zeros_like(jnp.asarray(t, float)),
        lambda t: sigma(t) * math.sqrt(2 * log_ratio),
        marginal,
        float(hi),
        noise_time,
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

    def inverse(b):
        """The ``t`` with ``integral(t) = b``."""
        return 2.0 * b / (lo + jnp.sqrt(lo**2 + 2.0 * (hi - lo) * b))

    return beta, integral, inverse


def vp_sde(beta_min=0.1, beta_max=20.0):
    """The variance-preserving SDE (the continuous limit of DDPM).

    Example:
        >>> sde = vp_sde()
        >>> mean, std = sde.marginal(1.0)
        >>> round(float(mean), 4), round(float(std), 4)  # data all but gone
        (0.0066, 1.0)
    """
    beta, integral, inverse = _beta_fns(beta_min, beta_max)

    def marginal(t):
        b = integral(t)
        return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))

    def noise_time(noise):  # noise^2 = exp(B) - 1
        return inverse(jnp.log1p(jnp.asarray(noise) ** 2))

    return SDE(
        "vp",
        lambda t: -0.5 * beta(t),
        lambda t: jnp.sqrt(beta(t)),
        marginal,
        1.0,
        noise_time,
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
    beta, integral, inverse = _beta_fns(beta_min, beta_max)

    def marginal(t):
        b = integral(t)
        return jnp.exp(-0.5 * b), -jnp.expm1(-b)

    def diffusion(t):
        return jnp.sqrt(beta(t) * -jnp.expm1(-2.0 * integral(t)))

    def noise_time(noise):  # noise = 2 sinh(B / 2)
        return inverse(2.0 * jnp.arcsinh(jnp.asarray(noise) / 2.0))

    return SDE("subvp", lambda t: -0.5 * beta(t), diffusion, marginal, 1.0, noise_time)


# ------------------------------------------------------------- reverse time
def _check_times(times):
    """A strictly increasing time grid in ``(0, 1]`` of at least two times."""
    if isinstance(times, jax.core.Tracer):
        return times
    values = np.asarray(times, dtype=float)
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(
            f"`times` must be a 1-D grid of at least two times, got shape {values.shape}."
        )
    if not np.all(np.diff(values) > 0):
        raise ValueError("`times` must be strictly increasing.")
    if not (values[0] > 0 and values[-1] <= 1):
        raise ValueError(
            f"`times` must lie in (0, 1], got [{values[0]:.4g}, {values[-1]:.4g}]."
        )
    return jnp.asarray(values, jnp.float32)


def _check_time(t, dt=None):
    """Concrete times must be in ``(0, 1]``, and a step must stay there."""
    if isinstance(t, jax.core.Tracer) or isinstance(dt, jax.core.Tracer):
        return
    t = float(t)
    if not 0 < t <= 1:
        raise ValueError(f"`t` must be in (0, 1], got {t}.")
    if dt is not None and not 0 < float(dt) < t:
        raise ValueError(f"`dt` must be in (0, t) = (0, {t}), got {float(dt)}.")


def check_sde(sde):
    """Refuse anything but a forward SDE of this module, naming it.

    Example:
        >>> check_sde(vp_sde()).name
        'vp'
    """
    if not isinstance(sde, SDE):
        raise TypeError(
            "`sde` must be a forward SDE of numpyro_ebm.core.sde (ve_sde(), "
            f"vp_sde(), subvp_sde()), got {type(sde).__name__}."
        )
    return sde


def check_batch_and_score(score_fn, x):
    """``x`` as an array of shape ``(n, ...)``, after checking that
    ``score_fn(x, t)`` (``t`` of shape ``(n,)``) returns scores of its shape."""
    x = jnp.asarray(x)
    if jnp.ndim(x) < 2:
        raise ValueError(
            f"`x` must be a batch of points, shape (n, ...), got {x.shape}."
        )
    t = jnp.ones(x.shape[:1], jnp.result_type(x, float))
    out = jax.eval_shape(score_fn, x, t)
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"`score_fn(x, t)` must return scores of x's shape {tuple(x.shape)}, "
            f"got {tuple(out.shape)}."
        )
    return x


def reverse_step(rng_key, score_fn, sde, x, t, dt):
    """One Euler-Maruyama step of the reverse-time SDE ``dx = [f(x, t) - g(t)^2
    s(x, t)] dt + g(t) dW`` from ``t`` down to ``t - dt``: the predictor.

    Returns ``(x, x_mean)``: the new state, and its mean before the noise (the
    last step of a sampler returns the mean, as in Song et al. 2021). ``x``
    has a leading batch axis; ``t`` is a scalar.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> sde = vp_sde()
        >>> x, mean = reverse_step(jax.random.key(0), lambda x, t: -x, sde,
        ...                        jnp.zeros((4, 2)), 1.0, 0.01)
        >>> x.shape, bool(jnp.all(mean == 0))
        ((4, 2), True)
    """
    _check_time(t, dt)
    t_batch = jnp.full(jnp.shape(x)[:1], t, jnp.result_type(x, float))
    g = sde.diffusion(t)
    drift = sde.drift(x, t) - g**2 * score_fn(x, t_batch)
    x_mean = x - drift * dt
    z = random.normal(rng_key, jnp.shape(x), jnp.result_type(x, float))
    return x_mean + g * jnp.sqrt(dt) * z, x_mean


def langevin_correct(rng_key, score_fn, x, t, snr):
    """One Langevin corrector step at time ``t`` with the signal-to-noise step
    rule of Song et al. (2021): ``x <- x + a s + sqrt(2 a) z`` with ``a = 2 (r
    |z| / |s|)^2``, ``r = snr``, the norms averaged over the batch. The move
    is the core's :func:`~numpyro_ebm.core.langevin.langevin_proposal` on
    ``U`` with ``grad U = -s``; the rule reads the norm of the same noise it
    will add. It is unadjusted: on a Gaussian of variance ``v`` the rule's
    step is about ``2 r^2 v``, whose stationary variance is ``v / (1 - r^2)``
    (2.6% too wide at ``r = 0.16``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = langevin_correct(jax.random.key(0), lambda x, t: -x,
        ...                      jnp.ones((4, 2)), 0.5, 0.16)
        >>> x.shape
        (4, 2)
    """
    _check_time(t)
    t_batch = jnp.full(jnp.shape(x)[:1], t, jnp.result_type(x, float))
    s = score_fn(x, t_batch)
    # langevin_proposal draws normal(rng_key, x.shape): the same z
    z = random.normal(rng_key, jnp.shape(x), jnp.result_type(x, float))
    axes = tuple(range(1, jnp.ndim(x)))
    # the batch means of the norms, as in Song et al.'s code: per example, a
    # point where the score nearly vanishes would take a huge step
    z_norm = jnp.mean(jnp.sqrt(jnp.sum(z**2, axis=axes)))
    s_norm = jnp.mean(jnp.sqrt(jnp.sum(s**2, axis=axes)))
    step = 2.0 * (snr * z_norm / jnp.maximum(s_norm, 1e-12)) ** 2
    new, _ = langevin_proposal(rng_key, x, -s, step)
    return new


def pc_sample(
    rng_key,
    score_fn,
    sde,
    x,
    num_steps=1000,
    *,
    corrector_steps=1,
    snr=0.16,
    eps=1e-3,
    times=None,
):
    """Predictor-corrector sampling from ``t = 1`` to ``t = eps``.

    ``num_steps`` reverse Euler-Maruyama steps (:func:`reverse_step`) on the
    uniform grid from 1 to ``eps``, each followed by ``corrector_steps``
    Langevin corrector steps (:func:`langevin_correct`) at the new time;
    ``corrector_steps=0`` is the reverse-SDE sampler alone. ``times``, a
    strictly increasing grid in ``(0, 1]``, replaces that grid (and
    ``num_steps`` and ``eps``): the sampler walks it from its last time down
    to its first, one predictor step per interval. ``x`` holds the
    starting points, a batch drawn from the prior (``sde.sample_prior``);
    the result is the last predictor's mean. One compiled loop
    (``jax.lax.scan``); ``score_fn(x, t)`` takes ``t`` of shape ``(n,)``.
    Samples that become non-finite raise ``FloatingPointError`` naming the
    first such step (when called outside ``jit``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> sde = vp_sde()
        >>> x1 = sde.sample_prior(jax.random.key(0), (2000, 2))
        >>> x0 = pc_sample(jax.random.key(1), lambda x, t: -x, sde, x1, 200)
        >>> bool(abs(jnp.var(x0) - 1.0) < 0.1)  # -x: N(0, I)'s score at every t
        True

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
        *Score-based generative modeling through stochastic differential
        equations*, ICLR.
    """
    if corrector_steps != 0:
        validation.positive_integer("corrector_steps", corrector_steps)
    validation.positive("snr", snr)
    if times is None:
        num_steps = validation.positive_integer("num_steps", num_steps)
        eps = float(validation.probability("eps", eps))
        times = jnp.linspace(1.0, eps, num_steps + 1)
    else:
        times = _check_times(times)[::-1]
        num_steps = times.shape[0] - 1
    x = check_batch_and_score(score_fn, x)
    dts = times[:-1] - times[1:]

    def body(carry, inputs):
        x, _, first_bad = carry
        t, dt, key, i = inputs
        key_predict, key_correct = random.split(key)
        x, x_mean = reverse_step(key_predict, score_fn, sde, x, t, dt)
        x = jax.lax.fori_loop(
            0,
            corrector_steps,
            lambda k, x: langevin_correct(
                random.fold_in(key_correct, k), score_fn, x, t - dt, snr
            ),
            x,
        )
        bad = ~jnp.all(jnp.isfinite(x)) & (first_bad < 0)
        return (x, x_mean, jnp.where(bad, i, first_bad)), None

    keys = random.split(rng_key, num_steps)
    steps = jnp.arange(num_steps)
    start = (x, x, jnp.array(-1))
    (_, x_mean, first_bad), _ = jax.lax.scan(
        body, start, (times[:-1], dts, keys, steps)
    )
    if not isinstance(first_bad, jax.core.Tracer) and int(first_bad) >= 0:
        k = int(first_bad)
        raise FloatingPointError(
            f"pc_sample: the samples became non-finite at step {k} of {num_steps} "
            f"(t = {float(times[k]):.4g} to {float(times[k + 1]):.4g}): check the "
            "score function there, or take more steps."
        )
    return x_mean
