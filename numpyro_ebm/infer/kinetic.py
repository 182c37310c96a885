"""Kinetic (underdamped) Langevin kernels for :class:`numpyro.infer.MCMC`."""

from collections import namedtuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.infer.initialization import init_to_uniform

from numpyro_ebm.core import kinetic, validation
from numpyro_ebm.core.metrics import Metric
from numpyro_ebm.infer import adaptation
from numpyro_ebm.infer.base import KernelState, LangevinKernelBase
from numpyro_ebm.infer.kernels import _COMMON_PARAMS, _POOL_PARAM

__all__ = ["MALT", "MALTState", "UnderdampedLangevin", "KineticLangevinState"]

MALTState = namedtuple("MALTState", KernelState._fields + ("num_steps", "trajectory"))
MALTState.__doc__ = """
State of :class:`MALT`: the fields of :data:`~numpyro_ebm.infer.base.KernelState`
and

- **num_steps** - OBABO steps (gradient evaluations) of the last trajectory.
- **trajectory** - :class:`~numpyro_ebm.infer.adaptation.TrajectoryAdaptState`,
  the trajectory-length adaptation (shared by pooled chains, like
  ``adapt_state``).
"""

KineticLangevinState = namedtuple(
    "KineticLangevinState", KernelState._fields + ("momentum",)
)
KineticLangevinState.__doc__ = """
State of :class:`UnderdampedLangevin`: the fields of
:data:`~numpyro_ebm.infer.base.KernelState` and

- **momentum** - the whitened momentum ``r = L p`` (a flat vector), carried
  from step to step.
"""


def _kinetic_state(state, momentum):
    return kinetic.KineticState(state.z, momentum, state.potential_energy, state.z_grad)


