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
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model, unconstrain_fn
from numpyro.primitives import Messenger
from numpyro.util import identity, is_prng_key

from numpyro_ebm.core import langevin, smc, validation
from numpyro_ebm.core.annealed import reverse_moments
from numpyro_ebm.core.langevin import langevin_proposal, langevin_step
from numpyro_ebm.core.metrics import Metric
from numpyro_ebm.distributions import ScoreDistribution
from numpyro_ebm.infer import adaptation

__all__ = ["ScorePosterior", "ScorePosteriorState", "Evidence"]

ScorePosteriorState = namedtuple(
    "ScorePosteriorState",
    [
        "i",
        "z",
        "potential_energy",
        "diverging",
        "num_diverging",
        "rng_key",
        "path",
        "ess",
        "mean_ess",
        "accept_prob",
        "adapt_state",
    ],
    defaults=(None, None, None, None, None),
)
ScorePosteriorState.__doc__ = """
State of :class:`ScorePosterior` (a :func:`~collections.namedtuple`):

- **i** - iteration, counting warm-up and sampling together.
- **z** - unconstrained values at the latent sites, the score-prior sites
  included.
- **potential_energy** - minus the log density of the sites other than the
  score priors (the likelihood and the other priors), at ``z``, unannealed.
- **diverging** - the last sweep or pass went non-finite and was discarded.
- **num_diverging** - number of such sweeps or passes.
- **rng_key** - random key for the next iteration.
- **path** - (smc) the reference path of the reverse diffusion, ``(L, D)``
  for the ``D`` values of the score sites.
- **ess** - (smc) the SMC weights' effective sample size over the number of
  particles at each of the ``L`` levels in the last sweep.
- **mean_ess** - (smc) its running mean in the current phase.
- **accept_prob** - (smc) the mean acceptance of the last MALA steps on the
  other latent sites (1 when there are none).
- **adapt_state** - (smc) their step size and mass matrix (NumPyro's
  ``HMCAdaptState``), or ``None``.

With ``method="annealed"`` the fields after ``rng_key`` are ``None``.
"""


# ------------------------------------------------------------------ handlers
class _FlatScoreSites(Messenger):
    """Give every score-prior site a flat density, recording its
    distribution: the potential of the rest of the model remains."""

    def __init__(self, fn=None, record=None):
        self.record = {} if record is None else record
        super().__init__(fn)

    def process_message(self, msg):
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


class _ReversePath:
    """The Feynman–Kac model of the score sites' reverse diffusion, twisted
    by a model's likelihood: what :class:`ScorePosterior`'s sweeps and
    evidence run on (:func:`~numpyro_ebm.core.smc.gaussian_path_smc`).

    The score sites' values are one flat vector of size ``D``; the other
    latent sites of ``z`` are held fixed."""

    def __init__(self, record, sigmas, num_levels, potential_fn_gen):
        self.names = tuple(record)
        self.priors = tuple(record[n] for n in self.names)
        self.shapes = tuple(tuple(p.event_shape) for p in self.priors)
        self.sizes = tuple(int(np.prod(s, dtype=int)) for s in self.shapes)
        self.size = sum(self.sizes)
        sigmas = np.asarray(sigmas, dtype=np.float64)
        if num_levels is not None:
            sigmas = np.geomspace(sigmas[0], sigmas[-1], num_levels)
        self.levels = jnp.asarray(sigmas, dtype=jnp.result_type(float))
        self.num_levels = int(sigmas.shape[0])
        if self.num_levels < 2:
            raise ValueError(
                "ScorePosterior: the reverse diffusion needs at least 2 noise levels; "
                "the prior has one (give it more `sigmas`, or set `num_levels`)."
            )
        self.denoise = bool(self.priors[0].denoise)
        self.potential_fn_gen = potential_fn_gen
        self.starts = tuple(
            None if prior.init_dist is not None else _gaussian_start(prior, sigmas[0])
            for prior in self.priors
        )

    # the score sites as one flat vector
    def _parts(self, flat):
        """``(..., D)`` -> the sites' values, each ``(..., *event_shape)``."""
        bounds = np.cumsum(self.sizes)[:-1]
        lead = flat.shape[:-1]
        return [
            part.reshape(*lead, *shape)
            for part, shape in zip(
                jnp.split(flat, bounds, -1), self.shapes, strict=True
            )
        ]

    def scores(self, x, sigma):
        """The score sites' scores of the batch ``x`` ``(N, D)``."""
        n = x.shape[0]
        return jnp.concatenate(
            [
                prior.score_fn(part, sigma).reshape(n, size)
                for prior, part, size in zip(
                    self.priors, self._parts(x), self.sizes, strict=True
                )
            ],
            -1,
        )

    def flat_value(self, z):
        return jnp.concatenate([jnp.ravel(z[n]) for n in self.names])

    def with_value(self, z, flat):
        z = dict(z)
        z.update(zip(self.names, self._parts(flat), strict=True))
        return z

    def others(self, z):
        """The other latent sites' values as one flat vector (``None`` when
        there are none)."""
        rest = {k: v for k, v in z.items() if k not in self.names}
        return ravel_pytree(rest)[0] if rest else None

    def with_others(self, z, flat):
        rest = {k: v for k, v in z.items() if k not in self.names}
        z = dict(z)
        z.update(ravel_pytree(rest)[1](flat))
        return z

    def initial(self, rng_key, n):
        """``n`` draws of the first level's law, ``(n, D)``."""
        parts = []
        for prior, start, key, size in zip(
            self.priors,
            self.starts,
            random.split(rng_key, len(self.priors)),
            self.sizes,
            strict=True,
        ):
            if prior.init_dist is not None:
                draws = prior.init_dist.sample(key, (n,)).reshape(n, size)
            else:
                mean, sd = start
                draws = mean + sd * random.normal(key, (n, size))
            parts.append(draws)
        return jnp.concatenate(parts, -1)

    def final_value(self, x):
        """The prior's value at the path's end ``x`` ``(D,)``."""
        if not self.denoise:
            return x
        sigma = self.levels[-1]
        return x + sigma**2 * self.scores(x[None], sigma)[0]

    def feynman_kac(self, z, model_args, model_kwargs, *, guidance, anneal):
        """``(evaluate, transition)`` for :func:`gaussian_path_smc`: the twist
        at level ``k`` is the model's likelihood (minus the potential of its
        other sites, fixed at ``z``) at Tweedie's denoised value, Gaussian
        observations widened by ``sigma_k^2`` when ``anneal``; at the last
        level, the likelihood at the prior's value itself."""
        levels, last = self.levels, self.num_levels - 1
        potential_fn_gen = self.potential_fn_gen

        def log_likelihood(value, widen):
            potential = potential_fn_gen(widen, *model_args, **model_kwargs)
            return -potential(self.with_value(z, value))

        def evaluate(k, x):
            sigma = levels[k]
            at_end = k == last
            widen = jnp.where(at_end | (not anneal), 0.0, sigma)

            def total(x):
                s = self.scores(x, sigma)
                denoised = x + sigma**2 * s
                value = denoised if self.denoise else jnp.where(at_end, x, denoised)
                ll = jax.vmap(log_likelihood, (0, None))(value, widen)
                # a NaN score must show as a NaN weight, never as a finite one
                bad = ~jnp.all(jnp.isfinite(s), axis=-1)
                ll = jnp.where(bad, jnp.nan, ll)
                return jnp.sum(jnp.where(jnp.isfinite(ll), ll, 0.0)), (ll, s)

            if guidance:
                grad, (ll, s) = jax.grad(total, has_aux=True)(x)
                grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
            else:
                _, (ll, s) = total(x)
                grad = jnp.zeros_like(x)
            return ll, (s, grad)

        def transition(k, x, aux):
            s, grad = aux
            mean, var = reverse_moments(x, s, levels[k], levels[k + 1])
            return mean, mean + var * grad, var

        return evaluate, transition


