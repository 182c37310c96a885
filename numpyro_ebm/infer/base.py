"""What every numpyro_ebm MCMC kernel shares: model set-up, state, adaptation.

Subclasses only say how one transition is made (``_transition``) from the
functional core; everything NumPyro needs — ``model=`` or ``potential_fn=``,
constrained sites, ``chain_method="vectorized"``, warm-up adaptation (NumPyro's
windowed scheme, pooled over vectorized chains, or over devices under
:func:`~numpyro_ebm.parallel_chains`: :mod:`numpyro_ebm.infer.adaptation`),
diagnostics — lives here.
"""

import copy
import warnings
from collections import namedtuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.hmc_util import HMCAdaptState
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model
from numpyro.util import identity, is_prng_key, not_jax_tracer

from numpyro_ebm.core import schedules, validation
from numpyro_ebm.core.metrics import Metric
from numpyro_ebm.infer import adaptation, parallel

__all__ = ["KernelState"]

KernelState = namedtuple(
    "KernelState",
    [
        "i",
        "z",
        "potential_energy",
        "z_grad",
        "accept_prob",
        "mean_accept_prob",
        "diverging",
        "num_diverging",
        "adapt_state",
        "rng_key",
    ],
)
KernelState.__doc__ = """
State of the numpyro_ebm kernels (a :func:`~collections.namedtuple`, like
NumPyro's ``HMCState``):

- **i** - iteration, counting warm-up and sampling together.
- **z** - unconstrained values at the latent sites (or the ``potential_fn`` input).
- **potential_energy** - potential energy at ``z``.
- **z_grad** - its gradient (``None`` for gradient-free kernels).
- **accept_prob** - acceptance probability of the last proposal.
- **mean_accept_prob** - running mean of ``accept_prob`` in the current phase
  (warm-up or sampling).
- **diverging** - the last proposal had a non-finite potential or gradient
  and was rejected.
- **num_diverging** - number of such proposals in the current phase.
- **adapt_state** - NumPyro's ``HMCAdaptState`` (``step_size``,
  ``inverse_mass_matrix``, ...): the step size used at this iteration.
- **rng_key** - random key for the next transition.
"""


def _check_model_sites(model, rng_key, init_strategy, model_args, model_kwargs):
    """Refuse discrete latent sites and models with nothing to sample.

    The model is traced as :func:`numpyro.infer.util.initialize_model` traces
    it (seeded, each latent value from ``init_strategy``), so no site is drawn
    from a distribution that cannot be sampled (``ImproperUniform``, truncated
    Student t, ...). Discrete sites marked for enumeration
    (``numpyro.contrib.funsor.config_enumerate``) are summed out of the
    potential by NumPyro and allowed.
    """
    key = rng_key if is_prng_key(rng_key) else rng_key[0]
    init_model = substitute(seed(model, key), substitute_fn=init_strategy)
    model_trace = trace(init_model).get_trace(*model_args, **model_kwargs)
    latent = [
        (name, site)
        for name, site in model_trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    ]
    for name, site in latent:
        if site["fn"].support.is_discrete and not site["infer"].get("enumerate"):
            raise ValueError(
                f"Sample site '{name}' is discrete; Langevin and Metropolis–Hastings "
                "kernels of numpyro_ebm need continuous latent sites. Update it by "
                "Gibbs steps beside this kernel, "
                "numpyro.infer.Gibbs([(DiscreteGibbs(model), discrete_latent_sites), "
                "(kernel, None)]) with DiscreteGibbs from numpyro.infer and "
                "discrete_latent_sites from numpyro.infer.gibbs; or mark it for "
                "enumeration with numpyro.contrib.funsor.config_enumerate (needs "
                "`funsor`), which sums it out of the potential."
            )
    if not latent:
        observed = [n for n, s in model_trace.items() if s["type"] == "sample"]
        raise ValueError(
            "The model has no latent sample sites, so there is nothing for MCMC to "
            f"sample (its sample sites {observed} are all observed). Evaluate it "
            "with numpyro.infer.util.log_density, or draw from it with "
            "numpyro.infer.Predictive."
        )


