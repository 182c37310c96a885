"""Energy-based models by maximum likelihood with MCMC negatives.

``grad_theta E_data[log p_theta] = -E_data[grad E_theta] + E_p[grad E_theta]``
(the Mathematics page of the documentation, §2): the loss ``mean E(data) - mean E(negatives)`` has this gradient
when the negatives are draws from the model. The methods below produce them
with the shared Langevin step, each a small pure object with
``init_sampler(rng_key, data, batch_size) -> sampler_state`` and
``sample(rng_key, energy, batch, sampler_state) -> (negatives, sampler_state,
info)`` (``info`` a dict of scalar diagnostics, at least ``accept_prob``), so
that the training loop is generic.

Chains that never cross between well-separated modes leave the relative mode
weights unlearned: the buffer of plain :class:`PCD` can look right while the
model puts almost no mass on a mode. The default, :class:`TemperedPCD`, runs
parallel tempering on a bridge from a broad Gaussian to the model, so that
fresh draws enter every iteration and move between modes.
"""

import warnings
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

import jax
import jax.numpy as jnp
import optax
from jax import random

from numpyro_ebm.core import tempering, validation
from numpyro_ebm.core.batches import batch_indices
from numpyro_ebm.core.chains import run_chains
from numpyro_ebm.learn import training

__all__ = [
    "NegativeSampler",
    "CD",
    "PCD",
    "ShortRun",
    "TemperedPCD",
    "EBM",
    "langevin_chains",
]

#: energy scale (root mean square) above which a hundredfold growth is reported
_ENERGY_DRIFT_LIMIT = 1e4


@runtime_checkable
class NegativeSampler(Protocol):
    """What :class:`EBM` needs of a negative sampler (:class:`CD`, :class:`PCD`,
    :class:`ShortRun`, :class:`TemperedPCD`, or one of your own).

    ``init_sampler(rng_key, data, batch_size) -> state`` builds the sampler's
    state (a pytree, ``()`` when there is none) before training;
    ``sample(rng_key, energy, batch, state) -> (negatives, state, info)``
    draws one negative per batch row from ``exp(-energy)`` (``energy`` maps one
    point to a scalar), inside the compiled training step; ``info`` is a dict
    of scalar diagnostics, at least ``accept_prob``, recorded in the history.

    Example:
        >>> isinstance(PCD(), NegativeSampler)
        True
    """

    def init_sampler(self, rng_key, data, batch_size): ...

    def sample(self, rng_key, energy, batch, state): ...


def langevin_chains(rng_key, energy, init, num_steps, step_size, adjusted=False):
    """Run one Langevin chain per row of ``init`` on ``exp(-energy)``.

    ``energy`` maps one point to a scalar. Returns the final points and the
    mean MALA acceptance probability of the moves (the adjusted chains' rate,
    or a gauge of the discretisation error for unadjusted ones). The chains
    are the core's :func:`~numpyro_ebm.core.chains.run_chains`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x, acc = langevin_chains(jax.random.key(0), lambda x: 0.5 * x @ x,
        ...                          jnp.zeros((4, 2)), 10, 0.1)
        >>> x.shape
        (4, 2)
    """
    states, info = run_chains(
        rng_key, energy, init, num_steps, step_size, adjusted=adjusted
    )
    return states.position, info.accept_prob.mean()


def _check_steps(num_steps, step_size):
    validation.positive_integer("num_steps", num_steps)
    validation.positive("step_size", step_size)


def _noise_state(init, data):
    """Sampler state for chains started from noise: a fitted Gaussian by default."""
    if init is not None:
        return {}
    return {"noise_mean": data.mean(0), "noise_sd": data.std(0) + 1e-3}


def _noise(rng_key, init, state, num):
    """``num`` starting points: from the user's law, or the fitted Gaussian."""
    if init is not None:
        return init.sample(rng_key, (num,))
    z = random.normal(
        rng_key, (num, *state["noise_mean"].shape), state["noise_mean"].dtype
    )
    return state["noise_mean"] + state["noise_sd"] * z


