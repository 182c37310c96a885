"""numpyro_ebm: Langevin kernels, neural energy priors and MCMC-based learning
for NumPyro."""

from numpyro_ebm import core, datasets, nn
from numpyro_ebm.core.annealed import (
    annealed_langevin,
    noise_annealed_langevin,
    reverse_diffusion,
)
from numpyro_ebm.core.schedules import (
    geometric_schedule,
    linear_schedule,
    polynomial_schedule,
)
from numpyro_ebm.diagnostics import (
    AISResult,
    DiffusionELBO,
    HeldOutLikelihood,
    ais_log_likelihood,
    ais_log_normalizer,
    diffusion_elbo,
    grid_log_likelihood,
    importance_log_likelihood,
    kernel_stein_discrepancy,
    mmd,
)
from numpyro_ebm.distributions import EnergyDistribution, ScoreDistribution
from numpyro_ebm.infer import (
    MALA,
    MALT,
    RWMH,
    SGHMC,
    SGLD,
    ULA,
    AnnealedLangevin,
    KernelState,
    ParallelTempering,
    ScorePosterior,
    UnderdampedLangevin,
    parallel_chains,
)
from numpyro_ebm.learn import (
    CD,
    EBM,
    IPLA,
    MCEM,
    PCD,
    PGD,
    SOUL,
    DenoisingScoreMatching,
    DiffusionScoreMatching,
    ExactScoreMatching,
    MMLRunResult,
    NegativeSampler,
    ParticleState,
    RunResult,
    ScoreMatching,
    ShortRun,
    SlicedScoreMatching,
    TemperedPCD,
    TrainResult,
    TrainState,
    annealed_denoising_score_matching_loss,
    denoising_score_matching_loss,
    diffusion_score_matching_loss,
    exact_score_matching_loss,
    score_from_energy,
    sliced_score_matching_loss,
)
from numpyro_ebm.learn.distributed import local_shard

__version__ = "0.1.0.dev0"


def __getattr__(name):
    # ne.plots like ne.datasets and ne.nn, imported on first use so that
    # matplotlib stays optional
    if name == "plots":
        import importlib

        return importlib.import_module("numpyro_ebm.plots")
    raise AttributeError(f"module 'numpyro_ebm' has no attribute {name!r}")


__all__ = [
    "core",
    "datasets",
    "nn",
    "plots",
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
    "ULA",
    "MALA",
    "MALT",
    "UnderdampedLangevin",
    "ParallelTempering",
    "ScorePosterior",
    "parallel_chains",
    "RWMH",
    "SGLD",
    "SGHMC",
    "AnnealedLangevin",
    "KernelState",
    "geometric_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "noise_annealed_langevin",
    "reverse_diffusion",
    "annealed_langevin",
    "EnergyDistribution",
    "ScoreDistribution",
    "local_shard",
    "EBM",
    "PGD",
    "IPLA",
    "SOUL",
    "MCEM",
    "MMLRunResult",
    "ParticleState",
    "RunResult",
    "NegativeSampler",
    "CD",
    "PCD",
    "ShortRun",
    "TemperedPCD",
    "ScoreMatching",
    "ExactScoreMatching",
    "SlicedScoreMatching",
    "DenoisingScoreMatching",
    "DiffusionScoreMatching",
    "exact_score_matching_loss",
    "sliced_score_matching_loss",
    "denoising_score_matching_loss",
    "annealed_denoising_score_matching_loss",
    "diffusion_score_matching_loss",
    "score_from_energy",
    "TrainResult",
    "TrainState",
]
