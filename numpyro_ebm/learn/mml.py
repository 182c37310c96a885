"""Maximum marginal likelihood for NumPyro models by Langevin dynamics.

For a model whose parameters are ``numpyro.param`` sites ``theta`` and whose
latent variables are ``numpyro.sample`` sites ``z``, Fisher's identity
``grad_theta log p_theta(x) = E_{p_theta(z | x)}[grad_theta log p_theta(x, z)]``
(the Mathematics page of the documentation, §3) turns maximum marginal likelihood into a coupled system: Langevin
moves on ``z`` (the shared step of :mod:`numpyro_ebm.core.langevin`) and
gradient moves on ``theta`` averaged over the latent particles. Parameters are
moved in unconstrained space (like SVI), latents in unconstrained space with
the Jacobian of the transform (like NumPyro's MCMC).

The estimators are the MCMC counterparts of :class:`numpyro.infer.SVI`:
``PGD``, ``IPLA``, ``SOUL`` and ``MCEM``, each with ``init``, ``update`` and
``run``.
"""

import dataclasses
import functools
import inspect
import re
import warnings
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
import optax
from jax import random
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec
from numpyro.infer.initialization import init_to_uniform

from numpyro_ebm.core import validation
from numpyro_ebm.core.chains import run_chains
from numpyro_ebm.core.langevin import LangevinState, langevin_proposal
from numpyro_ebm.core.metrics import metric_from_inverse_mass_matrix
from numpyro_ebm.core.proposals import is_finite_tree
from numpyro_ebm.core.schedules import evaluate as evaluate_schedule
from numpyro_ebm.core.step_size import robbins_monro
from numpyro_ebm.learn import distributed, training
from numpyro_ebm.learn import model_density as density
from numpyro_ebm.learn.checkpoints import (
    array_digest,
    function_digest,
    optimizer_digest,
    rows_digest,
)

__all__ = ["ParticleState", "MMLRunResult", "PGD", "IPLA", "SOUL", "MCEM"]


class ParticleState(NamedTuple):
    """The latent particles an MML estimator carries, its
    :attr:`TrainState.sampler_state <numpyro_ebm.TrainState.sampler_state>`.

    Attributes:
        particles: unconstrained latent particles, a dict keyed by latent site,
            each with a leading particle axis.
        step_size: the latents' Langevin step size for the next iteration
            (tuned when the estimator was built with ``step_size=None``).
    """

    particles: dict
    step_size: jax.Array


def _shard_particles(state, mesh, data_rows=None):
    """Split the particles over the mesh's devices: a latent with an axis of
    ``data_rows`` entries (one per data point, when the data are split by
    rows) along that axis, the others along the particle axis.

    Only where the work happens depends on it, never the result.
    """
    if mesh is None:
        return state

    def place(x):
        if data_rows is not None and data_rows in x.shape[1:]:
            axis = x.shape.index(data_rows, 1)
            spec = [None] * x.ndim
            spec[axis] = distributed.AXIS
            return jax.lax.with_sharding_constraint(
                x, NamedSharding(mesh, PartitionSpec(*spec))
            )
        return training.shard_batch(x, mesh)

    particles = jax.tree.map(place, state.sampler_state.particles)
    return state._replace(
        sampler_state=state.sampler_state._replace(particles=particles)
    )


@functools.cache
def _replicated(mesh):
    """The identity, with its outputs replicated over ``mesh`` (one compiled
    function per mesh)."""
    return jax.jit(
        lambda tree: tree, out_shardings=NamedSharding(mesh, PartitionSpec())
    )


@dataclasses.dataclass(frozen=True, eq=False)
class MMLRunResult(training.RunResult):
    """What an MML estimator's ``run`` returns: a
    :class:`~numpyro_ebm.RunResult` with the final particles.

    Attributes:
        params: the estimate, constrained (SOUL: the weighted average of the
            iterates).
        state: the final :class:`~numpyro_ebm.TrainState` (pass it as
            ``init_state`` to go on); ``state.sampler_state`` is a
            :class:`ParticleState`.
        history: per-iteration ``log_joint`` (mean over particles), the
            constrained parameter trace ``params`` (the sites chosen by
            ``run``'s ``trace_params``) and, for Metropolis-adjusted
            latent moves, ``accept_prob`` (mean over particles and steps).
        particles: the final latent particles, constrained, each site with a
            leading particle axis.

    ``to_datatree(burn_in)`` gives the ArviZ ``DataTree``: ``posterior`` holds
    the parameter trace after ``burn_in`` iterations (one chain), so
    ``arviz.summary`` gives the time-averaged estimate with its Monte Carlo
    error; ``latent_particles`` holds the final particles, one chain per
    particle; ``sample_stats`` holds the ``log_joint`` trace and the other
    per-iteration metrics.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> def model(y):
        ...     m = numpyro.param("m", 0.0)
        ...     z = numpyro.sample("z", dist.Normal(m, 1.0))
        ...     numpyro.sample("y", dist.Normal(z, 1.0), obs=y)
        >>> result = ne.PGD(model, step_size=0.1, num_particles=4).run(jax.random.key(0), 50, 1.0,
        ...                                    progress_bar=False)
        >>> tree = result.to_datatree(burn_in=10)
        >>> tree["posterior"]["m"].shape, tree["latent_particles"]["z"].shape
        ((1, 40), (4, 1))
    """

    particles: dict = None

    def _extra_groups(self):
        # one draw per particle-chain
        return {
            "latent_particles": {
                k: np.asarray(v)[:, None] for k, v in self.particles.items()
            }
        }


#: the latents' first step size when it is tuned
_INITIAL_STEP_SIZE = 0.01
#: gain of the Robbins–Monro tuning of log(step size) on the acceptance rate
_ADAPTATION_GAIN = 0.05
#: the parameters' optimiser when none is given
_DEFAULT_LEARNING_RATE = 1e-2


def _default_optimizer():
    return optax.adam(_DEFAULT_LEARNING_RATE)


