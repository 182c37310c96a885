"""Preconditioning by an inverse mass matrix.

A :class:`Metric` holds an inverse mass matrix ``A = M^-1`` (a vector for a
diagonal matrix, a square matrix for a dense one) together with the factor
``L`` such that ``A = L^T L`` (``L = sqrt(A)`` elementwise when diagonal).
The fields follow NumPyro's :class:`~numpyro.infer.hmc_util.HMCAdaptState`
conventions (``inverse_mass_matrix``, ``mass_matrix_sqrt_inv``), so the state of
NumPyro's warm-up adapter plugs in unchanged. Everything here works on flat
vectors; the transition functions ravel pytrees at their boundary.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

__all__ = [
    "Metric",
    "metric_from_inverse_mass_matrix",
    "scale",
    "noise",
]


class Metric(NamedTuple):
    """An inverse mass matrix and its square-root factor.

    Attributes:
        inverse_mass_matrix: ``A = M^-1``, shape ``(d,)`` (diagonal) or
            ``(d, d)`` (dense).
        mass_matrix_sqrt_inv: ``L`` with ``A = L^T L`` (dense, lower triangular)
            or ``sqrt(A)`` (diagonal).
    """

    inverse_mass_matrix: Array
    mass_matrix_sqrt_inv: Array


def metric_from_inverse_mass_matrix(inverse_mass_matrix) -> Metric:
    """Build a :class:`Metric` from a diagonal (1-D) or dense (2-D) ``M^-1``.

    The dense factor is computed as NumPyro does, so a metric built here and one
    read from NumPyro's warm-up adapter are interchangeable.

    Example:
        >>> import jax.numpy as jnp
        >>> m = metric_from_inverse_mass_matrix(jnp.array([[2.0, 0.5], [0.5, 1.0]]))
        >>> bool(jnp.allclose(m.mass_matrix_sqrt_inv.T @ m.mass_matrix_sqrt_inv,
        ...                   m.inverse_mass_matrix))
        True
    """
    inverse_mass_matrix = jnp.asarray(inverse_mass_matrix)
    if inverse_mass_matrix.ndim == 1:
        return Metric(inverse_mass_matrix, jnp.sqrt(inverse_mass_matrix))
    # upper Cholesky factor by reversing rows and columns, transposed to lower
    factor = jnp.linalg.cholesky(inverse_mass_matrix[::-1, ::-1])[::-1, ::-1].T
    return Metric(inverse_mass_matrix, factor)


def scale(metric: Metric | None, vector: Array) -> Array:
    """``M^-1 v``: the preconditioned drift direction (``v`` itself for ``None``).

    Example:
        >>> import jax.numpy as jnp
        >>> scale(metric_from_inverse_mass_matrix(jnp.array([2.0, 0.5])),
        ...       jnp.ones(2)).tolist()
        [2.0, 0.5]
    """
    if metric is None:
        return vector
    if metric.inverse_mass_matrix.ndim == 1:
        return metric.inverse_mass_matrix * vector
    return metric.inverse_mass_matrix @ vector


def noise(metric: Metric | None, standard_normal: Array) -> Array:
    """Map ``z ~ N(0, I)`` to ``N(0, M^-1)``.

    Example:
        >>> import jax.numpy as jnp
        >>> noise(metric_from_inverse_mass_matrix(jnp.array([4.0, 1.0])),
        ...       jnp.ones(2)).tolist()
        [2.0, 1.0]
    """
    if metric is None:
        return standard_normal
    if metric.mass_matrix_sqrt_inv.ndim == 1:
        return metric.mass_matrix_sqrt_inv * standard_normal
    return metric.mass_matrix_sqrt_inv.T @ standard_normal
