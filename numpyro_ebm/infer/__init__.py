"""NumPyro skins: MCMC kernels built on the functional core."""

from numpyro_ebm.infer.base import KernelState
from numpyro_ebm.infer.kernels import MALA, RWMH, ULA, AnnealedLangevin
from numpyro_ebm.infer.kinetic import MALT, UnderdampedLangevin
from numpyro_ebm.infer.parallel import parallel_chains
from numpyro_ebm.infer.score_posterior import ScorePosterior
from numpyro_ebm.infer.stochastic_gradient import SGHMC, SGLD
from numpyro_ebm.infer.tempering import ParallelTempering

__all__ = [
    "KernelState",
    "ULA",
    "MALA",
    "RWMH",
    "AnnealedLangevin",
    "MALT",
    "UnderdampedLangevin",
    "ParallelTempering",
    "ScorePosterior",
    "SGLD",
    "SGHMC",
    "parallel_chains",
]
