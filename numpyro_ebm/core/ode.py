"""The probability-flow ODE of a score-based diffusion model, solved with diffrax.

For a forward SDE ``dx = f(x, t) dt + g(t) dW`` (:mod:`numpyro_ebm.core.sde`)
with marginals ``p_t``, the ODE

    ``dx/dt = F(x, t) = f(x, t) - g(t)^2 s(x, t) / 2``,  ``s = grad log p_t``,

carries ``p_t`` to ``p_u`` for every ``t, u`` (Song et al. 2021, sec. 4.3): the
deterministic twin of the reverse SDE. Solving it from the prior at ``t = 1``
down to ``eps`` samples (:func:`ode_sample`); solving it up from data gives
the exact log-likelihood of the flow by the instantaneous change of variables
(Chen et al. 2018),

    ``log p_eps(x(eps)) = log p_1(x(1)) + int_eps^1 div_x F(x(t), t) dt``,

(:func:`ode_log_likelihood`), with ``p_1`` replaced by the SDE's prior. The
divergence is the exact Jacobian trace (``d`` Jacobian-vector products, for
low dimension) or Hutchinson's estimator ``v' (dF/dx) v`` with Rademacher
probes ``v`` drawn once from a fixed key and held over the solve (Grathwohl
et al. 2019), unbiased for the log-likelihood.

The solves are adaptive (``diffrax.Tsit5`` with a PID step-size controller,
``rtol = atol = 1e-5`` as in Song et al.) and jittable. A solve that fails
(too many steps, usually a score that is non-finite or very stiff somewhere)
raises ``RuntimeError`` with the time it reached, when called outside ``jit``.

References:
    1. Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
       *Score-based generative modeling through stochastic differential
       equations*, ICLR.
    2. Chen, Rubanova, Bettencourt & Duvenaud (2018), *Neural ordinary
       differential equations*, NeurIPS.
    3. Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud (2019), *FFJORD:
       free-form continuous dynamics for scalable reversible generative
       models*, ICLR.
"""

import math

import jax
import jax.numpy as jnp
from jax import random

from numpyro_ebm.core import validation
from numpyro_ebm.core.sde import check_batch_and_score

__all__ = [
    "probability_flow_drift",
    "ode_sample",
    "ode_log_likelihood",
    "bits_per_dim",
]

TRACE_ESTIMATORS = ("exact", "hutchinson")


def probability_flow_drift(score_fn, sde):
    """``F(x, t) = f(x, t) - g(t)^2 s(x, t) / 2`` for a batch ``x`` and scalar
    ``t``: the probability-flow ODE's vector field.

    Example:
        >>> import jax.numpy as jnp
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> F = probability_flow_drift(lambda x, t: -x, vp_sde())
        >>> abs(float(F(jnp.ones((1, 1)), 0.5)[0, 0])) < 1e-5  # N(0, I): F = 0
        True
    """

    def drift(x, t):
        t_batch = jnp.full(jnp.shape(x)[:1], t, jnp.result_type(x, float))
        g = sde.diffusion(t)
        return sde.drift(x, t) - 0.5 * g**2 * score_fn(x, t_batch)

    return drift


