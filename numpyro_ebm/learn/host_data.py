"""Training data that stay in host memory: a NumPy array or a memory map.

When the data do not fit on the devices, ``run(..., host_data=True)`` (the
default for a :class:`numpy.memmap`) keeps them where they are. Before each
block of steps the host computes the block's minibatch indices from the
run's key (the same indices a run with the data on the devices draws),
gathers those rows from the array, and puts the block on the devices; the
next block is gathered while the devices train on this one. The devices
hold one block of minibatches, never the data set, and the host reads only
the rows drawn.

With several processes each process keeps its own rows on its host (its
:func:`~numpyro_ebm.local_shard`, e.g. a slice of a memory map on a shared
file system, or its own file). Every process draws the same global indices,
reads the drawn rows it holds, and a reduce-scatter over the processes (a
sum with one non-zero term per entry, so exact) gives each device its part
of the batch: the run is the one-process run, and each host reads only its
own rows.
"""

import dataclasses
import functools

import numpy as np

import jax
import jax.numpy as jnp
from jax import random
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from numpyro_ebm.core.batches import batch_indices
from numpyro_ebm.learn import distributed

__all__ = ["HostRows", "HostBlock", "BLOCK_BYTES"]

#: the size of one block of minibatches on the devices (steps are grouped so
#: that a block stays below it)
BLOCK_BYTES = 64 * 2**20
_SCAN_ROWS = 2**20  # rows read at a time by the host's passes over the data


