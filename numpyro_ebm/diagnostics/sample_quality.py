"""Sample-quality measures for unnormalised models.

These functions score samples (from a sampler, or a trained energy-based model)
without the normalising constant:

* :func:`kernel_stein_discrepancy` measures how far ``samples`` are from a
  target known only through its score ``grad log pi``; it uses the
  inverse-multiquadric (IMQ) kernel, for which the discrepancy detects
  non-convergence (Gorham & Mackey, 2017).
* :func:`mmd` is the two-sample maximum mean discrepancy with a Gaussian
  kernel (Gretton et al., 2012), for comparing model samples with data.

The pairwise statistics never build an ``(n, n)`` or ``(n, n, d)`` array: rows
are processed ``batch_size`` at a time with :func:`jax.lax.map`, so the memory is
``O(n * batch_size)`` (plus a fixed 1000 x 1000 block for the median-heuristic
bandwidth of :func:`mmd`). Both functions can be called under
:func:`jax.jit` (the score function closed over, ``batch_size`` static) and :func:`jax.vmap`; the checks that need concrete values
(finiteness, positivity of traced hyper-parameters) are skipped for traced
arguments.

A caveat that holds for every score-based measure, the kernel Stein discrepancy
included: the score does not see the relative weights of well-separated modes,
so samples that miss an isolated mode can have a near-zero discrepancy. For
``0.5 N(-3, 1) + 0.5 N(3, 1)`` and samples from ``N(3, 1)`` only, the IMQ
``KSD^2`` is about ``1.4e-4``, below the sampling noise at ``n = 500``. A
two-sample :func:`mmd` against reference samples is not blind to the mixing
proportions.

References:
    Wenliang, L. K. and Kanagawa, H. (2020). Blindness of score-based methods
    to isolated components and mixing proportions. arXiv preprint.
"""

import functools

import numpy as np

import jax
import jax.numpy as jnp
from jax import Array

from numpyro_ebm.core import validation

__all__ = ["kernel_stein_discrepancy", "mmd"]

_BLOCK_ELEMENTS = 2**20
# The median heuristic uses at most this many pooled points (an evenly strided
# subset), so it needs O(1) memory in the sample size.
_MEDIAN_MAX_POINTS = 1000


# ---------------------------------------------------------------- validation


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _as_samples(samples, name: str, *, min_samples: int = 2) -> Array:
    """``samples`` as a floating (n, d) array, after shape and finiteness checks."""
    samples = jnp.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (num_samples, dim); got shape "
            f"{samples.shape}."
        )
    if samples.shape[0] < min_samples:
        raise ValueError(
            f"{name} needs at least {min_samples} samples; got {samples.shape[0]}."
        )
    if samples.shape[1] < 1:
        raise ValueError(f"{name} must have at least one dimension; got shape (n, 0).")
    if not jnp.issubdtype(samples.dtype, jnp.floating):
        samples = samples.astype(jnp.result_type(float))
    if _is_concrete(samples) and not bool(jnp.all(jnp.isfinite(samples))):
        raise ValueError(f"{name} contains non-finite values (nan or inf).")
    return samples


def _finite_result(name: str, value, cause: str):
    """Refuse a non-finite result (when it is concrete) with its likely cause."""
    if _is_concrete(value) and not bool(jnp.all(jnp.isfinite(value))):
        raise FloatingPointError(f"{name} is not finite ({value}): {cause}")
    return value


