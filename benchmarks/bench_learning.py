"""Learning benchmarks: EBM training step vs a hand-written JAX step; annealed Langevin.

1. One ``ne.EBM`` training step (PCD: 20 Langevin steps on 256 chains, an
   EnergyMLP 2-128-128-1, Adam) against a hand-written jitted JAX step doing
   the same work (same network as a pure function, same minibatch and buffer
   logic, same Langevin update), both run 1000 times inside one compiled loop.
   The number of traces of the energy function per run is counted: it does not
   grow with the number of steps.
2. ``ne.noise_annealed_langevin``: 10 noise levels x 100 steps on 10,000 2-D points,
   with a ScoreMLP 2-128-128-2, with the exact score of a two-component
   mixture, and with a Gaussian score (which shows the sampler's own cost).

    python benchmarks/bench_learning.py
"""

import argparse
import platform
import time

import numpy as np

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import numpyro_ebm as ne
from numpyro_ebm.datasets import eight_gaussians

BATCH, LANGEVIN_STEPS, STEP_SIZE, BUFFER, REINIT = 256, 20, 0.01, 10_000, 0.05


def best_of(f, repeats=3):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f())
        best = min(best, time.perf_counter() - start)
    return best


def hand_written_pcd(params0, data, num_steps, key):
    """The same PCD training run written directly in JAX (no library code)."""

    def mlp(p, x):
        h = jax.nn.swish(x @ p[0]["w"] + p[0]["b"])
        h = jax.nn.swish(h @ p[1]["w"] + p[1]["b"])
        return (h @ p[2]["w"] + p[2]["b"])[..., 0]

    opt = optax.adam(1e-3)
    mean, sd = data.mean(0), data.std(0) + 1e-3

    def step(carry, key):
        p, opt_state, buffer = carry
        k_batch, k_idx, k_re, k_noise, k_run = jax.random.split(key, 5)
        batch = data[jax.random.choice(k_batch, data.shape[0], (BATCH,), replace=False)]
        idx = jax.random.choice(k_idx, BUFFER, (BATCH,), replace=False)
        fresh = mean + sd * jax.random.normal(k_noise, (BATCH, 2))
        x = jnp.where(
            jax.random.bernoulli(k_re, REINIT, (BATCH, 1)), fresh, buffer[idx]
        )
        grad_x = jax.grad(lambda x: mlp(p, x).sum())

        def langevin(x, k):
            z = jax.random.normal(k, x.shape)
            return x - STEP_SIZE * grad_x(x) + jnp.sqrt(2 * STEP_SIZE) * z, None

        x, _ = jax.lax.scan(langevin, x, jax.random.split(k_run, LANGEVIN_STEPS))
        loss = lambda p: mlp(p, batch).mean() - mlp(p, x).mean()
        grads = jax.grad(loss)(p)
        updates, opt_state = opt.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state, buffer.at[idx].set(x)), None

    buffer = mean + sd * jax.random.normal(key, (BUFFER, 2))
    carry = (params0, opt.init(params0), buffer)
    return jax.lax.scan(step, carry, jax.random.split(key, num_steps))[0][0]


