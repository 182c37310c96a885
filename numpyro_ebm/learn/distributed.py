"""Data-parallel training over every device of every process.

The learners run the same compiled step on one device, on several devices
of one process, or on all the devices of several processes started with
:func:`jax.distributed.initialize`. In every case:

- the devices form one mesh with a ``"data"`` axis (:func:`make_mesh`);
- the training data are split over it by rows (:func:`put_rows`): each
  device holds only its own rows, never a copy of the data set, and with
  several processes each process supplies only its own shard
  (:func:`local_shard`);
- each step's minibatch indices come from the step's key alone
  (:func:`~numpyro_ebm.core.batches.batch_indices`), and the rows are
  gathered from the devices that hold them (:func:`gather_rows`, exact), so
  the batch is the same whatever the number of devices or processes;
- the state (parameters, optimiser state, chains) is replicated; gradients
  of the batch mean are reduced across devices by XLA.

With several processes, every process must run the same script with the
same key, settings and data shape; :func:`check_agreement` compares them
before any work and names what differs instead of letting the collectives
hang.

Every process must also compile the same programs. XLA's CPU collectives
(gloo) meet by a key derived from the compiled program, and since jaxlib
0.12.1 that program carries the Python call stack of each operation as
source locations. Two processes that reach a compiled step through
different Python frames (one of them wrapped in a profiler, a retry helper
or a test's patch) would then wait on different keys for ever.
:func:`same_programs` compiles without source locations while several
processes run; the entry points (``run`` of the learners and estimators,
:func:`check_agreement`) use it.
"""

import contextlib
import dataclasses
import hashlib
import json

import numpy as np

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from numpyro_ebm.core import validation
from numpyro_ebm.core.batches import batch_indices

__all__ = [
    "AXIS",
    "Rows",
    "check_agreement",
    "gather_rows",
    "is_multiprocess",
    "local_shard",
    "make_mesh",
    "put_rows",
    "replicate",
    "same_programs",
    "to_local",
]

#: the mesh axis over which data and batches are split
AXIS = "data"


def is_multiprocess() -> bool:
    """Whether :func:`jax.distributed.initialize` has joined several processes."""
    return jax.process_count() > 1


@contextlib.contextmanager
def same_programs():
    """Compile programs that do not depend on the caller's Python frames
    while several processes run (nothing changes in one process).

    JAX attaches the Python traceback of each traced operation to the
    program as source locations (``jax_traceback_in_locations_limit``
    frames). The collectives of several processes rendezvous on the
    compiled program, so programs compiled from different call stacks can
    wait on each other for ever; inside this context, and only for the
    programs first compiled here, the traceback is left out (error
    messages and profiles then name the operation but not its line).

    Works as a decorator too. Example:
        >>> with same_programs():
        ...     y = jax.jit(lambda x: x + 1)(1.0)
    """
    name = "jax_traceback_in_locations_limit"
    if not is_multiprocess():
        yield
        return
    previous = getattr(jax.config, name)
    jax.config.update(name, 0)
    try:
        yield
    finally:
        jax.config.update(name, previous)


def local_shard(data, process_index=None, process_count=None):
    """This process's rows of ``data``: rows ``[p N / P, (p + 1) N / P)`` of
    process ``p`` of ``P`` (by default :func:`jax.process_index` and
    :func:`jax.process_count`).

    A script that can read the whole data set on every host passes
    ``local_shard(data)`` to ``run``; one that reads its shard from its own
    files passes that shard, in process order.

    Example:
        >>> import numpy as np
        >>> local_shard(np.arange(12).reshape(6, 2), 1, 3).tolist()
        [[4, 5], [6, 7]]
    """
    n = (
        jax.process_count()
        if process_count is None
        else validation.positive_integer("process_count", process_count)
    )
    p = (
        jax.process_index()
        if process_index is None
        else validation.non_negative_integer("process_index", process_index)
    )
    if p >= n:
        raise ValueError(
            f"`process_index` ({p}) must be below `process_count` ({n}): the "
            f"processes are numbered 0 to {n - 1}."
        )
    if np.ndim(data) < 1:
        raise ValueError(
            "`data` must have one row per data point (at least one axis), got a scalar."
        )
    rows = np.shape(data)[0]
    if rows % n:
        raise ValueError(
            f"the data's {rows} rows do not divide over {n} processes: give each "
            "process the same number of rows (drop or repeat a few)."
        )
    size = rows // n
    return data[p * size : (p + 1) * size]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Rows:
    """Training data split over a mesh by rows.

    ``values`` has ``num_rows`` real rows, padded (in one process) to a
    multiple of the number of devices; the padding is never drawn.
    ``num_rows`` is an int32 scalar, traced inside compiled functions, so
    that data sets of different sizes share one compiled step.
    """

    values: jax.Array
    num_rows: jax.Array


def make_mesh(num_devices=None):
    """The data-parallel mesh, or ``None`` for one device.

    With several processes it spans every device of every process, in
    process order (``num_devices`` must then be ``None`` or their total);
    in one process it takes the first ``num_devices`` devices.
    """
    if is_multiprocess():
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        if num_devices not in (None, len(devices)):
            raise ValueError(
                f"`num_devices={num_devices}` but the {jax.process_count()} "
                f"processes hold {len(devices)} devices, which a multi-process "
                "run uses all of: leave `num_devices` unset."
            )
        return Mesh(np.array(devices), (AXIS,))
    if num_devices is None or num_devices == 1:
        return None
    if num_devices > jax.device_count():
        raise ValueError(
            f"`num_devices={num_devices}` but only {jax.device_count()} device(s) "
            "are visible."
        )
    return Mesh(np.array(jax.devices()[:num_devices]), (AXIS,))


