"""Score matching: objectives as pure functions, and a trainer.

All objectives take a *batched* score function ``score_fn(x)`` for ``x`` of
shape ``(n, *event_shape)`` (vectors, images, ...) returning scores of the same
shape, whose output row ``i`` depends on row ``i`` only (true of any network
applied row-wise), and return a scalar to minimise. Energies become scores
with :func:`score_from_energy`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import random

from numpyro_ebm.core import validation
from numpyro_ebm.core.annealed import check_sigmas
from numpyro_ebm.core.sde import check_sde
from numpyro_ebm.learn import training

__all__ = [
    "score_from_energy",
    "exact_score_matching_loss",
    "sliced_score_matching_loss",
    "denoising_score_matching_loss",
    "annealed_denoising_score_matching_loss",
    "diffusion_score_matching_loss",
    "ExactScoreMatching",
    "SlicedScoreMatching",
    "DenoisingScoreMatching",
    "DiffusionScoreMatching",
    "ScoreMatching",
]


def _row_sum(x):
    """Sum over every axis but the first (the data points)."""
    return jnp.sum(x.reshape(x.shape[0], -1), -1)


def score_from_energy(energy_fn):
    """``s(x) = -grad_x E(x)`` for a batched energy ``E: (n, d) -> (n,)``.

    Extra arguments (e.g. a noise level) are passed through to ``energy_fn``.

    Example:
        >>> import jax.numpy as jnp
        >>> s = score_from_energy(lambda x: 0.5 * jnp.sum(x**2, -1))
        >>> s(jnp.ones((2, 3))).tolist()
        [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]
    """
    if not callable(energy_fn):
        raise ValueError(
            "`energy_fn` must be callable: a batched energy (n, d) -> (n,), got "
            f"{type(energy_fn).__name__}."
        )

    def score_fn(x, *args):
        return -jax.grad(lambda y: jnp.sum(energy_fn(y, *args)))(x)

    return score_fn


def exact_score_matching_loss(score_fn, x):
    """Hyvärinen's objective ``E[tr grad_x s(x) + |s(x)|^2 / 2]``.

    Equals the Fisher divergence to the data law up to a constant; the trace
    costs ``d`` Jacobian-vector products per point, so keep ``d`` small.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[0.0, 1.0], [2.0, -1.0]])
        >>> float(exact_score_matching_loss(lambda x: -x, x))  # -2 + |x|^2 / 2
        -0.5

    References:
        Hyvärinen (2005), *Estimation of non-normalized statistical models by
        score matching*, JMLR 6.
    """

    x = jnp.asarray(x)
    out = jax.eval_shape(score_fn, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    if tuple(getattr(out, "shape", ())) != (1, *x.shape[1:]):
        raise ValueError(
            f"`score_fn` must return scores of its input's shape {(1, *x.shape[1:])}, "
            f"got {getattr(out, 'shape', type(out).__name__)}."
        )

    def one(xi):
        f = lambda y: score_fn(y.reshape((1, *xi.shape)))[0].reshape(-1)
        flat = xi.reshape(-1)
        s, jac = f(flat), jax.jacfwd(f)(flat)
        return jnp.trace(jac) + 0.5 * jnp.sum(s**2)

    return jnp.mean(jax.vmap(one)(x))


def sliced_score_matching_loss(
    rng_key,
    score_fn,
    x,
    num_projections=1,
    distribution="rademacher",
    variance_reduced=True,
):
    """Sliced score matching: random projections replace the Jacobian trace.

    ``E_v E_x[v^T grad_x s(x) v + |s(x)|^2 / 2]`` (variance reduced) or
    ``E_v E_x[v^T grad_x s(x) v + (v^T s(x))^2 / 2]``, with ``v`` Rademacher or
    standard normal (``E[v v^T] = I``), so both equal the exact objective in
    expectation over ``v``. One Jacobian-vector product per projection.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.ones((4, 3))
        >>> float(sliced_score_matching_loss(jax.random.key(0), lambda x: -x, x))
        -1.5

    References:
        Song, Garg, Shi & Ermon (2019), *Sliced score matching: a scalable
        approach to density and score estimation*, UAI.
    """
    num_projections = validation.positive_integer("num_projections", num_projections)
    if distribution == "rademacher":
        v = random.rademacher(rng_key, (num_projections, *x.shape), x.dtype)
    elif distribution == "gaussian":
        v = random.normal(rng_key, (num_projections, *x.shape), x.dtype)
    else:
        raise ValueError(
            f"`distribution` must be 'rademacher' or 'gaussian', got {distribution!r}."
        )

    def one(v):
        s, jv = jax.jvp(score_fn, (x,), (v,))
        second = _row_sum(s**2) if variance_reduced else _row_sum(v * s) ** 2
        return _row_sum(v * jv) + 0.5 * second

    return jnp.mean(jax.vmap(one)(v))


def denoising_score_matching_loss(rng_key, score_fn, x, sigma):
    """Denoising score matching at one noise level.

    ``E |s(x~) + (x~ - x) / sigma^2|^2 / 2`` with ``x~ = x + sigma eps``: its
    minimiser is the score of the noised law ``p * N(0, sigma^2 I)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> loss = denoising_score_matching_loss(jax.random.key(0), lambda x: -x,
        ...                                      jnp.zeros((8, 2)), 1.0)
        >>> float(loss)  # s(x~) = -x~ is the exact noised score: loss 0
        0.0

    References:
        Vincent (2011), *A connection between score matching and denoising
        autoencoders*, Neural Computation 23(7).
    """
    if jnp.ndim(sigma) == 0:
        # sigma <= 0 gave a finite, plausible loss (a negative one mirrors the
        # noise) or an infinite one
        validation.positive("sigma", sigma)
    eps = random.normal(rng_key, x.shape, x.dtype)
    noisy = x + sigma * eps
    return 0.5 * jnp.mean(_row_sum((score_fn(noisy) + eps / sigma) ** 2))


def annealed_denoising_score_matching_loss(rng_key, score_fn, x, sigmas):
    """Multi-noise DSM for a noise-conditional ``score_fn(x, sigma)`` (NCSN).

    Each point gets a noise level drawn uniformly from ``sigmas``; the level's
    DSM loss is weighted by ``sigma^2``, so the objective is
    ``mean_i sigma_i^2 DSM_{sigma_i}`` in expectation:
    ``E |sigma s(x~, sigma) + eps|^2 / 2``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> score = lambda x, sigma: -x / (1 + sigma[..., None] ** 2)
        >>> loss = annealed_denoising_score_matching_loss(
        ...     jax.random.key(0), score, jnp.zeros((8, 2)), jnp.array([1.0, 0.1]))
        >>> loss.shape
        ()

    References:
        Song & Ermon (2019), *Generative modeling by estimating gradients of
        the data distribution*, NeurIPS.
    """
    key_level, key_noise = random.split(rng_key)
    sigma = jnp.asarray(sigmas, x.dtype)[
        random.randint(key_level, x.shape[:1], 0, len(sigmas))
    ]
    eps = random.normal(key_noise, x.shape, x.dtype)
    per_row = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
    noisy = x + per_row * eps
    return 0.5 * jnp.mean(_row_sum((per_row * score_fn(noisy, sigma) + eps) ** 2))


def log_snr_range(sde, eps):
    """``gamma = log(std^2 / mean^2)``, the log inverse signal-to-noise ratio,
    at ``t = eps`` and ``t = 1``.

    Example:
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> [round(float(g), 2) for g in log_snr_range(vp_sde(), 1e-5)]
        [-13.81, 10.05]
    """
    lo = 2.0 * jnp.log(sde.noise_level(jnp.asarray(eps, jnp.result_type(float))))
    hi = 2.0 * jnp.log(sde.noise_level(jnp.asarray(1.0, jnp.result_type(float))))
    return lo, hi


def _likelihood_times(rng_key, n, sde, eps, dtype):
    """``n`` times uniform in the log inverse SNR over ``[eps, 1]``,
    stratified over the batch (one uniform shifted by ``i / n``), and the
    width of that range."""
    lo, hi = log_snr_range(sde, eps)
    u = jnp.mod(
        random.uniform(rng_key, (), dtype) + jnp.arange(n, dtype=dtype) / n, 1.0
    )
    gamma = lo + (hi - lo) * u
    t = jnp.clip(sde.noise_time(jnp.exp(0.5 * gamma)), eps, 1.0).astype(dtype)
    return t, (hi - lo).astype(dtype)


def diffusion_score_matching_loss(
    rng_key, score_fn, x, sde, eps=1e-5, weighting="variance"
):
    """Continuous-time denoising score matching for a time-conditional
    ``score_fn(x_t, t)`` under the forward ``sde`` (a
    :class:`~numpyro_ebm.core.sde.SDE`).

    Each point gets a time ``t`` in ``[eps, 1]`` and is noised by the SDE's
    closed-form marginal, ``x_t = mean(t) x + std(t) z``.

    - ``weighting="variance"``: ``t ~ U(eps, 1)`` and the loss at ``t`` is
      weighted by ``lambda(t) = std(t)^2`` (Song et al. 2021): the objective
      is ``E |std(t) s(x_t, t) + z|^2 / 2``.
    - ``weighting="likelihood"``: the weight is ``g(t)^2`` (Song, Durkan,
      Murray & Ermon 2021), which makes the loss the diffusion term of a bound
      on the negative log-likelihood (:func:`~numpyro_ebm.diffusion_elbo`), in
      nats per point. Its variance is reduced by importance sampling ``t``
      uniformly in the log inverse signal-to-noise ratio ``gamma(t) =
      log(std^2 / mean^2)``, stratified over the batch: the loss is then
      ``(gamma(1) - gamma(eps)) E |std(t) s(x_t, t) + z|^2 / 2`` (Kingma et
      al. 2021's continuous-time loss).

    Either minimiser is the score of the law of ``x_t`` at every ``t``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> sde = vp_sde()
        >>> def exact(x, t):  # the score of x_t when x ~ N(0, I): also N(0, I)
        ...     return -x
        >>> x = jax.random.normal(jax.random.key(0), (4096, 2))
        >>> loss = diffusion_score_matching_loss(jax.random.key(1), exact, x, sde)
        >>> loss.shape
        ()

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
        *Score-based generative modeling through stochastic differential
        equations*, ICLR.
    """
    key_time, key_noise = random.split(rng_key)
    if weighting == "likelihood":
        t, width = _likelihood_times(key_time, x.shape[0], sde, eps, x.dtype)
    elif weighting == "variance":
        t, width = random.uniform(key_time, x.shape[:1], x.dtype, eps, 1.0), 1.0
    else:
        raise ValueError(
            f"`weighting` must be 'variance' or 'likelihood', got {weighting!r}."
        )
    noisy, z = sde.perturb(key_noise, x, t)
    _, std = sde.marginal(t)
    per_row = std.reshape((-1,) + (1,) * (x.ndim - 1))
    return 0.5 * width * jnp.mean(_row_sum((per_row * score_fn(noisy, t) + z) ** 2))


# --------------------------------------------------------------- objectives
class ExactScoreMatching(NamedTuple):
    """Hyvärinen's exact objective (:func:`exact_score_matching_loss`).

    Needs the divergence of the score, one backward pass per dimension: for
    low-dimensional data; use :class:`SlicedScoreMatching` or
    :class:`DenoisingScoreMatching` beyond.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (1000, 2))
        >>> loss = ExactScoreMatching().loss(None, lambda x: -x, x)  # the true score
        >>> bool(abs(loss + 1.0) < 0.1)  # its minimum, -E|x|^2 / 2 = -d / 2
        True

    Use it as ``ne.ScoreMatching(net, optimizer, ExactScoreMatching())``.

    References:
        Hyvärinen (2005), *Estimation of non-normalized statistical models by
        score matching*, JMLR 6.
    """

    conditional = False

    def loss(self, rng_key, score_fn, x):
        del rng_key
        return exact_score_matching_loss(score_fn, x)


class SlicedScoreMatching(NamedTuple):
    """Sliced score matching (:func:`sliced_score_matching_loss`).

    Attributes:
        num_projections: random directions per point.
        distribution: ``"rademacher"`` or ``"gaussian"``.
        variance_reduced: use ``|s|^2 / 2`` instead of ``(v^T s)^2 / 2``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (1000, 2))
        >>> loss = SlicedScoreMatching().loss(jax.random.key(1), lambda x: -x, x)
        >>> bool(abs(loss + 1.0) < 0.1)  # the exact objective's value, -d / 2
        True

    References:
        Song, Garg, Shi & Ermon (2019), *Sliced score matching: a scalable
        approach to density and score estimation*, UAI.
    """

    num_projections: int = 1
    distribution: str = "rademacher"
    variance_reduced: bool = True
    conditional = False

    def loss(self, rng_key, score_fn, x):
        return sliced_score_matching_loss(
            rng_key,
            score_fn,
            x,
            self.num_projections,
            self.distribution,
            self.variance_reduced,
        )


class DenoisingScoreMatching:
    """Denoising score matching at one level (``sigma``) or many (``sigmas``).

    With ``sigmas`` (decreasing) the network must be noise-conditional,
    ``net(x, sigma)``, and the objective is NCSN's
    :func:`annealed_denoising_score_matching_loss`; sample the result with
    :func:`~numpyro_ebm.noise_annealed_langevin` over the same ``sigmas``.

    Example:
        >>> DenoisingScoreMatching(sigma=0.1).conditional
        False
        >>> DenoisingScoreMatching(sigmas=[1.0, 0.5, 0.1]).conditional
        True
    """

    def __init__(self, sigma=None, *, sigmas=None):
        if (sigma is None) == (sigmas is None):
            raise ValueError("give exactly one of `sigma` and `sigmas`.")
        if sigma is not None:
            validation.positive("sigma", sigma)
        self.sigma = sigma
        self.sigmas = None if sigmas is None else check_sigmas(sigmas)
        self.conditional = sigmas is not None

    def __repr__(self):
        if self.conditional:
            return f"DenoisingScoreMatching(sigmas={list(map(float, self.sigmas))})"
        return f"DenoisingScoreMatching(sigma={float(self.sigma)})"

    def loss(self, rng_key, score_fn, x):
        if self.conditional:
            return annealed_denoising_score_matching_loss(
                rng_key, score_fn, x, self.sigmas
            )
        return denoising_score_matching_loss(rng_key, score_fn, x, self.sigma)


class DiffusionScoreMatching:
    """Continuous-time denoising score matching under a forward SDE
    (:func:`diffusion_score_matching_loss`).

    The network is time-conditional, ``net(x, t)`` with ``t`` of shape
    ``(n,)`` in ``[eps, 1]``; the SDE is one of
    :func:`~numpyro_ebm.core.sde.ve_sde`, :func:`~numpyro_ebm.core.sde.vp_sde`
    and :func:`~numpyro_ebm.core.sde.subvp_sde`.

    Args:
        sde: the forward diffusion.
        eps: the smallest training time (the marginal's ``std`` vanishes at
            ``t = 0``).
        weighting: ``"variance"`` (Song et al. 2021's ``std(t)^2``) or
            ``"likelihood"`` (``g(t)^2`` with importance-sampled times: the
            loss is then a term of the likelihood bound
            :func:`~numpyro_ebm.diffusion_elbo`, in nats per point); see
            :func:`diffusion_score_matching_loss`.

    Example:
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> DiffusionScoreMatching(vp_sde()).conditional
        True

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
        *Score-based generative modeling through stochastic differential
        equations*, ICLR.
    """

    conditional = True

    def __init__(self, sde, eps=1e-5, weighting="variance"):
        check_sde(sde)
        eps = float(validation.probability("eps", eps))
        if weighting not in ("variance", "likelihood"):
            raise ValueError(
                f"`weighting` must be 'variance' or 'likelihood', got {weighting!r}."
            )
        self.sde = sde
        self.eps = float(eps)
        self.weighting = weighting

    def __repr__(self):
        return (
            f"DiffusionScoreMatching(sde={self.sde.name}, eps={self.eps}, "
            f"weighting={self.weighting!r})"
        )

    def loss(self, rng_key, score_fn, x):
        return diffusion_score_matching_loss(
            rng_key, score_fn, x, self.sde, self.eps, self.weighting
        )


# ------------------------------------------------------------------ trainer
class ScoreMatching(training.Learner):
    """Fit an energy or score network by score matching.

    The network is a Flax NNX module (or an ``(apply_fn, params)`` pair). If it
    returns one number per point it is an energy and its score is
    ``-grad_x E``; if it returns a vector per point it is a score network.
    For ``DenoisingScoreMatching(sigmas=...)`` it is called as ``net(x, sigma)``.

    Args:
        net: the network to train.
        optimizer: an Optax gradient transformation (e.g. ``optax.adam(1e-3)``,
            chained with ``optax.clip_by_global_norm`` if wanted).
        objective: :class:`ExactScoreMatching`, :class:`SlicedScoreMatching`,
            :class:`DenoisingScoreMatching` or :class:`DiffusionScoreMatching`.
        ema_decay: keep an exponential moving average of the weights with
            this decay (e.g. 0.999; an Optax transformation chained after
            ``optimizer``): the result's ``params`` and ``module`` are then the
            average, ``result.state`` still the raw weights to go on from.

    Example:
        >>> import jax, optax
        >>> from flax import nnx
        >>> import numpyro_ebm as ne
        >>> data = jax.random.normal(jax.random.key(0), (512, 2))
        >>> sm = ne.ScoreMatching(ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)),
        ...                       optax.adam(1e-2), ne.SlicedScoreMatching())
        >>> result = sm.run(jax.random.key(1), 50, data, batch_size=64,
        ...                 progress_bar=False)
        >>> result.history["loss"].shape
        (50,)

    References:
        Hyvärinen (2005); Song, Garg, Shi & Ermon (2019); Vincent (2011); Song
        & Ermon (2019) — see the objective functions.
    """

    description = "score matching"

    def __init__(self, net, optimizer, objective=None, *, ema_decay=None):
        super().__init__(net, optimizer, ema_decay)
        self.objective = SlicedScoreMatching() if objective is None else objective
        if not hasattr(self.objective, "loss"):
            raise TypeError(
                "`objective` must be ExactScoreMatching(), SlicedScoreMatching() or "
                f"DenoisingScoreMatching(...), got {type(self.objective).__name__}."
            )
        if isinstance(self.objective, SlicedScoreMatching):
            validation.positive_integer(
                "num_projections", self.objective.num_projections
            )
            if self.objective.distribution not in ("rademacher", "gaussian"):
                raise ValueError(
                    "`distribution` must be 'rademacher' or 'gaussian', got "
                    f"{self.objective.distribution!r}."
                )

    def _config(self):
        return {"objective": self.objective}

    def _score_fn(self, params, x):
        """The score function of the network, and whether it is an energy."""
        args = (
            (x, jnp.ones(x.shape[:1], x.dtype)) if self.objective.conditional else (x,)
        )
        out = training.check_network_input(
            lambda p, x: self.apply(p, *((x,) + args[1:])), params, x
        )
        if out.shape == x.shape[:1]:
            return score_from_energy(lambda y, *a: self.apply(params, y, *a))
        if out.shape == x.shape:
            return lambda y, *a: self.apply(params, y, *a)
        raise ValueError(
            f"the network maps data of shape {x.shape} to {out.shape}: expected one "
            "energy per point or one score vector per point."
        )

    def init(self, rng_key, data, batch_size):
        """A fresh :class:`~numpyro_ebm.TrainState` (checks inputs)."""
        data = training.check_data(data, batch_size)
        self._score_fn(self.init_params, data[:batch_size])
        return training.init_state(rng_key, self.init_params, self.optimizer)

    def _step(self, batch_size):
        def step(state, data, mesh):
            state, batch, key_loss = training.next_batch(state, data, batch_size, mesh)

            def loss_fn(params):
                return self.objective.loss(
                    key_loss, self._score_fn(params, batch), batch
                )

            loss, grads = jax.value_and_grad(loss_fn)(state.params)
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
            return self._apply_gradients(state, grads), metrics

        return step