# -------------------------------------------------------------------- kernel
_ANNEALED_ONLY = (
    "step_size",
    "num_steps_per_level",
    "num_final_steps",
    "final_step_size",
)
_SMC_ONLY = ("num_particles", "num_levels", "ess_threshold", "guidance", "latent_steps")

Evidence = namedtuple("Evidence", ["log_evidence", "stderr", "log_evidences"])
Evidence.__doc__ = """
:meth:`ScorePosterior.log_evidence`'s estimate (a :func:`~collections.namedtuple`):

- **log_evidence** - ``log`` of the mean of the runs' unbiased estimates of
  ``p(y)``.
- **stderr** - its standard error (the delta method: the runs' estimates'
  standard error over their mean).
- **log_evidences** - each run's ``log`` estimate.
"""


class ScorePosterior(MCMCKernel):
    """Posterior sampling for models with score priors
    (:class:`~numpyro_ebm.ScoreDistribution` sites), for
    :class:`numpyro.infer.MCMC`.

    **The prior's law.** A score ``s(x, sigma)`` fixes a law through the
    reverse diffusion it drives. Over ``num_levels`` geometric noise levels
    ``sigma_1 > ... > sigma_L`` spanning the prior's ``sigmas``, the path
    starts at ``x_1 ~ init_dist`` (the prior's; by default the Gaussian with
    the prior's mean and per-coordinate variance at ``sigma_1``, which the
    score gives through Tweedie's formula, estimated once from draws of a
    fixed key) and steps down by ancestral sampling of the
    variance-exploding diffusion (:func:`~numpyro_ebm.core.annealed.reverse_moments`),

        ``x_{k+1} ~ N(x_k + (sigma_k^2 - sigma_{k+1}^2) s(x_k, sigma_k),
        sigma_{k+1}^2 (sigma_k^2 - sigma_{k+1}^2) / sigma_k^2 I)``;

    the prior's value is ``x_L``, or with the prior's ``denoise=True`` its
    Tweedie denoising ``x_L + sigma_L^2 s(x_L, sigma_L)``. This law ``p(x)``
    tends to the data law smoothed by ``N(0, sigma_L^2 I)`` as the levels
    grow in number and the score becomes exact, up to the start's error: the
    law at ``sigma_1`` is near Gaussian when ``sigma_1`` is large against the
    data's spread (or give the exact ``init_dist``); it is the law
    :func:`~numpyro_ebm.reverse_diffusion` draws.

    **The default, ``method="smc"``: exact.** Each iteration is a conditional
    sequential Monte Carlo sweep (particle Gibbs; Andrieu, Doucet & Holenstein
    2010) of ``num_particles`` paths along that reverse diffusion, the
    previous draw's path kept as the reference, followed by one path drawn
    from the final weights (the first sweep has none: the chain starts from
    a plain SMC draw, whatever the starting value of the score sites, which
    is no path of the diffusion and as a constant reference could keep
    winning the sweeps). The paths are twisted towards the data as in
    twisted diffusion sampling (Wu et al. 2023): at level ``k`` each path is
    weighted by the model's likelihood at Tweedie's denoised
    ``x0 = x_k + sigma_k^2 s(x_k, sigma_k)`` (Gaussian observations with their
    variance widened by ``sigma_k^2``), and moved by the reverse step shifted
    along that likelihood's gradient (``guidance``); importance weights
    correct both, and at the last level the weight is the model's own
    likelihood. Particles are resampled when the weights' effective sample
    size falls below ``ess_threshold`` of their number. The chain leaves the
    posterior ``p(x | y) ∝ p(x) p(y | x, ...)`` invariant for any number of
    particles >= 2, whatever the likelihood (any NumPyro distribution at the
    observation sites, through the model's log density); particles only make
    it mix faster. Its one error beyond Monte Carlo's is that of ``p(x)``
    itself: the levels (``num_levels``) and the score's. The other latent
    sites (a noise scale, a forward model's parameters) are updated after
    each sweep, given the score sites, by ``latent_steps`` MALA steps
    (the package's Langevin step with its Metropolis correction; step size
    adapted in warm-up to an acceptance of 0.574): a Gibbs sampler of the
    joint posterior.

    **``method="annealed"``: fast and biased.** One annealed Langevin pass
    per draw (Jalal et al. 2021): ``num_steps_per_level`` unadjusted Langevin
    steps at each of the prior's ``sigmas``,
    ``x <- x + a_i [s(x, sigma_i) + grad_x log p_i(y | x, ...)] + sqrt(2 a_i) z``,
    ``a_i = step_size sigma_i^2 / sigma_L^2``, every Gaussian observation
    ``N(mu, tau^2)`` scored at level ``i`` as ``N(mu, tau^2 + sigma_i^2)``,
    then ``num_final_steps`` steps at ``sigma_L``; the other latent sites
    move in the same pass. The weights of well-separated modes are set at
    the level where the modes part and later levels cannot move mass between
    them: when the observation favours a mode the prior makes rare, the
    draws keep the weights of that intermediate level (on a two-mode prior
    0.7 / 0.3 whose posterior weights are 0.10 / 0.90, 0.50 / 0.50), and the
    passes agree with each other, so nothing in the chains shows it. Without
    such modes (a unimodal or log-concave posterior), its draws follow the
    last level's law up to the Langevin step's bias.

    Args:
        model: a NumPyro model with at least one ScoreDistribution site (not in
            a plate) and continuous other latent sites with densities.
        method: ``"smc"`` (exact, the default) or ``"annealed"``.
        num_particles: (smc) particles per sweep, at least 2.
        num_levels: (smc) levels of the reverse diffusion, geometric between
            the prior's first and last ``sigmas`` (the score must accept any
            noise level in that range); ``None``: the prior's own ``sigmas``.
        ess_threshold: (smc) resample when the effective sample size falls
            below this fraction of ``num_particles``.
        guidance: (smc) shift the reverse step along the twist's gradient
            (one more backward pass of the score per level); ``False``: the
            prior's reverse step, weighted only.
        latent_steps: (smc) MALA steps on the other latent sites per
            iteration.
        latent_step_size: the other latent sites' first step size (smc:
            adapted in warm-up), or their Langevin step (annealed; default
            ``step_size``).
        anneal_likelihood: widen Gaussian observations by ``sigma^2`` at
            each level (smc: in the twists, which leaves the target as it
            is; annealed: in the pass); ``False``: the plain likelihood.
        step_size: (annealed) ``eps`` in ``a_i``; default the score site's.
        num_steps_per_level: (annealed) Langevin steps per level; default the
            score site's.
        num_final_steps: (annealed) steps at the last level after the
            annealing.
        final_step_size: (annealed) their step (default ``step_size``).
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
        >>> kernel = ne.ScorePosterior(model, num_particles=8, num_levels=20)
        >>> mcmc = MCMC(kernel, num_warmup=10, num_samples=100, progress_bar=False)
        >>> mcmc.run(jax.random.key(0), jnp.array([1.0, -1.0]), extra_fields=("ess",))
        >>> mcmc.get_samples()["x"].shape, mcmc.get_extra_fields()["ess"].shape
        ((100, 2), (100, 20))

    References:
        Wu, Trippe, Naesseth, Blei & Cunningham (2023), *Practical and
        asymptotically exact conditional sampling in diffusion models*,
        NeurIPS. Andrieu, Doucet & Holenstein (2010), *Particle Markov chain
        Monte Carlo methods*, JRSS B 72(3). Song, Sohl-Dickstein, Kingma,
        Kumar, Ermon & Poole (2021), *Score-based generative modeling through
        stochastic differential equations*, ICLR. Jalal, Arvinte, Daras,
        Price, Dimakis & Tamir (2021), *Robust compressed sensing MRI with
        deep generative priors*, NeurIPS.
    """

    sample_field = "z"

    def __init__(
        self,
        model,
        *,
        method="smc",
        num_particles=16,
        num_levels=100,
        ess_threshold=0.5,
        guidance=True,
        latent_steps=5,
        latent_step_size=None,
        anneal_likelihood=True,
        step_size=None,
        num_steps_per_level=None,
        num_final_steps=0,
        final_step_size=None,
        init_strategy=init_to_uniform,
    ):
        if not callable(model):
            raise ValueError("`model` must be a NumPyro model (a callable).")
        if method not in ("smc", "annealed"):
            raise ValueError(f"`method` must be 'smc' or 'annealed', got {method!r}.")
        given = {
            "step_size": step_size,
            "num_steps_per_level": num_steps_per_level,
            "num_final_steps": num_final_steps or None,
            "final_step_size": final_step_size,
        }
        if method == "smc":
            wrong = [k for k in _ANNEALED_ONLY if given[k] is not None]
            if wrong:
                raise ValueError(
                    f"ScorePosterior: {', '.join(f'`{k}`' for k in wrong)} "
                    "belong to method='annealed'; the default method='smc' is set by "
                    "`num_particles`, `num_levels` and `ess_threshold`."
                )
        else:
            defaults = {
                "num_particles": 16,
                "num_levels": 100,
                "ess_threshold": 0.5,
                "guidance": True,
                "latent_steps": 5,
            }
            settings = {
                "num_particles": num_particles,
                "num_levels": num_levels,
                "ess_threshold": ess_threshold,
                "guidance": guidance,
                "latent_steps": latent_steps,
            }
            wrong = [k for k in _SMC_ONLY if settings[k] != defaults[k]]
            if wrong:
                raise ValueError(
                    f"ScorePosterior: {', '.join(f'`{k}`' for k in wrong)} "
                    "belong to method='smc', not to method='annealed'."
                )
        num_particles = validation.positive_integer("num_particles", num_particles)
        if num_particles < 2:
            raise ValueError(
                "`num_particles` must be at least 2: conditional SMC with one "
                f"particle never moves (got {num_particles})."
            )
        if num_levels is not None:
            num_levels = validation.positive_integer("num_levels", num_levels)
            if num_levels < 2:
                raise ValueError(
                    f"`num_levels` must be at least 2 (got {num_levels}): the reverse "
                    "diffusion needs a first and a last level."
                )
        ess_threshold = float(
            validation.probability("ess_threshold", ess_threshold, closed=True)
        )
        latent_steps = validation.positive_integer("latent_steps", latent_steps)
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
        self._method = method
        self._num_particles = num_particles
        self._num_levels = num_levels
        self._ess_threshold = ess_threshold
        self._guidance = bool(guidance)
        self._latent_steps = latent_steps
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
        self._sweep = None

    @property
    def model(self):
        return self._model

    @property
    def default_fields(self):
        return ("z", "diverging", "potential_energy")

    def get_diagnostics_str(self, state):
        if self._method == "smc":
            return (
                f"min ESS/N={float(jnp.min(state.mean_ess)):.2f}, "
                f"diverging sweeps={int(jnp.sum(state.num_diverging))}"
            )
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
            if prior.denoise != prior0.denoise:
                raise ValueError(
                    f"ScorePosterior: the score-prior sites '{name0}' and '{name}' "
                    "differ in `denoise`; give them the same."
                )
        step_size = self._step_size if self._step_size is not None else prior0.step_size
        steps = self._num_steps_per_level or prior0.num_steps_per_level
        latent_step = (
            self._latent_step_size if self._latent_step_size is not None else step_size
        )
        return prior0.sigmas, float(step_size), int(steps), float(latent_step)

    def _setup(self, rng_key, model_args, model_kwargs, init_strategy=None):
        record = {}
        key = rng_key if is_prng_key(rng_key) else rng_key[0]
        _check_observations(
            self._annealed_model({}), key, self._init_strategy, model_args, model_kwargs
        )
        params_info, potential_fn_gen, postprocess_fn, _ = initialize_model(
            rng_key,
            self._annealed_model(record),
            dynamic_args=True,
            init_strategy=init_strategy or self._init_strategy,
            model_args=(0.0, *model_args),
            model_kwargs=model_kwargs,
        )
        return record, params_info, potential_fn_gen, postprocess_fn

    def init(
        self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None
    ):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        vectorized = not is_prng_key(rng_key)
        if vectorized:
            rng_key, key_model = jnp.swapaxes(jax.vmap(random.split)(rng_key), 0, 1)
        else:
            rng_key, key_model = random.split(rng_key)
        # a batch of keys gives a batch of starting points, one per chain
        record, params_info, potential_fn_gen, postprocess_fn = self._setup(
            key_model, model_args, model_kwargs
        )
        self._potential_fn_gen = potential_fn_gen
        self._postprocess_fn = postprocess_fn
        self._num_warmup = int(num_warmup)
        sigmas, step_size, num_steps, latent_step = self._settings(record)
        z0 = params_info[0] if init_params is None else init_params
        if self._method == "annealed":
            self._sigmas, self._level_step = np.asarray(sigmas), step_size
            self._pass = self._make_pass(
                record, sigmas, step_size, num_steps, latent_step
            )
        else:
            self._reverse = _ReversePath(
                record, sigmas, self._num_levels, potential_fn_gen
            )
            self._sigmas = np.asarray(self._reverse.levels)
            self._sweep = self._make_sweep()
        if vectorized:
            return jax.vmap(lambda k, z: self._start(k, z, model_args, model_kwargs))(
                rng_key, z0
            )
        return self._start(rng_key, z0, model_args, model_kwargs)

    def _start(self, key, z, model_args, model_kwargs):
        pe = self._potential_fn_gen(0.0, *model_args, **model_kwargs)(z)
        state = ScorePosteriorState(
            jnp.array(0), z, pe, jnp.array(False), jnp.array(0), key
        )
        if self._method == "annealed":
            return state
        reverse = self._reverse
        path = jnp.broadcast_to(
            reverse.flat_value(z), (reverse.num_levels, reverse.size)
        )
        others = reverse.others(z)
        if others is None:
            adapt = None
        else:
            step = self._latent_step_size if self._latent_step_size is not None else 0.1
            wa_init, _ = self._latent_adapter()
            adapt = wa_init(
                (others,),
                key,
                jnp.asarray(step, jnp.result_type(float)),
                mass_matrix_size=others.shape[0],
            )._replace(rng_key=None)
        return state._replace(
            path=path,
            ess=jnp.ones(reverse.num_levels),
            mean_ess=jnp.ones(reverse.num_levels),
            accept_prob=jnp.array(1.0 if others is None else 0.0),
            adapt_state=adapt,
        )

    def _latent_adapter(self):
        return adaptation.window_adapter(
            max(self._num_warmup, 1),
            adapt_step_size=True,
            adapt_mass_matrix=True,
            target_accept_prob=0.574,
        )

    # ---------------------------------------------------------------- sample
    def sample(self, state, model_args, model_kwargs):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if jnp.ndim(state.i) > 0:
            new, report = jax.vmap(
                lambda s: self._transition(s, model_args, model_kwargs)
            )(state)
        else:
            new, report = self._transition(state, model_args, model_kwargs)
        self._report(new, *report)
        return new

    def _transition(self, state, model_args, model_kwargs):
        """One iteration of one chain, and what it has to report: whether
        the chain's first non-finite sweep or pass happened (and where)."""
        if self._method == "annealed":
            return self._sample_one(state, model_args, model_kwargs)
        return self._sample_smc(state, model_args, model_kwargs)

    def _report(self, state, first_diverged, level):
        """The warnings, from one host callback for all vectorized chains,
        made only when there is something to say (a callback under vmap
        runs once per chain)."""
        jax.lax.cond(
            jnp.any(first_diverged),
            lambda: jax.debug.callback(
                self._warn_diverged, first_diverged, state.i - 1, level
            ),
            lambda: None,
        )
        if self._method != "smc":
            return
        i = jnp.ravel(state.i)[0]
        since = i - self._num_warmup
        # the end of a warm-up of 5 sweeps or more, and 10, 100 and 1000 draws
        # into sampling: a short run is checked too
        milestone = ((i == self._num_warmup) & (self._num_warmup >= 5)) | (
            (since == 10) | (since == 100) | (since == 1000)
        )
        jax.lax.cond(
            milestone,
            lambda: jax.debug.callback(self._warn_collapse, i, state.mean_ess),
            lambda: None,
        )

    def _make_sweep(self):
        reverse = self._reverse
        n, threshold, guidance = (
            self._num_particles,
            self._ess_threshold,
            self._guidance,
        )
        anneal = self._anneal_likelihood

        def sweep(rng_key, z, path, use_reference, model_args, model_kwargs):
            key_init, key_smc, key_pick = random.split(rng_key, 3)
            evaluate, transition = reverse.feynman_kac(
                z, model_args, model_kwargs, guidance=guidance, anneal=anneal
            )
            _, log_w, info, (levels, ancestors) = smc.gaussian_path_smc(
                key_smc,
                reverse.initial(key_init, n),
                evaluate,
                transition,
                reverse.num_levels,
                reference=path,
                use_reference=use_reference,
                ess_threshold=threshold,
                keep_paths=True,
            )
            pick = random.categorical(key_pick, log_w)
            return smc.trace_path(pick, levels, ancestors), info

        return sweep

    def _sample_smc(self, state, model_args, model_kwargs):
        reverse = self._reverse
        key, key_sweep, key_latent = random.split(state.rng_key, 3)
        # the first sweep is a plain one: the starting value of the score
        # sites (init_params, or NumPyro's init strategy) is no draw of the
        # reverse diffusion, and as a reference it can hold every later sweep
        path, info = self._sweep(
            key_sweep,
            state.z,
            state.path,
            state.num_diverging < state.i,  # a sweep has succeeded
            model_args,
            model_kwargs,
        )
        finite = info.first_bad < 0
        z = reverse.with_value(state.z, reverse.final_value(path[-1]))
        finite = finite & jnp.all(jnp.isfinite(reverse.flat_value(z)))
        report = (~finite & (state.num_diverging == 0), info.first_bad)
        path = jnp.where(finite, path, state.path)
        z = jax.tree.map(lambda new, old: jnp.where(finite, new, old), z, state.z)
        z, accept, adapt = self._latent_update(
            key_latent, state, z, model_args, model_kwargs
        )
        pe = self._potential_fn_gen(0.0, *model_args, **model_kwargs)(z)
        # the running mean of each level's ESS in this phase
        phase_start = jnp.where(state.i < self._num_warmup, 0, self._num_warmup)
        count = state.i - phase_start + 1
        mean_ess = jnp.where(
            count == 1, info.ess, state.mean_ess + (info.ess - state.mean_ess) / count
        )
        new = ScorePosteriorState(
            state.i + 1,
            z,
            pe,
            ~finite,
            state.num_diverging + (~finite).astype(jnp.int32),
            key,
            path,
            info.ess,
            mean_ess,
            accept,
            adapt,
        )
        return new, report

    def _latent_update(self, rng_key, state, z, model_args, model_kwargs):
        """``latent_steps`` MALA steps on the other latent sites, the score
        sites fixed; the step size and a diagonal mass matrix adapted in
        warm-up."""
        reverse = self._reverse
        others = reverse.others(z)
        if others is None:
            return z, state.accept_prob, state.adapt_state
        potential = self._potential_fn_gen(0.0, *model_args, **model_kwargs)

        def U(flat):
            return potential(reverse.with_others(z, flat))

        adapt = state.adapt_state
        metric = Metric(adapt.inverse_mass_matrix, adapt.mass_matrix_sqrt_inv)

        def step(current, key):
            new, info = langevin_step(key, current, U, adapt.step_size, metric)
            return new, info.accept_prob

        current, accepts = jax.lax.scan(
            step,
            langevin.init(others, U),
            random.split(rng_key, self._latent_steps),
        )
        accept = jnp.mean(accepts)
        _, wa_update = self._latent_adapter()
        adapt = jax.lax.cond(
            state.i < self._num_warmup,
            lambda a: wa_update(state.i, accept[None], current.position[None], a),
            identity,
            adapt,
        )
        return reverse.with_others(z, current.position), accept, adapt

    def _warn_collapse(self, i, mean_ess):
        since = int(i) - self._num_warmup
        mean_ess = np.asarray(mean_ess).reshape(-1, self._sigmas.shape[0]).mean(0)
        particles = mean_ess * self._num_particles
        level = int(np.argmin(particles))
        if particles[level] >= 1.5:
            return
        phase = "warm-up" if since <= 0 else "sampling"
        warnings.warn(
            f"ScorePosterior: the SMC weights collapse at noise level {level + 1} "
            f"of {particles.size} (sigma = {float(self._sigmas[level]):.4g}): "
            f"{particles[level]:.2f} effective particles of {self._num_particles} on "
            f"average in {phase}, so the sweeps mostly keep the previous draw and "
            "the chain mixes slowly. Raise `num_particles` (or `num_levels`); the "
            "sample stat `ess` holds each level's figure.",
            RuntimeWarning,
            stacklevel=2,
        )

    def log_evidence(
        self,
        rng_key,
        *model_args,
        num_particles=1024,
        num_runs=None,
        posterior_samples=None,
        **model_kwargs,
    ):
        """An estimate of ``log p(y)`` (the evidence) with its standard error.

        Each run is a plain SMC sweep of ``num_particles`` particles (the
        ``method="smc"`` sweep without a reference), which estimates without
        bias (Del Moral 2004) the model's density of the data given its other
        latent sites, under the prior's law as defined above, times their
        prior density. When the score sites are the only latent sites, that
        is ``p(y)`` itself; ``num_runs`` (default 8) runs are averaged.
        Otherwise the other sites are integrated by importance sampling
        (pseudo-marginal, still unbiased): each of ``num_runs`` (default 64)
        runs draws their unconstrained values from a multivariate Student t
        (5 degrees of freedom, covariance 1.5 times that of
        ``posterior_samples``, e.g. ``mcmc.get_samples()``) and weighs its
        sweep's estimate by the proposal's density. Returns :data:`Evidence`:
        the log of the mean estimate and its standard error (delta method).

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import numpyro, numpyro.distributions as dist
            >>> import numpyro_ebm as ne
            >>> score = lambda x, sigma: -x / (1.0 + sigma**2)  # prior N(0, I)
            >>> def model(y):
            ...     x = numpyro.sample("x", ne.ScoreDistribution(
            ...         score, (1,), jnp.geomspace(5.0, 0.01, 10)))
            ...     numpyro.sample("y", dist.Normal(x, 0.5).to_event(1), obs=y)
            >>> ev = ne.ScorePosterior(model).log_evidence(
            ...     jax.random.key(0), jnp.array([1.0]))
            >>> exact = float(dist.Normal(0.0, jnp.sqrt(1.25)).log_prob(1.0))
            >>> bool(abs(ev.log_evidence - exact) < 0.05), bool(ev.stderr < 0.05)
            (True, True)
        """
        num_particles = validation.positive_integer("num_particles", num_particles)
        if num_runs is not None:
            num_runs = validation.positive_integer("num_runs", num_runs)
            if num_runs < 2:
                raise ValueError(
                    f"`num_runs` must be at least 2 for a standard error (got {num_runs})."
                )
        if not is_prng_key(rng_key):
            raise ValueError("`rng_key` must be one JAX PRNG key.")
        if not validation.is_concrete(
            (rng_key, model_args, model_kwargs, posterior_samples)
        ):
            raise ValueError(
                "ScorePosterior.log_evidence returns Python floats: call it outside "
                "jax.jit (its sweeps are compiled inside)."
            )
        key_model, key_runs, key_proposal = random.split(rng_key, 3)
        record, params_info, potential_fn_gen, _ = self._setup(
            key_model, model_args, model_kwargs
        )
        self._settings(record)
        reverse = _ReversePath(
            record,
            record[next(iter(record))].sigmas,
            self._num_levels,
            potential_fn_gen,
        )
        z = params_info[0]
        proposal = None
        if reverse.others(z) is not None:
            proposal = self._latent_proposal(
                record, z, posterior_samples, model_args, model_kwargs
            )
        num_runs = num_runs or (8 if proposal is None else 64)
        guidance, anneal = self._guidance, self._anneal_likelihood
        threshold = self._ess_threshold

        @jax.jit
        def runs(keys, others, model_args, model_kwargs):
            def one(inputs):
                key, theta = inputs
                key_init, key_smc = random.split(key)
                at = z if theta is None else reverse.with_others(z, theta)
                evaluate, transition = reverse.feynman_kac(
                    at, model_args, model_kwargs, guidance=guidance, anneal=anneal
                )
                _, _, info = smc.gaussian_path_smc(
                    key_smc,
                    reverse.initial(key_init, num_particles),
                    evaluate,
                    transition,
                    reverse.num_levels,
                    ess_threshold=threshold,
                )
                return info.log_evidence, info.first_bad

            return jax.lax.map(one, (keys, others))

        others, log_q = None, 0.0
        if proposal is not None:
            others = proposal.sample(key_proposal, (num_runs,))
            log_q = np.asarray(proposal.log_prob(others), np.float64)
        logs, bad = runs(
            random.split(key_runs, num_runs), others, model_args, model_kwargs
        )
        logs, bad = np.asarray(logs, np.float64) - log_q, np.asarray(bad)
        if np.any(bad >= 0):
            level = int(bad[bad >= 0][0])
            raise FloatingPointError(
                "ScorePosterior.log_evidence: a sweep went non-finite at noise level "
                f"{level + 1} of {reverse.num_levels} (sigma = "
                f"{float(reverse.levels[level]):.4g}): the score or the likelihood "
                "returned NaN there, or every particle's weight was zero."
            )
        top = logs.max()
        w = np.exp(logs - top)
        mean = w.mean()
        stderr = w.std(ddof=1) / np.sqrt(num_runs) / mean
        return Evidence(float(top + np.log(mean)), float(stderr), logs)

    def _latent_proposal(self, record, z, posterior_samples, model_args, model_kwargs):
        """The importance proposal of the other latent sites' unconstrained
        values: a multivariate Student t fitted to ``posterior_samples``."""
        names = sorted(set(z) - set(record))
        if posterior_samples is None:
            raise ValueError(
                "ScorePosterior.log_evidence: the model has latent sites other than "
                f"its score priors ({', '.join(map(repr, names))}); pass their "
                "posterior draws, posterior_samples=mcmc.get_samples(), to integrate "
                "them by importance sampling."
            )
        missing = [n for n in names if n not in posterior_samples]
        if missing:
            raise ValueError(
                "ScorePosterior.log_evidence: `posterior_samples` lacks the latent "
                f"sites {', '.join(map(repr, missing))}."
            )
        draws = {n: jnp.asarray(posterior_samples[n]) for n in names}
        count = {int(v.shape[0]) if v.ndim else 0 for v in draws.values()}
        if len(count) != 1 or min(count) < 2:
            raise ValueError(
                "ScorePosterior.log_evidence: `posterior_samples` must hold the same "
                "number (at least 2) of draws of every site, along the first axis."
            )
        for n, v in draws.items():
            if v.shape[1:] != jnp.shape(z[n]):
                raise ValueError(
                    f"ScorePosterior.log_evidence: the draws of '{n}' have shape "
                    f"{v.shape[1:]} each, the site {jnp.shape(z[n])}."
                )
            if not bool(jnp.all(jnp.isfinite(v))):
                raise ValueError(
                    f"ScorePosterior.log_evidence: the draws of '{n}' are not all "
                    "finite."
                )
        model = self._annealed_model({})
        scores = {n: z[n] for n in record}

        def unconstrained(one):
            values = unconstrain_fn(
                model, (0.0, *model_args), model_kwargs, {**scores, **one}
            )
            return ravel_pytree({n: values[n] for n in names})[0]

        flat = np.asarray(jax.vmap(unconstrained)(draws), np.float64)
        mean = flat.mean(0)
        cov = np.atleast_2d(np.cov(flat, rowvar=False)) * 1.5
        cov = cov + 1e-8 * np.eye(cov.shape[0]) * max(np.trace(cov), 1e-12)
        return dist.MultivariateStudentT(
            5.0, jnp.asarray(mean), jnp.linalg.cholesky(jnp.asarray(cov))
        )

    # ------------------------------------------------------- annealed pass
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

    def _sample_one(self, state, model_args, model_kwargs):
        key, key_pass = random.split(state.rng_key)
        z, bad_level = self._pass(key_pass, state.z, model_args, model_kwargs)
        pe = self._potential_fn_gen(0.0, *model_args, **model_kwargs)(z)
        finite = jnp.isfinite(pe) & (bad_level < 0)
        # the first discarded pass of a chain says where it went non-finite
        report = (~finite & (state.num_diverging == 0), bad_level)
        z = jax.tree.map(lambda new, old: jnp.where(finite, new, old), z, state.z)
        pe = jnp.where(finite, pe, state.potential_energy)
        new = ScorePosteriorState(
            state.i + 1,
            z,
            pe,
            ~finite,
            state.num_diverging + (~finite).astype(jnp.int32),
            key,
        )
        return new, report

    def _warn_diverged(self, report, i, level):
        report, i, level = (np.ravel(np.asarray(v)) for v in (report, i, level))
        if not report.any():
            return
        first = int(np.argmax(report))
        i, level = int(i[first % i.size]), int(level[first % level.size])
        sigmas = self._sigmas
        if self._method == "smc":
            where = (
                f"at noise level {level + 1} of {sigmas.shape[0]} (sigma = "
                f"{float(sigmas[level]):.4g})"
                if 0 <= level < sigmas.shape[0]
                else "at the prior's value"
            )
            warnings.warn(
                f"ScorePosterior: the SMC sweep at iteration {i} went non-finite "
                f"{where}: the score or the likelihood returned NaN or infinity "
                "there, or every particle's weight was zero. The draw is discarded "
                "(sample stat `diverging`) and the previous one kept.",
                RuntimeWarning,
                stacklevel=2,
            )
            return
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


