"""The NumPyro contract: chain methods, reproducibility, ArviZ, errors."""

import functools

import numpy as np
import pytest
from scipy import stats

import arviz as az
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import numpyro_ebm as ne
from tests import targets
from tests.stats import assert_mean, assert_same_means, assert_variance

KERNELS = {
    "MALA": lambda **kw: ne.MALA(**kw),
    "ULA": lambda **kw: ne.ULA(step_size=0.05, adapt_mass_matrix=True, **kw),
    "RWMH": lambda **kw: ne.RWMH(**kw),
    "AnnealedLangevin": lambda **kw: ne.AnnealedLangevin(
        step_size=0.05,
        inverse_temperature=ne.linear_schedule(0.5, 1.0, 300),
        adjusted=True,
        **kw,
    ),
    "MALT": lambda **kw: ne.MALT(**kw),
    "UnderdampedLangevin": lambda **kw: ne.UnderdampedLangevin(
        step_size=0.05, adapt_mass_matrix=True, **kw
    ),
}


def run(kernel, *args, num_warmup=300, num_samples=500, num_chains=1, seed=0, **kw):
    chain_method = kw.pop("chain_method", "vectorized")
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    mcmc.run(jax.random.key(seed), *args, **kw)
    return mcmc


@functools.cache
def vectorized_run(name):
    """Four vectorized chains of each kernel on the constrained model, key 0:
    one run (one compiled sampler) for the chain-method, reproducibility and
    ArviZ tests of that kernel."""
    kernel = KERNELS[name](model=targets.constrained_model)
    return run(kernel, num_chains=4, num_samples=1000)


# ------------------------------------------------------------ chain methods
@pytest.mark.parametrize("name", list(KERNELS))
def test_chain_methods_agree(name):
    # parallel chains run the one-chain transition that sequential chains run
    # (under pmap rather than jit), so sequential is compared for MALA alone
    methods = ("parallel", "vectorized") + (("sequential",) if name == "MALA" else ())
    draws = {}
    for method in methods:
        if method == "vectorized":  # the run the tests below share
            mcmc = vectorized_run(name)
        else:
            kernel = KERNELS[name](model=targets.constrained_model)
            mcmc = run(kernel, num_chains=4, chain_method=method, num_samples=1000)
        draws[method] = targets.stack_sites(
            mcmc.get_samples(group_by_chain=True), ("scale", "prob")
        )
    # same per-chain keys; compiled differently (pmap, vmap), so the chains
    # agree in distribution rather than to the bit
    assert_same_means(draws["vectorized"], draws["parallel"], min_ess=50)
    if "sequential" in draws:
        assert_same_means(draws["sequential"], draws["parallel"], min_ess=50)


@pytest.mark.parametrize("name", list(KERNELS))
def test_same_key_bit_identical(name):
    # a fresh kernel and MCMC object against the shared run of the same key
    again = run(
        KERNELS[name](model=targets.constrained_model), num_chains=4, num_samples=1000
    )
    samples = [vectorized_run(name).get_samples(), again.get_samples()]
    for site in ("scale", "prob"):
        np.testing.assert_array_equal(samples[0][site], samples[1][site])
    # another key (through the same, already compiled, MCMC object) differs
    again.run(jax.random.key(1))
    assert not np.array_equal(again.get_samples()["scale"], samples[0]["scale"])


# ------------------------------------------------------------------- ArviZ
@pytest.mark.parametrize("name", list(KERNELS))
def test_arviz_from_numpyro(name):
    mcmc = vectorized_run(name)
    idata = az.from_numpyro(mcmc)
    assert set(idata.posterior.data_vars) == {"scale", "prob"}
    assert idata.posterior["scale"].shape == (4, 1000)
    stats_vars = set(idata.sample_stats.data_vars)
    assert {"acceptance_rate", "step_size", "diverging", "lp"} <= stats_vars
    pe = mcmc.get_extra_fields(group_by_chain=True)["potential_energy"]
    np.testing.assert_allclose(idata.sample_stats["lp"].values, -np.asarray(pe))
    acc = idata.sample_stats["acceptance_rate"].values
    assert np.all((acc >= 0) & (acc <= 1))
    summary = az.summary(idata)
    assert {"scale", "prob"} <= set(summary.index)


