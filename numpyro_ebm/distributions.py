"""Distributions whose density is an unnormalised neural energy, or a score."""

import copy
import functools
import math
import sys
import warnings

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.distributions import constraints

from numpyro_ebm.core import validation
from numpyro_ebm.core.annealed import check_sigmas, noise_annealed_langevin
from numpyro_ebm.core.compiled import as_pure
from numpyro_ebm.core.pooled import pooled_langevin, warn_if_not_mixed

__all__ = ["EnergyDistribution", "ScoreDistribution"]

CONTRASTIVE_STEPS = 200  # the stopping rule's least: two rounds of 100


def _standard_normal(event_shape):
    return dist.Normal(jnp.zeros(event_shape), 1.0).to_event(len(event_shape))


class EnergyDistribution(dist.Distribution):
    """An unnormalised density ``exp(-E(x))`` (times an optional base density).

    ``log_prob(x) = -energy_fn(x) (+ base_dist.log_prob(x))`` — correct up to
    the unknown constant ``log Z``, which is all MCMC needs, so the distribution
    can be the prior of a latent site in a NumPyro model sampled by
    :class:`~numpyro_ebm.MALA` or NUTS. Register a Flax NNX energy in the model
    with :func:`numpyro.contrib.module.nnx_module` and pass the returned
    callable as ``energy_fn``.

    ``sample()`` runs one Langevin chain per requested draw (the core's
    shared step), started from ``base_dist`` — or ``init_dist``, by default
    ``N(0, I)``. By default the chains are Metropolis-adjusted (MALA, exact
    in the limit), their common step size is tuned during a burn-in of
    ``num_warmup`` steps on the acceptance rate pooled over all chains, and
    they then run until their mean energy stops moving (see
    :func:`~numpyro_ebm.core.pooled.pooled_langevin` for the rule); a
    warning says so when the rule is not met. This is accurate for
    well-conditioned energies of any scale; draws of a multimodal energy may
    still miss modes the chains never cross to. Draw many samples at once:
    the tuning and the rule use every chain, and need at least 8.

    Args:
        energy_fn: maps ``x`` of shape ``batch_shape + event_shape`` (with any
            leading sample dimensions) to energies of shape ``batch_shape``.
        event_shape: shape of one draw, e.g. ``(2,)``.
        base_dist: optional base density with this ``event_shape`` (e.g.
            ``dist.Normal(0, 1).expand([d]).to_event(1)``, as in latent EBM
            priors); it also starts the sampling chains.
        batch_shape: batch shape of the energies.
        num_steps: sampling steps after the burn-in; ``None`` (default) runs
            until the stopping rule is met.
        step_size: a fixed Langevin step size (``x' = x - h grad E + sqrt(2h)
            xi``); ``None`` (default) tunes it.
        num_warmup: burn-in steps (default 200 when tuning, else 0).
        target_accept_prob: acceptance rate the tuning aims for.
        init_dist: law of the chains' starting points when there is no
            ``base_dist`` (default standard normal).
        adjusted: Metropolis-adjust each step (MALA, the default); ULA with
            ``False``.
        contrastive: make ``log_prob``'s gradient in the energy's parameters
            that of the normalised density (see :meth:`log_prob`), for
            learning the energy inside a model.
        num_contrastive_samples: prior draws for the contrastive term. They
            come from ``num_steps`` steps after the burn-in (200 when
            ``num_steps`` is ``None``), without the stopping rule and without
            its warning, which would run inside every gradient; check them
            with :meth:`sample_with_diagnostics` and these settings.
        rng_key: key for those draws (default: ``numpyro.prng_key()`` when the
            distribution is built inside a seeded model).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> energy = lambda x: 0.5 * jnp.sum((x - 1.0) ** 2, -1)
        >>> def model():
        ...     numpyro.sample("z", ne.EnergyDistribution(energy, (2,)))
        >>> mcmc = MCMC(ne.MALA(model), num_warmup=200, num_samples=500,
        ...             progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> mcmc.get_samples()["z"].shape
        (500, 2)

    References:
        LeCun et al. (2006), *A tutorial on energy-based learning*. Du &
        Mordatch (2019), *Implicit generation and generalization in
        energy-based models*, NeurIPS.
    """

    arg_constraints = {}
    pytree_data_fields = ("base_dist", "init_dist", "rng_key")
    pytree_aux_fields = (
        "energy_fn",
        "num_steps",
        "step_size",
        "num_warmup",
        "target_accept_prob",
        "adjusted",
        "contrastive",
        "num_contrastive_samples",
    )

    def __init__(
        self,
        energy_fn,
        event_shape,
        base_dist=None,
        *,
        batch_shape=(),
        num_steps=None,
        step_size=None,
        num_warmup=None,
        target_accept_prob=0.574,
        init_dist=None,
        adjusted=True,
        contrastive=False,
        num_contrastive_samples=64,
        rng_key=None,
        validate_args=None,
    ):
        if not callable(energy_fn):
            raise ValueError("`energy_fn` must be callable: x -> energies.")
        event_shape = tuple(event_shape)
        batch_shape = tuple(batch_shape)
        if num_steps is not None:
            num_steps = validation.positive_integer("num_steps", num_steps)
        if step_size is not None:
            validation.positive("step_size", step_size)
        if num_warmup is not None:
            num_warmup = validation.non_negative_integer("num_warmup", num_warmup)
        validation.probability("target_accept_prob", target_accept_prob)
        for name, d in (("base_dist", base_dist), ("init_dist", init_dist)):
            if d is not None and tuple(d.event_shape) != event_shape:
                raise ValueError(
                    f"`{name}` has event_shape {tuple(d.event_shape)} but the "
                    f"distribution's is {event_shape}; use `.to_event(...)` or "
                    "`.expand(...)` to match."
                )
        self.energy_fn = energy_fn
        self.base_dist = base_dist
        self.init_dist = init_dist
        self.num_steps = num_steps
        self.step_size = step_size
        self.num_warmup = num_warmup
        self.target_accept_prob = target_accept_prob
        self.adjusted = adjusted
        self.contrastive = contrastive
        if contrastive:
            num_contrastive_samples = validation.positive_integer(
                "num_contrastive_samples", num_contrastive_samples
            )
        self.num_contrastive_samples = num_contrastive_samples
        if contrastive and rng_key is None:
            # built inside a seeded model: take a key now, log_prob runs later
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                rng_key = numpyro.prng_key()
        self.rng_key = rng_key
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def log_prob(self, value):
        """Unnormalised log density ``-E(value) (+ base log density)``.

        With ``contrastive=True`` a term whose value is 0 and whose gradient in
        the energy's parameters is ``E_p[grad E]`` is added, estimated with
        ``num_contrastive_samples`` Langevin draws from the distribution
        itself: the gradient of ``log_prob`` is then that of the normalised
        log density, ``-grad E(value) - grad log Z``, so learners that
        differentiate ``log_prob`` (SVI, SOUL, PGD, ...) train the energy
        correctly (Pang et al. 2020).
        """
        log_prob = self._unnormalised_log_prob(value)
        if self.contrastive:
            log_prob = log_prob + self._contrastive_term()
        return log_prob

    def _unnormalised_log_prob(self, value):
        energy = self.energy_fn(value)
        expected = jnp.shape(value)[: jnp.ndim(value) - len(self.event_shape)]
        if jnp.shape(energy) != expected:
            # a broadcast energy silently changes the target (e.g. (n, 1)
            # against a base density of shape (n,) sums n copies)
            raise ValueError(
                f"`energy_fn` must map points of shape {jnp.shape(value)} to "
                f"energies of shape {expected} (one per point), got "
                f"{jnp.shape(energy)}."
            )
        log_prob = -energy
        if self.base_dist is not None:
            log_prob = log_prob + self.base_dist.log_prob(value)
        return log_prob

    def _contrastive_term(self):
        key = self.rng_key
        if key is None:
            raise ValueError(
                "a contrastive EnergyDistribution needs a random key for its prior "
                "samples: pass `rng_key=` or use it inside a seeded NumPyro model."
            )
        # a fixed number of steps (the stopping rule's least, when
        # num_steps is not given), unchecked: no loop of unknown length and no
        # call back to the host inside every gradient
        steps = self.num_steps or CONTRASTIVE_STEPS
        draws, _ = self._draws(key, (self.num_contrastive_samples,), steps)
        draws = jax.lax.stop_gradient(draws)
        energy = jnp.mean(self.energy_fn(draws), 0)
        return energy - jax.lax.stop_gradient(energy)

    def log_normalizer(self, rng_key, num_samples=100_000):
        """Monte Carlo estimate of ``log Z`` and its standard error.

        ``Z = E_{base}[exp(-E(x))]`` is estimated by importance sampling from
        ``base_dist`` (needed: an energy without a base density has no
        reference law to sample from). Then ``log_prob(x) - log Z`` is the
        normalised log density, e.g. for an importance-sampled marginal
        likelihood (:func:`~numpyro_ebm.importance_log_likelihood`). The
        standard error is the delta-method one, ``sd(w) / (sqrt(S) mean(w))``
        for weights ``w = exp(-E)``; ``log Z`` is biased low by about half its
        square (Jensen), negligible when it is small.

        Args:
            rng_key: a JAX key.
            num_samples: draws from ``base_dist``.

        Returns:
            ``(log_z, standard_error)``, arrays of the distribution's batch shape.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import numpyro.distributions as dist
            >>> import numpyro_ebm as ne
            >>> base = dist.Normal(jnp.zeros(2), 1.0).to_event(1)
            >>> d = ne.EnergyDistribution(lambda x: 0.5 * jnp.sum(x**2, -1), (2,), base)
            >>> log_z, se = d.log_normalizer(jax.random.key(0))
            >>> bool(abs(log_z - jnp.log(0.5)) < 4 * se)  # exact: log(1/2)
            True
        """
        if self.base_dist is None:
            raise ValueError(
                "log_normalizer needs a `base_dist` to importance-sample from; "
                "without one, estimate Z on a grid (grid_log_likelihood) or give "
                "the energy a base density."
            )
        num_samples = validation.positive_integer("num_samples", num_samples)
        draws = self.base_dist.expand(self.batch_shape).sample(rng_key, (num_samples,))
        log_w = -self.energy_fn(draws)
        log_z = jax.scipy.special.logsumexp(log_w, 0) - math.log(num_samples)
        w = jnp.exp(log_w - log_z)  # mean 1
        return log_z, jnp.std(w, 0) / math.sqrt(num_samples)

    def potential(self, value):
        """``-log_prob`` summed over batch dimensions: the Langevin potential."""
        return -jnp.sum(self._unnormalised_log_prob(value))

    def sample(self, key, sample_shape=()):
        """Draws by Langevin chains, one chain per draw (see the class notes).

        Warns (also under ``jax.jit``) when the chains' stopping rule was not
        met; :meth:`sample_with_diagnostics` returns the figures.
        """
        draws, info = self.sample_with_diagnostics(key, sample_shape)
        warn_if_not_mixed(info, "EnergyDistribution.sample's chains")
        return draws

    def sample_with_diagnostics(self, key, sample_shape=()):
        """``(draws, info)``: the draws and their chains' :class:`~numpyro_ebm.core.pooled.PooledInfo`.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> import numpyro_ebm as ne
            >>> d = ne.EnergyDistribution(lambda x: jnp.sum(x**2, -1) / 8.0, (2,))
            >>> x, info = d.sample_with_diagnostics(jax.random.key(0), (1000,))
            >>> bool(info.converged), round(float(x.var()), 0)  # variance 4
            (True, 4.0)
        """
        sample_shape = tuple(int(n) for n in sample_shape)
        apply, state = as_pure(self.energy_fn)
        bare = copy.copy(self)
        bare.energy_fn = None
        # a plain function's captured arrays, found once by as_pure
        captured = getattr(apply, "arrays", ())
        eager = validation.is_concrete((key, jax.tree.leaves(bare), state, captured))
        if eager:
            try:  # one compiled program per distribution and shape
                hash(jax.tree.structure(bare))
            except TypeError:  # e.g. an array among the settings
                eager = False
        if eager:
            return _compiled_draws(bare, state, key, apply, sample_shape)
        return self._draws(key, sample_shape)

    def _draws(self, key, sample_shape, num_steps=None):
        key_init, key_chain = random.split(key)
        start_dist = (
            self.base_dist or self.init_dist or _standard_normal(self.event_shape)
        )
        shape = tuple(sample_shape) + self.batch_shape
        init = (
            start_dist.expand(shape).sample(key_init)
            if shape
            else start_dist.sample(key_init)
        )
        if init.shape != shape + self.event_shape:
            init = jnp.broadcast_to(init, shape + self.event_shape)
        # one chain per sample; a chain's position holds its batch members
        chains = init.reshape((-1,) + self.batch_shape + self.event_shape)
        draws, info = pooled_langevin(
            key_chain,
            self.potential,
            chains,
            num_warmup=self.num_warmup,
            num_steps=self.num_steps if num_steps is None else num_steps,
            step_size=self.step_size,
            adjusted=self.adjusted,
            target_accept_prob=self.target_accept_prob,
        )
        return draws.reshape(init.shape), info


