"""Warm-up adaptation from one or many chains: step size and mass matrix.

The scheme is Stan's windowed adaptation as NumPyro implements it
(:func:`numpyro.infer.hmc_util.warmup_adapter`, whose initial state, dual
averaging, Welford estimator, window schedule and regularisation are reused
here), with three changes:

- **Pooled over chains.** :func:`window_adapter`'s update takes the
  acceptance probabilities and positions of every chain that shares the
  adaptation: one step size is tuned by dual averaging on their mean
  acceptance, and one mass matrix is estimated from all their draws
  (Chan et al.'s pairwise Welford update). With ``C`` vectorized chains each
  window has ``C`` times the draws, so more chains give a better estimate in
  the same warm-up, and the step sizes of a run cannot differ between chains.
  With one chain it is the per-chain scheme.
- **Dense estimates shrunk towards the previous one.** A window of ``n``
  draws in ``d`` dimensions gives a rank-deficient sample covariance when
  ``n <= d`` (Stan's first window has 25 draws), and directions it missed
  come out with variance ~1e-5 (the regulariser alone): the mass matrix then
  freezes the chain in them. The estimate is ``(1 - w) S + w A`` with ``A``
  the inverse mass matrix in use and ``w = d / (n + d)``: unseen directions
  keep ``A``'s scale, and ``w -> 0`` as windows grow. (Shrinking towards
  ``diag(S)`` instead inflates the small directions of a rotated,
  ill-conditioned target: by 10x at condition number 1e4.)
- **Stragglers restarted.** :func:`restart_stragglers` moves chains whose
  potential energy is far above the others' (stuck where they started) to
  the positions of randomly chosen other chains, at the window ends in the
  first half of the warm-up; used only with pooled chains.

References:
    1. Stan Development Team, *Stan Reference Manual*, "HMC algorithm
       parameters" (windowed adaptation).
    2. Hoffman & Gelman (2014), *The No-U-Turn Sampler*, JMLR 15 (dual
       averaging).
    3. Chan, Golub & LeVeque (1979), *Updating formulae and a pairwise
       algorithm for computing sample variances*.
    4. Ledoit & Wolf (2004), *A well-conditioned estimator for
       large-dimensional covariance matrices*, J. Multivariate Anal. 88
       (shrinkage of a sample covariance towards a target).
    5. Hoffman, Radul & Sountsov (2021), *An adaptive MCMC scheme for setting
       trajectory lengths in Hamiltonian Monte Carlo* (adaptation pooled over
       many chains).
"""

import jax
import jax.numpy as jnp
from jax import random
from numpyro.infer.hmc_util import (
    HMCAdaptState,
    build_adaptation_schedule,
    dual_averaging,
    warmup_adapter,
    welford_covariance,
)

__all__ = [
    "window_adapter",
    "pooled_welford",
    "shrink_towards",
    "restart_stragglers",
]


def pooled_welford(positions, state):
    """Add a batch of flat draws ``(n, d)`` to a Welford state ``(mean, m2, n)``
    (NumPyro's layout: ``m2`` a vector for a diagonal estimate, a matrix for
    a dense one), by Chan et al.'s pairwise update.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.arange(12.0).reshape(6, 2) ** 1.5
        >>> state = (jnp.zeros(2), jnp.zeros(2), jnp.array(0))
        >>> state = pooled_welford(x[4:], pooled_welford(x[:4], state))
        >>> bool(jnp.allclose(state[1] / (state[2] - 1), x.var(0, ddof=1)))
        True
    """
    mean, m2, count = state
    batch = positions.shape[0]
    batch_mean = positions.mean(0)
    centred = positions - batch_mean
    total = count + batch
    delta = batch_mean - mean
    weight = count * batch / total
    if m2.ndim == 1:
        batch_m2 = jnp.sum(centred**2, axis=0)
        m2 = m2 + batch_m2 + delta**2 * weight
    else:
        batch_m2 = centred.T @ centred
        m2 = m2 + batch_m2 + jnp.outer(delta, delta) * weight
    return mean + delta * (batch / total), m2, total