def test_extra_fields_and_diagnostics_string():
    kernel = ne.MALA(model=targets.constrained_model)
    mcmc = run(kernel, extra_fields=("z_grad", "num_diverging", "mean_accept_prob"))
    fields = mcmc.get_extra_fields()
    assert fields["z_grad"]["scale"].shape == (500,)
    assert 0.3 < float(fields["mean_accept_prob"][-1]) < 0.8
    text = kernel.get_diagnostics_str(jax.tree.map(lambda x: x, mcmc.last_state))
    assert "step size" in text and "acc. prob" in text and "divergences=0" in text


def test_warmup_then_run_with_potential_fn():
    kernel = ne.MALA(potential_fn=targets.corr2d_potential, dense_mass=True)
    mcmc = MCMC(kernel, num_warmup=500, num_samples=2000, progress_bar=False)
    mcmc.warmup(jax.random.key(0), init_params=jnp.zeros(2))
    step = float(mcmc.post_warmup_state.adapt_state.step_size)
    mcmc.run(jax.random.key(1))  # no init_params: continues from warm-up
    stats_ = mcmc.get_extra_fields()
    np.testing.assert_allclose(stats_["adapt_state.step_size"], step)
    x = mcmc.get_samples()[None]
    assert_mean(x, np.zeros(2), np.sqrt(np.diag(targets.COV_2D)), min_ess=200)


def test_model_property_and_postprocess():
    assert ne.MALA(potential_fn=targets.corr2d_potential).model is None
    assert ne.MALA(targets.constrained_model).model is targets.constrained_model


def test_refresh_recomputes_cached_energy():
    def model(mu):
        numpyro.sample("x", dist.Normal(mu, 1.0))

    kernel = ne.MALA(model)
    state = kernel.init(jax.random.key(0), 10, None, (0.0,), {})
    new = kernel.refresh(state, (2.0,), {})
    x = state.z["x"]
    np.testing.assert_allclose(
        new.potential_energy, 0.5 * (x - 2.0) ** 2 + 0.5 * np.log(2 * np.pi), rtol=1e-5
    )
    np.testing.assert_allclose(new.z_grad["x"], x - 2.0, rtol=1e-5)


# -------------------------------------------------------- non-finite values
def truncated_potential(x):
    # N(0, 1) restricted to x < 1: infinite potential beyond the boundary
    return jnp.where(x < 1.0, 0.5 * x**2, jnp.inf).sum()


@pytest.mark.parametrize("name", ["MALA", "RWMH"])
def test_non_finite_proposals_rejected_exactly(name):
    kernel = KERNELS[name](potential_fn=truncated_potential)
    mcmc = run(
        kernel,
        num_chains=4,
        num_warmup=500,
        num_samples=3000,
        init_params=jnp.zeros((4, 1)),
        extra_fields=("num_diverging",),
    )
    x = np.asarray(mcmc.get_samples(group_by_chain=True))
    assert np.all(np.isfinite(x)) and np.all(x < 1.0)
    div = mcmc.get_extra_fields(group_by_chain=True)
    assert div["diverging"].sum() > 0
    assert int(div["num_diverging"][:, -1].sum()) == int(div["diverging"].sum())
    # the chain still targets the truncated normal exactly
    law = stats.truncnorm(-np.inf, 1.0)
    assert_mean(x, law.mean(), law.std())
    assert_variance(x, law.var(), kurtosis=law.moment(4) / law.var() ** 2)