class CD(NamedTuple):
    """Contrastive divergence: ``num_steps`` Langevin steps from the data batch.

    Cheap and stable, but the negatives stay near the data, so the model's
    mass away from the data is never corrected (Hinton 2002).

    Attributes:
        num_steps: Langevin steps ``k`` (CD-k).
        step_size: Langevin step size.
        adjusted: Metropolis-adjust the steps (MALA).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> method = CD(num_steps=5, step_size=0.1)
        >>> energy = lambda x: 0.5 * x @ x  # one point -> energy
        >>> data = jnp.ones((8, 2))
        >>> state = method.init_sampler(jax.random.key(0), data, 8)
        >>> negatives, state, info = method.sample(jax.random.key(1), energy, data, state)
        >>> negatives.shape
        (8, 2)

    Use it as ``ne.EBM(net, optimizer, method=CD(num_steps=5, step_size=0.1))``.

    References:
        Hinton (2002), *Training products of experts by minimizing
        contrastive divergence*, Neural Computation 14.
    """

    num_steps: int = 1
    step_size: float = 0.01
    adjusted: bool = False

    def init_sampler(self, rng_key, data, batch_size):
        _check_steps(self.num_steps, self.step_size)
        return ()

    def sample(self, rng_key, energy, batch, state):
        x, accept = langevin_chains(
            rng_key, energy, batch, self.num_steps, self.step_size, self.adjusted
        )
        return x, state, {"accept_prob": accept}


class ShortRun(NamedTuple):
    """Short-run MCMC: ``num_steps`` Langevin steps from noise every iteration.

    The short-run sampler itself becomes the generative model (Nijkamp, Hill,
    Zhu & Wu 2019). ``init`` is a NumPyro distribution over one data point;
    by default a Gaussian with the data's mean and per-coordinate sd.

    Attributes:
        num_steps: Langevin steps per iteration.
        step_size: Langevin step size.
        init: starting law of the chains.
        adjusted: Metropolis-adjust the steps (MALA).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> method = ShortRun(num_steps=50, step_size=0.1)
        >>> energy = lambda x: 0.5 * x @ x  # one point -> energy
        >>> data = jnp.ones((8, 2))
        >>> state = method.init_sampler(jax.random.key(0), data, 8)
        >>> negatives, state, info = method.sample(jax.random.key(1), energy, data, state)
        >>> negatives.shape
        (8, 2)

    Use it as ``ne.EBM(net, optimizer, method=ShortRun(num_steps=50, step_size=0.1))``.

    References:
        Nijkamp, Hill, Zhu & Wu (2019), *Learning non-convergent
        non-persistent short-run MCMC toward energy-based model*, NeurIPS.
    """

    num_steps: int = 100
    step_size: float = 0.01
    init: object = None
    adjusted: bool = False

    def init_sampler(self, rng_key, data, batch_size):
        _check_steps(self.num_steps, self.step_size)
        return _noise_state(self.init, data)

    def sample(self, rng_key, energy, batch, state):
        key_init, key_run = random.split(rng_key)
        start = _noise(key_init, self.init, state, batch.shape[0])
        x, accept = langevin_chains(
            key_run, energy, start, self.num_steps, self.step_size, self.adjusted
        )
        return x, state, {"accept_prob": accept}


