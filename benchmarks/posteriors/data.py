"""Data of the benchmark posteriors.

Synthetic data sets are drawn once by ``python -m benchmarks.posteriors.data``
(seeded NumPy) and stored as small ``.npz`` files beside this module, so that
every run and every reference sees the same numbers. Two real data sets are
read from scikit-learn's bundled copies (``sklearn.datasets``): Wisconsin
diagnostic breast cancer (569 x 30) and diabetes (442 x 10); eight schools is
written out below.
"""

import os

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

EIGHT_SCHOOLS = {
    "y": np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
    "sigma": np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
}


def _standardise(X):
    return (X - X.mean(0)) / X.std(0)


# ------------------------------------------------------- synthetic draws
def _logistic(rng, num_data=1000, dim=10):
    X = rng.normal(size=(num_data, dim))
    coef = rng.normal(size=dim) * 0.5
    y = rng.uniform(size=num_data) < 1 / (1 + np.exp(-X @ coef))
    return {"X": X.astype(np.float32), "y": y.astype(np.int8)}


def _rotation(rng, dim):
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def _rotated_gaussian(rng, dim=50):
    # variances log-spaced over four decades, in a random orthonormal basis
    variances = np.geomspace(1e-2, 1e2, dim)
    q = _rotation(rng, dim)
    cov = (q * variances) @ q.T
    return {"covariance": cov}


def _hierarchical_logistic(rng, num_data=500, num_groups=10, k=3):
    X = rng.normal(size=(num_data, k))
    group = rng.integers(num_groups, size=num_data)
    mu = np.array([0.5, 1.0, -0.5, 0.25])
    tau = np.array([0.5, 0.3, 0.3, 0.2])
    beta = mu + tau * rng.normal(size=(num_groups, k + 1))
    logits = beta[group, 0] + np.sum(X * beta[group, 1:], axis=-1)
    y = rng.uniform(size=num_data) < 1 / (1 + np.exp(-logits))
    return {
        "X": X.astype(np.float32),
        "y": y.astype(np.int8),
        "group": group.astype(np.int32),
    }


def _radon(rng, num_counties=85, num_houses=919):
    # sizes of the Minnesota data of Gelman & Hill (2007); values simulated
    county = np.sort(rng.integers(num_counties, size=num_houses))
    log_uranium = rng.normal(0.0, 0.35, size=num_counties)
    floor = (rng.uniform(size=num_houses) < 0.17).astype(np.float32)
    a = 1.45 + 0.7 * log_uranium + 0.15 * rng.normal(size=num_counties)
    log_radon = a[county] - 0.65 * floor + 0.75 * rng.normal(size=num_houses)
    return {
        "log_radon": log_radon.astype(np.float32),
        "floor": floor,
        "county": county.astype(np.int32),
        "log_uranium": log_uranium.astype(np.float32),
    }


def _item_response(rng, num_students=100, num_items=20):
    ability = rng.normal(size=num_students)
    difficulty = rng.normal(size=num_items)
    discrimination = np.exp(0.5 * rng.normal(size=num_items))
    logits = discrimination * (0.75 + ability[:, None] - difficulty)
    correct = rng.uniform(size=logits.shape) < 1 / (1 + np.exp(-logits))
    return {"correct": correct.astype(np.int8)}


def _stochastic_volatility(rng, T=200):
    mu, phi, sigma = -1.0, 0.95, 0.25
    h = np.empty(T)
    h[0] = mu + sigma / np.sqrt(1 - phi**2) * rng.normal()
    for t in range(1, T):
        h[t] = mu + phi * (h[t - 1] - mu) + sigma * rng.normal()
    return {"returns": (np.exp(h / 2) * rng.normal(size=T)).astype(np.float32)}


def _horseshoe(rng, num_data=100, dim=25):
    X = rng.normal(size=(num_data, dim))
    coef = np.zeros(dim)
    coef[:3] = [2.0, -1.5, 1.0]
    y = rng.uniform(size=num_data) < 1 / (1 + np.exp(-(0.3 + X @ coef)))
    return {"X": X.astype(np.float32), "y": y.astype(np.int8)}


def _brownian(rng, T=30):
    x = np.cumsum(0.1 * rng.normal(size=T))
    observations = x + 0.15 * rng.normal(size=T)
    observed = np.ones(T, bool)
    observed[10:20] = False
    return {"observations": observations.astype(np.float32), "observed": observed}


GENERATORS = {
    "logistic_regression": _logistic,
    "rotated_gaussian": _rotated_gaussian,
    "hierarchical_logistic_regression": _hierarchical_logistic,
    "radon_hierarchical": _radon,
    "item_response_2pl": _item_response,
    "stochastic_volatility": _stochastic_volatility,
    "horseshoe_logistic": _horseshoe,
    "brownian_motion": _brownian,
}


def make_all():
    """Draw every synthetic data set (seed = its position) and write it."""
    os.makedirs(DATA_DIR, exist_ok=True)
    for seed, (name, generate) in enumerate(GENERATORS.items()):
        arrays = generate(np.random.default_rng(seed))
        np.savez_compressed(os.path.join(DATA_DIR, f"{name}.npz"), **arrays)


def load(name):
    """The stored arrays of a synthetic data set, as a dict."""
    with np.load(os.path.join(DATA_DIR, f"{name}.npz")) as f:
        return dict(f)


# -------------------------------------------------------- bundled real data
def breast_cancer():
    """Wisconsin diagnostic breast cancer (scikit-learn): standardised
    features with an intercept column, and the labels."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = np.concatenate([np.ones((X.shape[0], 1)), _standardise(X)], axis=1)
    return {"X": X.astype(np.float32), "y": y.astype(np.int8)}


def diabetes():
    """The diabetes regression data (scikit-learn), standardised."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return {
        "X": _standardise(X).astype(np.float32),
        "y": ((y - y.mean()) / y.std()).astype(np.float32),
    }


if __name__ == "__main__":
    make_all()
    for name in GENERATORS:
        size = os.path.getsize(os.path.join(DATA_DIR, f"{name}.npz"))
        print(f"{name:35s} {size / 1024:7.1f} KiB")