def test_ula_keeps_state_on_non_finite_proposal():
    kernel = ne.ULA(potential_fn=truncated_potential, step_size=0.3)
    mcmc = run(kernel, num_samples=2000, init_params=jnp.zeros(1))
    x = np.asarray(mcmc.get_samples())
    assert np.all(np.isfinite(x)) and np.all(x < 1.0)
    assert mcmc.get_extra_fields()["diverging"].sum() > 0
    assert np.all(np.isfinite(mcmc.get_extra_fields()["potential_energy"]))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: ne.MALA(**kw),
        lambda **kw: ne.RWMH(**kw),
        lambda **kw: ne.ULA(step_size=0.1, **kw),
        lambda **kw: ne.AnnealedLangevin(step_size=0.1, inverse_temperature=1.0, **kw),
    ],
)
def test_exactly_one_of_model_and_potential_fn(make):
    with pytest.raises(ValueError, match="Only one of `model` or `potential_fn`"):
        make()
    with pytest.raises(ValueError, match="Only one of `model` or `potential_fn`"):
        make(model=targets.standard_normal_model, potential_fn=truncated_potential)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), "big"])
def test_bad_step_size(bad):
    f = targets.corr2d_potential
    for make in (
        lambda: ne.MALA(potential_fn=f, step_size=bad),
        lambda: ne.RWMH(potential_fn=f, step_size=bad),
        lambda: ne.ULA(potential_fn=f, step_size=bad),
        lambda: ne.AnnealedLangevin(
            potential_fn=f, step_size=bad, inverse_temperature=1.0
        ),
        lambda: ne.AnnealedLangevin(
            potential_fn=f, step_size=0.1, inverse_temperature=bad
        ),
    ):
        with pytest.raises(
            (ValueError, TypeError), match="step_size|inverse_temperature"
        ):
            make()


def test_bad_schedules():
    f = targets.corr2d_potential
    with pytest.raises(ValueError, match="positive and finite"):
        ne.ULA(potential_fn=f, step_size=jnp.array([0.1, -0.1]))
    with pytest.raises(ValueError, match="1-D"):
        ne.ULA(potential_fn=f, step_size=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="1-D"):
        ne.AnnealedLangevin(
            potential_fn=f, step_size=0.1, inverse_temperature=jnp.ones(0)
        )
    with pytest.raises(ValueError, match="scalar"):
        ne.ULA(potential_fn=f, step_size=lambda i: jnp.ones(2))
    with pytest.raises(ValueError, match="ULA needs `step_size`"):
        ne.ULA(potential_fn=f)
    with pytest.raises(
        ValueError, match="needs `step_size` and an `inverse_temperature`"
    ):
        ne.AnnealedLangevin(potential_fn=f, step_size=0.1)
    # a schedule that does not cover the warm-up: wrong length, said at run time
    kernel = ne.AnnealedLangevin(
        potential_fn=f,
        step_size=0.1,
        inverse_temperature=ne.geometric_schedule(1.0, 10.0, 50),
    )
    with pytest.raises(ValueError, match="schedule has 50 values but the warm-up"):
        run(kernel, num_warmup=100, init_params=jnp.zeros(2))


def test_bad_mass_matrix():
    f = targets.corr2d_potential
    with pytest.raises(ValueError, match="positive definite"):
        ne.MALA(potential_fn=f, inverse_mass_matrix=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="symmetric positive definite"):
        ne.MALA(
            potential_fn=f,
            dense_mass=True,
            inverse_mass_matrix=jnp.array([[1.0, 2.0], [2.0, 1.0]]),
        )
    with pytest.raises(ValueError, match="symmetric positive definite"):
        ne.MALA(
            potential_fn=f,
            dense_mass=True,
            inverse_mass_matrix=jnp.array([[1.0, 0.5], [0.0, 1.0]]),
        )
    with pytest.raises(ValueError, match="needs `dense_mass=True`"):
        ne.MALA(potential_fn=f, inverse_mass_matrix=jnp.eye(2))
    with pytest.raises(ValueError, match="vector .* or a square"):
        ne.MALA(potential_fn=f, dense_mass=True, inverse_mass_matrix=jnp.ones((2, 3)))
    kernel = ne.MALA(potential_fn=f, inverse_mass_matrix=jnp.ones(3))
    with pytest.raises(
        ValueError, match="has size 3 but the latent space has dimension 2"
    ):
        run(kernel, init_params=jnp.zeros(2))


