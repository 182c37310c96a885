"""Maximum-marginal-likelihood benchmarks: the published setups, side by side.

1. Toy hierarchical model (Kuntz, Lim & Johansen 2023): D = 100,
   x_d ~ N(theta, 1), y_d ~ N(x_d, 1), data from theta = 1, N = 10 particles,
   300 steps. PGD with h = 2/(2+D), PQN with h = 2/3 (particles and theta
   start at 0; estimate = time average after the burn-in the paper uses), and
   SOUL; then IPLA's stationary variance of theta at a small step against
   2/(N D).
2. Bayesian logistic regression on the Wisconsin breast-cancer data (683 x 9,
   standardised, labels (class-2)/2, no intercept, prior w ~ N(theta 1, 5 I),
   80/20 split with scikit-learn random_state=0): h = 0.01, 400 steps, 100
   particles, predictions averaged over the particle clouds of the second half
   of the run. Test error, LPPD, theta and wall time per method over several
   seeds. Published (100 runs): PGD 3.53%, SOUL 3.51%, LPPD about -0.094,
   theta about 1; PGD took 1.7 s and SOUL 27.9 s.

    python benchmarks/bench_mml.py --data ../shared/data/breast-cancer-wisconsin.data
"""

import argparse
import functools
import os
import platform
import time

import numpy as np

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer.initialization import init_to_value

import numpyro_ebm as ne
from numpyro_ebm.datasets import load_breast_cancer_wisconsin