def bench_ebm(num_steps):
    data = eight_gaussians().sample(jax.random.key(0), 20_000)
    net = ne.nn.EnergyMLP(2, (128, 128), rngs=nnx.Rngs(0))
    layers = net.mlp.layers
    params0 = [
        {"w": jnp.asarray(layer.kernel[...]), "b": jnp.asarray(layer.bias[...])}
        for layer in layers
    ]
    hand = jax.jit(hand_written_pcd, static_argnums=2)
    hand_run = lambda: hand(params0, data, num_steps, jax.random.key(1))
    hand_run()  # compile
    t_hand = best_of(hand_run)

    traces = []
    apply, params, _ = ne.learn.training.split_network(net)

    def counted(p, x):
        traces.append(1)
        return apply(p, x)

    ebm = ne.EBM(
        (counted, params),
        optax.adam(1e-3),
        method=ne.PCD(
            num_steps=LANGEVIN_STEPS,
            step_size=STEP_SIZE,
            buffer_size=BUFFER,
            reinit_prob=REINIT,
        ),
    )
    run = lambda n: (
        ebm.run(jax.random.key(1), n, data, batch_size=BATCH, progress_bar=False).params
    )
    run(num_steps)  # compile (the run compiles anew, like NumPyro's MCMC)
    t_lib = best_of(lambda: run(num_steps))
    counts = []
    for n in (num_steps, 4 * num_steps):
        traces.clear()
        jax.block_until_ready(run(n))
        counts.append(len(traces))
    compile_run = best_of(lambda: run(1), repeats=2)

    print(
        f"\n### EBM training step (PCD, {LANGEVIN_STEPS} Langevin steps, batch {BATCH}, "
        f"MLP 2-128-128-1), {num_steps} steps in one compiled loop\n"
    )
    print("| implementation | time per step (ms) | ratio |")
    print("| --- | ---: | ---: |")
    print(f"| hand-written jitted JAX | {t_hand / num_steps * 1e3:.3f} | 1.00 |")
    print(
        f"| ne.EBM(method=ne.PCD(...)).run | {(t_lib - compile_run) / num_steps * 1e3:.3f} | "
        f"{(t_lib - compile_run) / t_hand:.2f} |"
    )
    print(
        f"\n(ne.EBM run time {t_lib:.2f} s includes {compile_run:.2f} s of set-up and "
        f"compilation, measured as a 1-step run.) Energy traces per run: "
        f"{counts[0]} for {num_steps} steps, {counts[1]} for {4 * num_steps} steps."
    )


def bench_annealed():
    sigmas = jnp.geomspace(10.0, 0.01, 10)
    init = jax.random.normal(jax.random.key(0), (10_000, 2)) * 10.0
    net = ne.nn.ScoreMLP(2, (128, 128), rngs=nnx.Rngs(0))
    m1, m2 = jnp.array([5.0, 5.0]), jnp.array([-5.0, -5.0])

    def exact(x, sigma):
        # score of 0.8 N(m1, I) + 0.2 N(m2, I) noised at sigma, written elementwise
        var = 1.0 + sigma**2
        d1 = jnp.sum((x - m1) ** 2, -1)
        d2 = jnp.sum((x - m2) ** 2, -1)
        r1 = jax.nn.sigmoid(jnp.log(4.0) - 0.5 * (d1 - d2) / var)[:, None]
        return (r1 * m1 + (1 - r1) * m2 - x) / var

    gaussian = lambda x, sigma: -x / (1.0 + sigma**2)

    print("\n### Annealed Langevin: 10 levels x 100 steps, 10,000 2-D points\n")
    print("| score | compile (s) | run (s) |")
    print("| --- | ---: | ---: |")
    scores = (
        ("ScoreMLP 2-128-128-2", net),
        ("exact mixture score (2 components)", exact),
        ("Gaussian score (sampler overhead)", gaussian),
    )
    for name, score in scores:
        f = jax.jit(
            lambda key, x, score=score: ne.noise_annealed_langevin(
                key, score, x, sigmas, 2e-5, 100
            )
        )
        start = time.perf_counter()
        jax.block_until_ready(f(jax.random.key(1), init))
        first = time.perf_counter() - start
        t = best_of(lambda f=f: f(jax.random.key(1), init))
        print(f"| {name} | {first - t:.2f} | {t:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=1000)
    args = parser.parse_args()
    print(
        f"Machine: {platform.machine()}, {jax.device_count()} JAX CPU device(s), "
        f"jax {jax.__version__}, python {platform.python_version()}"
    )
    bench_ebm(args.num_steps)
    bench_annealed()


if __name__ == "__main__":
    main()
