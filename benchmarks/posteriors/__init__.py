"""The posterior benchmark suite: standard posteriors as NumPyro models, with
their data and reference moments.

``POSTERIORS`` maps a name to a :class:`Posterior`. References are exact where
the moments are known in closed form (Gaussians, mixtures, the funnel) and
otherwise come from long NUTS runs in double precision, written by
``python -m benchmarks.posteriors.references`` to ``references.json``.
"""

import dataclasses
import functools
import json
import os
from collections.abc import Callable

import numpy as np

import jax.numpy as jnp

from benchmarks.posteriors import data, models

REFERENCE_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "references.json"
)


@dataclasses.dataclass(frozen=True)
class Posterior:
    """One benchmark posterior.

    Attributes:
        name: its key in ``POSTERIORS``.
        model: a NumPyro model taking ``**kwargs()``.
        kwargs: returns the model's keyword arguments (its data).
        description: one line for the tables.
        tags: ``"funnel"`` (the ESS bar is 50, as in tuningfork),
            ``"multimodal"`` (mode weights replace the mean z-score).
        exact: returns the exact reference ``{site: {"mean", "sd"}}``, or
            ``None`` when the reference is a stored NUTS run.
        modes: for multimodal posteriors, ``(weights, locs)`` of the
            components, whose weights the gate checks.
    """

    name: str
    model: Callable
    kwargs: Callable
    description: str
    tags: tuple = ()
    exact: Callable | None = None
    modes: tuple | None = None

    def reference(self):
        """``{site: {"mean": array, "sd": array, "n": effective draws}}``
        (``n`` is infinite for exact references)."""
        if self.exact is not None:
            return {
                site: {**stats, "n": np.inf} for site, stats in self.exact().items()
            }
        stored = _stored_references()
        if self.name not in stored:
            raise KeyError(
                f"no reference for {self.name!r}: run "
                "`python -m benchmarks.posteriors.references` first."
            )
        return {
            site: {k: np.asarray(v) for k, v in stats.items()}
            for site, stats in stored[self.name]["sites"].items()
        }


@functools.cache
def _stored_references():
    if not os.path.exists(REFERENCE_FILE):
        return {}
    with open(REFERENCE_FILE) as f:
        return json.load(f)


def _as_jax(arrays):
    return {
        k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in arrays.items()
    }


# ---------------------------------------------------------------- entries
SCALES_100 = np.geomspace(1e-2, 1e2, 100)

MIX25_LOCS = np.array(
    [(x, y) for x in range(-10, 11, 5) for y in range(-10, 11, 5)], float
)
MIX25_WEIGHTS = np.full(25, 1 / 25)
MIX25_SCALE = 0.5

BIMODAL_LOCS = np.array([np.full(5, -3.0), np.full(5, 3.0)])
BIMODAL_WEIGHTS = np.array([0.7, 0.3])


def _mixture_moments(weights, locs, scale):
    mean = weights @ locs
    second = weights @ (locs**2) + scale**2
    return {"x": {"mean": mean, "sd": np.sqrt(second - mean**2)}}


def _rotated_kwargs():
    cov = data.load("rotated_gaussian")["covariance"]
    return {"scale_tril": jnp.asarray(np.linalg.cholesky(cov), jnp.float32)}


def _rotated_exact():
    cov = data.load("rotated_gaussian")["covariance"]
    return {"x": {"mean": np.zeros(len(cov)), "sd": np.sqrt(np.diag(cov))}}


def _loaded(name, **extra):
    def kwargs():
        arrays = data.load(name)
        return {**_as_jax(arrays), **{k: f(arrays) for k, f in extra.items()}}

    return kwargs


