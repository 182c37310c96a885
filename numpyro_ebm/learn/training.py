"""The training loop shared by every learner (EBM, score matching, ...).

A learner supplies one pure step, ``step(state, data) -> (state, metrics)``;
this module runs it: one compiled loop (``lax.fori_loop`` writing the metrics
into a preallocated history) called chunk by chunk so that a progress bar can
be shown and checkpoints written between chunks, without retracing. With
several devices the minibatch is sharded along its first axis
(``jax.sharding``) and the parameters replicated; XLA inserts the reductions.
"""

import copy
import dataclasses
import math
import re
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tqdm

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from numpyro_ebm.core import validation
from numpyro_ebm.core.batches import batch_indices
from numpyro_ebm.learn import distributed
from numpyro_ebm.learn.checkpoints import (
    Checkpointer,
    array_digest,
    function_digest,
    optimizer_digest,
    rows_digest,
    structure_digest,
)
from numpyro_ebm.learn.host_data import Blocks, HostBlock, HostRows

__all__ = [
    "EMAState",
    "ema_weights",
    "ema_params",
    "TrainState",
    "RunResult",
    "TrainResult",
    "Learner",
    "split_network",
    "run_loop",
]

#: most steps run between two host-side checks of a run
_MAX_CHUNK = 1000


class TrainState(NamedTuple):
    """Everything a run carries from one step to the next: the one state type
    of every learner (:class:`~numpyro_ebm.EBM`, score matching) and every
    maximum-marginal-likelihood estimator (:class:`~numpyro_ebm.PGD`, ...).

    Pass a run's ``result.state`` as ``init_state`` to go on from it.

    Attributes:
        step: number of updates done.
        params: what the optimiser moves: the network's parameters (an
            ``nnx.State`` or a pytree), or the model's unconstrained
            ``param`` sites (a dict keyed by site).
        opt_state: the Optax optimiser state (``()`` for PGD and IPLA, whose
            parameter move is a Langevin step; for SOUL, ``(optimiser state,
            (weighted sum, total weight))`` of its averaged iterates).
        sampler_state: what the sampler carries: PCD's buffer, tempered chains,
            or the MML estimators' :class:`~numpyro_ebm.ParticleState`;
            ``()`` when there is none.
        rng_key: raw key data (``jax.random.key_data``) for the next step, so
            that the state can be checkpointed as plain arrays.
    """

    step: jax.Array
    params: object
    opt_state: object
    sampler_state: object
    rng_key: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class RunResult:
    """What every learner's and estimator's ``run`` returns, like
    :class:`numpyro.infer.svi.SVIRunResult`.

    Attributes:
        params: the estimate (constrained for the MML estimators).
        state: the final :class:`TrainState` (pass it as ``init_state`` to go
            on).
        history: per-step metrics, a dict of arrays with ``num_steps`` rows
            (the MML estimators' ``params`` entry is a dict of such traces).
    """

    params: object
    state: TrainState
    history: dict

    def to_datatree(self, burn_in=0):
        """The run as an ArviZ ``DataTree`` (one chain, one draw per step).

        ``sample_stats`` holds the per-step metrics after ``burn_in`` steps and
        ``posterior`` the traced parameters (the MML estimators' ``params``
        history), so ``arviz.summary`` gives their time averages with Monte
        Carlo errors and ``arviz.plot_trace`` the training curves.

        Example:
            >>> import jax, jax.numpy as jnp, optax
            >>> from flax import nnx
            >>> import numpyro_ebm as ne
            >>> data = jax.random.normal(jax.random.key(0), (64, 2))
            >>> learner = ne.ScoreMatching(ne.nn.EnergyMLP(2, (8,), rngs=nnx.Rngs(0)),
            ...                            optax.adam(1e-3))
            >>> result = learner.run(jax.random.key(1), 20, data, batch_size=16,
            ...                      progress_bar=False)
            >>> tree = result.to_datatree(burn_in=5)
            >>> tree["sample_stats"]["loss"].shape
            (1, 15)
        """
        import arviz as az

        burn_in = validation.non_negative_integer("burn_in", burn_in)

        def trace(x):
            return np.asarray(x)[burn_in:][None]

        groups = {
            "sample_stats": {
                k: trace(v) for k, v in self.history.items() if not isinstance(v, dict)
            },
            **self._extra_groups(),
        }
        if isinstance(self.history.get("params"), dict):
            groups["posterior"] = {
                k: trace(v) for k, v in self.history["params"].items()
            }
        with warnings.catch_warnings():  # short runs: one chain of few draws
            warnings.filterwarnings("ignore", message="Found chain dimension")
            return az.from_dict(groups)

    def _extra_groups(self):
        return {}