def test_bad_target_accept_prob_and_proposal():
    f = targets.corr2d_potential
    with pytest.raises(ValueError, match="target_accept_prob"):
        ne.MALA(potential_fn=f, target_accept_prob=1.5)
    with pytest.raises(ValueError, match="`proposal` must be a callable"):
        ne.RWMH(potential_fn=f, proposal="gaussian")


@pytest.mark.parametrize("kernel_cls", [ne.MALA, ne.RWMH])
def test_discrete_latent_site_is_named(kernel_cls):
    def model():
        numpyro.sample("count", dist.Poisson(3.0))
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'count' is discrete.*continuous latent"):
        run(kernel_cls(model))
    # the message points to what works with these kernels, not to HMC-only wrappers
    with pytest.raises(ValueError, match="config_enumerate") as err:
        run(kernel_cls(model))
    assert "HMCGibbs" not in str(err.value) and "MixedHMC" not in str(err.value)


def improper_prior_model(y):
    # flat prior on the positive half-line (posteriordb's garch11 has such sites)
    # and a truncated Student t: NumPyro cannot draw from either
    u = numpyro.sample("u", dist.ImproperUniform(dist.constraints.positive, (), ()))
    numpyro.sample("t", dist.TruncatedDistribution(dist.StudentT(5.0), low=0.0))
    numpyro.sample("y", dist.Normal(u, 1.0), obs=y)


def test_models_with_unsampleable_priors_start_and_are_exact():
    # posterior: u ~ N(y, 1) truncated to u > 0, t ~ half-t(5), independent
    y = 0.5
    mcmc = run(ne.MALA(improper_prior_model), y, num_chains=4, num_samples=2000)
    samples = mcmc.get_samples(group_by_chain=True)
    u_law = stats.truncnorm(-y, np.inf, loc=y)
    t_mean = 2 * stats.t(5.0).expect(lambda x: x, lb=0.0)
    t_sd = np.sqrt(5.0 / 3.0 - t_mean**2)
    assert_mean(samples["u"], u_law.mean(), u_law.std())
    assert_mean(samples["t"], t_mean, t_sd)


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized", "parallel"])
def test_model_without_latent_sites_is_refused(chain_method):
    def model(y):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(ValueError, match="no latent sample sites.*'y'"):
        run(ne.MALA(model), 1.0, num_chains=2, chain_method=chain_method)


def test_invalid_start_is_reported_for_parallel_chains():
    # under pmap the start exists only on the devices: the check runs there and
    # its error (a JaxRuntimeError quoting it) surfaces when the draws are read
    kernel = ne.MALA(potential_fn=truncated_potential)
    with pytest.raises(Exception, match="Invalid start"):
        mcmc = run(
            kernel,
            num_chains=2,
            chain_method="parallel",
            init_params=jnp.array([[0.0], [2.0]]),
        )
        np.asarray(mcmc.get_samples())


def test_invalid_start_is_reported():
    kernel = ne.MALA(potential_fn=truncated_potential)
    with pytest.raises(ValueError, match="Invalid start"):
        run(kernel, init_params=jnp.array([2.0]))
    with pytest.raises(ValueError, match="Invalid start"):
        run(kernel, num_chains=2, init_params=jnp.array([[0.0], [2.0]]))
    with pytest.raises(ValueError, match="`init_params` must be provided"):
        run(kernel)


# -------------------------------------------- general Metropolis–Hastings
def gamma_potential(x):
    # Gamma(3, 1) on x > 0
    return jnp.where(x > 0, x - 2.0 * jnp.log(jnp.abs(x)), jnp.inf)


