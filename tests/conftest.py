import os
from pathlib import Path

# Several CPU devices for chain_method="parallel" and data-parallel tests; this
# must happen before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

# JAX's persistent compilation cache, inside the checkout (a fresh clone starts
# empty): tests that build the same sampler twice (reproducibility, chain
# methods, ...) compile it once. The example scripts run as subprocesses and
# read it from the environment.
CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# Most tests compile far more than they run: XLA's optimisations (LLVM's
# above all) cost more time than they save, so they are off. Tests marked
# `optimized` (long runs, and comparisons of programs compiled two ways, e.g.
# pmap against vmap, to a tolerance) turn them back on; compiling them does
# not change what a program computes, only how fast it runs and how sums
# are rounded.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pytest  # noqa: E402

import jax  # noqa: E402
import numpyro  # noqa: E402

numpyro.set_host_device_count(4)
_UNOPTIMIZED = jax.config.read("jax_disable_most_optimizations")


@pytest.fixture(autouse=True)
def _xla_optimisations(request):
    """XLA's optimisations on for tests marked ``optimized``."""
    if _UNOPTIMIZED and request.node.get_closest_marker("optimized"):
        jax.config.update("jax_disable_most_optimizations", False)
        try:
            yield
        finally:
            jax.config.update("jax_disable_most_optimizations", True)
    else:
        yield


# The longest modules first: `--dist loadscope` hands whole modules to the
# workers in collection order, so a long module collected last leaves the
# other worker idle until it ends.
_LONGEST_FIRST = (
    "test_mml.py",
    "test_ebm.py",
    "test_distributed.py",
    "test_kernels_api.py",
    "test_score_posterior.py",
    "test_moments.py",
    "test_examples.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return (
            _LONGEST_FIRST.index(name)
            if name in _LONGEST_FIRST
            else len(_LONGEST_FIRST)
        )

    items.sort(key=rank)  # stable: each module's own order is kept