_ENTRIES = [
    Posterior(
        "gaussian_10d",
        models.gaussian,
        lambda: {"scale": jnp.ones(10)},
        "10-d standard Gaussian",
        exact=lambda: {"x": {"mean": np.zeros(10), "sd": np.ones(10)}},
    ),
    Posterior(
        "badly_scaled_gaussian_100d",
        models.gaussian,
        lambda: {"scale": jnp.asarray(SCALES_100, jnp.float32)},
        "100-d diagonal Gaussian, sd 0.01..100",
        exact=lambda: {"x": {"mean": np.zeros(100), "sd": SCALES_100}},
    ),
    Posterior(
        "rotated_gaussian_50d",
        models.rotated_gaussian,
        _rotated_kwargs,
        "50-d ill-conditioned Gaussian, variances 0.01..100, rotated",
        exact=_rotated_exact,
    ),
    Posterior(
        "eight_schools_noncentered",
        models.eight_schools_noncentered,
        lambda: _as_jax(data.EIGHT_SCHOOLS),
        "eight schools, non-centred (10-d)",
    ),
    Posterior(
        "logistic_regression",
        models.logistic_regression,
        _loaded("logistic_regression"),
        "logistic regression, synthetic 1000 x 10",
    ),
    Posterior(
        "breast_cancer_logistic",
        models.logistic_regression,
        lambda: _as_jax(data.breast_cancer()),
        "logistic regression, breast cancer 569 x 31 (real data, 31-d)",
    ),
    Posterior(
        "diabetes_linear",
        models.linear_regression,
        lambda: _as_jax(data.diabetes()),
        "linear regression, diabetes 442 x 10 (real data, 12-d)",
    ),
    Posterior(
        "hierarchical_logistic",
        models.hierarchical_logistic_regression,
        _loaded("hierarchical_logistic_regression", num_groups=lambda a: 10),
        "hierarchical logistic regression, 10 groups (48-d)",
    ),
    Posterior(
        "radon_hierarchical",
        models.radon_hierarchical,
        _loaded("radon_hierarchical"),
        "radon-style varying intercepts, 85 counties (90-d)",
    ),
    Posterior(
        "item_response_2pl",
        models.item_response_2pl,
        _loaded(
            "item_response_2pl",
            num_students=lambda a: a["correct"].shape[0],
            num_items=lambda a: a["correct"].shape[1],
        ),
        "2PL item response, 100 students x 20 items (141-d)",
    ),
    Posterior(
        "stochastic_volatility",
        models.stochastic_volatility,
        _loaded("stochastic_volatility"),
        "stochastic volatility, 200 returns (203-d)",
    ),
    Posterior(
        "horseshoe_logistic",
        models.horseshoe_logistic,
        _loaded("horseshoe_logistic"),
        "horseshoe logistic regression, 100 x 25 (52-d)",
    ),
    Posterior(
        "brownian_motion",
        models.brownian_motion,
        _loaded("brownian_motion"),
        "Brownian motion, middle third unobserved (32-d)",
    ),
    Posterior(
        "funnel_10d",
        models.funnel,
        lambda: {"dim": 10},
        "Neal's funnel, centred (10-d)",
        tags=("funnel",),
        exact=lambda: {
            "v": {"mean": np.zeros(()), "sd": np.full((), 3.0)},
            "x": {"mean": np.zeros(9), "sd": np.full(9, np.exp(9 / 4))},
        },
    ),
    Posterior(
        "mixture_25",
        models.gaussian_mixture,
        lambda: {
            "weights": jnp.asarray(MIX25_WEIGHTS, jnp.float32),
            "locs": jnp.asarray(MIX25_LOCS, jnp.float32),
            "scale": MIX25_SCALE,
        },
        "25 Gaussian modes on a 5 x 5 grid, 10 sd apart",
        tags=("multimodal",),
        exact=lambda: _mixture_moments(MIX25_WEIGHTS, MIX25_LOCS, MIX25_SCALE),
        modes=(MIX25_WEIGHTS, MIX25_LOCS),
    ),
    Posterior(
        "bimodal_unequal",
        models.gaussian_mixture,
        lambda: {
            "weights": jnp.asarray(BIMODAL_WEIGHTS, jnp.float32),
            "locs": jnp.asarray(BIMODAL_LOCS, jnp.float32),
            "scale": 1.0,
        },
        "two 5-d Gaussian modes, weights 0.7 / 0.3, 13 sd apart",
        tags=("multimodal",),
        exact=lambda: _mixture_moments(BIMODAL_WEIGHTS, BIMODAL_LOCS, 1.0),
        modes=(BIMODAL_WEIGHTS, BIMODAL_LOCS),
    ),
]

POSTERIORS = {p.name: p for p in _ENTRIES}

__all__ = ["Posterior", "POSTERIORS"]