class PCD(NamedTuple):
    """Persistent contrastive divergence: chains carried across iterations.

    A buffer of ``buffer_size`` chains starts from the noise law ``init``; each
    iteration takes ``batch_size`` of them (a fraction ``reinit_prob``
    re-initialised from noise), runs ``num_steps`` Langevin steps and writes
    them back (Tieleman 2008; Du & Mordatch 2019).

    Attributes:
        num_steps: Langevin steps per iteration.
        step_size: Langevin step size.
        buffer_size: number of persistent chains.
        reinit_prob: probability that a chain restarts from noise.
        init: starting law (default: Gaussian fitted to the data).
        adjusted: Metropolis-adjust the steps (MALA).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> method = PCD(num_steps=20, step_size=0.1, buffer_size=100)
        >>> energy = lambda x: 0.5 * x @ x  # one point -> energy
        >>> data = jnp.ones((8, 2))
        >>> state = method.init_sampler(jax.random.key(0), data, 8)
        >>> negatives, state, info = method.sample(jax.random.key(1), energy, data, state)
        >>> negatives.shape
        (8, 2)
        >>> state["buffer"].shape  # the persistent chains
        (100, 2)

    Use it as ``ne.EBM(net, optimizer, method=PCD(num_steps=20, step_size=0.1, buffer_size=100))``.

    References:
        Tieleman (2008), *Training restricted Boltzmann machines using
        approximations to the likelihood gradient*, ICML. Du & Mordatch
        (2019), *Implicit generation and generalization in energy-based
        models*, NeurIPS.
    """

    num_steps: int = 20
    step_size: float = 0.01
    buffer_size: int = 10_000
    reinit_prob: float = 0.05
    init: object = None
    adjusted: bool = False

    def init_sampler(self, rng_key, data, batch_size):
        _check_steps(self.num_steps, self.step_size)
        if validation.positive_integer("buffer_size", self.buffer_size) < batch_size:
            raise ValueError(
                f"`buffer_size` ({self.buffer_size}) must be at least the batch size "
                f"({batch_size})."
            )
        validation.probability("reinit_prob", self.reinit_prob, closed=True)
        state = _noise_state(self.init, data)
        return {**state, "buffer": _noise(rng_key, self.init, state, self.buffer_size)}

    def sample(self, rng_key, energy, batch, state):
        key_idx, key_reinit, key_noise, key_run = random.split(rng_key, 4)
        n = batch.shape[0]
        idx = batch_indices(key_idx, self.buffer_size, n)
        start = state["buffer"][idx]
        fresh = _noise(key_noise, self.init, state, n)
        restart = random.bernoulli(key_reinit, self.reinit_prob, (n,))
        start = jnp.where(restart.reshape((n,) + (1,) * (start.ndim - 1)), fresh, start)
        x, accept = langevin_chains(
            key_run, energy, start, self.num_steps, self.step_size, self.adjusted
        )
        buffer = state["buffer"].at[idx].set(x)
        return x, {**state, "buffer": buffer}, {"accept_prob": accept}


