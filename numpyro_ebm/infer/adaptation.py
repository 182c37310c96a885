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

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import Array, random
from numpyro.infer.hmc_util import (
    HMCAdaptState,
    build_adaptation_schedule,
    warmup_adapter,
    welford_covariance,
)

from numpyro_ebm.core.step_size import (
    DualAveragingState,
    dual_averaging,
    pooled_acceptance_gap,
)

__all__ = [
    "window_adapter",
    "pooled_welford",
    "shrink_towards",
    "restart_stragglers",
    "TrajectoryAdaptState",
    "halton",
    "trajectory_adapter",
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

    ``init_fn`` is NumPyro's (one state, for one chain's position), its
    step-size state a :class:`~numpyro_ebm.core.step_size.DualAveragingState`.
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
    numpyro_init, _ = warmup_adapter(
        num_warmup,
        adapt_step_size=adapt_step_size,
        adapt_mass_matrix=adapt_mass_matrix,
        dense_mass=dense_mass,
        target_accept_prob=target_accept_prob,
    )
    ss_init, ss_update = dual_averaging()

    def init_fn(*args, **kwargs):
        # NumPyro's start, its step-size state in this package's type
        state = numpyro_init(*args, **kwargs)
        return state._replace(ss_state=DualAveragingState(*state.ss_state))

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
            ss_state = ss_update(
                pooled_acceptance_gap(target_accept_prob, accept_prob), ss_state
            )
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


# ------------------------------------------------------------ trajectory length
class TrajectoryAdaptState(NamedTuple):
    """State of :func:`trajectory_adapter`.

    Attributes:
        trajectory_length: the nominal length ``T`` in use (each trajectory
            takes ``ceil(u T / h)`` steps, ``u`` in (0, 1) from a Halton
            sequence): Adam's iterate during warm-up, its average after.
        log_length: Adam's iterate, ``log T``.
        log_length_avg: moving average of ``log_length`` (weight ``k^-0.75``
            on the ``k``-th update).
        adam_state: Optax's Adam state.
        mean: running mean of the positions, for centring the criterion.
        count: number of updates so far.
    """

    trajectory_length: Array
    log_length: Array
    log_length_avg: Array
    adam_state: tuple
    mean: Array
    count: Array


def halton(i, base=2):
    """The ``i``-th element (``i >= 1``) of the van der Corput / Halton sequence
    in ``base``, in (0, 1); ``i`` may be traced.

    Example:
        >>> [float(halton(i)) for i in range(1, 5)]
        [0.5, 0.25, 0.75, 0.125]
    """
    i = jnp.asarray(i, jnp.int32)

    def body(_, carry):
        i, f, value = carry
        value = value + f * (i % base)
        return i // base, f / base, value

    _, _, value = jax.lax.fori_loop(
        0, 32, body, (i, jnp.asarray(1.0 / base), jnp.asarray(0.0))
    )
    return value


