"""Bad inputs across the public entry points: each is refused with a clear error.

One table, one parametrised test. Every row names the error type and a pattern
that its message must match: the argument at fault and what was expected.
Nothing here may return a NaN or a wrong answer silently, and nothing may hang.
"""

import warnings

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from flax import nnx
from numpyro.infer import MCMC

import numpyro_ebm as ne
from numpyro_ebm.core.sde import vp_sde
from numpyro_ebm.core.step_size import dual_averaging, robbins_monro

CASES = []


def case(name, error, match):
    """Register ``fn`` as a bad input that must raise ``error`` matching ``match``."""

    def register(fn):
        CASES.append(pytest.param(fn, error, match, id=name))
        return fn

    return register


def quadratic(x):
    return 0.5 * jnp.sum(x**2)


def gaussian_model():
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def toy_model(y):
    theta = numpyro.param("theta", 0.0)
    x = numpyro.sample("x", dist.Normal(theta, 1.0).expand([y.shape[0]]).to_event(1))
    numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)


Y = jnp.linspace(-1.0, 1.0, 10)
DATA = jax.random.normal(jax.random.key(0), (64, 2))


def run_mcmc(kernel, *args, num_chains=1, chain_method="vectorized", **kwargs):
    mcmc = MCMC(
        kernel,
        num_warmup=10,
        num_samples=10,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), *args, **kwargs)
    return mcmc


