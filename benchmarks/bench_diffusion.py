"""Diffusion models and score priors: accuracy and cost, side by side.

1. Likelihood. A time-conditional score network (``ne.nn.DiffusionScoreMLP``,
   VP SDE, continuous denoising score matching) on 2-D toy laws with exact
   densities: the probability-flow ODE's held-out log-likelihood
   (``ode_log_likelihood``, exact trace) beside the true density's.
2. Mode weights. The two-mode mixture 0.8 N((5,5), I) + 0.2 N((-5,-5), I)
   (Song & Ermon's toy): predictor-corrector samples of the trained model,
   plain Langevin on its score at the smallest time, and, with the exact
   scores, NCSN's published settings (annealed Langevin, sigma 20 -> 1 over
   10 levels, 100 steps each, eps = 0.1) beside plain Langevin with eps = 0.1.
3. A score prior in a model. ``ne.ScorePosterior`` (its exact default and the
   annealed pass) with the trained model of the eight Gaussians as the prior
   (``ScoreDistribution.from_sde``), a noisy observation of the first
   coordinate, against the posterior by quadrature from the law's exact
   density. The annealed pass's step error on a linear Gaussian model. A
   two-mode prior whose modes the observation re-weights: both methods
   against the closed form; the default's error against particles and
   levels, with its evidence; cost per effective draw beside NUTS on the
   prior's exact density; and, by the smallest noise level of a learned
   prior, the distance of its posterior to the model's own and the data's.
4. Digits. The VP model on scikit-learn's digits (the split of the VAE and
   latent-EBM benchmarks: 1000 training images, images 1350-1796 held out),
   uniformly dequantised, its likelihood in bits/dim and as a bound on the
   discrete nats per image beside those benchmarks' importance-sampled NLLs.
5. Cost. ``pc_sample`` on 10,000 2-D points (1000 steps, one corrector step)
   against a hand-written jitted loop doing the same work; the
   probability-flow likelihood against a hand-written fixed-step RK4 solve
   with the same number of function evaluations.

    python benchmarks/bench_diffusion.py [--quick]
"""

import argparse
import math
import platform
import sys
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx
from numpyro.infer import MCMC

import numpyro_ebm as ne
from numpyro_ebm.core.ode import bits_per_dim, ode_log_likelihood
from numpyro_ebm.core.sde import pc_sample, vp_sde
from numpyro_ebm.datasets import eight_gaussians, gaussian_mixture

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import timed  # noqa: E402

SDE = vp_sde()
NCSN_MEANS = jnp.array([[5.0, 5.0], [-5.0, -5.0]])
NCSN_WEIGHTS = jnp.array([0.8, 0.2])


def ncsn_toy():
    return gaussian_mixture(NCSN_MEANS, jnp.ones(2), NCSN_WEIGHTS)


def fit(data, num_steps, *, hidden, learning_rate, batch_size, seed=0):
    """A DiffusionScoreMLP trained on ``data`` by continuous DSM; returns the
    network and the training seconds."""
    net = ne.nn.DiffusionScoreMLP(data.shape[-1], SDE, hidden, rngs=nnx.Rngs(seed))
    learner = ne.ScoreMatching(
        net,
        optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, 0.01)),
        ne.DiffusionScoreMatching(SDE),
    )
    result, seconds, _ = timed(
        lambda: jax.block_until_ready(
            learner.run(
                jax.random.key(seed + 1),
                num_steps,
                data,
                batch_size=batch_size,
                progress_bar=False,
            )
        )
    )
    return result.module, seconds


def train(law, num_steps, seed=0, hidden=(128, 128, 128)):
    """The model of standardised draws of ``law``: the network, the scale and
    the training seconds."""
    data = law.sample(jax.random.key(seed), 20_000)
    scale = float(jnp.std(data))
    net, seconds = fit(
        data / scale,
        num_steps,
        hidden=hidden,
        learning_rate=2e-3,
        batch_size=512,
        seed=seed,
    )
    return net, scale, seconds


def in_units(net, scale):
    """The score of the law in the data's units: s(x, t) = s_std(x / s) / s."""
    return lambda x, t: net(x / scale, t) / scale


