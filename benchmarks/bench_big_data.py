"""Compile time, step time and peak memory against the size of the data.

Trains the same score-matching model (sliced score matching, MLP 10-64-64-1,
batch 256, 500 steps) on 10^4, 10^6 and 10^7 rows of 10-d data, with the
data on the device (an array) and on the host (a memory-mapped file, read a
block of minibatches at a time). Each run is a fresh subprocess, so that its
peak resident memory (``ru_maxrss``) is its own; the data are generated in
the subprocess, so the peak includes them where they are held in memory
(the array case), and a memory map's pages only as far as they are read.

Also times one minibatch draw with a full permutation (``jax.random.choice``
without replacement, O(N)) against :func:`numpyro_ebm.core.batches.
batch_indices` (O(batch)).

Usage (from the repository's root)::

    python benchmarks/bench_big_data.py
"""

import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROWS = (10_000, 1_000_000, 10_000_000)
DIM, BATCH, STEPS = 10, 256, 500

CHILD = r"""
import json, os, resource, sys, time
import numpy as np
import jax, jax.numpy as jnp, optax
from flax import nnx
sys.path.insert(0, {root!r})
import numpyro_ebm as ne
from benchmarks.timing import timed

rows, where, path = {rows}, {where!r}, {path!r}
rng = np.random.default_rng(0)
if where == "host":  # written in pieces, then opened read-only
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(rows, {dim}))
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        out[start : start + n] = rng.normal(size=(n, {dim})).astype(np.float32)
    out.flush()
    del out
    data = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, {dim}))
else:
    data = jnp.asarray(rng.normal(size=(rows, {dim})).astype(np.float32))
learner = ne.ScoreMatching(
    ne.nn.EnergyMLP({dim}, (64, 64), rngs=nnx.Rngs(0)), optax.adam(1e-3),
    ne.SlicedScoreMatching())
def run(steps):
    r = learner.run(jax.random.key(0), steps, data, batch_size={batch}, progress_bar=False)
    jax.block_until_ready(r.params)
_, first, compile_s = timed(lambda: run({steps}))
_, second, _ = timed(lambda: run({steps}))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(compile=compile_s, first=first, step_ms=1e3 * second / {steps},
                      peak_mb=peak)))
"""

DRAW = r"""
import json, sys, time
import jax, jax.numpy as jnp
sys.path.insert(0, {root!r})
from numpyro_ebm.core.batches import batch_indices
out = {{}}
for rows in {rows}:
    x = jnp.zeros((rows, {dim}))
    perm = jax.jit(lambda k, x: x[jax.random.choice(k, x.shape[0], ({batch},), replace=False)])
    ours = jax.jit(lambda k, x: x[batch_indices(k, x.shape[0], {batch})])
    for name, f in (("permutation", perm), ("batch_indices", ours)):
        f(jax.random.key(0), x).block_until_ready()
        start = time.perf_counter()
        for i in range(20):
            f(jax.random.key(i), x).block_until_ready()
        out[f"{{name}}/{{rows}}"] = 1e3 * (time.perf_counter() - start) / 20
print(json.dumps(out))
"""


def child(code):
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    root = str(Path(__file__).resolve().parents[1])
    import jax

    print(
        f"# {platform.machine()}, {jax.device_count()} x {jax.devices()[0].platform}, "
        f"jax {jax.__version__}; sliced score matching, MLP {DIM}-64-64-1, batch "
        f"{BATCH}, {STEPS} steps per run"
    )
    print("| rows | data | compile s | first run s | ms / step | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in ROWS:
            for where in ("device", "host"):
                code = CHILD.format(
                    root=root,
                    rows=rows,
                    where=where,
                    path=str(Path(tmp) / f"x{rows}.dat"),
                    dim=DIM,
                    batch=BATCH,
                    steps=STEPS,
                )
                r = child(code)
                label = "array" if where == "device" else "memmap (host)"
                print(
                    f"| {rows:,} | {label} | {r['compile']:.2f} | {r['first']:.2f} | "
                    f"{r['step_ms']:.3f} | {r['peak_mb']:.0f} |"
                )
    draws = child(DRAW.format(root=root, rows=ROWS, dim=DIM, batch=BATCH))
    print()
    print(f"# one minibatch draw of {BATCH} rows (ms)")
    print("| rows | permutation (jax.random.choice) | ne.core.batch_indices |")
    print("|---|---|---|")
    for rows in ROWS:
        print(
            f"| {rows:,} | {draws[f'permutation/{rows}']:.3f} | "
            f"{draws[f'batch_indices/{rows}']:.3f} |"
        )


if __name__ == "__main__":
    main()
