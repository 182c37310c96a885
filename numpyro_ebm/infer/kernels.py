"""Langevin and Metropolis–Hastings kernels for :class:`numpyro.infer.MCMC`."""

import warnings

import jax
import jax.numpy as jnp
from numpyro.infer.initialization import init_to_uniform

from numpyro_ebm.core import schedules, validation
from numpyro_ebm.core.langevin import LangevinState, langevin_step
from numpyro_ebm.core.rwmh import RWMHState, rwmh_step
from numpyro_ebm.infer.base import LangevinKernelBase

__all__ = ["ULA", "MALA", "RWMH", "AnnealedLangevin"]

_POOL_PARAM = """
    :param bool pool_chains: with ``chain_method="vectorized"`` or
        ``chain_method=ne.parallel_chains`` (one chain per device), adapt one
        step size (dual averaging on the chains' mean acceptance) and one mass
        matrix (from every chain's warm-up draws) for all chains, and move
        chains stuck far from the others to other chains' states at the
        window ends of the warm-up's first half
        (:mod:`numpyro_ebm.infer.adaptation`). More
        chains then give a better adaptation in the same warm-up, and
        ``last_state.adapt_state`` holds one mass matrix for all chains.
        ``False`` adapts each chain alone, as ``"sequential"`` and
        ``"parallel"`` chains always do (NumPyro's ``pmap`` names no axis
        through which chains could share)."""

_COMMON_PARAMS = """
    :param model: Python callable containing NumPyro primitives. Its latent
        sites must be continuous; constrained sites are sampled in
        unconstrained space and returned constrained.
    :param potential_fn: Python callable computing the potential energy
        (negative log density) of a pytree of parameters. Exactly one of
        ``model`` and ``potential_fn`` must be given; with ``potential_fn``,
        ``init_params`` must be passed to :meth:`MCMC.run`."""


def _langevin_move(rng_key, state, potential_fn, step_size, metric, **kwargs):
    """One call of the shared Langevin step on a kernel state."""
    new, info = langevin_step(
        rng_key,
        LangevinState(state.z, state.potential_energy, state.z_grad),
        potential_fn,
        step_size,
        metric,
        **kwargs,
    )
    return (*new, info, step_size, {})


