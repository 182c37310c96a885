"""Diagnostics: sample quality without a ground truth, and likelihoods.

:mod:`~numpyro_ebm.diagnostics.sample_quality` scores samples (kernel Stein
discrepancy, MMD); :mod:`~numpyro_ebm.diagnostics.likelihood` estimates
log-likelihoods (on a grid, by importance sampling);
:mod:`~numpyro_ebm.diagnostics.ais` the normalising constants of energies
(annealed importance sampling); :mod:`~numpyro_ebm.diagnostics.diffusion`
the likelihood bound of a diffusion model.
"""

from numpyro_ebm.diagnostics.ais import (
    AISResult,
    HeldOutLikelihood,
    ais_log_likelihood,
    ais_log_normalizer,
)
from numpyro_ebm.diagnostics.diffusion import DiffusionELBO, diffusion_elbo
from numpyro_ebm.diagnostics.likelihood import (
    grid_log_likelihood,
    importance_log_likelihood,
)
from numpyro_ebm.diagnostics.sample_quality import kernel_stein_discrepancy, mmd

__all__ = [
    "kernel_stein_discrepancy",
    "mmd",
    "grid_log_likelihood",
    "importance_log_likelihood",
    "ais_log_normalizer",
    "ais_log_likelihood",
    "AISResult",
    "HeldOutLikelihood",
    "diffusion_elbo",
    "DiffusionELBO",
]
