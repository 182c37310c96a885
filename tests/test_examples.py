"""Every example script runs end to end with small arguments."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = {
    "quickstart.py": ["--num-warmup", "50", "--num-samples", "50", "--num-chains", "2"],
    "ebm_toy2d.py": [
        "--num-steps",
        "50",
        "--num-data",
        "1000",
        "--hidden",
        "16",
    ],
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
    "score_prior_mnist.py": [
        "--num-steps",
        "5",
        "--batch-size",
        "4",
        "--features",
        "8",
        "--blocks",
        "1",
        "--num-train",
        "50",
        "--num-test",
        "8",
        "--num-elbo-samples",
        "1",
        "--sample-steps",
        "3",
        "--num-images",
        "1",
        "--num-chains",
        "2",
        "--num-warmup",
        "1",
        "--num-samples",
        "2",
        "--num-levels",
        "3",
        "--num-particles",
        "2",
    ],
    "vae_digits.py": [
        "--num-steps",
        "20",
        "--eval-every",
        "20",
        "--batch-size",
        "20",
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


# the smoke runs are dominated by XLA compilation, which JAX's switch cuts
# by about a third at these sizes (the programs run a little slower)
SMOKE_ENV = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


# The digit-image examples cost 90 s of compilation between them, at any
# size: they run in `make test-all`. Their parts (SOUL and PGD with energy
# priors, SVI with an energy prior, importance-sampled likelihoods, diffusion
# priors under ScorePosterior) are tested in test_mml, test_marginal and
# test_score_posterior.
SLOW_EXAMPLES = {
    "latent_ebm_prior.py",
    "score_prior_mnist.py",
    "vae_digits.py",
    # its parts (EBM training with each sampler, the grid likelihood, the
    # density plots) are tested in test_ebm, test_diagnostics and test_plots
    "ebm_toy2d.py",
}


# scripts in one interpreter, one after the other (each import of JAX,
# NumPyro, Flax and ArviZ costs seconds): "#RUN <script> <exit code>" and
# what the script wrote to the stream named for it ("stdout" or "stderr")
_IN_ONE_INTERPRETER = """
import contextlib, io, json, runpy, sys, traceback
sys.path.insert(0, "examples")
for script, args, stream in json.loads(sys.argv[1]):
    sys.argv = [script, *args]
    text = io.StringIO()
    code = 0
    redirect = getattr(contextlib, "redirect_" + stream)
    with redirect(text):
        try:
            runpy.run_path("examples/" + script, run_name="__main__")
        except SystemExit as exit:
            code = exit.code or 0
        except BaseException:
            traceback.print_exc()
            code = 1
    print("#RUN", script, code)
    print(text.getvalue())
"""


def _in_one_interpreter(jobs, env=None):
    """``{script: (exit code, text)}`` for ``jobs``, ``[(script, args,
    stream)]``."""
    proc = subprocess.run(
        [sys.executable, "-c", _IN_ONE_INTERPRETER, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {}
    for block in proc.stdout.split("#RUN ")[1:]:
        head, _, text = block.partition("\n")
        script, code = head.split()
        runs[script] = (int(code), text)
    return runs


def _run(scripts, out):
    """``{script: (exit code, stderr)}``; each script writes into
    ``out / script``."""
    jobs = []
    for script in scripts:
        args = list(EXAMPLES[script])
        if script != "quickstart.py":
            (out / script).mkdir()
            args += ["--out", str(out / script), "--no-progress-bar"]
        jobs.append((script, args, "stderr"))
    return _in_one_interpreter(jobs, SMOKE_ENV)


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    return out, _run(sorted(set(EXAMPLES) - SLOW_EXAMPLES), out)


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in SLOW_EXAMPLES else name
        for name in sorted(EXAMPLES)
    ],
)
def test_example_runs(script, request, tmp_path):
    if script in SLOW_EXAMPLES:
        out, runs = tmp_path, _run([script], tmp_path)
    else:
        out, runs = request.getfixturevalue("example_runs")
    code, err = runs[script]
    assert code == 0, err[-3000:]
    if script != "quickstart.py":
        assert list((out / script).glob("*.png")), "no figure written"


HELP_SCRIPTS = sorted(
    path.name
    for path in (ROOT / "examples").glob("*.py")
    if "ArgumentParser(" in path.read_text()
)
OPTION = re.compile(r"--[\w-]+")


@pytest.fixture(scope="module")
def help_texts():
    return _in_one_interpreter([(s, ["--help"], "stdout") for s in HELP_SCRIPTS])


@pytest.mark.parametrize("script", HELP_SCRIPTS)
def test_example_help_describes_every_flag(script, help_texts):
    code, text = help_texts[script]
    assert code == 0, text[-3000:]
    lines = text.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line in ("options:", "optional arguments:")
    )
    # between the usage block and the options: the parser's description
    blank = lines.index("")
    assert any(line.strip() for line in lines[blank:start]), "no description"
    described = {}
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if not re.match(r"  -", line):  # not an option line
            continue
        # "  --flag METAVAR  text": the description follows two or more spaces
        # on the same line, or is the next, more deeply indented line
        invocation, _, text = line.strip().partition("  ")
        following = lines[i + 1] if i + 1 < len(lines) else ""
        has_text = bool(text.strip()) or (
            following.startswith("    ") and bool(following.strip())
        )
        for flag in OPTION.findall(invocation):
            described[flag] = has_text
    described.pop("--help")
    # every option of the usage line is listed, and none is undescribed
    usage = "\n".join(lines[:blank])
    assert set(OPTION.findall(usage)) - {"--help"} == set(described)
    undescribed = sorted(flag for flag, ok in described.items() if not ok)
    assert not undescribed, f"flags without a description: {undescribed}"