class ULA(LangevinKernelBase):
    __doc__ = f"""Unadjusted Langevin algorithm.

    One step is ``z' = z - h A grad U(z) + sqrt(2 h) A^(1/2) xi`` with no
    accept/reject (``A`` the inverse mass matrix). ULA is **biased**: it samples
    a law ``pi_h`` close to but not equal to the target. On a Gaussian
    ``N(0, s^2)`` its stationary law is ``N(0, s^2 / (1 - h / (2 s^2)))``
    (variance inflated by about ``h / (2 s^2)``; unstable for ``h >= 2 s^2``).
    A decreasing ``step_size`` schedule (``h_n -> 0``, ``sum h_n = inf``)
    removes the bias asymptotically; :class:`MALA` removes it exactly.

    Proposals with a non-finite potential or gradient are not taken: the chain
    stays where it is and the iteration is counted as ``diverging``.
    {_COMMON_PARAMS}
    :param step_size: a positive float, a 1-D array of per-iteration step sizes
        (iteration ``k`` of warm-up and sampling together uses entry ``k``;
        the last entry is held after the end; it must cover the warm-up) or a
        callable of the iteration index, e.g.
        :func:`~numpyro_ebm.polynomial_schedule`.
    :param bool adapt_step_size: tune the step size during warm-up by dual
        averaging so that the MALA acceptance probability of the Langevin move
        is ``target_accept_prob``, and sample with it instead of ``step_size``.
        Defaults to ``False``.
    :param bool adapt_mass_matrix: estimate a (diagonal or dense) inverse mass
        matrix from the warm-up draws (Welford windows). Defaults to ``False``.

        Whenever something is adapted, the warm-up runs Metropolis-adjusted
        Langevin steps with a tuned step size (so that trial steps cannot throw
        the chain away and the chain moves at every scale); sampling is
        unadjusted, with ``step_size`` in the units of the adapted metric
        unless ``adapt_step_size=True``. ``accept_prob`` always reports the MALA
        acceptance probability of each move: a gauge of the discretisation
        error (near 1 means a small bias).
    :param float target_accept_prob: acceptance probability aimed at by
        warm-up tuning; higher values mean smaller steps and a smaller bias.
    :param bool dense_mass: dense rather than diagonal mass matrix.
    :param inverse_mass_matrix: initial inverse mass matrix (1-D diagonal, or
        2-D with ``dense_mass=True``); identity by default.
    :param init_strategy: a per-site initialisation function (see NumPyro's
        ``init_strategy``).{_POOL_PARAM}

    **Example**

    .. doctest::

        >>> import jax
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> def model():
        ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
        >>> mcmc = MCMC(ne.ULA(model, step_size=0.05), num_warmup=100,
        ...             num_samples=200, progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> mcmc.get_samples()["x"].shape
        (200,)

    **References**

    1. Roberts & Tweedie (1996), *Exponential convergence of Langevin
       distributions and their discrete approximations*, Bernoulli 2(4).
    2. Durmus & Moulines (2017), *Nonasymptotic convergence analysis for the
       unadjusted Langevin algorithm*, Ann. Appl. Probab. 27(3).
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        adapt_step_size=False,
        adapt_mass_matrix=False,
        dense_mass=False,
        target_accept_prob=0.9,
        inverse_mass_matrix=None,
        init_strategy=init_to_uniform,
        pool_chains=True,
    ):
        if step_size is None:
            raise ValueError(
                "ULA needs `step_size` (a float, array or callable schedule); with "
                "`adapt_step_size=True` it is the initial value of the tuning."
            )
        self._keep_adapted_step_size = bool(adapt_step_size)
        super().__init__(
            model,
            potential_fn,
            step_size=validation.schedule("step_size", step_size),
            # mass-matrix adaptation needs a tuned warm-up step (see docstring)
            adapt_step_size=bool(adapt_step_size or adapt_mass_matrix),
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            inverse_mass_matrix=inverse_mass_matrix,
            init_strategy=init_strategy,
            pool_chains=pool_chains,
        )

    def _check_init(self, num_warmup):
        validation.schedule_length(
            "step_size", self._step_size, num_warmup, what="the warm-up alone"
        )

    def _transition(self, rng_key, state, potential_fn, metric):
        step_size = schedules.evaluate(self._step_size, state.i)
        adjusted = False
        if self._adapt_step_size:
            # tuning warm-up: Metropolis-adjusted, so that trial step sizes
            # cannot throw the chain out of the typical set
            adjusted = state.i < self._num_warmup
            if self._keep_adapted_step_size:
                step_size = state.adapt_state.step_size
            else:
                step_size = jnp.where(adjusted, state.adapt_state.step_size, step_size)
        return _langevin_move(
            rng_key, state, potential_fn, step_size, metric, adjusted=adjusted
        )


class MALA(LangevinKernelBase):
    __doc__ = f"""Metropolis-adjusted Langevin algorithm, preconditioned and adaptive.

    The ULA move ``z' = z - h A grad U(z) + sqrt(2 h) A^(1/2) xi`` is a
    Metropolis–Hastings proposal, so the chain targets the posterior exactly.
    During warm-up the step size ``h`` is tuned by dual averaging towards
    ``target_accept_prob`` (0.574 is optimal for MALA, Roberts & Rosenthal
    1998) and the inverse mass matrix ``A`` is estimated in Welford windows
    (Stan's schedule, as :func:`numpyro.infer.hmc_util.warmup_adapter` runs
    it), pooled over vectorized chains and, when dense, shrunk towards the
    previous estimate (:mod:`numpyro_ebm.infer.adaptation`).

    Step-size convention: ``h`` is BlackJAX MALA's ``step_size``; TFP's
    ``step_size`` is ``2 h``; NumPyro ``HMC(num_steps=1, step_size=eps)`` is
    MALA with ``h = eps**2 / 2``.
    {_COMMON_PARAMS}
    :param float step_size: initial step size ``h``.
    :param bool adapt_step_size: tune ``h`` during warm-up.
    :param bool adapt_mass_matrix: estimate ``A`` during warm-up.
    :param bool dense_mass: dense rather than diagonal mass matrix.
    :param float target_accept_prob: acceptance rate that step-size
        adaptation aims for.
    :param inverse_mass_matrix: initial inverse mass matrix (1-D diagonal, or
        2-D with ``dense_mass=True``); identity by default.
    :param init_strategy: a per-site initialisation function.{_POOL_PARAM}

    **Example**

    .. doctest::

        >>> import jax
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> def model():
        ...     numpyro.sample("scale", dist.HalfNormal(1.0))
        >>> mcmc = MCMC(ne.MALA(model), num_warmup=200, num_samples=200,
        ...             progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> bool((mcmc.get_samples()["scale"] > 0).all())
        True

    **References**

    1. Roberts & Tweedie (1996), *Exponential convergence of Langevin
       distributions and their discrete approximations*, Bernoulli 2(4).
    2. Roberts & Rosenthal (1998), *Optimal scaling of discrete approximations
       to Langevin diffusions*, JRSS B 60(1).
    3. Hoffman & Gelman (2014), *The No-U-Turn Sampler* (dual averaging).
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=1.0,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        dense_mass=False,
        target_accept_prob=0.574,
        inverse_mass_matrix=None,
        init_strategy=init_to_uniform,
        pool_chains=True,
    ):
        validation.positive("step_size", step_size)
        super().__init__(
            model,
            potential_fn,
            step_size=step_size,
            adapt_step_size=adapt_step_size,
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            inverse_mass_matrix=inverse_mass_matrix,
            init_strategy=init_strategy,
            pool_chains=pool_chains,
        )

    def _transition(self, rng_key, state, potential_fn, metric):
        return _langevin_move(
            rng_key,
            state,
            potential_fn,
            state.adapt_state.step_size,
            metric,
            adjusted=True,
        )


