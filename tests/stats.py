"""ESS-gated statistical assertions shared by the sampler tests.

A check first requires enough effective samples, then compares an estimate
with the truth within ``k`` Monte Carlo standard errors (``sd / sqrt(ESS)``).
"""

import numpy as np
from arviz_stats.base import array_stats


def ess(draws):
    """Bulk ESS per coordinate of ``draws`` shaped (chains, draws, *dims)."""
    draws = np.asarray(draws, dtype=np.float64)
    flat = draws.reshape(draws.shape[0], draws.shape[1], -1)
    return np.asarray(array_stats.ess(flat, chain_axis=0, draw_axis=1, method="bulk"))


def assert_mean(draws, true_mean, true_sd, *, k=5.0, min_ess=100):
    """|mean - truth| < k * sd / sqrt(ESS), per coordinate, after an ESS gate."""
    draws = np.asarray(draws, dtype=np.float64)
    e = ess(draws)
    assert e.min() >= min_ess, f"ESS too low: min {e.min():.0f} < {min_ess}"
    mean = draws.reshape(-1, e.size).mean(0)
    err = np.abs(mean - np.ravel(true_mean))
    bound = k * np.ravel(true_sd) / np.sqrt(e)
    worst = np.argmax(err / bound)
    assert np.all(err < bound), (
        f"mean off at coordinate {worst}: {mean[worst]:.4f} vs "
        f"{np.ravel(true_mean)[worst]:.4f} (bound {bound[worst]:.4f}, ESS {e[worst]:.0f})"
    )
    return e


def assert_variance(draws, true_var, *, k=5.0, min_ess=100, kurtosis=3.0):
    """Variance within k standard errors; se^2 ~ (kurtosis - 1) var^2 / ESS.

    ``kurtosis`` is 3 for Gaussian targets; the ESS of the squared centred draws
    is used since the variance estimator averages those.
    """
    draws = np.asarray(draws, dtype=np.float64)
    d = draws.reshape(draws.shape[0], draws.shape[1], -1)
    centred_sq = (d - d.mean(axis=(0, 1))) ** 2
    e = ess(centred_sq)
    assert e.min() >= min_ess, f"ESS of squares too low: {e.min():.0f} < {min_ess}"
    var = d.reshape(-1, d.shape[-1]).var(0)
    true_var = np.broadcast_to(np.ravel(true_var), var.shape)
    bound = k * np.sqrt((kurtosis - 1.0) / e) * true_var
    worst = np.argmax(np.abs(var - true_var) / bound)
    assert np.all(np.abs(var - true_var) < bound), (
        f"variance off at coordinate {worst}: {var[worst]:.4f} vs "
        f"{true_var[worst]:.4f} (bound {bound[worst]:.4f}, ESS {e[worst]:.0f})"
    )
    return e


def assert_same_means(draws, reference, *, k=5.0, min_ess=100):
    """Compare two MCMC runs' means: |m1 - m2| < k * sqrt(se1^2 + se2^2)."""
    draws = np.asarray(draws, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    e1, e2 = ess(draws), ess(reference)
    assert e1.min() >= min_ess, f"ESS too low: min {e1.min():.0f} < {min_ess}"
    flat1 = draws.reshape(-1, e1.size)
    flat2 = reference.reshape(-1, e2.size)
    sd = flat2.std(0)
    se = np.sqrt(sd**2 / e1 + sd**2 / e2)
    err = np.abs(flat1.mean(0) - flat2.mean(0))
    worst = np.argmax(err / se)
    assert np.all(err < k * se), (
        f"mean differs at coordinate {worst}: {flat1.mean(0)[worst]:.4f} vs "
        f"{flat2.mean(0)[worst]:.4f} (se {se[worst]:.4f})"
    )
    # spread: sd within k standard errors, se(sd) ~ sd sqrt((kurtosis - 1) / (4 ESS))
    sd1 = flat1.std(0)
    kurtosis = np.mean((flat2 - flat2.mean(0)) ** 4, 0) / sd**4
    se_sd = sd * np.sqrt((kurtosis - 1) / 4 * (1 / e1 + 1 / e2))
    assert np.all(np.abs(sd1 - sd) < k * se_sd), (
        f"sd differs: {sd1} vs {sd} (se {se_sd})"
    )
