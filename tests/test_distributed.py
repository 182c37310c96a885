"""Real multi-process runs: local processes joined by jax.distributed.

Each test starts ``tests/distributed_worker.py`` as 2 or 3 processes with 2
CPU devices each, on a loopback port with gloo collectives, and compares
with this process's own run (4 CPU devices, see conftest.py).

Tolerance: the batches are the same rows whatever the number of processes
(indices from the key alone, gathered exactly), but gloo sums the devices'
partial gradients in another order than XLA does in one process, so the
parameters agree to rounding: after 30 steps the largest difference measured
was 2.4e-7 (about 1e-6 relative); the tests allow 2e-5 relative, 2e-6
absolute.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import jax
import jax.numpy as jnp

import numpyro_ebm as ne
from numpyro_ebm.core.batches import batch_indices
from numpyro_ebm.learn import distributed
from tests import distributed_worker as worker

WORKER = Path(worker.__file__)
ROOT = WORKER.parents[1]
#: a run stalls when, for this long, no worker has printed anything and all
#: of them together have used less than STALL_CPU seconds of CPU: a hang
#: (waiting in a collective costs no CPU), however slow the machine
STALL, STALL_CPU = 60.0, 1.0


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(procs):
    total = 0.0
    for p in procs:
        try:
            times = psutil.Process(p.pid).cpu_times()
        except psutil.Error:  # ended between the poll and here
            continue
        total += times.user + times.system
    return total


def launch(num_processes, mode, out, *extra):
    """Start the processes; ``[(returncode, stdout, stderr)]`` once all end.

    There is no bound on the run's length: the workers are waited on while
    they make progress (CPU time or output), and the test fails once none
    has made any for ``STALL`` seconds.
    """
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    port = str(_port())
    logs = Path(out).parent / f"logs-{mode}"
    logs.mkdir(exist_ok=True)
    files, procs = [], []
    try:
        for i in range(num_processes):
            stdout = open(logs / f"{i}.out", "w+")
            stderr = open(logs / f"{i}.err", "w+")
            files.append((stdout, stderr))
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), str(i), str(num_processes)]
                    + [port, str(out), mode, *map(str, extra)],
                    stdout=stdout,
                    stderr=stderr,
                    text=True,
                    env=env,
                    cwd=ROOT,
                )
            )
        _wait_while_progressing(procs, logs)
        results = []
        for p, (stdout, stderr) in zip(procs, files, strict=True):
            stdout.seek(0)
            stderr.seek(0)
            results.append((p.returncode, stdout.read(), stderr.read()))
        return results
    finally:
        for p in procs:  # nothing outlives the test, even on a failure
            if p.poll() is None:
                p.kill()
                p.wait()
        for handles in files:
            for f in handles:
                f.close()


def _wait_while_progressing(procs, logs):
    def output_size():
        return sum(f.stat().st_size for f in logs.iterdir())

    mark = None  # (time, live processes, their CPU seconds, output size)
    while any(p.poll() is None for p in procs):
        live = [p for p in procs if p.poll() is None]
        now, cpu, size = time.monotonic(), _cpu_seconds(live), output_size()
        if (
            mark is None
            or len(live) != mark[1]
            or cpu - mark[2] >= STALL_CPU
            or size != mark[3]
        ):
            mark = (now, len(live), cpu, size)
        elif now - mark[0] > STALL:
            tails = "\n".join(
                f"process {i}: {'running' if p.poll() is None else p.returncode}\n"
                + (logs / f"{i}.err").read_text()[-3000:]
                for i, p in enumerate(procs)
            )
            pytest.fail(
                f"the workers made no progress for {STALL:.0f} s (under "
                f"{STALL_CPU} s of CPU together, no output): they hang.\n{tails}"
            )
        time.sleep(0.5)


def _report(results):
    return "\n".join(
        f"process {i}: exit {code}\n{err[-3000:]}"
        for i, (code, _, err) in enumerate(results)
    )


#: (processes, devices of this process's reference run, learners): an EBM
#: (with the data on the devices, and kept on the hosts), a diffusion model
#: and an MML estimator (with the model's data replicated, and split by
#: rows) on 2 processes; sliced score matching and SOUL on 3 (against one
#: device)
CASES = [
    (2, 4, ("ebm", "ebm@host", "diffusion", "pgd", "pgd@split")),
    (3, None, ("sliced", "soul")),
]


@pytest.fixture(scope="module")
def single_process_runs():
    """This process's runs of the worker's learners that CASES compare with."""
    runs = {}
    for _, devices, names in CASES:
        for name, learner in worker.learners().items():
            if name not in names:
                continue
            runs[devices, name] = learner.run(
                jax.random.key(0),
                worker.STEPS,
                worker.data(),
                batch_size=worker.BATCH,
                progress_bar=False,
                num_devices=devices,
            )
        for name, estimator in worker.estimators().items():
            if name in names:
                result = worker.run_estimator(
                    estimator, jax.random.key(0), num_devices=devices
                )
                runs[devices, name] = (
                    result.params["theta"],
                    result.history["log_joint"],
                )
    return runs


@pytest.mark.parametrize("num_processes,devices,names", CASES)
def test_processes_reproduce_the_single_process_run(
    tmp_path, single_process_runs, num_processes, devices, names
):
    out = tmp_path / "out.npz"
    results = launch(num_processes, "train", out, ",".join(names))
    assert all(code == 0 for code, _, _ in results), _report(results)
    saved = np.load(out)
    for name in names:
        # the hosts' run is the devices' run (PCD's start fitted in float64);
        # an MML run with the data split over the processes is the run with
        # the data replicated
        reference = single_process_runs[devices, name.split("@")[0]]
        if isinstance(reference, tuple):  # an MML estimator
            params, loss = reference
        else:
            params, loss = reference.params, reference.history["loss"]
        for i, leaf in enumerate(jax.tree.leaves(params)):
            np.testing.assert_allclose(
                saved[f"{name}/{i}"], np.asarray(leaf), rtol=2e-5, atol=2e-6
            )
        np.testing.assert_allclose(saved[f"{name}/loss"], loss, rtol=2e-5, atol=2e-6)


def test_a_killed_process_stops_the_others_and_the_run_resumes(tmp_path):
    checkpoints = tmp_path / "ckpt"
    results = launch(2, "die", tmp_path / "unused.npz", checkpoints)
    (code0, _, err0), (code1, _, _) = results
    assert code1 == -signal.SIGKILL
    assert code0 != 0  # stopped: no hang
    message = f"resumes from the latest checkpoint, at step {worker.DIE_AT}"
    assert "failed in a collective with the other processes" in err0, err0[-3000:]
    assert message in err0, err0[-3000:]
    assert sorted(os.listdir(checkpoints)) == ["100", "50", "run.json"]

    # a restart, here in one process with 4 devices: the checkpoint of two
    # processes is taken (same run, data digested independently of the split)
    ebm = worker.learners()["ebm"]  # one learner: its loop compiles once

    def run(**kwargs):
        return ebm.run(
            jax.random.key(0),
            worker.LONG_STEPS,
            worker.data(),
            batch_size=worker.BATCH,
            progress_bar=False,
            num_devices=4,
            **kwargs,
        )

    resumed = run(
        checkpoint_dir=str(checkpoints), checkpoint_every=worker.CHECKPOINT_EVERY
    )
    plain = run()
    loss, reference = resumed.history["loss"], plain.history["loss"]
    # the first DIE_AT losses come from the two processes' checkpoint (they
    # differ from this process's in the last bits), the rest were computed here
    assert not np.array_equal(loss[: worker.DIE_AT], reference[: worker.DIE_AT])
    np.testing.assert_allclose(loss, reference, rtol=2e-5, atol=2e-6)
    for a, b in zip(
        jax.tree.leaves(resumed.params), jax.tree.leaves(plain.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_processes_that_disagree_are_told_what_differs(tmp_path):
    results = launch(2, "disagree", tmp_path / "unused.npz")
    for code, _, err in results:
        assert code != 0
        assert "the processes disagree on rng_key" in err, err[-3000:]


def test_local_shards_cover_the_rows_once_and_refuse_a_remainder():
    x = np.arange(24).reshape(12, 2)
    shards = [ne.local_shard(x, p, 3) for p in range(3)]
    np.testing.assert_array_equal(np.concatenate(shards), x)
    with pytest.raises(ValueError, match="12 rows do not divide over 5 processes"):
        ne.local_shard(x, 0, 5)


def test_rows_split_over_devices_gather_the_batch_exactly():
    # 10 rows over 4 devices: padded to 12, the padding never drawn
    x = jnp.arange(30.0).reshape(10, 3)
    mesh = distributed.make_mesh(4)
    rows = distributed.put_rows(x, mesh)
    assert rows.values.shape == (12, 3) and int(rows.num_rows) == 10
    gather = jax.jit(lambda k, r: distributed.gather_rows(k, r, 8, mesh))
    for seed in range(5):
        key = jax.random.key(seed)
        idx = batch_indices(key, 10, 8)
        np.testing.assert_array_equal(gather(key, rows), x[idx])
    with pytest.raises(ValueError, match="divisible by the 4 devices"):
        distributed.gather_rows(key, rows, 6, mesh)
