"""Held-out likelihoods on scikit-learn's digits: one table, one split, one
convention, for every model family.

The split: images 0-999 train, 1000-1349 validate (early stopping, smoothing,
the diffusion model's decoder time), 1350-1796 test (447 images). The
convention: the discrete negative log-likelihood of the 17 grey levels
(0..16) of the 64 pixels, in nats per image and bits per dimension (nats /
(64 ln 2)), with its standard error over the test images. Kinds: "exact";
"bound", an upper bound on it; "bound*", the log of an unbiased importance
sampling estimate of the likelihood, so an upper bound in expectation;
"estimate", where a normalising constant estimated by AIS enters as well:
its log is biased low, which makes the figure optimistic by about half the
relative variance of the AIS weights (small when their ESS is near the
number of particles, which the row reports); no figure where that ESS is
under a tenth.

Rows:

- independent categorical per pixel (add-alpha smoothing, alpha chosen on
  validation): exact;
- full-covariance Gaussian on uniformly dequantised pixels ``k + u``: a bound
  through ``log P(k) >= E_u log p(k + u)`` (32 draws of ``u``);
- mixture of 10 independent categoricals (EM): exact;
- linear autoregressive: each pixel's level by multinomial logistic
  regression on the earlier pixels' levels (raster order; scikit-learn,
  inverse regularisation chosen on validation): exact;
- latent-variable models of ``examples/digits_model.py`` (a Binomial(16)
  decoder per pixel, so exact on the levels up to the importance sampling):
  VAEs by NumPyro's SVI (``examples/vae_digits.py``) and the generator
  learned by SOUL (``examples/latent_ebm_prior.py``), each with a Gaussian
  and a latent EBM prior; the EBM prior's ``log Z`` by AIS
  (``ne.ais_log_normalizer``, with the importance-sampled one beside it):
  "bound*" and "estimate";
- a convolutional EBM on dequantised pixels, a tilt of the full-covariance
  Gaussian (``GaussianTilt``), trained by persistent contrastive divergence,
  its ``log Z`` by AIS from that Gaussian: a bound through the
  dequantisation, up to the AIS estimate ("estimate");
- diffusion models, VP SDE, trained with the likelihood-weighted loss
  (``DiffusionScoreMatching(weighting="likelihood")``), an exponential moving
  average of the weights, and scored by ``ne.diffusion_elbo`` with the
  categorical decoder over the 17 levels (a bound; its decoder time chosen on
  validation): an MLP (``DiffusionScoreMLP``) and the convolutional network
  (``DiffusionScoreConvNet``, no downsampling at 8x8).

    python benchmarks/bench_images.py [--quick] [--steps N]
"""

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import numpyro_ebm as ne
from numpyro_ebm.core.sde import vp_sde

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))  # the latent models' rows

K = 17  # grey levels
D = 64  # pixels
LN2 = math.log(2.0)


def digits_split():
    from sklearn.datasets import load_digits

    k = load_digits().data.astype(np.int64)  # (1797, 64), 0..16
    return k[:1000], k[1000:1350], k[1350:]


def row(name, nats, kind, seconds=None, note=""):
    """A table row from per-image NLLs (nats)."""
    nats = np.asarray(nats, np.float64)
    mean = nats.mean()
    se = nats.std(ddof=1) / math.sqrt(nats.size)
    secs = "" if seconds is None else f"{seconds:.0f}"
    print(
        f"| {name} | {mean:.2f} ± {se:.2f} | {mean / (D * LN2):.3f} ± "
        f"{se / (D * LN2):.3f} | {kind} | {secs} | {note} |",
        flush=True,
    )
    return mean


# ------------------------------------------------------------ baselines
def categorical(train, val, test):
    def nll(alpha, data):
        counts = np.stack([(train == v).sum(0) for v in range(K)], -1) + alpha
        logp = np.log(counts / counts.sum(-1, keepdims=True))  # (64, K)
        return -logp[np.arange(D), data].sum(1)

    alphas = (0.01, 0.03, 0.1, 0.3, 1.0)
    best = min(alphas, key=lambda a: nll(a, val).mean())
    return nll(best, test), f"alpha {best}"