@dataclasses.dataclass(frozen=True, eq=False)
class TrainResult(RunResult):
    """What a learner's ``run`` returns: a :class:`RunResult` with the trained
    network.

    Attributes:
        params: the trained parameters.
        state: the final :class:`TrainState` (pass it as ``init_state`` to
            continue training).
        history: per-step metrics, a dict of arrays of length ``num_steps``.
        module: the trained network (an NNX module, or ``(apply_fn, params)``
            when a function and its parameters were given).
    """

    module: object = None


def split_network(net):
    """``(apply, params, rebuild)`` for an NNX module or an ``(apply_fn, params)`` pair.

    ``apply(params, *args)`` calls the network with the given parameters and
    ``rebuild(params)`` returns the network object holding them.

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> from numpyro_ebm.nn import EnergyMLP
        >>> apply, params, rebuild = split_network(EnergyMLP(2, (8,), rngs=nnx.Rngs(0)))
        >>> apply(params, jnp.zeros((3, 2))).shape
        (3,)
    """
    if isinstance(net, nnx.Module):
        graphdef, params, rest = nnx.split(net, nnx.Param, ...)

        def apply(params, *args, **kwargs):
            return nnx.merge(graphdef, params, rest)(*args, **kwargs)

        return apply, params, lambda params: nnx.merge(graphdef, params, rest)
    if isinstance(net, tuple) and len(net) == 2 and callable(net[0]):
        fn, params = net
        return fn, params, lambda params: (fn, params)
    raise ValueError(
        "the network must be a flax.nnx.Module or a pair (apply_fn, params) with "
        "apply_fn(params, x); a plain function without parameters cannot be trained."
    )


def check_data(data, batch_size):
    """Validate training data and the batch size; returns ``data`` as an array.

    ``data`` has one row per data point, of any shape (vectors, images, ...).
    A :class:`numpy.memmap` or :class:`~numpyro_ebm.learn.host_data.HostRows`
    stays on the host (checked in chunks); anything else becomes a device
    array.
    """
    if isinstance(data, np.memmap):
        data = HostRows(data, batch_size)
    host = isinstance(data, HostRows)
    if not host:
        data = jnp.asarray(data)
    if data.ndim >= 1 and data.shape[0] == 0:
        raise ValueError(f"`data` is empty (shape {data.shape}): it needs rows.")
    if data.ndim < 2:
        raise ValueError(
            "`data` must have shape (num_data, *event_shape), one row per data "
            f"point (a vector, an image, ...), got shape {data.shape}; for scalar "
            "data use data[:, None]."
        )
    if host:  # read in chunks, cast to a float type; once per run (the
        # learner's init checks again)
        bad = 0 if data.finite else data.non_finite_rows()
        if bad:
            raise ValueError(f"`data` has {bad} row(s) with NaN or infinite values.")
        data.finite = True
    else:
        if not jnp.issubdtype(data.dtype, jnp.floating):
            data = data.astype(jnp.result_type(float))
        if not bool(jnp.all(jnp.isfinite(data))):
            flat = data.reshape(data.shape[0], -1)
            bad = int(jnp.sum(~jnp.all(jnp.isfinite(flat), -1)))
            raise ValueError(f"`data` has {bad} row(s) with NaN or infinite values.")
    batch_size = validation.positive_integer("batch_size", batch_size)
    if batch_size > data.shape[0]:
        raise ValueError(
            f"`batch_size` ({batch_size}) is larger than the data ({data.shape[0]} rows)."
        )
    return data


