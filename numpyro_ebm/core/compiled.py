"""Functions as arguments of compiled programs.

A program compiled once per function must read the function's current
parameters at every call, not the ones it was traced with. :func:`as_pure`
splits a Flax NNX module into a hashable graph (static) and its state (an
argument). A plain function is static: it is the same static argument only
while it is the same function *and* the arrays it reads from outside (its
closure, the globals it names, a bound method's object, a
:func:`functools.partial`'s arguments, NNX modules among them) are the same
array objects. JAX arrays are immutable, so a network whose weights were
updated holds new arrays, and the program is traced again rather than
served with the weights it was traced with.
"""

import functools
import sys
import types

import numpy as np

import jax

__all__ = ["as_pure", "captured_arrays"]


def _nnx():
    """Flax NNX when it has been imported (an NNX module can only exist
    then): the core imports nothing but JAX."""
    return sys.modules.get("flax.nnx")


def _is_module(value):
    nnx = _nnx()
    return nnx is not None and isinstance(value, nnx.Module)


class _ModuleCall:
    """``(state, *args) -> module(*args)`` for a module's graph."""

    def __init__(self, graphdef):
        self.graphdef = graphdef

    def __hash__(self):
        return hash(self.graphdef)

    def __eq__(self, other):
        return isinstance(other, _ModuleCall) and self.graphdef == other.graphdef

    def __call__(self, state, *args):
        return _nnx().merge(self.graphdef, state)(*args)


class _FunctionCall:
    """``(None, *args) -> fn(*args)``: equal to another for the same function
    reading the same array objects (held here, so that their identities are
    not reused while the program lives)."""

    def __init__(self, fn):
        self.fn = fn
        self.arrays = captured_arrays(fn)

    def __hash__(self):
        return hash(id(self.fn))

    def __eq__(self, other):
        return (
            isinstance(other, _FunctionCall)
            and self.fn is other.fn
            and len(self.arrays) == len(other.arrays)
            and all(a is b for a, b in zip(self.arrays, other.arrays, strict=True))
        )

    def __call__(self, state, *args):
        return self.fn(*args)


def as_pure(fn):
    """``(apply, state)``: ``apply(state, *args) == fn(*args)``, with
    ``apply`` hashable (a static argument of :func:`jax.jit`) and ``state``
    the module's parameters (``None`` for a plain function).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = jnp.ones(2)
        >>> apply, state = as_pure(lambda x: x @ w)
        >>> float(apply(state, jnp.ones(2)))
        2.0
    """
    if _is_module(fn):
        graphdef, state = _nnx().split(fn)
        return _ModuleCall(graphdef), state
    return _FunctionCall(fn), None


def _is_array(value):
    return isinstance(value, jax.Array | np.ndarray)


def captured_arrays(fn, max_depth=4):
    """The arrays (tracers included) that ``fn`` reads from outside its
    arguments, as far as they can be found: leaves of its closure's values,
    of the module-level names its code uses, of a bound method's object, of
    a partial's arguments, and of pytrees (NNX modules) among them, following
    the functions found there ``max_depth`` levels deep.

    Example:
        >>> import jax.numpy as jnp
        >>> w = jnp.ones(3)
        >>> [a.shape for a in captured_arrays(lambda x: x * w)]
        [(3,)]
    """
    found, seen = [], set()

    def leaves(value):
        try:
            return jax.tree.leaves(value)
        except Exception:  # an object jax cannot flatten
            return [value]

    def visit(value, depth):
        if id(value) in seen or depth > max_depth:
            return
        seen.add(id(value))
        if _is_array(value):
            found.append(value)
            return
        if isinstance(value, functools.partial):
            visit(value.func, depth + 1)
            for arg in (*value.args, *value.keywords.values()):
                visit(arg, depth + 1)
            return
        if isinstance(value, types.MethodType):
            visit(value.__func__, depth)
            visit(value.__self__, depth + 1)
            return
        if isinstance(value, types.FunctionType):
            for cell in value.__closure__ or ():
                try:
                    visit(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass
            names = _code_names(value.__code__)
            for name in names:
                if name in value.__globals__:
                    target = value.__globals__[name]
                    if not isinstance(target, types.ModuleType | type):
                        visit(target, depth + 1)
            return
        if isinstance(value, list | tuple | dict) or _is_module(value):
            for leaf in leaves(value):
                if leaf is not value:
                    visit(leaf, depth + 1)
            return
        if callable(value) and hasattr(value, "__dict__"):
            for attribute in vars(value).values():
                visit(attribute, depth + 1)

    visit(fn, 0)
    return found


def _code_names(code):
    """The global names a code object and the code nested in it use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names
