"""Minibatch indices in O(batch) time.

:func:`batch_indices` draws ``batch_size`` distinct row indices of a data set
of ``num_data`` rows in time and memory proportional to the batch, never to
the data: a draw without replacement by a full permutation costs O(N) per
step (0.4 s per step at 10^6 rows on a CPU), which dominates training on
large data sets.

The scheme is stratified sampling on a randomly rotated circle. With
``m = num_data // batch_size``, a uniform offset ``o`` in ``[0, num_data)``
and independent uniform ``u_b`` in ``[0, m)``, row ``b`` of the batch is::

    idx_b = (o + b * m + u_b) mod num_data

The indices are distinct, and every row is drawn with probability exactly
``batch_size / num_data``, so ``num_data / batch_size`` times a sum over the
batch is an unbiased estimate of the sum over the data. Pairs of rows are not
drawn with equal probabilities (two rows ``m`` apart are never in the same
stratum); for gradient estimates this stratification lowers the variance
when neighbouring rows are alike and otherwise changes it little.
"""

import jax
import jax.numpy as jnp
from jax import random

__all__ = ["batch_indices"]


def batch_indices(rng_key, num_data, batch_size: int):
    """``batch_size`` distinct indices into ``num_data`` rows, in O(batch).

    Args:
        rng_key: a JAX PRNG key; the indices depend on it alone.
        num_data: the number of rows (a Python int or a traced integer
            scalar).
        batch_size: the number of indices (a Python int, at most
            ``num_data``).

    Returns:
        An int32 array of shape ``(batch_size,)``; each row of the data is in
        it with probability ``batch_size / num_data``.

    Example:
        >>> import jax
        >>> idx = batch_indices(jax.random.key(0), 10, 3)
        >>> idx.shape, len(set(idx.tolist()))
        ((3,), 3)
    """
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size}.")
    if not isinstance(num_data, jax.core.Tracer):
        if int(num_data) < batch_size:
            raise ValueError(
                f"`batch_size` ({batch_size}) is larger than the data "
                f"({int(num_data)} rows)."
            )
        if int(num_data) >= 2**31:
            raise ValueError(
                f"{int(num_data)} rows do not fit int32 indices (at most 2**31 - 1)."
            )
    n = jnp.asarray(num_data, jnp.int32)
    m = n // batch_size
    key_offset, key_strata = random.split(rng_key)
    offset = random.randint(key_offset, (), 0, n, jnp.int32)
    within = random.randint(key_strata, (batch_size,), 0, m, jnp.int32)
    position = jnp.arange(batch_size, dtype=jnp.int32) * m + within  # in [0, n)
    # (offset + position) mod n without int32 overflow: both are below n
    return jnp.where(position >= n - offset, position - (n - offset), position + offset)
