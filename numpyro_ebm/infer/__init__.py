"""NumPyro skins: MCMC kernels built on the functional core."""

from numpyro_ebm.infer.base import KernelState
from numpyro_ebm.infer.kernels import MALA, RWMH, ULA, AnnealedLangevin

__all__ = ["KernelState", "ULA", "MALA", "RWMH", "AnnealedLangevin"]
