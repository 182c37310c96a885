"""Stochastic-gradient MCMC for NumPyro models with subsampled plates.

:class:`SGLD` and :class:`SGHMC` read the minibatch from the model itself:
every ``numpyro.plate(name, size, subsample_size=k)`` with ``k < size`` is
given fresh indices at each step (drawn in O(k) by
:func:`numpyro_ebm.core.batches.batch_indices`), and NumPyro scales the
plate's log-likelihood by ``size / k``, so the potential of the minibatch is
an unbiased estimate of the full-data potential. The model needs no changes
beyond the plate's ``subsample_size``, and the data stay arguments of the
compiled sampler (``mcmc.run(key, X, y)``), never constants in it.

Gradient bookkeeping: the gradient a step moves with is computed at the
step's start point on a batch drawn independently of that point (it is
computed at the end of the previous step, on that step's fresh batch), so
each step costs one minibatch gradient and every gradient is unbiased.
"""

import warnings
from collections import namedtuple

import numpy as np

import jax
import jax.numpy as jnp
import optax
from jax import random
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import constrain_fn, potential_energy
from numpyro.util import is_prng_key

from numpyro_ebm.core import kinetic, schedules, validation
from numpyro_ebm.core.batches import batch_indices
from numpyro_ebm.core.langevin import LangevinState, langevin_step
from numpyro_ebm.infer.base import KernelState, LangevinKernelBase

__all__ = ["SGLD", "SGHMC", "SGLDState", "SGHMCState"]

_CV_FIELDS = ("centre", "centre_grad")

SGLDState = namedtuple("SGLDState", KernelState._fields + _CV_FIELDS)
SGLDState.__doc__ = """
State of :class:`SGLD`: the fields of :data:`~numpyro_ebm.infer.base.KernelState`
(``accept_prob`` is NaN: nothing is accepted or rejected) and

- **centre** - the control variates' centre (the mode), unconstrained;
  ``None`` without control variates.
- **centre_grad** - the full-data gradient of the potential at the centre.
"""

SGHMCState = namedtuple("SGHMCState", KernelState._fields + _CV_FIELDS + ("momentum",))
SGHMCState.__doc__ = """
State of :class:`SGHMC`: the fields of :class:`SGLDState` and

- **momentum** - the whitened momentum (a flat vector), carried from step to
  step.
"""


def check_subsample_plates(model_trace):
    """``{name: (size, subsample_size)}`` of the plates that subsample;
    a ValueError for a plate whose subsample is larger than the plate."""
    plates = {}
    for name, site in model_trace.items():
        if site["type"] != "plate":
            continue
        size, sub = site["args"]
        if sub is None or sub == size:
            continue
        if sub > size:
            raise ValueError(
                f"plate '{name}' has subsample_size={sub} but only size={size}: a "
                "minibatch cannot be larger than the data."
            )
        plates[name] = (int(size), int(sub))
    return plates


class SubsampledPotential:
    """The potential of a model whose plates subsample.

    Calling it gives the full-data potential (every plate at all its
    indices); :meth:`draw` gives fresh minibatch indices and :meth:`on` the
    potential of one minibatch, ``size / k``-scaled by NumPyro's plates.
    """

    def __init__(self, model, plates, model_args, model_kwargs):
        self.model = model
        self.plates = plates
        self.args = model_args
        self.kwargs = model_kwargs

    def draw(self, rng_key):
        keys = random.split(rng_key, max(len(self.plates), 1))
        return {
            name: batch_indices(k, size, sub)
            for k, (name, (size, sub)) in zip(keys, self.plates.items(), strict=False)
        }

    def on(self, indices):
        model = substitute(self.model, data=indices)
        return lambda z: potential_energy(model, self.args, self.kwargs, z)

    def __call__(self, z):
        full = {name: jnp.arange(size) for name, (size, _) in self.plates.items()}
        with warnings.catch_warnings():
            # NumPyro notes that the indices outnumber `subsample_size`: here
            # they are meant to, and the plates' scales are then 1
            warnings.filterwarnings("ignore", "subsample_size does not match")
            return self.on(full)(z)