class _Estimator:
    """Shared machinery; subclasses define ``_move``."""

    def __init__(
        self,
        model,
        *,
        num_particles,
        step_size,
        target_accept_prob,
        init_strategy=init_to_uniform,
    ):
        if not callable(model):
            raise TypeError(f"`model` must be a callable, got {type(model).__name__}.")
        self.model = model
        self.num_particles = validation.positive_integer("num_particles", num_particles)
        self.init_strategy = init_strategy
        self.adaptive = step_size is None
        if not self.adaptive:
            _check_step_size(step_size)
        self.step_size = step_size
        validation.probability("target_accept_prob", target_accept_prob)
        self.target_accept_prob = target_accept_prob
        self._spec = None
        # compiled loops, their steps and the compiled init, reused by later runs
        self._compiled, self._steps, self._init_fns = {}, {}, {}

    # ------------------------------------------------------------ step sizes
    def _latent_step_size(self, state):
        """The latents' step at this iteration: tuned, or from the schedule."""
        if self.adaptive:
            return state.sampler_state.step_size
        return evaluate_schedule(self.step_size, state.step)

    def _tuned_step_size(self, step_size, accept_prob):
        """Robbins–Monro on log(step): up when the acceptance exceeds the target.

        The acceptance is that of MALA, pooled over the particles (for
        unadjusted moves, the MALA acceptance their proposal would have had).
        The gain stays constant, since the target moves with the parameters.
        """
        if not self.adaptive:
            return step_size
        log_step = robbins_monro(
            jnp.log(step_size), accept_prob, self.target_accept_prob, _ADAPTATION_GAIN
        )
        return jnp.exp(log_step)

    # ------------------------------------------------------------ densities
    # ------------------------------------------------------ the model density
    # (functions of the model's spec, in numpyro_ebm.learn.model_density)
    def _log_joint(
        self, params_u, latents_u, args, kwargs, rng_key, batch, contrastive=True
    ):
        return density.log_joint(
            self._spec, params_u, latents_u, args, kwargs, rng_key, batch, contrastive
        )

    def _gradients(self, params_u, particles, args, kwargs, rng_key, batch):
        return density.gradients(
            self._spec, params_u, particles, args, kwargs, rng_key, batch
        )

    def _constrain(self, transforms, values):
        return density.constrain(transforms, values)

    def _draw_batch(self, key):
        return density.draw_batch(self._spec, key)

    def _full_batch(self):
        return density.full_batch(self._spec)

    def _gather(self, particles, batch):
        return density.gather(self._spec, particles, batch)

    def _scatter(self, particles, moved, batch):
        return density.scatter(self._spec, particles, moved, batch)

    def _langevin_particles(self, key, particles, grad_latents, step_size):
        """The shared Langevin move on each particle (ascent on log p)."""
        keys = random.split(key, self.num_particles)

        def move(key, z, g):
            flat, unravel = ravel_pytree(z)
            g_flat, _ = ravel_pytree(g)
            new, _ = langevin_proposal(key, flat, -g_flat, step_size)
            return unravel(new)

        return jax.vmap(move)(keys, particles, grad_latents)

    def _latent_chains(
        self,
        key,
        params,
        particles,
        args,
        kwargs,
        batch,
        step_size,
        num_steps,
        adjusted,
        start=None,
    ):
        """Langevin chains on each particle's latents at fixed ``theta``.

        ``start``: the particles' log joints and latent gradients at
        ``particles`` when already computed (without subsampled plates), so
        that the chains' first step does not compute them again.

        Returns the moved particles and their MALA acceptance probability,
        averaged over the particles and steps (for ``adjusted=False``, that of
        the unadjusted moves' proposals).

        The acceptance needs the exact conditional density of the moved
        latents, so with a subsampled plate every latent must be local to it.
        Their conditionals then factorise over the data points: each point's
        latents are a chain of their own, with their own accept/reject (the
        model run on that one index, its log density divided by the plate's
        ``size``), so the acceptance does not fall with the batch size.

        The densities leave out the contrastive terms of energy priors (their
        value is 0 and they only carry parameter gradients). An energy that
        depends on another latent has a normaliser that depends on it too,
        which no computable density includes: use ULA with a given step size
        for such models.
        """
        spec = self._spec
        plates = {plate for plate, _ in spec.local_axes.values()}
        if spec.plates and (
            len(spec.local_axes) < len(particles) or len(spec.plates) > 1
        ):
            raise ValueError(
                "Metropolis-adjusted or tuned latent moves (adjusted=True or "
                "step_size=None) with subsampling need one subsampled plate and "
                "every latent site local to it: otherwise the density of the moved "
                "latents is only estimated from a mini-batch, which "
                "Metropolis-Hastings cannot use. Give a `step_size` and use "
                "unadjusted moves (ULA)."
            )
        key_model, key = random.split(key)

        def chain(key, z, potential):
            state, info = run_chains(
                key,
                potential,
                z,
                num_steps,
                step_size,
                adjusted=adjusted,
                chain_axis=False,
            )
            return state.position, info.accept_prob

        if not spec.plates:  # one chain per particle over all latents

            def potential(z):
                return -self._log_joint(params, z, args, kwargs, key_model, {}, False)

            keys = random.split(key, self.num_particles)
            if start is not None:  # the potential and its gradient, given
                lp, grad = start
                particles = LangevinState(
                    particles, -lp, jax.tree.map(jnp.negative, grad)
                )
            particles, accept = jax.vmap(lambda k, z: chain(k, z, potential))(
                keys, particles
            )
            return particles, accept.mean()

        (plate,) = plates
        size = spec.plates[plate][0]
        axes = {name: axis for name, (_, axis) in spec.local_axes.items()}

        def one_point(key, z, index):
            z = {n: jnp.expand_dims(v, axes[n]) for n, v in z.items()}

            def potential(z):
                point = {plate: index[None]}
                lp = self._log_joint(params, z, args, kwargs, key_model, point, False)
                return -lp / size

            z, accept = chain(key, z, potential)
            return {n: jnp.squeeze(v, axes[n]) for n, v in z.items()}, accept

        def one_particle(key, z):
            z = {n: jnp.moveaxis(v, axes[n], 0) for n, v in z.items()}
            index = batch[plate]
            keys = random.split(key, index.shape[0])
            z, accept = jax.vmap(one_point)(keys, z, index)
            return {n: jnp.moveaxis(v, 0, axes[n]) for n, v in z.items()}, accept

        keys = random.split(key, self.num_particles)
        particles, accept = jax.vmap(one_particle)(keys, particles)
        return particles, accept.mean()

    # ------------------------------------------------------------------ api
    def init(self, rng_key, *args, **kwargs):
        """Initial :class:`~numpyro_ebm.TrainState`: parameters from the model, particles from
        ``init_strategy`` (one independent draw per particle).

        Compiled once per shape of the model's arrays (and value of its other
        arguments); it can also be called inside ``jax.jit``.
        """
        if not validation.is_concrete((rng_key, args, kwargs)):
            spec, state, _ = self._initial(rng_key, args, kwargs)
            self._spec = spec
            return state
        dynamic, static = density.split_arguments(args, kwargs)
        try:
            hash(static)
        except TypeError:  # unhashable arguments: trace them in place
            spec, state, lp = self._initial(rng_key, args, kwargs)
            self._spec = spec
            self._check_initial(state, lp, args, kwargs)
            return state
        if static not in self._init_fns:
            specs = {}

            @jax.jit
            def initial(rng_key, dynamic):
                args, kwargs = density.merge_arguments(dynamic, static)
                spec, state, lp = self._initial(rng_key, args, kwargs)
                # the static part, at trace time; None when a support depends
                # on the model's arrays (its transforms hold tracers here)
                traced = density.transforms_depend_on(spec, jax.core.Tracer)
                specs[density.shape_key(dynamic)] = None if traced else spec
                return state, lp

            self._init_fns[static] = (initial, specs)
        initial, specs = self._init_fns[static]
        state, lp = initial(rng_key, dynamic)
        spec = specs[density.shape_key(dynamic)]
        if spec is None:  # data-dependent supports: built here, with the values
            spec, state, lp = self._initial(rng_key, args, kwargs)
        self._spec = spec
        self._check_initial(state, lp, args, kwargs)
        return state

    def _initial(self, rng_key, args, kwargs):
        """``(spec, state, log_joints)``, pure: the model's structure (without
        its values), the initial state and the particles' log joints."""
        key_model, key_particles, key_state = random.split(rng_key, 3)
        spec = density.inspect_model(
            self.model, key_model, args, kwargs, self.init_strategy
        )
        self._spec = spec
        keys = random.split(key_particles, self.num_particles)
        particles = jax.vmap(
            lambda k: (
                density.inspect_model(
                    self.model, k, args, kwargs, self.init_strategy
                ).init_latents
            )
        )(keys)
        params = spec.init_params
        lp = jax.vmap(self._log_joint, in_axes=(None, 0, None, None, None, None))(
            params, particles, args, kwargs, key_model, self._full_batch()
        )
        first_step = (
            _INITIAL_STEP_SIZE
            if self.adaptive
            else evaluate_schedule(self.step_size, jnp.zeros((), jnp.int32))
        )
        state = training.TrainState(
            jnp.zeros((), jnp.int32),
            params,
            self._init_opt_state(params),
            ParticleState(particles, jnp.asarray(first_step, jnp.result_type(float))),
            jax.random.key_data(key_state),
        )
        return spec._replace(init_params=None, init_latents=None), state, lp

    def _check_initial(self, state, lp, args, kwargs):
        if not bool(jnp.all(jnp.isfinite(lp))):
            key = jax.random.wrap_key_data(state.rng_key)
            bad = density.bad_sites(
                self._spec,
                state.params,
                state.sampler_state.particles,
                args,
                kwargs,
                key,
            )
            raise ValueError(
                "the joint log density is not finite at the initial parameters and "
                f"particles: {bad}"
            )

    def _init_opt_state(self, params):
        return ()

    @staticmethod
    def _particle_state(state, particles, step_size):
        """The next :class:`ParticleState` (the step size keeps its dtype)."""
        dtype = state.sampler_state.step_size.dtype
        return ParticleState(particles, jnp.asarray(step_size, dtype))

    def update(self, state, *args, **kwargs):
        """One iteration: returns ``(state, log_joint)`` (mean over particles)."""
        state, lp, _ = self._update(state, args, kwargs)
        return state, lp

    def _update(self, state, args, kwargs):
        key = jax.random.wrap_key_data(state.rng_key)
        key, sub = random.split(key)
        state, lp, info = self._move(sub, state, args, kwargs)
        state = state._replace(step=state.step + 1, rng_key=jax.random.key_data(key))
        return state, lp, info

    @distributed.same_programs()
    def run(
        self,
        rng_key,
        num_steps,
        *args,
        progress_bar=True,
        init_state=None,
        trace_params=None,
        checkpoint_dir=None,
        checkpoint_every=None,
        resume=True,
        num_devices=None,
        data_args=(),
        **kwargs,
    ):
        """Run ``num_steps`` iterations; returns an :class:`MMLRunResult`.

        Args:
            rng_key: a JAX key.
            num_steps: iterations.
            *args: the model's positional arguments (also ``**kwargs``, by name).
            progress_bar: show a progress bar.
            init_state: a :class:`~numpyro_ebm.TrainState` to go on from (e.g. ``result.state``).
            trace_params: names of the ``param`` sites whose values the history
                records at every iteration; by default those with at most
                1000 elements (not the networks' weights).
            checkpoint_dir: save Orbax checkpoints here (every
                ``checkpoint_every`` iterations and at the end, all kept) and
                resume from the latest one if the same run made it: same
                estimator and configuration, key, model arguments and
                optimiser; a larger ``num_steps`` continues the run.
            checkpoint_every: iterations between checkpoints (default: only at
                the end).
            resume: ``False`` deletes the checkpoints in ``checkpoint_dir`` and
                starts afresh; by default checkpoints of another run are
                refused, saying what differs.
            num_devices: split the particles over this many devices of
                ``jax.devices()`` (``num_particles`` must divide evenly); the
                parameters and the model's arguments are replicated. After
                :func:`jax.distributed.initialize` with several processes,
                every device of every process is used, and each process
                passes the same arguments (except ``data_args``).
            data_args: names of the model's arguments that hold one row per
                data point (the same number of rows each), split by rows
                over the devices instead of replicated; latents with an axis
                of that length are split along it. With several processes,
                each process passes its own rows of these
                (:func:`~numpyro_ebm.local_shard`); the run is the one of a
                single process with all the rows.
        """
        mesh = distributed.make_mesh(num_devices)
        size = distributed.mesh_size(mesh)
        if self.num_particles % size:
            raise ValueError(
                f"`num_particles` ({self.num_particles}) must be divisible by the "
                f"number of devices ({size}): each device moves an equal share."
            )
        args, kwargs, data_rows, local_rows = self._split_data_args(
            data_args, args, kwargs, mesh
        )
        if distributed.is_multiprocess():
            dynamic_args, _ = density.split_arguments(args, kwargs)
            distributed.check_agreement(
                rng_key=np.asarray(jax.random.key_data(rng_key)).tolist(),
                num_steps=int(num_steps),
                estimator=self._describe(),
                data=[
                    [list(x.shape), str(x.dtype)]
                    if id(x) in local_rows
                    else array_digest(x)
                    for x in dynamic_args
                ],
                init_state=init_state is not None,
            )
        args, kwargs, split = self._place_data_args(args, kwargs, local_rows, mesh)
        fresh = self.init(rng_key, *args, **kwargs)
        if data_rows is not None:  # the state is replicated, whatever init made
            fresh = _replicated(mesh)(fresh)
        if init_state is None:
            state = fresh
        else:
            if not (
                isinstance(init_state, training.TrainState)
                and isinstance(init_state.sampler_state, ParticleState)
            ):
                raise TypeError(
                    "`init_state` must be the state of a previous run of an MML "
                    f"estimator (result.state), got {type(init_state).__name__}"
                    + (
                        " holding no particles"
                        if isinstance(init_state, training.TrainState)
                        else ""
                    )
                    + "."
                )
            parts = {
                "params": lambda s: s.params,
                "particles": lambda s: s.sampler_state.particles,
                "optimizer state": lambda s: s.opt_state,
            }
            for part, get in parts.items():
                difference = training.tree_difference(get(fresh), get(init_state))
                if difference:
                    raise ValueError(
                        "`init_state` was made for another model, number of "
                        f"particles or optimiser: its {part} {difference}."
                    )
            state = init_state
        self._latent_dim = sum(
            int(np.size(v)) // self.num_particles
            for v in jax.tree.leaves(state.sampler_state.particles)
        )

        if trace_params is None:
            trace_params = [
                name
                for name, value in state.params.items()
                if sum(jnp.size(v) for v in jax.tree.leaves(value)) <= 1000
            ]
        unknown = set(trace_params) - set(state.params)
        if unknown:
            raise ValueError(f"`trace_params` names unknown param sites {unknown}.")

        # the model's arrays are arguments of the compiled loop; its other
        # arguments (Python numbers, strings, ...) are static, part of the key
        dynamic, static = density.split_arguments(args, kwargs)
        # the configuration is part of the key: the step reads it when traced
        key = (tuple(sorted(trace_params)), static, self._describe(), data_rows)
        try:
            hash(key)
        except TypeError:  # an unhashable static argument: compile this run alone
            key = None
        if density.transforms_depend_on(self._spec, jax.Array | np.ndarray):
            # supports that depend on the data are constants of the compiled
            # step: compile it for this run alone
            key = None
        step = self._steps.get(key) if key is not None else None
        if step is None:
            step = self._make_step(trace_params, static, data_rows)
            if key is not None:
                self._steps[key] = step

        fingerprint = None
        if checkpoint_dir is not None:
            fingerprint = {
                "estimator": self._describe(),
                "model": function_digest(self.model),
                "rng_key": np.asarray(jax.random.key_data(rng_key)).tolist(),
                "data": [
                    rows_digest(x) if id(x) in split else array_digest(x)
                    for x in dynamic
                ],
                "arguments": re.sub(r" at 0x[0-9a-f]+", "", repr(static[1])),
                "optimizer": (
                    optimizer_digest(self.optimizer, state.params)
                    if getattr(self, "optimizer", None) is not None
                    else None
                ),
                "initial_state": [array_digest(x) for x in jax.tree.leaves(state)],
                "trace_params": sorted(trace_params),
            }
        state, history = training.run_loop(
            step,
            state,
            dynamic,
            num_steps,
            progress_bar=progress_bar,
            description=type(self).__name__,
            check=self._check_window,
            cache=self._compiled if key is not None else None,
            cache_key=key,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            fingerprint=fingerprint,
            resume=resume,
            mesh=mesh,
            split_rows=False,
        )
        del history["diverged"]
        self._warn_about(history)
        estimate = self._estimate(state)
        return MMLRunResult(
            self._constrain(self._spec.param_transforms, estimate),
            state,
            history,
            particles=jax.vmap(
                lambda z: self._constrain(self._spec.latent_transforms, z)
            )(state.sampler_state.particles),
        )

    def _describe(self):
        """The estimator and its configuration, for checkpoint fingerprints."""
        names = (
            "num_particles",
            "step_size",
            "target_accept_prob",
            "preconditioner",
            "num_langevin_steps",
            "burn_in",
            "adjusted",
        )
        config = {n: getattr(self, n) for n in names if hasattr(self, n)}
        config["init_strategy"] = self.init_strategy
        return training.describe(self, config)

    def _split_data_args(self, names, args, kwargs, mesh):
        """Check ``data_args``; ``(args, kwargs, rows over all processes or
        None, ids of the local arrays to split)``."""
        if isinstance(names, str):
            names = (names,)
        names = tuple(names)
        if not names:
            return args, kwargs, None, set()
        try:
            bound = inspect.signature(self.model).bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"the model's arguments do not bind: {err}") from None
        unknown = [n for n in names if n not in bound.arguments]
        if unknown:
            raise ValueError(
                f"`data_args` names {unknown}, which are not arguments of this "
                f"call of the model (it has {sorted(bound.arguments)})."
            )
        values = {n: bound.arguments[n] for n in names}
        bad = [n for n, v in values.items() if np.ndim(v) < 1]
        if bad:
            raise ValueError(
                f"`data_args` {bad} must be arrays with one row per data point."
            )
        rows = {n: int(np.shape(v)[0]) for n, v in values.items()}
        if len(set(rows.values())) > 1:
            raise ValueError(
                f"`data_args` must have the same number of rows, got {rows}."
            )
        local = next(iter(rows.values()))
        devices = (
            jax.local_device_count()
            if distributed.is_multiprocess()
            else distributed.mesh_size(mesh)
        )
        if local % devices:
            where = (
                f"process {jax.process_index()} holds"
                if distributed.is_multiprocess()
                else "the data have"
            )
            raise ValueError(
                f"{where} {local} rows of `data_args`, which do not divide over "
                f"{devices} devices: the model sees every row, so none can be "
                "padded; drop or add a few rows."
            )
        if mesh is None:  # one device: nothing to split
            return args, kwargs, None, set()
        for n, v in values.items():
            bound.arguments[n] = np.asarray(v) if not isinstance(v, jax.Array) else v
        local_rows = {id(bound.arguments[n]) for n in names}
        return bound.args, bound.kwargs, local * jax.process_count(), local_rows

    @staticmethod
    def _place_data_args(args, kwargs, local_rows, mesh):
        """``(args, kwargs, ids)``: the ``data_args`` split over the mesh by
        rows (global arrays), and the ids of those arrays."""
        placed = {}

        def place(x):
            if id(x) in local_rows:
                x = distributed.put_rows(x, mesh).values
                placed[id(x)] = x
            return x

        args, kwargs = jax.tree.map(
            place, (args, kwargs), is_leaf=lambda x: id(x) in local_rows
        )
        return args, kwargs, set(placed)

    def _make_step(self, trace_params, static, data_rows=None):
        def step(state, dynamic, mesh):
            args, kwargs = density.merge_arguments(dynamic, static)
            state = _shard_particles(state, mesh, data_rows)
            new, lp, info = self._update(state, args, kwargs)
            new = _shard_particles(new, mesh, data_rows)
            params = self._constrain(
                self._spec.param_transforms,
                {k: v for k, v in new.params.items() if k in trace_params},
            )
            diverged = ~(jnp.isfinite(lp) & is_finite_tree(new.params))
            return new, {
                "log_joint": lp,
                "params": params,
                "diverged": diverged,
                **info,
            }

        return step

    def _estimate(self, state):
        return state.params

    def _check_window(self, window, lower):
        """Stop the run at the first iteration that cannot go on (host side)."""
        name = type(self).__name__
        diverged = np.asarray(window["diverged"])
        first_diverged = int(np.argmax(diverged)) if diverged.any() else len(diverged)
        if "hessian_min_eigenvalue" in window:
            # a Hessian that is not positive definite is the cause of a divergence
            # that follows it: report it first
            eigenvalues = np.asarray(window["hessian_min_eigenvalue"])
            bad = ~(eigenvalues > 0)
            if bad.any() and int(np.argmax(bad)) <= first_diverged:
                first = int(np.argmax(bad))
                raise FloatingPointError(
                    f"{name} with preconditioner='pqn': the particle-averaged "
                    "negative Hessian of the log joint in the parameters is not "
                    f"positive definite at iteration {lower + first} (smallest "
                    f"eigenvalue {eigenvalues[first]:.3g}), so PQN's step is not "
                    "an ascent direction. The log joint is not concave in the "
                    "parameters there: use preconditioner=None with a smaller "
                    "step size, or SOUL with an Optax optimizer."
                )
        if diverged.any():
            raise FloatingPointError(
                f"{name} diverged: the joint log density or the parameters became "
                f"non-finite at iteration {lower + first_diverged}; lower the step "
                "size."
            )

    def _warn_about(self, history):
        """Warn, with the figures, when a finished run looks wrong."""
        name = type(self).__name__
        lp = np.asarray(history["log_joint"], np.float64)
        n = lp.shape[0]
        if n >= 50:
            # the log joint should rise from its start and then settle: a final
            # level far below the start or the peak means the run went astray
            width = max(5, n // 50)
            smooth = np.convolve(lp, np.ones(width) / width, mode="valid")
            peak, end = max(smooth.max(), lp[:5].mean()), smooth[-1]
            # allowed: the noise of the averaged end, and the fall from a start
            # at a mode into the typical set (about d/2 nats, sd sqrt(d/2))
            dim = self._latent_dim
            margin = (
                5 * lp[-width:].std() / np.sqrt(width)
                + dim / 2
                + 5 * np.sqrt(dim / 2)
                + 0.01 * abs(peak)
            )
            # and a collapse, not a shift: the log joint at least doubles in
            # magnitude (the mean log joint is log p(x) minus the latents'
            # entropy, which may fall legitimately as the parameters move)
            if peak - end > max(margin, abs(peak)):
                warnings.warn(
                    f"{name}: the log joint fell from {peak:.6g} (its start or "
                    f"peak) to {end:.6g} (the mean of the last {width} "
                    "iterations): the run moved away from the maximum (a step too "
                    "large "
                    "for the parameters, or a badly conditioned preconditioner). "
                    "Lower the step size.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        for site, values in history["params"].items():
            values = np.concatenate(
                [
                    np.asarray(v, np.float64).reshape(n, -1)
                    for v in jax.tree.leaves(values)
                ],
                axis=1,
            )
            if n < 50 or values.shape[1] > 1000:
                continue
            steps = np.diff(values[n // 2 :], axis=0)
            steps = steps - steps.mean(0)
            denom = (steps**2).sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                lag1 = (steps[1:] * steps[:-1]).sum(0) / denom
            lag1 = np.where(denom > 0, lag1, 0.0)
            if lag1.min() < -0.75:
                warnings.warn(
                    f"{name}: the parameter '{site}' oscillates (lag-1 "
                    f"autocorrelation of its steps {lag1.min():.2f} over the second "
                    "half of the run): the step is too large for its curvature. "
                    "Lower the step size, or use preconditioner='pqn' or an Optax "
                    "optimizer.",
                    RuntimeWarning,
                    stacklevel=3,
                )


def _check_step_size(step_size):
    validation.schedule("step_size", step_size)


def _check_optimizer(optimizer):
    if optimizer is not None and not isinstance(
        optimizer, optax.GradientTransformation
    ):
        raise TypeError(
            "`optimizer` must be an optax.GradientTransformation (e.g. "
            f"optax.adam(1e-2)), got {type(optimizer).__name__}."
        )
    return optimizer


_STEP_SIZE_DOC = """step_size: the latents' Langevin step ``h``: a number, an array
            of per-iteration values or a callable of the iteration. ``None``
            (default) tunes it at every iteration so that the latents' moves
            have MALA acceptance ``target_accept_prob``, pooled over the
            particles (Robbins–Monro on ``log h``)."""


class PGD(_Estimator):
    """Particle gradient descent (Kuntz, Lim & Johansen 2023).

    ``N`` latent particles and the parameters move jointly. With a given
    ``step_size`` this is the published algorithm::

        theta <- theta + h mean_i grad_theta log p_theta(x, z_i)
        z_i   <- z_i + h grad_z log p_theta(x, z_i) + sqrt(2 h) W_i

    (both moves are the core's shared Langevin step, the parameters' without
    noise). With ``preconditioner="pqn"`` the parameter step is multiplied by
    the inverse of the particle average of ``-grad_theta^2 log p_theta(x,
    z_i)`` (the paper's PQN), so that a step suited to the latents also suits
    the parameters; the run stops if that matrix is not positive definite.

    By default (``step_size=None``) nothing needs tuning: the latents take
    Metropolis-adjusted steps whose size is tuned on their acceptance rate,
    and the parameters move with ``optimizer`` (Adam at ``1e-2`` unless given)
    on the same particle-averaged gradient; or by PQN with the tuned step
    when ``preconditioner="pqn"``. A plain ``h`` must stay below ``2 /``
    (the parameters' curvature, which grows with the data): the run warns
    when a parameter oscillates or the log joint collapses, and stops when it
    becomes non-finite.

    Args:
        model: a NumPyro model with ``numpyro.param`` and latent sample sites.
        {step_size}
        num_particles: ``N``.
        optimizer: an Optax transformation for the parameters (ascent on the
            particle-averaged gradient); default Adam at ``1e-2`` when
            ``step_size=None``, the PGD step ``h`` otherwise.
        preconditioner: ``None`` or ``"pqn"``.
        target_accept_prob: the latents' acceptance rate when ``h`` is tuned.
        init_strategy: NumPyro init strategy for the particles.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> def model(y):
        ...     theta = numpyro.param("theta", 0.0)
        ...     x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([len(y)]).to_event(1))
        ...     numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)
        >>> y = jnp.linspace(0.0, 2.0, 20)
        >>> result = ne.PGD(model, step_size=0.01, num_particles=10).run(
        ...     jax.random.key(0), 2000, y, progress_bar=False)
        >>> theta = result.history["params"]["theta"][1000:]  # a stationary trace
        >>> bool(abs(theta.mean() - y.mean()) < 0.05)
        True
        >>> tuned = ne.PGD(model).run(jax.random.key(0), 1000, y, progress_bar=False)
        >>> bool(abs(tuned.params["theta"] - y.mean()) < 0.1)
        True

    References:
        Kuntz, Lim & Johansen (2023), *Particle algorithms for maximum
        likelihood training of latent variable models*, AISTATS.
    """

    def __init__(
        self,
        model,
        *,
        step_size=None,
        num_particles=10,
        optimizer=None,
        preconditioner=None,
        target_accept_prob=0.574,
        init_strategy=init_to_uniform,
    ):
        super().__init__(
            model,
            num_particles=num_particles,
            step_size=step_size,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )
        if preconditioner not in (None, "pqn"):
            raise ValueError(
                f"`preconditioner` must be None or 'pqn', got {preconditioner!r}."
            )
        _check_optimizer(optimizer)
        if optimizer is not None and preconditioner is not None:
            raise ValueError(
                "give `optimizer` or `preconditioner`, not both: the parameters "
                "move either by the optimizer or by the PQN step."
            )
        self.preconditioner = preconditioner
        if optimizer is None and self.adaptive and preconditioner is None:
            optimizer = _default_optimizer()
        self.optimizer = optimizer

    __doc__ = __doc__.format(step_size=_STEP_SIZE_DOC)

    #: inverse temperature of the parameter move: no noise for PGD
    _parameter_inverse_temperature = jnp.inf

    def _init_opt_state(self, params):
        return () if self.optimizer is None else self.optimizer.init(params)

    def _negative_hessian(self, params_u, particles, args, kwargs, rng_key, batch):
        """Particle average of ``-grad_theta^2 log p_theta(x, z_i)`` (flat)."""
        flat, unravel = ravel_pytree(params_u)

        def log_joint_flat(theta, z):
            return self._log_joint(unravel(theta), z, args, kwargs, rng_key, batch)

        hessians = jax.vmap(jax.hessian(log_joint_flat), in_axes=(None, 0))(
            flat, particles
        )
        return -hessians.mean(0)

    def _parameter_move(
        self, key, params_u, grad_params, particles, args, kwargs, rng_key, batch, h
    ):
        """The parameters' Langevin move, the shared core step.

        Drift ``h A grad_theta``, noise ``sqrt(2 h / beta) A^(1/2) xi``: ``A = I``
        or, with PQN, the inverse of the particle-averaged negative Hessian
        (Kuntz, Lim & Johansen 2023), which puts the parameters on the
        latents' time scale; ``beta = N`` for IPLA and infinite (no noise) for
        PGD. Returns the new parameters and diagnostics.
        """
        flat, unravel = ravel_pytree(params_u)
        g_flat, _ = ravel_pytree(grad_params)
        metric, info = None, {}
        if self.preconditioner == "pqn":
            neg_hessian = self._negative_hessian(
                params_u, particles, args, kwargs, rng_key, batch
            )
            # the smallest eigenvalue says whether PQN's metric exists at all
            info["hessian_min_eigenvalue"] = jnp.linalg.eigvalsh(neg_hessian)[0]
            metric = metric_from_inverse_mass_matrix(jnp.linalg.inv(neg_hessian))
        new, _ = langevin_proposal(
            key, flat, -g_flat, h, metric, self._parameter_inverse_temperature
        )
        return unravel(new), info

    def _move(self, key, state, args, kwargs):
        key_theta, key_z, key_model, key_batch = random.split(key, 4)
        h = self._latent_step_size(state)
        batch = self._draw_batch(key_batch)
        z = self._gather(state.sampler_state.particles, batch)
        lp, grad_params, grad_latents = self._gradients(
            state.params, z, args, kwargs, key_model, batch
        )
        opt_state = state.opt_state
        if self.optimizer is not None:
            ascent = jax.tree.map(jnp.negative, grad_params)
            updates, opt_state = self.optimizer.update(
                ascent, state.opt_state, state.params
            )
            params, info = optax.apply_updates(state.params, updates), {}
        else:
            params, info = self._parameter_move(
                key_theta,
                state.params,
                grad_params,
                z,
                args,
                kwargs,
                key_model,
                batch,
                h,
            )
        if self.adaptive:  # Metropolis-adjusted latent moves, tuned on acceptance
            # the log joints and latent gradients above are the chains' start
            # when they are those of the chains' density: no plates, and no
            # contrastive term with a gradient in the latents
            reuse = not self._spec.plates and not self._spec.contrastive_latents
            z, accept = self._latent_chains(
                key_z,
                state.params,
                z,
                args,
                kwargs,
                batch,
                h,
                1,
                True,
                start=(lp, grad_latents) if reuse else None,
            )
            info["accept_prob"] = accept
            next_h = self._tuned_step_size(h, accept)
        else:
            z = self._langevin_particles(key_z, z, grad_latents, h)
            next_h = evaluate_schedule(self.step_size, state.step + 1)
        info["step_size"] = h
        particles = self._scatter(state.sampler_state.particles, z, batch)
        state = state._replace(
            params=params,
            opt_state=opt_state,
            sampler_state=self._particle_state(state, particles, next_h),
        )
        return state, lp.mean(), info


class IPLA(PGD):
    """Interacting particle Langevin algorithm (Akyildiz et al. 2023).

    :class:`PGD` plus noise on the parameters,
    ``theta <- theta + h mean_i grad_theta log p + sqrt(2 h / N) xi``, so the
    parameter marginal targets ``∝ p_theta(x)^N``: it concentrates on the
    maximum likelihood estimate with variance about ``1 / (N * curvature)``.
    With ``preconditioner="pqn"`` the drift and the noise are preconditioned
    alike (``h A grad + sqrt(2 h / N) A^(1/2) xi`` with ``A`` the inverse
    particle-averaged negative Hessian), so the target is the same.

    The parameters' noise ties their step to the latents' ``h``, so there is
    no optimizer: ``step_size=None`` (the latents' ``h`` tuned on their
    acceptance rate) needs ``preconditioner="pqn"``, which scales the
    parameters' step to their curvature.

    Args:
        model: a NumPyro model with ``numpyro.param`` and latent sample sites.
        {step_size}
        num_particles: ``N``.
        preconditioner: ``None`` or ``"pqn"``.
        target_accept_prob: the latents' acceptance rate when ``h`` is tuned.
        init_strategy: NumPyro init strategy for the particles.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> import numpyro, numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> def model(y):
        ...     theta = numpyro.param("theta", 0.0)
        ...     x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([len(y)]).to_event(1))
        ...     numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)
        >>> y = jnp.linspace(0.0, 2.0, 20)  # log p(y | theta) has curvature 20 / 2
        >>> result = ne.IPLA(model, step_size=0.02, num_particles=5).run(
        ...     jax.random.key(0), 4000, y, progress_bar=False)
        >>> theta = np.asarray(result.history["params"]["theta"][1000:])
        >>> bool(abs(theta.mean() - 1.0) < 0.1), bool(0.01 < theta.var() < 0.1)  # 1/(5*10)
        (True, True)

    References:
        Akyildiz, Crucinio, Girolami, Johnston & Sabanis (2023), *Interacting
        particle Langevin algorithm for maximum marginal likelihood
        estimation*.
    """

    def __init__(
        self,
        model,
        *,
        step_size=None,
        num_particles=10,
        preconditioner=None,
        target_accept_prob=0.574,
        init_strategy=init_to_uniform,
    ):
        if step_size is None and preconditioner is None:
            raise ValueError(
                "IPLA with step_size=None needs preconditioner='pqn': its "
                "parameter noise ties the parameters' step to the latents' tuned "
                "step, which only PQN scales to the parameters' curvature. Give "
                "a `step_size`, or use preconditioner='pqn'."
            )
        super().__init__(
            model,
            step_size=step_size,
            num_particles=num_particles,
            preconditioner=preconditioner,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )

    __doc__ = __doc__.format(step_size=_STEP_SIZE_DOC)

    @property
    def _parameter_inverse_temperature(self):
        return self.num_particles


class SOUL(_Estimator):
    """Stochastic optimisation via unadjusted Langevin (De Bortoli et al. 2021).

    Each iteration takes ``num_langevin_steps`` Langevin steps on the
    warm-started latent chains at fixed ``theta``, then one optimiser step on
    ``theta`` with ``mean_i grad_theta log p_theta(x, z_i)``. With
    ``learning_rate`` the optimiser is the paper's SGD with Robbins–Monro steps
    ``delta_n = learning_rate * n^-0.8`` and the reported estimate is the
    ``delta``-weighted average of the iterates; otherwise it is ``optimizer``
    (Adam at ``1e-2`` by default) and the estimate is the last iterate.

    Args:
        model: a NumPyro model with ``numpyro.param`` and latent sample sites.
        optimizer: an Optax transformation for ascent on ``theta`` (default
            Adam at ``1e-2``); refused together with ``learning_rate``.
        {step_size}
        num_langevin_steps: ``m``, Langevin steps per iteration.
        num_particles: chains run in parallel (1 in the original algorithm).
        learning_rate: ``c`` of the paper's SGD schedule; refused together with
            ``optimizer``, whose own learning rate applies.
        burn_in: iterations left out of the weighted average.
        adjusted: Metropolis-adjust the latent moves (MALA instead of ULA);
            default: adjusted when the step is tuned (``step_size=None``),
            unadjusted (the paper's ULA) for a given step. Adjusted moves, and
            tuned ones (``step_size=None``), need computable densities of the
            latents: with subsampling, one subsampled plate holding every
            latent (each data point then accepts on its own); no energy prior
            whose energy depends on another latent.
        target_accept_prob: the latents' acceptance rate when ``h`` is tuned.
        init_strategy: NumPyro init strategy for the chains.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> def model(y):
        ...     theta = numpyro.param("theta", 0.0)
        ...     x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([len(y)]).to_event(1))
        ...     numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)
        >>> y = jnp.linspace(0.0, 2.0, 20)
        >>> soul = ne.SOUL(model, step_size=0.2, num_langevin_steps=5,
        ...                num_particles=4, learning_rate=0.05, burn_in=100)
        >>> result = soul.run(jax.random.key(0), 1000, y, progress_bar=False)
        >>> bool(abs(result.params["theta"] - y.mean()) < 0.1)  # the averaged estimate
        True

    References:
        De Bortoli, Durmus, Pereyra & Fernandez Vidal (2021), *Efficient
        stochastic optimisation by unadjusted Langevin Monte Carlo*,
        Statistics and Computing 31.
    """

    def __init__(
        self,
        model,
        *,
        optimizer=None,
        step_size=None,
        num_langevin_steps=1,
        num_particles=10,
        learning_rate=None,
        burn_in=0,
        adjusted=None,
        target_accept_prob=0.574,
        init_strategy=init_to_uniform,
    ):
        super().__init__(
            model,
            num_particles=num_particles,
            step_size=step_size,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )
        self.num_langevin_steps = validation.positive_integer(
            "num_langevin_steps", num_langevin_steps
        )
        self.burn_in = validation.non_negative_integer("burn_in", burn_in)
        if optimizer is not None and learning_rate is not None:
            raise ValueError(
                "give either `optimizer` or `learning_rate`, not both: "
                "`learning_rate` sets the paper's SGD schedule "
                "learning_rate * n**-0.8, which an Optax `optimizer` replaces "
                "(set its learning rate inside it, e.g. optax.adam(1e-2))."
            )
        _check_optimizer(optimizer)
        # tuned steps are sized for MALA: unadjusted at that size, the latents'
        # law is too wide (21 nats lost on the factor model of the tests)
        self.adjusted = self.adaptive if adjusted is None else bool(adjusted)
        self.averaging = learning_rate is not None
        if self.averaging:
            validation.positive("learning_rate", learning_rate)
            self.schedule = lambda n: learning_rate * (n + 1.0) ** -0.8
            optimizer = optax.sgd(self.schedule)
        else:
            self.schedule = lambda n: jnp.ones_like(jnp.asarray(n, float))
        self.optimizer = _default_optimizer() if optimizer is None else optimizer

    __doc__ = __doc__.format(step_size=_STEP_SIZE_DOC)

    def _init_opt_state(self, params):
        # the optimiser's state and the running weighted sum of the iterates
        # with its total weight
        return (
            self.optimizer.init(params),
            (jax.tree.map(jnp.zeros_like, params), jnp.zeros(())),
        )

    def _latent_steps(self, key, params, particles, args, kwargs, batch, step_size):
        if self.adjusted or self.adaptive:
            particles, accept = self._latent_chains(
                key,
                params,
                particles,
                args,
                kwargs,
                batch,
                step_size,
                self.num_langevin_steps,
                self.adjusted,
            )
            return particles, {"accept_prob": accept}

        def body(particles, key):
            key_move, key_model = random.split(key)
            grad_latents = density.latent_gradients(
                self._spec, params, particles, args, kwargs, key_model, batch
            )
            return self._langevin_particles(
                key_move, particles, grad_latents, step_size
            ), None

        keys = random.split(key, self.num_langevin_steps)
        particles, _ = jax.lax.scan(body, particles, keys)
        return particles, {}

    def _move(self, key, state, args, kwargs):
        # one mini-batch per iteration: its latents take the m Langevin steps,
        # then its parameter gradient is used
        key_latents, key_model, key_batch = random.split(key, 3)
        batch = self._draw_batch(key_batch)
        z = self._gather(state.sampler_state.particles, batch)
        h = self._latent_step_size(state)
        z, info = self._latent_steps(
            key_latents, state.params, z, args, kwargs, batch, h
        )
        if self.adaptive:
            next_h = self._tuned_step_size(h, info["accept_prob"])
        else:
            next_h = evaluate_schedule(self.step_size, state.step + 1)
        info["step_size"] = h
        particles = self._scatter(state.sampler_state.particles, z, batch)
        lp, grad_params, _ = self._gradients(
            state.params, z, args, kwargs, key_model, batch
        )
        ascent = jax.tree.map(jnp.negative, grad_params)
        inner, (total, weight) = state.opt_state
        updates, inner = self.optimizer.update(ascent, inner, state.params)
        params = optax.apply_updates(state.params, updates)
        delta = jnp.where(state.step >= self.burn_in, self.schedule(state.step), 0.0)
        averaged = (
            jax.tree.map(lambda a, p: a + delta * p, total, params),
            weight + delta,
        )
        state = state._replace(
            params=params,
            opt_state=(inner, averaged),
            sampler_state=self._particle_state(state, particles, next_h),
        )
        return state, lp.mean(), info

    def _estimate(self, state):
        if not self.averaging:
            return state.params
        _, (total, weight) = state.opt_state
        # before the burn-in ends there is nothing to average: the last iterate
        return jax.tree.map(
            lambda a, p: jnp.where(
                weight > 0, a / jnp.where(weight > 0, weight, 1.0), p
            ),
            total,
            state.params,
        )


class MCEM(SOUL):
    """Monte Carlo EM with a Langevin E-step.

    Each iteration runs a long Langevin chain (``num_langevin_steps``) on each
    particle's latents at fixed ``theta`` (warm-started from the previous
    iteration), then one optimiser step on ``theta`` (the M-step, done by
    gradient ascent on the Monte Carlo estimate of the expected log joint).

    Args:
        model: a NumPyro model with ``numpyro.param`` and latent sample sites.
        optimizer: an Optax transformation (ascent on ``theta``; default Adam
            at ``1e-2``).
        num_langevin_steps: Langevin steps of each E-step.
        {step_size}
        num_particles: chains in parallel.
        adjusted: Metropolis-adjusted (MALA) E-step moves; default: adjusted
            when the step is tuned, unadjusted for a given step.
        target_accept_prob: the latents' acceptance rate when ``h`` is tuned.
        init_strategy: NumPyro init strategy for the chains.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import numpyro, numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> def model(y):
        ...     theta = numpyro.param("theta", 0.0)
        ...     x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([len(y)]).to_event(1))
        ...     numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)
        >>> y = jnp.linspace(0.0, 2.0, 20)
        >>> mcem = ne.MCEM(model, optimizer=optax.sgd(0.05), num_langevin_steps=20,
        ...                step_size=0.2, adjusted=True)
        >>> result = mcem.run(jax.random.key(0), 200, y, progress_bar=False)
        >>> bool(abs(result.params["theta"] - y.mean()) < 0.1)
        True
        >>> bool(result.history["accept_prob"].mean() > 0.5)
        True

    References:
        Wei & Tanner (1990), *A Monte Carlo implementation of the EM
        algorithm*, JASA 85.
    """

    def __init__(
        self,
        model,
        *,
        optimizer=None,
        num_langevin_steps=20,
        step_size=None,
        num_particles=10,
        adjusted=None,
        target_accept_prob=0.574,
        init_strategy=init_to_uniform,
    ):
        super().__init__(
            model,
            optimizer=optimizer,
            step_size=step_size,
            num_langevin_steps=num_langevin_steps,
            num_particles=num_particles,
            adjusted=adjusted,
            target_accept_prob=target_accept_prob,
            init_strategy=init_strategy,
        )

    __doc__ = __doc__.format(step_size=_STEP_SIZE_DOC)
