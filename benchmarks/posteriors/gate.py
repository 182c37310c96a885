"""The pass/fail gate of the posterior suite.

A run passes when, over every coordinate of every latent site (constrained
values): rank-normalised split R-hat < 1.01, bulk ESS >= 400 (50 for funnels),
no divergent transition, and every mean within 2 standard errors of the
reference, the standard error being that of the difference of the two
estimates, ``sqrt(sd^2 / ESS + sd_ref^2 / n_ref)`` (tuningfork takes the
larger of the two terms); for multimodal posteriors the share of draws nearest each mode
must be within 0.03 of its weight instead.

R-hat, ESS and divergence thresholds are those of BlackJAX's public benchmark
suite ``blackjax-devs/tuningfork`` (its PASS band). Its mean test, max |z| < 2
over all coordinates, fails a correct sampler by chance with probability
``1 - 0.954**d`` when ``d`` coordinates mix alike (37% at ``d = 10``; NUTS
failed it on eight schools in one seed of three). Here each coordinate's z
uses that coordinate's own ESS, and the bound is ``max(2, z_d)`` with ``z_d``
the two-sided Bonferroni bound at 1% over the ``d`` coordinates (3.29 at
``d = 10``, 3.89 at ``d = 100``), so that a correct sampler fails the mean
test with probability at most 1% whatever the dimension (with 16 posteriors,
a 5% level would fail a correct sampler somewhere in more than half of the
runs of the suite).
"""

import dataclasses

import numpy as np
from arviz_stats.base import array_stats
from scipy.stats import norm

MAX_RHAT = 1.01
MIN_ESS = 400.0
MIN_ESS_FUNNEL = 50.0
#: the z bound never drops below this
MIN_Z_BOUND = 2.0
#: chance that a correct sampler fails the mean test
MEAN_TEST_LEVEL = 0.01
MAX_MODE_ERROR = 0.03


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The gate's figures and what failed (``failed`` is empty on a pass)."""

    max_rhat: float
    min_ess: float
    divergences: int
    max_z: float | None
    mode_error: float | None
    failed: tuple

    @property
    def passed(self):
        return not self.failed

    def describe(self):
        return "pass" if self.passed else "FAIL: " + ", ".join(self.failed)


def z_bound(num_coordinates):
    """The mean test's bound on max |z| over ``num_coordinates``."""
    return max(
        MIN_Z_BOUND, float(norm.ppf(1 - MEAN_TEST_LEVEL / (2 * num_coordinates)))
    )


def coordinates(samples):
    """``(chains, draws, coordinates)`` from a dict of ``(chains, draws, ...)``
    arrays, sites in sorted order."""
    return np.concatenate(
        [
            np.asarray(samples[k], np.float64).reshape(*np.shape(samples[k])[:2], -1)
            for k in sorted(samples)
        ],
        axis=-1,
    )


def mode_weights(x, locs):
    """Share of draws ``x`` (``(..., d)``) nearest each of the ``locs``."""
    x = np.asarray(x, np.float64).reshape(-1, locs.shape[-1])
    nearest = np.argmin(((x[:, None, :] - locs[None]) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, minlength=len(locs)) / len(x)


def evaluate(posterior, samples, divergences=0):
    """The :class:`Verdict` on ``samples`` (``{site: (chains, draws, ...)}``)."""
    x = coordinates(samples)
    ess = np.asarray(array_stats.ess(x, chain_axis=0, draw_axis=1, method="bulk"))
    rhat = np.asarray(array_stats.rhat(x, chain_axis=0, draw_axis=1))
    max_rhat = float(np.nanmax(rhat)) if np.all(np.isfinite(rhat)) else np.inf
    min_ess = float(np.nanmin(ess)) if np.all(np.isfinite(ess)) else 0.0
    failed = []
    if not max_rhat < MAX_RHAT:
        failed.append(f"R-hat {max_rhat:.3g}")
    bar = MIN_ESS_FUNNEL if "funnel" in posterior.tags else MIN_ESS
    if not min_ess >= bar:
        failed.append(f"ESS {min_ess:.0f}")
    if divergences:
        failed.append(f"{divergences} divergences")
    max_z = mode_error = None
    if "multimodal" in posterior.tags:
        weights, locs = posterior.modes
        mode_error = float(np.max(np.abs(mode_weights(samples["x"], locs) - weights)))
        if not mode_error <= MAX_MODE_ERROR:
            failed.append(f"mode weights off by {mode_error:.2f}")
    else:
        ref = posterior.reference()
        sites = sorted(samples)
        mean = np.concatenate([np.ravel(ref[k]["mean"]) for k in sites])
        sd = np.concatenate([np.ravel(ref[k]["sd"]) for k in sites])
        n = np.concatenate(
            [
                np.broadcast_to(ref[k]["n"], np.shape(ref[k]["mean"])).ravel()
                for k in sites
            ]
        )
        flat = x.reshape(-1, x.shape[-1])
        # the standard error of the difference of two independent estimates
        se = np.sqrt(flat.var(0) / np.maximum(ess, 1.0) + sd**2 / n)
        z = np.abs(flat.mean(0) - mean) / np.where(se > 0, se, 1.0)
        max_z = float(np.max(z)) if np.all(np.isfinite(z)) else np.inf
        if not max_z < z_bound(len(z)):
            failed.append(f"|z| {max_z:.1f}")
    return Verdict(
        max_rhat, min_ess, int(divergences), max_z, mode_error, tuple(failed)
    )
