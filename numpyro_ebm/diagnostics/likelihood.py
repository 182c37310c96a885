"""Log-likelihoods of unnormalised and latent-variable models.

* :func:`grid_log_likelihood` estimates the held-out log-likelihood of a 2-D
  energy by computing its normalising constant on a grid.
* :func:`importance_log_likelihood` is the importance-sampled marginal
  log-likelihood ``log p(x_i)`` of each data point of a NumPyro model, with a
  guide as the proposal (a VAE's test likelihood).

Both refuse inputs that would give a NaN or an infinite value, and raise
``FloatingPointError`` when the result is not finite anyway.
"""

import math

import numpy as np

import jax
import jax.numpy as jnp
from jax import Array
from numpyro.handlers import replay, seed, substitute, trace

from numpyro_ebm.core import validation
from numpyro_ebm.diagnostics.sample_quality import (
    _as_samples,
    _finite_result,
    _is_concrete,
)
from numpyro_ebm.distributions import EnergyDistribution

__all__ = ["grid_log_likelihood", "importance_log_likelihood"]


# ------------------------------------------------------------ grid likelihood


def grid_log_likelihood(energy_fn, data, bounds, num_grid=256) -> Array:
    """Average log-likelihood of 2-D ``data`` under the density ``exp(-E) / Z``.

    The normalising constant is computed with the midpoint rule on a
    ``num_grid x num_grid`` grid of cells over ``bounds``::

        log Z ~= logsumexp_k(-E(g_k)) + log(cell area)

    over the cell centres ``g_k``, and the result is ``mean_i(-E(data_i)) -
    log Z`` in nats. For an ``energy_fn`` that is ``-log p`` of a normalised
    density this is the mean log-density of ``data`` up to the grid error (the
    mass outside ``bounds`` plus the quadrature error), so ``bounds`` should
    cover essentially all of the model's mass and the data. Rows of the grid
    are evaluated one at a time, so ``energy_fn`` sees batches of ``num_grid``
    points.

    Args:
        energy_fn: batched energy, maps (n, 2) to (n,).
        data: held-out points, shape (n, 2).
        bounds: ``((xmin, xmax), (ymin, ymax))`` with ``xmin < xmax`` and
            ``ymin < ymax``.
        num_grid: positive number of cells per axis (static).

    Returns:
        The average held-out log-likelihood in nats, a scalar.

    Raises:
        ValueError: for data that is not (n, 2) with ``n >= 1``, non-finite
            data, malformed or empty ``bounds``, a non-positive ``num_grid`` or
            an ``energy_fn`` that does not return one energy per point.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> energy = lambda z: 0.5 * jnp.sum(z**2, axis=-1)  # unnormalised N(0, I)
        >>> data = jax.random.normal(jax.random.PRNGKey(0), (1000, 2))
        >>> ll = grid_log_likelihood(energy, data, ((-8, 8), (-8, 8)))
        >>> exact = jnp.mean(-energy(data)) - jnp.log(2 * jnp.pi)
        >>> bool(jnp.abs(ll - exact) < 1e-4)
        True
    """
    data = _as_samples(data, "data", min_samples=1)
    if data.shape[1] != 2:
        raise ValueError(
            f"data must have shape (n, 2) for a 2-D energy; got {data.shape}."
        )
    num_grid = validation.positive_integer("num_grid", num_grid)
    bounds_arr = jnp.asarray(bounds, dtype=data.dtype)
    if bounds_arr.shape != (2, 2):
        raise ValueError(
            "bounds must be ((xmin, xmax), (ymin, ymax)); got an array of shape "
            f"{bounds_arr.shape}."
        )
    if _is_concrete(bounds_arr):
        b = np.asarray(bounds_arr)
        if not np.all(np.isfinite(b)) or not np.all(b[:, 0] < b[:, 1]):
            raise ValueError(
                f"bounds must be finite with xmin < xmax and ymin < ymax; got {bounds}."
            )

    lower, upper = bounds_arr[:, 0], bounds_arr[:, 1]
    width = (upper - lower) / num_grid
    centres = (jnp.arange(num_grid, dtype=data.dtype) + 0.5)[:, None]
    axes = lower + centres * width  # (num_grid, 2): cell centres per axis
    gx, gy = axes[:, 0], axes[:, 1]

    def row_log_mass(y_value):
        row = jnp.stack([gx, jnp.full_like(gx, y_value)], axis=-1)
        energies = jnp.asarray(energy_fn(row))
        if energies.shape != (num_grid,):
            raise ValueError(
                f"energy_fn must map points of shape (n, 2) to energies of shape "
                f"(n,); got {energies.shape} for input of shape {row.shape}."
            )
        return jax.nn.logsumexp(-energies)

    log_z = jax.nn.logsumexp(jax.lax.map(row_log_mass, gy)) + jnp.log(
        width[0] * width[1]
    )
    data_energies = jnp.asarray(energy_fn(data))
    if data_energies.shape != (data.shape[0],):
        raise ValueError(
            f"energy_fn must map points of shape (n, 2) to energies of shape (n,); "
            f"got {data_energies.shape} for data of shape {data.shape}."
        )
    return _finite_result(
        "grid_log_likelihood",
        jnp.mean(-data_energies) - log_z,
        "energy_fn returned NaN on the grid or at the data, -inf somewhere, or "
        "+inf at a data point (which then has likelihood zero).",
    )