def _gaussian_start(prior, sigma, num_draws=1024, num_iterations=8):
    """The start law of a score site's reverse diffusion: the Gaussian with
    the prior's mean and per-coordinate variance at the first level
    ``sigma``, which the score gives through Tweedie's formula: for ``x`` of
    that law, ``x0 = x + sigma^2 s(x, sigma)`` has the data's mean ``m`` and,
    where the law at ``sigma`` is near Gaussian, per-coordinate variance
    ``c^2 / (c + sigma^2)`` for the data's variance ``c``. Solved for ``m``
    and ``c`` by a fixed-point iteration on ``num_draws`` draws of a fixed
    key, so that the prior's law is a function of its score alone. Returns
    the flat ``(mean, sd)`` of ``N(m, (sigma^2 + c) I)``; for data of spread
    far below ``sigma`` it is ``N(0, sigma^2 I)``'s close neighbour."""
    size = int(np.prod(prior.event_shape, dtype=int))
    z = random.normal(random.key(0), (num_draws, size))
    sigma = jnp.asarray(sigma, jnp.result_type(float))

    @jax.jit
    def update(carry, _):
        mean, var = carry
        x = mean + jnp.sqrt(sigma**2 + var) * z
        scores = prior.score_fn(x.reshape(num_draws, *prior.event_shape), sigma)
        denoised = x + sigma**2 * scores.reshape(num_draws, size)
        spread = jnp.var(denoised, 0)
        var = 0.5 * (spread + jnp.sqrt(spread**2 + 4 * spread * sigma**2))
        return (jnp.mean(denoised, 0), var), None

    start = (jnp.zeros(size), jnp.zeros(size))
    (mean, var), _ = jax.lax.scan(update, start, None, length=num_iterations)
    if not bool(jnp.all(jnp.isfinite(mean) & jnp.isfinite(var))):
        return jnp.zeros(size), jnp.full(size, sigma)
    return mean, jnp.sqrt(sigma**2 + var)