# ------------------------------------------------------------- 1. likelihood
def bench_likelihood(models, num_test):
    print("\n## 1. Held-out log-likelihood of the probability-flow model (nats)\n")
    print("| law | training steps | train (s) | model | truth | model - truth |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (law, net, scale, steps, seconds) in models.items():
        test = law.sample(jax.random.key(99), num_test)
        # the model of the standardised data, back in the data's units
        ll = ode_log_likelihood(net, SDE, test / scale) - 2 * math.log(scale)
        truth = law.log_prob(test)
        gap = np.asarray(ll - truth)
        se = gap.std() / math.sqrt(gap.size)
        print(
            f"| {name} | {steps} | {seconds:.0f} | {float(ll.mean()):.3f} | "
            f"{float(truth.mean()):.3f} | {gap.mean():+.3f} ± {se:.3f} |"
        )


# ------------------------------------------------------------ 2. mode weights
def _weight(x):
    """Share of the draws nearer the heavy mode (5, 5)."""
    return float(jnp.mean(x.sum(-1) > 0))


def _plain_langevin(score, x, step, num_steps, key):
    def body(x, key):
        new, _ = ne.core.langevin_proposal(key, x, -score(x), step)
        return new, None

    x, _ = jax.lax.scan(body, x, jax.random.split(key, num_steps))
    return x


def bench_mode_weights(net, scale, n):
    print("\n## 2. Mode weights on 0.8 N((5,5), I) + 0.2 N((-5,-5), I) (truth 0.8)\n")
    print("| sampler | score | settings | weight of (5,5) | error |")
    print("| --- | --- | --- | ---: | ---: |")
    law = ncsn_toy()
    score = in_units(net, scale)
    rows = []
    x1 = SDE.sample_prior(jax.random.key(0), (n, 2))
    pc = jax.jit(lambda key, x: pc_sample(key, net, SDE, x, 1000))
    rows.append(
        (
            "predictor-corrector",
            "learned",
            "1000 steps, snr 0.16",
            pc(jax.random.key(1), x1) * scale,
        )
    )
    ode = jax.jit(lambda x: ne.core.ode.ode_sample(net, SDE, x))
    rows.append(("probability-flow ODE", "learned", "Tsit5, tol 1e-5", ode(x1) * scale))
    start = jax.random.uniform(jax.random.key(2), (n, 2), minval=-8.0, maxval=8.0)
    t_small = jnp.full((n,), 1e-3)
    rows.append(
        (
            "plain Langevin",
            "learned, t = 0.001",
            "eps 0.1, 1000 steps, uniform start",
            _plain_langevin(
                lambda x: score(x, t_small), start, 0.1, 1000, jax.random.key(3)
            ),
        )
    )
    exact = jax.grad(lambda x: jnp.sum(law.log_prob(x)))
    rows.append(
        (
            "plain Langevin",
            "exact",
            "eps 0.1, 1000 steps, uniform start",
            _plain_langevin(exact, start, 0.1, 1000, jax.random.key(4)),
        )
    )

    def noised(x, sigma):
        """The exact score of the mixture convolved with N(0, sigma^2 I)."""
        var = 1.0 + sigma**2

        def log_p(x):
            sq = jnp.sum((x[:, None, :] - NCSN_MEANS) ** 2, -1)
            return jnp.sum(
                jax.nn.logsumexp(jnp.log(NCSN_WEIGHTS) - 0.5 * sq / var, axis=-1)
            )

        return jax.grad(log_p)(x)

    sigmas = jnp.geomspace(20.0, 1.0, 10)
    rows.append(
        (
            "annealed Langevin (NCSN)",
            "exact",
            "sigma 20 -> 1, 10 x 100 steps, eps 0.1",
            ne.noise_annealed_langevin(
                jax.random.key(5), noised, start, sigmas, 0.1, 100
            ),
        )
    )
    for sampler, which, settings, x in rows:
        w = _weight(x)
        print(f"| {sampler} | {which} | {settings} | {w:.3f} | {w - 0.8:+.3f} |")


# ------------------------------------------------------------ 3. score priors
OBS_SD = 0.5


def _quadrature_posterior(law, y, n=801):
    """Posterior mean and sd of each coordinate, P(x_1 > 0), by quadrature."""
    (a, b), (c, d) = law.bounds
    gx, gy = jnp.linspace(a, b, n), jnp.linspace(c, d, n)
    grid = jnp.stack(jnp.meshgrid(gx, gy, indexing="ij"), -1).reshape(-1, 2)
    logw = law.log_prob(grid) + dist.Normal(grid[:, 0], OBS_SD).log_prob(y)
    w = jax.nn.softmax(logw)
    mean = w @ grid
    sd = jnp.sqrt(w @ (grid - mean) ** 2)
    return mean, sd, float(w @ (grid[:, 1] > 0))


def bench_score_prior(net, scale, num_samples):
    print("\n## 3. A learned score prior under a likelihood (eight Gaussians)\n")
    print(
        "Observation y = x_0 + N(0, 0.5^2); the posterior by quadrature on an "
        "801 x 801 grid of the exact density. `ne.ScorePosterior`, 4 chains x "
        f"{num_samples} draws: its default (conditional SMC, 16 particles, 100 "
        "levels, 20 warm-up iterations) and the annealed pass (20 levels x 20 "
        "steps, 200 final steps).\n"
    )
    print("| y | quantity | quadrature | smc (default) | z | annealed | z |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    law = eight_gaussians()
    prior = ne.ScoreDistribution.from_sde(
        net, SDE, (2,), num_levels=20, eps=1e-2, scale=scale
    )

    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0], OBS_SD), obs=y)

    kernels = {
        "smc": (ne.ScorePosterior(model), 20),
        "annealed": (
            ne.ScorePosterior(
                model,
                method="annealed",
                num_steps_per_level=20,
                num_final_steps=200,
                final_step_size=2e-3,
            ),
            0,
        ),
    }
    for y in (2.0, 0.0):
        mean, sd, upper = _quadrature_posterior(law, y)
        rows = {}
        for name, (kernel, warmup) in kernels.items():
            mcmc = MCMC(
                kernel,
                num_warmup=warmup,
                num_samples=num_samples,
                num_chains=4,
                chain_method="vectorized",
                progress_bar=False,
            )
            (_, seconds, compile_s) = timed(
                lambda y=y, mcmc=mcmc: mcmc.run(jax.random.key(7), y)
            )
            x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
            ess = np.asarray(numpyro.diagnostics.effective_sample_size(x))
            rows[name] = (x.reshape(-1, 2), ess, seconds, compile_s)

        for k, label in enumerate(("mean x_0", "mean x_1")):
            cells = []
            for flat, ess, _, _ in rows.values():
                est = flat[:, k].mean()
                z = (est - float(mean[k])) / (float(sd[k]) / math.sqrt(ess[k]))
                cells.append(f"{est:.3f} | {z:+.1f}")
            print(f"| {y} | {label} | {float(mean[k]):.3f} | {' | '.join(cells)} |")
        for k, label in enumerate(("sd x_0", "sd x_1")):
            cells = [f"{flat[:, k].std():.3f} | " for flat, *_ in rows.values()]
            print(f"| {y} | {label} | {float(sd[k]):.3f} | {' | '.join(cells)} |")
        cells = []
        for flat, ess, _, _ in rows.values():
            p = float(np.mean(flat[:, 1] > 0))
            se = math.sqrt(upper * (1 - upper) / ess[1])
            cells.append(f"{p:.3f} | {(p - upper) / se:+.1f}")
        print(f"| {y} | P(x_1 > 0) | {upper:.3f} | {' | '.join(cells)} |")
        cells = [
            f"{ess[0]:.0f}, {ess[1]:.0f}; {seconds:.1f} ({compile_s:.1f}) | "
            for _, ess, seconds, compile_s in rows.values()
        ]
        print(f"| {y} | ESS (x_0, x_1); seconds (compile) | | {' | '.join(cells)} |")


