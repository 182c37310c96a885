"""Training data that stay in host memory: a NumPy array or a memory map.

When the data do not fit on the devices, ``run(..., host_data=True)`` (the
default for a :class:`numpy.memmap`) keeps them where they are. Before each
block of steps the host computes the block's minibatch indices from the
run's key (the same indices a run with the data on the devices draws),
gathers those rows from the array, and puts the block on the devices; the
next block is gathered while the devices train on this one. The devices
hold one block of minibatches, never the data set, and the host reads only
the rows drawn.
"""

import dataclasses
import functools

import numpy as np

import jax
import jax.numpy as jnp
from jax import random
from jax.sharding import NamedSharding, PartitionSpec

from numpyro_ebm.core.batches import batch_indices

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

    Example:
        >>> import numpy as np
        >>> rows = HostRows(np.arange(12.0).reshape(6, 2), 2)
        >>> rows.shape, rows.mean(0).tolist()
        ((6, 2), [5.0, 6.0])
    """

    def __init__(self, array, batch_size):
        self.array = array
        self.batch_size = int(batch_size)
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
        """``(start, rows)`` over the data, ``2**20`` rows at a time."""
        for start in range(0, self.shape[0], _SCAN_ROWS):
            yield start, np.asarray(self.array[start : start + _SCAN_ROWS], self.dtype)

    def non_finite_rows(self) -> int:
        bad = 0
        for _, rows in self.chunks():
            flat = rows.reshape(rows.shape[0], -1)
            bad += int(np.sum(~np.all(np.isfinite(flat), axis=1)))
        return bad

    def mean(self, axis=0):
        assert axis == 0
        total = sum(rows.sum(0, dtype=np.float64) for _, rows in self.chunks())
        return jnp.asarray(total / self.shape[0], self.dtype)

    def std(self, axis=0):
        assert axis == 0
        mean = np.asarray(self.mean(0), np.float64)
        total = sum(((rows - mean) ** 2).sum(0) for _, rows in self.chunks())
        return jnp.asarray(np.sqrt(total / self.shape[0]), self.dtype)

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
            jnp.asarray(len(self.rows), jnp.int32),
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
        flat = idx.reshape(-1)
        order = np.argsort(flat, kind="stable")  # read the rows in file order
        rows = np.empty((n * b, *self.rows.shape[1:]), self.rows.dtype)
        rows[order] = self.rows[flat[order]]
        block = np.zeros((self.length, b, *self.rows.shape[1:]), self.rows.dtype)
        block[:n] = rows.reshape(n, b, *self.rows.shape[1:])
        batches = jax.device_put(block, self.sharding)
        return HostBlock(batches, jnp.asarray(start, jnp.int32))