class RWMH(LangevinKernelBase):
    __doc__ = f"""Random-walk and general Metropolis–Hastings.

    Without ``proposal`` the move is ``z' = z + sqrt(h) A^(1/2) xi`` (a
    Gaussian random walk with covariance ``h A``), with ``h`` tuned by dual
    averaging towards ``target_accept_prob`` (0.234 is optimal in high
    dimension, Roberts, Gelman & Gilks 1997) and ``A`` estimated during
    warm-up. It needs no gradient.

    With ``proposal`` any Metropolis–Hastings kernel is obtained:
    ``proposal(rng_key, z) -> (z_new, log_proposal_ratio)`` where
    ``log_proposal_ratio = log q(z | z_new) - log q(z_new | z)`` (0 for a
    symmetric proposal), both in the unconstrained space of the model. The
    step size and mass matrix are then unused and not adapted.
    {_COMMON_PARAMS}
    :param float step_size: initial random-walk variance scale ``h``.
    :param callable proposal: optional user proposal (see above).
    :param bool adapt_step_size: tune ``h`` during warm-up.
    :param bool adapt_mass_matrix: estimate ``A`` during warm-up.
    :param bool dense_mass: dense rather than diagonal mass matrix.
    :param float target_accept_prob: acceptance rate that step-size
        adaptation aims for.
    :param inverse_mass_matrix: initial inverse mass matrix.
    :param init_strategy: a per-site initialisation function.{_POOL_PARAM}

    **Example**

    .. doctest::

        >>> import jax, jax.numpy as jnp
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> potential = lambda x: 0.5 * jnp.sum(x**2)
        >>> mcmc = MCMC(ne.RWMH(potential_fn=potential), num_warmup=200,
        ...             num_samples=200, progress_bar=False)
        >>> mcmc.run(jax.random.key(0), init_params=jnp.zeros(2))
        >>> mcmc.get_samples().shape
        (200, 2)

    **References**

    1. Metropolis, Rosenbluth, Rosenbluth, Teller & Teller (1953), J. Chem.
       Phys. 21(6).
    2. Hastings (1970), *Monte Carlo sampling methods using Markov chains and
       their applications*, Biometrika 57(1).
    3. Roberts, Gelman & Gilks (1997), *Weak convergence and optimal scaling
       of random walk Metropolis algorithms*, Ann. Appl. Probab. 7(1).
    """

    _uses_gradient = False

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=1.0,
        proposal=None,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        dense_mass=False,
        target_accept_prob=0.234,
        inverse_mass_matrix=None,
        init_strategy=init_to_uniform,
        pool_chains=True,
    ):
        validation.positive("step_size", step_size)
        if proposal is not None and not callable(proposal):
            raise ValueError(
                "`proposal` must be a callable (rng_key, z) -> (z_new, log_ratio)."
            )
        self._proposal = proposal
        super().__init__(
            model,
            potential_fn,
            step_size=step_size,
            adapt_step_size=adapt_step_size and proposal is None,
            adapt_mass_matrix=adapt_mass_matrix and proposal is None,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            inverse_mass_matrix=inverse_mass_matrix,
            init_strategy=init_strategy,
            pool_chains=pool_chains,
        )

    def _check_position(self, potential_fn, position):
        super()._check_position(potential_fn, position)
        if self._proposal is None:
            return
        try:
            out = jax.eval_shape(self._proposal, jax.random.key(0), position)
        except Exception as err:
            raise ValueError(
                f"`proposal(rng_key, z)` failed at the initial position: "
                f"{type(err).__name__}: {err}"
            ) from err
        ok = isinstance(out, tuple) and len(out) == 2
        if ok:
            new, log_ratio = out
            ok = (
                jax.tree.structure(new) == jax.tree.structure(position)
                and [x.shape for x in jax.tree.leaves(new)]
                == [jnp.shape(x) for x in jax.tree.leaves(position)]
                and getattr(log_ratio, "shape", None) == ()
            )
        if not ok:
            raise ValueError(
                "`proposal(rng_key, z)` must return `(z_new, log_proposal_ratio)` "
                "with `z_new` of the same structure and shapes as `z` "
                f"({jax.tree.map(jnp.shape, position)}) and a scalar ratio; got "
                f"{jax.tree.map(lambda x: x.shape, out)}."
            )

    def _transition(self, rng_key, state, potential_fn, metric):
        step_size = state.adapt_state.step_size
        new, info = rwmh_step(
            rng_key,
            RWMHState(state.z, state.potential_energy),
            potential_fn,
            step_size,
            metric,
            proposal=self._proposal,
        )
        return (new.position, new.potential_energy, None, info, step_size, {})