def log_normal_proposal(with_correction):
    def proposal(rng_key, x):
        new = x * jnp.exp(0.7 * jax.random.normal(rng_key))
        # q(x' | x) is log-normal around log x: the ratio is x' / x
        log_ratio = jnp.log(new) - jnp.log(x) if with_correction else 0.0
        return new, log_ratio

    return proposal


def test_rwmh_asymmetric_user_proposal_targets_the_right_law():
    kernel = ne.RWMH(potential_fn=gamma_potential, proposal=log_normal_proposal(True))
    mcmc = run(kernel, num_chains=4, num_samples=4000, init_params=jnp.ones(4))
    x = mcmc.get_samples(group_by_chain=True)
    law = stats.gamma(3.0)
    assert_mean(x, law.mean(), law.std())
    assert_variance(x, law.var(), kurtosis=3 + 6 / 3.0)
    # without the proposal ratio the chain targets another law: the same check fails
    wrong = ne.RWMH(potential_fn=gamma_potential, proposal=log_normal_proposal(False))
    x_wrong = run(wrong, num_chains=4, num_samples=4000, init_params=jnp.ones(4))
    with pytest.raises(AssertionError, match="mean off"):
        assert_mean(x_wrong.get_samples(group_by_chain=True), law.mean(), law.std())


# --------------------------------------------------------------- annealing
def double_well(x):
    # minima at x = -1.068 (global, U = -0.64) and x = 0.914 (local, U = +0.53)
    return (x**2 - 1.0) ** 2 + 0.6 * x


def test_annealing_concentrates_on_global_minimum():
    num_chains, num_steps = 200, 4000
    init = jnp.ones(num_chains)  # every chain starts in the local well
    kernel = ne.AnnealedLangevin(
        potential_fn=double_well,
        step_size=0.03,
        inverse_temperature=ne.geometric_schedule(1.0, 100.0, num_steps),
        adjusted=True,
    )
    mcmc = run(
        kernel,
        num_warmup=0,
        num_samples=num_steps,
        num_chains=num_chains,
        init_params=init,
    )
    final = np.asarray(mcmc.get_samples(group_by_chain=True))[:, -1]
    x_star = -1.0679  # global minimiser: 4x^3 - 4x + 0.6 = 0
    assert np.mean(np.abs(final - x_star) < 0.2) > 0.9
    # concentration: sd of the final law ~ 1 / sqrt(beta U''(x*)) = 0.032
    near = final[np.abs(final - x_star) < 0.2]
    assert near.std() < 0.045
    # control: at a fixed low temperature (no annealing) chains stay trapped
    frozen = ne.AnnealedLangevin(
        potential_fn=double_well,
        step_size=0.03,
        inverse_temperature=100.0,
        adjusted=True,
    )
    mcmc = run(
        frozen,
        num_warmup=0,
        num_samples=num_steps,
        num_chains=num_chains,
        init_params=init,
    )
    final = np.asarray(mcmc.get_samples(group_by_chain=True))[:, -1]
    assert np.mean(np.abs(final - x_star) < 0.2) < 0.1


def test_progress_bar_run(capsys):
    kernel = ne.MALA(targets.standard_normal_model)
    mcmc = MCMC(kernel, num_warmup=50, num_samples=50, progress_bar=True)
    mcmc.run(jax.random.key(0))
    assert mcmc.get_samples()["x"].shape == (50,)
    assert "divergences=" in kernel.get_diagnostics_str(mcmc.last_state)


