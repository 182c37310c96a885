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

import numpyro  # noqa: E402

numpyro.set_host_device_count(4)
