"""The density of a NumPyro model as the estimators see it.

Functions of a :class:`ModelSpec` (what :func:`inspect_model` learns from one
trace of the model): the log joint ``log p_theta(x, z)`` in unconstrained
coordinates, its gradients over particles, mini-batches of subsampled plates,
and the split of a model call's arguments into arrays (arguments of compiled
code) and the rest (static). :mod:`numpyro_ebm.learn.mml` builds the
estimators on these.
"""

import copy
import functools
import warnings
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import random
from jax.extend.core import Var
from numpyro.distributions import biject_to
from numpyro.distributions.constraints import real
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.util import log_density
from numpyro.primitives import Messenger

from numpyro_ebm.core.batches import batch_indices
from numpyro_ebm.distributions import EnergyDistribution

__all__ = [
    "ModelSpec",
    "inspect_model",
    "transforms_depend_on",
    "constrain",
    "plate_scale",
    "log_joint",
    "gradients",
    "latent_gradients",
    "draw_batch",
    "full_batch",
    "gather",
    "scatter",
    "bad_sites",
    "split_arguments",
    "merge_arguments",
    "shape_key",
    "no_contrastive",
]


def _contrastive_energies(fn):
    """The contrastive EnergyDistributions inside ``fn`` (wrappers opened)."""
    if isinstance(fn, EnergyDistribution):
        return [fn] if fn.contrastive else []
    if hasattr(fn, "base_dist"):
        return _contrastive_energies(fn.base_dist)
    return []


def _without_contrastive(fn):
    """``fn`` with any contrastive EnergyDistribution inside made plain."""
    if isinstance(fn, EnergyDistribution) and fn.contrastive:
        fn = copy.copy(fn)
        fn.contrastive = False
    elif hasattr(fn, "base_dist") and not isinstance(fn, EnergyDistribution):
        inner = _without_contrastive(fn.base_dist)
        if inner is not fn.base_dist:
            fn = copy.copy(fn)
            fn.base_dist = inner
    return fn


class no_contrastive(Messenger):
    """Drop the contrastive terms of energy priors (value 0; their gradient is
    in the energy's parameters, or in latents the energy depends on). The
    Metropolis-adjusted moves use it: their acceptance needs values only, and
    skipping the terms saves the prior chains that estimate them."""

    def process_message(self, msg):
        if msg["type"] == "sample" and msg.get("fn") is not None:
            msg["fn"] = _without_contrastive(msg["fn"])


class ModelSpec(NamedTuple):
    """What the estimators need to know of a model: its sites' transforms,
    its initial values (dropped once the state is built) and its subsampled
    plates."""

    model: object
    param_transforms: dict
    latent_transforms: dict
    init_params: dict  # unconstrained
    init_latents: dict  # unconstrained, full size along subsampled plates
    plates: dict  # subsampled plate name -> (size, subsample_size)
    local_axes: dict  # latent site -> (plate name, axis of the plate in the value)
    # whether contrastive terms of energy priors have a gradient in the
    # latents (an energy that depends on another latent): the latents' moves
    # then need them, and otherwise skip their prior chains
    contrastive_latents: bool = False


def _subsampled_plates(tr):
    return {
        name: site["args"]
        for name, site in tr.items()
        if site["type"] == "plate"
        and site["args"][1] is not None
        and site["args"][1] < site["args"][0]
    }


def _trace_for_init(model, rng_key, args, kwargs, init_strategy, full_plates):
    """A trace at the initial values; subsampled plates taken whole if asked."""

    def substitute_fn(site):
        if site["type"] == "plate":
            return full_plates.get(site["name"])
        return init_strategy(site)

    init_model = substitute(seed(model, rng_key), substitute_fn=substitute_fn)
    with warnings.catch_warnings():  # "subsample_size does not match": intended
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        return trace(init_model).get_trace(*args, **kwargs)