def _batch_size(batch_size, num_rows: int, num_cols: int) -> int:
    """The validated row-block size, or an automatic one for ``None``."""
    if batch_size is None:
        return max(1, min(num_rows, _BLOCK_ELEMENTS // max(num_cols, 1)))
    return min(validation.positive_integer("batch_size", batch_size), num_rows)


def _blocked_row_sums(row_fn, rows, batch_size: int) -> Array:
    """Sum over rows of ``row_fn(row) -> (m,)``, ``batch_size`` rows at a time."""
    row_sums = jax.lax.map(
        lambda row: jnp.sum(row_fn(row)), rows, batch_size=batch_size
    )
    return jnp.sum(row_sums)


def _sq_dists_to(a: Array, a_sq_norm: Array, b: Array, b_sq_norms: Array) -> Array:
    """``|a - b_j|^2`` for every row ``b_j`` of ``b``, clipped at zero.

    Uses ``|a|^2 + |b|^2 - 2 a.b`` so that a row block costs ``O(n)`` memory and
    not ``O(n d)``; callers centre the points first to limit cancellation.
    """
    return jnp.maximum(a_sq_norm + b_sq_norms - 2.0 * (b @ a), 0.0)


# ------------------------------------------------------ kernel Stein discrepancy


def _imq_stein_row(x, s, xs, ss, xs_sq_norms, ss_dot_xs, c, beta):
    """The IMQ Stein kernel ``k_p(x, y_j)`` between one point and all ``xs``.

    With ``r = x - y``, ``u = c^2 + |r|^2`` and ``k = u^beta``:

    * ``grad_x k = 2 beta u^(beta-1) r`` and ``grad_y k = -grad_x k``;
    * ``tr(grad_x grad_y k) = -2 beta d u^(beta-1)
      - 4 beta (beta-1) u^(beta-2) |r|^2``;

    so ``k_p = s_x.s_y u^beta + 2 beta u^(beta-1) (s_y - s_x).r
    + tr(grad_x grad_y k)``.

    Args:
        x: the point, shape (d,).
        s: its score, shape (d,).
        xs: the other points ``y_j``, shape (n, d).
        ss: their scores, shape (n, d).
        xs_sq_norms: ``|y_j|^2``, shape (n,).
        ss_dot_xs: ``s_j . y_j``, shape (n,).
        c: IMQ scale.
        beta: IMQ exponent.

    Returns:
        ``k_p(x, y_j)`` for all ``j``, shape (n,).
    """
    dim = x.shape[-1]
    r_sq = _sq_dists_to(x, x @ x, xs, xs_sq_norms)
    u = c**2 + r_sq
    u_bm2 = u ** (beta - 2.0)
    u_bm1 = u_bm2 * u
    u_b = u_bm1 * u
    # (s_y - s_x).(x - y) = [s_y.x - s_y.y] - [s_x.x - s_x.y]
    score_diff_dot_r = (ss @ x - ss_dot_xs) - (s @ x - xs @ s)
    trace = -2.0 * beta * dim * u_bm1 - 4.0 * beta * (beta - 1.0) * u_bm2 * r_sq
    return (ss @ s) * u_b + 2.0 * beta * u_bm1 * score_diff_dot_r + trace


def kernel_stein_discrepancy(
    samples, score_fn, *, c=1.0, beta=-0.5, unbiased=True, batch_size=None
) -> Array:
    """Squared kernel Stein discrepancy of ``samples`` with the IMQ kernel.

    With the base kernel ``k(x, y) = (c^2 + |x - y|^2)^beta`` and the score
    ``s = grad log pi`` of the target, the Langevin Stein kernel is::

        k_p(x, y) = s(x).s(y) k + s(x).grad_y k + s(y).grad_x k
                    + tr(grad_x grad_y k)

    and ``KSD^2 = E_{x, y ~ q}[k_p(x, y)]``, which vanishes when the sample law
    ``q`` equals ``pi``. Only the score is needed, so ``pi`` may be
    unnormalised. The closed-form derivatives of the IMQ kernel are used (see
    the source). With ``beta`` in ``(-1, 0)`` the discrepancy also detects
    non-convergence: it goes to zero only if the samples converge to ``pi``
    (Gorham & Mackey, 2017, for distantly dissipative targets with a Lipschitz
    score). Score-based, it is insensitive to the weights of well-separated
    modes (see the module notes).

    The estimate is the U-statistic ``sum_{i != j} k_p(x_i, x_j) / (n (n - 1))``
    (``unbiased=True``: zero mean for exact samples, so it can be slightly
    negative) or the V-statistic ``sum_{i, j} k_p(x_i, x_j) / n^2`` (always
    non-negative, biased upwards by ``O(1/n)``). The score is evaluated once;
    the ``n^2`` kernel terms are summed ``batch_size`` rows at a time.

    Args:
        samples: points, shape (n, d) with ``n >= 2``.
        score_fn: batched score, maps (n, d) to (n, d), e.g.
            ``jax.vmap(jax.grad(log_density))`` or ``-grad_energy``.
        c: positive IMQ scale (a length scale of the kernel).
        beta: IMQ exponent in ``(-1, 0)``.
        unbiased: U-statistic (``True``) or V-statistic (``False``).
        batch_size: rows per block; memory is ``O(n * batch_size)``. ``None``
            chooses about ``2**20 / n`` rows. Does not change the result beyond
            floating-point rounding.

    Returns:
        The estimate of ``KSD^2``, a scalar.

    Raises:
        ValueError: for samples that are not 2-D, fewer than 2 samples,
            non-finite samples, a score of the wrong shape, ``c <= 0``,
            ``beta`` outside ``(-1, 0)`` or a non-positive ``batch_size``.

    Example:
        >>> import jax
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (500, 2))
        >>> exact = kernel_stein_discrepancy(x, lambda x: -x)  # N(0, I) score
        >>> too_wide = kernel_stein_discrepancy(1.5 * x, lambda x: -x)
        >>> bool(too_wide > 10 * abs(exact))
        True

    References:
        Gorham, J. and Mackey, L. (2017). Measuring sample quality with kernels.
        ICML.

        Liu, Q., Lee, J. D. and Jordan, M. I. (2016). A kernelized Stein
        discrepancy for goodness-of-fit tests. ICML.
    """
    samples = _as_samples(samples, "samples")
    validation.positive("c", c)
    if _is_concrete(beta) and not -1.0 < float(beta) < 0.0:
        raise ValueError(f"beta must lie in the open interval (-1, 0); got {beta}.")
    n, dim = samples.shape
    batch_size = _batch_size(batch_size, n, n)

    scores = jnp.asarray(score_fn(samples))
    if scores.shape != samples.shape:
        raise ValueError(
            f"score_fn must map samples of shape {samples.shape} to scores of the "
            f"same shape; got {scores.shape}."
        )
    if _is_concrete(scores) and not bool(jnp.all(jnp.isfinite(scores))):
        bad = int(jnp.sum(~jnp.all(jnp.isfinite(scores), axis=1)))
        raise FloatingPointError(
            f"score_fn returned non-finite scores at {bad} of the {n} samples."
        )
    dtype = jnp.result_type(samples.dtype, scores.dtype)
    u_stat, v_stat = _ksd_from_scores(
        samples.astype(dtype),
        scores.astype(dtype),
        jnp.asarray(c, dtype),
        jnp.asarray(beta, dtype),
        batch_size=batch_size,
    )
    return u_stat if unbiased else v_stat


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _ksd_from_scores(samples, scores, c, beta, *, batch_size):
    """The U- and V-statistics (both are cheap once the off-diagonal sum is)."""
    n, dim = samples.shape
    # k_p depends on the points only through differences, so centring is exact
    # and keeps |x|^2 + |y|^2 - 2 x.y accurate.
    xs = samples - jnp.mean(samples, axis=0)
    xs_sq_norms = jnp.sum(xs * xs, axis=1)
    ss_dot_xs = jnp.sum(scores * xs, axis=1)
    cols = jnp.arange(n)

    def row_fn(row):
        x, s, i = row
        k_row = _imq_stein_row(x, s, xs, scores, xs_sq_norms, ss_dot_xs, c, beta)
        return jnp.where(cols == i, 0.0, k_row)  # diagonal added exactly below

    off_diagonal = _blocked_row_sums(row_fn, (xs, scores, cols), batch_size)
    # k_p(x, x) = |s(x)|^2 c^(2 beta) - 2 beta d c^(2 beta - 2)
    diagonal = jnp.sum(scores * scores) * c ** (2.0 * beta) - (
        2.0 * beta * dim * n * c ** (2.0 * beta - 2.0)
    )
    return off_diagonal / (n * (n - 1)), (off_diagonal + diagonal) / n**2


# ------------------------------------------------------- maximum mean discrepancy


def _kth_smallest(values: Array, mask: Array, k: int) -> Array:
    """The ``k``-th smallest (1-based) non-negative entry of ``values[mask]``.

    Bisection on the bit patterns, which order non-negative floats like the
    values: exact, and much faster than a sort on CPU.
    """
    int_dtype = jnp.int64 if values.dtype == jnp.float64 else jnp.int32
    values = values.astype(jnp.float64 if int_dtype == jnp.int64 else jnp.float32)
    bits = jax.lax.bitcast_convert_type(values, int_dtype)
    num_bits = 64 if int_dtype == jnp.int64 else 32

    def halve(_, interval):
        lo, hi = interval
        mid = lo + (hi - lo) // 2
        enough = jnp.sum((bits <= mid) & mask) >= k
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    # 0 is the pattern of +0.0; the maximum of the masked patterns bounds the rest
    start = (jnp.zeros((), int_dtype), jnp.max(jnp.where(mask, bits, 0)))
    lo, _ = jax.lax.fori_loop(0, num_bits, halve, start)
    return jax.lax.bitcast_convert_type(lo, values.dtype)


def _median_pairwise_distance(z: Array) -> Array:
    """Median distance between distinct points of (a strided subset of) ``z``."""
    num = z.shape[0]
    if num > _MEDIAN_MAX_POINTS:
        z = z[np.round(np.linspace(0, num - 1, _MEDIAN_MAX_POINTS)).astype(int)]
        num = _MEDIAN_MAX_POINTS
    z = z - jnp.mean(z, axis=0)
    sq_norms = jnp.sum(z * z, axis=1)
    sq_dists = jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * z @ z.T, 0.0)
    upper = jnp.asarray(np.triu(np.ones((num, num), dtype=bool), k=1))
    num_pairs = num * (num - 1) // 2
    lower_middle = _kth_smallest(sq_dists, upper, (num_pairs + 1) // 2)
    if num_pairs % 2:
        return jnp.sqrt(lower_middle)
    # even count: average with the next order statistic (possibly a tie)
    tied = jnp.sum((sq_dists <= lower_middle) & upper) > num_pairs // 2
    above = jnp.min(jnp.where(upper & (sq_dists > lower_middle), sq_dists, jnp.inf))
    upper_middle = jnp.where(tied, lower_middle, above)
    return 0.5 * (jnp.sqrt(lower_middle) + jnp.sqrt(upper_middle))


def mmd(x, y, *, bandwidth=None, unbiased=True, batch_size=None) -> Array:
    """Squared maximum mean discrepancy between two samples, Gaussian kernel.

    With ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``, ``x`` of size ``m``
    and ``y`` of size ``n``, the unbiased estimate (Gretton et al., 2012,
    Lemma 6) is::

        MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1))
                  + sum_{i != j} k(y_i, y_j) / (n (n - 1))
                  - 2 sum_{i, j} k(x_i, y_j) / (m n)

    (zero mean when both samples come from the same law, so it can be slightly
    negative); ``unbiased=False`` gives the V-statistic, with the diagonals
    included and ``m^2``, ``n^2`` as denominators (biased, non-negative).

    Args:
        x: first sample, shape (m, d) with ``m >= 2``.
        y: second sample, shape (n, d) with ``n >= 2``.
        bandwidth: positive kernel length scale. ``None`` uses the median
            heuristic: the median distance between distinct points of the
            pooled sample (of an evenly strided subset of at most 1000 pooled
            points, to keep memory bounded; 1.0 if that median is zero).
        unbiased: U-statistic (``True``) or V-statistic (``False``).
        batch_size: rows per block; memory is ``O((m + n) * batch_size)``.
            ``None`` chooses it automatically.

    Returns:
        The estimate of ``MMD^2``, a scalar.

    Raises:
        ValueError: for samples that are not 2-D, fewer than 2 points in either
            sample, different dimensions, non-finite values, ``bandwidth <= 0``
            or a non-positive ``batch_size``.

    Example:
        >>> import jax
        >>> kx, ky = jax.random.split(jax.random.PRNGKey(0))
        >>> x = jax.random.normal(kx, (300, 2))
        >>> y = jax.random.normal(ky, (300, 2))
        >>> same = mmd(x, y)
        >>> shifted = mmd(x, y + 1.0)
        >>> bool(shifted > 10 * abs(same))
        True

    References:
        Gretton, A., Borgwardt, K. M., Rasch, M. J., Schölkopf, B. and Smola, A.
        (2012). A kernel two-sample test. Journal of Machine Learning Research,
        13, 723-773.
    """
    x = _as_samples(x, "x")
    y = _as_samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension; got x of shape {x.shape} and "
            f"y of shape {y.shape}."
        )
    m, n = x.shape[0], y.shape[0]
    batch_size = _batch_size(batch_size, max(m, n), max(m, n))
    dtype = jnp.result_type(x.dtype, y.dtype)
    if bandwidth is not None:
        validation.positive("bandwidth", bandwidth)
        bandwidth = jnp.asarray(bandwidth, dtype)
    u_stat, v_stat = _mmd_core(
        x.astype(dtype), y.astype(dtype), bandwidth, batch_size=batch_size
    )
    return u_stat if unbiased else v_stat


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _mmd_core(x, y, bandwidth, *, batch_size):
    """The U- and V-statistics (both are cheap once the kernel sums are)."""
    m, n = x.shape[0], y.shape[0]
    # the kernel depends on differences only: centre on the pooled mean
    centre = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (m + n)
    x, y = x - centre, y - centre
    if bandwidth is None:
        bandwidth = _median_pairwise_distance(jnp.concatenate([x, y]))
        bandwidth = jnp.where(bandwidth > 0, bandwidth, 1.0)
    scale = -0.5 / bandwidth**2

    def kernel_sum(a, b, exclude_diagonal):
        b_sq_norms = jnp.sum(b * b, axis=1)
        cols = jnp.arange(b.shape[0])

        def row_fn(row):
            a_i, i = row
            k_row = jnp.exp(scale * _sq_dists_to(a_i, a_i @ a_i, b, b_sq_norms))
            return jnp.where(cols == i, 0.0, k_row) if exclude_diagonal else k_row

        rows = (a, jnp.arange(a.shape[0]))
        return _blocked_row_sums(row_fn, rows, min(batch_size, a.shape[0]))

    sum_xx = kernel_sum(x, x, True)  # diagonal k(x_i, x_i) = 1 excluded
    sum_yy = kernel_sum(y, y, True)
    sum_xy = kernel_sum(x, y, False)
    cross = 2.0 * sum_xy / (m * n)
    u_stat = sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - cross
    v_stat = (sum_xx + m) / m**2 + (sum_yy + n) / n**2 - cross
    return u_stat, v_stat