class TemperedPCD(NamedTuple):
    """Persistent chains with parallel tempering: negatives that cross modes.

    ``num_temperatures`` levels of persistent chains (one chain per minibatch
    point at each level) target the geometric bridge
    ``pi_beta ∝ q0^(1 - beta) exp(-beta E)`` from a broad Gaussian ``q0`` (the
    data's mean and covariance, the covariance times ``init_scale``) at
    ``beta = 0`` to the model at ``beta = 1``. Each iteration: the ``beta = 0``
    level is drawn afresh from ``q0``; every other level takes ``num_steps``
    Langevin steps on its bridge potential ``(1 - beta) U0 + beta E`` (step
    ``step_size`` at ``beta = 1``, scaled towards ``q0``'s variance as beta
    falls); then neighbouring levels propose to swap their chains (even and
    odd pairs alternately), accepted with probability
    ``min(1, exp((beta_i - beta_j) (D(x_i) - D(x_j))))``, ``D = E - U0``. The
    ``beta = 1`` chains are the negatives. Fresh exact draws enter every
    iteration and travel up the ladder, so mode weights are learned, which
    plain persistent chains cannot do. With ``adapt_ladder`` the inverse
    temperatures are moved so that swap rejection is equal between all pairs
    (Syed, Bouchard-Côté, Deligiannidis & Doucet 2021). Watch ``swap_accept``
    in the history: if it falls below about 0.3 (high dimension), add levels.

    Cost per iteration: ``(num_temperatures - 1) * batch_size * (num_steps + 1)``
    gradient evaluations.

    Attributes:
        num_steps: Langevin steps per level and iteration.
        step_size: Langevin step size at ``beta = 1``.
        num_temperatures: levels, including ``beta = 0`` and ``beta = 1``.
        init_scale: variance inflation of ``q0`` over the data covariance.
        adapt_ladder: adapt the inverse temperatures online.
        adjusted: Metropolis-adjust the Langevin steps (MALA), default on.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> method = TemperedPCD(num_steps=5, step_size=0.1)
        >>> energy = lambda x: 0.5 * x @ x  # one point -> energy
        >>> data = jnp.ones((8, 2))
        >>> state = method.init_sampler(jax.random.key(0), data, 8)
        >>> negatives, state, info = method.sample(jax.random.key(1), energy, data, state)
        >>> negatives.shape
        (8, 2)

    Use it as ``ne.EBM(net, optimizer, method=TemperedPCD(num_steps=5, step_size=0.1))``.

    References:
        Swendsen & Wang (1986), *Replica Monte Carlo simulation of spin
        glasses*, PRL 57. Geyer (1991), *Markov chain Monte Carlo maximum
        likelihood*. Desjardins, Courville, Bengio, Vincent & Delalleau
        (2010), *Tempered Markov chain Monte Carlo for training of restricted
        Boltzmann machines*, AISTATS. Syed et al. (2021), *Non-reversible
        parallel tempering: a scalable highly parallel MCMC scheme*, JRSS B.
    """

    num_steps: int = 5
    step_size: float = 0.01
    num_temperatures: int = 4
    init_scale: float = 2.0
    adapt_ladder: bool = True
    adjusted: bool = True

    def init_sampler(self, rng_key, data, batch_size):
        _check_steps(self.num_steps, self.step_size)
        if validation.positive_integer("num_temperatures", self.num_temperatures) < 2:
            raise ValueError(
                "`num_temperatures` must be at least 2 (beta = 0 and beta = 1), got "
                f"{self.num_temperatures}."
            )
        validation.positive("init_scale", self.init_scale)
        if hasattr(data, "cov"):  # rows kept on the host, summarised in chunks
            mean, cov = data.mean(0).reshape(-1), data.cov()
        else:
            flat = data.reshape(data.shape[0], -1)
            mean, cov = flat.mean(0), jnp.cov(flat.T)
        cov = jnp.atleast_2d(cov) * self.init_scale
        jitter = 1e-3 * jnp.mean(jnp.diag(cov)) + 1e-6
        chol = jnp.linalg.cholesky(cov + jitter * jnp.eye(cov.shape[0]))
        state = {
            "q0_mean": mean,
            "q0_chol": chol,
            "betas": (1.0 - jnp.linspace(0.0, 1.0, self.num_temperatures)) ** 2,
            "parity": jnp.zeros((), jnp.int32),
            "rejection": jnp.full(self.num_temperatures - 1, 0.5),
        }
        shape = (self.num_temperatures, batch_size)
        state["chains"] = self._q0_sample(rng_key, state, shape).reshape(
            shape + data.shape[1:]
        )
        return state

    @staticmethod
    def _q0_sample(rng_key, state, shape):
        z = random.normal(
            rng_key, shape + state["q0_mean"].shape, state["q0_mean"].dtype
        )
        return state["q0_mean"] + z @ state["q0_chol"].T

    @staticmethod
    def _q0_potential(state, x):
        r = jax.scipy.linalg.solve_triangular(
            state["q0_chol"], (x.reshape(-1) - state["q0_mean"]), lower=True
        )
        return 0.5 * jnp.sum(r**2)

    def sample(self, rng_key, energy, batch, state):
        key_fresh, key_move, key_swap, key_restart = random.split(rng_key, 4)
        chains, betas = state["chains"], state["betas"]
        num_levels, n = chains.shape[:2]
        event = chains.shape[2:]
        # the beta = 0 level is an exact, fresh draw from q0
        fresh = self._q0_sample(key_fresh, state, (n,)).reshape((n,) + event)
        chains = chains.at[-1].set(fresh)
        u0 = lambda x: self._q0_potential(state, x)
        var0 = jnp.mean(jnp.sum(state["q0_chol"] ** 2, -1))

        def move(key, x, beta):
            bridge = lambda y: (1.0 - beta) * u0(y) + beta * energy(y)
            step = self.step_size**beta * (self.step_size * var0) ** (1.0 - beta)
            return langevin_chains(key, bridge, x, self.num_steps, step, self.adjusted)

        keys = random.split(key_move, num_levels - 1)
        moved, accept = jax.vmap(move)(keys, chains[:-1], betas[:-1])
        chains = chains.at[:-1].set(moved)

        # replica swaps between neighbours (i, i + 1) with i of the current parity
        diff = jax.vmap(jax.vmap(lambda x: energy(x) - u0(x)))(chains)  # (L, n)
        # (a non-finite energy on either side is a rejection)
        finite = jnp.isfinite(diff[:-1]) & jnp.isfinite(diff[1:])
        chains, decision = tempering.swap_neighbours(
            key_swap, betas, diff, state["parity"], chains
        )
        mask = lambda m: m.reshape(m.shape + (1,) * len(event))
        # a chain whose energy is not finite (outside the model's support, e.g.
        # started there from q0) can neither move nor swap. Such chains never
        # swap, so `diff` still marks them after the swaps. Above beta = 1 they
        # restart from q0; at beta = 1, whose chains are the negatives, they take
        # the chain of the next level (inside the support, from a nearby
        # tempered law) rather than a raw q0 draw.
        stuck = ~jnp.isfinite(diff)
        restart = self._q0_sample(key_restart, state, (num_levels, n))
        chains = jnp.where(
            mask(stuck.at[0].set(False)), restart.reshape(chains.shape), chains
        )
        chains = chains.at[0].set(jnp.where(mask(stuck[0]), chains[1], chains[0]))

        # swap rates over the pairs where both energies are finite: a chain
        # outside the support says nothing about the spacing of the ladder
        count = jnp.sum(finite, 1)
        swap_prob = jnp.where(
            count > 0,
            jnp.sum(decision.accept_prob, 1) / jnp.maximum(count, 1),
            1.0 - state["rejection"],
        )
        rejection = state["rejection"]
        if self.adapt_ladder:
            rejection = 0.95 * rejection + 0.05 * (1.0 - swap_prob)
            betas = tempering.equalise_ladder(betas, rejection)
        new_state = {
            **state,
            "chains": chains,
            "betas": betas,
            "parity": 1 - state["parity"],
            "rejection": rejection,
        }
        info = {
            "accept_prob": accept[0],
            "swap_accept": swap_prob.min(),
            "restarted": jnp.mean(stuck),
        }
        return chains[0], new_state, info