def warning_raised(fn):
    """Run ``fn`` and raise the first RuntimeWarning it gave (a warning from
    inside compiled code cannot be turned into an error where it is made)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    for w in caught:
        if issubclass(w.category, RuntimeWarning):
            raise w.message


def energy_net():
    return ne.nn.EnergyMLP(2, (8,), rngs=nnx.Rngs(0))


def ebm(method=None, optimizer=None):
    return ne.EBM(
        energy_net(),
        optax.adam(1e-3) if optimizer is None else optimizer,
        method=ne.PCD(num_steps=2, step_size=0.01, buffer_size=64)
        if method is None
        else method,
    )


# ------------------------------------------------------------- step sizes
for value in (0.0, -0.1, float("nan"), float("inf")):
    for kernel in ("MALA", "RWMH", "ULA", "MALT", "UnderdampedLangevin"):
        case(
            f"{kernel}-step_size={value}",
            ValueError,
            "`step_size` must be positive and finite",
        )(
            lambda value=value, kernel=kernel: getattr(ne, kernel)(
                potential_fn=quadratic, step_size=value
            )
        )
case("MALA-step_size=str", TypeError, "`step_size` must be a number")(
    lambda: ne.MALA(potential_fn=quadratic, step_size="big")
)
case("MALA-step_size=array", ValueError, "`step_size` must be a scalar")(
    lambda: ne.MALA(potential_fn=quadratic, step_size=jnp.ones(2))
)
case("ULA-step_size-missing", ValueError, "ULA needs `step_size`")(
    lambda: ne.ULA(potential_fn=quadratic)
)
case(
    "UnderdampedLangevin-step_size-missing",
    ValueError,
    "UnderdampedLangevin needs `step_size`",
)(lambda: ne.UnderdampedLangevin(potential_fn=quadratic))
case("UnderdampedLangevin-friction<0", ValueError, "`friction`")(
    lambda: ne.UnderdampedLangevin(potential_fn=quadratic, step_size=0.1, friction=-1.0)
)
case("MALT-friction=nan", ValueError, "`friction`")(
    lambda: ne.MALT(potential_fn=quadratic, friction=float("nan"))
)
case("MALT-trajectory_length=0", ValueError, "`trajectory_length`")(
    lambda: ne.MALT(potential_fn=quadratic, trajectory_length=0.0)
)
case("MALT-max_num_steps=0", ValueError, "`max_num_steps`")(
    lambda: ne.MALT(potential_fn=quadratic, max_num_steps=0)
)
case("MALT-max_num_steps=2.5", (TypeError, ValueError), "`max_num_steps`")(
    lambda: ne.MALT(potential_fn=quadratic, max_num_steps=2.5)
)
case("ParallelTempering-levels=1", ValueError, "`num_temperatures` must be at least 2")(
    lambda: ne.ParallelTempering(ne.MALA(potential_fn=quadratic), num_temperatures=1)
)
case("ParallelTempering-beta=1", ValueError, "`min_inverse_temperature`")(
    lambda: ne.ParallelTempering(
        ne.MALA(potential_fn=quadratic), min_inverse_temperature=1.0
    )
)
case("ParallelTempering-inner=NUTS", ValueError, "kernel of numpyro_ebm")(
    lambda: ne.ParallelTempering(numpyro.infer.NUTS(potential_fn=quadratic))
)
case(
    "ParallelTempering-potential-without-init_params",
    ValueError,
    "`init_params` must be provided",
)(lambda: run_mcmc(ne.ParallelTempering(ne.MALA(potential_fn=quadratic))))
case(
    "ULA-callable-step-turns-negative",
    ValueError,
    "`step_size` schedule must be positive.*at iteration 100[01]",
)(lambda: ne.ULA(potential_fn=quadratic, step_size=lambda i: 0.1 - 1e-4 * i))
case(
    "ULA-step-schedule-shorter-than-warmup",
    ValueError,
    "`step_size` schedule has 5 values but the warm-up alone takes 10",
)(
    lambda: run_mcmc(
        ne.ULA(potential_fn=quadratic, step_size=jnp.full(5, 0.1)),
        init_params=jnp.zeros(2),
    )
)
case(
    "Annealed-inverse-temperature-turns-zero",
    ValueError,
    "`inverse_temperature` schedule must be positive.*at iteration 50",
)(
    lambda: ne.AnnealedLangevin(
        potential_fn=quadratic,
        step_size=0.1,
        inverse_temperature=lambda i: 1.0 - 0.02 * i,
    )
)
case(
    "Annealed-schedule-negative-entry",
    ValueError,
    "`inverse_temperature` schedule must be positive and finite; entry 1",
)(
    lambda: ne.AnnealedLangevin(
        potential_fn=quadratic,
        step_size=0.1,
        inverse_temperature=jnp.array([1.0, -1.0]),
    )
)
case("Annealed-schedule-2d", ValueError, "non-empty 1-D array")(
    lambda: ne.AnnealedLangevin(
        potential_fn=quadratic, step_size=0.1, inverse_temperature=jnp.ones((2, 2))
    )
)
case("MALA-target_accept_prob=1.5", ValueError, "`target_accept_prob` must be in")(
    lambda: ne.MALA(potential_fn=quadratic, target_accept_prob=1.5)
)
case("annealed_langevin-step=inf", ValueError, "`step_size` must be positive")(
    lambda: ne.noise_annealed_langevin(
        jax.random.key(0),
        lambda x, s: -x,
        jnp.zeros((4, 2)),
        jnp.array([1.0, 0.1]),
        float("inf"),
        5,
    )
)
case(
    "annealed_langevin-steps=2.7",
    TypeError,
    "`num_steps_per_level` must be an integer",
)(
    lambda: ne.noise_annealed_langevin(
        jax.random.key(0),
        lambda x, s: -x,
        jnp.zeros((4, 2)),
        jnp.array([1.0]),
        0.1,
        2.7,
    )
)
case("annealed_langevin-sigmas-inf", ValueError, "positive and finite")(
    lambda: ne.noise_annealed_langevin(
        jax.random.key(0),
        lambda x, s: -x,
        jnp.zeros((4, 2)),
        jnp.array([jnp.inf, 1.0]),
        0.1,
        5,
    )
)
case("annealed_langevin-sigmas-unsorted", ValueError, "strictly decreasing")(
    lambda: ne.noise_annealed_langevin(
        jax.random.key(0),
        lambda x, s: -x,
        jnp.zeros((4, 2)),
        jnp.array([0.1, 1.0]),
        0.1,
        5,
    )
)
case(
    "annealed_langevin-score-wrong-shape",
    ValueError,
    r"`score_fn\(x, sigma\)` must return scores of the particles' shape",
)(
    lambda: ne.noise_annealed_langevin(
        jax.random.key(0),
        lambda x, s: -x.sum(-1, keepdims=True),
        jnp.zeros((4, 2)),
        jnp.array([1.0]),
        0.1,
        5,
    )
)

# ----------------------------------------------------- shapes and potentials
case(
    "potential-returns-vector",
    ValueError,
    "the potential must return a scalar",
)(
    lambda: run_mcmc(
        ne.MALA(potential_fn=lambda x: 0.5 * x**2), init_params=jnp.zeros(2)
    )
)
case(
    "init_params-wrong-shape-for-potential",
    ValueError,
    "the potential cannot be evaluated at the initial position",
)(
    lambda: run_mcmc(
        ne.MALA(potential_fn=lambda x: 0.5 * x @ jnp.eye(2) @ x),
        init_params=jnp.zeros(3),
    )
)
case("potential-nan-at-start", ValueError, "Invalid start")(
    lambda: run_mcmc(
        ne.MALA(potential_fn=lambda x: jnp.nan * jnp.sum(x)), init_params=jnp.zeros(2)
    )
)
case("potential-without-init_params", ValueError, "`init_params` must be provided")(
    lambda: run_mcmc(ne.MALA(potential_fn=quadratic))
)
case("model-and-potential", ValueError, "Only one of `model` or `potential_fn`")(
    lambda: ne.MALA(gaussian_model, potential_fn=quadratic)
)
case(
    "RWMH-proposal-wrong-structure",
    ValueError,
    r"`proposal\(rng_key, z\)` must return `\(z_new, log_proposal_ratio\)`",
)(
    lambda: run_mcmc(
        ne.RWMH(potential_fn=quadratic, proposal=lambda k, z: z),
        init_params=jnp.zeros(2),
    )
)
case(
    "RWMH-proposal-wrong-shape",
    ValueError,
    "same structure and shapes",
)(
    lambda: run_mcmc(
        ne.RWMH(potential_fn=quadratic, proposal=lambda k, z: (z[:1], 0.0)),
        init_params=jnp.zeros(2),
    )
)
case("RWMH-proposal-not-callable", ValueError, "`proposal` must be a callable")(
    lambda: ne.RWMH(potential_fn=quadratic, proposal="gaussian")
)
case("inverse_mass_matrix-negative", ValueError, "positive definite")(
    lambda: ne.MALA(potential_fn=quadratic, inverse_mass_matrix=jnp.array([1.0, -1.0]))
)
case("inverse_mass_matrix-wrong-size", ValueError, "has size 3 but the latent")(
    lambda: run_mcmc(
        ne.MALA(potential_fn=quadratic, inverse_mass_matrix=jnp.ones(3)),
        init_params=jnp.zeros(2),
    )
)

# --------------------------------------------------------------- models
for method in ("sequential", "vectorized", "parallel"):
    case(f"model-without-latent-sites-{method}", ValueError, "no latent sample sites")(
        lambda method=method: run_mcmc(
            ne.MALA(lambda: numpyro.sample("y", dist.Normal(), obs=1.0)),
            num_chains=2,
            chain_method=method,
        )
    )
case("model-with-discrete-site", ValueError, "'k' is discrete")(
    lambda: run_mcmc(
        ne.MALA(lambda: numpyro.sample("k", dist.Poisson(2.0))),
    )
)
case("mml-model-without-param", ValueError, "no numpyro.param site")(
    lambda: ne.PGD(lambda y: gaussian_model(), step_size=0.1, num_particles=2).run(
        jax.random.key(0), 5, Y, progress_bar=False
    )
)
case("mml-model-not-callable", TypeError, "`model` must be a callable")(
    lambda: ne.PGD("model", step_size=0.1, num_particles=2)
)
case("mml-num_particles=0", ValueError, "`num_particles` must be a positive")(
    lambda: ne.PGD(toy_model, step_size=0.1, num_particles=0)
)
case("mml-num_particles=2.5", TypeError, "`num_particles` must be an integer")(
    lambda: ne.IPLA(toy_model, step_size=0.1, num_particles=2.5)
)
case("mml-step_size=nan", ValueError, "`step_size` must be positive")(
    lambda: ne.PGD(toy_model, step_size=float("nan"), num_particles=2)
)
case("mml-step-schedule-negative", ValueError, "`step_size` schedule must be pos")(
    lambda: ne.SOUL(toy_model, step_size=lambda n: 0.1 - 0.01 * n)
)
case("SOUL-learning_rate=nan", ValueError, "`learning_rate` must be positive")(
    lambda: ne.SOUL(toy_model, step_size=0.1, learning_rate=float("nan"))
)
case("SOUL-learning_rate-and-optimizer", ValueError, "either `optimizer` or")(
    lambda: ne.SOUL(
        toy_model, optimizer=optax.adam(1e-2), step_size=0.1, learning_rate=0.1
    )
)
case("SOUL-optimizer-wrong-object", TypeError, "optax.GradientTransformation")(
    lambda: ne.SOUL(toy_model, optimizer="adam", step_size=0.1)
)
case("SOUL-burn_in=-1", ValueError, "`burn_in` must be a non-negative")(
    lambda: ne.SOUL(toy_model, step_size=0.1, burn_in=-1)
)
case("SOUL-num_langevin_steps=0", ValueError, "`num_langevin_steps` must be")(
    lambda: ne.SOUL(toy_model, step_size=0.1, num_langevin_steps=0)
)
case("MCEM-optimizer-wrong-object", TypeError, "optax.GradientTransformation")(
    lambda: ne.MCEM(toy_model, optimizer=optax.adam, step_size=0.1)
)
case("IPLA-tuned-without-pqn", ValueError, "IPLA with step_size=None needs")(
    lambda: ne.IPLA(toy_model)
)
case("PGD-optimizer-and-pqn", ValueError, "`optimizer` or `preconditioner`")(
    lambda: ne.PGD(toy_model, optimizer=optax.adam(1e-2), preconditioner="pqn")
)
case("PGD-target_accept_prob=0", ValueError, "`target_accept_prob` must be in")(
    lambda: ne.PGD(toy_model, target_accept_prob=0.0)
)
case("mml-run-num_steps=0", ValueError, "`num_steps` must be a positive")(
    lambda: ne.PGD(toy_model, step_size=0.1, num_particles=2).run(
        jax.random.key(0), 0, Y, progress_bar=False
    )
)
case("PGD-preconditioner-unknown", ValueError, "`preconditioner` must be")(
    lambda: ne.PGD(toy_model, step_size=0.1, num_particles=2, preconditioner="newton")
)

# ------------------------------------------------------------ distributions
case("Energy-num_steps=2.7", TypeError, "`num_steps` must be an integer")(
    lambda: ne.EnergyDistribution(lambda x: jnp.sum(x**2, -1), (2,), num_steps=2.7)
)
case("Energy-step_size=0", ValueError, "`step_size` must be positive")(
    lambda: ne.EnergyDistribution(lambda x: jnp.sum(x**2, -1), (2,), step_size=0.0)
)
case("Energy-energy_fn-not-callable", ValueError, "`energy_fn` must be callable")(
    lambda: ne.EnergyDistribution(3.0, (2,))
)
case("Energy-base-event-shape", ValueError, "`base_dist` has event_shape")(
    lambda: ne.EnergyDistribution(lambda x: jnp.sum(x**2, -1), (2,), dist.Normal())
)
case(
    "Energy-energy-broadcast-shape",
    ValueError,
    "`energy_fn` must map points of shape",
)(
    lambda: ne.EnergyDistribution(
        lambda x: 0.5 * jnp.sum(x**2, -1, keepdims=True), (2,)
    ).log_prob(jnp.zeros((5, 2)))
)
case("Score-sigmas-unsorted", ValueError, "strictly decreasing")(
    lambda: ne.ScoreDistribution(lambda x, s: -x, (2,), sigmas=jnp.array([0.1, 1.0]))
)
case("Score-steps=2.7", TypeError, "`num_steps_per_level` must be an integer")(
    lambda: ne.ScoreDistribution(
        lambda x, s: -x, (2,), sigmas=jnp.array([1.0]), num_steps_per_level=2.7
    )
)
case("Score-log_prob", ValueError, "ScoreDistribution, which has no log_prob")(
    lambda: ne.ScoreDistribution(
        lambda x, s: -x, (2,), sigmas=jnp.array([1.0])
    ).log_prob(jnp.zeros(2))
)

# ----------------------------------------------------------------- learning
case("EBM-optimizer-wrong-object", ValueError, "optax.GradientTransformation")(
    lambda: ne.EBM(energy_net(), "adam")
)
case("EBM-network-plain-function", ValueError, "flax.nnx.Module or a pair")(
    lambda: ne.EBM(lambda x: x, optax.adam(1e-3))
)
case("EBM-method-wrong-object", ValueError, "`method` must be")(
    lambda: ne.EBM(energy_net(), optax.adam(1e-3), method="pcd")
)
case("EBM-batch_size=0", ValueError, "`batch_size` must be a positive")(
    lambda: ebm().run(jax.random.key(0), 5, DATA, batch_size=0)
)
case("EBM-batch_size-too-large", ValueError, "larger than the data")(
    lambda: ebm().run(jax.random.key(0), 5, DATA, batch_size=65)
)
case("EBM-empty-data", ValueError, "`data` is empty")(
    lambda: ebm().run(jax.random.key(0), 5, jnp.zeros((0, 2)), batch_size=8)
)
case("EBM-nan-data", ValueError, "NaN or infinite")(
    lambda: ebm().run(jax.random.key(0), 5, DATA.at[3, 0].set(jnp.nan), batch_size=8)
)
case("EBM-inf-data", ValueError, "NaN or infinite")(
    lambda: ebm().run(jax.random.key(0), 5, DATA.at[3, 0].set(jnp.inf), batch_size=8)
)
case("EBM-data-wrong-width", ValueError, "cannot be applied to data of shape")(
    lambda: ebm().run(jax.random.key(0), 5, jnp.zeros((64, 3)), batch_size=8)
)
case("EBM-num_steps=0", ValueError, "`num_steps` must be a positive")(
    lambda: ebm().run(jax.random.key(0), 0, DATA, batch_size=8)
)
case("PCD-buffer-smaller-than-batch", ValueError, "`buffer_size`")(
    lambda: ebm(ne.PCD(buffer_size=4)).run(jax.random.key(0), 5, DATA, batch_size=8)
)
case("PCD-reinit_prob=2", ValueError, "`reinit_prob` must be in")(
    lambda: ebm(ne.PCD(buffer_size=64, reinit_prob=2.0)).run(
        jax.random.key(0), 5, DATA, batch_size=8
    )
)
case("CD-num_steps=0", ValueError, "`num_steps` must be a positive")(
    lambda: ebm(ne.CD(num_steps=0)).run(jax.random.key(0), 5, DATA, batch_size=8)
)
case("ShortRun-step_size=-1", ValueError, "`step_size` must be positive")(
    lambda: ebm(ne.ShortRun(step_size=-1.0)).run(
        jax.random.key(0), 5, DATA, batch_size=8
    )
)
case("TemperedPCD-one-level", ValueError, "`num_temperatures` must be")(
    lambda: ebm(ne.TemperedPCD(num_temperatures=1)).run(
        jax.random.key(0), 5, DATA, batch_size=8
    )
)
case("EBM-energy_regularization=-1", ValueError, "`energy_regularization`")(
    lambda: ne.EBM(energy_net(), optax.adam(1e-3), energy_regularization=-1.0)
)
case("Sliced-num_projections=0", ValueError, "`num_projections` must be a positive")(
    lambda: ne.ScoreMatching(
        energy_net(), optax.adam(1e-3), ne.SlicedScoreMatching(num_projections=0)
    )
)
case("Sliced-distribution-unknown", ValueError, "`distribution` must be")(
    lambda: ne.ScoreMatching(
        energy_net(), optax.adam(1e-3), ne.SlicedScoreMatching(distribution="uniform")
    )
)
case("DSM-sigma=0", ValueError, "`sigma` must be positive")(
    lambda: ne.DenoisingScoreMatching(sigma=0.0)
)
case("DSM-both-sigma-and-sigmas", ValueError, "exactly one of `sigma`")(
    lambda: ne.DenoisingScoreMatching(sigma=0.1, sigmas=[1.0, 0.1])
)
case("ScoreMatching-objective-wrong-object", TypeError, "`objective` must be")(
    lambda: ne.ScoreMatching(energy_net(), optax.adam(1e-3), "sliced")
)

# -------------------------------------------------------------- diagnostics
case("ksd-nan-samples", ValueError, "non-finite values")(
    lambda: ne.kernel_stein_discrepancy(DATA.at[0, 0].set(jnp.nan), lambda x: -x)
)
case("ksd-nan-scores", FloatingPointError, "non-finite scores at 64 of the 64")(
    lambda: ne.kernel_stein_discrepancy(DATA, lambda x: jnp.nan * x)
)
case("ksd-score-wrong-shape", ValueError, "score_fn must map samples")(
    lambda: ne.kernel_stein_discrepancy(DATA, lambda x: -x[:, :1])
)
case("ksd-c=0", ValueError, "`c` must be positive")(
    lambda: ne.kernel_stein_discrepancy(DATA, lambda x: -x, c=0.0)
)
case("grid-nan-energy", FloatingPointError, "grid_log_likelihood is not finite")(
    lambda: ne.grid_log_likelihood(
        lambda z: jnp.where(z[:, 0] > 2.0, jnp.nan, 0.5 * jnp.sum(z**2, -1)),
        DATA,
        ((-4, 4), (-4, 4)),
        num_grid=32,
    )
)
case("grid-bounds-reversed", ValueError, "xmin < xmax")(
    lambda: ne.grid_log_likelihood(
        lambda z: jnp.sum(z**2, -1), DATA, ((4, -4), (-4, 4)), num_grid=8
    )
)
case("mmd-nan", ValueError, "non-finite values")(
    lambda: ne.mmd(DATA.at[0, 0].set(jnp.nan), DATA)
)
case("toy-law-num_samples=2.5", TypeError, "`num_samples` must be an integer")(
    lambda: ne.datasets.two_moons().sample(jax.random.key(0), 2.5)
)

# ------------------------------------------------------------ score priors
SCORE_LEVELS = jnp.geomspace(3.0, 0.05, 5)


def unit_score(x, sigma):
    return -x / (1.0 + sigma**2)


def score_prior_model(y):
    x = numpyro.sample("x", ne.ScoreDistribution(unit_score, (2,), SCORE_LEVELS))
    numpyro.sample("y", dist.Normal(x[0], 0.5), obs=y)


def score_prior_with_scale(y):
    x = numpyro.sample("x", ne.ScoreDistribution(unit_score, (2,), SCORE_LEVELS))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    numpyro.sample("y", dist.Normal(x[0], tau), obs=y)


class NoDensity(dist.Distribution):
    """A law that can be sampled but has no log_prob."""

    support = dist.constraints.real

    def __init__(self, loc):
        self.loc = loc
        super().__init__(batch_shape=jnp.shape(loc))

    def sample(self, key, sample_shape=()):
        return self.loc + jax.random.normal(key, sample_shape + self.batch_shape)


def no_density_likelihood(y):
    x = numpyro.sample("x", ne.ScoreDistribution(unit_score, (2,), SCORE_LEVELS))
    numpyro.sample("y", NoDensity(x[0]), obs=y)


for kwargs, error, match in (
    ({"num_particles": 1}, ValueError, "`num_particles` must be at least 2"),
    ({"num_particles": 0}, ValueError, "`num_particles` must be a positive"),
    ({"num_particles": 2.5}, TypeError, "`num_particles` must be an integer"),
    ({"num_levels": 1}, ValueError, "`num_levels` must be at least 2"),
    ({"ess_threshold": 1.5}, ValueError, "`ess_threshold`"),
    ({"ess_threshold": float("nan")}, ValueError, "`ess_threshold`"),
    ({"latent_steps": 0}, ValueError, "`latent_steps`"),
    ({"method": "nuts"}, ValueError, "`method` must be 'smc' or 'annealed'"),
    ({"step_size": 1e-3}, ValueError, "`step_size` belong to method='annealed'"),
    (
        {"method": "annealed", "num_particles": 4},
        ValueError,
        "`num_particles` belong to method='smc'",
    ),
):
    name = ",".join(f"{k}={v}" for k, v in kwargs.items())
    case(f"ScorePosterior-{name}", error, match)(
        lambda kwargs=kwargs: ne.ScorePosterior(score_prior_model, **kwargs)
    )
case(
    "ScorePosterior-likelihood-without-log_prob", ValueError, "site 'y' has a NoDensity"
)(lambda: run_mcmc(ne.ScorePosterior(no_density_likelihood, num_levels=5), 1.0))
case("ScorePosterior-observation-nan", ValueError, "site 'y' has non-finite observed")(
    lambda: run_mcmc(ne.ScorePosterior(score_prior_model, num_levels=5), float("nan"))
)
case("ScorePosterior-score-nan", RuntimeWarning, r"non-finite at noise level 1 of 5")(
    lambda: warning_raised(
        lambda: run_mcmc(
            ne.ScorePosterior(
                lambda y: numpyro.sample(
                    "x",
                    ne.ScoreDistribution(lambda x, s: x * jnp.nan, (2,), SCORE_LEVELS),
                ),
                num_levels=5,
            ),
            1.0,
        )
    )
)
EVIDENCE = ne.ScorePosterior(score_prior_model, num_levels=5)
case("log_evidence-num_particles=0", ValueError, "`num_particles` must be a positive")(
    lambda: EVIDENCE.log_evidence(jax.random.key(0), 1.0, num_particles=0)
)
case("log_evidence-num_runs=1", ValueError, "`num_runs` must be at least 2")(
    lambda: EVIDENCE.log_evidence(jax.random.key(0), 1.0, num_runs=1)
)
case("log_evidence-y-nan", ValueError, "site 'y' has non-finite observed")(
    lambda: EVIDENCE.log_evidence(jax.random.key(0), float("nan"))
)
case(
    "log_evidence-other-latent-sites",
    ValueError,
    r"other than its score priors \('tau'\)",
)(
    lambda: ne.ScorePosterior(score_prior_with_scale, num_levels=5).log_evidence(
        jax.random.key(0), 1.0
    )
)
SCALED = ne.ScorePosterior(score_prior_with_scale, num_levels=5)
case("log_evidence-samples-missing-site", ValueError, "lacks the latent sites 'tau'")(
    lambda: SCALED.log_evidence(
        jax.random.key(0), 1.0, posterior_samples={"x": jnp.zeros((4, 2))}
    )
)
case("log_evidence-samples-nan", ValueError, "draws of 'tau' are not all finite")(
    lambda: SCALED.log_evidence(
        jax.random.key(0), 1.0, posterior_samples={"tau": jnp.array([jnp.nan, 1.0])}
    )
)
case("log_evidence-samples-shape", ValueError, "draws of 'tau' have shape")(
    lambda: SCALED.log_evidence(
        jax.random.key(0), 1.0, posterior_samples={"tau": jnp.ones((3, 2))}
    )
)
case("log_evidence-samples-one-draw", ValueError, "at least 2")(
    lambda: SCALED.log_evidence(
        jax.random.key(0), 1.0, posterior_samples={"tau": jnp.ones(1)}
    )
)
case("log_evidence-keys", ValueError, "`rng_key` must be one JAX PRNG key")(
    lambda: EVIDENCE.log_evidence(jax.random.split(jax.random.key(0), 2), 1.0)
)
case("log_evidence-in-jit", ValueError, "call it outside jax.jit")(
    lambda: jax.jit(lambda y: EVIDENCE.log_evidence(jax.random.key(0), y).stderr)(1.0)
)
case("geometric_schedule-num_steps=0", ValueError, "`num_steps` must be a positive")(
    lambda: ne.geometric_schedule(1.0, 0.1, 0)
)
case("geometric_schedule-end=inf", ValueError, "`end` must be positive and finite")(
    lambda: ne.geometric_schedule(1.0, float("inf"), 10)
)
case("linear_schedule-start=nan", ValueError, "`start` must be finite")(
    lambda: ne.linear_schedule(float("nan"), 1.0, 10)
)
case("linear_schedule-num_steps=2.5", TypeError, "`num_steps` must be an integer")(
    lambda: ne.linear_schedule(0.0, 1.0, 2.5)
)
case("polynomial_schedule-offset=-1", ValueError, "`offset` must be positive")(
    lambda: ne.polynomial_schedule(1.0, 0.6, offset=-1.0)
)
case("polynomial_schedule-exponent=nan", ValueError, "`exponent` must be non-neg")(
    lambda: ne.polynomial_schedule(1.0, float("nan"))
)
case("score_from_energy-not-callable", ValueError, "`energy_fn` must be callable")(
    lambda: ne.score_from_energy(3.0)
)
for value in (-1.0, 0.0, float("nan")):
    case(
        f"denoising_score_matching_loss-sigma={value}",
        ValueError,
        "`sigma` must be positive and finite",
    )(
        lambda value=value: ne.denoising_score_matching_loss(
            jax.random.key(0), lambda x: -x, jnp.ones((8, 2)), value
        )
    )
REVERSE_INIT = jnp.zeros((4, 2))
case("reverse_diffusion-init-nan", ValueError, "`init` must be finite")(
    lambda: ne.reverse_diffusion(
        jax.random.key(0), unit_score, REVERSE_INIT * jnp.nan, SCORE_LEVELS
    )
)
case("reverse_diffusion-one-level", ValueError, "at least 2 noise levels")(
    lambda: ne.reverse_diffusion(jax.random.key(0), unit_score, REVERSE_INIT, [1.0])
)
case("reverse_diffusion-increasing", ValueError, "strictly decreasing")(
    lambda: ne.reverse_diffusion(
        jax.random.key(0), unit_score, REVERSE_INIT, [0.1, 1.0]
    )
)
case(
    "reverse_diffusion-score-shape", ValueError, "must return scores of the particles"
)(
    lambda: ne.reverse_diffusion(
        jax.random.key(0), lambda x, s: x[:, 0], REVERSE_INIT, SCORE_LEVELS
    )
)
case("reverse_diffusion-in-jit-increasing", ValueError, "strictly decreasing")(
    lambda: jax.jit(
        lambda x: ne.reverse_diffusion(jax.random.key(0), unit_score, x, [0.1, 1.0])
    )(REVERSE_INIT)
)


# ------------------------------------------------------------ conv nets
def conv_net(kind="score", **kwargs):
    kwargs.setdefault("features", 8)
    if kind == "diffusion":
        return ne.nn.DiffusionScoreConvNet(
            (8, 8, 1), vp_sde(), rngs=nnx.Rngs(0), **kwargs
        )
    cls = ne.nn.ScoreConvNet if kind == "score" else ne.nn.EnergyConvNet
    return cls((8, 8, 1), rngs=nnx.Rngs(0), **kwargs)


for kind, extra in (("score", (0.5,)), ("diffusion", (0.5,)), ("energy", ())):
    case(
        f"{kind}-conv-net-flat-images",
        ValueError,
        r"batch of images of shape \(n, 8, 8, 1\)",
    )(lambda kind=kind, extra=extra: conv_net(kind)(jnp.ones((4, 64)), *extra))
    case(f"{kind}-conv-net-three-channels", ValueError, "1 channel\\), got shape")(
        lambda kind=kind, extra=extra: conv_net(kind)(jnp.ones((4, 8, 8, 3)), *extra)
    )
    case(f"{kind}-conv-net-in-jit-one-image", ValueError, "batch of images")(
        lambda kind=kind, extra=extra: jax.jit(lambda x: conv_net(kind)(x, *extra))(
            jnp.ones((8, 8, 1))
        )
    )
case("conv-net-image-shape-2d", ValueError, "`image_shape` must be \\(height, width")(
    lambda: ne.nn.ScoreConvNet((8, 8), rngs=nnx.Rngs(0))
)
case("conv-net-groups", ValueError, "must be divisible by the number of groups")(
    lambda: conv_net(features=12)
)
case("conv-net-features-zero", ValueError, "`features` must be positive")(
    lambda: conv_net(features=0)
)
case("diffusion-conv-net-no-sde", TypeError, "`sde` must be a forward SDE")(
    lambda: ne.nn.DiffusionScoreConvNet((8, 8, 1), 0.5, rngs=nnx.Rngs(0))
)

# ------------------------------------------------------------ AIS
AIS_BASE = dist.Normal(jnp.zeros(2), 1.0).to_event(1)


def ais_energy(x):
    return 0.5 * jnp.sum(x**2, -1)


def ais(**kwargs):
    kwargs.setdefault("num_levels", 5)
    return ne.ais_log_normalizer(jax.random.key(0), ais_energy, AIS_BASE, **kwargs)


for name, betas, match in (
    ("short-of-one", jnp.linspace(0.0, 0.9, 6), "end at exactly 1"),
    ("not-from-zero", jnp.linspace(0.1, 1.0, 6), "start at 0"),
    ("not-increasing", jnp.array([0.0, 0.5, 0.4, 1.0]), "increase strictly"),
    ("nan", jnp.array([0.0, jnp.nan, 1.0]), "must be finite"),
    ("one-level", jnp.array([1.0]), "at least 2 inverse temperatures"),
    ("2-d", jnp.zeros((2, 2)), "1-D schedule"),
):
    case(f"ais-betas-{name}", ValueError, match)(lambda b=betas: ais(betas=b))
case("ais-betas-in-jit-short-of-one", ValueError, "end at exactly 1")(
    lambda: jax.jit(lambda key: ais(betas=np.linspace(0.0, 0.9, 6)))(jax.random.key(0))
)
case("ais-num_levels-zero", ValueError, "`num_levels` must be a positive")(
    lambda: ais(num_levels=0)
)
case("ais-num_particles-one", ValueError, "`num_particles` must be >= 2")(
    lambda: ais(num_particles=1)
)
case("ais-num_mcmc_steps-zero", ValueError, "`num_mcmc_steps` must be a positive")(
    lambda: ais(num_mcmc_steps=0)
)
for value in (0.0, -0.1, float("nan")):
    case(f"ais-step_size={value}", ValueError, "`step_size` must be positive")(
        lambda value=value: ais(step_size=value)
    )
case("ais-target_accept_prob-one", ValueError, "`target_accept_prob`")(
    lambda: ais(target_accept_prob=1.0)
)
case("ais-energy-shape", ValueError, "energies of shape \\(n,\\)")(
    lambda: ne.ais_log_normalizer(jax.random.key(0), lambda x: x, AIS_BASE)
)
case("ais-energy-not-callable", TypeError, "`energy_fn` must be callable")(
    lambda: ne.ais_log_normalizer(jax.random.key(0), 3.0, AIS_BASE)
)
case("ais-base-batch-shape", ValueError, "`base_dist` must have an empty batch_shape")(
    lambda: ne.ais_log_normalizer(
        jax.random.key(0), ais_energy, dist.Normal(0.0, jnp.ones(2))
    )
)
case("ais-base-not-a-distribution", TypeError, "`base_dist` must be a numpyro")(
    lambda: ne.ais_log_normalizer(jax.random.key(0), ais_energy, "normal")
)
case("ais-reverse-without-init", ValueError, "pass `init`")(lambda: ais(reverse=True))
case("ais-init-forward", ValueError, "`init` is for reverse=True only")(
    lambda: ais(init=jnp.zeros((4, 2)))
)
case("ais-init-shape", ValueError, "`init` must have shape")(
    lambda: ais(init=jnp.zeros((4, 3)), reverse=True)
)
case("ais-init-nan", ValueError, "`init` contains non-finite")(
    lambda: ais(init=jnp.full((4, 2), jnp.nan), reverse=True)
)
case("ais-energy-nan", FloatingPointError, "NaN at level 1 ")(
    lambda: ne.ais_log_normalizer(
        jax.random.key(0), lambda x: jnp.sum(x, -1) * jnp.nan, AIS_BASE, num_levels=5
    )
)
case("ais_log_likelihood-data-nan", ValueError, "`data` contains non-finite")(
    lambda: ne.ais_log_likelihood(
        jax.random.key(0), ais_energy, jnp.full((3, 2), jnp.nan), AIS_BASE
    )
)
case("ais_log_likelihood-data-shape", ValueError, "`data` must have shape")(
    lambda: ne.ais_log_likelihood(jax.random.key(0), ais_energy, jnp.ones(2), AIS_BASE)
)

# ------------------------------------------------------------ likelihood bound
LEVELS = jnp.array([[0, 3, 16, 7]] * 4)


def elbo(data=LEVELS, **kwargs):
    kwargs.setdefault("num_levels", 17)
    return ne.diffusion_elbo(
        jax.random.key(0), lambda x, t: -x, vp_sde(), data, num_samples=2, **kwargs
    )


case("diffusion_elbo-non-integer-levels", ValueError, "must hold integer grey levels")(
    lambda: elbo(LEVELS + 0.5)
)
case("diffusion_elbo-level-too-high", ValueError, "levels 0..16; it holds 17")(
    lambda: elbo(LEVELS + 1)
)
case("diffusion_elbo-one-level", ValueError, "`num_levels` must be at least 2")(
    lambda: elbo(jnp.zeros((4, 4)), num_levels=1)
)
case("diffusion_elbo-eps-zero", ValueError, "`eps`")(lambda: elbo(eps=0.0))
case("diffusion_elbo-continuous-nan", ValueError, "`data` contains non-finite")(
    lambda: elbo(jnp.full((4, 4), jnp.nan), num_levels=None)
)
case(
    "diffusion_elbo-one-row",
    ValueError,
    "`data` must have shape \\(n, \\*event_shape\\)",
)(lambda: elbo(jnp.zeros(4), num_levels=None))
case("diffusion_elbo-nan-score", FloatingPointError, "the score is not finite")(
    lambda: ne.diffusion_elbo(
        jax.random.key(0), lambda x, t: x * jnp.nan, vp_sde(), LEVELS, num_levels=17
    )
)
case("diffusion_elbo-no-sde", TypeError, "`sde` must be a forward SDE")(
    lambda: ne.diffusion_elbo(jax.random.key(0), lambda x, t: -x, 0.5, LEVELS)
)
case("diffusion_elbo-in-jit-non-integer", ValueError, "must hold integer grey levels")(
    lambda: jax.jit(lambda key: elbo(np.asarray(LEVELS) + 0.5))(jax.random.key(0))
)
case("DiffusionScoreMatching-weighting", ValueError, "`weighting` must be 'variance'")(
    lambda: ne.DiffusionScoreMatching(vp_sde(), weighting="uniform")
)
case("ScoreMatching-ema_decay-one", ValueError, "`ema_decay`")(
    lambda: ne.ScoreMatching(energy_net(), optax.adam(1e-3), ema_decay=1.0)
)
case("EBM-ema_decay-negative", ValueError, "`ema_decay`")(
    lambda: ne.EBM(energy_net(), optax.adam(1e-3), ema_decay=-0.5)
)
case("ema_params-no-update", ValueError, "has seen no update yet")(
    lambda: ne.learn.ema_params(
        optax.chain(optax.sgd(1.0), ne.learn.ema_weights(0.9)).init(jnp.zeros(2))
    )
)

# ------------------------------------------------------------ distributed
ROWS = np.arange(12).reshape(6, 2)
case(
    "local_shard-index-past-count", ValueError, r"`process_index` \(5\) must be below"
)(lambda: ne.local_shard(ROWS, 5, 3))
case("local_shard-index-negative", ValueError, "`process_index` must be a non-neg")(
    lambda: ne.local_shard(ROWS, -1, 3)
)
case("local_shard-index-float", TypeError, "`process_index` must be an integer")(
    lambda: ne.local_shard(ROWS, 1.5, 3)
)
case("local_shard-count-zero", ValueError, "`process_count` must be a positive")(
    lambda: ne.local_shard(ROWS, 0, 0)
)
case("local_shard-scalar-data", ValueError, "`data` must have one row per")(
    lambda: ne.local_shard(np.float32(3.0), 0, 1)
)
case("local_shard-index-traced", TypeError, "`process_index` must be a Python int")(
    lambda: jax.jit(lambda p: ne.local_shard(jnp.asarray(ROWS), p, 3))(1)
)


# ------------------------------------------------------------ step sizes
case("dual_averaging-kappa-half", ValueError, r"`kappa` must be in \(0.5, 1\]")(
    lambda: dual_averaging(kappa=0.5)
)
case("dual_averaging-gamma-zero", ValueError, "`gamma` must be positive")(
    lambda: dual_averaging(gamma=0.0)
)
case("dual_averaging-t0-nan", ValueError, "`t0` must be non-negative")(
    lambda: dual_averaging(t0=float("nan"))
)
case("robbins_monro-gain-nan", ValueError, "`gain` must be positive")(
    lambda: robbins_monro(0.0, 0.5, 0.6, float("nan"))
)
case("robbins_monro-target-one", ValueError, r"`target_accept_prob` must be in")(
    lambda: robbins_monro(0.0, 0.5, 1.0, 0.05)
)


# ------------------------------------------------------- held-out likelihoods
def _vae_like(x):
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _vae_guide(x):
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("z", dist.Normal(x / 2, 0.7))


def _importance(x=Y, **kwargs):
    return ne.importance_log_likelihood(
        jax.random.key(0), _vae_like, _vae_guide, {}, x, **kwargs
    )


case("importance-batch-size-zero", ValueError, "`batch_size` must be a positive")(
    lambda: _importance(batch_size=0)
)
case("importance-batch-size-float", TypeError, "`batch_size` must be an integer")(
    lambda: _importance(batch_size=2.5)
)
case("importance-num-samples-zero", ValueError, "`num_samples` must be a positive")(
    lambda: _importance(num_samples=0)
)
case("importance-nan-data", FloatingPointError, "importance log-weights are NaN")(
    lambda: _importance(Y.at[3].set(jnp.nan), num_samples=8)
)
case("importance-batch-size-zero-jit", ValueError, "`batch_size` must be a positive")(
    lambda: jax.jit(lambda x: _importance(x, batch_size=0))(Y)
)


# ------------------------------------------- SG-MCMC and score-matching losses
def _subsampled(y):
    with numpyro.plate("data", y.shape[0], subsample_size=5):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(m, 1.0), obs=numpyro.subsample(y, event_dim=0))


case("SGLD-step-nan", ValueError, "`step_size` must be positive")(
    lambda: ne.SGLD(_subsampled, step_size=float("nan"))
)
case("SGHMC-friction-zero", ValueError, "`friction` must be positive")(
    lambda: ne.SGHMC(_subsampled, step_size=0.01, friction=0.0)
)
case("SGHMC-step-zero", ValueError, "`step_size` must be positive")(
    lambda: ne.SGHMC(_subsampled, step_size=0.0)
)
case("UnderdampedLangevin-friction-zero", ValueError, "`friction` must be positive")(
    lambda: ne.UnderdampedLangevin(gaussian_model, step_size=0.1, friction=0.0)
)
case("exact_sm_loss-score-shape", ValueError, "`score_fn` must return scores")(
    lambda: ne.exact_score_matching_loss(lambda x: x[:, :1], jnp.ones((4, 2)))
)
case("exact_sm_loss-score-shape-jit", ValueError, "`score_fn` must return scores")(
    lambda: jax.jit(lambda x: ne.exact_score_matching_loss(lambda y: y[:, :1], x))(
        jnp.ones((4, 2))
    )
)


@pytest.mark.parametrize("fn, error, match", CASES)
def test_bad_input_is_refused(fn, error, match):
    with pytest.raises(error, match=match):
        fn()


def test_the_table_covers_enough_cases():
    assert len(CASES) >= 60, len(CASES)


def test_numpy_and_jax_scalars_are_accepted_as_numbers():
    # np.float32(0.01) used to be refused as "must be positive"
    for step in (np.float32(0.01), np.float64(0.01), jnp.asarray(0.01)):
        ne.MALA(potential_fn=quadratic, step_size=step)
        ne.ULA(potential_fn=quadratic, step_size=step)
        ne.EnergyDistribution(lambda x: jnp.sum(x**2, -1), (2,), step_size=step)
    ne.EnergyDistribution(lambda x: jnp.sum(x**2, -1), (2,), num_steps=np.int64(5))