def gaussian_dequantised(train, val, test, seed=0):
    rng = np.random.default_rng(seed)
    x = train + rng.uniform(size=(20,) + train.shape)
    x = x.reshape(-1, D)
    mean, cov = x.mean(0), np.cov(x.T)

    def nll(data):
        from scipy.stats import multivariate_normal

        u = rng.uniform(size=(32,) + data.shape)
        logp = multivariate_normal(mean, cov).logpdf(data + u)  # (32, n)
        return -logp.mean(0)  # E_u log p(k + u) <= log P(k)

    return nll(test), "bound"


def categorical_mixture(train, val, test, num_components=10, seed=0):
    rng = np.random.default_rng(seed)
    onehot = np.eye(K)[train]  # (n, 64, K)
    resp = rng.dirichlet(np.ones(num_components), size=train.shape[0])
    alpha = 0.1
    for _ in range(200):
        weights = resp.mean(0)
        probs = np.einsum("nc,ndk->cdk", resp, onehot) + alpha
        probs /= probs.sum(-1, keepdims=True)
        log_lik = np.einsum("ndk,cdk->nc", onehot, np.log(probs)) + np.log(weights)
        log_norm = np.logaddexp.reduce(log_lik, axis=1, keepdims=True)
        resp = np.exp(log_lik - log_norm)

    def nll(data):
        oh = np.eye(K)[data]
        ll = np.einsum("ndk,cdk->nc", oh, np.log(probs)) + np.log(weights)
        return -np.logaddexp.reduce(ll, axis=1)

    return nll(test), f"{num_components} components, EM"


def linear_autoregressive(train, val, test):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def fit_nll(c, data_eval):
        total = np.zeros(data_eval.shape[0])
        for j in range(D):
            y = train[:, j]
            levels = np.unique(y)
            if j == 0 or levels.size == 1:
                counts = np.array([(y == v).sum() for v in range(K)]) + 0.1
                logp = np.log(counts / counts.sum())
                total -= logp[data_eval[:, j]]
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression(C=c, max_iter=500).fit(
                    train[:, :j] / 16.0, y
                )
            logp = model.predict_log_proba(data_eval[:, :j] / 16.0)
            full = np.full((data_eval.shape[0], K), -np.inf)
            full[:, model.classes_] = logp
            # a level never seen in training for this pixel: smooth in
            full = np.logaddexp(full + math.log(1 - 1e-4), math.log(1e-4 / K))
            total -= full[np.arange(data_eval.shape[0]), data_eval[:, j]]
        return total

    cs = (0.1, 1.0, 10.0)
    best = min(cs, key=lambda c: fit_nll(c, val).mean())
    return fit_nll(best, test), f"C {best}"


# ------------------------------------------------------------ diffusion
SDE = vp_sde()


def train_diffusion(net, train, steps, *, batch_size, learning_rate, ema, seed):
    x = 2.0 * train.reshape(net_shape(net)) / (K - 1) - 1.0
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(
            optax.warmup_cosine_decay_schedule(
                0.0, learning_rate, min(200, steps // 10), steps, learning_rate * 1e-2
            ),
            weight_decay=1e-4,
        ),
    )
    learner = ne.ScoreMatching(
        net,
        optimizer,
        ne.DiffusionScoreMatching(SDE, eps=1e-5, weighting="likelihood"),
        ema_decay=ema,
    )
    start = time.perf_counter()
    result = learner.run(
        jax.random.key(seed), steps, jnp.asarray(x, jnp.float32), batch_size=batch_size
    )
    jax.block_until_ready(result.params)
    return result, time.perf_counter() - start


def net_shape(net):
    return (-1, 8, 8, 1) if hasattr(net, "image_shape") else (-1, D)


def score_diffusion(model, val, test, num_samples, seed=2):
    shape = net_shape(model)
    # the decoder's time, chosen on validation: sigma(eps) over the spacing
    spacing = 2.0 / (K - 1)
    choices = {}
    for frac in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0):
        eps = float(SDE.noise_time(jnp.asarray(frac * spacing)))
        r = ne.diffusion_elbo(
            jax.random.key(seed),
            model,
            SDE,
            val.reshape(shape),
            num_levels=K,
            eps=eps,
            num_samples=num_samples,
        )
        choices[eps] = (float(r.log_likelihood), frac)
    eps = max(choices, key=lambda e: choices[e][0])
    r = ne.diffusion_elbo(
        jax.random.key(seed + 1),
        model,
        SDE,
        test.reshape(shape),
        num_levels=K,
        eps=eps,
        num_samples=num_samples,
    )
    return -np.asarray(r.log_likelihoods), choices[eps][1], r


