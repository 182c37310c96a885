"""SGLD and SGHMC on NumPyro models with subsampled plates.

Exact answers: on a linear-Gaussian model the minibatch gradient is
``A_k w - b_k`` for batch ``k``, so one step is an affine map with random
coefficients, drawn afresh at every step. Enumerating every batch that
:func:`numpyro_ebm.core.batches.batch_indices` can draw (with its
probability) gives the chain's stationary mean and covariance exactly, as
the solution of a linear system; the chains must match them within
ESS-based standard errors. The control variates' variance reduction is read
off the same formulas.
"""

import itertools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC

import numpyro_ebm as ne
from tests.stats import assert_mean, assert_variance

N, B, D, TAU = 20, 4, 2, 3.0
STEP = 0.02  # SGLD
KINETIC_STEP, FRICTION = 0.1, 2.0  # SGHMC
CHAINS, WARMUP, SAMPLES = 4, 300, 5000

_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, D))
Y = X @ np.array([1.0, -0.5]) + np.random.default_rng(1).normal(size=N)


def regression(X, y):
    w = numpyro.sample("w", dist.Normal(0.0, TAU).expand([D]).to_event(1))
    with numpyro.plate("data", X.shape[0], subsample_size=B):
        xb = numpyro.subsample(X, event_dim=1)
        yb = numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Normal(xb @ w, 1.0), obs=yb)


def batches():
    """Every batch of the stratified scheme, each with its probability."""
    m = N // B
    rows = []
    for offset in range(N):
        for within in itertools.product(range(m), repeat=B):
            rows.append([(offset + b * m + u) % N for b, u in enumerate(within)])
    rows = np.asarray(rows)
    return rows, np.full(len(rows), 1.0 / len(rows))


def gradient_coefficients(control_variates):
    """``A_k``, ``b_k`` with grad U_k(w) = A_k w - b_k, and the posterior."""
    rows, p = batches()
    xs, ys = X[rows], Y[rows]  # (K, B, D), (K, B)
    a = np.eye(D) / TAU**2 + (N / B) * np.einsum("kbi,kbj->kij", xs, xs)
    b = (N / B) * np.einsum("kbi,kb->ki", xs, ys)
    precision = np.eye(D) / TAU**2 + X.T @ X
    mean = np.linalg.solve(precision, X.T @ Y)
    if control_variates:  # grad U(c) + grad U_k(w) - grad U_k(c), c the mode
        b = np.einsum("kij,j->ki", a, mean) - precision @ mean + X.T @ Y
    return a, b, p, precision, mean


def stationary(maps, shifts, p, noise):
    """Mean and covariance of z' = M_k z + c_k + N(0, noise), k ~ p iid."""
    n = maps.shape[1]
    mbar = np.einsum("k,kij->ij", p, maps)
    cbar = p @ shifts
    mu = np.linalg.solve(np.eye(n) - mbar, cbar)
    kron = np.einsum("k,kij,kab->iajb", p, maps, maps).reshape(n * n, n * n)
    mc = np.einsum("k,kij,j,ka->ia", p, maps, mu, shifts)
    rest = mc + mc.T + np.einsum("k,ki,kj->ij", p, shifts, shifts) + noise
    second = np.linalg.solve(np.eye(n * n) - kron, rest.ravel()).reshape(n, n)
    return mu, second - np.outer(mu, mu)


def sgld_moments(control_variates, noisy=True):
    a, b, p, _, _ = gradient_coefficients(control_variates)
    if not noisy:  # the full gradient: ULA
        a, b = np.einsum("k,kij->ij", p, a)[None], (p @ b)[None]
        p = np.ones(1)
    maps = np.eye(D) - STEP * a
    return stationary(maps, STEP * b, p, 2 * STEP * np.eye(D))