class AnnealedLangevin(LangevinKernelBase):
    __doc__ = f"""Tempered (annealed) Langevin dynamics over iterations.

    At iteration ``n`` one Langevin step targets ``exp(-beta_n U)``:
    ``z' = z - h A grad U(z) + sqrt(2 h / beta_n) A^(1/2) xi``. With ``beta_n``
    growing (e.g. :func:`~numpyro_ebm.geometric_schedule` from 1 to 100) the
    chain concentrates on the minima of ``U`` (simulated annealing, a MAP
    search with noise); ``beta < 1`` flattens the target (tempering, for
    crossing between modes). ``adjusted=True`` adds the MALA correction at
    each temperature so that, at fixed ``beta``, ``exp(-beta U)`` is exact.
    There is no step-size adaptation: the target changes every iteration.
    ``potential_energy`` in the state is always the untempered ``U``.
    {_COMMON_PARAMS}
    :param step_size: a positive float, 1-D array or callable of the iteration.
    :param inverse_temperature: ``beta_n``: a positive float, 1-D
        array (entry ``k`` at iteration ``k`` of warm-up and sampling together;
        the last value is held; it must cover the warm-up) or a callable.
    :param bool adjusted: Metropolis-adjust each step (MALA at ``beta_n``).
    :param schedule: the former name of ``inverse_temperature`` (deprecated).
    :param bool dense_mass: dense rather than diagonal ``inverse_mass_matrix``.
    :param inverse_mass_matrix: fixed preconditioner; identity by default.
    :param init_strategy: a per-site initialisation function.

    **Example**

    .. doctest::

        >>> import jax, jax.numpy as jnp
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> U = lambda x: (x**2 - 1.0) ** 2 + 0.3 * x  # deeper well at x = -1
        >>> kernel = ne.AnnealedLangevin(
        ...     potential_fn=U, step_size=0.01,
        ...     inverse_temperature=ne.geometric_schedule(0.5, 50.0, 500))
        >>> mcmc = MCMC(kernel, num_warmup=0, num_samples=500, progress_bar=False)
        >>> mcmc.run(jax.random.key(1), init_params=jnp.array(0.0))
        >>> mcmc.get_samples().shape
        (500,)

    **References**

    1. Kirkpatrick, Gelatt & Vecchi (1983), *Optimization by simulated
       annealing*, Science 220.
    2. Geman & Hwang (1986), *Diffusions for global optimization*, SIAM J.
       Control Optim. 24(5).
    3. Roberts & Tweedie (1996), Bernoulli 2(4).
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        inverse_temperature=None,
        adjusted=False,
        dense_mass=False,
        inverse_mass_matrix=None,
        init_strategy=init_to_uniform,
        schedule=None,
    ):
        if schedule is not None:
            if inverse_temperature is not None:
                raise ValueError(
                    "give `inverse_temperature` only: `schedule` is its former name."
                )
            warnings.warn(
                "AnnealedLangevin's `schedule` is now called `inverse_temperature`; "
                "`schedule` will be removed.",
                DeprecationWarning,
                stacklevel=2,
            )
            inverse_temperature = schedule
        if step_size is None or inverse_temperature is None:
            raise ValueError(
                "AnnealedLangevin needs `step_size` and an `inverse_temperature` "
                "schedule (e.g. numpyro_ebm.geometric_schedule(1.0, 100.0, n))."
            )
        self._schedule = validation.schedule("inverse_temperature", inverse_temperature)
        self._adjusted = bool(adjusted)
        super().__init__(
            model,
            potential_fn,
            step_size=validation.schedule("step_size", step_size),
            adapt_step_size=False,
            adapt_mass_matrix=False,
            dense_mass=dense_mass,
            inverse_mass_matrix=inverse_mass_matrix,
            init_strategy=init_strategy,
        )

    def _check_init(self, num_warmup):
        validation.schedule_length(
            "step_size", self._step_size, num_warmup, what="the warm-up alone"
        )
        validation.schedule_length(
            "inverse_temperature",
            self._schedule,
            num_warmup,
            what="the warm-up alone",
        )

    def _transition(self, rng_key, state, potential_fn, metric):
        step_size = schedules.evaluate(self._step_size, state.i)
        return _langevin_move(
            rng_key,
            state,
            potential_fn,
            step_size,
            metric,
            inverse_temperature=schedules.evaluate(self._schedule, state.i),
            adjusted=self._adjusted,
        )