def mesh_size(mesh) -> int:
    return 1 if mesh is None else mesh.devices.size


def replicate(tree, mesh):
    """``tree`` replicated on every device of ``mesh`` (a global array when
    several processes share it: each process passes the same values).

    Arrays already split over ``mesh`` (e.g. by :func:`put_rows`) are kept
    as they are.
    """
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())

    def placed(x):
        return (
            isinstance(x, jax.Array)
            and isinstance(x.sharding, NamedSharding)
            and x.sharding.mesh == mesh
            and not x.is_fully_replicated
        )

    def put(x):
        if placed(x):
            return x
        if not is_multiprocess():
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, x.shape)

    return jax.tree.map(put, tree)


def to_local(tree):
    """A replicated (possibly multi-process) ``tree`` as arrays of this
    process, which can be read on the host."""

    def local(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x.addressable_data(0)
        return x

    return jax.tree.map(local, tree)


def put_rows(data, mesh) -> Rows:
    """Split ``data`` (this process's rows, with several processes) over the
    mesh by rows."""
    if mesh is None:
        data = jnp.asarray(data)
        return Rows(data, jnp.asarray(data.shape[0], jnp.int32))
    spec = NamedSharding(mesh, PartitionSpec(AXIS, *([None] * (np.ndim(data) - 1))))
    if not is_multiprocess():
        data = jnp.asarray(data)
        rows, devices = data.shape[0], mesh.devices.size
        pad = -rows % devices
        if pad:  # rows past num_rows are never drawn
            data = jnp.concatenate(
                [data, jnp.zeros((pad, *data.shape[1:]), data.dtype)]
            )
        return Rows(jax.device_put(data, spec), jnp.asarray(rows, jnp.int32))
    local = np.asarray(data)
    devices = jax.local_device_count()
    if local.shape[0] % devices:
        raise ValueError(
            f"process {jax.process_index()} holds {local.shape[0]} rows, which do "
            f"not divide over its {devices} devices: give each process a multiple "
            f"of {devices} rows."
        )
    total = local.shape[0] * jax.process_count()
    values = jax.make_array_from_process_local_data(
        spec, local, (total, *local.shape[1:])
    )
    return Rows(values, replicate(np.asarray(total, np.int32), mesh))


def gather_rows(rng_key, rows: Rows, batch_size: int, mesh):
    """A minibatch of ``batch_size`` distinct rows, split over the mesh.

    The indices depend on ``rng_key`` alone; each device looks up the ones
    it holds and zeros elsewhere, and a reduce-scatter over the mesh (a sum
    in which every entry has one non-zero term, so exact) leaves each device
    its slice of the batch. Costs O(batch) per device, whatever the data's
    size.
    """
    idx = batch_indices(rng_key, rows.num_rows, batch_size)
    if mesh is None:
        return rows.values[idx]
    size = mesh.devices.size
    if batch_size % size:
        raise ValueError(
            f"`batch_size` ({batch_size}) must be divisible by the {size} devices."
        )
    row_spec = PartitionSpec(AXIS, *([None] * (rows.values.ndim - 1)))

    def local(values, idx):
        shard = values.shape[0]
        start = jax.lax.axis_index(AXIS) * shard
        here = idx - start
        mine = (here >= 0) & (here < shard)
        picked = values[jnp.clip(here, 0, shard - 1)]
        picked = jnp.where(mine.reshape((-1,) + (1,) * (values.ndim - 1)), picked, 0)
        return jax.lax.psum_scatter(picked, AXIS, scatter_dimension=0, tiled=True)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(row_spec, PartitionSpec()),
        out_specs=row_spec,
    )(rows.values, idx)


@same_programs()
def check_agreement(**facts):
    """Raise a ValueError naming the facts (and processes) that differ
    between processes; nothing happens in one process.

    Each fact is JSON-serialisable (shapes, dtypes, settings, key data).
    """
    if not is_multiprocess():
        return
    from jax.experimental import multihost_utils

    names = sorted(facts)
    digests = np.stack(
        [
            np.frombuffer(
                hashlib.sha256(
                    json.dumps(facts[n], sort_keys=True, default=str).encode()
                ).digest()[:8],
                np.int32,
            )
            for n in names
        ]
    )
    everyone = np.asarray(multihost_utils.process_allgather(digests))
    differing, named = [], []
    for i, name in enumerate(names):
        values = everyone[:, i]
        groups = {}
        for p, v in enumerate(values):
            groups.setdefault(tuple(v), []).append(p)
        if len(groups) > 1:
            mine = ", ".join(
                f"processes {ps}" if len(ps) > 1 else f"process {ps[0]}"
                for ps in groups.values()
            )
            differing.append(f"{name} (differs between {mine})")
            named.append(name)
    if differing:
        raise ValueError(
            "the processes disagree on "
            + "; ".join(differing)
            + f"; this is process {jax.process_index()}, with "
            + ", ".join(f"{n}={_short(facts[n])}" for n in named)
            + ". Every process must run the same script with the same key, "
            "settings and data shape."
        )


def _short(value):
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