def sghmc_moments(control_variates):
    """OBABO with minibatch gradients, observed after each position update:
    kick with batch k, two momentum refreshments, kick with the same k
    (its gradient is cached), drift."""
    a, b, p, _, _ = gradient_coefficients(control_variates)
    eta2 = np.exp(-FRICTION * KINETIC_STEP)
    h, kick = KINETIC_STEP, 0.5 * KINETIC_STEP * (1 + eta2)
    eye = np.broadcast_to(np.eye(D), a.shape)
    r_w, r_r = -kick * a, eta2 * eye  # r' = r_w w + r_r r + kick b + noise
    maps = np.block([[eye + h * r_w, h * r_r], [r_w, r_r]])
    shifts = np.concatenate([h * kick * b, kick * b], axis=1)
    s2 = 1 - eta2**2
    noise = s2 * np.block(
        [[h * h * np.eye(D), h * np.eye(D)], [h * np.eye(D), np.eye(D)]]
    )
    mu, cov = stationary(maps, shifts, p, noise)
    return mu[:D], cov[:D, :D]


def draws(kernel):
    mcmc = MCMC(
        kernel,
        num_warmup=WARMUP,
        num_samples=SAMPLES,
        num_chains=CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), jnp.asarray(X), jnp.asarray(Y))
    return np.asarray(mcmc.get_samples(group_by_chain=True)["w"])


CASES = {
    "SGLD": (
        lambda cv: ne.SGLD(regression, step_size=STEP, control_variates=cv),
        sgld_moments,
    ),
    "SGHMC": (
        lambda cv: ne.SGHMC(
            regression, step_size=KINETIC_STEP, friction=FRICTION, control_variates=cv
        ),
        sghmc_moments,
    ),
}


@pytest.mark.parametrize("control_variates", [False, True], ids=["plain", "cv"])
@pytest.mark.parametrize("name", list(CASES))
def test_stationary_moments_are_exact(name, control_variates):
    make, moments = CASES[name]
    mu, cov = moments(control_variates)
    _, _, _, precision, mean = gradient_coefficients(False)
    np.testing.assert_allclose(mu, mean, rtol=1e-6)  # unbiased gradients
    w = draws(make(control_variates))
    sd = np.sqrt(np.diag(cov))
    assert_mean(w, mu, sd, min_ess=400)
    assert_variance(w, np.diag(cov), min_ess=400, kurtosis=3.5)
    # the formulas tell the schemes apart at this precision: the noise
    # inflates the variance well beyond the posterior's
    if not control_variates:
        posterior = np.diag(np.linalg.inv(precision))
        assert np.all(np.diag(cov) > 1.15 * posterior)


def test_control_variates_reduce_the_gradient_noise():
    # the noise's excess variance over ULA's falls by 3.9x and 2.3x per
    # coordinate here; the fall grows with the data (Baker et al. 2019)
    _, plain = sgld_moments(False)
    _, cv = sgld_moments(True)
    _, full = sgld_moments(False, noisy=False)
    excess_plain = np.diag(plain) - np.diag(full)
    excess_cv = np.diag(cv) - np.diag(full)
    assert np.all(excess_cv >= -1e-12)
    assert np.all(excess_cv < 0.5 * excess_plain)


def test_a_subsample_larger_than_its_plate_is_refused():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("rows", y.shape[0], subsample_size=50):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=numpyro.subsample(y, 0))

    mcmc = MCMC(
        ne.SGLD(model, step_size=0.1), num_warmup=1, num_samples=1, progress_bar=False
    )
    with pytest.raises(ValueError, match="plate 'rows' has subsample_size=50"):
        mcmc.run(jax.random.key(0), jnp.zeros(10))


def test_sgld_needs_a_model_and_a_step_size():
    with pytest.raises(ValueError, match="needs `model`"):
        ne.SGLD(potential_fn=lambda z: 0.5 * z**2, step_size=0.1)
    with pytest.raises(ValueError, match="needs `step_size`"):
        ne.SGHMC(regression)