def _solve(field, y0, t0, t1, args, *, rtol, atol, solver, max_steps, what):
    """One adaptive diffrax solve of ``dy/dt = field(t, y, args)`` from ``t0``
    to ``t1``; returns the state at ``t1``. ``field`` is a module-level
    function and the score travels in ``args``, so repeated solves with the
    same score reuse diffrax's compiled solve. Outside ``jit`` a failed solve
    raises with the time it reached."""
    import diffrax

    validation.positive("rtol", rtol)
    validation.positive("atol", atol)
    max_steps = validation.positive_integer("max_steps", max_steps)
    saveat = diffrax.SaveAt(
        subs=[
            diffrax.SubSaveAt(t1=True),
            # the time of every accepted step: a failed solve reports where
            # it stopped, at the cost of one scalar per step
            diffrax.SubSaveAt(steps=True, fn=_time),
        ]
    )
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver if solver is not None else diffrax.Tsit5(),
        t0,
        t1,
        (t1 - t0) / 100.0,
        y0,
        args=args,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        throw=False,
        # evaluation, not training through the solve: the plain bounded loop
        # is a quarter faster than the default checkpointed one
        adjoint=diffrax.DirectAdjoint(),
    )
    end = jax.tree.map(lambda leaf: leaf[0], solution.ys[0])
    steps = solution.ys[1]
    failed = solution.result != diffrax.RESULTS.successful
    if not isinstance(failed, jax.core.Tracer) and bool(failed):
        finite = jnp.isfinite(steps)
        reached = t0
        if bool(jnp.any(finite)):
            reached = float(jnp.where(finite, steps, t0)[jnp.sum(finite) - 1])
        raise RuntimeError(
            f"{what}: the diffrax solve from t = {t0:.4g} to t = {t1:.4g} failed at "
            f"t = {reached:.6g} after {int(solution.stats['num_steps'])} steps: "
            f"{diffrax.RESULTS[solution.result]} A score that is non-finite or "
            "very stiff near that time makes every step fail; check it there, or "
            "raise `max_steps` or the tolerances."
        )
    return end


def _time(t, y, args):
    return t


def _flow_field(t, y, args):
    score_fn, sde = args
    return probability_flow_drift(score_fn, sde)(y, t)


def _divergence(drift, y, t, vectors, axes):
    """``sum_k v_k' (dF/dy) v_k`` per point, one JVP per vector (a scan)."""

    def one(total, v):
        _, tangent = jax.jvp(lambda y: drift(y, t), (y,), (v,))
        return total + jnp.sum(tangent * v, axis=axes), None

    total, _ = jax.lax.scan(one, jnp.zeros(y.shape[:1], y.dtype), vectors)
    return total


def _likelihood_field(t, state, args):
    score_fn, sde, vectors, scale = args
    y, _ = state
    drift = probability_flow_drift(score_fn, sde)
    axes = tuple(range(1, y.ndim))
    return drift(y, t), scale * _divergence(drift, y, t, vectors, axes)


def ode_sample(
    score_fn,
    sde,
    x,
    *,
    eps=1e-3,
    rtol=1e-5,
    atol=1e-5,
    solver=None,
    max_steps=4096,
):
    """Samples by the probability-flow ODE, from ``t = 1`` down to ``eps``.

    ``x`` holds the starting points, a batch drawn from the prior
    (``sde.sample_prior``); ``score_fn(x, t)`` takes ``t`` of shape ``(n,)``.
    The map from ``x`` to the result is deterministic and invertible.

    Args:
        score_fn: the time-conditional score ``s(x, t)``.
        sde: the forward SDE the score belongs to.
        x: starting points, shape ``(n, ...)``.
        eps: the final time.
        rtol, atol: the step-size controller's tolerances.
        solver: a diffrax solver (default ``diffrax.Tsit5()``).
        max_steps: the solver's step limit.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> sde = vp_sde()
        >>> x1 = sde.sample_prior(jax.random.key(0), (2000, 2))
        >>> score = lambda x, t: -x  # N(0, I)'s score at every t: the flow is still
        >>> x0 = ode_sample(score, sde, x1)
        >>> bool(jnp.allclose(x0, x1, atol=1e-4))
        True

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021),
        *Score-based generative modeling through stochastic differential
        equations*, ICLR.
    """
    eps = float(validation.probability("eps", eps))
    x = check_batch_and_score(score_fn, x)
    return _solve(
        _flow_field,
        x,
        1.0,
        eps,
        (score_fn, sde),
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        what="ode_sample",
    )