def find_mode(potential_fn, z, max_steps=500, tol=1e-5):
    """Minimise ``potential_fn`` from ``z`` by L-BFGS (Optax):
    ``(mode, gradient norm there, steps)``."""
    flat, unravel = ravel_pytree(z)

    def f(x):
        return potential_fn(unravel(x))

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def cond(carry):
        _, state, k = carry
        grad = optax.tree_utils.tree_get(state, "grad")
        scale = 1.0 + jnp.abs(optax.tree_utils.tree_get(state, "value"))
        return (k == 0) | ((k < max_steps) & (jnp.linalg.norm(grad) > tol * scale))

    def body(carry):
        x, state, k = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(x, updates), state, k + 1

    x, state, k = jax.lax.while_loop(cond, body, (flat, opt.init(flat), 0))
    grad = jax.grad(f)(x)
    return unravel(x), jnp.linalg.norm(grad), k


_SG_PARAMS = """
    :param model: Python callable containing NumPyro primitives; the plates
        whose ``subsample_size`` is below their size are subsampled at every
        step. Its latent sites must be continuous and global (outside the
        subsampled plates).
    :param step_size: a positive float, a 1-D array of per-iteration step
        sizes (entry ``k`` at iteration ``k`` of warm-up and sampling
        together; the last held after the end) or a callable of the
        iteration, e.g. :func:`~numpyro_ebm.polynomial_schedule` for the
        decreasing steps of Welling & Teh (2011).
    :param bool control_variates: replace the minibatch gradient by
        ``grad U(c) + grad U_B(z) - grad U_B(c)`` around a centre ``c``, the
        posterior mode, found at initialisation by L-BFGS on the full data
        (one full-data pass per L-BFGS step); chains then start at the mode
        unless ``init_params`` are given. Each step then costs two minibatch
        gradients, and the gradient noise vanishes as ``z`` approaches ``c``
        (Baker et al. 2019).
    :param int mode_max_steps: L-BFGS iterations allowed for the mode.
    :param inverse_mass_matrix: a fixed inverse mass matrix (1-D diagonal,
        or 2-D with ``dense_mass=True``) preconditioning the moves; identity
        by default.
    :param bool dense_mass: whether ``inverse_mass_matrix`` is dense.
    :param init_strategy: a per-site initialisation function."""


