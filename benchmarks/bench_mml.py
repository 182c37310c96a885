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
3. The same PGD through ``run()``, as a user calls it: wall time of the first
   call (compilation included), of later calls on the same data shape
   (nothing compiled: the count of backend compilations is shown), against
   the published implementation's 1.7 s.
4. A 5-d factor model with 2 factors and 300 points, where the parameters'
   curvature grows with the data: the exact marginal log-likelihood at each
   method's estimate against the exact MLE's, for SVI (Adam, AutoNormal), the
   estimators' defaults (no tuning) and plain PGD / PQN at fixed steps.

    python benchmarks/bench_mml.py --data ../shared/data/breast-cancer-wisconsin.data
"""

import argparse
import functools
import os
import platform
import time
import warnings

import numpy as np

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from jax import monitoring
from numpyro.infer.initialization import init_to_value

import numpyro_ebm as ne

from wisconsin import load_breast_cancer_wisconsin  # beside this script


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
                    X_test @ state.sampler_state.particles["w"].T
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


def bench_run_timing(path, repeats=3):
    X, y = load_breast_cancer_wisconsin(path)
    X, y = jnp.asarray(X), jnp.asarray(y)
    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: (
            compiles.append(name)
            if name == "/jax/core/compile/backend_compile_duration"
            else None
        )
    )
    estimator = ne.PGD(blr_model, step_size=0.01, num_particles=100)
    print(
        "\n### PGD.run on breast cancer (100 particles, 400 steps), as called by a "
        "user\n"
    )
    print("| call | wall time (s) | backend compilations | theta |")
    print("| --- | ---: | ---: | ---: |")
    for i in range(repeats):
        before = len(compiles)
        start = time.perf_counter()
        result = estimator.run(jax.random.key(i), 400, X, y, progress_bar=False)
        jax.block_until_ready(result.params)
        elapsed = time.perf_counter() - start
        label = "first (compiles)" if i == 0 else f"again, key {i}"
        print(
            f"| {label} | {elapsed:.3f} | {len(compiles) - before} | "
            f"{float(result.params['theta']):.3f} |"
        )
    print("| published implementation (PGD) | 1.7 | - | - |")


FACTOR_N, FACTOR_D, FACTOR_K = 300, 5, 2


def factor_model(y):
    w = numpyro.param("W", 0.5 * jnp.eye(FACTOR_D, FACTOR_K) + 0.1)
    mu = numpyro.param("mu", jnp.zeros(FACTOR_D))
    sigma = numpyro.param(
        "sigma", jnp.ones(FACTOR_D), constraint=dist.constraints.positive
    )
    z = numpyro.sample(
        "z", dist.Normal(0.0, 1.0).expand([y.shape[0], FACTOR_K]).to_event(2)
    )
    numpyro.sample("y", dist.Normal(z @ w.T + mu, sigma).to_event(2), obs=y)


def _factor_exact(params, y):
    """log p(y | W, mu, sigma): y_n ~ N(mu, W W^T + diag sigma^2)."""
    w, mu, sigma = params["W"], params["mu"], params["sigma"]
    cov = w @ w.T + jnp.diag(sigma**2)
    return dist.MultivariateNormal(mu, cov).log_prob(y).sum()


def factor_log_likelihood(params, y):
    return float(_factor_exact(params, y))


def factor_mle(y):
    """The exact MLE's log-likelihood, by L-BFGS on the exact marginal."""

    def negative(p):
        params = {"W": p["W"], "mu": p["mu"], "sigma": jnp.exp(p["log_sigma"])}
        return -_factor_exact(params, y)

    p = {
        "W": 0.5 * jnp.eye(FACTOR_D, FACTOR_K) + 0.1,
        "mu": jnp.zeros(FACTOR_D),
        "log_sigma": jnp.zeros(FACTOR_D),
    }
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(negative)

    @jax.jit
    def step(p, state):
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(
            grad, state, p, value=value, grad=grad, value_fn=negative
        )
        return optax.apply_updates(p, updates), state

    state = opt.init(p)
    for _ in range(300):
        p, state = step(p, state)
    return -float(negative(p))


def bench_factor(num_seeds=2, num_steps=2000):
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    rng = np.random.default_rng(0)
    w = rng.normal(size=(FACTOR_D, FACTOR_K))
    mu = rng.normal(size=FACTOR_D)
    sigma = np.exp(rng.normal(-0.5, 0.3, size=FACTOR_D))
    z = rng.normal(size=(FACTOR_N, FACTOR_K))
    y = jnp.asarray(
        z @ w.T + mu + sigma * rng.normal(size=(FACTOR_N, FACTOR_D)), jnp.float32
    )
    mle = factor_mle(y)
    print(
        f"\n### Factor model ({FACTOR_N} x {FACTOR_D}, {FACTOR_K} factors): exact "
        f"log-likelihood at the estimate; exact MLE {mle:.2f}\n"
    )
    print(
        "| method | steps | log-likelihood | below the MLE | wall (s, with compile) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")

    def row(name, steps, fit):
        for seed in range(num_seeds):
            start = time.perf_counter()
            caught = []
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    params = fit(jax.random.key(seed))
                elapsed = time.perf_counter() - start
                note = "; warned: " + str(caught[0].message)[:40] if caught else ""
                try:
                    ll = factor_log_likelihood(params, y)
                    cells = f"{ll:.2f} | {mle - ll:.2f}{note}"
                except ValueError:  # e.g. sigma overflowed
                    cells = f"no valid estimate | -{note}"
            except FloatingPointError as err:
                elapsed = time.perf_counter() - start
                cells = f"stopped | {str(err)[:60]}"
            print(f"| {name} (seed {seed}) | {steps} | {cells} | {elapsed:.1f} |")

    def svi_fit(key):
        svi = SVI(
            factor_model, AutoNormal(factor_model), optax.adam(0.01), Trace_ELBO()
        )
        result = svi.run(key, 5000, y, progress_bar=False)
        return {k: result.params[k] for k in ("W", "mu", "sigma")}

    row("NumPyro SVI, Adam 1e-2, AutoNormal", 5000, svi_fit)
    for name, make in (
        ("ne.PGD(model), defaults", lambda: ne.PGD(factor_model)),
        ("ne.SOUL(model), defaults", lambda: ne.SOUL(factor_model)),
        ("ne.MCEM(model), defaults", lambda: ne.MCEM(factor_model)),
        ("PGD, h = 0.003", lambda: ne.PGD(factor_model, step_size=0.003)),
        ("PGD, h = 0.001", lambda: ne.PGD(factor_model, step_size=0.001)),
        ("PGD, h = 0.01", lambda: ne.PGD(factor_model, step_size=0.01)),
        (
            "PGD, PQN, h = 0.03",
            lambda: ne.PGD(factor_model, step_size=0.03, preconditioner="pqn"),
        ),
    ):
        row(
            name,
            num_steps,
            lambda key, make=make: (
                make().run(key, num_steps, y, progress_bar=False).params
            ),
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
        bench_run_timing(args.data)
    else:
        print(
            f"\n(breast-cancer data not found at {args.data}: logistic regression skipped)"
        )
    bench_factor()


if __name__ == "__main__":
    main()