TWO_MODES = (jnp.array([[-1.5, -1.5], [1.5, 1.5]]), jnp.array([0.7, 0.3]), 0.25)


def _two_mode_score(x, sigma):
    means, weights, var = TWO_MODES
    v = var + sigma**2
    logp = jnp.log(weights) - 0.5 * jnp.sum((x[:, None, :] - means) ** 2, -1) / v
    r = jax.nn.softmax(logp, -1)
    return jnp.einsum("nk,nkd->nd", r, (means - x[:, None, :]) / v)


def _two_mode_law(sigma=0.0):
    means, weights, var = TWO_MODES
    return dist.MixtureSameFamily(
        dist.Categorical(weights),
        dist.Normal(means, jnp.sqrt(var + sigma**2)).to_event(1),
    )


def _two_mode_exact(y):
    """The upper mode's posterior weight and log p(y), in closed form."""
    means, weights, var = TWO_MODES
    lw = jnp.log(weights) + dist.Normal(
        means[:, 0], jnp.sqrt(var + OBS_SD**2)
    ).log_prob(y)
    return float(jax.nn.softmax(lw)[1]), float(jax.nn.logsumexp(lw))


def _two_mode_model(sigmas, init_dist=None):
    prior = ne.ScoreDistribution(
        _two_mode_score,
        (2,),
        sigmas,
        step_size=0.2 * float(sigmas[-1]) ** 2,
        init_dist=init_dist,
    )

    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0], OBS_SD), obs=y)

    return model


def _upper_weight(mcmc):
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    up = (x[..., 1] > 0).astype(float)
    ess = float(numpyro.diagnostics.effective_sample_size(up))
    ess_x0 = float(numpyro.diagnostics.effective_sample_size(x[..., 0]))
    return float(up.mean()), ess, ess_x0


def bench_reweighting(num_samples):
    """Where the annealing is wrong: an observation that re-weights modes."""
    print("\n## 3c. Mode weights when the observation re-weights the modes\n")
    sigmas = jnp.geomspace(6.0, 0.02, 10)
    model = _two_mode_model(sigmas)
    print(
        "Prior 0.7 N((-1.5,-1.5), 0.25 I) + 0.3 N((1.5,1.5), 0.25 I) by its exact "
        "noised score, levels 6 -> 0.02; y = x_0 + N(0, 0.5^2); 4 chains x "
        f"{num_samples} draws. The weight of the upper mode, P(x_1 > 0), in closed "
        "form and by `ne.ScorePosterior`: its default (conditional SMC, 16 "
        "particles, 100 levels; 20 warm-up iterations) and the annealed pass "
        "(10 levels x steps, final steps).\n"
    )
    print(
        "| y | exact | smc (default) | se | annealed 10 x 20, 100 | annealed 10 x 100, 2000 |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    smc = MCMC(
        ne.ScorePosterior(model),
        num_warmup=20,
        num_samples=num_samples,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
        jit_model_args=True,
    )
    annealed = {
        (steps, final): MCMC(
            ne.ScorePosterior(
                model,
                method="annealed",
                num_steps_per_level=steps,
                num_final_steps=final,
                final_step_size=2e-3,
            ),
            num_warmup=0,
            num_samples=num_samples,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
            jit_model_args=True,
        )
        for steps, final in ((20, 100), (100, 2000))
    }
    for y in (0.0, 0.5, 1.0):
        truth, _ = _two_mode_exact(y)
        smc.run(jax.random.key(5), y)
        p, ess, _ = _upper_weight(smc)
        se = math.sqrt(truth * (1 - truth) / ess)
        cells = []
        for mcmc in annealed.values():
            mcmc.run(jax.random.key(5), y)
            cells.append(f"{_upper_weight(mcmc)[0]:.3f}")
        print(f"| {y} | {truth:.3f} | {p:.3f} | {se:.3f} | {' | '.join(cells)} |")


