"""Checkpoints that resume only the run they were made for.

A checkpoint directory holds Orbax checkpoints of a run's state and history
(one per ``checkpoint_every`` steps, and one at the end; all are kept) and a
``run.json`` recording what the run was made from: the learner or estimator
and its configuration, the model's or network's code, the random key, the
data (shape, dtype and a digest of their values), a digest of the
optimiser's response to a probe gradient (so that a changed learning rate is
seen) and the structure of the state. A new
run in the same directory resumes from the latest checkpoint only if all of
these match; otherwise it refuses with a message that says what differs, or
starts afresh with ``resume=False``. The number of steps may differ: a longer
run continues where the checkpoint stopped, and its history is the
checkpoint's followed by the new steps.
"""

import hashlib
import json
import os
import re
import shutil

import numpy as np

import jax
import jax.numpy as jnp

from numpyro_ebm.learn import host_data

__all__ = [
    "Checkpointer",
    "array_digest",
    "function_digest",
    "optimizer_digest",
    "rows_digest",
    "structure_digest",
]

#: elements of an array read for its digest (evenly strided), beyond its sums
_DIGEST_ELEMENTS = 1 << 16
_RUN_FILE = "run.json"


def array_digest(x) -> str:
    """A digest of an array's shape, dtype and values.

    Reads an evenly strided subset of at most 65536 elements plus the sum and
    the sum of squares of all of them, so that any change of the values is
    seen in practice at a cost of one pass.

    Example:
        >>> import jax.numpy as jnp
        >>> array_digest(jnp.ones(3)) == array_digest(jnp.ones(3))
        True
        >>> array_digest(jnp.ones(3)) == array_digest(2 * jnp.ones(3))
        False
    """
    x = jnp.asarray(x)
    flat = x.reshape(-1)
    stride = max(1, flat.shape[0] // _DIGEST_ELEMENTS)
    sample = np.asarray(flat[::stride])
    wide = flat.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.number) else None
    sums = (
        np.asarray([jnp.sum(wide), jnp.sum(wide * wide)])
        if wide is not None and flat.shape[0]
        else np.zeros(2)
    )
    h = hashlib.sha256()
    h.update(repr((x.shape, str(x.dtype))).encode())
    h.update(sample.tobytes())
    h.update(np.asarray(sums, np.float64).tobytes())
    return h.hexdigest()[:16]


def structure_digest(tree) -> str:
    """A digest of a pytree's structure and leaf shapes and dtypes."""
    leaves, treedef = jax.tree.flatten(tree)
    shapes = [(jnp.shape(x), str(jnp.result_type(x))) for x in leaves]
    return hashlib.sha256(repr((str(treedef), shapes)).encode()).hexdigest()[:16]


def optimizer_digest(optimizer, params) -> str:
    """A digest of the optimiser's first update for a fixed probe gradient.

    Two optimisers with different learning rates (or schedules, or
    transformations) give different updates, so their digests differ.
    """
    probe = jax.tree.map(
        lambda p: jnp.full(jnp.shape(p), 0.5, jnp.result_type(p)), params
    )
    updates, _ = optimizer.update(probe, optimizer.init(params), params)
    digests = [array_digest(u) for u in jax.tree.leaves(updates)]
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:16]


def function_digest(fn) -> str:
    """A digest of a Python function's code (bytecode, constants, names) and
    of the functions it closes over, so that an edited model or network is
    told apart from the one a checkpoint was made with."""
    h = hashlib.sha256()
    seen = set()

    def visit(f, depth):
        code = getattr(f, "__code__", None)
        if code is None or id(code) in seen or depth > 3:
            h.update(re.sub(r" at 0x[0-9a-f]+", "", repr(f)).encode())
            return
        seen.add(id(code))
        h.update(code.co_code)
        h.update(re.sub(r" at 0x[0-9a-f]+", "", repr(code.co_consts)).encode())
        h.update(repr(code.co_names).encode())
        for cell in getattr(f, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value):
                visit(value, depth + 1)

    visit(fn, 0)
    return h.hexdigest()[:16]


