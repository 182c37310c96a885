"""Parallel tempering (replica exchange) around any kernel of the package."""

import copy
import warnings
from collections import namedtuple

import numpy as np

import jax
import jax.numpy as jnp
from jax import random
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from numpyro_ebm.core import tempering, validation
from numpyro_ebm.infer.base import LangevinKernelBase

__all__ = ["ParallelTempering", "TemperingState"]

TemperingState = namedtuple(
    "TemperingState",
    [
        "i",
        "z",
        "potential_energy",
        "accept_prob",
        "diverging",
        "swap_accept",
        "betas",
        "parity",
        "rejection",
        "replicas",
        "rng_key",
    ],
)
TemperingState.__doc__ = """
State of :class:`ParallelTempering` (a :func:`~collections.namedtuple`):

- **i** - iteration, counting warm-up and sampling together.
- **z** - the position of the ``beta = 1`` replica: the draw.
- **potential_energy** - its (untempered) potential energy.
- **accept_prob** - the inner kernel's acceptance probability at ``beta = 1``.
- **diverging** - its last proposal was not finite.
- **swap_accept** - the lowest swap acceptance probability over the
  neighbouring pairs at this iteration (each pair's averaged over the
  iteration's swap rounds).
- **betas** - the inverse temperatures ``(L,)``, decreasing from 1 (shared by
  all chains).
- **parity** - which pairs ``(l, l + 1)`` (``l % 2 == parity``) propose swaps
  at the next iteration.
- **rejection** - moving average of each pair's swap rejection rate, ``(L - 1,)``
  (weight 0.05 per iteration), kept through warm-up and sampling.
- **replicas** - the inner kernel's state for every level (leading axis
  ``L``, or ``chains x L`` for vectorized chains).
- **rng_key** - random key for the swaps.
"""


