"""Minibatch indices: distinct, each row with probability B/N, O(batch)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from numpyro_ebm.core.batches import batch_indices

DRAWS = 20_000


@pytest.mark.parametrize("num_data,batch_size", [(10, 3), (7, 7), (11, 1)])
def test_rows_are_distinct_and_equally_likely(num_data, batch_size):
    keys = jax.random.split(jax.random.key(0), DRAWS)
    idx = np.asarray(jax.vmap(lambda k: batch_indices(k, num_data, batch_size))(keys))
    assert idx.shape == (DRAWS, batch_size)
    assert idx.min() >= 0 and idx.max() < num_data
    assert all(len(set(row)) == batch_size for row in idx[:2000])
    # each row's inclusion count is Binomial(DRAWS, p); 5 sd covers every row
    p = batch_size / num_data
    counts = np.bincount(idx.ravel(), minlength=num_data)
    sd = np.sqrt(DRAWS * p * (1 - p)) + 1e-9
    assert np.all(np.abs(counts - DRAWS * p) <= 5 * sd + 1e-6), counts / DRAWS


def test_the_mean_over_a_batch_is_unbiased():
    # N / B * sum over the batch estimates the sum over the data
    values = jnp.asarray(np.random.default_rng(1).exponential(size=23))
    keys = jax.random.split(jax.random.key(2), DRAWS)
    means = jax.vmap(lambda k: values[batch_indices(k, 23, 5)].mean())(keys)
    se = float(jnp.std(means)) / np.sqrt(DRAWS)
    assert abs(float(jnp.mean(means)) - float(values.mean())) < 5 * se


def test_traced_sizes_and_no_overflow():
    f = jax.jit(lambda k, n: batch_indices(k, n, 7))
    for n in (7, 1000, 2**31 - 1):
        idx = np.asarray(f(jax.random.key(3), n)).astype(np.int64)
        assert idx.min() >= 0 and idx.max() < n and len(set(idx.tolist())) == 7


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="larger than the data"):
        batch_indices(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="positive integer"):
        batch_indices(jax.random.key(0), 3, 0)
    with pytest.raises(ValueError, match="int32"):
        batch_indices(jax.random.key(0), 2**31, 4)
