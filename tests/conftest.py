import os

# Several CPU devices for chain_method="parallel" and data-parallel tests; this
# must happen before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import numpyro  # noqa: E402

numpyro.set_host_device_count(4)