class _StochasticGradient(LangevinKernelBase):
    """Shared set-up of :class:`SGLD` and :class:`SGHMC`."""

    _reports_acceptance = False

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        control_variates=False,
        mode_max_steps=500,
        inverse_mass_matrix=None,
        dense_mass=False,
        init_strategy=init_to_uniform,
    ):
        name = type(self).__name__
        if potential_fn is not None or model is None:
            raise ValueError(
                f"{name} draws its minibatches from the model's subsampled plates, "
                "so it needs `model` (with numpyro.plate(..., subsample_size=k)); "
                "for a potential of your own on the full data use ne.ULA or "
                "ne.UnderdampedLangevin."
            )
        if step_size is None:
            raise ValueError(
                f"{name} needs `step_size` (a float, an array of per-iteration "
                "steps or a callable schedule such as ne.polynomial_schedule)."
            )
        if not isinstance(control_variates, bool):
            raise ValueError("`control_variates` must be True or False.")
        self._control_variates = control_variates
        self._mode_max_steps = validation.positive_integer(
            "mode_max_steps", mode_max_steps
        )
        self._plates = None
        super().__init__(
            model,
            None,
            step_size=validation.schedule("step_size", step_size),
            adapt_step_size=False,
            adapt_mass_matrix=False,
            dense_mass=dense_mass,
            inverse_mass_matrix=inverse_mass_matrix,
            init_strategy=init_strategy,
            pool_chains=False,
        )

    @property
    def default_fields(self):
        return ("z", "diverging", "potential_energy", "adapt_state.step_size")

    def get_diagnostics_str(self, state):
        step_size = float(np.mean(state.adapt_state.step_size))
        return (
            f"step size {step_size:.2e}. divergences={int(np.sum(state.num_diverging))}"
        )

    def _check_init(self, num_warmup):
        validation.schedule_length(
            "step_size", self._step_size, num_warmup, what="the warm-up alone"
        )

    def _setup_model(self, rng_key, init_params, model_args, model_kwargs):
        # the plates checked, the base's set-up (site checks, initial values),
        # then the potential replaced by one that draws the plates' indices
        key = rng_key if is_prng_key(rng_key) else rng_key[0]
        model_trace = trace(seed(self._model, key)).get_trace(
            *model_args, **model_kwargs
        )
        self._plates = plates = check_subsample_plates(model_trace)
        params = super()._setup_model(rng_key, init_params, model_args, model_kwargs)
        model = self._model

        def potential_fn_gen(*args, **kwargs):
            return SubsampledPotential(model, plates, args, kwargs)

        def postprocess_fn(*args, **kwargs):
            # deterministic sites inside a subsampled plate are reported for
            # the plate's first `subsample_size` indices
            first = {name: jnp.arange(sub) for name, (_, sub) in plates.items()}
            fixed = substitute(model, data=first)
            return lambda z: constrain_fn(fixed, args, kwargs, z, True)

        self._potential_fn_gen = potential_fn_gen
        self._postprocess_fn = postprocess_fn
        if init_params is not None:
            return init_params
        if self._control_variates:  # start at the centre
            potential = potential_fn_gen(*model_args, **model_kwargs)
            mode = lambda z: self._mode(potential, z)[0]  # noqa: E731
            params = mode(params) if is_prng_key(rng_key) else jax.vmap(mode)(params)
        return params

    def _mode(self, potential, z):
        mode, grad_norm, steps = find_mode(potential, z, self._mode_max_steps)
        name = type(self).__name__

        def warn(grad_norm, steps):
            if not np.all(np.isfinite(grad_norm)) or int(np.max(steps)) >= (
                self._mode_max_steps
            ):
                warnings.warn(
                    f"{name}: the mode for the control variates was not found in "
                    f"{self._mode_max_steps} L-BFGS steps (gradient norm "
                    f"{float(np.max(grad_norm)):.3g} there); the gradient noise is "
                    "lowest near the centre, so raise `mode_max_steps`.",
                    RuntimeWarning,
                    stacklevel=2,
                )

        jax.debug.callback(warn, grad_norm, steps)
        return mode, grad_norm

    def _init_extras(self, rng_key, z, size, adapt_state):
        if not self._control_variates:
            return {"centre": None, "centre_grad": None}
        potential = self.get_potential_fn(*self._init_args)
        centre, _ = self._mode(potential, z)
        return {"centre": centre, "centre_grad": jax.grad(potential)(centre)}

    def init(
        self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None
    ):
        model_kwargs = {} if model_kwargs is None else model_kwargs
        self._init_args = (model_args, model_kwargs)
        try:
            return super().init(
                rng_key, num_warmup, init_params, model_args, model_kwargs
            )
        finally:
            self._init_args = None

    def _batch_potential(self, rng_key, state, potential_fn):
        """The minibatch potential of this step (with the control variates'
        linear term) and that term's slope, for reporting ``U_B`` itself."""
        batch_potential = potential_fn.on(potential_fn.draw(rng_key))
        if not self._control_variates:
            return batch_potential, None
        grad_centre = jax.grad(batch_potential)(state.centre)
        slope = ravel_pytree(state.centre_grad)[0] - ravel_pytree(grad_centre)[0]
        slope = jax.lax.stop_gradient(slope)

        def controlled(z):
            return batch_potential(z) + jnp.dot(slope, ravel_pytree(z)[0])

        return controlled, slope

    @staticmethod
    def _reported(pe, z, slope):
        if slope is None:
            return pe
        return pe - jnp.dot(slope, ravel_pytree(z)[0])

    def _check_health(self, i, state, report=True):
        """Warn when most proposals diverge (a step size far too large)."""
        since = i - self._num_warmup
        milestones = jnp.asarray([100, 1000, 10_000, 100_000])
        check = ((i == self._num_warmup) & (self._num_warmup >= 20)) | jnp.any(
            since == milestones
        )
        name = type(self).__name__
        num_warmup = self._num_warmup

        def emit(i, num_diverging):
            i = int(i)
            phase = "warm-up" if i <= num_warmup else "sampling"
            count = i if i <= num_warmup else i - num_warmup
            divergent = float(np.mean(num_diverging)) / max(count, 1)
            if divergent > 0.5:
                warnings.warn(
                    f"{name}: {divergent:.0%} of the {count} {phase} steps diverged "
                    "(non-finite potential or gradient) and were not taken: the "
                    "step size is too large.",
                    RuntimeWarning,
                    stacklevel=2,
                )

        jax.lax.cond(
            check & report,
            lambda: jax.debug.callback(emit, i, state.num_diverging),
            lambda: None,
        )