class ParallelTempering(MCMCKernel):
    """Replica exchange over a ladder of tempered targets, any inner kernel.

    Level ``l`` runs a copy of ``inner_kernel`` on ``exp(-beta_l U)``, with
    ``1 = beta_0 > beta_1 > ... > beta_{L-1} = min_inverse_temperature``;
    flattened levels cross between the modes of a multimodal posterior.
    After every transition neighbouring levels propose to swap their states,
    accepted with probability ``min(1, exp((beta_l - beta_{l+1}) (U(x_l) -
    U(x_{l+1}))))``, even pairs and odd pairs in turn: the deterministic
    even-odd scheme, whose states travel the ladder in ``O(L)`` rounds
    rather than ``O(L^2)`` (non-reversible parallel tempering, Syed et al.
    2022). Swaps need no gradient, so ``num_swap_rounds`` rounds follow each
    transition (``L`` by default: a state can cross the whole ladder
    between two transitions, towards the infinite-swapping limit of Dupuis
    et al. 2012). The draws are the ``beta = 1`` level's.

    Warm-up tunes each level's inner kernel alone (its step size fits its
    temperature) and, during its first half, spaces the inner levels so that
    every pair has the same swap rejection rate (the optimal spacing of that
    scheme); the ladder is fixed afterwards, so sampling is exact for an
    exact inner kernel. At the end of warm-up a pair rejecting over half its
    swaps raises a warning with the barrier ``Lambda`` (the sum of the
    rejection rates) and the number of levels it needs (about ``2 Lambda``).
    The levels' mass matrices are not adapted by default: a level's draws
    visit several modes, and their spread between modes would inflate the
    metric (on two 5-d modes 13 sd apart, the cold level's step size fell
    from 0.72 to 0.085).

    Each iteration costs ``L`` inner transitions. ``min_inverse_temperature``
    must flatten the target enough for the modes to connect (a Gaussian
    mode's width grows as ``beta^(-1/2)``), and the whole potential is
    tempered, so its tempered law must stay proper (true of targets with
    Gaussian or lighter tails). Mode weights are the slowest quantity to
    mix: check the effective sample size of a mode indicator, not only of
    the coordinates.

    :param inner_kernel: a kernel of this package (``ne.MALA(model)``,
        ``ne.RWMH(model)``, ...), built with ``model`` or ``potential_fn``;
        its chains are adapted per level (``pool_chains`` is ignored).
    :param int num_temperatures: levels ``L`` (at least 2).
    :param float min_inverse_temperature: ``beta`` of the hottest level, in
        (0, 1); the starting ladder is geometric from it to 1.
    :param bool adapt_ladder: equalise the swap rejection rates during the
        first half of the warm-up.
    :param int num_swap_rounds: swap rounds after each transition (default
        ``L``).
    :param bool adapt_mass_matrix: let the inner kernel adapt its mass
        matrix at every level as it is configured to (default: only its
        step size is tuned, from its initial ``inverse_mass_matrix``).

    **Example**

    .. doctest::

        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> def model():  # two modes 10 sd apart
        ...     mix = dist.MixtureSameFamily(dist.Categorical(jnp.array([0.5, 0.5])),
        ...                                  dist.Normal(jnp.array([-5.0, 5.0]), 1.0))
        ...     numpyro.sample("x", mix)
        >>> kernel = ne.ParallelTempering(ne.MALA(model), num_temperatures=6)
        >>> mcmc = MCMC(kernel, num_warmup=500, num_samples=1000, progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> bool(0.3 < (mcmc.get_samples()["x"] > 0).mean() < 0.7)
        True

    **References**

    1. Swendsen & Wang (1986), *Replica Monte Carlo simulation of spin
       glasses*, PRL 57.
    2. Geyer (1991), *Markov chain Monte Carlo maximum likelihood*.
    3. Syed, Bouchard-Côté, Deligiannidis & Doucet (2022), *Non-reversible
       parallel tempering: a scalable highly parallel MCMC scheme*, JRSS B 84.
    4. Dupuis, Liu, Plattner & Doll (2012), *On the infinite swapping limit
       for parallel tempering*, Multiscale Model. Simul. 10.
    """

    def __init__(
        self,
        inner_kernel,
        *,
        num_temperatures=16,
        min_inverse_temperature=0.01,
        adapt_ladder=True,
        num_swap_rounds=None,
        adapt_mass_matrix=False,
    ):
        if not isinstance(inner_kernel, LangevinKernelBase):
            raise ValueError(
                "`inner_kernel` must be a kernel of numpyro_ebm (ne.MALA, ne.RWMH, "
                f"ne.MALT, ...), got {type(inner_kernel).__name__}."
            )
        if validation.positive_integer("num_temperatures", num_temperatures) < 2:
            raise ValueError(
                f"`num_temperatures` must be at least 2, got {num_temperatures}."
            )
        beta = validation.positive("min_inverse_temperature", min_inverse_temperature)
        if not beta < 1:
            raise ValueError(
                f"`min_inverse_temperature` must be in (0, 1), got {beta}."
            )
        inner = copy.copy(inner_kernel)
        inner._pool_chains = False  # levels adapt alone
        if not adapt_mass_matrix:
            inner._adapt_mass_matrix = False
        self._inner = inner
        self._num_temperatures = num_temperatures
        self._min_beta = float(beta)
        self._adapt_ladder = bool(adapt_ladder)
        if num_swap_rounds is None:
            num_swap_rounds = num_temperatures
        self._num_swap_rounds = validation.positive_integer(
            "num_swap_rounds", num_swap_rounds
        )
        self._num_warmup = 0
        self._num_chains = None

    # ------------------------------------------------------------ properties
    @property
    def inner_kernel(self):
        return self._inner

    @property
    def model(self):
        return self._inner.model

    @property
    def sample_field(self):
        return "z"

    @property
    def default_fields(self):
        return ("z", "diverging", "potential_energy", "accept_prob", "swap_accept")

    def get_diagnostics_str(self, state):
        return (
            f"acc. prob={float(jnp.mean(state.accept_prob)):.2f}, "
            f"lowest swap acc. prob={float(jnp.min(state.swap_accept)):.2f}"
        )

    def postprocess_fn(self, model_args, model_kwargs):
        return self._inner.postprocess_fn(model_args, model_kwargs)

    def get_potential_fn(self, model_args=(), model_kwargs=None):
        return self._inner.get_potential_fn(model_args, model_kwargs)

    # ------------------------------------------------------------------ init
    def _betas(self):
        levels = jnp.arange(self._num_temperatures) / (self._num_temperatures - 1)
        return jnp.asarray(self._min_beta, jnp.result_type(float)) ** levels

    def init(
        self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None
    ):
        vectorized = not is_prng_key(rng_key)
        keys = rng_key if vectorized else rng_key[None]
        num_chains, num_levels = keys.shape[0], self._num_temperatures
        split = jax.vmap(lambda k: random.split(k, num_levels + 1))(keys)
        swap_keys, level_keys = split[:, 0], split[:, 1:].reshape(-1)
        if init_params is not None:
            if not vectorized:
                init_params = jax.tree.map(lambda x: jnp.asarray(x)[None], init_params)
            init_params = jax.tree.map(
                lambda x: jnp.repeat(jnp.asarray(x), num_levels, axis=0), init_params
            )
        replicas = self._inner.init(
            level_keys, num_warmup, init_params, model_args, model_kwargs
        )
        self._num_warmup = num_warmup
        self._num_chains = num_chains if vectorized else None
        betas = self._betas()
        scale = jnp.tile(betas, num_chains)
        replicas = replicas._replace(
            potential_energy=scale * replicas.potential_energy,
            z_grad=_scaled(replicas.z_grad, scale),
        )
        zero = jnp.zeros((num_chains,), jnp.result_type(float))
        state = TemperingState(
            jnp.zeros((num_chains,), jnp.int32),
            jax.tree.map(lambda x: _levels(x, num_chains)[:, 0], replicas.z),
            _levels(replicas.potential_energy, num_chains)[:, 0],
            zero,
            jnp.zeros((num_chains,), bool),
            zero,
            betas,
            jnp.zeros((), jnp.int32),
            jnp.full((num_levels - 1,), 0.5, jnp.result_type(float)),
            replicas,
            swap_keys,
        )
        return state if vectorized else _unbatch(state)

    def _check_ladder(self, i, rejection):
        """Warn at the end of warm-up when a pair rejects over half its swaps
        (fewer levels than twice the barrier ``Lambda``, the sum of the
        rejection rates: Syed et al. 2022)."""
        if self._num_warmup < 20:
            return
        jax.lax.cond(
            (i == self._num_warmup) & (jnp.max(rejection) > MAX_REJECTION),
            lambda: jax.debug.callback(_warn_ladder, rejection),
            lambda: None,
        )

    # ---------------------------------------------------------------- sample
    def sample(self, state, model_args, model_kwargs):
        vectorized = self._num_chains is not None
        if not vectorized:
            state = _batch(state)
        num_chains = state.potential_energy.shape[0]
        potential_fn = self._inner.get_potential_fn(model_args, model_kwargs)
        betas = state.betas
        scale = jnp.tile(betas, num_chains)
        replicas = self._inner._sample_per_chain(state.replicas, potential_fn, scale)

        # swaps on the untempered potential, level axis first: (L, chains, ...)
        raw_pe = replicas.potential_energy / scale
        raw_grad = _scaled(replicas.z_grad, 1.0 / scale)
        leading = lambda x: jnp.swapaxes(_levels(x, num_chains), 0, 1)  # noqa: E731
        keys = jax.vmap(random.split)(state.rng_key)
        (z, raw_grad), raw_pe, parity, swap_prob = tempering.swap_rounds(
            keys[0, 0],
            betas,
            leading(raw_pe),
            state.parity,
            jax.tree.map(leading, (replicas.z, raw_grad)),
            self._num_swap_rounds,
        )
        flat = lambda x: jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])  # noqa: E731
        z, raw_pe, raw_grad = jax.tree.map(flat, (z, raw_pe, raw_grad))
        replicas = replicas._replace(
            z=z, potential_energy=scale * raw_pe, z_grad=_scaled(raw_grad, scale)
        )

        i = state.i[0]
        pair_prob = jnp.mean(swap_prob, axis=1)  # per pair, over chains
        rejection = 0.95 * state.rejection + 0.05 * (1.0 - pair_prob)
        if self._adapt_ladder:
            adapting = i < self._num_warmup // 2
            betas = jnp.where(
                adapting, tempering.equalise_ladder(betas, rejection), betas
            )
            # the levels' tempered energies follow the new ladder
            new_scale = jnp.tile(betas, num_chains)
            replicas = replicas._replace(
                potential_energy=new_scale * raw_pe,
                z_grad=_scaled(raw_grad, new_scale),
            )
        self._check_ladder(i + 1, rejection)
        cold = lambda x: _levels(x, num_chains)[:, 0]  # noqa: E731
        self._inner._check_health(i + 1, replicas)
        state = TemperingState(
            state.i + 1,
            jax.tree.map(cold, replicas.z),
            cold(raw_pe),
            cold(replicas.accept_prob),
            cold(replicas.diverging),
            jnp.min(swap_prob, axis=0),
            betas,
            parity,
            rejection,
            replicas,
            keys[:, 1],
        )
        return state if vectorized else _unbatch(state)


