"""Each kernel's moments on targets with known answers (ESS-gated).

Exact kernels (MALA, RWMH, adjusted AnnealedLangevin) are compared with the
target itself; ULA on Gaussians with its own biased stationary law, which is
known in closed form (docs/mathematics.rst, §1), and on models with a small step against NUTS.
"""

import functools

import numpy as np
import pytest

import jax.numpy as jnp

import numpyro_ebm as ne
from tests import targets
from tests.stats import assert_mean, assert_same_means, assert_variance

run = targets.run_chains


# ------------------------------------------------------------ standard normal
@pytest.mark.parametrize(
    "make_kernel, num_samples",
    [
        (lambda m: ne.MALA(m), 2000),
        (lambda m: ne.RWMH(m), 4000),
        (
            lambda m: ne.AnnealedLangevin(
                m, step_size=0.5, inverse_temperature=1.0, adjusted=True
            ),
            2000,
        ),
    ],
    ids=["MALA", "RWMH", "AnnealedLangevin-adjusted"],
)
def test_standard_normal_exact(make_kernel, num_samples):
    mcmc = run(make_kernel(targets.standard_normal_model), 500, num_samples)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert_mean(x, 0.0, 1.0)
    assert_variance(x, 1.0)


@pytest.mark.parametrize("step_size", [0.5, 1.0])
def test_ula_stationary_variance_closed_form(step_size):
    # ULA on N(0, s^2) has stationary law N(0, s^2 / (1 - h / (2 s^2)))
    mcmc = run(ne.ULA(targets.standard_normal_model, step_size=step_size), 200, 5000)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    biased_var = 1.0 / (1.0 - step_size / 2.0)
    assert_mean(x, 0.0, np.sqrt(biased_var))
    assert_variance(x, biased_var)


def test_ula_variance_test_detects_bias():
    # the closed form is what ULA samples, not the target: the target's own
    # variance must fail the same check (so the test above has power)
    mcmc = run(ne.ULA(targets.standard_normal_model, step_size=0.5), 200, 5000)
    x = mcmc.get_samples(group_by_chain=True)["x"]
    with pytest.raises(AssertionError):
        assert_variance(x, 1.0)


@pytest.mark.parametrize("beta", [0.25, 4.0])
def test_tempered_adjusted_targets_exp_minus_beta_u(beta):
    kernel = ne.AnnealedLangevin(
        targets.standard_normal_model,
        step_size=0.5 / beta,
        inverse_temperature=beta,
        adjusted=True,
    )
    x = run(kernel, 200, 3000).get_samples(group_by_chain=True)["x"]
    assert_mean(x, 0.0, beta**-0.5)
    assert_variance(x, 1.0 / beta)


# ------------------------------------------------------ correlated 2-D Gaussian
INIT_2D = jnp.zeros((4, 2))


@pytest.mark.parametrize(
    "kernel, num_samples",
    [
        (ne.MALA(potential_fn=targets.corr2d_potential, dense_mass=True), 2000),
        (ne.RWMH(potential_fn=targets.corr2d_potential, dense_mass=True), 4000),
        (
            ne.AnnealedLangevin(
                potential_fn=targets.corr2d_potential,
                step_size=0.8,
                inverse_temperature=1.0,
                adjusted=True,
                dense_mass=True,
                inverse_mass_matrix=targets.COV_2D,
            ),
            2000,
        ),
    ],
    ids=["MALA", "RWMH", "AnnealedLangevin-adjusted"],
)
def test_correlated_gaussian_dense_mass(kernel, num_samples):
    mcmc = run(kernel, 1000, num_samples, init_params=INIT_2D)
    x = mcmc.get_samples(group_by_chain=True)
    sd = np.sqrt(np.diag(targets.COV_2D))
    assert_mean(x, np.zeros(2), sd)
    assert_variance(x, np.diag(targets.COV_2D))
    # the correlation, through the variance of the whitened sum
    w = np.asarray(x) / sd
    assert_variance(w.sum(-1, keepdims=True), 2 + 2 * targets.CORR)
    if kernel._adapt_mass_matrix:
        # the adapted dense inverse mass matrix, one for all chains (pooled),
        # has learnt the covariance
        imm = np.asarray(mcmc.last_state.adapt_state.inverse_mass_matrix)
        np.testing.assert_allclose(imm, targets.COV_2D, atol=0.15)


def test_ula_correlated_gaussian_preconditioned_closed_form():
    # with A = Sigma, ULA is x' = (1 - h) x + sqrt(2h) Sigma^1/2 z:
    # stationary covariance Sigma / (1 - h / 2)
    h = 0.4
    kernel = ne.ULA(
        potential_fn=targets.corr2d_potential,
        step_size=h,
        dense_mass=True,
        inverse_mass_matrix=targets.COV_2D,
    )
    x = run(kernel, 200, 4000, init_params=INIT_2D).get_samples(group_by_chain=True)
    cov = targets.COV_2D / (1 - h / 2)
    sd = np.sqrt(np.diag(cov))
    assert_mean(x, np.zeros(2), sd)
    assert_variance(x, np.diag(cov))
    assert_variance((np.asarray(x) / sd).sum(-1, keepdims=True), 2 + 2 * targets.CORR)


# ------------------------------------------------------ 100-D diagonal Gaussian
INIT_100 = jnp.zeros((4, 100))
VAR_100 = targets.SCALES_100**2