class EBM(training.Learner):
    """Train an energy network by maximum likelihood with MCMC negatives.

    Each step draws a minibatch, draws as many negatives with ``method``
    (:class:`TemperedPCD`, :class:`PCD`, :class:`CD` or :class:`ShortRun`;
    Langevin chains on the current energy) and takes an optimiser step on
    ``mean E(data) - mean E(negatives) + alpha (mean E(data)^2 + mean E(negatives)^2)``
    (the regulariser of Du & Mordatch 2019, off by default). Clip gradients
    by chaining ``optax.clip_by_global_norm`` into ``optimizer``.

    Args:
        energy_net: a Flax NNX module (or ``(apply_fn, params)`` pair) mapping
            points ``(n, d)`` to energies ``(n,)``.
        optimizer: an Optax gradient transformation.
        method: the negative sampler (default :class:`TemperedPCD`, which
            learns the relative weights of separated modes).
        energy_regularization: ``alpha`` above. The contrastive loss only sees
            energy differences, so the energies' overall level is free and can
            drift (to 1e10 with a large learning rate); ``alpha > 0`` keeps
            them near zero. ``history["energy_scale"]`` (the root mean square
            energy of each step) shows the drift, and a run whose energy scale
            grows a hundredfold past 1e4 warns.
        ema_decay: keep an exponential moving average of the weights (see
            :class:`ScoreMatching`); the result's ``params`` and ``module`` are
            the average.

    Example:
        >>> import jax, optax
        >>> from flax import nnx
        >>> import numpyro_ebm as ne
        >>> data = jax.random.normal(jax.random.key(0), (512, 2))
        >>> ebm = ne.EBM(ne.nn.EnergyMLP(2, (16,), rngs=nnx.Rngs(0)), optax.adam(1e-3),
        ...              method=ne.PCD(num_steps=5, step_size=0.05, buffer_size=512))
        >>> result = ebm.run(jax.random.key(1), 20, data, batch_size=64,
        ...                  progress_bar=False)
        >>> sorted(result.history)
        ['accept_prob', 'energy_data', 'energy_negative', 'energy_scale', 'grad_norm', 'loss']

    References:
        Hinton (2002), *Training products of experts by minimizing contrastive
        divergence*. Tieleman (2008), *Training restricted Boltzmann machines
        using approximations to the likelihood gradient*, ICML. Du & Mordatch
        (2019), *Implicit generation and generalization in energy-based
        models*, NeurIPS. Nijkamp, Hill, Zhu & Wu (2019), *Learning non-convergent
        non-persistent short-run MCMC toward energy-based model*, NeurIPS.
    """

    description = "EBM"

    def __init__(
        self,
        energy_net,
        optimizer,
        method=None,
        energy_regularization=0.0,
        *,
        ema_decay=None,
    ):
        super().__init__(energy_net, optimizer, ema_decay)
        self.method = TemperedPCD() if method is None else method
        if not isinstance(self.method, NegativeSampler):
            raise ValueError(
                "`method` must be a negative sampler, e.g. TemperedPCD(), PCD(...), "
                "CD(...) or ShortRun(...) (anything with `init_sampler` and "
                f"`sample`: see NegativeSampler), got {type(self.method).__name__}."
            )
        validation.non_negative("energy_regularization", energy_regularization)
        self.energy_regularization = energy_regularization

    def _config(self):
        return {
            "method": self.method,
            "energy_regularization": self.energy_regularization,
        }

    def _divergence_hint(self):
        return (
            " An EBM's energies can also drift without bound: watch "
            "history['energy_scale'] and set `energy_regularization` (e.g. 0.1)."
        )

    def _warn_about(self, history):
        scale = np.asarray(history["energy_scale"], np.float64)
        width = max(1, scale.shape[0] // 20)
        start, end = scale[0], scale[-width:].mean()
        if end > _ENERGY_DRIFT_LIMIT and end > 100 * (1 + start):
            warnings.warn(
                f"EBM: the energies drifted from a scale of {start:.3g} to {end:.3g} "
                "(root mean square over the data and negatives, "
                "history['energy_scale']). The contrastive loss only fixes "
                "energy differences; set `energy_regularization` (e.g. 0.1; Du & "
                "Mordatch 2019) or lower the learning rate.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _energy(self, params):
        """One point -> scalar energy, for the Langevin chains."""
        return lambda x: self.apply(params, x[None])[0]

    def init(self, rng_key, data, batch_size):
        """A fresh :class:`~numpyro_ebm.TrainState` (checks inputs)."""
        data = training.check_data(data, batch_size)
        out = training.check_network_input(
            self.apply, self.init_params, data[:2], "energy network"
        )
        if out.shape != (2,):
            raise ValueError(
                f"the energy network must return one energy per point; it maps "
                f"data of shape {data[:2].shape} to {out.shape}."
            )
        key_state, key_sampler = random.split(rng_key)
        sampler_state = self.method.init_sampler(key_sampler, data, batch_size)
        return training.init_state(
            key_state, self.init_params, self.optimizer, sampler_state
        )

    def _step(self, batch_size):
        alpha = self.energy_regularization

        def step(state, data, mesh):
            state, batch, key_neg = training.next_batch(state, data, batch_size, mesh)
            negatives, sampler_state, info = self.method.sample(
                key_neg, self._energy(state.params), batch, state.sampler_state
            )
            negatives = training.shard_batch(jax.lax.stop_gradient(negatives), mesh)

            def loss_fn(params):
                e_data = self.apply(params, batch)
                e_neg = self.apply(params, negatives)
                square = jnp.mean(e_data**2) + jnp.mean(e_neg**2)
                loss = e_data.mean() - e_neg.mean()
                if alpha:
                    loss = loss + alpha * square
                return loss, (e_data.mean(), e_neg.mean(), jnp.sqrt(square / 2))

            (loss, (e_data, e_neg, scale)), grads = jax.value_and_grad(
                loss_fn, has_aux=True
            )(state.params)
            metrics = {
                "loss": loss,
                "energy_data": e_data,
                "energy_negative": e_neg,
                "energy_scale": scale,
                "grad_norm": optax.tree.norm(grads),
                **info,
            }
            new_state = self._apply_gradients(
                state._replace(sampler_state=sampler_state), grads
            )
            return new_state, metrics

        return step