def shrink_towards(state, previous):
    """A dense Welford state whose covariance is shrunk towards ``previous``
    (the inverse mass matrix in use) with weight ``d / (n + d)``: directions
    that ``n`` draws do not span keep the previous estimate instead of the
    regulariser's 1e-3 (a diagonal state is returned unchanged).

    Example:
        >>> import jax.numpy as jnp
        >>> m2 = jnp.array([[2.0, 2.0], [2.0, 2.0]])  # 3 draws, rank 1
        >>> _, shrunk, _ = shrink_towards((jnp.zeros(2), m2, jnp.array(3)), jnp.eye(2))
        >>> bool(jnp.linalg.eigvalsh(shrunk / 2)[0] > 0.3)
        True
    """
    mean, m2, count = state
    if m2.ndim == 1:
        return state
    d = m2.shape[0]
    w = d / (count + d)
    return mean, (1 - w) * m2 + w * (count - 1) * previous, count


def window_adapter(
    num_warmup,
    *,
    adapt_step_size=True,
    adapt_mass_matrix=True,
    dense_mass=False,
    target_accept_prob=0.8,
):
    """``(init_fn, update_fn)`` of the windowed adaptation, pooled over the
    chains it is given.

    ``init_fn`` is NumPyro's (one state, for one chain's position).
    ``update_fn(t, accept_prob, positions, state)`` takes the iteration ``t``
    (a scalar, the same for all chains), the acceptance probabilities ``(n,)``
    and the flat positions ``(n, d)`` of the ``n`` chains that share
    ``state``, and returns the next state. At the end of a middle window it
    sets the inverse mass matrix from the window's draws (regularised as
    Stan does, dense ones shrunk by :func:`shrink_towards` the current one) and restarts
    dual averaging from ten times the current step size; at the last
    warm-up iteration the step size becomes dual averaging's average.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> init, update = window_adapter(200, target_accept_prob=0.6)
        >>> state = init((jnp.zeros(3),), jax.random.key(0), 1.0, mass_matrix_size=3)
        >>> x = jax.random.normal(jax.random.key(1), (200, 8, 3)) * jnp.array([1.0, 2.0, 4.0])
        >>> step = jax.jit(update)
        >>> for t in range(200):
        ...     state = step(t, jnp.full(8, 0.6), x[t], state)
        >>> bool(jnp.allclose(state.inverse_mass_matrix, jnp.array([1.0, 4.0, 16.0]), rtol=0.3))
        True
    """
    init_fn, _ = warmup_adapter(
        num_warmup,
        adapt_step_size=adapt_step_size,
        adapt_mass_matrix=adapt_mass_matrix,
        dense_mass=dense_mass,
        target_accept_prob=target_accept_prob,
    )
    ss_init, ss_update = dual_averaging()
    mm_init, _, mm_final = welford_covariance(diagonal=not dense_mass)
    windows = build_adaptation_schedule(num_warmup)
    # the window status is a function of t alone (not of the state's window
    # index), so that under vmap over chains with one t the conds stay conds
    # and the window-end factorisation runs only at window ends
    middle_ends = jnp.asarray([end for _, end in windows[1:-1]], dtype=jnp.int32)
    middle_start = windows[1].start if len(windows) > 2 else num_warmup
    middle_stop = windows[-1].start  # the last window's start, exclusive
    all_ends = jnp.asarray([end for _, end in windows], dtype=jnp.int32)

    def at_window_end(state):
        step_size, imm, sqrt, sqrt_inv, ss_state, mm_state, window_idx, key = state
        if adapt_mass_matrix:
            imm, sqrt, sqrt_inv = mm_final(
                shrink_towards(mm_state, imm), regularize=True
            )
            mm_state = mm_init(imm.shape[-1])
        if adapt_step_size:
            ss_state = ss_init(jnp.log(10.0) + jnp.log(step_size))
        return HMCAdaptState(
            step_size, imm, sqrt, sqrt_inv, ss_state, mm_state, window_idx, key
        )

    def update_fn(t, accept_prob, positions, state):
        step_size, imm, sqrt, sqrt_inv, ss_state, mm_state, window_idx, key = state
        if adapt_step_size:
            ss_state = ss_update(target_accept_prob - jnp.mean(accept_prob), ss_state)
            log_step_size, log_step_size_avg, *_ = ss_state
            step_size = jnp.where(
                t == num_warmup - 1, jnp.exp(log_step_size_avg), jnp.exp(log_step_size)
            )
            finfo = jnp.finfo(jnp.result_type(step_size))
            step_size = jnp.clip(step_size, finfo.tiny, finfo.max)
        middle = (t >= middle_start) & (t < middle_stop)
        if adapt_mass_matrix:
            mm_state = jax.lax.cond(
                middle, lambda s: pooled_welford(positions, s), lambda s: s, mm_state
            )
        window_idx = window_idx + jnp.any(t == all_ends)
        state = HMCAdaptState(
            step_size, imm, sqrt, sqrt_inv, ss_state, mm_state, window_idx, key
        )
        return jax.lax.cond(
            jnp.any(t == middle_ends), at_window_end, lambda s: s, state
        )

    return init_fn, update_fn


