"""Functions as arguments of compiled estimators.

An estimator compiled once per function must read the function's current
parameters at every call, not the ones it was traced with. :func:`as_pure`
splits a Flax NNX module into a hashable graph (static) and its state (an
argument); a plain function is hashed by identity (the same function reuses
its compiled program).
"""

from flax import nnx

__all__ = ["as_pure"]


class _ModuleCall:
    """``(state, *args) -> module(*args)`` for a module's graph."""

    def __init__(self, graphdef):
        self.graphdef = graphdef

    def __hash__(self):
        return hash(self.graphdef)

    def __eq__(self, other):
        return isinstance(other, _ModuleCall) and self.graphdef == other.graphdef

    def __call__(self, state, *args):
        return nnx.merge(self.graphdef, state)(*args)


class _FunctionCall:
    """``(None, *args) -> fn(*args)``, hashed by the function's identity."""

    def __init__(self, fn):
        self.fn = fn

    def __hash__(self):
        return hash(id(self.fn))

    def __eq__(self, other):
        return isinstance(other, _FunctionCall) and self.fn is other.fn

    def __call__(self, state, *args):
        return self.fn(*args)


def as_pure(fn):
    """``(apply, state)``: ``apply(state, *args) == fn(*args)``, with
    ``apply`` hashable (a static argument of :func:`jax.jit`) and ``state``
    the module's parameters (``None`` for a plain function)."""
    if isinstance(fn, nnx.Module):
        graphdef, state = nnx.split(fn)
        return _ModuleCall(graphdef), state
    return _FunctionCall(fn), None
