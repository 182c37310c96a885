"""One process of a multi-process run, started by tests/test_distributed.py.

``python tests/distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT MODE
[NAMES | CHECKPOINT_DIR]``: joins the others with :func:`jax.distributed.initialize`
on a loopback port (2 CPU devices per process, gloo collectives), trains the
learners of :func:`learners` on this process's shard of :func:`data`, and
(process 0) saves their parameters to ``OUT`` (an ``.npz``).

Modes: ``train`` (the learners named in the comma-separated last argument,
or every one; ``NAME@host`` trains learner NAME on this process's rows of a
memory-mapped file, kept on the host; ``NAME@split`` runs MML estimator
NAME on this process's rows of the model's data, ``data_args=("y",)``); ``die`` (the EBM with checkpoints every
``CHECKPOINT_EVERY`` steps; process 1 kills itself as the steps after the
checkpoint at ``DIE_AT`` start); ``disagree`` (process 1 uses another key).

Process 1 calls every ``run`` through one more Python frame than process 0
(:func:`called_from_elsewhere`), as a user's rank-dependent wrapper would:
the processes must still compile the same programs.
"""

import os
import signal
import sys

import numpy as np

NUM_ROWS, DIM, BATCH, STEPS = 48, 2, 12, 30
LONG_STEPS, CHECKPOINT_EVERY, DIE_AT = 200, 50, 100


def data():
    """The same 48 x 2 data set in every process (each takes its shard)."""
    rng = np.random.default_rng(0)
    return (rng.normal(size=(NUM_ROWS, DIM)) * [1.0, 0.5] + [0.5, -1.0]).astype(
        np.float32
    )


def learners():
    """Small instances of every learner kind, built the same in each process."""
    import optax
    from flax import nnx

    import numpyro_ebm as ne
    from numpyro_ebm.core.sde import vp_sde

    sde = vp_sde()
    return {
        "ebm": ne.EBM(
            ne.nn.EnergyMLP(DIM, (16,), rngs=nnx.Rngs(0)),
            optax.adam(1e-2),
            method=ne.PCD(num_steps=3, buffer_size=48),
        ),
        "sliced": ne.ScoreMatching(
            ne.nn.EnergyMLP(DIM, (16,), rngs=nnx.Rngs(0)),
            optax.adam(1e-2),
            ne.SlicedScoreMatching(),
        ),
        "diffusion": ne.ScoreMatching(
            ne.nn.DiffusionScoreMLP(DIM, sde, (16,), rngs=nnx.Rngs(0)),
            optax.adam(1e-2),
            ne.DiffusionScoreMatching(sde),
        ),
    }


def latent_model(y):
    """A latent-variable model for the MML estimators: x_i ~ N(theta, 1),
    y_i ~ N(x_i, 1)."""
    import numpyro
    import numpyro.distributions as dist

    theta = numpyro.param("theta", 0.0)
    x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([y.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)


def estimators():
    """MML estimators, their particles divisible by 4 and by 6 devices."""
    import numpyro_ebm as ne

    return {
        "pgd": ne.PGD(latent_model, step_size=0.01, num_particles=12),
        "soul": ne.SOUL(
            latent_model, step_size=0.05, learning_rate=0.05, num_particles=12
        ),
    }


def run_estimator(estimator, key, y=None, **kwargs):
    """An estimator's run on the first column of the data (by default every
    process passes all of it: the particles are split, the data replicated)."""
    y = data()[:, 0] if y is None else y
    return estimator.run(key, STEPS, y, progress_bar=False, **kwargs)


def called_from_elsewhere(pid, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, from a deeper call stack in process 1."""
    if pid == 1:
        return (lambda: fn(*args, **kwargs))()
    return fn(*args, **kwargs)


def main():
    # imported by the tests for `data` and `learners`: the worker's device
    # count is set only when it runs as a script
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    pid, n, port, out, mode = sys.argv[1:6]
    pid, n = int(pid), int(n)
    extra = sys.argv[6] if len(sys.argv) > 6 else None  # checkpoints or names
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}",
        num_processes=n,
        process_id=pid,
        initialization_timeout=60,
        heartbeat_timeout_seconds=5,
    )
    import numpyro_ebm as ne

    limit = jax.config.jax_traceback_in_locations_limit
    shard = ne.local_shard(data())
    key = jax.random.key(1 if (mode == "disagree" and pid == 1) else 0)
    results = {}
    if mode == "train":
        names = extra.split(",") if extra else [*learners(), *estimators()]
        for name, learner in learners().items():
            for host in (False, True):
                label = f"{name}@host" if host else name
                if label not in names:
                    continue
                rows = shard
                if host:  # this process's rows of a memory-mapped file
                    path = f"{out}.{pid}.dat"
                    full = np.memmap(path, np.float32, "w+", shape=data().shape)
                    full[:] = data()
                    full.flush()
                    full = np.memmap(path, np.float32, "r", shape=data().shape)
                    rows = ne.local_shard(full)
                result = called_from_elsewhere(
                    pid,
                    learner.run,
                    key,
                    STEPS,
                    rows,
                    batch_size=BATCH,
                    progress_bar=False,
                )
                for i, leaf in enumerate(jax.tree.leaves(result.params)):
                    results[f"{label}/{i}"] = np.asarray(leaf)
                results[f"{label}/loss"] = np.asarray(result.history["loss"])
        for name, estimator in estimators().items():
            for split in (False, True):
                label = f"{name}@split" if split else name
                if label not in names:
                    continue
                if split:  # each process passes its rows of y
                    y = ne.local_shard(data()[:, 0])
                    result = called_from_elsewhere(
                        pid, run_estimator, estimator, key, y, data_args=("y",)
                    )
                else:
                    result = called_from_elsewhere(pid, run_estimator, estimator, key)
                results[f"{label}/0"] = np.asarray(result.params["theta"])
                results[f"{label}/loss"] = np.asarray(result.history["log_joint"])
    elif mode == "disagree":
        learners()["ebm"].run(key, STEPS, shard, batch_size=BATCH, progress_bar=False)
    elif mode == "die":
        if pid == 1:  # dies as the chunk after the checkpoint at DIE_AT starts
            from numpyro_ebm.learn import training

            run_chunk = training._run_chunk

            def die_then_run(fn, state, history, data, lower, upper, checkpointer):
                if lower == DIE_AT:
                    os.kill(os.getpid(), signal.SIGKILL)
                return run_chunk(fn, state, history, data, lower, upper, checkpointer)

            training._run_chunk = die_then_run
        learners()["ebm"].run(
            key,
            LONG_STEPS,
            shard,
            batch_size=BATCH,
            progress_bar=False,
            checkpoint_dir=extra,
            checkpoint_every=CHECKPOINT_EVERY,
        )
    # the runs compiled without source locations, and put the setting back
    assert jax.config.jax_traceback_in_locations_limit == limit, (
        jax.config.jax_traceback_in_locations_limit
    )
    if pid == 0:
        np.savez(out, **results)
    print(f"process {pid} done", flush=True)


if __name__ == "__main__":
    main()
