"""The Metropolis–Hastings accept/reject step, shared by every adjusted kernel."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, random

__all__ = ["MHInfo", "MHDecision", "metropolis_hastings", "select", "is_finite_tree"]


class MHInfo(NamedTuple):
    """Diagnostics of one Metropolis–Hastings step: the one info type of every
    accept/reject step in numpyro_ebm (Langevin, random walk, replica swaps).

    Attributes:
        accept_prob: ``min(1, exp(log_accept_ratio))``; 0 for a non-finite
            proposal. Unadjusted Langevin steps report the MALA acceptance
            probability their move would have had: it measures their
            discretisation error and drives warm-up adaptation.
        is_accepted: whether the chain moved.
        diverging: the proposal had a non-finite potential or gradient and was
            rejected.
    """

    accept_prob: Array
    is_accepted: Array
    diverging: Array


def is_finite_tree(*trees) -> Array:
    """True when every leaf of every tree is finite.

    Example:
        >>> import jax.numpy as jnp
        >>> bool(is_finite_tree({"a": jnp.ones(2)}, jnp.array(jnp.nan)))
        False
    """
    leaves = jax.tree.leaves(trees)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


#: the former name of :class:`MHInfo`
MHDecision = MHInfo


def metropolis_hastings(rng_key, log_accept_ratio, finite) -> MHInfo:
    """Accept with probability ``min(1, exp(log_accept_ratio))``.

    A proposal that is not ``finite`` is rejected and flagged as diverging, so a
    non-finite potential never enters the chain. The comparison is made on the
    log scale, so large ratios never overflow.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> d = metropolis_hastings(jax.random.key(0), jnp.log(0.5), jnp.array(True))
        >>> round(float(d.accept_prob), 3)
        0.5
    """
    log_accept_ratio = jnp.where(finite, log_accept_ratio, -jnp.inf)
    # NaN ratios (e.g. inf - inf) are rejections too
    log_accept_ratio = jnp.where(
        jnp.isnan(log_accept_ratio), -jnp.inf, log_accept_ratio
    )
    accept_prob = jnp.exp(jnp.minimum(log_accept_ratio, 0.0))
    log_uniform = jnp.log(random.uniform(rng_key, dtype=accept_prob.dtype))
    is_accepted = log_uniform < log_accept_ratio
    return MHInfo(accept_prob, is_accepted, ~finite)


def select(condition, new, old):
    """``new`` where ``condition`` else ``old``, leaf by leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> select(jnp.array(False), {"x": jnp.ones(2)}, {"x": jnp.zeros(2)})["x"].tolist()
        [0.0, 0.0]
    """
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)
