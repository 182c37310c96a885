"""Every example script runs end to end with small arguments."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = {
    "quickstart.py": ["--num-warmup", "50", "--num-samples", "50", "--num-chains", "2"],
    "ebm_toy2d.py": ["--num-steps", "50", "--num-data", "1000", "--hidden", "16"],
    "score_ncsn_toy.py": [
        "--num-steps",
        "50",
        "--num-data",
        "1000",
        "--num-samples",
        "200",
        "--hidden",
        "16",
        "--steps-per-level",
        "5",
    ],
    "neural_prior.py": [
        "--num-train-steps",
        "50",
        "--num-data",
        "1000",
        "--hidden",
        "16",
        "--num-warmup",
        "50",
        "--num-samples",
        "50",
    ],
    "latent_ebm_prior.py": [
        "--num-steps",
        "20",
        "--num-data",
        "200",
        "--batch-size",
        "20",
        "--hidden",
        "16",
        "--energy-hidden",
        "8",
        "--prior-steps",
        "5",
        "--posterior-steps",
        "2",
        "--adjusted",
        "--num-test",
        "20",
        "--num-eval-particles",
        "2",
        "--num-eval-steps",
        "2",
        "--num-is-samples",
        "5",
    ],
    "vae_digits.py": [
        "--num-steps",
        "20",
        "--eval-every",
        "10",
        "--hidden",
        "16",
        "--energy-hidden",
        "8",
        "--prior-steps",
        "5",
        "--num-is-samples",
        "10",
    ],
}


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script, tmp_path):
    args = list(EXAMPLES[script])
    if script != "quickstart.py":
        args += ["--out", str(tmp_path), "--no-progress-bar"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    if script != "quickstart.py":
        assert list(tmp_path.glob("*.png")), "no figure written"