def _raise_invalid_start(pe_finite, grad_finite):
    if not bool(jnp.all(pe_finite)):
        raise ValueError(
            "Invalid start: the potential energy at the initial parameters is not "
            "finite. Pass valid `init_params` or another `init_strategy`."
        )
    if not bool(jnp.all(grad_finite)):
        raise ValueError(
            "Invalid start: the gradient of the potential energy at the initial "
            "parameters is not finite."
        )


class LangevinKernelBase(MCMCKernel):
    """Shared machinery of :class:`ULA`, :class:`MALA`, :class:`RWMH` and
    :class:`AnnealedLangevin`; not meant to be used directly."""

    #: whether the transition needs the potential's gradient
    _uses_gradient = True

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
        if not (model is None) ^ (potential_fn is None):
            raise ValueError("Only one of `model` or `potential_fn` must be specified.")
        if not isinstance(dense_mass, bool):
            raise ValueError(
                "`dense_mass` must be True or False (block-structured mass matrices "
                "are not supported by numpyro_ebm kernels)."
            )
        validation.probability("target_accept_prob", target_accept_prob)
        if not isinstance(pool_chains, bool):
            raise ValueError("`pool_chains` must be True or False.")
        self._pool_chains = pool_chains
        self._model = model
        self._potential_fn = potential_fn
        self._potential_fn_gen = None
        self._postprocess_fn = None
        self._step_size = step_size
        self._adapt_step_size = adapt_step_size
        self._adapt_mass_matrix = adapt_mass_matrix
        self._dense_mass = dense_mass
        self._target_accept_prob = target_accept_prob
        self._inverse_mass_matrix = self._check_inverse_mass_matrix(
            inverse_mass_matrix, dense_mass
        )
        self._init_strategy = init_strategy
        self._num_warmup = 0
        self._wa_update = None
        self._sample_fn = None

    # ----------------------------------------------------------------- checks
    @staticmethod
    def _check_inverse_mass_matrix(inverse_mass_matrix, dense_mass):
        if inverse_mass_matrix is None:
            return None
        imm = jnp.asarray(inverse_mass_matrix)
        if imm.ndim == 1:
            if not bool(jnp.all(jnp.isfinite(imm) & (imm > 0))):
                raise ValueError(
                    "`inverse_mass_matrix` must be positive definite: a diagonal "
                    "one needs every entry positive and finite."
                )
            if dense_mass:
                imm = jnp.diag(imm)
            return imm
        if imm.ndim != 2 or imm.shape[0] != imm.shape[1]:
            raise ValueError(
                "`inverse_mass_matrix` must be a vector (diagonal) or a square "
                f"matrix, got shape {imm.shape}."
            )
        if not dense_mass:
            raise ValueError(
                "a 2-D `inverse_mass_matrix` needs `dense_mass=True` "
                "(pass its diagonal for a diagonal mass matrix)."
            )
        symmetric = bool(jnp.allclose(imm, imm.T, rtol=1e-5, atol=1e-8))
        if not symmetric or not bool(jnp.all(jnp.isfinite(jnp.linalg.cholesky(imm)))):
            raise ValueError(
                "`inverse_mass_matrix` must be symmetric positive definite."
            )
        return imm

    def _check_size(self, size):
        if self._inverse_mass_matrix is not None:
            if self._inverse_mass_matrix.shape[0] != size:
                raise ValueError(
                    f"`inverse_mass_matrix` has size {self._inverse_mass_matrix.shape[0]}"
                    f" but the latent space has dimension {size}."
                )

    # ------------------------------------------------------------ properties
    @property
    def model(self):
        return self._model

    @property
    def sample_field(self):
        return "z"

    @property
    def default_fields(self):
        return (
            "z",
            "diverging",
            "potential_energy",
            "accept_prob",
            "adapt_state.step_size",
        )

    def get_diagnostics_str(self, state):
        step_size = float(state.adapt_state.step_size)
        accept_prob = float(state.mean_accept_prob)
        divergences = int(state.num_diverging)
        return (
            f"step size {step_size:.2e}. acc. prob={accept_prob:.2f}. "
            f"divergences={divergences}"
        )

    def postprocess_fn(self, model_args, model_kwargs):
        if self._postprocess_fn is None:
            return identity
        return self._postprocess_fn(*model_args, **model_kwargs)

    def get_potential_fn(self, model_args=(), model_kwargs=None):
        """The potential energy (negative log joint in unconstrained space)."""
        if self._potential_fn_gen is None:
            if self._potential_fn is not None:
                return self._potential_fn
            raise RuntimeError("the kernel must be initialised first (run `init`).")
        model_kwargs = {} if model_kwargs is None else model_kwargs
        return self._potential_fn_gen(*model_args, **model_kwargs)

    # ------------------------------------------------------------------ init
    def _setup_model(self, rng_key, init_params, model_args, model_kwargs):
        if self._model is None:
            return init_params
        _check_model_sites(
            self._model, rng_key, self._init_strategy, model_args, model_kwargs
        )
        params_info, potential_fn_gen, postprocess_fn, _ = initialize_model(
            rng_key,
            self._model,
            dynamic_args=True,
            init_strategy=self._init_strategy,
            model_args=model_args,
            model_kwargs=model_kwargs,
        )
        self._potential_fn_gen = potential_fn_gen
        self._postprocess_fn = postprocess_fn
        return params_info[0] if init_params is None else init_params

    def _energy(self, potential_fn):
        """Potential (and gradient when used) at a position."""
        if self._uses_gradient:
            return jax.value_and_grad(potential_fn)
        return lambda z: (potential_fn(z), None)

    def _adapter(self, num_warmup):
        return adaptation.window_adapter(
            num_warmup,
            adapt_step_size=self._adapt_step_size,
            adapt_mass_matrix=self._adapt_mass_matrix,
            dense_mass=self._dense_mass,
            target_accept_prob=self._target_accept_prob,
        )

    def _initial_step_size(self):
        return schedules.evaluate(self._step_size, 0)

    def _check_init(self, num_warmup):
        """Subclass hook: validate settings that depend on ``num_warmup``."""

    def init(
        self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None
    ):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        self._check_init(num_warmup)
        vectorized = not is_prng_key(rng_key)
        if vectorized:
            rng_key, key_model = jnp.swapaxes(jax.vmap(random.split)(rng_key), 0, 1)
        else:
            rng_key, key_model = random.split(rng_key)
        init_params = self._setup_model(
            key_model, init_params, model_args, model_kwargs
        )
        if init_params is None:
            raise ValueError(
                "Valid value of `init_params` must be provided with `potential_fn`."
            )
        potential_fn = self.get_potential_fn(model_args, model_kwargs)
        one = jax.tree.map(lambda x: x[0], init_params) if vectorized else init_params
        self._check_position(potential_fn, one)
        energy = self._energy(potential_fn)
        pe, grad = (jax.vmap(energy) if vectorized else energy)(init_params)
        pe = self._check_start(pe, grad)

        size = ravel_pytree(one)[0].shape[0]
        self._check_size(size)
        self._num_warmup = num_warmup
        wa_init, self._wa_update = self._adapter(num_warmup)
        step_size = jnp.asarray(self._initial_step_size(), jnp.result_type(float))

        def adapt_init(key, z):
            return wa_init(
                (z,),
                key,
                step_size,
                inverse_mass_matrix=self._inverse_mass_matrix,
                mass_matrix_size=size,
            )._replace(rng_key=None)

        def init_one(key, z, pe, grad, wa_state=None, shared=None):
            key, key_wa = random.split(key)
            if wa_state is None:
                wa_state = adapt_init(key_wa, z)
            extras = self._init_extras(random.fold_in(key_wa, 1), z, size, wa_state)
            if shared is not None:
                extras.update(shared)
            zero = jnp.zeros((), jnp.result_type(float))
            return self._state_type(
                jnp.array(0),
                z,
                pe,
                grad,
                zero,
                zero,
                jnp.array(False),
                jnp.array(0),
                wa_state,
                key,
                **extras,
            )

        pooling = self._pool_chains and self._adapting()
        if not vectorized and pooling and parallel.axis_is_bound():
            # one chain per member of the named chain axis (chain_method=
            # ne.parallel_chains): the shared state starts from chain 0's, as
            # for vectorized chains, and every member holds the same copy
            first = parallel.first_chain
            key0, one0 = first(rng_key), jax.tree.map(first, init_params)
            shared = adapt_init(random.fold_in(key0, 1), one0)
            extras = self._init_extras(random.fold_in(key0, 2), one0, size, shared)
            common = {name: extras[name] for name in self._shared_fields}
            self._sample_fn = self._pooled_sampler(size)
            return init_one(rng_key, init_params, pe, grad, shared, common)

        if not vectorized:

            def single(state, model_args, model_kwargs):
                state = self._sample_one(
                    state, self.get_potential_fn(model_args, model_kwargs)
                )
                self._check_health(state.i, state)
                return state

            self._sample_fn = single
            return init_one(rng_key, init_params, pe, grad)

        num_chains = pe.shape[0]
        if pooling and num_chains > 1:
            # one adaptation state for all chains; its step size carries a
            # chain axis (equal entries) so that NumPyro can collect it
            shared = adapt_init(random.fold_in(rng_key[0], 1), one)
            # the fields the chains share (their trajectory length, ...)
            extras = self._init_extras(random.fold_in(rng_key[0], 2), one, size, shared)
            common = {name: extras[name] for name in self._shared_fields}
            state = jax.vmap(init_one, in_axes=(0, 0, 0, 0, None, None))(
                rng_key, init_params, pe, grad, shared, common
            )
            state = state._replace(
                adapt_state=shared._replace(
                    step_size=jnp.broadcast_to(shared.step_size, (num_chains,))
                ),
                **common,
            )
            self._sample_fn = self._pooled_sampler(size, num_chains)
            return state

        def per_chain(state, model_args, model_kwargs):
            state = self._sample_per_chain(
                state, self.get_potential_fn(model_args, model_kwargs)
            )
            # one check for all chains: the iteration is the same for each
            self._check_health(state.i[0], state)
            return state

        self._sample_fn = per_chain
        return jax.vmap(init_one)(rng_key, init_params, pe, grad)

    def _check_health(self, i, state, report=True):
        """Warn from inside the compiled loop when the chains are stuck
        (``report``: whether this chain reports, e.g. one device of several).

        Checked at the end of warm-up and after 100, 1000, 10^4, 10^5 sampling
        iterations: a mean acceptance probability under 0.01 (a step far too
        large: the chain does not move, or, unadjusted, its moves are far from
        the target's) or divergent proposals at most iterations.
        """
        num_warmup = self._num_warmup
        since = i - num_warmup
        milestones = jnp.asarray([100, 1000, 10_000, 100_000])
        check = ((i == num_warmup) & (num_warmup >= 20)) | jnp.any(since == milestones)
        check = check & report

        def emit(i, accept, num_diverging):
            i, accept = int(i), float(np.mean(accept))
            phase = "warm-up" if i <= num_warmup else "sampling"
            count = i if i <= num_warmup else i - num_warmup
            divergent = float(np.mean(num_diverging)) / max(count, 1)
            name = type(self).__name__
            if accept < 0.01:
                warnings.warn(
                    f"{name}: after {count} {phase} iterations the mean acceptance "
                    f"probability is {accept:.3g}: the step size is far too large "
                    "(the chain does not move, or an unadjusted chain's moves are "
                    "far from the target's). Lower step_size, or let it be tuned.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            elif divergent > 0.5:
                warnings.warn(
                    f"{name}: {divergent:.0%} of the {count} {phase} proposals "
                    "diverged (non-finite potential or gradient).",
                    RuntimeWarning,
                    stacklevel=2,
                )

        jax.lax.cond(
            check,
            lambda: jax.debug.callback(
                emit, i, state.mean_accept_prob, state.num_diverging
            ),
            lambda: None,
        )

    def _check_position(self, potential_fn, position):
        """The potential must take one chain's position and return a scalar."""
        try:
            out = jax.eval_shape(potential_fn, position)
        except Exception as err:
            shapes = jax.tree.map(jnp.shape, position)
            raise ValueError(
                f"the potential cannot be evaluated at the initial position (shapes "
                f"{shapes} per chain; with several chains `init_params` needs a "
                f"leading chain axis): {type(err).__name__}: {err}"
            ) from err
        if getattr(out, "shape", None) != ():
            raise ValueError(
                "the potential must return a scalar for one chain's position, got "
                f"shape {getattr(out, 'shape', type(out).__name__)} at a position "
                f"of shapes {jax.tree.map(jnp.shape, position)}."
            )

    @staticmethod
    def _check_start(pe, grad):
        """Refuse a non-finite start (under ``pmap``, from the device at run time)."""
        pe_finite = jnp.isfinite(pe)
        grad_finite = jnp.array(True)
        if grad is not None:
            grad_finite = jnp.all(
                jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)])
            )
        if not_jax_tracer(pe) and not_jax_tracer(grad_finite):
            _raise_invalid_start(pe_finite, grad_finite)
            return pe

        # chain_method="parallel": the values exist only on the devices; the
        # check runs there, and its result feeds the state so it is not dropped
        def check(pe, pe_finite, grad_finite):
            _raise_invalid_start(pe_finite, grad_finite)
            return pe

        return jax.pure_callback(
            check,
            jax.ShapeDtypeStruct(pe.shape, pe.dtype),
            pe,
            pe_finite,
            grad_finite,
            vmap_method="sequential",
        )

    # ---------------------------------------------------------------- sample
    #: the kernel's state type: :data:`KernelState` or one with more fields
    _state_type = KernelState
    #: fields beyond :data:`KernelState`'s that pooled chains share (no chain
    #: axis), like the adaptation state
    _shared_fields = ()

    def _init_extras(self, rng_key, z, size, adapt_state):
        """Subclass hook: initial values of the state's fields beyond
        :data:`KernelState`'s, for one chain at ``z``."""
        return {}

    def _transition(self, rng_key, state, potential_fn, metric):
        """Subclass hook: one move. Returns ``(z, pe, grad, info, step_size,
        extra)``; the entries of the dict ``extra`` named like state fields
        update them, and all of it is passed to :meth:`_adapt_extras`."""
        raise NotImplementedError

    def _adapt_extras(self, i, start, extra, info, used, adapted, state):
        """Subclass hook: updates (a dict) of the adapted fields beyond
        :data:`KernelState`'s after warm-up or sampling iteration ``i``, from
        the chains that share them: their start positions ``start``, the
        ``extra`` and ``info`` of their moves (leading axis ``n``), the
        adaptation state the moves ``used`` and the one ``adapted`` after
        them, and ``state`` (whose shared fields have no chain axis)."""
        return {}

    def _adapting(self):
        return self._adapt_step_size or self._adapt_mass_matrix

    def _move(self, state, potential_fn):
        """One chain's transition: ``(rng_key, z, pe, grad, info, step_size,
        extra)``."""
        rng_key, key = random.split(state.rng_key)
        adapt_state = state.adapt_state
        metric = Metric(
            adapt_state.inverse_mass_matrix, adapt_state.mass_matrix_sqrt_inv
        )
        return (rng_key, *self._transition(key, state, potential_fn, metric))

    def _updates(self, extra):
        """The entries of a transition's ``extra`` that are state fields."""
        return {k: v for k, v in extra.items() if k in self._state_type._fields}

    def _adapt(self, i, accept_prob, z, adapt_state):
        """The adaptation state after warm-up iteration ``i`` (a scalar, the
        same for every chain), from the acceptance probabilities ``(n,)`` and
        positions (leading axis ``n``) of the chains that share it."""
        if not self._adapting():
            return adapt_state
        flat = jax.vmap(lambda x: ravel_pytree(x)[0])(z)
        return jax.lax.cond(
            i < self._num_warmup,
            lambda s: self._wa_update(i, accept_prob, flat, s),
            identity,
            adapt_state,
        )

    def _finish(
        self, state, rng_key, z, pe, grad, info, step_size, adapt_state, updates
    ):
        """The next state; elementwise, so it serves one chain or a batch;
        ``updates`` sets fields beyond :data:`KernelState`'s."""
        i = state.i
        in_warmup = i < self._num_warmup
        # report the step actually used (schedules change it every iteration);
        # during warm-up the adapter's step is the one for the next iteration
        step_size = jnp.asarray(step_size, jnp.result_type(adapt_state.step_size))
        if self._adapt_step_size:
            step_size = jnp.where(in_warmup, adapt_state.step_size, step_size)
        adapt_state = adapt_state._replace(step_size=step_size)
        itr = i + 1
        mean_accept_prob = self._mean_accept_prob(state, info)
        num_diverging = jnp.where(i == self._num_warmup, 0, state.num_diverging)
        num_diverging = num_diverging + info.diverging
        return state._replace(
            i=itr,
            z=z,
            potential_energy=pe,
            z_grad=grad,
            accept_prob=info.accept_prob,
            mean_accept_prob=mean_accept_prob,
            diverging=info.diverging,
            num_diverging=num_diverging,
            adapt_state=adapt_state,
            rng_key=rng_key,
            **updates,
        )

    def _mean_accept_prob(self, state, info):
        """The running mean acceptance of the current phase, this iteration's
        included."""
        itr = state.i + 1
        n = jnp.where(state.i < self._num_warmup, itr, itr - self._num_warmup)
        return state.mean_accept_prob + (info.accept_prob - state.mean_accept_prob) / n

    def _sample_one(self, state, potential_fn):
        """One chain, adapted alone."""
        rng_key, z, pe, grad, info, step_size, extra = self._move(state, potential_fn)
        batch = jax.tree.map(lambda x: x[None], (info.accept_prob, z))
        adapt_state = self._adapt(state.i, *batch, state.adapt_state)
        updates = self._updates(extra)
        updates.update(self._adapt_one(state, extra, info, adapt_state))
        return self._finish(
            state, rng_key, z, pe, grad, info, step_size, adapt_state, updates
        )

    def _adapt_one(self, state, extra, info, adapted):
        """:meth:`_adapt_extras` for one chain adapted alone."""
        batch = jax.tree.map(lambda x: x[None], (state.z, extra, info))
        return self._adapt_extras(state.i, *batch, state.adapt_state, adapted, state)

    def _sample_per_chain(self, state, potential_fn, scale=None):
        """Vectorized chains, each adapted alone; with ``scale`` (one factor
        per chain) chain ``k`` targets ``exp(-scale[k] U)``. The iteration is
        passed to the adaptation unbatched, so that its window-end work (the
        mass matrix's factorisation) runs at window ends only, not at every
        step for every chain as a vmapped ``cond`` would."""
        if scale is None:
            moved = jax.vmap(lambda s: self._move(s, potential_fn))(state)
        else:
            moved = jax.vmap(lambda s, b: self._move(s, lambda z: b * potential_fn(z)))(
                state, scale
            )
        rng_key, z, pe, grad, info, step_size, extra = moved
        i = state.i[0]
        adapt_state = jax.vmap(
            lambda a, x, s: self._adapt(
                i, a[None], jax.tree.map(lambda v: v[None], x), s
            )
        )(info.accept_prob, z, state.adapt_state)
        updates = self._updates(extra)
        updates.update(jax.vmap(self._adapt_one)(state, extra, info, adapt_state))
        return jax.vmap(self._finish)(
            state, rng_key, z, pe, grad, info, step_size, adapt_state, updates
        )

    def _pooled_sampler(self, size, num_chains=None):
        """Chains sharing one adaptation: one step size tuned on their mean
        acceptance, one mass matrix from all their draws, and stragglers
        moved to other chains' states at the window ends of the warm-up's
        first half (with three chains or more).

        ``num_chains`` vectorized chains form the batch; with ``None``, each
        call runs one chain of those mapped over the named chain axis
        (:func:`~numpyro_ebm.parallel_chains`), and the batch is gathered
        from every member, each of which computes the same shared update."""
        ends = adaptation.restart_times(self._num_warmup)
        collective = num_chains is None
        # vectorized: each chain's own step size, the shared rest of the
        # adaptation
        axes = self._state_type(
            *(0,) * 8,
            HMCAdaptState(0, None, None, None, None, None, None, None),
            0,
            **{
                name: None if name in self._shared_fields else 0
                for name in self._state_type._fields[len(KernelState._fields) :]
            },
        )
        gather = parallel.gather if collective else identity
        own = parallel.own if collective else identity

        def pooled(state, model_args, model_kwargs):
            potential_fn = self.get_potential_fn(model_args, model_kwargs)
            if collective:
                moved = self._move(state, potential_fn)
                i, used = state.i, state.adapt_state
            else:
                move = jax.vmap(lambda s: self._move(s, potential_fn), in_axes=(axes,))
                moved = move(state)
                i = state.i[0]
                used = state.adapt_state._replace(
                    step_size=state.adapt_state.step_size[0]
                )
            rng_key, z, pe, grad, info, step_size, extra = moved
            everyone = gather((state.z, z, pe, grad, extra, info))
            start_all, z_all, pe_all, grad_all, extra_all, info_all = everyone
            shared = self._adapt(i, info_all.accept_prob, z_all, used)
            updates = self._updates(extra)
            updates.update(
                self._adapt_extras(
                    i, start_all, extra_all, info_all, used, shared, state
                )
            )
            if pe_all.shape[0] >= 3 and ends.size:
                restart = (i < self._num_warmup) & jnp.any(i == ends)
                accept = gather(self._mean_accept_prob(state, info))  # in warm-up

                def move_stragglers(arrays):
                    key = random.fold_in(gather(rng_key)[0], 2)
                    moved, _ = adaptation.restart_stragglers(
                        key, arrays[1], accept, size, *arrays
                    )
                    return own(moved)

                z, pe, grad = jax.lax.cond(
                    restart,
                    move_stragglers,
                    lambda _: (z, pe, grad),
                    (z_all, pe_all, grad_all),
                )
            if not collective:
                shared = shared._replace(
                    step_size=jnp.broadcast_to(shared.step_size, (num_chains,))
                )
            state = self._finish(
                state, rng_key, z, pe, grad, info, step_size, shared, updates
            )
            health = state._replace(
                mean_accept_prob=gather(state.mean_accept_prob),
                num_diverging=gather(state.num_diverging),
            )
            report = parallel.index() == 0 if collective else True
            self._check_health(i + 1, health, report)
            return state

        return pooled

    def sample(self, state, model_args, model_kwargs):
        assert self._sample_fn is not None, "`init` must be called before `sample`."
        return self._sample_fn(state, model_args, model_kwargs)

    def refresh(self, state, model_args, model_kwargs):
        """Recompute the cached potential (and gradient) for new model arguments."""
        pe, grad = self._energy(self.get_potential_fn(model_args, model_kwargs))(
            state.z
        )
        return state._replace(potential_energy=pe, z_grad=grad)

    def wrap_model(self, wrapper):
        """A copy of this kernel bound to ``wrapper(model)``, with nothing
        cached from the old model: what :class:`numpyro.infer.Gibbs` needs to
        use the kernel as one of its blocks (e.g. beside ``DiscreteGibbs`` for
        discrete sites). A kernel built from ``potential_fn`` has no model and
        is returned as it is."""
        if self._model is None:
            return self
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._potential_fn_gen = None
        kernel._postprocess_fn = None
        kernel._sample_fn = None
        kernel._wa_update = None
        return kernel

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_wa_update"] = None
        state["_sample_fn"] = None
        return state