@pytest.mark.parametrize(
    "kernel, num_warmup, num_samples",
    [
        (ne.MALA(potential_fn=targets.diag100_potential), 1000, 3000),
        # a random walk in 100-D needs a long warm-up for its mass matrix (a
        # long run: compiled with XLA's optimisations; the two short runs
        # cost less without)
        pytest.param(
            ne.RWMH(potential_fn=targets.diag100_potential),
            20000,
            40000,
            marks=pytest.mark.optimized,
        ),
        (
            ne.AnnealedLangevin(
                potential_fn=targets.diag100_potential,
                step_size=0.3,
                inverse_temperature=1.0,
                adjusted=True,
                inverse_mass_matrix=VAR_100,
            ),
            500,
            3000,
        ),
    ],
    ids=["MALA", "RWMH", "AnnealedLangevin-adjusted"],
)
def test_diagonal_gaussian_100d(kernel, num_warmup, num_samples):
    mcmc = run(kernel, num_warmup, num_samples, init_params=INIT_100)
    x = mcmc.get_samples(group_by_chain=True)
    assert_mean(x, np.zeros(100), targets.SCALES_100)
    assert_variance(x, VAR_100)


def test_ula_diagonal_gaussian_100d_adapted_mass_closed_form():
    # with a fixed diagonal A after warm-up, coordinate i of ULA has stationary
    # variance s_i^2 / (1 - h a_i / (2 s_i^2)): the closed form per coordinate
    h = 0.2
    kernel = ne.ULA(
        potential_fn=targets.diag100_potential, step_size=h, adapt_mass_matrix=True
    )
    mcmc = run(kernel, 1000, 4000, init_params=INIT_100)
    x = np.asarray(mcmc.get_samples(group_by_chain=True))
    # one diagonal for all chains (pooled adaptation)
    a = np.asarray(mcmc.last_state.adapt_state.inverse_mass_matrix)
    assert a.shape == (100,)
    # whiten by the stationary sd, then compare with N(0, 1)
    stationary_var = VAR_100 / (1 - h * a / (2 * VAR_100))
    w = x / np.sqrt(stationary_var)
    assert_mean(w, np.zeros(100), np.ones(100))
    assert_variance(w, np.ones(100))


# ------------------------------------- constrained sites, logistic regression
@functools.cache
def _mala_run(model_name):
    """The MALA run of test_models_against_nuts (1000 warm-up steps, 3000
    draws), shared with the AnnealedLangevin case that starts from it."""
    model, args, _ = MODELS[model_name]
    kernel, num_samples = KERNELS_VS_NUTS["MALA"](model, args)
    return run(kernel, 1000, num_samples, *args)


def _mala_warmed_up(model_name):
    """Step size, inverse mass matrix and the chains' positions after a MALA
    warm-up (what one hands over to a kernel that does not adapt): the
    adaptation stops with the warm-up, so the run's last state holds them."""
    last = _mala_run(model_name).last_state
    state = last.adapt_state
    return {
        "step_size": float(np.median(state.step_size)),
        "inverse_mass_matrix": np.asarray(state.inverse_mass_matrix),  # pooled
    }, last.z


MODELS = {
    "constrained": (targets.constrained_model, (), ("scale", "prob")),
    "logistic": (
        targets.logistic_model,
        targets.logistic_data(),
        ("coef", "intercept"),
    ),
}
KERNELS_VS_NUTS = {
    "MALA": lambda model, args: (ne.MALA(model), 3000),
    "RWMH": lambda model, args: (ne.RWMH(model), 8000),
    # ULA's bias is O(h): a small step in the units of the adapted metric
    "ULA": lambda model, args: (
        ne.ULA(model, step_size=0.01, adapt_mass_matrix=True),
        10000,
    ),
    "MALT": lambda model, args: (ne.MALT(model), 2000),
    # O(h^2) bias: a variance 0.25% too large at h = 0.1 in the metric's units
    "UnderdampedLangevin": lambda model, args: (
        ne.UnderdampedLangevin(model, step_size=0.1, adapt_mass_matrix=True),
        5000,
    ),
    # adjusted Langevin at inverse temperature 1, with the step, metric and
    # positions that a MALA warm-up found (it does not adapt: started in a
    # tail with that step, a chain can stay there)
    "AnnealedLangevin": lambda model, args: _annealed_after_mala(model, args),
}


def _annealed_after_mala(model, args):
    name = next(k for k, v in MODELS.items() if v[0] is model)
    kwargs, positions = _mala_warmed_up(name)
    kernel = ne.AnnealedLangevin(
        model, inverse_temperature=1.0, adjusted=True, **kwargs
    )
    return kernel, 3000, {"init_params": positions}


@pytest.mark.parametrize(
    "model_name, kernel_name",
    [
        (m, k)
        for m in MODELS
        for k in KERNELS_VS_NUTS
        # the unadjusted kinetic kernel once, on the constrained sites
        if not (m == "logistic" and k == "UnderdampedLangevin")
    ],
)
def test_models_against_nuts(model_name, kernel_name):
    model, args, sites = MODELS[model_name]
    kernel, num_samples, *run_kwargs = KERNELS_VS_NUTS[kernel_name](model, args)
    if kernel_name == "MALA":
        mcmc = _mala_run(model_name)
    else:
        mcmc = run(kernel, 1000, num_samples, *args, **dict(*run_kwargs))
    samples = mcmc.get_samples(group_by_chain=True)
    if model_name == "constrained":  # draws come back in the sites' supports
        assert (samples["scale"] > 0).all()
        assert ((samples["prob"] > 0) & (samples["prob"] < 1)).all()
    draws = targets.stack_sites(samples, sites)
    if model_name == "constrained":  # exact moments
        assert_mean(draws, *targets.constrained_moments())
    else:
        assert_same_means(draws, targets.nuts_reference(model_name))