def inspect_model(model, rng_key, args, kwargs, init_strategy):
    """The :class:`ModelSpec` of ``model``, from one trace at the initial values."""
    tr = _trace_for_init(model, rng_key, args, kwargs, init_strategy, {})
    plates = _subsampled_plates(tr)
    local_axes = {}
    for name, site in tr.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        frames = [f for f in site["cond_indep_stack"] if f.name in plates]
        if len(frames) > 1:
            raise ValueError(
                f"Sample site '{name}' lies in more than one subsampled plate "
                f"({[f.name for f in frames]}); subsample at most one of them."
            )
        if frames:
            local_axes[name] = (
                frames[0].name,
                len(site["fn"].batch_shape) + frames[0].dim,
            )
    if local_axes:  # keep one particle per data point: initialise them all
        full = {name: jnp.arange(size) for name, (size, _) in plates.items()}
        tr = _trace_for_init(model, rng_key, args, kwargs, init_strategy, full)
    param_transforms, latent_transforms, params, latents = {}, {}, {}, {}
    for name, site in tr.items():
        if site["type"] == "param":
            constraint = site["kwargs"].get("constraint", real)
            param_transforms[name] = biject_to(constraint)
            params[name] = jax.tree.map(  # network parameters are pytrees
                lambda v, t=param_transforms[name]: t.inv(jnp.asarray(v)),
                site["value"],
            )
        elif site["type"] == "sample" and not site["is_observed"]:
            if site["fn"].support.is_discrete:
                raise ValueError(
                    f"Sample site '{name}' is discrete; Langevin-based estimators "
                    "need continuous latent sites."
                )
            latent_transforms[name] = biject_to(site["fn"].support)
            latents[name] = latent_transforms[name].inv(site["value"])
    if not param_transforms:
        raise ValueError(
            "the model has no numpyro.param site: there is nothing to estimate "
            "(use numpyro.infer.MCMC for a model with only latent sites)."
        )
    if not latent_transforms:
        raise ValueError(
            "the model has no latent numpyro.sample site: maximise its likelihood "
            "directly (e.g. numpyro.infer.SVI with an empty guide)."
        )
    spec = ModelSpec(
        model, param_transforms, latent_transforms, params, latents, plates, local_axes
    )
    contrastive = any(
        _contrastive_energies(site["fn"])
        for site in tr.values()
        if site["type"] == "sample"
    )
    if contrastive:
        depends = _contrastive_depends_on_latents(spec, rng_key, args, kwargs)
        spec = spec._replace(contrastive_latents=depends)
    return spec


def _contrastive_depends_on_latents(spec, rng_key, args, kwargs):
    """Whether the contrastive terms' gradient in the latents can be other
    than zero, from the program that computes it (traced, never run): its
    outputs depend on its inputs, or they are constant zeros."""

    def terms(latents_u):
        values = {
            **constrain(spec.param_transforms, spec.init_params),
            **constrain(spec.latent_transforms, latents_u),
            **full_batch(spec),
        }
        model = substitute(seed(spec.model, rng_key), data=values)
        with warnings.catch_warnings():  # whole plates: intended
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            tr = trace(model).get_trace(*args, **kwargs)
        total = 0.0
        for site in tr.values():
            if site["type"] == "sample":
                for energy in _contrastive_energies(site["fn"]):
                    total = total + jnp.sum(energy._contrastive_term())
        return total

    closed = jax.make_jaxpr(jax.grad(terms))(spec.init_latents)
    return _outputs_depend_on_inputs(closed.jaxpr)