# ------------------------------------------------------------ latent models
def _example_args(extra):
    """The examples' command-line defaults, as a namespace."""
    from digits_model import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    args.no_progress_bar = True
    for name, value in extra.items():
        setattr(args, name, value)
    return args


def latent_log_z(model, params, args):
    """log Z of a trained latent EBM prior ``exp(-E(z)) N(z; 0, I)``: by AIS,
    and by importance sampling from its base (100,000 draws)."""
    from numpyro.handlers import seed, substitute, trace

    tr = trace(seed(substitute(model, data=params), jax.random.key(0))).get_trace(
        jnp.zeros((1, D)), contrastive=False
    )
    prior = tr["z"]["fn"].base_dist  # the EnergyDistribution, inside the plate
    base = prior.base_dist

    def energy(z):  # -log of the unnormalised density exp(-E(z)) N(z; 0, I)
        return prior.energy_fn(z) - base.log_prob(z)

    ais = ne.ais_log_normalizer(
        jax.random.key(11),
        energy,
        base,
        num_particles=args.ais_particles,
        num_levels=min(args.ais_levels, 200),
    )
    is_log_z, is_se = prior.log_normalizer(jax.random.key(12), 100_000)
    note = (
        f"log Z by AIS {float(ais.log_normalizer):.3f} ± {float(ais.stderr):.3f} "
        f"(importance sampling {float(is_log_z):.3f} ± {float(is_se):.3f})"
    )
    return ais.log_normalizer, note


def vae_rows(test, bench):
    """VAEs by SVI with the Gaussian and the latent EBM prior."""
    import vae_digits

    quick = bench.quick
    args = _example_args(
        dict(
            num_steps=500 if quick else 6000,
            eval_every=250 if quick else 500,
            num_is_samples=100 if quick else 1000,
        )
    )
    x = jnp.asarray(test, jnp.float32)
    counts = vae_digits.load_counts()
    for prior in ("gaussian", "ebm"):
        model, guide, params, _, _, seconds = vae_digits.train(
            args, prior, counts[:1000], counts[1000:1350]
        )
        log_z, note = (
            (None, "") if prior == "gaussian" else latent_log_z(model, params, bench)
        )
        nats = vae_digits.negative_log_likelihood(
            model, guide, params, x, args.num_is_samples, log_z
        )
        row(
            f"VAE (SVI), {'Gaussian' if prior == 'gaussian' else 'latent EBM'} prior",
            nats,
            "bound*" if prior == "gaussian" else "estimate",
            seconds,
            f"{args.num_steps} steps, early stopping; {args.num_is_samples} "
            f"importance samples" + (f"; {note}" if note else ""),
        )


def soul_rows(test, bench):
    """The same generator learned by SOUL (maximum marginal likelihood)."""
    import latent_ebm_prior

    quick = bench.quick
    args = _example_args(
        dict(
            num_steps=300 if quick else 3000,
            posterior_steps=20,
            posterior_step_size=0.005,
            adjusted=False,
            num_eval_particles=16,
            num_eval_steps=30 if quick else 300,
            num_is_samples=100 if quick else 1000,
        )
    )
    counts = latent_ebm_prior.load_counts()
    x = jnp.asarray(test, jnp.float32)
    for prior in ("gaussian", "ebm"):
        model = latent_ebm_prior.make_generator(args, prior)
        result, seconds = latent_ebm_prior.train(args, model, counts[:1000])
        params = result.state.params
        log_z, note = (
            (None, "") if prior == "gaussian" else latent_log_z(model, params, bench)
        )
        nats = latent_ebm_prior.test_nll(
            args, model, params, x, None if log_z is None else {"z": log_z}
        )
        row(
            f"generator by SOUL, {'Gaussian' if prior == 'gaussian' else 'latent EBM'} prior",
            nats,
            "bound*" if prior == "gaussian" else "estimate",
            seconds,
            f"{args.num_steps} iterations; {args.num_is_samples} importance "
            f"samples" + (f"; {note}" if note else ""),
        )