@functools.partial(jax.jit, static_argnums=(3, 4))
def _compiled_draws(bare, state, key, apply, sample_shape):
    """:meth:`EnergyDistribution.sample_with_diagnostics` outside a trace:
    compiled once per distribution's settings, energy and shape, the energy's
    parameters an argument (so an eager call does not compile its chains
    again)."""
    distribution = copy.copy(bare)
    distribution.energy_fn = functools.partial(apply, state)
    return distribution._draws(key, sample_shape)


def _site_name(distribution):
    """The name of the model site being scored with ``distribution``, read
    from the caller that holds it (NumPyro's ``log_density`` and ELBOs loop
    over ``site`` dicts); ``None`` when no caller holds one."""
    frame = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            return None
        site = frame.f_locals.get("site")
        if isinstance(site, dict) and "name" in site:
            fn = site.get("fn")
            while fn is not None:
                if fn is distribution:
                    return site["name"]
                fn = getattr(fn, "base_dist", None)
        frame = frame.f_back
    return None


class ScoreDistribution(dist.Distribution):
    """A law known only through a noise-conditional score ``s(x, sigma)``.

    Sampling runs :func:`~numpyro_ebm.noise_annealed_langevin` over ``sigmas`` from
    ``init_dist`` (default ``N(0, sigma_1^2 I)``, the law of data drowned in the
    largest noise). There is no ``log_prob``: a score determines the density
    only up to a constant that cannot be computed from it. As the prior of a
    latent site it needs :class:`~numpyro_ebm.ScorePosterior`, which samples
    the posterior from the score alone; NUTS, MALA and SVI, which need a
    density, refuse such a model with a ``ValueError`` naming the site.

    ``sample`` (and so ``numpyro.infer.Predictive``) approximates the law
    smoothed by ``sigma_L`` by annealed Langevin. The posterior that
    ``ScorePosterior`` samples is defined by the law of the score's reverse
    diffusion over its ``num_levels`` levels, another approximation of the
    same smoothed law; for prior draws of exactly that law (e.g. for
    simulation-based calibration), use :func:`~numpyro_ebm.reverse_diffusion`
    with those levels.

    Args:
        score_fn: ``s(x, sigma)`` for ``x`` of shape ``(n,) + event_shape``.
        event_shape: shape of one draw.
        sigmas: decreasing positive noise levels.
        step_size: ``eps`` of annealed Langevin (``a_i = eps sigma_i^2 / sigma_L^2``).
        num_steps_per_level: Langevin steps per noise level.
        init_dist: law of the starting points.
        denoise: finish with the Tweedie denoising step.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro_ebm as ne
        >>> score = lambda x, sigma: -x / (1.0 + sigma**2)
        >>> d = ne.ScoreDistribution(score, (2,), sigmas=jnp.array([3.0, 1.0, 0.3]))
        >>> d.sample(jax.random.key(0), (10,)).shape
        (10, 2)

    References:
        Song & Ermon (2019), *Generative modeling by estimating gradients of
        the data distribution*, NeurIPS.
    """

    arg_constraints = {}
    pytree_data_fields = ("init_dist", "sigmas")
    pytree_aux_fields = (
        "score_fn",
        "step_size",
        "num_steps_per_level",
        "denoise",
    )

    def __init__(
        self,
        score_fn,
        event_shape,
        sigmas,
        *,
        step_size=2e-5,
        num_steps_per_level=100,
        init_dist=None,
        denoise=False,
        validate_args=None,
    ):
        if not callable(score_fn):
            raise ValueError("`score_fn` must be callable: (x, sigma) -> scores.")
        event_shape = tuple(event_shape)
        self.sigmas = check_sigmas(sigmas)
        validation.positive("step_size", step_size)
        num_steps_per_level = validation.positive_integer(
            "num_steps_per_level", num_steps_per_level
        )
        if init_dist is not None and tuple(init_dist.event_shape) != event_shape:
            raise ValueError(
                f"`init_dist` has event_shape {tuple(init_dist.event_shape)}, "
                f"expected {event_shape}."
            )
        self.score_fn = score_fn
        self.step_size = step_size
        self.num_steps_per_level = num_steps_per_level
        self.init_dist = init_dist
        self.denoise = denoise
        super().__init__((), event_shape, validate_args=validate_args)

    @classmethod
    def from_sde(
        cls,
        score_fn,
        sde,
        event_shape,
        *,
        num_levels=50,
        eps=1e-3,
        scale=1.0,
        **kwargs,
    ):
        """The prior of a trained diffusion model: its time-conditional score
        ``s(x, t)`` under the forward SDE ``sde``
        (:mod:`numpyro_ebm.core.sde`), as a noise-conditional score
        (``sde.noise_conditional``) over ``num_levels`` geometric noise levels
        from the noise-to-signal ratio at ``t = 1`` down to that at ``eps``.
        ``scale``: the model was trained on data divided by ``scale``; the
        prior is in the data's units (``sde.noise_conditional(score_fn,
        scale)``, levels ``scale`` times the ratios). The step size defaults to NCSN's ratio, ``step_size = 0.2 sigma_L^2``
        (``2e-5`` at ``sigma_L = 0.01``), so each level's step is a fifth of
        its noise variance. Other keyword arguments are the constructor's.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from numpyro_ebm.core.sde import ve_sde
            >>> sde = ve_sde(0.01, 10.0)
            >>> def exact(x, t):  # data N(0, I)
            ...     mean, std = sde.marginal(t)
            ...     return -x / (mean**2 + std**2)[:, None]
            >>> prior = ScoreDistribution.from_sde(exact, sde, (2,), num_levels=10)
            >>> round(float(prior.sigmas[0]), 2), prior.sigmas.shape
            (10.0, (10,))
        """
        num_levels = validation.positive_integer("num_levels", num_levels)
        eps = float(validation.probability("eps", eps))
        scale = validation.positive("scale", scale)
        top = scale * float(sde.noise_level(1.0))
        bottom = scale * float(sde.noise_level(eps))
        sigmas = jnp.geomspace(top, bottom, num_levels)
        kwargs.setdefault("step_size", 0.2 * bottom**2)
        score = sde.noise_conditional(score_fn, scale)
        return cls(score, event_shape, sigmas, **kwargs)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    def log_prob(self, value):
        name = _site_name(self)
        where = f"The sample site '{name}' has" if name else "This site has"
        raise ValueError(
            f"{where} a ScoreDistribution, which has no log_prob: a score s = "
            "grad log p fixes the density only up to a normalising constant that "
            "cannot be computed from it, so NUTS, MALA, SVI and any sampler that "
            "needs a density cannot run this model. Sample its posterior with "
            "numpyro_ebm.ScorePosterior(model), which needs only the score; or use "
            "an EnergyDistribution (unnormalised log density -E) as the prior."
        )

    def sample(self, key, sample_shape=()):
        key_init, key_run = random.split(key)
        start = self.init_dist or dist.Normal(
            jnp.zeros(self.event_shape), self.sigmas[0]
        ).to_event(len(self.event_shape))
        init = start.sample(key_init, (max(1, math.prod(sample_shape)),))
        x = noise_annealed_langevin(
            key_run,
            self.score_fn,
            init,
            self.sigmas,
            self.step_size,
            self.num_steps_per_level,
            denoise=self.denoise,
        )
        return x.reshape(tuple(sample_shape) + self.event_shape)