def _outputs_depend_on_inputs(jaxpr):
    """Data flow through a jaxpr's equations (an equation with a dependent
    input makes all its outputs dependent: conservative inside loops)."""

    def is_var(v):
        return isinstance(v, Var)

    dependent = set(jaxpr.invars)
    for eqn in jaxpr.eqns:
        if any(is_var(v) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    return any(is_var(v) and v in dependent for v in jaxpr.outvars)


def transforms_depend_on(spec, kind) -> bool:
    """Whether a support's transform holds a value of type ``kind`` (e.g. a
    tracer of the model's arrays: the support depends on the data)."""
    leaves = jax.tree.leaves((spec.param_transforms, spec.latent_transforms))
    return any(isinstance(leaf, kind) for leaf in leaves)


def constrain(transforms, values):
    """Map unconstrained values to their supports, site by site."""
    return {k: jax.tree.map(transforms[k], v) for k, v in values.items()}


def plate_scale(spec, name, batch):
    """``size / subsample_size`` of a local latent's subsampled plate."""
    plate, _ = spec.local_axes.get(name, (None, None))
    if plate is None:
        return 1.0
    return spec.plates[plate][0] / batch[plate].shape[0]


def log_joint(
    spec, params_u, latents_u, args, kwargs, rng_key, batch, contrastive=True
):
    """log p_theta(x, z) in unconstrained coordinates (with the Jacobian of z).

    ``batch`` maps each subsampled plate to its indices; local latents are
    given for those indices only, and NumPyro scales their terms by
    ``size / subsample_size``. ``contrastive=False`` drops the contrastive
    terms of energy priors, which only the parameter gradient needs.
    """
    params = constrain(spec.param_transforms, params_u)
    latents = constrain(spec.latent_transforms, latents_u)
    # seeded: models may draw randomness (contrastive priors, ...)
    with warnings.catch_warnings():  # whole plates at init: intended
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        model = seed(spec.model, rng_key)
        model = model if contrastive else no_contrastive(model)
        lp, _ = log_density(model, args, kwargs, {**params, **latents, **batch})
    for name, value in latents_u.items():
        t = spec.latent_transforms[name]
        jacobian = jnp.sum(t.log_abs_det_jacobian(value, latents[name]))
        lp = lp + plate_scale(spec, name, batch) * jacobian
    return lp


def latent_gradients(spec, params_u, particles, args, kwargs, rng_key, batch):
    """The per-particle latent gradients alone (as in :func:`gradients`),
    without the contrastive terms of energy priors unless they depend on
    the latents (``spec.contrastive_latents``): a latent move need not run
    their prior chains."""
    per_particle = jax.vmap(
        jax.grad(
            lambda z: log_joint(
                spec,
                params_u,
                z,
                args,
                kwargs,
                rng_key,
                batch,
                spec.contrastive_latents,
            )
        )
    )
    grad_latents = per_particle(particles)
    return {k: g / plate_scale(spec, k, batch) for k, g in grad_latents.items()}


def gradients(spec, params_u, particles, args, kwargs, rng_key, batch):
    """Per-particle log joints, the particle-averaged parameter gradient and
    the per-particle latent gradients.

    Under a subsampled plate the parameter gradient is NumPyro's unbiased
    ``size / subsample_size``-scaled one; a local latent's gradient is
    divided by that scale, which leaves its exact conditional gradient
    (its own prior and likelihood terms, unscaled).
    """
    per_particle = jax.vmap(
        jax.value_and_grad(functools.partial(log_joint, spec), argnums=(0, 1)),
        in_axes=(None, 0, None, None, None, None),
    )
    lp, (grad_params, grad_latents) = per_particle(
        params_u, particles, args, kwargs, rng_key, batch
    )
    grad_latents = {k: g / plate_scale(spec, k, batch) for k, g in grad_latents.items()}
    return lp, jax.tree.map(lambda g: g.mean(0), grad_params), grad_latents


# ------------------------------------------------------------ mini-batches
def draw_batch(spec, key):
    """Indices for each subsampled plate (distinct, in O(subsample size))."""
    plates = spec.plates
    keys = random.split(key, max(len(plates), 1))
    return {
        name: batch_indices(k, size, sub)
        for k, (name, (size, sub)) in zip(keys, plates.items(), strict=False)
    }


def full_batch(spec):
    return {name: jnp.arange(size) for name, (size, _) in spec.plates.items()}


def gather(spec, particles, batch):
    """The particles' local latents at the batch's indices."""
    out = dict(particles)
    for name, (plate, axis) in spec.local_axes.items():
        out[name] = jnp.take(particles[name], batch[plate], axis=axis + 1)
    return out


def scatter(spec, particles, moved, batch):
    """Write the moved batch back into the full particles."""
    out = dict(moved)
    for name, (plate, axis) in spec.local_axes.items():
        index = (slice(None),) * (axis + 1) + (batch[plate],)
        out[name] = particles[name].at[index].set(moved[name])
    return out


def bad_sites(spec, params_u, particles, args, kwargs, rng_key):
    """Which sites have a non-finite log density at the first particle."""
    first = jax.tree.map(lambda x: x[0], particles)
    params = constrain(spec.param_transforms, params_u)
    latents = constrain(spec.latent_transforms, first)
    data = {**params, **latents, **full_batch(spec)}
    model = substitute(seed(spec.model, rng_key), data=data)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match")
        tr = trace(model).get_trace(*args, **kwargs)
    with warnings.catch_warnings():  # out-of-support values are what we look for
        warnings.simplefilter("ignore", UserWarning)
        bad = [
            name
            for name, site in tr.items()
            if site["type"] == "sample"
            and not bool(jnp.all(jnp.isfinite(site["fn"].log_prob(site["value"]))))
        ]
    return f"site(s) {bad} have non-finite log density" if bad else "see the model"


class _Dynamic:
    """Placeholder for an array argument in the static part of a call."""

    def __repr__(self):
        return "<array>"


_DYNAMIC = _Dynamic()


def split_arguments(args, kwargs):
    """``(arrays, static)``: a model call's array leaves and the rest."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    is_array = [isinstance(x, jax.Array | np.ndarray) for x in leaves]
    dynamic = [x for x, a in zip(leaves, is_array, strict=True) if a]
    static = tuple(_DYNAMIC if a else x for x, a in zip(leaves, is_array, strict=True))
    # 1, 1.0 and True compare equal but are not the same argument
    types = tuple(type(x).__name__ for x in static)
    return dynamic, (treedef, static, types)


def shape_key(arrays):
    return tuple((jnp.shape(x), jnp.result_type(x)) for x in arrays)


def merge_arguments(dynamic, static):
    treedef, leaves, _ = static
    arrays = iter(dynamic)
    values = [next(arrays) if x is _DYNAMIC else x for x in leaves]
    return jax.tree.unflatten(treedef, values)
