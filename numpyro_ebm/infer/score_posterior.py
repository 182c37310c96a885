"""Posterior sampling in NumPyro models whose prior is known only by its score.

A :class:`~numpyro_ebm.ScoreDistribution` site has no density, so no sampler
that needs one can run the model. :class:`ScorePosterior` needs only the
prior's noise-conditional score ``s(x, sigma)`` and the density of the other
sites: each draw is one annealed Langevin pass over the prior's noise levels,
moved by the posterior's score at that level.
"""

import warnings
from collections import namedtuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro import distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.distribution import (
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
)
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model
from numpyro.primitives import Messenger
from numpyro.util import identity, is_prng_key

from numpyro_ebm.core import validation
from numpyro_ebm.core.langevin import langevin_proposal

__all__ = ["ScorePosterior", "ScorePosteriorState"]

ScorePosteriorState = namedtuple(
    "ScorePosteriorState",
    ["i", "z", "potential_energy", "diverging", "num_diverging", "rng_key"],
)
ScorePosteriorState.__doc__ = """
State of :class:`ScorePosterior` (a :func:`~collections.namedtuple`):

- **i** - iteration, counting warm-up and sampling together.
- **z** - unconstrained values at the latent sites, the score-prior sites
  included.
- **potential_energy** - minus the log density of the sites other than the
  score priors (the likelihood and the other priors), at ``z``, unannealed.
- **diverging** - the last pass went non-finite and was discarded.
- **num_diverging** - number of such passes.
- **rng_key** - random key for the next pass.
"""


# ------------------------------------------------------------------ handlers
class _FlatScoreSites(Messenger):
    """Give every score-prior site a flat density, recording its
    distribution: the potential of the rest of the model remains."""

    def __init__(self, fn=None, record=None):
        self.record = {} if record is None else record
        super().__init__(fn)

    def process_message(self, msg):
        # imported here: numpyro_ebm.distributions imports numpyro_ebm.infer
        from numpyro_ebm.distributions import ScoreDistribution

        if msg["type"] != "sample":
            return
        fn = msg["fn"]
        base = fn
        while isinstance(base, ExpandedDistribution | Independent | MaskedDistribution):
            base = base.base_dist
        if not isinstance(base, ScoreDistribution):
            return
        if base is not fn:
            raise ValueError(
                f"ScorePosterior: the score-prior site '{msg['name']}' is inside a "
                "plate or wrapped (expanded, masked or made independent); give it "
                "the whole event instead, ScoreDistribution(score_fn, event_shape, "
                "...) with the batch in event_shape."
            )
        if msg["is_observed"]:
            raise ValueError(
                f"ScorePosterior: the score-prior site '{msg['name']}' is observed; "
                "a ScoreDistribution has no density to score observations with."
            )
        self.record.setdefault(msg["name"], fn)
        msg["fn"] = dist.ImproperUniform(
            constraints.independent(constraints.real, len(fn.event_shape)),
            (),
            fn.event_shape,
        )


def _inflate(fn, sigma):
    """A Gaussian observation's law with variance ``scale^2 + sigma^2``, or
    ``None`` when ``fn`` is not Gaussian."""
    if type(fn) is dist.Normal:
        return dist.Normal(fn.loc, jnp.sqrt(fn.scale**2 + sigma**2))
    if isinstance(fn, Independent):
        inner = _inflate(fn.base_dist, sigma)
        return (
            None if inner is None else Independent(inner, fn.reinterpreted_batch_ndims)
        )
    if isinstance(fn, ExpandedDistribution):
        inner = _inflate(fn.base_dist, sigma)
        return None if inner is None else inner.expand(fn.batch_shape)
    if isinstance(fn, MaskedDistribution):
        inner = _inflate(fn.base_dist, sigma)
        return None if inner is None else MaskedDistribution(inner, fn._mask)
    return None