# --------------------------------------------------- importance-sampled marginal


def _energy_part(fn):
    """The EnergyDistribution inside ``fn``'s wrappers, or ``None``; and the
    mask of any masking wrapper on the way."""
    mask = True
    while not isinstance(fn, EnergyDistribution) and hasattr(fn, "base_dist"):
        if hasattr(fn, "_mask"):  # MaskedDistribution
            mask = jnp.logical_and(mask, fn._mask)
        fn = fn.base_dist
    return (fn if isinstance(fn, EnergyDistribution) else None), mask


def _site_log_prob(name, site, log_normalizers):
    """A site's log density per batch element, normalised if it is an energy."""
    fn = site["fn"]
    log_prob = fn.log_prob(site["value"])
    energy, mask = _energy_part(fn)
    if energy is not None:
        if name not in log_normalizers:
            raise ValueError(
                f"sample site '{name}' has an unnormalised density "
                "(EnergyDistribution): pass log_normalizers="
                f"{{'{name}': log_z}}, e.g. from its log_normalizer(), or "
                "log_normalizers='estimate'."
            )
        # each element of log_prob sums this many draws of the energy's law
        count = math.prod(fn.event_shape) // max(1, math.prod(energy.event_shape))
        log_prob = log_prob - count * jnp.where(mask, log_normalizers[name], 0.0)
    if site.get("mask") is not None:  # numpyro.handlers.mask
        log_prob = jnp.where(site["mask"], log_prob, 0.0)
    return log_prob


def _per_datum(name, site, log_prob, data_plate):
    frames = [f for f in site["cond_indep_stack"] if f.name == data_plate]
    if not frames:
        raise ValueError(
            f"sample site '{name}' lies outside the plate '{data_plate}': the "
            "marginal likelihood per data point needs every latent and observed "
            "site inside the data plate."
        )
    scale = site.get("scale")
    if scale is not None and not (
        _is_concrete(scale) and bool(np.all(np.asarray(scale) == 1))
    ):
        raise ValueError(
            f"sample site '{name}' is scaled (a subsampled plate or "
            "numpyro.handlers.scale): evaluate the marginal likelihood on the "
            "whole data, e.g. with subsample_size=None."
        )
    axis = jnp.ndim(log_prob) + frames[0].dim
    log_prob = jnp.moveaxis(log_prob, axis, 0)
    return log_prob.reshape(log_prob.shape[0], -1).sum(1)


#: importance samples :func:`importance_log_likelihood` evaluates at once
DEFAULT_BATCH_SIZE = 64


