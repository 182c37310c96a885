"""Functional core: pure JAX transitions with NamedTuple states (no NumPyro)."""

from numpyro_ebm.core import (
    ais,
    batches,
    chains,
    kinetic,
    langevin,
    metrics,
    ode,
    proposals,
    rwmh,
    schedules,
    sde,
    tempering,
    validation,
)
from numpyro_ebm.core.batches import batch_indices
from numpyro_ebm.core.chains import ChainsInfo, run_chains
from numpyro_ebm.core.langevin import (
    LangevinInfo,
    LangevinState,
    langevin_proposal,
    langevin_step,
)
from numpyro_ebm.core.metrics import Metric, metric_from_inverse_mass_matrix
from numpyro_ebm.core.rwmh import RWMHInfo, RWMHState, rwmh_step
from numpyro_ebm.core.schedules import (
    geometric_schedule,
    linear_schedule,
    polynomial_schedule,
)

__all__ = [
    "ais",
    "batches",
    "batch_indices",
    "chains",
    "kinetic",
    "langevin",
    "metrics",
    "ode",
    "proposals",
    "rwmh",
    "schedules",
    "sde",
    "tempering",
    "validation",
    "ChainsInfo",
    "run_chains",
    "LangevinInfo",
    "LangevinState",
    "langevin_proposal",
    "langevin_step",
    "Metric",
    "metric_from_inverse_mass_matrix",
    "RWMHInfo",
    "RWMHState",
    "rwmh_step",
    "geometric_schedule",
    "linear_schedule",
    "polynomial_schedule",
]
