"""Side-by-side MCMC kernel benchmark: numpyro_ebm vs NumPyro (vs BlackJAX).

Targets: a 100-D diagonal Gaussian with scales 0.1..1 and a Bayesian logistic
regression (synthetic, 1000 x 10). Every sampler runs 4 chains
(``chain_method="vectorized"`` where it is a NumPyro kernel) with the same
warm-up and draws. Reported per sampler:

- min bulk ESS over coordinates (ArviZ),
- ESS/s: min ESS over the sampling time (best of three runs), compile time
  excluded,
- ESS per gradient evaluation in the sampling phase,
- compile time: tracing, lowering and XLA compilation inside the measured run,
  summed from ``jax.monitoring`` events (NumPyro compiles its sampling loop anew
  on every ``run``); a tiny run first fills the caches of one-off helpers.

A second table compares the cost of one MALA step with one jitted
``value_and_grad`` of the same potential, both inside a ``lax.scan``.

Usage::

    python benchmarks/bench_kernels.py            # full sizes (a few minutes)
    python benchmarks/bench_kernels.py --quick    # tiny sizes, smoke run
"""

import argparse
import platform
import time

import numpy as np
from arviz_stats.base import array_stats
from timing import timed  # beside this script

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import HMC, MCMC, NUTS

import numpyro_ebm as ne
from numpyro_ebm.core import langevin, metrics

try:
    import blackjax
except ImportError:  # optional comparison
    blackjax = None

NUM_CHAINS = 4
SCALES = np.linspace(0.1, 1.0, 100)


# ------------------------------------------------------------------ targets
def gaussian_model():
    numpyro.sample("x", dist.Normal(0.0, jnp.asarray(SCALES)).to_event(1))


def logistic_data(num_data=1000, dim=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num_data, dim)).astype(np.float32)
    coef = rng.normal(size=dim) * 0.5
    y = (rng.uniform(size=num_data) < 1 / (1 + np.exp(-X @ coef))).astype(np.float32)
    return jnp.asarray(X), jnp.asarray(y)


def logistic_model(X, y):
    coef = numpyro.sample(
        "coef", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1)
    )
    numpyro.sample("y", dist.Bernoulli(logits=X @ coef), obs=y)


def min_ess(draws):
    """draws: (chains, draws, dim)."""
    d = np.asarray(draws, np.float64).reshape(draws.shape[0], draws.shape[1], -1)
    return float(np.min(array_stats.ess(d, chain_axis=0, draw_axis=1, method="bulk")))


# ------------------------------------------------------------------ runners
def run_numpyro(kernel_fn, model, args, num_warmup, num_samples, grads_per_step):
    def once(nw, ns):
        mcmc = MCMC(
            kernel_fn(model),
            num_warmup=nw,
            num_samples=ns,
            num_chains=NUM_CHAINS,
            chain_method="vectorized",
            progress_bar=False,
        )
        extra = ("num_steps",) if grads_per_step is None else ()

        def go():
            mcmc.run(jax.random.key(0), *args, extra_fields=extra)
            return jax.block_until_ready(mcmc.get_samples())

        _, seconds, compile_seconds = timed(go)
        return mcmc, seconds, compile_seconds

    once(1, 1)
    # sampling takes a fraction of a second here: best of three runs
    runs = [once(num_warmup, num_samples) for _ in range(3)]
    mcmc = runs[0][0]
    total = min(r[1] - r[2] for r in runs)
    compile_time = float(np.median([r[2] for r in runs]))
    samples = mcmc.get_samples(group_by_chain=True)
    draws = np.concatenate(
        [np.asarray(v).reshape(NUM_CHAINS, num_samples, -1) for v in samples.values()],
        axis=-1,
    )
    if grads_per_step is None:  # NUTS: leapfrog steps per iteration
        grads = float(np.sum(mcmc.get_extra_fields()["num_steps"]))
    else:
        grads = grads_per_step * num_samples * NUM_CHAINS
    return draws, total, compile_time, grads


def run_blackjax(model, args, num_warmup, num_samples, step_size):
    from numpyro.infer.util import initialize_model

    info = initialize_model(jax.random.key(0), model, model_args=args)
    potential = info.potential_fn
    init = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (NUM_CHAINS, *x.shape)), info.param_info.z
    )
    mala = blackjax.mala(lambda z: -potential(z), step_size)

    def chain(key, position):
        def body(state, key):
            state, _ = mala.step(key, state)
            return state, state.position

        keys = jax.random.split(key, num_warmup + num_samples)
        _, positions = jax.lax.scan(body, mala.init(position), keys)
        return jax.tree.map(lambda x: x[num_warmup:], positions)

    run = jax.jit(jax.vmap(chain))
    keys = jax.random.split(jax.random.key(1), NUM_CHAINS)
    start = time.perf_counter()
    compiled = run.lower(keys, init).compile()
    compile_time = time.perf_counter() - start
    elapsed = np.inf
    for _ in range(3):
        start = time.perf_counter()
        positions = jax.block_until_ready(compiled(keys, init))
        elapsed = min(elapsed, time.perf_counter() - start)
    draws = np.concatenate(
        [
            np.asarray(v).reshape(NUM_CHAINS, num_samples, -1)
            for v in positions.values()
        ],
        axis=-1,
    )
    return draws, elapsed, compile_time, num_samples * NUM_CHAINS