def importance_log_likelihood(
    rng_key,
    model,
    guide,
    params,
    *args,
    num_samples=1000,
    data_plate=None,
    log_normalizers=None,
    batch_size=None,
    **kwargs,
):
    """Per-datum marginal log-likelihood ``log p(x_i)`` by importance sampling.

    For a NumPyro model whose latent and observed sites are local to a data
    plate, and a guide ``q(z_i | x_i)`` (e.g. a VAE's encoder), each data point
    gets ``log (1/S) sum_s p(x_i, z_s) / q(z_s | x_i)`` with ``z_s ~ q``
    (Burda, Grosse & Salakhutdinov 2016): a consistent estimate, biased low by
    ``O(1/S)``, that is the usual test log-likelihood of a VAE.

    Sites with an unnormalised density (an :class:`~numpyro_ebm.EnergyDistribution`
    prior) need their ``log Z``: pass ``log_normalizers={"z": log_z}``, e.g.
    from :meth:`EnergyDistribution.log_normalizer
    <numpyro_ebm.EnergyDistribution.log_normalizer>`, or
    ``log_normalizers="estimate"`` to have each one estimated that way (100,000
    draws from its base density); without either the function refuses rather
    than return an unnormalised value.

    Args:
        rng_key: a JAX key.
        model, guide: NumPyro model and guide, called with ``*args, **kwargs``.
        params: constrained parameter values (``SVI.get_params(state)``).
        num_samples: importance samples ``S`` per data point.
        data_plate: name of the data plate (found automatically when the
            observed sites share exactly one plate).
        log_normalizers: ``{site name: log Z}`` for unnormalised sites (the
            ``log Z`` of one draw of the site's EnergyDistribution; it is
            counted once per draw inside each element, e.g. ``k`` times under
            ``.to_event`` of ``k`` draws), or ``"estimate"``.
        batch_size: importance samples evaluated at once, vectorized (the
            memory of that many model runs); default 64, or ``num_samples``
            when fewer.

    Returns:
        ``log p(x_i)``, an array with one entry per data point.

    Raises:
        ValueError: a site outside the data plate, a scaled (subsampled) site,
            a latent without a guide site, or an unnormalised prior without its
            ``log Z``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro, numpyro.distributions as dist
        >>> import numpyro_ebm as ne
        >>> x = jnp.array([-1.0, 0.0, 2.0])
        >>> def model(x):
        ...     with numpyro.plate("data", 3):
        ...         z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        ...         numpyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):  # the exact posterior: every weight is p(x_i)
        ...     with numpyro.plate("data", 3):
        ...         numpyro.sample("z", dist.Normal(x / 2, 0.5**0.5))
        >>> ll = ne.importance_log_likelihood(jax.random.key(0), model, guide, {}, x)
        >>> bool(jnp.allclose(ll, dist.Normal(0.0, 2**0.5).log_prob(x), atol=1e-5))
        True

    References:
        Burda, Grosse & Salakhutdinov (2016), *Importance weighted
        autoencoders*, ICLR.
    """
    num_samples = validation.positive_integer("num_samples", num_samples)
    if batch_size is None:  # lax.map's default is one sample at a time
        batch_size = min(num_samples, DEFAULT_BATCH_SIZE)
    batch_size = validation.positive_integer("batch_size", batch_size)
    model = substitute(model, data=params)
    guide = substitute(guide, data=params)
    rng_key, key_z = jax.random.split(rng_key)
    if isinstance(log_normalizers, str):
        if log_normalizers != "estimate":
            raise ValueError("`log_normalizers` must be a dict or 'estimate'.")
        tr = trace(seed(model, key_z)).get_trace(*args, **kwargs)
        log_normalizers = {}
        for name, site in tr.items():
            energy = _energy_part(site["fn"])[0] if site["type"] == "sample" else None
            if energy is None:
                continue
            if energy.batch_shape:
                raise ValueError(
                    f"site '{name}': 'estimate' needs an EnergyDistribution without "
                    "batch_shape (let plates and .expand() batch it); pass its "
                    "log_normalizers explicitly."
                )
            log_normalizers[name] = energy.log_normalizer(key_z)[0]
    log_normalizers = dict(log_normalizers or {})

    def log_weights(key):
        key_guide, key_model = jax.random.split(key)
        guide_tr = trace(seed(guide, key_guide)).get_trace(*args, **kwargs)
        model_tr = trace(seed(replay(model, guide_tr), key_model)).get_trace(
            *args, **kwargs
        )
        plate = data_plate
        if plate is None:
            common = None
            for site in model_tr.values():
                if site["type"] == "sample" and site["is_observed"]:
                    names = {f.name for f in site["cond_indep_stack"]}
                    common = names if common is None else common & names
            if not common or len(common) > 1:
                raise ValueError(
                    "cannot tell the data plate from the observed sites' plates "
                    f"{sorted(common or [])}: pass data_plate=..."
                )
            (plate,) = common
        for name, site in model_tr.items():
            if (
                site["type"] == "sample"
                and not site["is_observed"]
                and name not in guide_tr
            ):
                raise ValueError(
                    f"latent site '{name}' has no site in the guide: the importance "
                    "weights need the proposal density of every latent."
                )
        total = 0.0
        for name, site in model_tr.items():
            if site["type"] == "sample":
                log_prob = _site_log_prob(name, site, log_normalizers)
                total = total + _per_datum(name, site, log_prob, plate)
        for name, site in guide_tr.items():
            if site["type"] == "sample" and not site["is_observed"]:
                log_q = site["fn"].log_prob(site["value"])
                if site.get("mask") is not None:
                    log_q = jnp.where(site["mask"], log_q, 0.0)
                total = total - _per_datum(name, site, log_q, plate)
        return total

    keys = jax.random.split(rng_key, num_samples)
    log_w = jax.lax.map(log_weights, keys, batch_size=batch_size)
    if _is_concrete(log_w) and bool(jnp.any(jnp.isnan(log_w))):
        raise FloatingPointError(
            f"importance_log_likelihood: {int(jnp.sum(jnp.isnan(log_w)))} importance "
            "log-weights are NaN (the model or guide density is NaN at a guide "
            "draw: check the parameters and the guide's support)."
        )
    return _finite_result(
        "importance_log_likelihood",
        jax.scipy.special.logsumexp(log_w, 0) - np.log(num_samples),
        "every importance weight of some data point is zero or infinite.",
    )