def check_network_input(apply, params, example, what="network"):
    """Evaluate the network abstractly on ``example``; raise a clear ValueError."""
    try:
        return jax.eval_shape(apply, params, example)
    except Exception as err:  # shape errors come in many types
        raise ValueError(
            f"the {what} cannot be applied to data of shape {example.shape[1:]} "
            f"(per row): {type(err).__name__}: {err}"
        ) from err


def shard_batch(x, mesh):
    """Constrain a per-example array to be split over the mesh's data axis."""
    if mesh is None:
        return x
    spec = PartitionSpec(distributed.AXIS, *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def run_loop(
    step: Callable,
    state: TrainState,
    data,
    num_steps: int,
    *,
    progress_bar: bool = True,
    num_devices: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    description: str = "train",
    check: Callable | None = None,
    cache: dict | None = None,
    cache_key=None,
    fingerprint: dict | None = None,
    resume: bool = True,
    mesh=None,
    split_rows: bool = True,
):
    """Run ``num_steps`` of ``step(state, data, mesh) -> (state, metrics)``.

    Returns ``(state, history)``. With ``checkpoint_dir`` the state and the
    history so far are saved with Orbax every ``checkpoint_every`` steps and at
    the end (all kept; see :mod:`numpyro_ebm.learn.checkpoints`); if the
    directory holds checkpoints of the same run (same ``fingerprint``), the
    run resumes from the latest one and ends exactly where an uninterrupted
    run would, also when ``num_steps`` has grown. ``check(window, lower)``, if given, is called on the host with
    each chunk's metrics (iterations ``lower, lower + 1, ...``) and may raise
    to stop the run.

    ``data`` is an argument of the compiled loop, never a constant inside it:
    an array (this process's rows, with several processes), split over the
    devices by rows (:func:`numpyro_ebm.learn.distributed.put_rows`), or
    :class:`~numpyro_ebm.learn.distributed.Rows` already split; ``step``
    receives the :class:`~numpyro_ebm.learn.distributed.Rows`; with
    ``split_rows=False`` any pytree, replicated on every device. ``mesh``
    (default: :func:`~numpyro_ebm.learn.distributed.make_mesh` of
    ``num_devices``) is the device mesh.
    With ``cache`` (a dict owned by the caller) the compiled loop is kept
    under ``cache_key``, which must identify ``step``: a later run with the
    same key and inputs of the same shapes compiles nothing.
    """
    num_steps = validation.positive_integer("num_steps", num_steps)
    if checkpoint_every is not None:
        checkpoint_every = validation.positive_integer(
            "checkpoint_every", checkpoint_every
        )
        if checkpoint_dir is None:
            raise ValueError(
                "`checkpoint_every` needs `checkpoint_dir`: there is nowhere to "
                "save the checkpoints."
            )
    checkpointer = None
    if checkpoint_dir is not None:  # refuse an unusable directory before any work
        checkpointer = Checkpointer(checkpoint_dir, fingerprint or {}, resume=resume)
    mesh = distributed.make_mesh(num_devices) if mesh is None else mesh
    devices = None if mesh is None else tuple(d.id for d in mesh.devices.flat)
    host = isinstance(data, HostRows)
    if host:
        block_length = data.block_length(_MAX_CHUNK)
        blocks = Blocks(data, np.zeros(2, np.uint32), 0, block_length, mesh)
        example = blocks.abstract()
    elif split_rows and not isinstance(data, distributed.Rows):
        data = distributed.put_rows(data, mesh)
    elif not split_rows:
        data = distributed.replicate(data, mesh)
    if not host:
        example = data
    # weak types (e.g. from Python scalars) would change after one step and
    # make the loop compile a second time
    state = distributed.replicate(strong_types(state), mesh)
    run_chunk, metrics_shape = None, None
    if cache is not None:
        run_chunk = cache.get(("loop", cache_key, devices))
        shapes_key = ("metrics", cache_key, devices, _shapes(state, example))
        metrics_shape = cache.get(shapes_key)
    if metrics_shape is None:
        metrics_shape = jax.eval_shape(lambda s, d: step(s, d, mesh)[1], state, example)
        if cache is not None:
            cache[shapes_key] = metrics_shape
    history = jax.tree.map(
        lambda m: np.zeros((num_steps, *m.shape), m.dtype), metrics_shape
    )
    start_step = 0
    if checkpointer is not None and checkpointer.latest() is not None:
        start_step = int(checkpointer.latest())
        replicated = None
        if distributed.is_multiprocess():
            replicated = NamedSharding(mesh, PartitionSpec())
        state, history = checkpointer.restore(start_step, state, history, replicated)
    if distributed.is_multiprocess():
        history = distributed.replicate(history, mesh)
    else:  # as device arrays, like the loop's outputs: one compiled version
        history = jax.tree.map(jnp.asarray, history)

    if run_chunk is None:

        @jax.jit
        def run_chunk(state, history, data, lower, upper):
            def body(i, carry):
                state, history = carry
                state, metrics = step(state, data, mesh)
                history = jax.tree.map(lambda h, m: h.at[i].set(m), history, metrics)
                return state, history

            return jax.lax.fori_loop(lower, upper, body, (state, history))

        if cache is not None:
            cache[("loop", cache_key, devices)] = run_chunk

    # chunks of at most _MAX_CHUNK steps even without a progress bar, so that
    # `check` stops a failing run soon after the failure
    chunk = max(1, math.ceil(num_steps / 20)) if progress_bar else num_steps
    chunk = min(chunk, _MAX_CHUNK)
    bounds = set(range(start_step, num_steps, chunk)) | {num_steps}
    if checkpoint_every is not None:  # checkpoints land on its multiples exactly
        bounds |= set(range(checkpoint_every, num_steps, checkpoint_every))
    bounds = sorted(b for b in bounds if b >= start_step)
    if host:  # a chunk is one block of minibatches at most
        bounds = sorted(
            set(bounds)
            | {
                b
                for lower, upper in zip(bounds[:-1], bounds[1:], strict=True)
                for b in range(lower, upper, block_length)
            }
        )
        local = distributed.to_local(state)
        blocks = Blocks(data, local.rng_key, local.step, block_length, mesh)
    chunks = list(zip(bounds[:-1], bounds[1:], strict=True))
    pending = None  # (a finished run resumed at its end has no chunks)
    if host and chunks:
        pending = blocks.gather(*blocks.indices(chunks[0][1] - chunks[0][0]))
    bar = tqdm.tqdm(
        total=num_steps, initial=start_step, desc=description, disable=not progress_bar
    )
    with bar:
        for k, (lower, upper) in enumerate(chunks):
            following = None
            if host and k + 1 < len(chunks):  # the next block's indices, then
                # its rows gathered while the devices run this block
                following = blocks.indices(chunks[k + 1][1] - chunks[k + 1][0])
            state, history = _run_chunk(
                run_chunk,
                state,
                history,
                pending if host else data,
                lower,
                upper,
                checkpointer,
            )
            if following is not None:
                pending = blocks.gather(*following)
            if check is not None or progress_bar:
                recent = jax.device_get(
                    _window(distributed.to_local(history), lower, upper)
                )
            if check is not None:
                check(recent, lower)
            if progress_bar:
                bar.set_postfix_str(_postfix(recent), refresh=False)
                bar.update(upper - lower)
            if checkpointer is not None and (
                upper == num_steps
                or (checkpoint_every is not None and upper % checkpoint_every == 0)
            ):
                checkpointer.save(upper, state, history)
    if checkpointer is not None:
        checkpointer.close()
    return distributed.to_local(state), distributed.to_local(history)


def _run_chunk(run_chunk, state, history, data, lower, upper, checkpointer):
    """One chunk of the loop; with several processes, a failed collective
    (another process died) becomes an error that says where to resume."""
    if not distributed.is_multiprocess():
        return run_chunk(state, history, data, lower, upper)
    try:
        return jax.block_until_ready(run_chunk(state, history, data, lower, upper))
    except jax.errors.JaxRuntimeError as err:
        latest = None if checkpointer is None else checkpointer.latest()
        where = (
            f"the latest checkpoint, at step {latest} in {checkpointer.directory!r}"
            if latest is not None
            else "no checkpoint (pass `checkpoint_dir` and `checkpoint_every` to "
            "be able to resume)"
        )
        raise RuntimeError(
            f"process {jax.process_index()} of {jax.process_count()}: steps "
            f"{lower}..{upper} failed in a collective with the other processes "
            f"(one of them has probably stopped): {err}. Restart every process; "
            f"a run with the same arguments resumes from {where}."
        ) from err


def describe(obj, config):
    """``"Name(key=value, ...)"`` without memory addresses, for fingerprints."""
    items = ", ".join(f"{k}={v!r}" for k, v in sorted(config.items()))
    return re.sub(r" at 0x[0-9a-f]+", "", f"{type(obj).__name__}({items})")


def tree_difference(expected, given) -> str:
    """How ``given`` differs from ``expected`` in structure or leaf shapes
    (``""`` when they agree), naming the first differing entry."""
    expected_leaves = jax.tree_util.tree_flatten_with_path(expected)[0]
    given_leaves = jax.tree_util.tree_flatten_with_path(given)[0]
    expected_paths = {jax.tree_util.keystr(p): v for p, v in expected_leaves}
    given_paths = {jax.tree_util.keystr(p): v for p, v in given_leaves}
    missing = [p for p in expected_paths if p not in given_paths]
    extra = [p for p in given_paths if p not in expected_paths]
    if missing or extra:
        return (
            f"lack {missing[:3]} and have {extra[:3]} where the expected entries are"
            if missing and extra
            else (f"lack {missing[:3]}" if missing else f"have extra {extra[:3]}")
        )
    for path, value in expected_paths.items():
        if jnp.shape(value) != jnp.shape(given_paths[path]):
            return (
                f"entry {path} has shape {jnp.shape(given_paths[path])}, expected "
                f"{jnp.shape(value)}"
            )
    return ""


def strong_types(tree):
    """``tree`` with every weakly typed leaf (from a Python scalar) made strong."""

    def strong(x):
        if getattr(x, "weak_type", False):
            return jnp.array(x, dtype=x.dtype)
        return x

    return jax.tree.map(strong, tree)


def _shapes(*trees):
    leaves, treedef = jax.tree.flatten(trees)
    return treedef, tuple(
        (jnp.shape(x), jnp.result_type(x), getattr(x, "weak_type", False))
        for x in leaves
    )


def _all_finite(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _window(history, lower, upper):
    return jax.tree.map(lambda h: h[lower:upper], history)


def _postfix(recent):
    parts = []
    for name in ("loss", "log_joint", "energy_data", "energy_negative", "energy_scale"):
        if name in recent:
            parts.append(f"{name}={float(np.mean(recent[name])):.4g}")
    return ", ".join(parts)


def new_key(state: TrainState):
    """Split the state's raw key: ``(state with the next key, a typed key for this step)``."""
    key, sub = jax.random.split(jax.random.wrap_key_data(state.rng_key))
    return state._replace(rng_key=jax.random.key_data(key)), sub


def init_state(rng_key, params, optimizer, sampler_state=()):
    """A fresh :class:`TrainState`."""
    return TrainState(
        jnp.zeros((), jnp.int32),
        params,
        optimizer.init(params),
        sampler_state,
        jax.random.key_data(rng_key),
    )


def next_batch(state, data, batch_size, mesh=None):
    """The step's minibatch: ``(state with the next key, batch split over
    the mesh, a key for the rest of the step)``.

    ``data`` are :class:`~numpyro_ebm.learn.distributed.Rows` (or an
    array), from which the batch is drawn with the step's key, or a
    :class:`~numpyro_ebm.learn.host_data.HostBlock` of batches that the host
    drew with the same keys.
    """
    state, key = new_key(state)
    key_batch, key = jax.random.split(key)
    if isinstance(data, HostBlock):
        batch = data.batch(state.step)
    else:
        batch = sample_batch(key_batch, data, batch_size, mesh)
    return state, shard_batch(batch, mesh), key


def sample_batch(rng_key, data, batch_size, mesh=None):
    """A minibatch of distinct rows in O(batch) (see
    :func:`numpyro_ebm.core.batches.batch_indices`), split over ``mesh``;
    ``data`` is an array or :class:`~numpyro_ebm.learn.distributed.Rows`."""
    if isinstance(data, distributed.Rows):
        return distributed.gather_rows(rng_key, data, batch_size, mesh)
    return data[batch_indices(rng_key, data.shape[0], batch_size)]


class EMAState(NamedTuple):
    """State of :func:`ema_weights`: the number of updates, the decay and the
    running average of the parameters (not yet debiased)."""

    count: jax.Array
    decay: jax.Array
    ema: object


def ema_weights(decay) -> optax.GradientTransformation:
    """An Optax transformation that passes the updates through unchanged and
    keeps an exponential moving average of the parameters they lead to.

    Chain it last (``optax.chain(optax.adam(1e-3), ema_weights(0.999))``);
    :func:`ema_params` reads the debiased average from the optimiser state.
    Learners do this for you with ``ema_decay=``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> opt = optax.chain(optax.sgd(1.0), ema_weights(0.5))
        >>> params = jnp.zeros(())
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     updates, state = opt.update(-jnp.ones(()), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> float(params), round(float(ema_params(state)), 4)  # (0.25 + 0.5 * 2) / 0.75
        (2.0, 1.6667)
    """
    decay = float(validation.probability("ema_decay", decay))

    def init(params):
        return EMAState(
            jnp.zeros((), jnp.int32),
            jnp.asarray(decay, jnp.float32),
            jax.tree.map(jnp.zeros_like, params),
        )

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("ema_weights needs the parameters in `update`.")
        new = optax.apply_updates(params, updates)
        ema = optax.tree.update_moment(new, state.ema, decay, 1)
        return updates, EMAState(state.count + 1, state.decay, ema)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state):
    """The debiased moving average kept by :func:`ema_weights` in
    ``opt_state`` (found anywhere in a chain)."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, EMAState))
        if isinstance(s, EMAState)
    ]
    if not found:
        raise ValueError("the optimiser state holds no ema_weights average.")
    state = found[-1]
    if validation.is_concrete(state.count) and int(state.count) == 0:
        raise ValueError(
            "ema_params: the moving average has seen no update yet (count 0); "
            "it is defined after the first optimiser step."
        )
    correction = 1.0 - state.decay**state.count
    return jax.tree.map(lambda leaf: leaf / correction.astype(leaf.dtype), state.ema)


class Learner:
    """Base of the learners: a network, an Optax optimiser and one pure step.

    Subclasses define ``init(rng_key, data, batch_size) -> TrainState`` and
    ``_step(batch_size)`` returning ``step(state, data, mesh) -> (state,
    metrics)``; :meth:`run` is shared.
    """

    description = "train"

    def __init__(self, net, optimizer, ema_decay=None):
        self.apply, self.init_params, self.rebuild = split_network(net)
        # what the network computes, for checkpoint fingerprints: its graph
        # (modules and their settings) or, for a function, its code
        self._network_code = (
            re.sub(r" at 0x[0-9a-f]+", "", repr(nnx.split(net)[0]))
            if isinstance(net, nnx.Module)
            else function_digest(net[0])
        )
        if not isinstance(optimizer, optax.GradientTransformation):
            raise ValueError("`optimizer` must be an optax.GradientTransformation.")
        self.ema_decay = None
        if ema_decay is not None:
            self.ema_decay = float(validation.probability("ema_decay", ema_decay))
            optimizer = optax.chain(optimizer, ema_weights(self.ema_decay))
        self.optimizer = optimizer
        # compiled training loops and their steps, reused by later runs
        self._compiled, self._steps = {}, {}

    def _apply_gradients(self, state, grads):
        """One optimiser update: ``(state with new params and opt_state)``."""
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        return state._replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )

    @distributed.same_programs()
    def run(
        self,
        rng_key,
        num_steps,
        data,
        *,
        batch_size,
        init_state=None,
        progress_bar=True,
        num_devices=None,
        checkpoint_dir=None,
        checkpoint_every=None,
        resume=True,
        host_data=None,
    ):
        """Train for ``num_steps`` minibatch steps (in SVI's argument order).

        Args:
            rng_key: a JAX PRNG key.
            num_steps: number of optimiser steps.
            data: array ``(num_data, ...)``, one row per data point.
            batch_size: minibatch size (drawn without replacement each step).
            init_state: a previous run's ``result.state`` to continue from.
            progress_bar: show a progress bar with running metrics.
            num_devices: split the data by rows, and each minibatch (and
                per-example work such as negatives), over this many devices
                of ``jax.devices()``; ``batch_size`` must divide evenly. After
                :func:`jax.distributed.initialize` with several processes,
                every device of every process is used and ``data`` are this
                process's rows (:func:`numpyro_ebm.local_shard`); the run is
                the one a single process would make with the same key.
            checkpoint_dir: save Orbax checkpoints here (every
                ``checkpoint_every`` steps and at the end, all kept), and
                resume from the latest one if it was made by the same run:
                same learner and configuration, key, data and optimiser. A
                larger ``num_steps`` continues the run.
            checkpoint_every: steps between checkpoints (default: only at the
                end).
            resume: with ``False``, delete the checkpoints found in
                ``checkpoint_dir`` and start afresh; by default, resume, and
                refuse checkpoints of another run, saying what differs.
            host_data: keep ``data`` in host memory and move only the
                minibatches to the devices, a block of steps at a time,
                gathered while the devices train on the previous block
                (:mod:`numpyro_ebm.learn.host_data`); for data larger than
                the devices' memory. ``None`` (default) does so for a
                :class:`numpy.memmap` only. The run is the same as with the
                data on the devices. With several processes, each passes its
                own rows here too (e.g. ``local_shard`` of a memory map on a
                shared file system), and reads only those.

        Returns:
            A :class:`TrainResult`; ``result.state.sampler_state`` holds the
            sampler's state where there is one (e.g. persistent chains).
        """
        mesh = distributed.make_mesh(num_devices)
        multiprocess = distributed.is_multiprocess()
        # with several processes, `data` are this process's rows; the batch
        # is drawn from all of them
        if host_data is False and isinstance(data, np.memmap):
            data = np.asarray(data)
        elif host_data or isinstance(data, HostRows | np.memmap):
            # a fresh view for this run (its checks are not carried over);
            # with several processes, this process's rows within all of them
            if isinstance(data, HostRows):
                data = copy.copy(data)
            else:
                array = data if isinstance(data, np.memmap) else np.asarray(data)
                data = HostRows(array, batch_size)
            rows = data.shape[0]
            data.batch_size, data.finite = int(batch_size), False
            data.offset = jax.process_index() * rows
            data.num_rows = jax.process_count() * rows
        data = check_data(data, 1 if multiprocess else batch_size)
        host = isinstance(data, HostRows)
        distributed.check_agreement(
            rng_key=np.asarray(jax.random.key_data(rng_key)).tolist(),
            data_shape=list(data.shape),
            data_dtype=str(data.dtype),
            batch_size=int(batch_size),
            num_steps=int(num_steps),
            learner=self._describe(),
            init_state=init_state is not None,
        )
        size = distributed.mesh_size(mesh)
        if batch_size % size:
            raise ValueError(
                f"`batch_size` ({batch_size}) must be divisible by the number of "
                f"devices ({size}): each device takes an equal part of the batch."
            )
        rows = data if host else distributed.put_rows(data, mesh)
        if multiprocess:
            total = (
                rows.num_rows
                if host
                else int(np.asarray(distributed.to_local(rows.num_rows)))
            )
            if batch_size > total:
                raise ValueError(
                    f"`batch_size` ({batch_size}) is larger than the data ({total} "
                    "rows over all processes)."
                )
            if not host:  # the learners' init reads the global rows
                data = rows.values
        if init_state is None:
            state = self.init(rng_key, data, batch_size)
        else:
            state = self._check_init_state(init_state)
        fingerprint = None
        if checkpoint_dir is not None:
            local_state = distributed.to_local(state)
            fingerprint = {
                "learner": self._describe(),
                "rng_key": np.asarray(jax.random.key_data(rng_key)).tolist(),
                "data": (
                    rows_digest(data)
                    if host
                    else rows_digest(rows.values, rows.num_rows)
                ),
                "batch_size": int(batch_size),
                "optimizer": optimizer_digest(self.optimizer, self.init_params),
                "network": [
                    array_digest(x) for x in jax.tree.leaves(local_state.params)
                ],
                "network_code": self._network_code,
                "state": structure_digest(local_state),
            }
        # the configuration is part of the key: the step reads it when traced
        key = (batch_size, self._describe(), id(self.optimizer))
        step = self._checked_step(key)

        state, history = run_loop(
            step,
            state,
            rows,
            num_steps,
            progress_bar=progress_bar,
            mesh=mesh,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            description=self.description,
            check=self._check_window,
            cache=self._compiled,
            cache_key=key,
            fingerprint=fingerprint,
            resume=resume,
        )
        del history["_finite"]
        self._warn_about(history)
        # with ema_decay, the estimate is the moving average of the weights;
        # training goes on from the raw ones in `state`
        params = state.params if self.ema_decay is None else ema_params(state.opt_state)
        return TrainResult(params, state, history, module=self.rebuild(params))

    def _describe(self):
        """The learner and its configuration, for checkpoint fingerprints."""
        return describe(self, self._config())

    def _config(self):
        return {}

    def _check_init_state(self, init_state):
        """Refuse a state made for another network or optimiser, naming what differs."""
        if not isinstance(init_state, TrainState):
            raise TypeError(
                "`init_state` must be the TrainState of a previous run "
                f"(result.state), got {type(init_state).__name__}."
            )
        expected = TrainState(
            jnp.zeros((), jnp.int32),
            self.init_params,
            self.optimizer.init(self.init_params),
            init_state.sampler_state,
            init_state.rng_key,
        )
        for part in ("params", "opt_state"):
            difference = tree_difference(
                getattr(expected, part), getattr(init_state, part)
            )
            if difference:
                raise ValueError(
                    f"`init_state` was made for another "
                    f"{'network' if part == 'params' else 'optimizer'}: its "
                    f"{part} {difference}."
                )
        return init_state

    def _checked_step(self, key):
        """The learner's step, flagging a non-finite loss or parameters; one
        function per batch size and configuration (``key``), so that the
        compiled loop is reused."""
        batch_size = key[0]
        if key not in self._steps:
            base_step = self._step(batch_size)

            def step(state, data, mesh):
                new, metrics = base_step(state, data, mesh)
                finite = jnp.isfinite(metrics["loss"]) & _all_finite(new.params)
                return new, {**metrics, "_finite": finite}

            self._steps[key] = step
        return self._steps[key]

    def _check_window(self, window, lower):
        """Stop at the first step whose loss or parameters are not finite."""
        finite = np.asarray(window["_finite"])
        if not finite.all():
            first = int(np.argmin(finite))
            raise FloatingPointError(
                f"{self.description} diverged at step {lower + first}: the loss "
                f"({float(np.asarray(window['loss'])[first]):.4g}) or the updated "
                "parameters are not finite. Lower the learning rate, clip the "
                "gradients (optax.chain(optax.clip_by_global_norm(1.0), ...)), "
                "or check the data and the network for NaN." + self._divergence_hint()
            )

    def _divergence_hint(self):
        return ""

    def _warn_about(self, history):
        """Subclass hook: warn, with the figures, when a finished run looks wrong."""
