"""The posterior benchmark suite, reduced: its gate, its data and references,
and ne.MALA through it on the posteriors it passes at the standard budget."""

import numpy as np
import pytest

import jax
from numpyro import handlers
from numpyro.infer import MCMC
from numpyro.infer.util import log_density

import numpyro_ebm as ne
from benchmarks.posteriors import POSTERIORS, gate


def _iid(shift=0.0, chains=4, draws=1000, dim=10, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(chains, draws, dim)) + shift}


def test_the_gate_passes_exact_draws_and_fails_each_criterion():
    posterior = POSTERIORS["gaussian_10d"]
    exact = gate.evaluate(posterior, _iid())
    assert exact.passed, exact.describe()
    # a bias of 0.15 sd is 0.15 * sqrt(4000) = 9.5 standard errors
    assert "|z|" in gate.evaluate(posterior, _iid(shift=0.15)).describe()
    stuck = _iid()
    stuck["x"][0] += 1.0  # one chain elsewhere
    assert "R-hat" in gate.evaluate(posterior, stuck).describe()
    assert "ESS" in gate.evaluate(posterior, _iid(draws=80)).describe()
    assert "divergences" in gate.evaluate(posterior, _iid(), divergences=3).describe()


def test_the_mean_test_fails_a_correct_sampler_rarely():
    # 40 runs of exact draws in 100 dimensions: the Bonferroni bound keeps
    # the false failures near or under 1% (tuningfork's max |z| < 2 would
    # fail nearly all of them: 1 - 0.954**100 = 99%)
    posterior = POSTERIORS["badly_scaled_gaussian_100d"]
    scale = posterior.reference()["x"]["sd"]
    rng = np.random.default_rng(1)
    failures = 0
    for _ in range(40):
        draws = {"x": rng.normal(size=(4, 250, 100)) * scale}
        failed = gate.evaluate(posterior, draws).failed
        failures += any(f.startswith("|z|") for f in failed)
    assert failures <= 3  # P(Binomial(40, 0.01) > 3) < 0.001


def test_multimodal_posteriors_are_gated_on_mode_weights():
    posterior = POSTERIORS["bimodal_unequal"]
    weights, locs = posterior.modes
    rng = np.random.default_rng(2)
    which = rng.uniform(size=(4, 2000)) < weights[1]
    x = locs[which.astype(int)] + rng.normal(size=(4, 2000, 5))
    assert gate.evaluate(posterior, {"x": x}).passed
    one_mode = locs[0] + rng.normal(size=(4, 2000, 5))
    assert "mode weights" in gate.evaluate(posterior, {"x": one_mode}).describe()


@pytest.mark.parametrize("name", sorted(POSTERIORS))
def test_every_posterior_has_data_a_finite_density_and_a_reference(name):
    posterior = POSTERIORS[name]
    kwargs = posterior.kwargs()

    def prior_draw(key):
        # one draw of every latent site from the prior, and the log joint
        # there (compiled: NumPyro's eager initialisation takes 3x longer)
        model_trace = handlers.trace(handlers.seed(posterior.model, key)).get_trace(
            **kwargs
        )
        z = {
            k: site["value"]
            for k, site in model_trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        return log_density(posterior.model, (), kwargs, z)[0], z

    log_joint, z = jax.jit(prior_draw)(jax.random.key(0))
    assert np.isfinite(float(log_joint))
    if "multimodal" not in posterior.tags:
        ref = posterior.reference()
        assert set(ref) == set(z)
        for site, stats in ref.items():
            assert np.shape(stats["mean"]) == np.shape(z[site])
            assert np.all(np.asarray(stats["sd"]) > 0)


@pytest.mark.parametrize("name", ["gaussian_10d", "logistic_regression"])
def test_mala_passes_the_gate_at_the_standard_budget(name):
    posterior = POSTERIORS[name]
    mcmc = MCMC(
        ne.MALA(posterior.model),
        num_warmup=1000,
        num_samples=1000,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), extra_fields=("diverging",), **posterior.kwargs())
    samples = {
        k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()
    }
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    verdict = gate.evaluate(posterior, samples, divergences)
    assert verdict.passed, verdict.describe()