@pytest.mark.parametrize(
    "chain_method, num_chains", [("vectorized", 2), ("sequential", 1)]
)
def test_stuck_or_exploding_chains_warn(chain_method, num_chains):
    # a step so large the chain never moves (MALA, not tuned) or, unadjusted,
    # flies off: both used to run to the end without a word
    potential = lambda x: 0.5 * jnp.sum(x**2)
    init = jnp.zeros((num_chains, 2)) if num_chains > 1 else jnp.zeros(2)
    for kernel, match in (
        (
            ne.MALA(
                potential_fn=potential,
                step_size=1e4,
                adapt_step_size=False,
                adapt_mass_matrix=False,
            ),
            "MALA",
        ),
        (ne.ULA(potential_fn=potential, step_size=5.0), "ULA"),
    ):
        with pytest.warns(RuntimeWarning, match=f"{match}: after 100 sampling"):
            mcmc = run(
                kernel,
                num_warmup=50,
                num_samples=200,
                num_chains=num_chains,
                chain_method=chain_method,
                init_params=init,
            )
            jax.block_until_ready(mcmc.get_samples())


def test_api_renames_keep_deprecated_aliases():
    f = targets.corr2d_potential
    with pytest.warns(DeprecationWarning, match="now called `inverse_temperature`"):
        kernel = ne.AnnealedLangevin(potential_fn=f, step_size=0.1, schedule=2.0)
    assert float(kernel._schedule) == 2.0
    with pytest.raises(ValueError, match="give `inverse_temperature` only"):
        ne.AnnealedLangevin(
            potential_fn=f, step_size=0.1, schedule=2.0, inverse_temperature=2.0
        )
    with pytest.warns(DeprecationWarning, match="now noise_annealed_langevin"):
        x = ne.annealed_langevin(
            jax.random.key(0), lambda x, s: -x, jnp.zeros((4, 2)), jnp.ones(1), 0.1, 2
        )
    assert x.shape == (4, 2)
    # everything after model / potential_fn is keyword-only
    with pytest.raises(TypeError, match="positional"):
        ne.MALA(None, f, 0.1)


def test_kernels_are_blocks_of_numpyro_gibbs_beside_discrete_sites():
    # NumPyro's Gibbs composite: DiscreteGibbs for the discrete site, ne.MALA
    # for the continuous ones (through wrap_model and refresh)
    from numpyro.infer import DiscreteGibbs, Gibbs
    from numpyro.infer.gibbs import discrete_latent_sites

    probs = np.array([0.15, 0.3, 0.3, 0.25])
    locs = np.array([-2.0, 0.0, 2.0, 4.0])

    def model():
        c = numpyro.sample("c", dist.Categorical(jnp.asarray(probs)))
        x = numpyro.sample("x", dist.Normal(jnp.asarray(locs)[c], 0.5))
        y = numpyro.sample("y", dist.Normal(0.0, 2.0))
        numpyro.sample("obs", dist.Normal(x + y, 1.0), obs=jnp.array(1.0))

    # exact posterior: given c, (x, y) is Gaussian given obs = 1; c by enumeration
    var_obs = 0.25 + 4.0 + 1.0
    w = probs * stats.norm(locs, np.sqrt(var_obs)).pdf(1.0)
    w /= w.sum()
    mean_x_c = locs + 0.25 / var_obs * (1.0 - locs)
    mean_y_c = 4.0 / var_obs * (1.0 - locs)
    var_x_c, var_y_c = 0.25 - 0.25**2 / var_obs, 4.0 - 16.0 / var_obs
    mean_x, mean_y = w @ mean_x_c, w @ mean_y_c
    sd_x = np.sqrt(w @ (var_x_c + mean_x_c**2) - mean_x**2)
    sd_y = np.sqrt(w @ (var_y_c + mean_y_c**2) - mean_y**2)

    kernel = Gibbs(
        [(DiscreteGibbs(model), discrete_latent_sites), (ne.MALA(model), None)]
    )
    mcmc = MCMC(
        kernel,
        num_warmup=500,
        num_samples=8000,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0))
    samples = mcmc.get_samples(group_by_chain=True)
    # x and c switch modes together, slowly: an ESS of about 1 in 50 draws
    assert_mean(samples["x"], mean_x, sd_x)
    assert_mean(samples["y"], mean_y, sd_y)
    is_two = np.asarray(samples["c"] == 2, np.float64)
    assert_mean(is_two, w[2], np.sqrt(w[2] * (1 - w[2])))