def bench_smc_error(num_samples):
    """The exact default's remaining error, by particles and levels."""
    print("\n## 3d. ScorePosterior's error against particles and levels\n")
    sigmas = jnp.geomspace(6.0, 0.02, 10)
    model = _two_mode_model(sigmas, init_dist=_two_mode_law(float(sigmas[0])))
    y = 0.5
    truth, log_z = _two_mode_exact(y)
    print(
        "The prior of 3c with its exact law at the first level as the start, so "
        "that the levels are the only bias of the prior's law; y = 0.5 (upper "
        f"mode {truth:.4f}, log p(y) {log_z:.4f}). 4 chains x {num_samples} draws "
        "after 20 warm-up iterations; the evidence from 8 plain SMC runs of 2048 "
        "particles. The weight's error in standard errors (z), the mode "
        "indicator's ESS, and the sampling seconds (compile apart).\n"
    )
    print(
        "| levels | particles | weight | z | ESS | log p(y) | z | seconds (compile) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for levels in (10, 30, 100):
        for particles in (4, 16):
            kernel = ne.ScorePosterior(
                model, num_particles=particles, num_levels=levels
            )
            mcmc = MCMC(
                kernel,
                num_warmup=20,
                num_samples=num_samples,
                num_chains=4,
                chain_method="vectorized",
                progress_bar=False,
            )
            (_, seconds, compile_s) = timed(
                lambda mcmc=mcmc: mcmc.run(jax.random.key(9), y)
            )
            p, ess, _ = _upper_weight(mcmc)
            z = (p - truth) / math.sqrt(truth * (1 - truth) / ess)
            evidence = " | "
            if particles == 4:  # the evidence's particles are its own
                ev = kernel.log_evidence(jax.random.key(10), y, num_particles=2048)
                zz = (ev.log_evidence - log_z) / ev.stderr
                evidence = f"{ev.log_evidence:.4f} ± {ev.stderr:.4f} | {zz:+.1f}"
            print(
                f"| {levels} | {particles} | {p:.4f} | {z:+.1f} | {ess:.0f} | "
                f"{evidence} | {seconds - compile_s:.1f} ({compile_s:.1f}) |"
            )


def bench_cost_per_draw(num_samples):
    """Cost per effective draw: the exact default, the annealed pass, NUTS."""
    print("\n## 3e. Cost per effective draw on the two-mode posterior\n")
    sigmas = jnp.geomspace(6.0, 0.02, 10)
    y = 0.5
    truth, _ = _two_mode_exact(y)

    def nuts_model(y):
        x = numpyro.sample("x", _two_mode_law())
        numpyro.sample("y", dist.Normal(x[0], OBS_SD), obs=y)

    model = _two_mode_model(sigmas)
    runs = (
        ("ScorePosterior, smc (default)", ne.ScorePosterior(model), 20),
        (
            "ScorePosterior, annealed 10 x 20, 100",
            ne.ScorePosterior(
                model,
                method="annealed",
                num_steps_per_level=20,
                num_final_steps=100,
                final_step_size=2e-3,
            ),
            0,
        ),
        ("NUTS, the mixture's exact density", numpyro.infer.NUTS(nuts_model), 500),
    )
    print(
        f"3c's model at y = {y} (upper mode {truth:.3f}); 4 vectorized chains x "
        f"{num_samples} draws after the warm-up shown. NUTS runs on the prior's "
        "exact mixture density, which a score prior does not have. Seconds: "
        "warm-up and sampling, compile apart; per effective draw of x_0, "
        "compile included.\n"
    )
    print(
        "| sampler | warm-up | P(x_1 > 0) | error | ESS (mode) | ESS (x_0) | "
        "seconds (compile) | ms per effective x_0 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, kernel, warmup in runs:
        mcmc = MCMC(
            kernel,
            num_warmup=warmup,
            num_samples=num_samples,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
        )
        (_, seconds, compile_s) = timed(
            lambda mcmc=mcmc: mcmc.run(jax.random.key(3), y)
        )
        p, ess, ess_x0 = _upper_weight(mcmc)
        print(
            f"| {name} | {warmup} | {p:.3f} | {p - truth:+.3f} | {ess:.0f} | "
            f"{ess_x0:.0f} | {seconds - compile_s:.1f} ({compile_s:.1f}) | "
            f"{1000 * seconds / ess_x0:.1f} |"
        )


def _mode_weights(points, centres, weights=None):
    """The weight of each mode: the points (or grid cells, with ``weights``)
    nearest each centre."""
    nearest = np.argmin(
        np.sum((np.asarray(points)[:, None, :] - np.asarray(centres)) ** 2, -1), -1
    )
    w = np.ones(nearest.shape[0]) if weights is None else np.asarray(weights)
    return np.bincount(nearest, weights=w, minlength=len(centres)) / w.sum()


def bench_learned_prior(net, scale, num_samples):
    """How far the exact default's posterior under a learned prior is from
    the model's own posterior and from the data law's, by the smallest
    noise level ``eps`` of ``from_sde``."""
    print("\n## 3f. A learned prior: distance to its own posterior and the data's\n")
    law = eight_gaussians()
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2 * np.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], -1)
    y = 2.0
    g = jnp.linspace(-5.0, 5.0, 160)
    grid = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_lik = dist.Normal(grid[:, 0], OBS_SD).log_prob(y)
    data_w = np.asarray(jax.nn.softmax(law.log_prob(grid) + log_lik))
    data_modes = _mode_weights(grid, centres, data_w)
    data_up = float(data_w @ np.asarray(grid[:, 1] > 0))
    print(
        "The eight-Gaussians model of section 1 as the prior "
        "(`ScoreDistribution.from_sde(net, sde, (2,), eps=eps, scale=...)`), y = "
        f"x_0 + N(0, 0.5^2) = {y}; `ne.ScorePosterior` with its defaults, 4 chains "
        f"x {num_samples} draws after 20 warm-up iterations. Against two "
        "posteriors on a 160 x 160 grid: the data law's (its exact density) and "
        "the model's own (the probability-flow density at time eps, exact "
        "trace). Distance: total variation between the weights of the eight "
        "modes (each point to its nearest centre), beside its Monte Carlo floor "
        "(the mean distance of as many independent draws as the draws' ESS of "
        f"x_1 from the data's posterior); the data law's P(x_1 > 0) is {data_up:.3f}.\n"
    )
    print(
        "| eps | sigma_L (data units) | TV to the data's posterior | TV to the "
        "model's own | floor | model's own to the data's | P(x_1 > 0) | sd x_0 "
        "(data's 0.366) | seconds |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    for eps in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
        prior = ne.ScoreDistribution.from_sde(net, SDE, (2,), eps=eps, scale=scale)

        def model(y, prior=prior):
            x = numpyro.sample("x", prior)
            numpyro.sample("y", dist.Normal(x[0], OBS_SD), obs=y)

        mcmc = MCMC(
            ne.ScorePosterior(model),
            num_warmup=20,
            num_samples=num_samples,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
        )
        (_, seconds, _) = timed(lambda mcmc=mcmc: mcmc.run(jax.random.key(4), y))
        x = np.asarray(mcmc.get_samples()["x"])
        own = ode_log_likelihood(net, SDE, grid / scale, eps=eps) - 2 * math.log(scale)
        own_w = np.asarray(jax.nn.softmax(own + log_lik))
        own_modes = _mode_weights(grid, centres, own_w)
        draws = _mode_weights(x, centres)
        tv = lambda a, b: 0.5 * float(np.abs(a - b).sum())  # noqa: E731
        ess = float(
            numpyro.diagnostics.effective_sample_size(
                np.asarray(mcmc.get_samples(group_by_chain=True)["x"])[..., 1]
            )
        )
        floor = np.mean(
            [
                tv(rng.multinomial(int(ess), data_modes) / int(ess), data_modes)
                for _ in range(200)
            ]
        )
        print(
            f"| {eps:g} | {float(prior.sigmas[-1]):.3f} | {tv(draws, data_modes):.3f} | "
            f"{tv(draws, own_modes):.3f} | {floor:.3f} | {tv(own_modes, data_modes):.3f} | "
            f"{float(np.mean(x[:, 1] > 0)):.3f} | {x[:, 0].std():.3f} | "
            f"{seconds:.1f} |"
        )


def bench_new_user(num_samples):
    """The docs' training recipe and every default, as a new user runs them."""
    print("\n## 3g. The docs' recipe with every default\n")
    law = eight_gaussians()
    data = law.sample(jax.random.key(0), 20_000)
    net = ne.nn.DiffusionScoreMLP(2, SDE, (128, 128, 128), rngs=nnx.Rngs(0))
    learner = ne.ScoreMatching(net, optax.adam(2e-3), ne.DiffusionScoreMatching(SDE))
    result = learner.run(
        jax.random.key(0), 4000, data, batch_size=512, progress_bar=False
    )
    prior = ne.ScoreDistribution.from_sde(result.module, SDE, (2,))

    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0], OBS_SD), obs=y)

    y = 2.0
    _, _, upper = _quadrature_posterior(law, y)
    print(
        "`DiffusionScoreMLP` trained as the docs' code block does (VP SDE, Adam "
        "2e-3, batches of 512) for 4000 steps on 20,000 unscaled draws of the "
        "eight Gaussians; `ScoreDistribution.from_sde(net, sde, (2,))` and "
        f"`ScorePosterior(model)` with their defaults; y = x_0 + N(0, 0.5^2) = {y}; "
        f"4 chains x {num_samples} draws. P(x_1 > 0) by quadrature: {upper:.3f}.\n"
    )
    print("| method | P(x_1 > 0) | se | ESS (x_1) | seconds (compile) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, kernel, warmup in (
        ("smc (default)", ne.ScorePosterior(model), 20),
        ("annealed", ne.ScorePosterior(model, method="annealed"), 0),
    ):
        mcmc = MCMC(
            kernel,
            num_warmup=warmup,
            num_samples=num_samples,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
        )
        (_, seconds, compile_s) = timed(
            lambda mcmc=mcmc: mcmc.run(jax.random.key(1), y)
        )
        x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
        ess = float(numpyro.diagnostics.effective_sample_size(x[..., 1]))
        p = float(np.mean(x[..., 1] > 0))
        se = math.sqrt(p * (1 - p) / ess)
        print(
            f"| {name} | {p:.3f} | {se:.3f} | {ess:.0f} | "
            f"{seconds - compile_s:.1f} ({compile_s:.1f}) |"
        )