def trajectory_adapter(
    num_warmup,
    *,
    initial_length=1.0,
    max_num_steps=1000,
    learning_rate=0.025,
    max_log_update=0.35,
):
    """``(init_fn, update_fn, num_steps_fn)`` tuning the trajectory length of a
    Hamiltonian or kinetic Langevin trajectory by the ChEES criterion
    (Hoffman, Radul & Sountsov 2021), pooled over the chains it is given.

    ChEES is the expected change of the squared distance to the target's mean
    over a trajectory, ``E[(|u' - m|^2 - |u - m|^2)^2] / 4`` in whitened
    coordinates ``u = L^-T x`` (``A = L^T L`` the inverse mass matrix, in which
    the whitened momentum is the velocity). Its gradient with respect to
    ``log T`` is estimated from every chain's trajectory as
    ``u T (|u' - m|^2 - |u - m|^2) (u' - m) . r'``, weighted by the acceptance
    probabilities, and ``log T`` climbs it with Adam (no momentum, as in
    ChEES; with Optax's default momentum ``T`` climbed too slowly and stayed
    short on the rotated Gaussian, hierarchical logistic and radon posteriors
    of the benchmark suite; updates clipped at ``max_log_update``); ``m`` is a
    running mean of the chains' positions. On a Gaussian the criterion, averaged over the jitter, has
    local maxima near 2.4, 5.6, 8.7, ... times the scale: ``T`` starts below
    the first (``initial_length``), and when the mass matrix changes from
    ``A`` to ``A'`` it is divided by ``sqrt(lambda_max(A^-1 A'))``, the
    largest change of scale, so that a ``T`` fitted to the old metric lands at
    or below the first maximum of the new one rather than beyond it (but not
    below ``initial_length``: a ``T`` still climbing towards the old metric's
    scale would land far below the new one's).

    - ``init_fn(position_size, step_size)`` -> :class:`TrajectoryAdaptState`.
    - ``update_fn(t, start, proposal, momentum, accept_prob, finite, metric,
      inverse_mass_matrix, new_inverse_mass_matrix, step_size, state)``: flat
      ``(n, d)`` start positions, proposed end points and their whitened
      momenta, ``(n,)`` acceptance probabilities and finiteness flags, the
      :class:`~numpyro_ebm.core.metrics.Metric` used, its inverse mass matrix
      and the one adapted after iteration ``t``, and the next step size. At the last warm-up iteration ``T``
      becomes the average; afterwards the state is returned unchanged.
    - ``num_steps_fn(t, step_size, state)``: ``ceil(u_t T / h)`` with ``u_t``
      the Halton sequence at ``t + 1``, in ``[1, max_num_steps]``.

    Example:
        >>> import jax.numpy as jnp
        >>> init, update, num_steps = trajectory_adapter(100)
        >>> state = init(3, 0.1)
        >>> int(num_steps(0, 0.1, state))  # u_1 = 0.5 of T = 1 in steps of 0.1
        5
    """
    optimiser = optax.adam(learning_rate, b1=0.0, b2=0.95)
    windows = build_adaptation_schedule(num_warmup)
    middle_ends = jnp.asarray([end for _, end in windows[1:-1]], dtype=jnp.int32)

    def init_fn(position_size, step_size):
        dtype = jnp.result_type(float)
        log_length = jnp.log(
            jnp.minimum(initial_length, max_num_steps * step_size)
        ).astype(dtype)
        return TrajectoryAdaptState(
            jnp.exp(log_length),
            log_length,
            log_length,
            optimiser.init(log_length),
            jnp.zeros(position_size, dtype),
            jnp.array(0),
        )

    def num_steps_fn(t, step_size, state):
        jitter = halton(t + 1)
        steps = jnp.ceil(jitter * state.trajectory_length / step_size)
        return jnp.clip(steps, 1, max_num_steps).astype(jnp.int32)

    def whiten(metric, x):
        if metric.mass_matrix_sqrt_inv.ndim == 1:
            return x / metric.mass_matrix_sqrt_inv
        # u = L^-T x for each row x
        return jax.scipy.linalg.solve_triangular(
            metric.mass_matrix_sqrt_inv, x.T, trans=1, lower=True
        ).T

    def update(
        t,
        start,
        proposal,
        momentum,
        accept_prob,
        finite,
        metric,
        old,
        new,
        step_size,
        state,
    ):
        count = state.count + 1
        weight = jnp.maximum(1.0 / (t + 1), 0.01)
        mean = state.mean + weight * (jnp.mean(start, axis=0) - state.mean)
        u0 = whiten(metric, start - mean)
        u1 = whiten(metric, jnp.where(finite[:, None], proposal, start) - mean)
        jitter = halton(t + 1)
        length = state.trajectory_length
        change = jnp.sum(u1**2, axis=1) - jnp.sum(u0**2, axis=1)
        grads = jitter * length * change * jnp.sum(u1 * momentum, axis=1)
        weights = jnp.where(finite, accept_prob, 0.0)
        grads = jnp.where(finite, grads, 0.0)
        grad = jnp.sum(weights * grads) / (jnp.sum(weights) + 1e-10)
        # Adam minimises: climb ChEES on -grad
        step, adam_state = optimiser.update(-grad, state.adam_state, state.log_length)
        step = jnp.clip(step, -max_log_update, max_log_update)
        log_length = state.log_length + step
        ok = jnp.isfinite(log_length)
        log_length = jnp.where(ok, log_length, state.log_length)
        adam_state = jax.tree.map(
            lambda new, old: jnp.where(ok, new, old), adam_state, state.adam_state
        )
        # at most max_num_steps steps (at least one is taken whatever T; T is
        # not raised to the step size, which restarts at 10x at window ends)
        log_length = jnp.minimum(log_length, jnp.log(max_num_steps * step_size))
        weight = count**-0.75
        log_length_avg = (1 - weight) * state.log_length_avg + weight * log_length
        in_use = jnp.where(t == num_warmup - 1, log_length_avg, log_length)
        state = TrajectoryAdaptState(
            jnp.exp(in_use), log_length, log_length_avg, adam_state, mean, count
        )

        def rescale(state):
            # a new mass matrix changes the time scales by up to sqrt(ratio)
            if old.ndim == 1:
                ratio = jnp.max(new / old)
            else:
                factor = jnp.linalg.cholesky(old)  # old = factor factor^T
                whitened = jax.scipy.linalg.solve_triangular(factor, new, lower=True)
                whitened = jax.scipy.linalg.solve_triangular(
                    factor, whitened.T, lower=True
                )
                ratio = jnp.linalg.eigvalsh(whitened)[-1]
            ratio = jnp.where(jnp.isfinite(ratio) & (ratio > 0), ratio, 1.0)
            # not below the starting length (unless already there): a T that
            # had not yet climbed to the old metric's scale would otherwise be
            # cut far below the new one's, with too little warm-up left to climb
            log_length = jnp.maximum(
                state.log_length - 0.5 * jnp.log(ratio),
                jnp.minimum(state.log_length, jnp.log(initial_length)),
            )
            return state._replace(
                trajectory_length=jnp.exp(log_length),
                log_length=log_length,
                log_length_avg=log_length,
                count=jnp.zeros_like(state.count),
            )

        return jax.lax.cond(jnp.any(t == middle_ends), rescale, lambda s: s, state)

    def update_fn(t, *args):
        *args, state = args
        return jax.lax.cond(
            t < num_warmup, lambda s: update(t, *args, s), lambda s: s, state
        )

    return init_fn, update_fn, num_steps_fn
