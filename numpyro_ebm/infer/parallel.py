"""Chains on several devices that share one adaptation.

NumPyro's ``chain_method="parallel"`` maps chains over devices with
:func:`jax.pmap` but names no axis, so a kernel cannot reach the other
chains: each adapts alone. :func:`parallel_chains`, passed as
``chain_method``, maps them over a named axis instead, and the kernels of
this package then pool their warm-up over all chains through collectives,
as they do for ``chain_method="vectorized"``.
"""

import warnings

import jax
import jax.numpy as jnp
from jax import random

__all__ = ["CHAIN_AXIS", "parallel_chains"]

#: the name of the axis that :func:`parallel_chains` maps chains over
CHAIN_AXIS = "chains"


def parallel_chains(fn):
    """A ``chain_method`` for :class:`numpyro.infer.MCMC`: one chain per
    device, the chains sharing their warm-up adaptation.

    Like ``chain_method="parallel"``, chains run on separate devices
    (:func:`jax.pmap`), but over an axis named :data:`CHAIN_AXIS`, so that a
    kernel of this package with ``pool_chains=True`` (the default) tunes one
    step size and one mass matrix from all chains, exactly as with
    ``chain_method="vectorized"``. With fewer local devices than chains,
    the chains are vectorized on one device instead (still pooled), with a
    warning, as NumPyro falls back to sequential chains. Other kernels
    (NumPyro's NUTS, ...) run as they would under ``"parallel"``. NumPyro
    shows no progress bar for a callable ``chain_method``.

    Under a pooled kernel the draws are those of ``chain_method=
    "vectorized"`` with the same key (bit for bit where the compiled
    reductions agree); each iteration gathers every chain's position and
    acceptance on every device, for the shared adaptation.

    Example:
        >>> import jax, numpyro, numpyro.distributions as dist
        >>> from numpyro.infer import MCMC
        >>> import numpyro_ebm as ne
        >>> def model():
        ...     numpyro.sample("x", dist.Normal(0.0, 2.0))
        >>> mcmc = MCMC(ne.MALA(model), num_warmup=200, num_samples=200,
        ...             num_chains=jax.local_device_count(),
        ...             chain_method=ne.parallel_chains, progress_bar=False)
        >>> mcmc.run(jax.random.key(0))
        >>> steps = mcmc.get_extra_fields()["adapt_state.step_size"]
        >>> bool((steps == steps[0]).all())  # one step size for all chains
        True
    """

    def run(args):
        num_chains = jnp.shape(args[0])[0]
        if num_chains <= jax.local_device_count():
            return jax.pmap(fn, axis_name=CHAIN_AXIS)(args)
        warnings.warn(
            f"parallel_chains: {num_chains} chains on {jax.local_device_count()} "
            "local device(s); the chains are vectorized on one device instead "
            "(their adaptation is still pooled).",
            UserWarning,
            stacklevel=2,
        )
        with warnings.catch_warnings():
            # NumPyro's loop donates its carry, which a vmapped loop cannot use
            warnings.filterwarnings("ignore", "Some donated buffers were not usable")
            return jax.vmap(fn, axis_name=CHAIN_AXIS)(args)

    return run


# ------------------------------------------------------ inside the mapped chain
def axis_is_bound():
    """Whether the caller runs under a transformation naming :data:`CHAIN_AXIS`."""
    try:
        jax.lax.axis_index(CHAIN_AXIS)
    except NameError:
        return False
    return True


def index():
    """This chain's index along :data:`CHAIN_AXIS`."""
    return jax.lax.axis_index(CHAIN_AXIS)


def gather(tree):
    """Every chain's value of each leaf, stacked on a new leading axis."""

    def one(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return random.wrap_key_data(
                jax.lax.all_gather(random.key_data(x), CHAIN_AXIS),
                impl=random.key_impl(x),
            )
        return jax.lax.all_gather(x, CHAIN_AXIS)

    return jax.tree.map(one, tree)


def first_chain(tree):
    """Chain 0's value of each leaf, on every chain."""
    return jax.tree.map(lambda x: x[0], gather(tree))


def own(tree):
    """This chain's entry of each leaf of a gathered ``tree``."""
    i = index()
    return jax.tree.map(lambda x: x[i], tree)