def bench_line_integrals(net, scale):
    """The other route to exactness, Metropolis corrections from line
    integrals of the score, needs a conservative field; a learned one is
    not."""
    print("\n## 3h. Line integrals of a learned score depend on the path\n")
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2 * np.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], -1)
    a, b = jnp.asarray(centres[0]), jnp.asarray(centres[1])
    learned = SDE.noise_conditional(net, scale)
    means = jnp.asarray(centres)
    var0 = (0.5 / math.sqrt(2)) ** 2

    def exact_log_p(x, sigma):
        v = var0 + sigma**2
        sq = jnp.sum((x[:, None, :] - means) ** 2, -1)
        return jax.nn.logsumexp(-0.5 * sq / v, -1) - jnp.log(8 * 2 * jnp.pi * v)

    def exact_score(x, sigma):
        return jax.grad(lambda x: jnp.sum(exact_log_p(x, sigma)))(x)

    def along(points, score, sigma):
        """The trapezoid rule for the line integral of the score."""
        s = score(points, sigma)
        steps = jnp.diff(points, axis=0)
        return float(jnp.sum(0.5 * (s[1:] + s[:-1]) * steps))

    def path(*corners, n=4000):
        legs = [
            np.linspace(p, q, n, endpoint=False)
            for p, q in zip(corners[:-1], corners[1:], strict=True)
        ]
        return jnp.asarray(np.concatenate([*legs, np.asarray(corners[-1])[None]]))

    mid = 0.5 * (a + b)
    paths = {
        "straight": path(a, b),
        "through the origin": path(a, jnp.zeros(2), b),
        "outwards": path(a, 1.8 * mid, b),
    }
    print(
        "The eight-Gaussians model of section 1 as a noise-conditional score, "
        "from one mode's centre a to the next one's b. The line integral of the "
        "score along three paths against log p_sigma(b) - log p_sigma(a) of the "
        "law's exact density smoothed by sigma; the trapezoid rule on 4000 points "
        "a leg (the exact score's integrals agree with the truth to the "
        "quadrature's error).\n"
    )
    print(
        "| sigma | score | straight | through the origin | outwards | truth | spread |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for sigma in (0.05, 0.3, 1.0):
        truth = float(exact_log_p(b[None], sigma)[0] - exact_log_p(a[None], sigma)[0])
        for name, score in (("exact", exact_score), ("learned", learned)):
            values = [along(p, score, sigma) for p in paths.values()]
            print(
                f"| {sigma} | {name} | "
                + " | ".join(f"{v:+.3f}" for v in values)
                + f" | {truth:+.3f} | {max(values) - min(values):.3f} |"
            )


def bench_step_error(num_samples):
    """The linear Gaussian inpainting model: covariance error vs the step."""
    print(
        "\n## 3b. Discretisation error of the annealed pass on a linear Gaussian model\n"
    )
    m = jnp.array([1.0, -0.5])
    s = jnp.array([[1.0, 0.6], [0.6, 0.8]])
    tau, y = 0.3, 2.0
    sigmas = jnp.geomspace(5.0, 0.01, 10)

    def score(x, sigma):
        return -(x - m) @ jnp.linalg.inv(s + sigma**2 * jnp.eye(2))

    def model(y):
        x = numpyro.sample("x", ne.ScoreDistribution(score, (2,), sigmas))
        numpyro.sample("y", dist.Normal(x[0], tau), obs=y)

    a = jnp.array([1.0, 0.0])
    cov = jnp.linalg.inv(jnp.linalg.inv(s) + jnp.outer(a, a) / tau**2)
    lam, u = jnp.linalg.eigh(cov)
    print(
        "Prior N(m, S) by its exact noised score, y = x_0 + N(0, 0.3^2); 10 levels "
        "x 20 steps then 300 stationary steps of step h; 4 chains x "
        f"{num_samples} draws. The draws' variance along the posterior's "
        f"narrowest direction (variance {float(lam[0]):.4f}) and widest "
        f"({float(lam[1]):.4f}), relative to the posterior's; predicted: the "
        "unadjusted step's widening 1 / (1 - h / (2 lam)). Since sigma_L = 0.01, "
        "pi_L's own difference from the posterior is below 0.1%.\n"
    )
    print(
        "| final step h | narrow: predicted | narrow: measured | wide: predicted "
        "| wide: measured | se | mean error / sd |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    post_mean = cov @ (jnp.linalg.inv(s) @ m + a * y / tau**2)
    for h in (0.04, 0.02, 0.01, 0.005):
        kernel = ne.ScorePosterior(
            model,
            method="annealed",
            step_size=2e-5,
            num_steps_per_level=20,
            num_final_steps=300,
            final_step_size=h,
        )
        mcmc = MCMC(
            kernel,
            num_warmup=0,
            num_samples=num_samples,
            num_chains=4,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(jax.random.key(11), y)
        x = np.asarray(mcmc.get_samples()["x"], np.float64)
        proj = (x - x.mean(0)) @ np.asarray(u)
        ratio = proj.var(0) / np.asarray(lam)
        predicted = 1.0 / (1.0 - h / (2.0 * np.asarray(lam)))
        se = math.sqrt(2.0 / x.shape[0])
        shift = np.max(
            np.abs(x.mean(0) - np.asarray(post_mean)) / np.sqrt(np.diag(cov))
        )
        print(
            f"| {h} | {predicted[0]:.3f} | {ratio[0]:.3f} | {predicted[1]:.3f} | "
            f"{ratio[1]:.3f} | {se:.3f} | {shift:.3f} |"
        )


# ------------------------------------------------------------------ 4. digits
def bench_digits(num_steps, hutchinson):
    from sklearn.datasets import load_digits

    print("\n## 4. Digits: bits/dim of the VP model\n")
    images = load_digits().data.astype(np.float32)  # 0..16, 64 pixels
    train_x, test_x = images[:1000], images[1350:]
    levels = 17.0
    key = jax.random.key(0)
    # uniform dequantisation to [0, 1]: x = (k + u) / 17, then standardised
    deq = (train_x[None] + jax.random.uniform(key, (20,) + train_x.shape)) / levels
    deq = deq.reshape(-1, 64)
    mean, sd = deq.mean(0), deq.std(0) + 1e-3
    net, seconds = fit(
        (deq - mean) / sd,
        num_steps,
        hidden=(256, 256, 256),
        learning_rate=1e-3,
        batch_size=256,
    )
    u = jax.random.uniform(jax.random.key(2), test_x.shape)
    x = ((test_x + u) / levels - mean) / sd
    kwargs = (
        {"trace_estimator": "hutchinson", "rng_key": jax.random.key(3)}
        if hutchinson
        else {}
    )
    (ll, ll_seconds, _) = timed(
        lambda: jax.block_until_ready(ode_log_likelihood(net, SDE, x, **kwargs))
    )
    # back to the dequantised [0, 1] density, then to a bound on the discrete
    # law: log P(k) >= E_u log p((k + u) / 17) - 64 log 17
    ll01 = ll - float(jnp.sum(jnp.log(sd)))
    nats = -(ll01 - 64 * math.log(levels))
    print(
        f"Training: {num_steps} steps of 256, {seconds:.0f} s; likelihood of the "
        f"{test_x.shape[0]} held-out images ({'Hutchinson, 1 probe' if hutchinson else 'exact trace'}), "
        f"{ll_seconds:.0f} s.\n"
    )
    print("| model | held-out NLL (nats/image) | bits/dim |")
    print("| --- | ---: | ---: |")
    se = float(jnp.std(nats)) / math.sqrt(nats.size)
    bpd = float(jnp.mean(bits_per_dim(-nats, 64)))
    print(
        f"| VP diffusion (dequantised bound) | {float(jnp.mean(nats)):.2f} ± {se:.2f} | {bpd:.3f} |"
    )
    for name, value in (
        ("VAE, Gaussian prior (seed 0, table above)", 101.99),
        ("VAE, latent EBM prior (seed 0)", 100.24),
        ("SOUL, latent EBM prior", 102.11),
    ):
        print(f"| {name} | {value:.2f} | {value / (64 * math.log(2)):.3f} |")


# -------------------------------------------------------------------- 5. cost
def hand_written_pc(params, key, x, num_steps, snr, eps):
    """Predictor-corrector for the VP SDE written directly in JAX."""
    lo, hi = 0.1, 20.0
    times = jnp.linspace(1.0, eps, num_steps + 1)
    dt = (1.0 - eps) / num_steps

    def score(x, t):
        return params(x, jnp.full(x.shape[:1], t))

    def body(carry, inputs):
        x, _ = carry
        t, key = inputs
        k1, k2 = jax.random.split(key)
        beta = lo + t * (hi - lo)
        drift = -0.5 * beta * x - beta * score(x, t)
        mean = x - drift * dt
        x = mean + jnp.sqrt(beta * dt) * jax.random.normal(k1, x.shape)
        s = score(x, t - dt)
        z = jax.random.normal(jax.random.fold_in(k2, 0), x.shape)
        zn = jnp.mean(jnp.linalg.norm(z, axis=-1))
        sn = jnp.mean(jnp.linalg.norm(s, axis=-1))
        a = 2.0 * (snr * zn / sn) ** 2
        x = x + a * s + jnp.sqrt(2.0 * a) * z
        return (x, mean), None

    keys = jax.random.split(key, num_steps)
    (_, mean), _ = jax.lax.scan(body, (x, x), (times[:-1], keys))
    return mean


def bench_cost(net, repeats=3):
    print("\n## 5. Cost\n")
    n = 10_000
    x1 = SDE.sample_prior(jax.random.key(0), (n, 2))
    lib = jax.jit(lambda key, x: pc_sample(key, net, SDE, x, 1000))
    hand = jax.jit(lambda key, x: hand_written_pc(net, key, x, 1000, 0.16, 1e-3))
    print(
        "| work | numpyro_ebm (s) | hand-written (s) | ratio | first call, compile (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")

    def best(f):
        out, first, comp = timed(lambda: jax.block_until_ready(f()))
        times = []
        for _ in range(repeats):
            _, s, _ = timed(lambda: jax.block_until_ready(f()))
            times.append(s)
        return out, min(times), first, comp

    a, ta, fa, ca = best(lambda: lib(jax.random.key(1), x1))
    b, tb, fb, cb = best(lambda: hand(jax.random.key(1), x1))
    print(
        f"| PC sampler, {n} points, 1000 steps + 1 corrector | {ta:.2f} | {tb:.2f} | "
        f"{ta / tb:.2f} | {fa:.1f} ({ca:.1f}), {fb:.1f} ({cb:.1f}) |"
    )
    agree = float(jnp.max(jnp.abs(a - b)))
    # the probability-flow likelihood: diffrax's adaptive Tsit5 vs RK4 with
    # the same number of function evaluations
    test = ncsn_toy().sample(jax.random.key(3), 2000) / 5.0
    import diffrax

    def nfe_of_lib():
        # diffrax's step count for this solve (Tsit5: 6 evaluations a step)
        drift = ne.core.ode.probability_flow_drift(net, SDE)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: drift(y, t)),
            diffrax.Tsit5(),
            1e-5,
            1.0,
            0.01,
            test,
            stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
        )
        return int(sol.stats["num_steps"])

    steps = nfe_of_lib()
    lib_ll = jax.jit(lambda x: ode_log_likelihood(net, SDE, x))
    rk4_steps = max(1, (6 * steps) // 4)

    def hand_ll(x):
        drift = ne.core.ode.probability_flow_drift(net, SDE)

        def field(y, t):
            y, _ = y
            f = lambda y: drift(y, t)
            out, t0 = jax.jvp(
                f, (y,), (jnp.broadcast_to(jnp.array([1.0, 0.0]), y.shape),)
            )
            _, t1 = jax.jvp(
                f, (y,), (jnp.broadcast_to(jnp.array([0.0, 1.0]), y.shape),)
            )
            return out, t0[:, 0] + t1[:, 1]

        h = (1.0 - 1e-5) / rk4_steps

        def step(state, t):
            k1 = field(state, t)
            add = lambda s, k, c: jax.tree.map(lambda a, b: a + c * b, s, k)
            k2 = field(add(state, k1, h / 2), t + h / 2)
            k3 = field(add(state, k2, h / 2), t + h / 2)
            k4 = field(add(state, k3, h), t + h)
            new = jax.tree.map(
                lambda s, a, b, c, d: s + h / 6 * (a + 2 * b + 2 * c + d),
                state,
                k1,
                k2,
                k3,
                k4,
            )
            return new, None

        ts = 1e-5 + h * jnp.arange(rk4_steps)
        (y1, delta), _ = jax.lax.scan(step, (x, jnp.zeros(x.shape[0])), ts)
        return SDE.prior_log_prob(y1) + delta

    hand_ll = jax.jit(hand_ll)
    c, tc, fc, cc = best(lambda: lib_ll(test))
    d, td, fd, cd = best(lambda: hand_ll(test))
    print(
        f"| probability-flow log-likelihood, 2000 points (Tsit5 {steps} steps; RK4 "
        f"{rk4_steps} steps, same evaluations) | {tc:.2f} | {td:.2f} | {tc / td:.2f} | "
        f"{fc:.1f} ({cc:.1f}), {fd:.1f} ({cd:.1f}) |"
    )
    reference = ode_log_likelihood(net, SDE, test, rtol=1e-7, atol=1e-7)
    print(
        f"\nThe two PC samplers draw the same numbers: largest difference "
        f"{agree:.2e}. Against a solve at tolerance 1e-7, the largest "
        f"likelihood error is {float(jnp.max(jnp.abs(c - reference))):.2e} nats "
        f"(diffrax, adaptive) and {float(jnp.max(jnp.abs(d - reference))):.2e} "
        "nats (RK4, fixed steps)."
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short runs (a smoke test)"
    )
    parser.add_argument("--sections", default="12345", help="which sections to run")
    args = parser.parse_args()
    quick = args.quick
    print(
        f"Machine: {platform.machine()}, {jax.device_count()} CPU device(s) "
        f"({platform.processor() or 'cpu'}); jax {jax.__version__}, numpyro "
        f"{numpyro.__version__}."
    )
    steps = 500 if quick else 10_000
    models = {}
    if set(args.sections) & set("1235"):
        for name, law in (
            ("eight Gaussians", eight_gaussians()),
            ("0.8 / 0.2 mixture", ncsn_toy()),
        ):
            net, scale, seconds = train(law, steps)
            models[name] = (law, net, scale, steps, seconds)
    if "1" in args.sections:
        bench_likelihood(models, 500 if quick else 2000)
    if "2" in args.sections:
        _, net, scale, _, _ = models["0.8 / 0.2 mixture"]
        bench_mode_weights(net, scale, 2000 if quick else 10_000)
    if "3" in args.sections:
        _, net, scale, _, _ = models["eight Gaussians"]
        bench_score_prior(net, scale, 100 if quick else 500)
        bench_step_error(100 if quick else 2500)
        bench_reweighting(50 if quick else 500)
        bench_smc_error(50 if quick else 1000)
        bench_cost_per_draw(100 if quick else 1000)
        bench_learned_prior(net, scale, 100 if quick else 1000)
        bench_new_user(100 if quick else 500)
        bench_line_integrals(net, scale)
    if "4" in args.sections:
        bench_digits(500 if quick else 20_000, hutchinson=quick)
    if "5" in args.sections:
        _, net, _, _, _ = models["0.8 / 0.2 mixture"]
        bench_cost(net)


if __name__ == "__main__":
    main()