def restart_times(num_warmup):
    """The warm-up iterations at which stragglers are moved: the ends of the
    windows that end in the first half of the warm-up, so that a moved chain
    has at least half the warm-up to decorrelate from the chain it copied
    before any draw is kept."""
    ends = [end for _, end in build_adaptation_schedule(num_warmup)[:-1]]
    return jnp.asarray([end for end in ends if end < num_warmup // 2], dtype=jnp.int32)


def restart_stragglers(rng_key, potential_energy, accept_prob, dim, *arrays):
    """Move chains stuck far from the others to other chains' states.

    A chain is a straggler when its potential energy exceeds the median of
    all chains' by more than ``5 sqrt(d / 2) + 5`` (five standard deviations
    of a ``d``-dimensional Gaussian's potential energy, plus a margin) *and*
    its mean acceptance probability so far is under half the chains' median:
    it sits in a tail where the shared step size does not fit it (a chain in
    a wide but legitimate region, such as the mouth of a funnel, accepts at
    least as often as the others and is left alone). Chains with a
    non-finite potential are stragglers too. Each straggler takes the state
    of a chain drawn uniformly from the others. ``arrays`` are pytrees with a
    leading chain axis (position, potential energy, gradient, ...), returned
    with the stragglers' entries replaced, and the number moved.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> pe = jnp.array([1.0, 2.0, 50.0, 3.0])
        >>> accept = jnp.array([0.6, 0.5, 0.0, 0.55])
        >>> z = jnp.array([[0.0], [1.0], [99.0], [2.0]])
        >>> (z, pe), moved = restart_stragglers(jax.random.key(0), pe, accept, 1, z, pe)
        >>> int(moved), bool(z[2, 0] != 99.0), bool(pe[2] < 10)
        (1, True, True)
    """
    high = (
        potential_energy
        > jnp.median(potential_energy) + 5.0 * jnp.sqrt(dim / 2.0) + 5.0
    )
    slow = accept_prob < 0.5 * jnp.median(accept_prob)
    stuck = (high & slow) | ~jnp.isfinite(potential_energy)
    stuck = stuck & ~jnp.all(stuck)  # no chain to copy: leave them
    num_chains = potential_energy.shape[0]
    # each chain's replacement: a uniformly drawn chain that is not stuck
    logits = jnp.where(stuck, -jnp.inf, 0.0)
    donors = random.categorical(rng_key, logits, shape=(num_chains,))
    source = jnp.where(stuck, donors, jnp.arange(num_chains))
    moved = jax.tree.map(lambda x: x[source], arrays)
    return moved, jnp.sum(stuck)