def toy_model(y):
    theta = numpyro.param("theta", 0.0)
    x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([y.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)


def pgd_toy_theory(y_bar, D, N, h, K, average_from):
    """Exact law of PGD's time-averaged estimate on the toy model.

    The particle mean over particles and dimensions, and theta, form a closed
    linear Gaussian system: with u = theta - mean(y), v = xbar - mean(y),
    u' = u + h D (v - u), v' = v + h (u - 2 v) + sqrt(2 h / (N D)) xi, from
    u = v = -mean(y) (everything starts at 0). The average of u over the
    window is Gaussian; returns its mean (per unit of mean(y)) and sd.
    """
    A = np.array([[1 - h * D, h * D], [h, 1 - 2 * h]])
    window = range(average_from + 1, K + 1)  # history[i] is theta after i + 1 steps
    powers = [np.eye(2)]
    for _ in range(K):
        powers.append(A @ powers[-1])
    drift = np.mean([powers[k] @ np.array([-1.0, -1.0]) for k in window], 0)[0]
    s = np.sqrt(2 * h / (N * D))
    # noise xi_j (entering v at step j + 1) reaches u_k through A^(k - 1 - j) e_v
    coef = [
        sum(powers[k - 1 - j][0, 1] for k in window if k > j) / len(window)
        for j in range(K)
    ]
    return drift * y_bar, s * np.sqrt(np.sum(np.square(coef)))


def _normal_abs_stats(mean, sd, tol):
    from scipy.stats import norm

    mean_abs = sd * np.sqrt(2 / np.pi) * np.exp(-(mean**2) / (2 * sd**2)) + mean * (
        1 - 2 * norm.cdf(-mean / sd)
    )
    within = norm.cdf((tol - mean) / sd) - norm.cdf((-tol - mean) / sd)
    return mean_abs, within


def bench_toy(num_data_sets):
    D, N, K = 100, 10, 300
    zeros = init_to_value(values={"x": jnp.zeros(D)})
    soul = ne.SOUL(
        toy_model,
        step_size=2 / (2 + D),
        num_langevin_steps=5,
        num_particles=N,
        learning_rate=1.9 / D,
        burn_in=150,
        init_strategy=zeros,
    )
    methods = {
        "PGD, h = 2/(2+D), average from step 150": (
            ne.PGD(
                toy_model, step_size=2 / (2 + D), num_particles=N, init_strategy=zeros
            ),
            150,
            K,
        ),
        "PGD, h = 2/(2+D), 1500 steps, average from step 300": (
            ne.PGD(
                toy_model, step_size=2 / (2 + D), num_particles=N, init_strategy=zeros
            ),
            300,
            1500,
        ),
        "PQN, h = 2/3, average from step 15": (
            ne.PGD(
                toy_model,
                step_size=2 / 3,
                num_particles=N,
                init_strategy=zeros,
                preconditioner="pqn",
            ),
            15,
            K,
        ),
        "SOUL, m = 5, c = 1.9/D, burn-in 150": (soul, None, K),
        "SOUL, m = 5, c = 1.9/D, burn-in 150, 1000 steps": (soul, None, 1000),
    }
    rng = np.random.default_rng(0)
    ys = jnp.asarray(
        rng.normal(size=(num_data_sets, D)) + rng.normal(1.0, 1.0, (num_data_sets, D)),
        jnp.float32,
    )
    keys = jax.random.split(jax.random.key(0), num_data_sets)
    mle = np.asarray(ys.mean(1), np.float64)
    print(
        f"\n### Toy hierarchical model, D = {D}, N = {N}, {K} steps, "
        f"{num_data_sets} data sets (one run each)\n"
    )
    print(
        "| method | mean signed error | mean abs. error | max abs. error "
        "| within 0.02 | time for all runs (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (estimator, average_from, steps) in methods.items():

        @jax.jit
        def run_all(
            ys, keys, estimator=estimator, average_from=average_from, steps=steps
        ):
            def one(y, key):
                state = estimator.init(key, y)

                def body(state, _):
                    state, _ = estimator.update(state, y)
                    return state, state.params["theta"]

                state, thetas = jax.lax.scan(body, state, None, length=steps)
                if average_from is None:
                    return estimator._estimate(state)["theta"]
                return thetas[average_from:].mean()

            return jax.vmap(one)(ys, keys)

        jax.block_until_ready(run_all(ys, keys))  # compile
        start = time.perf_counter()
        estimates = np.asarray(jax.block_until_ready(run_all(ys, keys)), np.float64)
        elapsed = time.perf_counter() - start
        err = estimates - mle
        print(
            f"| {name} | {err.mean():+.4f} | {np.abs(err).mean():.4f} | "
            f"{np.abs(err).max():.4f} | {np.mean(np.abs(err) < 0.02):.0%} | "
            f"{elapsed:.2f} |"
        )
        if name.startswith("PGD"):
            law = functools.partial(
                pgd_toy_theory,
                D=D,
                N=N,
                h=2 / (2 + D),
                K=steps,
                average_from=average_from,
            )
            stats = [_normal_abs_stats(*law(m), 0.02) for m in mle]
            drift, sd = law(1.0)
            theory = (
                f"| PGD, exact law of the estimate (mean {drift:+.4f} x mean(y), "
                f"sd {sd:.4f}) | {drift * mle.mean():+.4f} | "
                f"{np.mean([a for a, _ in stats]):.4f} | | "
                f"{np.mean([w for _, w in stats]):.0%} | |"
            )
            print(theory)

    # IPLA: theta's stationary law is ∝ p_theta(y)^N, variance 2 / (N D)
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.normal(size=D) + rng.normal(1.0, 1.0, size=D), jnp.float32)
    print("\n| IPLA step size | steps | var(theta) | 2/(N D) | ratio | ESS |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    from arviz_stats.base import array_stats

    for h, steps in ((2e-3, 400_000),):
        result = ne.IPLA(toy_model, step_size=h, num_particles=N).run(
            jax.random.key(1), steps, y, progress_bar=False
        )
        theta = np.asarray(result.history["params"]["theta"], np.float64)[steps // 10 :]
        ess = float(
            array_stats.ess(theta[None], chain_axis=0, draw_axis=1, method="bulk")
        )
        target = 2 / (N * D)
        print(
            f"| {h} | {steps} | {theta.var():.5f} | {target:.5f} | "
            f"{theta.var() / target:.3f} | {ess:.0f} |"
        )


def blr_model(X, y=None):
    theta = numpyro.param("theta", 0.0)
    w = numpyro.sample(
        "w", dist.Normal(theta, np.sqrt(5.0)).expand([X.shape[1]]).to_event(1)
    )
    numpyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)


def bench_blr(path, num_seeds):
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer_wisconsin(path)
    X_train, X_test, y_train, y_test = (
        jnp.asarray(a) for a in train_test_split(X, y, test_size=0.2, random_state=0)
    )
    steps, particles, h = 400, 100, 0.01
    estimators = {
        "PGD": lambda: ne.PGD(blr_model, step_size=h, num_particles=particles),
        "IPLA": lambda: ne.IPLA(blr_model, step_size=h, num_particles=particles),
        "SOUL (m = 1, SGD at h)": lambda: ne.SOUL(
            blr_model, optimizer=optax.sgd(h), step_size=h, num_particles=particles
        ),
    }
    print(
        f"\n### Bayesian logistic regression, breast cancer ({X.shape[0]} x {X.shape[1]}), "
        f"{steps} steps, {particles} particles, {num_seeds} seeds\n"
    )
    print(
        "| method | test error (%) | LPPD | theta | wall time per run (s, after compile) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, make in estimators.items():
        estimator = make()

        @jax.jit
        def run(key, estimator=estimator):
            state = estimator.init(key, X_train, y_train)

            def body(state, _):
                state, _ = estimator.update(state, X_train, y_train)
                prob = jax.nn.sigmoid(
                    X_test @ state.particles["w"].T
                )  # (test, particles)
                return state, (prob.mean(-1), state.params["theta"])

            _, (probs, thetas) = jax.lax.scan(body, state, None, length=steps)
            return probs[steps // 2 :].mean(0), thetas[steps // 2 :].mean()

        errors, lppds, thetas, times = [], [], [], []
        for seed in range(num_seeds):
            key = jax.random.key(seed)
            if seed == 0:
                jax.block_until_ready(run(key))  # compile
            start = time.perf_counter()
            prob, theta = jax.block_until_ready(run(key))
            times.append(time.perf_counter() - start)
            errors.append(float(jnp.mean((prob > 0.5) != (y_test > 0.5))))
            lik = jnp.where(y_test > 0.5, prob, 1 - prob)
            lppds.append(float(jnp.mean(jnp.log(lik))))
            thetas.append(float(theta))
        print(
            f"| {name} | {100 * np.mean(errors):.2f} ± {100 * np.std(errors):.2f} | "
            f"{np.mean(lppds):.4f} | {np.mean(thetas):.3f} | {np.median(times):.3f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=os.path.join(
            os.path.dirname(__file__),
            "..",
            "..",
            "shared",
            "data",
            "breast-cancer-wisconsin.data",
        ),
    )
    parser.add_argument("--num-seeds", type=int, default=10)
    parser.add_argument("--num-data-sets", type=int, default=100)
    args = parser.parse_args()
    print(
        f"Machine: {platform.machine()}, {jax.device_count()} JAX CPU device(s), "
        f"jax {jax.__version__}, numpyro {numpyro.__version__}"
    )
    bench_toy(args.num_data_sets)
    if os.path.exists(args.data):
        bench_blr(args.data, args.num_seeds)
    else:
        print(
            f"\n(breast-cancer data not found at {args.data}: logistic regression skipped)"
        )


if __name__ == "__main__":
    main()
