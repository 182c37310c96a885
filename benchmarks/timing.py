"""Wall time of a call, and the part of it spent compiling.

Compile time is the sum of the tracing, lowering and XLA compilation events
that ``jax.monitoring`` reports while the call runs.
"""

import time

import jax

COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_seconds = []


def _on_event(event, duration, **kwargs):
    if event in COMPILE_EVENTS:
        _compile_seconds.append(duration)


jax.monitoring.register_event_duration_secs_listener(_on_event)


def timed(fn):
    """``(fn(), wall seconds, compile seconds)``; ``fn`` should block until
    its results are ready."""
    _compile_seconds.clear()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    return out, seconds, float(sum(_compile_seconds))