KERNELS = {
    "ne.MALA": (lambda m: ne.MALA(m), 1),
    "ne.ULA": (lambda m: ne.ULA(m, step_size=0.1, adapt_mass_matrix=True), 1),
    "ne.RWMH": (lambda m: ne.RWMH(m), 0),
    "NumPyro NUTS": (lambda m: NUTS(m), None),
    "NumPyro HMC(num_steps=1)": (
        lambda m: HMC(m, num_steps=1, trajectory_length=None),
        1,
    ),
}


def benchmark_target(name, model, args, num_warmup, num_samples):
    rows = []
    for label, (kernel_fn, grads_per_step) in KERNELS.items():
        draws, seconds, compile_time, grads = run_numpyro(
            kernel_fn, model, args, num_warmup, num_samples, grads_per_step
        )
        ess = min_ess(draws)
        rows.append(
            (
                label,
                ess,
                ess / seconds,
                ess / grads if grads else None,
                compile_time,
                seconds,
            )
        )
    if blackjax is not None:
        # BlackJAX's MALA has no adaptation and no mass matrix: give it the step
        # that ne.MALA tunes without a mass matrix (same convention,
        # x + h grad log p + sqrt(2h) z)
        tuned = MCMC(
            ne.MALA(model, adapt_mass_matrix=False),
            num_warmup=num_warmup,
            num_samples=1,
            progress_bar=False,
        )
        tuned.run(jax.random.key(2), *args)
        mala_step = float(tuned.last_state.adapt_state.step_size)
        draws, seconds, compile_time, grads = run_blackjax(
            model, args, num_warmup, num_samples, mala_step
        )
        ess = min_ess(draws)
        rows.append(
            (
                "BlackJAX mala (no precond.)",
                ess,
                ess / seconds,
                ess / grads,
                compile_time,
                seconds,
            )
        )
    print(
        f"\n### {name}: {NUM_CHAINS} chains, {num_warmup} warm-up + {num_samples} draws\n"
    )
    print("| sampler | min bulk ESS | ESS/s | ESS/grad | compile (s) | sampling (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, ess, ess_s, ess_g, comp, secs in rows:
        ess_g = "n/a (no gradient)" if ess_g is None else f"{ess_g:.4f}"
        print(
            f"| {label} | {ess:.0f} | {ess_s:.0f} | {ess_g} | {comp:.2f} | {secs:.2f} |"
        )
    return rows


# ------------------------------------------------------ per-step cost
def step_cost(model, args, num_steps):
    from numpyro.infer.util import initialize_model

    info = initialize_model(jax.random.key(0), model, model_args=args)
    potential = info.potential_fn
    z0 = info.param_info.z
    vg = jax.value_and_grad(potential)
    dim = jax.flatten_util.ravel_pytree(z0)[0].shape[0]
    metric = metrics.metric_from_inverse_mass_matrix(jnp.ones(dim))

    @jax.jit
    def grads_only(z):
        def body(z, _):
            pe, g = vg(z)
            # feed the gradient back so that no evaluation can be hoisted
            z = jax.tree.map(lambda a, b: a - 1e-6 * b, z, g)
            return z, pe

        return jax.lax.scan(body, z, None, length=num_steps)

    @jax.jit
    def grads_and_noise(key, z):
        # the floor of any Langevin step: one gradient and d Gaussian draws
        def body(z, key):
            pe, g = vg(z)
            noise = jax.random.normal(key, (dim,))
            flat, unravel = jax.flatten_util.ravel_pytree(z)
            g_flat, _ = jax.flatten_util.ravel_pytree(g)
            return unravel(flat - 1e-6 * g_flat + 1e-6 * noise), pe

        return jax.lax.scan(body, z, jax.random.split(key, num_steps))

    @jax.jit
    def mala_steps(key, z):
        def body(state, key):
            state, info = langevin.langevin_step(key, state, potential, 1e-3, metric)
            return state, info.accept_prob

        return jax.lax.scan(
            body, langevin.init(z, potential), jax.random.split(key, num_steps)
        )

    def timed(f, *a):
        jax.block_until_ready(f(*a))  # compile
        best = np.inf
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(f(*a))
            best = min(best, time.perf_counter() - start)
        return best / num_steps

    t_grad = timed(grads_only, z0)
    t_floor = timed(grads_and_noise, jax.random.key(0), z0)
    t_mala = timed(mala_steps, jax.random.key(0), z0)
    return t_grad, t_floor, t_mala


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    args = parser.parse_args()
    num_warmup, num_samples, num_steps = (
        (50, 100, 200) if args.quick else (1000, 5000, 20000)
    )
    print(
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} JAX CPU device(s), jax {jax.__version__}, "
        f"numpyro {numpyro.__version__}, python {platform.python_version()}"
    )
    data = logistic_data()
    benchmark_target(
        "100-D Gaussian, scales 0.1..1", gaussian_model, (), num_warmup, num_samples
    )
    benchmark_target(
        "Logistic regression, 1000 x 10", logistic_model, data, num_warmup, num_samples
    )

    print(
        f"\n### Cost of one step ({num_steps} steps in a jitted lax.scan, best of 5)\n"
    )
    print(
        "| target | value_and_grad (µs) | value_and_grad + d normal draws (µs) "
        "| ne MALA step (µs) | MALA / value_and_grad |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, model, margs in [
        ("100-D Gaussian", gaussian_model, ()),
        ("Logistic regression", logistic_model, data),
    ]:
        t_grad, t_floor, t_mala = step_cost(model, margs, num_steps)
        print(
            f"| {name} | {t_grad * 1e6:.2f} | {t_floor * 1e6:.2f} | "
            f"{t_mala * 1e6:.2f} | {t_mala / t_grad:.2f} |"
        )


if __name__ == "__main__":
    main()