def _no_acceptance(info):
    return info._replace(accept_prob=jnp.full_like(info.accept_prob, jnp.nan))


class SGLD(_StochasticGradient):
    __doc__ = f"""Stochastic-gradient Langevin dynamics (Welling & Teh 2011).

    One step is the unadjusted Langevin move
    ``z' = z - h A grad U_B(z) + sqrt(2 h) A^(1/2) xi`` with ``U_B`` the
    potential of a fresh minibatch, rescaled to the full data by the model's
    subsampled plates (``numpyro.plate(name, N, subsample_size=k)``). There
    is no accept/reject, so the chain is biased: by the step size as
    :class:`~numpyro_ebm.ULA` is, and by the gradient noise, which adds about
    ``h^2 Var(grad U_B) / 2`` per step; on a Gaussian posterior with
    precision ``a`` and a fixed ``h`` the stationary variance is
    ``(2 h + h^2 v) / (1 - (1 - h a)^2)``, ``v`` the variance of the
    minibatch gradient. A decreasing ``step_size`` schedule removes both
    biases asymptotically; control variates remove most of the noise near the
    mode. ``accept_prob`` is NaN.
    {_SG_PARAMS}

    **Example**

    .. doctest::

        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", y.shape[0], subsample_size=100):
        ...         batch = numpyro.subsample(y, event_dim=0)
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=batch)
        >>> y = 2.0 + jax.random.normal(jax.random.key(1), (10_000,))
        >>> mcmc = MCMC(ne.SGLD(model, step_size=1e-5), num_warmup=200,
        ...             num_samples=500, progress_bar=False)
        >>> mcmc.run(jax.random.key(0), y)
        >>> round(float(mcmc.get_samples()["mu"].mean()), 1)
        2.0

    **References**

    1. Welling & Teh (2011), *Bayesian learning via stochastic gradient
       Langevin dynamics*, ICML.
    2. Baker, Fearnhead, Fox & Nemeth (2019), *Control variates for
       stochastic gradient MCMC*, Statistics and Computing 29.
    3. Vollmer, Zygalakis & Teh (2016), *Exploration of the (non-)asymptotic
       bias and variance of stochastic gradient Langevin dynamics*, JMLR 17.
    """

    _state_type = SGLDState

    def _transition(self, rng_key, state, potential_fn, metric):
        key_batch, key_move = random.split(rng_key)
        step_size = schedules.evaluate(self._step_size, state.i)
        potential, slope = self._batch_potential(key_batch, state, potential_fn)
        new, info = langevin_step(
            key_move,
            LangevinState(state.z, state.potential_energy, state.z_grad),
            potential,
            step_size,
            metric,
            adjusted=False,
        )
        pe = self._reported(new.potential_energy, new.position, slope)
        return (
            new.position,
            pe,
            new.potential_energy_grad,
            _no_acceptance(info),
            step_size,
            {},
        )


