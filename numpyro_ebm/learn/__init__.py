"""Learning: score matching and energy-based maximum likelihood."""

from numpyro_ebm.learn.ebm import (
    CD,
    EBM,
    PCD,
    NegativeSampler,
    ShortRun,
    TemperedPCD,
    langevin_chains,
)
from numpyro_ebm.learn.mml import (
    IPLA,
    MCEM,
    PGD,
    SOUL,
    MMLRunResult,
    ParticleState,
)
from numpyro_ebm.learn.score_matching import (
    DenoisingScoreMatching,
    DiffusionScoreMatching,
    ExactScoreMatching,
    ScoreMatching,
    SlicedScoreMatching,
    annealed_denoising_score_matching_loss,
    denoising_score_matching_loss,
    diffusion_score_matching_loss,
    exact_score_matching_loss,
    score_from_energy,
    sliced_score_matching_loss,
)
from numpyro_ebm.learn.training import RunResult, TrainResult, TrainState

__all__ = [
    "PGD",
    "IPLA",
    "SOUL",
    "MCEM",
    "MMLRunResult",
    "ParticleState",
    "RunResult",
    "NegativeSampler",
    "CD",
    "EBM",
    "PCD",
    "ShortRun",
    "TemperedPCD",
    "langevin_chains",
    "DenoisingScoreMatching",
    "DiffusionScoreMatching",
    "ExactScoreMatching",
    "ScoreMatching",
    "SlicedScoreMatching",
    "annealed_denoising_score_matching_loss",
    "diffusion_score_matching_loss",
    "denoising_score_matching_loss",
    "exact_score_matching_loss",
    "score_from_energy",
    "sliced_score_matching_loss",
    "TrainResult",
    "TrainState",
]