def ode_log_likelihood(
    score_fn,
    sde,
    x,
    *,
    eps=1e-5,
    trace_estimator="exact",
    rng_key=None,
    num_probes=1,
    rtol=1e-5,
    atol=1e-5,
    solver=None,
    max_steps=4096,
):
    """The log-likelihood, in nats, of each point of ``x`` under the
    probability-flow model at time ``eps``.

    Solves the ODE and ``d(delta)/dt = div_x F(x(t), t)`` together from
    ``eps`` to 1 and returns ``sde.prior_log_prob(x(1)) + delta(1)``, one
    number per point. :func:`bits_per_dim` converts it.

    Args:
        score_fn: the time-conditional score ``s(x, t)``.
        sde: the forward SDE the score belongs to.
        x: data, shape ``(n,) + event_shape``.
        eps: the starting time (the model is the law at ``eps``).
        trace_estimator: ``"exact"`` (the Jacobian's trace from ``d``
            Jacobian-vector products: low dimension) or ``"hutchinson"``
            (``mean_k v_k' (dF/dx) v_k`` over ``num_probes`` Rademacher probes,
            drawn once from ``rng_key`` and fixed over the solve).
        rng_key: the probes' key (``"hutchinson"`` only).
        num_probes: probes per point (``"hutchinson"`` only).
        rtol, atol: the step-size controller's tolerances.
        solver: a diffrax solver (default ``diffrax.Tsit5()``).
        max_steps: the solver's step limit.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax.scipy.stats import norm
        >>> from numpyro_ebm.core.sde import vp_sde
        >>> x = jax.random.normal(jax.random.key(0), (5, 2))
        >>> ll = ode_log_likelihood(lambda x, t: -x, vp_sde(), x)  # exact for N(0, I)
        >>> bool(jnp.allclose(ll, norm.logpdf(x).sum(-1), atol=1e-4))
        True

    References:
        Song et al. (2021), sec. 4.3 and appendix D.2; Chen et al. (2018);
        Grathwohl et al. (2019), *FFJORD*.
    """
    eps = float(validation.probability("eps", eps))
    x = check_batch_and_score(score_fn, x)
    if trace_estimator not in TRACE_ESTIMATORS:
        raise ValueError(
            f"`trace_estimator` must be one of {TRACE_ESTIMATORS}, got "
            f"{trace_estimator!r}."
        )
    n, event_shape = x.shape[0], x.shape[1:]
    d = math.prod(event_shape)
    if trace_estimator == "exact":
        # the basis vectors, each a direction for the whole batch
        eye = jnp.eye(d, dtype=x.dtype).reshape((d, 1) + event_shape)
        vectors, scale = jnp.broadcast_to(eye, (d,) + x.shape), 1.0
    else:
        if rng_key is None:
            raise ValueError(
                '`trace_estimator="hutchinson"` needs `rng_key` for its probes.'
            )
        num_probes = validation.positive_integer("num_probes", num_probes)
        vectors = random.rademacher(rng_key, (num_probes,) + x.shape, x.dtype)
        scale = 1.0 / num_probes
    y1, delta = _solve(
        _likelihood_field,
        (x, jnp.zeros(n, x.dtype)),
        eps,
        1.0,
        (score_fn, sde, vectors, scale),
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        what="ode_log_likelihood",
    )
    return sde.prior_log_prob(y1, event_ndims=len(event_shape)) + delta


def bits_per_dim(log_likelihood, num_dims, *, offset=0.0):
    """Nats per point to bits per dimension: ``-(log_likelihood + offset) /
    (num_dims log 2)``.

    ``offset`` adds a constant in nats, e.g. ``num_dims * log(scale)`` for data
    rescaled by ``1 / scale`` before training, to report the likelihood of the
    original units.

    Example:
        >>> round(float(bits_per_dim(-2 * jnp.log(2.0), 2)), 6)
        1.0
    """
    num_dims = validation.positive_integer("num_dims", num_dims)
    return -(jnp.asarray(log_likelihood) + offset) / (num_dims * math.log(2.0))