class Checkpointer:
    """Orbax checkpoints of one run, in ``directory``, with its fingerprint.

    Args:
        directory: where checkpoints go (created; must be writable).
        fingerprint: a JSON-serialisable dict describing the run.
        resume: resume from the latest checkpoint when the fingerprints match
            (refuse when they do not); ``False`` deletes the directory's
            checkpoints and starts afresh.
    """

    def __init__(self, directory, fingerprint, *, resume=True):
        import orbax.checkpoint as ocp

        self.directory = os.path.abspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
            probe = os.path.join(self.directory, f".write-test-{jax.process_index()}")
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as err:
            raise ValueError(
                f"`checkpoint_dir` {directory!r} cannot be written to: {err}"
            ) from err
        self.fingerprint = json.loads(json.dumps(fingerprint))
        run_file = os.path.join(self.directory, _RUN_FILE)
        # with several processes (one directory that all of them see), the
        # first one deletes and records; the others wait for it
        first = jax.process_index() == 0
        if not resume and first:
            for entry in os.listdir(self.directory):
                path = os.path.join(self.directory, entry)
                if entry.isdigit() and os.path.isdir(path):
                    shutil.rmtree(path)
            if os.path.exists(run_file):
                os.remove(run_file)
        _barrier("numpyro_ebm checkpoint start")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        if self.manager.latest_step() is not None:
            self._check_fingerprint(run_file)
        _barrier("numpyro_ebm checkpoint checked")
        if first:
            with open(run_file, "w") as f:
                json.dump(self.fingerprint, f, indent=1, sort_keys=True)

    def _check_fingerprint(self, run_file):
        if not os.path.exists(run_file):
            raise ValueError(
                f"`checkpoint_dir` {self.directory!r} holds checkpoints without a "
                f"record of the run that made them ({_RUN_FILE}): pass resume=False "
                "to start afresh there, or use another directory."
            )
        with open(run_file) as f:
            recorded = json.load(f)
        differences = [
            f"{name} ({_short(recorded.get(name))} in the checkpoint, "
            f"{_short(self.fingerprint.get(name))} now)"
            for name in sorted(set(recorded) | set(self.fingerprint))
            if recorded.get(name) != self.fingerprint.get(name)
        ]
        if differences:
            raise ValueError(
                f"the checkpoints in {self.directory!r} were made by another run: "
                + "; ".join(differences)
                + ". Pass resume=False to start afresh there, or use another "
                "directory."
            )

    def latest(self):
        """The step of the latest checkpoint, or ``None``."""
        return self.manager.latest_step()

    def save(self, step, state, history):
        """Save the state and the first ``step`` entries of the history."""
        import orbax.checkpoint as ocp

        filled = jax.tree.map(lambda h: h[:step], history)
        self.manager.save(int(step), args=ocp.args.StandardSave((state, filled)))

    def restore(self, step, state, history, sharding=None):
        """``(state, history)`` at ``step``: the history's first ``step`` entries
        from the checkpoint, the rest as in ``history`` (zeros)."""
        import orbax.checkpoint as ocp

        num_steps = jax.tree.leaves(history)[0].shape[0]
        if step > num_steps:
            raise ValueError(
                f"the latest checkpoint in {self.directory!r} is at step {step}, "
                f"beyond num_steps={num_steps}: ask for at least {step} steps, or "
                "pass resume=False to start afresh."
            )

        def like(x):
            # each array restored onto the sharding of the run that restores
            # it: a checkpoint of replicated arrays restores on any number
            # of devices and processes
            placed = getattr(x, "sharding", None)
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placed)

        # the history lands where this process can read it: on the given
        # sharding (replicated over every process's devices), or on this
        # process's first device
        history_sharding = sharding or jax.sharding.SingleDeviceSharding(
            jax.local_devices()[0]
        )
        abstract = (
            jax.tree.map(like, state),
            jax.tree.map(
                lambda h: jax.ShapeDtypeStruct(
                    (step, *h.shape[1:]), h.dtype, sharding=history_sharding
                ),
                history,
            ),
        )

        restored_state, filled = self.manager.restore(
            int(step), args=ocp.args.StandardRestore(abstract)
        )

        def merge(h, f):
            h = np.array(h)
            h[:step] = np.asarray(_local(f))
            return h

        return restored_state, jax.tree.map(merge, history, filled)

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def _local(x):
    """A replicated array of several processes as this process's copy."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x.addressable_data(0)
    return x


def _barrier(name):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _chunk_sums(rows, start):
    rows = jnp.asarray(rows)
    if rows.dtype.itemsize < 4:
        rows = rows.astype(jnp.float32)
    return _row_sums(rows, jnp.asarray(rows.shape[0], jnp.int32), start)


@jax.jit
def _row_sums(values, num_rows, start=0):
    bits = jax.lax.bitcast_convert_type(values, jnp.uint32)  # float64: 2 words
    flat = bits.reshape(values.shape[0], -1)
    row = jnp.arange(flat.shape[0], dtype=jnp.uint32) + jnp.asarray(start, jnp.uint32)
    column = jnp.arange(flat.shape[1], dtype=jnp.uint32)
    # wrapping uint32 arithmetic: exact and order-free, so the sums do not
    # depend on how the rows are split over devices and processes
    weight = (row * jnp.uint32(2654435761) + 1)[:, None] * (
        column * jnp.uint32(40503) + 1
    )
    mixed = flat ^ (flat >> 15)
    keep = (row < num_rows.astype(jnp.uint32) + jnp.asarray(start, jnp.uint32))[:, None]
    first = jnp.sum(jnp.where(keep, flat * weight, 0), dtype=jnp.uint32)
    second = jnp.sum(
        jnp.where(keep, mixed * (weight ^ jnp.uint32(0x9E3779B9)), 0), dtype=jnp.uint32
    )
    return jnp.stack([first, second])


def rows_digest(values, num_rows=None) -> str:
    """A digest of the first ``num_rows`` rows of ``values``, the same however
    the rows are split over devices or processes (and whatever padding
    follows them).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(6.0).reshape(3, 2)
        >>> padded = jnp.concatenate([x, jnp.zeros((1, 2))])
        >>> rows_digest(x, 3) == rows_digest(padded, 3)
        True
        >>> rows_digest(x, 3) == rows_digest(x.at[2, 1].set(7.0), 3)
        False
    """
    if hasattr(values, "chunks"):  # rows kept on the host: read in chunks
        num_rows = values.num_rows  # (over every process)
        sums = np.zeros(2, np.uint32)
        for start, rows in values.chunks():
            sums += np.asarray(_chunk_sums(rows, values.offset + start))
        sums = host_data.sum_over_processes(sums)
        dtype = values.dtype
    else:
        values = jnp.asarray(values) if not isinstance(values, jax.Array) else values
        if values.dtype.itemsize < 4:
            values = values.astype(jnp.float32)
        num_rows = values.shape[0] if num_rows is None else num_rows
        num_rows = int(np.asarray(_local(num_rows)))
        sums = np.asarray(_local(_row_sums(values, jnp.asarray(num_rows, jnp.int32))))
        dtype = values.dtype
    h = hashlib.sha256()
    h.update(repr((num_rows, tuple(values.shape[1:]), str(dtype))).encode())
    h.update(sums.tobytes())
    return h.hexdigest()[:16]


def _short(value):
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