class _AnnealObservations(Messenger):
    """Inflate the variance of each Gaussian observation by ``sigma^2`` (Jalal
    et al. 2021); other observation sites are left as they are."""

    def __init__(self, fn=None, sigma=0.0):
        self.sigma = sigma
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            inflated = _inflate(msg["fn"], self.sigma)
            if inflated is not None:
                msg["fn"] = inflated


# -------------------------------------------------------------------- kernel
class ScorePosterior(MCMCKernel):
    """Posterior sampling for models with score priors
    (:class:`~numpyro_ebm.ScoreDistribution` sites), for
    :class:`numpyro.infer.MCMC`.

    Each draw is one annealed Langevin pass over the prior's noise levels
    ``sigma_1 > ... > sigma_L``: from ``x ~ init_dist`` (the prior's, by default
    ``N(0, sigma_1^2 I)``), ``num_steps_per_level`` unadjusted Langevin steps
    at each level,

        ``x <- x + a_i [s(x, sigma_i) + grad_x log p_i(y | x, ...)] + sqrt(2 a_i) z``,

    ``a_i = step_size sigma_i^2 / sigma_L^2``. The likelihood is annealed as in
    Jalal et al. (2021): every Gaussian observation ``N(mu, tau^2)`` is scored
    at level ``i`` as ``N(mu, tau^2 + sigma_i^2)``, the law of the observation
    given the noised ``x`` when the observation is a unit-gain linear map of
    ``x`` (denoising, inpainting). Other observation sites are scored as they
    are. After the last level, ``num_final_steps`` more steps at ``sigma_L``
    (a stationary stage) may follow. The other latent sites (a noise scale,
    ...) are moved in the same pass by the same Langevin step on their log
    density, in unconstrained space, with ``latent_step_size``; their values
    carry over from draw to draw, while each pass restarts ``x``.

    What the draws follow: the pass ends near the law at the last level,
    ``pi_L(x) ~ p_{sigma_L}(x) p_L(y | x)``, the prior convolved with
    ``N(0, sigma_L^2 I)`` and the inflated likelihood. It tends to the
    posterior as ``sigma_L -> 0``; the Langevin steps add a bias of order
    ``a_L`` (on a Gaussian target of variance ``v``, a variance ``v / (1 -
    a_L / (2 v))``). A linear Gaussian model measures both; see the docs page
    *Diffusion models and score priors*.

    Limits: the weights of well-separated modes are set at the level where
    the modes part, and later levels cannot move mass between them. When the
    observation re-weights such modes (it favours one the prior makes rare),
    the draws keep the weights of that intermediate level, not the
    posterior's: on a two-mode prior 0.7 / 0.3 whose posterior weights are
    0.10 / 0.90, the draws give 0.50 / 0.50 with the exact score (0.37 /
    0.63 with five times the steps and a long stationary stage).
    The passes agree with each other, so nothing in the chains shows it;
    check such a model against quadrature in low dimension, or use an
    energy prior with a tempered sampler.

    Args:
        model: a NumPyro model with at least one ScoreDistribution site (not in
            a plate) and continuous other latent sites with densities.
        step_size: ``eps`` in ``a_i``; default the score site's.
        num_steps_per_level: Langevin steps per level; default the score
            site's.
        num_final_steps: steps at the last level after the annealing.
        final_step_size: their step (default ``step_size``, the last level's
            step). The annealing's rule ``a_i ~ sigma_i^2`` keeps ``a_L`` small
            so that the first levels are stable; a stationary stage mixes
            faster with a larger step, at a bias of order that step.
        latent_step_size: the Langevin step of the other latent sites
            (default ``step_size``).
        anneal_likelihood: inflate Gaussian observations by ``sigma_i^2``
            (``False``: the plain likelihood at every level).
        init_strategy: NumPyro's initialisation of the other latent sites.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> sigmas = jnp.geomspace(3.0, 0.05, 8)
        >>> score = lambda x, sigma: -x / (1.0 + sigma**2)  # prior N(0, I)
        >>> def model(y):
        ...     x = numpyro.sample("x", ne.ScoreDistribution(score, (2,), sigmas))
        ...     numpyro.sample("y", dist.Normal(x, 0.5).to_event(1), obs=y)
        >>> kernel = ne.ScorePosterior(model, step_size=1e-3, num_steps_per_level=20)
        >>> mcmc = MCMC(kernel, num_warmup=10, num_samples=100, progress_bar=False)
        >>> mcmc.run(jax.random.key(0), jnp.array([1.0, -1.0]))
        >>> mcmc.get_samples()["x"].shape
        (100, 2)

    References:
        Jalal, Arvinte, Daras, Price, Dimakis & Tamir (2021), *Robust
        compressed sensing MRI with deep generative priors*, NeurIPS. Song &
        Ermon (2019), *Generative modeling by estimating gradients of the data
        distribution*, NeurIPS.
    """

    sample_field = "z"

    def __init__(
        self,
        model,
        *,
        step_size=None,
        num_steps_per_level=None,
        num_final_steps=0,
        final_step_size=None,
        latent_step_size=None,
        anneal_likelihood=True,
        init_strategy=init_to_uniform,
    ):
        if not callable(model):
            raise ValueError("`model` must be a NumPyro model (a callable).")
        if step_size is not None:
            validation.positive("step_size", step_size)
        if num_steps_per_level is not None:
            num_steps_per_level = validation.positive_integer(
                "num_steps_per_level", num_steps_per_level
            )
        if num_final_steps != 0:
            validation.positive_integer("num_final_steps", num_final_steps)
        if final_step_size is not None:
            validation.positive("final_step_size", final_step_size)
        if latent_step_size is not None:
            validation.positive("latent_step_size", latent_step_size)
        self._model = model
        self._step_size = step_size
        self._num_steps_per_level = num_steps_per_level
        self._num_final_steps = int(num_final_steps)
        self._final_step_size = final_step_size
        self._latent_step_size = latent_step_size
        self._anneal_likelihood = bool(anneal_likelihood)
        self._init_strategy = init_strategy
        self._potential_fn_gen = None
        self._postprocess_fn = None
        self._pass = None

    @property
    def model(self):
        return self._model

    @property
    def default_fields(self):
        return ("z", "diverging", "potential_energy")

    def get_diagnostics_str(self, state):
        return f"diverging passes={int(jnp.sum(state.num_diverging))}"

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(0.0, *model_args, **model_kwargs)

    # ------------------------------------------------------------------ init
    def _annealed_model(self, record):
        model = self._model

        def annealed(sigma, *args, **kwargs):
            with _FlatScoreSites(record=record), _AnnealObservations(sigma=sigma):
                return model(*args, **kwargs)

        return annealed

    def _settings(self, record):
        if not record:
            raise ValueError(
                "ScorePosterior: the model has no ScoreDistribution site; sample it "
                "with NUTS or a numpyro_ebm kernel instead."
            )
        sites = list(record.items())
        for name, prior in sites:
            x = jax.ShapeDtypeStruct((1, *prior.event_shape), jnp.float32)
            out = jax.eval_shape(prior.score_fn, x, prior.sigmas[0])
            if tuple(getattr(out, "shape", ())) != x.shape:
                raise ValueError(
                    f"ScorePosterior: the score of site '{name}' must return scores "
                    f"of its input's shape {x.shape} (a batch of one draw), got "
                    f"{getattr(out, 'shape', type(out).__name__)}."
                )
        name0, prior0 = sites[0]
        for name, prior in sites[1:]:
            same = prior.sigmas.shape == prior0.sigmas.shape and bool(
                jnp.all(prior.sigmas == prior0.sigmas)
            )
            if not same:
                raise ValueError(
                    f"ScorePosterior: the score-prior sites '{name0}' and '{name}' "
                    "have different noise levels; one pass anneals one ladder."
                )
        step_size = self._step_size if self._step_size is not None else prior0.step_size
        steps = self._num_steps_per_level or prior0.num_steps_per_level
        latent_step = (
            self._latent_step_size if self._latent_step_size is not None else step_size
        )
        return prior0.sigmas, float(step_size), int(steps), float(latent_step)

    def init(
        self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None
    ):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        vectorized = not is_prng_key(rng_key)
        if vectorized:
            rng_key, key_model = jnp.swapaxes(jax.vmap(random.split)(rng_key), 0, 1)
        else:
            rng_key, key_model = random.split(rng_key)
        record = {}
        annealed = self._annealed_model(record)
        # a batch of keys gives a batch of starting points, one per chain
        params_info, potential_fn_gen, postprocess_fn, _ = initialize_model(
            key_model,
            annealed,
            dynamic_args=True,
            init_strategy=self._init_strategy,
            model_args=(0.0, *model_args),
            model_kwargs=model_kwargs,
        )
        self._potential_fn_gen = potential_fn_gen
        self._postprocess_fn = postprocess_fn
        sigmas, step_size, num_steps, latent_step = self._settings(record)
        self._sigmas, self._level_step = np.asarray(sigmas), step_size
        z0 = params_info[0] if init_params is None else init_params
        self._pass = self._make_pass(record, sigmas, step_size, num_steps, latent_step)

        def start(key, z):
            pe = potential_fn_gen(0.0, *model_args, **model_kwargs)(z)
            return ScorePosteriorState(
                jnp.array(0), z, pe, jnp.array(False), jnp.array(0), key
            )

        if vectorized:
            return jax.vmap(start)(rng_key, z0)
        return start(rng_key, z0)

    # ---------------------------------------------------------------- sample
    def _make_pass(self, record, sigmas, step_size, num_steps, latent_step):
        names = tuple(record)
        priors = tuple(record[n] for n in names)
        sigma_last = sigmas[-1]
        anneal = self._anneal_likelihood
        num_final = self._num_final_steps
        final_step = (
            self._final_step_size if self._final_step_size is not None else step_size
        )
        potential_fn_gen = self._potential_fn_gen

        def one_pass(rng_key, z, model_args, model_kwargs):
            key_init, key_levels, key_final = random.split(rng_key, 3)
            z = dict(z)
            for k, (name, prior) in zip(
                random.split(key_init, len(names)),
                zip(names, priors, strict=True),
                strict=True,
            ):
                z[name] = _initial(prior, k)
            flat, unravel = ravel_pytree(z)
            is_score = ravel_pytree(
                {n: jnp.full(jnp.shape(v), n in names) for n, v in z.items()}
            )[0]

            def drift_grad(flat, sigma):
                """grad U: minus the score prior's score at sigma, plus the
                gradient of the rest of the model's potential."""
                potential = potential_fn_gen(
                    sigma if anneal else 0.0, *model_args, **model_kwargs
                )
                grad = jax.grad(lambda f: potential(unravel(f)))(flat)
                values = unravel(flat)
                scores = {
                    n: p.score_fn(values[n][None], sigma)[0]
                    for n, p in zip(names, priors, strict=True)
                }
                prior_grad = ravel_pytree(
                    {
                        n: (-scores[n] if n in names else jnp.zeros_like(v))
                        for n, v in values.items()
                    }
                )[0]
                return grad + prior_grad

            def steps(flat, key, sigma, a, count):
                """``count`` Langevin steps; also whether every drift was
                finite."""
                step = jnp.where(is_score, a, latent_step)

                def body(carry, key):
                    flat, ok = carry
                    grad = drift_grad(flat, sigma)
                    new, _ = langevin_proposal(key, flat, grad, step)
                    return (new, ok & jnp.all(jnp.isfinite(grad))), None

                (flat, ok), _ = jax.lax.scan(
                    body, (flat, jnp.array(True)), random.split(key, count)
                )
                return flat, ok

            def first_bad(flat, ok, bad, index):
                # positions can run away without overflowing: the potential
                # at the level's end overflows first
                potential = potential_fn_gen(0.0, *model_args, **model_kwargs)
                ok = (
                    ok
                    & jnp.all(jnp.isfinite(flat))
                    & jnp.isfinite(potential(unravel(flat)))
                )
                return jnp.where((bad < 0) & ~ok, index, bad)

            def level(carry, inputs):
                flat, bad = carry
                key, sigma, index = inputs
                a = step_size * (sigma / sigma_last) ** 2
                flat, ok = steps(flat, key, sigma, a, num_steps)
                return (flat, first_bad(flat, ok, bad, index)), None

            num_levels = sigmas.shape[0]
            (flat, bad), _ = jax.lax.scan(
                level,
                (flat, jnp.array(-1)),
                (random.split(key_levels, num_levels), sigmas, jnp.arange(num_levels)),
            )
            if num_final:
                flat, ok = steps(flat, key_final, sigma_last, final_step, num_final)
                bad = first_bad(flat, ok, bad, num_levels)
            return unravel(flat), bad

        return one_pass

    def sample(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if jnp.ndim(state.i) > 0:
            return jax.vmap(lambda s: self._sample_one(s, model_args, model_kwargs))(
                state
            )
        return self._sample_one(state, model_args, model_kwargs)

    def _sample_one(self, state, model_args, model_kwargs):
        key, key_pass = random.split(state.rng_key)
        z, bad_level = self._pass(key_pass, state.z, model_args, model_kwargs)
        pe = self._potential_fn_gen(0.0, *model_args, **model_kwargs)(z)
        finite = jnp.isfinite(pe) & (bad_level < 0)
        # the first discarded pass of a chain says where it went non-finite
        # (the callback decides: under vmap both branches of a cond would run)
        jax.debug.callback(
            self._warn_diverged,
            ~finite & (state.num_diverging == 0),
            state.i,
            bad_level,
        )
        z = jax.tree.map(lambda new, old: jnp.where(finite, new, old), z, state.z)
        pe = jnp.where(finite, pe, state.potential_energy)
        return ScorePosteriorState(
            state.i + 1,
            z,
            pe,
            ~finite,
            state.num_diverging + (~finite).astype(jnp.int32),
            key,
        )

    def _warn_diverged(self, report, i, level):
        report, i, level = (np.ravel(np.asarray(v)) for v in (report, i, level))
        if not report.any():
            return
        first = int(np.argmax(report))
        i, level = int(i[first % i.size]), int(level[first % level.size])
        sigmas = self._sigmas
        if 0 <= level < sigmas.shape[0]:
            step = self._level_step * (sigmas[level] / sigmas[-1]) ** 2
            where = (
                f"at noise level {level + 1} of {sigmas.shape[0]} (sigma = "
                f"{float(sigmas[level]):.4g}, Langevin step {float(step):.3g})"
            )
        else:
            where = "in the final stage at the last noise level"
        warnings.warn(
            f"ScorePosterior: the pass at iteration {i} went non-finite {where}; "
            "the draw is discarded (sample stat `diverging`). The step there is too "
            "large for the posterior's curvature: lower `step_size` (or "
            "`final_step_size`), or keep `anneal_likelihood=True`, which tames a "
            "sharp likelihood at the large noise levels.",
            RuntimeWarning,
            stacklevel=2,
        )


def _initial(prior, rng_key):
    """A pass's start: a draw of the prior's ``init_dist``, by default
    ``N(0, sigma_1^2 I)``."""
    if prior.init_dist is not None:
        return prior.init_dist.sample(rng_key)
    return prior.sigmas[0] * random.normal(rng_key, prior.event_shape)