# ------------------------------------------------------------ EBM by AIS
class GaussianTilt(nnx.Module):
    """``E(z) = net(x(z)) + |z|^2 / 2`` in the whitened coordinates ``z`` of the
    full-covariance Gaussian fitted to the dequantised pixels: with the network
    at zero the model is that Gaussian, and the network tilts it. The network
    sees the image ``x(z)``, standardised per pixel."""

    def __init__(self, net, chol, sd):
        self.net = net
        self.chol = nnx.Variable(jnp.asarray(chol / sd[:, None], jnp.float32))

    def __call__(self, z):
        flat = z.reshape(z.shape[0], -1)
        x = (flat @ self.chol.value.T).reshape(z.shape)  # standardised pixels
        return self.net(x) + 0.5 * jnp.sum(flat**2, axis=-1)


def ebm_row(train, val, test, steps, args):
    import numpyro.distributions as dist

    rng = np.random.default_rng(0)
    deq = np.concatenate(
        [(train + rng.uniform(size=train.shape)) / K for _ in range(20)]
    )
    mean, sd = deq.mean(0), deq.std(0)
    chol = np.linalg.cholesky(np.cov(deq.T))

    def whiten(k, u):
        x = (k + u) / K - mean
        return np.linalg.solve(chol, x.T).T.reshape(-1, 8, 8, 1).astype(np.float32)

    net = GaussianTilt(
        ne.nn.EnergyConvNet((8, 8, 1), features=32, num_blocks=2, rngs=nnx.Rngs(0)),
        chol,
        sd,
    )
    learner = ne.EBM(
        net,
        optax.adam(optax.cosine_decay_schedule(1e-3, steps, 0.1), b1=0.5),
        ne.PCD(num_steps=20, step_size=0.01, buffer_size=1000),
        ema_decay=0.999,
    )
    # dequantised afresh for every epoch's worth of data: 20 copies
    y = np.concatenate(
        [whiten(train, rng.uniform(size=train.shape)) for _ in range(20)]
    )
    start = time.perf_counter()
    result = learner.run(jax.random.key(1), steps, jnp.asarray(y), batch_size=64)
    seconds = time.perf_counter() - start
    base = dist.Normal(jnp.zeros((8, 8, 1)), 1.0).to_event(3)
    u = rng.uniform(size=test.shape)
    held = ne.ais_log_likelihood(
        jax.random.key(2),
        result.module,
        jnp.asarray(whiten(test, u)),
        base,
        num_particles=args.ais_particles,
        num_levels=args.ais_levels,
    )
    # back to the [0, 1] pixels, then the bound on the grey levels
    log_px = np.asarray(held.log_likelihoods) - np.sum(np.log(np.diag(chol)))
    nats = -(log_px - D * math.log(K))
    ess = float(held.normalizer.ess)
    if ess < 0.1 * args.ais_particles:  # ais_log_normalizer has warned
        nats = np.full_like(nats, np.nan)  # no figure rather than a wrong one
    note = (
        f"{steps} steps; a tilt of the Gaussian; AIS {args.ais_particles} particles x "
        f"{args.ais_levels} levels, log Z {float(held.normalizer.log_normalizer):.2f} ± "
        f"{float(held.normalizer.stderr):.2f}, ESS {ess:.0f}"
        + (" (AIS failed: no figure)" if ess < 0.1 * args.ais_particles else "")
    )
    return nats, seconds, note


# ------------------------------------------------------------ cost
@nnx.jit
def _hand_written_step(model, optimizer, batch, key):
    def loss_fn(model):
        return ne.diffusion_score_matching_loss(
            key, model, batch, SDE, 1e-5, weighting="likelihood"
        )

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def hand_written_steps(net, x, num_steps, batch_size, learning_rate, seed=0):
    """The same loss and optimiser written directly with Flax NNX and Optax:
    a jitted step called from a Python loop over steps."""
    model = nnx.clone(net)
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
    step = _hand_written_step
    key = jax.random.key(seed)
    loss = None
    for _ in range(num_steps):
        key, key_batch, key_loss = jax.random.split(key, 3)
        idx = jax.random.choice(key_batch, x.shape[0], (batch_size,), replace=False)
        loss = step(model, optimizer, x[idx], key_loss)
    jax.block_until_ready(loss)
    return loss