def _check_observations(model, rng_key, init_strategy, model_args, model_kwargs):
    """Every observation site needs a log density and finite observed values
    (where they are concrete): name the site that has neither."""
    traced = trace(
        substitute(seed(model, rng_key), substitute_fn=init_strategy)
    ).get_trace(0.0, *model_args, **model_kwargs)
    for name, site in traced.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        value = site["value"]
        masked = isinstance(site["fn"], MaskedDistribution)
        if (
            not masked
            and validation.is_concrete(value)
            and not np.all(np.isfinite(np.asarray(value, dtype=np.float64)))
        ):
            raise ValueError(
                f"ScorePosterior: the observation site '{name}' has non-finite "
                "observed values (NaN or infinity); mask them out or drop them."
            )
        try:
            site["fn"].log_prob(value)
        except NotImplementedError:
            raise ValueError(
                f"ScorePosterior: the observation site '{name}' has a "
                f"{type(site['fn']).__name__}, which has no log_prob; the likelihood "
                "of every observation site must have a log density."
            ) from None


def _initial(prior, rng_key):
    """A pass's start: a draw of the prior's ``init_dist``, by default
    ``N(0, sigma_1^2 I)``."""
    if prior.init_dist is not None:
        return prior.init_dist.sample(rng_key)
    return prior.sigmas[0] * random.normal(rng_key, prior.event_shape)