MAX_REJECTION = 0.5


def _warn_ladder(rejection):
    rejection = np.asarray(rejection, np.float64)
    barrier = float(rejection.sum())
    levels = len(rejection) + 1
    warnings.warn(
        f"ParallelTempering: after warm-up the swap rejection rate between "
        f"neighbouring levels reaches {rejection.max():.2f} (communication "
        f"barrier Lambda = {barrier:.2f} over {levels} levels): states seldom "
        "travel the whole ladder, and mode weights mix slowly. Use "
        f"num_temperatures of at least {int(np.ceil(2 * barrier)) + 1}.",
        RuntimeWarning,
        stacklevel=2,
    )


def _levels(x, num_chains):
    """``(chains * L, ...)`` -> ``(chains, L, ...)``."""
    return x.reshape((num_chains, -1) + x.shape[1:])


def _scaled(tree, scale):
    """Each leaf (leading axis ``n``) times ``scale`` ``(n,)``."""
    if tree is None:
        return None
    return jax.tree.map(
        lambda g: g * scale.reshape(scale.shape + (1,) * (g.ndim - 1)), tree
    )


_SHARED = ("betas", "parity", "rejection", "replicas")


def _unbatch(state):
    """A one-chain state without the chain axis of its per-chain fields."""
    return state._replace(
        **{
            name: jax.tree.map(lambda x: x[0], getattr(state, name))
            for name in state._fields
            if name not in _SHARED
        }
    )


def _batch(state):
    return state._replace(
        **{
            name: jax.tree.map(lambda x: jnp.asarray(x)[None], getattr(state, name))
            for name in state._fields
            if name not in _SHARED
        }
    )