def bench_cost(train, args):
    from timing import timed

    print("\n## Cost of training and of the likelihood\n")
    x = jnp.asarray(2.0 * train.reshape(-1, 8, 8, 1) / (K - 1) - 1.0, jnp.float32)
    n = 200 if args.quick else 1000
    features = args.features

    def network(standard_conv=False):
        net = ne.nn.DiffusionScoreConvNet(
            (8, 8, 1), SDE, features=features, num_blocks=args.blocks, rngs=nnx.Rngs(0)
        )
        if standard_conv:  # Flax's own convolution in every layer
            for _, module in nnx.iter_graph(net):
                if isinstance(module, nnx.Conv):
                    module.conv_general_dilated = jax.lax.conv_general_dilated
        return net

    learner = ne.ScoreMatching(
        network(),
        optax.adam(1e-3),
        ne.DiffusionScoreMatching(SDE, weighting="likelihood"),
    )

    def run():
        out = learner.run(jax.random.key(1), n, x, batch_size=64, progress_bar=False)
        return jax.block_until_ready(out.params)

    _, first, first_compile = timed(run)
    _, again, again_compile = timed(run)
    rows = [
        (
            "ne.ScoreMatching.run (one compiled loop)",
            first,
            first_compile,
            again,
            again_compile,
        )
    ]
    for name, standard in (
        ("hand-written NNX + Optax, same network", False),
        ("hand-written NNX + Optax, Flax's nnx.Conv", True),
    ):
        net = network(standard)
        _, f, fc = timed(lambda net=net: hand_written_steps(net, x, n, 64, 1e-3))
        _, a, ac = timed(lambda net=net: hand_written_steps(net, x, n, 64, 1e-3))
        rows.append((name, f, fc, a, ac))
    print(
        f"DiffusionScoreConvNet, {features} features, {args.blocks} blocks, batch 64, "
        f"{n} steps, likelihood-weighted loss, Adam.\n"
    )
    print(
        "| training | ms per step (second run) | ratio | first run (s) | its compilation (s) | second run's compilation (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = rows[1][3]
    for name, f, fc, a, ac in rows:
        print(
            f"| {name} | {1000 * a / n:.1f} | {a / base:.2f} | {f:.1f} | {fc:.1f} | {ac:.2f} |"
        )
    # the likelihood per image
    model = learner.run(
        jax.random.key(1), 10, x, batch_size=64, progress_bar=False
    ).module
    data = train[:256].reshape(-1, 8, 8, 1)

    def bound():
        r = ne.diffusion_elbo(
            jax.random.key(0), model, SDE, data, num_levels=K, num_samples=32
        )
        return jax.block_until_ready(r.log_likelihood)

    _, f, fc = timed(bound)
    _, a, ac = timed(bound)
    print(
        f"\nThe bound (diffusion_elbo, 32 samples per image): {1000 * a / 256:.2f} ms per "
        f"image (first call {f:.1f} s, of which compilation {fc:.1f} s; second call "
        f"compiles {ac:.2f} s)."
    )
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Peak resident memory of the process: {peak:.0f} MB.")


def main(args):
    train, val, test = digits_split()
    if args.cost:
        bench_cost(train, args)
        return
    print(
        f"Machine: {platform.machine()}, {jax.device_count()} JAX device(s), "
        f"Python {platform.python_version()}, jax {jax.__version__}.\n"
    )
    print(
        "| model | test NLL (nats/image) | bits/dim | exact or bound | training (s) | settings |"
    )
    print("| --- | ---: | ---: | --- | ---: | --- |")
    start = time.perf_counter()
    nats, note = categorical(train, val, test)
    row(
        "independent categorical per pixel",
        nats,
        "exact",
        time.perf_counter() - start,
        note,
    )
    start = time.perf_counter()
    nats, note = gaussian_dequantised(train, val, test)
    row(
        "full-covariance Gaussian, dequantised",
        nats,
        "bound",
        time.perf_counter() - start,
    )
    start = time.perf_counter()
    nats, note = categorical_mixture(train, val, test)
    row(
        "mixture of independent categoricals",
        nats,
        "exact",
        time.perf_counter() - start,
        note,
    )
    start = time.perf_counter()
    nats, note = linear_autoregressive(train, val, test)
    ar = row("linear autoregressive", nats, "exact", time.perf_counter() - start, note)

    if not args.skip_latent:
        vae_rows(test, args)
        soul_rows(test, args)
    steps = args.steps
    if not args.skip_ebm:
        nats, seconds, note = ebm_row(train, val, test, args.ebm_steps, args)
        row("EBM, convolutional (AIS, dequantised)", nats, "estimate", seconds, note)
    if args.skip_diffusion:
        return
    num_samples = 4 if args.quick else 32
    mlp = ne.nn.DiffusionScoreMLP(D, SDE, (256, 256, 256), rngs=nnx.Rngs(0))
    result, seconds = train_diffusion(
        mlp, train, steps, batch_size=128, learning_rate=1e-3, ema=0.999, seed=1
    )
    nats, frac, _ = score_diffusion(result.module, val, test, num_samples)
    row(
        "diffusion, MLP (likelihood-weighted)",
        nats,
        "bound",
        seconds,
        f"{steps} steps; decoder at sigma = {frac} x spacing",
    )
    conv = ne.nn.DiffusionScoreConvNet(
        (8, 8, 1),
        SDE,
        features=args.features,
        num_blocks=args.blocks,
        fourier_exponents=(3, 4) if args.fourier else (),
        rngs=nnx.Rngs(0),
    )
    result, seconds = train_diffusion(
        conv, train, steps, batch_size=64, learning_rate=2e-3, ema=0.999, seed=1
    )
    nats, frac, r = score_diffusion(result.module, val, test, num_samples)
    conv_mean = row(
        "diffusion, convolutional (likelihood-weighted)",
        nats,
        "bound",
        seconds,
        f"{steps} steps, {args.features} features, {args.blocks} blocks; decoder at "
        f"sigma = {frac} x spacing",
    )
    # the probability-flow likelihood's cost per image, for comparison with the
    # bound's (Hutchinson's estimator, one probe; the solver's default tolerances)
    from numpyro_ebm.core.ode import ode_log_likelihood

    images = jnp.asarray(2.0 * test[:64].reshape(-1, 8, 8, 1) / (K - 1) - 1.0)

    def flow():
        ll = ode_log_likelihood(
            result.module,
            SDE,
            images,
            trace_estimator="hutchinson",
            rng_key=jax.random.key(5),
        )
        return jax.block_until_ready(ll)

    from timing import timed

    _, first, compile_s = timed(flow)
    _, again, _ = timed(flow)
    print(
        f"\nThe probability-flow likelihood of the convolutional model "
        f"(ode_log_likelihood, Hutchinson, 1 probe, Tsit5 at tolerance 1e-5): "
        f"{1000 * again / images.shape[0]:.0f} ms per image on 64 test images "
        f"(first call {first:.1f} s, of which compilation {compile_s:.1f} s)."
    )
    print(
        f"\nConvolutional model's terms (nats/image): reconstruction "
        f"{float(r.reconstruction):.2f}, diffusion {float(r.diffusion):.2f}, prior "
        f"{float(r.prior):.4f}. Gap to the linear autoregressive model: "
        f"{(conv_mean - ar) / (D * LN2):+.3f} bits/dim."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--fourier", action="store_true")
    parser.add_argument("--ebm-steps", type=int, default=None)
    parser.add_argument("--skip-ebm", action="store_true")
    parser.add_argument("--skip-latent", action="store_true")
    parser.add_argument("--skip-diffusion", action="store_true")
    parser.add_argument("--cost", action="store_true", help="only the cost tables")
    parser.add_argument("--ais-particles", type=int, default=None)
    parser.add_argument("--ais-levels", type=int, default=None)
    args = parser.parse_args()
    if args.steps is None:
        args.steps = 200 if args.quick else 4000
    if args.ebm_steps is None:
        args.ebm_steps = 100 if args.quick else 500
    if args.ais_particles is None:
        args.ais_particles = 32 if args.quick else 256
    if args.ais_levels is None:
        args.ais_levels = 50 if args.quick else 1000
    main(args)