class MALT(LangevinKernelBase):
    __doc__ = f"""Metropolis-adjusted Langevin trajectories (MALT), self-tuning.

    Each iteration draws a fresh momentum, runs a trajectory of ``n`` OBABO
    steps of kinetic Langevin dynamics (friction ``gamma``, step ``h``,
    preconditioned by the inverse mass matrix) and accepts its end point by one
    Metropolis test on the trajectory's summed energy error, so the chain
    targets the posterior exactly. ``friction=0`` is HMC; the friction damps
    the momentum along the trajectory, which makes the sampler robust to a
    trajectory length that is too long (no U-turns to detect). One iteration
    costs ``n`` gradient evaluations, reported in ``num_steps``.

    Warm-up tunes the step size (dual averaging towards
    ``target_accept_prob``), the mass matrix (Stan's windows) and the
    trajectory length ``T`` (the ChEES criterion, Adam on ``log T``), pooled
    over vectorized chains (:mod:`numpyro_ebm.infer.adaptation`). Each
    trajectory has ``n = ceil(u T / h)`` steps, ``u`` in (0, 1) from a Halton
    sequence (jittered lengths avoid periodic orbits). The friction is in
    the adapted metric's units, where the posterior's scale is about 1: the
    default 0.1 keeps ``exp(-0.1 T)`` of the momentum over a trajectory (0.8
    at a typical ``T = 2``), enough to break exact periodicity while keeping
    HMC's long moves. Stronger friction makes ChEES choose longer
    trajectories: on eight schools, ESS per gradient falls from 0.12 at 0.05
    to 0.09 at 0.5.
    {_COMMON_PARAMS}
    :param float step_size: initial step size ``h`` (the leapfrog step, as in
        NumPyro's HMC).
    :param float trajectory_length: initial (or, with
        ``adapt_trajectory_length=False``, fixed) nominal length ``T``.
    :param float friction: ``gamma`` (0 is HMC with jittered lengths).
    :param bool adapt_step_size: tune ``h`` during warm-up.
    :param bool adapt_mass_matrix: estimate the inverse mass matrix.
    :param bool adapt_trajectory_length: tune ``T`` during warm-up (ChEES).
    :param bool dense_mass: dense rather than diagonal mass matrix.
    :param float target_accept_prob: acceptance rate of whole trajectories
        that step-size adaptation aims for. The default 0.85 is above NUTS's
        0.8: one non-finite step rejects a whole trajectory (a divergence), and
        at 0.8 eight schools had one in 4000 trajectories.
    :param int max_num_steps: most OBABO steps in one trajectory.
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
        ...     numpyro.sample("x", dist.Normal(0.0, 2.0).expand([3]))
        >>> mcmc = MCMC(ne.MALT(model), num_warmup=300, num_samples=300,
        ...             progress_bar=False)
        >>> mcmc.run(jax.random.key(0), extra_fields=("num_steps",))
        >>> mcmc.get_samples()["x"].shape
        (300, 3)

    **References**

    1. Riou-Durand & Vogrinc (2022), *Metropolis adjusted Langevin
       trajectories: a robust alternative to Hamiltonian Monte Carlo*,
       arXiv:2202.13230.
    2. Hoffman, Radul & Sountsov (2021), *An adaptive MCMC scheme for setting
       trajectory lengths in Hamiltonian Monte Carlo*, AISTATS (ChEES).
    3. Bussi & Parrinello (2007), *Accurate sampling using Langevin
       dynamics*, Phys. Rev. E 75 (OBABO).
    """

    _state_type = MALTState
    _shared_fields = ("trajectory",)

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=1.0,
        trajectory_length=1.0,
        friction=0.1,
        adapt_step_size=True,
        adapt_mass_matrix=True,
        adapt_trajectory_length=True,
        dense_mass=False,
        target_accept_prob=0.85,
        max_num_steps=1000,
        inverse_mass_matrix=None,
        init_strategy=init_to_uniform,
        pool_chains=True,
    ):
        validation.positive("step_size", step_size)
        validation.positive("trajectory_length", trajectory_length)
        validation.non_negative("friction", friction)
        validation.positive_integer("max_num_steps", max_num_steps)
        self._trajectory_length = float(trajectory_length)
        self._friction = friction
        self._adapt_trajectory_length = bool(adapt_trajectory_length)
        self._max_num_steps = max_num_steps
        self._trajectory_fns = None
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

    @property
    def default_fields(self):
        return super().default_fields + ("num_steps",)

    def get_diagnostics_str(self, state):
        return (
            f"{int(jnp.max(state.num_steps))} steps of "
            + super().get_diagnostics_str(state)
        )

    def _adapting(self):
        return super()._adapting() or self._adapt_trajectory_length

    def _check_init(self, num_warmup):
        self._trajectory_fns = adaptation.trajectory_adapter(
            num_warmup,
            initial_length=self._trajectory_length,
            max_num_steps=self._max_num_steps,
        )

    def _init_extras(self, rng_key, z, size, adapt_state):
        init_fn, _, _ = self._trajectory_fns
        return {
            "num_steps": jnp.array(0, jnp.int32),
            "trajectory": init_fn(size, adapt_state.step_size),
        }

    def _transition(self, rng_key, state, potential_fn, metric):
        _, _, num_steps_fn = self._trajectory_fns
        step_size = state.adapt_state.step_size
        num_steps = num_steps_fn(state.i, step_size, state.trajectory)
        friction = self._friction
        new, info, proposal = kinetic.malt_step(
            rng_key,
            _kinetic_state(state, None),
            potential_fn,
            step_size,
            friction,
            num_steps,
            metric,
        )
        extra = {
            "num_steps": num_steps,
            "proposal": ravel_pytree(proposal.position)[0],
            "proposal_momentum": proposal.momentum,
        }
        return (
            new.position,
            new.potential_energy,
            new.potential_energy_grad,
            info,
            step_size,
            extra,
        )

    def _adapt_extras(self, i, start, extra, info, used, adapted, state):
        if not self._adapt_trajectory_length:
            return {}
        _, update_fn, _ = self._trajectory_fns
        flat = jax.vmap(lambda x: ravel_pytree(x)[0])(start)
        trajectory = update_fn(
            i,
            flat,
            extra["proposal"],
            extra["proposal_momentum"],
            info.accept_prob,
            ~info.diverging,
            Metric(used.inverse_mass_matrix, used.mass_matrix_sqrt_inv),
            used.inverse_mass_matrix,
            adapted.inverse_mass_matrix,
            adapted.step_size,
            state.trajectory,
        )
        return {"trajectory": trajectory}