class HostRows:
    """Rows of training data kept on the host, read a few at a time.

    Args:
        array: a NumPy array or :class:`numpy.memmap` of shape
            ``(num_data, *event_shape)``.
        batch_size: the minibatch size of the run.
        offset: the global index of the first row (with several processes,
            this process's rows start there).
        num_rows: the number of rows over all processes (default: this
            array's).

    With several processes the summaries (:meth:`mean`, :meth:`std`,
    :meth:`cov`, :meth:`non_finite_rows`) are over every process's rows;
    each process must call them.

    Example:
        >>> import numpy as np
        >>> rows = HostRows(np.arange(12.0).reshape(6, 2), 2)
        >>> rows.shape, rows.mean(0).tolist()
        ((6, 2), [5.0, 6.0])
    """

    def __init__(self, array, batch_size, offset=0, num_rows=None):
        self.array = array
        self.batch_size = int(batch_size)
        self.offset = int(offset)
        self.num_rows = int(array.shape[0] if num_rows is None else num_rows)
        self.finite = False  # set once a pass has found no NaN or inf
        dtype = np.dtype(array.dtype)
        self.dtype = (
            dtype
            if np.issubdtype(dtype, np.floating)
            else np.dtype(jnp.result_type(float))
        )

    @property
    def shape(self):
        return tuple(self.array.shape)

    @property
    def ndim(self):
        return self.array.ndim

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        return np.asarray(self.array[index], self.dtype)

    def chunks(self):
        """``(start, rows)`` over the data: ``2**20`` rows at a time, fewer
        when that many would take more than :data:`BLOCK_BYTES`."""
        row_bytes = 8 * int(np.prod(self.shape[1:], dtype=np.int64))  # float64
        step = int(max(1, min(_SCAN_ROWS, BLOCK_BYTES // max(1, row_bytes))))
        for start in range(0, self.shape[0], step):
            yield start, np.asarray(self.array[start : start + step], self.dtype)

    def non_finite_rows(self) -> int:
        bad = 0
        for _, rows in self.chunks():
            flat = rows.reshape(rows.shape[0], -1)
            bad += int(np.sum(~np.all(np.isfinite(flat), axis=1)))
        return int(sum_over_processes(np.asarray(bad, np.int64)))

    def _moment(self, term):
        """The mean over every process's rows of ``term(rows)``, in float64;
        ``term`` sums over the rows of a chunk itself."""
        total = sum(term(rows.astype(np.float64)) for _, rows in self.chunks())
        return sum_over_processes(np.asarray(total, np.float64)) / self.num_rows

    def mean(self, axis=0):
        assert axis == 0
        return jnp.asarray(self._moment(lambda r: r.sum(0)), self.dtype)

    def std(self, axis=0):
        assert axis == 0
        mean = self._moment(lambda r: r.sum(0))
        var = self._moment(lambda r: ((r - mean) ** 2).sum(0))
        return jnp.asarray(np.sqrt(var), self.dtype)

    def cov(self):
        """The covariance of the flattened rows (divisor ``num_rows - 1``, as
        :func:`numpy.cov`), a chunk of rows at a time: memory of the
        ``(d, d)`` result and one chunk."""
        flat = lambda r: r.reshape(r.shape[0], -1)  # noqa: E731
        mean = self._moment(lambda r: flat(r).sum(0))

        def scatter(r):
            c = flat(r) - mean
            return c.T @ c

        scale = self.num_rows / max(1, self.num_rows - 1)
        return jnp.asarray(self._moment(scatter) * scale, self.dtype)

    def block_length(self, limit):
        """Steps per block: as many as fit in :data:`BLOCK_BYTES`, at most
        ``limit``."""
        row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        return int(
            max(1, min(limit, BLOCK_BYTES // max(1, self.batch_size * row_bytes)))
        )


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class HostBlock:
    """The minibatches of a block of steps: ``batches[k]`` is the batch of
    the step whose ``TrainState.step`` is ``start + k``."""

    batches: jax.Array
    start: jax.Array

    def batch(self, step):
        return jax.lax.dynamic_index_in_dim(
            self.batches, step - self.start, axis=0, keepdims=False
        )


def step_keys(state_key):
    """``(next raw key, key of the step's batch)``: how every learner's step
    splits its key (see :func:`numpyro_ebm.learn.training.next_batch`)."""
    key, sub = random.split(random.wrap_key_data(state_key))
    key_batch, _ = random.split(sub)
    return random.key_data(key), key_batch


@functools.partial(jax.jit, static_argnums=(2, 3))
def _indices(raw_key, num_rows, batch_size, length):
    def body(raw, _):
        raw, key_batch = step_keys(raw)
        return raw, (raw, batch_indices(key_batch, num_rows, batch_size))

    _, (keys, idx) = jax.lax.scan(body, raw_key, None, length=length)
    return keys, idx


class Blocks:
    """The blocks of a run, gathered on the host one ahead of the devices."""

    def __init__(self, rows: HostRows, raw_key, step, length, mesh):
        self.rows, self.length = rows, length
        self.raw_key, self.step = np.asarray(raw_key), int(step)
        sharding = None
        if mesh is not None:
            spec = PartitionSpec(None, "data", *([None] * (rows.ndim - 1)))
            sharding = NamedSharding(mesh, spec)
        self.sharding = sharding

    def abstract(self):
        shape = (self.length, self.rows.batch_size, *self.rows.shape[1:])
        return HostBlock(
            jax.ShapeDtypeStruct(shape, self.rows.dtype),
            jax.ShapeDtypeStruct((), jnp.int32),
        )

    def indices(self, num_steps):
        """The next ``num_steps`` steps' indices (advancing the key)."""
        keys, idx = _indices(
            self.raw_key,
            jnp.asarray(self.rows.num_rows, jnp.int32),
            self.rows.batch_size,
            self.length,
        )
        start = self.step
        self.raw_key = np.asarray(keys[num_steps - 1])
        self.step += num_steps
        return start, np.asarray(idx[:num_steps])

    def gather(self, start, idx):
        """The block for ``idx`` (steps from ``start``) on the devices."""
        n, b = idx.shape
        event = self.rows.shape[1:]
        here = idx - self.rows.offset
        mine = (here >= 0) & (here < self.rows.shape[0])
        flat = here[mine]
        order = np.argsort(flat, kind="stable")  # read the rows in file order
        picked = np.empty((flat.size, *event), self.rows.dtype)
        picked[order] = self.rows[flat[order]]
        block = np.zeros((self.length, b, *event), self.rows.dtype)
        block[:n][mine] = picked
        if not distributed.is_multiprocess():
            batches = jax.device_put(block, self.sharding)
        else:  # each process holds the drawn rows it owns, zeros elsewhere
            batches = _combine(block, self.sharding.mesh)
        return HostBlock(batches, jnp.asarray(start, jnp.int32))


def sum_over_processes(x):
    """The sum of ``x`` (a NumPy array, the same shape in each process) over
    the processes; ``x`` itself in one process."""
    if not distributed.is_multiprocess():
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x)).sum(0, dtype=x.dtype)


def _combine(block, mesh):
    """The block of batches, from each process's share (its rows, zeros
    elsewhere), split over ``mesh`` by batch position (``P(None, "data")``).

    Device ``k`` of process ``p`` is mesh device ``j = p L + k`` (``L``
    devices per process) and ends with batch positions ``[j b, (j + 1) b)``
    (``b = B / (P L)``). It is given this process's share of the positions of
    devices ``q L + k`` for every process ``q``, and a reduce-scatter over
    the processes sums the shares (one non-zero term each) and leaves it the
    ``q = p`` part.
    """
    procs, local = jax.process_count(), jax.local_device_count()
    length, batch = block.shape[:2]
    event = block.shape[2:]
    b = batch // (procs * local)
    # (length, q, k, b, ...) -> (length, k, q, b, ...): device k's share
    share = block.reshape(length, procs, local, b, *event).swapaxes(1, 2)
    share = share.reshape(length, local * procs * b, *event)
    grid = Mesh(mesh.devices.reshape(procs, local), ("process", "device"))
    spec = PartitionSpec(None, ("process", "device"), *([None] * len(event)))
    sharding = NamedSharding(grid, spec)
    shares = jax.make_array_from_process_local_data(
        sharding, share, (length, procs * local * procs * b, *event)
    )
    summed = _reduce_shares(shares, grid, len(event))
    target = NamedSharding(mesh, PartitionSpec(None, "data", *([None] * len(event))))
    return jax.make_array_from_single_device_arrays(
        (length, batch, *event),
        target,
        [shard.data for shard in summed.addressable_shards],
    )


@functools.partial(jax.jit, static_argnums=(1, 2))
def _reduce_shares(shares, grid, event_ndim):
    spec = PartitionSpec(None, ("process", "device"), *([None] * event_ndim))
    return jax.shard_map(
        lambda x: jax.lax.psum_scatter(x, "process", scatter_dimension=1, tiled=True),
        mesh=grid,
        in_specs=spec,
        out_specs=spec,
    )(shares)