class SGHMC(_StochasticGradient):
    __doc__ = f"""Stochastic-gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin 2014).

    Kinetic Langevin dynamics with minibatch gradients: each step is the
    OBABO step of :class:`~numpyro_ebm.UnderdampedLangevin` (momentum
    refreshment ``exp(-friction h / 2)`` on both sides of a leapfrog step)
    with the gradient of a fresh minibatch's potential, rescaled to the full
    data by the model's subsampled plates, and no accept/reject. The friction
    dissipates the energy that the gradient noise injects; the noise's bias
    falls with the step size. One minibatch gradient per step (two with
    control variates).
    {_SG_PARAMS}
    :param float friction: ``gamma``, the momentum's damping rate; larger
        values make the dynamics closer to :class:`SGLD`'s.

    **Example**

    .. doctest::

        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> def model(y):
        ...     mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", y.shape[0], subsample_size=100):
        ...         batch = numpyro.subsample(y, event_dim=0)
        ...         numpyro.sample("y", dist.Normal(mu, 1.0), obs=batch)
        >>> y = 2.0 + jax.random.normal(jax.random.key(1), (10_000,))
        >>> kernel = ne.SGHMC(model, step_size=3e-3, friction=50.0)
        >>> mcmc = MCMC(kernel, num_warmup=200, num_samples=500, progress_bar=False)
        >>> mcmc.run(jax.random.key(0), y)
        >>> round(float(mcmc.get_samples()["mu"].mean()), 1)
        2.0

    **References**

    1. Chen, Fox & Guestrin (2014), *Stochastic gradient Hamiltonian Monte
       Carlo*, ICML.
    2. Leimkuhler, Matthews & Vlaar (2019), *Partitioned integrators for
       thermodynamic parameterization of neural networks*, Found. Data Sci.
    3. Baker, Fearnhead, Fox & Nemeth (2019), *Control variates for
       stochastic gradient MCMC*, Statistics and Computing 29.
    """

    _state_type = SGHMCState

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=None,
        friction=1.0,
        control_variates=False,
        mode_max_steps=500,
        inverse_mass_matrix=None,
        dense_mass=False,
        init_strategy=init_to_uniform,
    ):
        # friction 0 keeps the Hamiltonian's energy level: not ergodic
        validation.positive("friction", friction)
        self._friction = friction
        super().__init__(
            model,
            potential_fn,
            step_size=step_size,
            control_variates=control_variates,
            mode_max_steps=mode_max_steps,
            inverse_mass_matrix=inverse_mass_matrix,
            dense_mass=dense_mass,
            init_strategy=init_strategy,
        )

    def _init_extras(self, rng_key, z, size, adapt_state):
        extras = super()._init_extras(rng_key, z, size, adapt_state)
        momentum = random.normal(rng_key, (size,), jnp.result_type(float))
        return {**extras, "momentum": momentum}

    def _transition(self, rng_key, state, potential_fn, metric):
        key_batch, key_move = random.split(rng_key)
        step_size = schedules.evaluate(self._step_size, state.i)
        potential, slope = self._batch_potential(key_batch, state, potential_fn)
        new, info, _ = kinetic.obabo_step(
            key_move,
            kinetic.KineticState(
                state.z, state.momentum, state.potential_energy, state.z_grad
            ),
            potential,
            step_size,
            self._friction,
            metric,
        )
        pe = self._reported(new.potential_energy, new.position, slope)
        return (
            new.position,
            pe,
            new.potential_energy_grad,
            _no_acceptance(info),
            step_size,
            {"momentum": new.momentum},
        )