class UnderdampedLangevin(LangevinKernelBase):
    __doc__ = f"""Unadjusted kinetic (underdamped) Langevin dynamics, OBABO splitting.

    The state carries a momentum; one iteration is one ``O B A B O`` step
    (one gradient evaluation): a partial momentum refreshment
    ``r <- eta r + sqrt(1 - eta^2) xi`` with ``eta = exp(-gamma h / 2)``, a
    leapfrog step, and another refreshment. The diffusion it discretises
    mixes like HMC (``O(d^(1/4))`` steps against MALA's ``O(d^(1/3))``) at
    one gradient per step. Like :class:`ULA` it is **biased**: on a Gaussian
    ``N(0, s^2)`` (in the metric's units) its stationary law is exactly
    ``N(0, s^2 / (1 - h^2 / (4 s^2)))`` whatever the friction (variance
    inflated by about ``h^2 / (4 s^2)``, second order in ``h`` where ULA's is
    first order; unstable for ``h >= 2 s``).

    Proposals with a non-finite potential or gradient are not taken and
    counted as ``diverging``.
    {_COMMON_PARAMS}
    :param float step_size: the leapfrog step ``h`` (with
        ``adapt_step_size=True``, the start of its tuning).
    :param float friction: ``gamma`` (per unit time, in the metric's units).
    :param bool adapt_step_size: tune ``h`` during warm-up so that the
        Metropolis acceptance probability of the leapfrog part is
        ``target_accept_prob``, and sample with it.
    :param bool adapt_mass_matrix: estimate the inverse mass matrix from the
        warm-up draws.

        Whenever something is adapted, the warm-up runs Metropolis-adjusted
        steps (generalised HMC: a rejected step negates the momentum), so that
        trial step sizes cannot throw the chain away; sampling is unadjusted.
        ``accept_prob`` always reports the acceptance probability the step
        would have had: a gauge of the discretisation error.
    :param float target_accept_prob: acceptance probability aimed at by the
        tuning; higher values mean smaller steps and a smaller bias.
    :param bool dense_mass: dense rather than diagonal mass matrix.
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
        ...     numpyro.sample("x", dist.Normal(0.0, 1.0))
        >>> kernel = ne.UnderdampedLangevin(model, step_size=0.2, friction=1.0)
        >>> mcmc = MCMC(kernel, num_warmup=100, num_samples=200, progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> mcmc.get_samples()["x"].shape
        (200,)

    **References**

    1. Bussi & Parrinello (2007), *Accurate sampling using Langevin
       dynamics*, Phys. Rev. E 75 (OBABO).
    2. Leimkuhler & Matthews (2013), *Rational construction of stochastic
       numerical methods for molecular sampling*, AMRX (bias of splittings).
    3. Cheng, Chatterji, Bartlett & Jordan (2018), *Underdamped Langevin
       MCMC: a non-asymptotic analysis*, COLT.
    4. Horowitz (1991), *A generalized guided Monte Carlo algorithm*, Phys.
       Lett. B 268.
    """

    _state_type = KineticLangevinState

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        friction=1.0,
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
                "UnderdampedLangevin needs `step_size`; with `adapt_step_size=True` "
                "it is the initial value of the tuning."
            )
        validation.positive("step_size", step_size)
        # friction 0 keeps the Hamiltonian's energy level: not ergodic
        validation.positive("friction", friction)
        self._friction = friction
        self._keep_adapted_step_size = bool(adapt_step_size)
        super().__init__(
            model,
            potential_fn,
            step_size=step_size,
            # mass-matrix adaptation needs a tuned warm-up step (see docstring)
            adapt_step_size=bool(adapt_step_size or adapt_mass_matrix),
            adapt_mass_matrix=adapt_mass_matrix,
            dense_mass=dense_mass,
            target_accept_prob=target_accept_prob,
            inverse_mass_matrix=inverse_mass_matrix,
            init_strategy=init_strategy,
            pool_chains=pool_chains,
        )

    def _init_extras(self, rng_key, z, size, adapt_state):
        dtype = jnp.result_type(float)
        return {"momentum": jax.random.normal(rng_key, (size,), dtype)}

    def _transition(self, rng_key, state, potential_fn, metric):
        step_size = jnp.asarray(self._step_size, jnp.result_type(float))
        adjusted = False
        if self._adapt_step_size:
            adjusted = state.i < self._num_warmup
            if self._keep_adapted_step_size:
                step_size = state.adapt_state.step_size
            else:
                step_size = jnp.where(adjusted, state.adapt_state.step_size, step_size)
        new, info, _ = kinetic.obabo_step(
            rng_key,
            _kinetic_state(state, state.momentum),
            potential_fn,
            step_size,
            self._friction,
            metric,
            adjusted=adjusted,
        )
        return (
            new.position,
            new.potential_energy,
            new.potential_energy_grad,
            info,
            step_size,
            {"momentum": new.momentum},
        )
