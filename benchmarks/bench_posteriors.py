"""The posterior benchmark suite: every sampler on every posterior, gated.

For each posterior of ``benchmarks/posteriors`` and each sampler, run
``--num-chains`` chains (vectorized) of ``--num-warmup`` warm-up and
``--num-samples`` draws and print: the gate's verdict with the failing
criterion (R-hat < 1.01, min bulk ESS >= 400, no divergences, |z| < 2
against the reference; see ``benchmarks/posteriors/gate.py``), min bulk ESS,
gradient evaluations in warm-up and sampling, ESS per sampling gradient, and
wall time with and without compilation.

Budgets: ``draws`` gives every sampler the same warm-up and draws;
``gradients`` gives each one-gradient-per-step sampler NUTS's gradient budget
on that posterior (its warm-up and draws per chain equal NUTS's gradient
evaluations per chain in each phase, at least the ``draws`` numbers). Random
walk Metropolis counts density evaluations in place of gradients.

Samplers that take several gradients per iteration (NUTS, ``ne.MALT``,
``ne.ParallelTempering``) report the gradients they took. At the
``gradients`` budget ``ne.MALT`` keeps its ``draws`` run when that took no
more gradients than NUTS, and otherwise reruns with the same warm-up and as
many draws as NUTS's total leaves (a row marked ``gradients``).
``ne.ParallelTempering`` runs once, with four times the draws
(``DRAWS_FACTOR``), as mode weights mix slowly.

Samplers: every kernel of the package but ``ne.AnnealedLangevin`` (a
schedule without adaptation, for MAP search and tempering): ``ne.MALA`` and
``ne.MALT`` (diagonal and dense mass), ``ne.ULA``,
``ne.UnderdampedLangevin``, ``ne.RWMH``, ``ne.ParallelTempering`` around MALA
(on the multimodal posteriors; its 16 levels cost 16 gradients per
iteration);
NumPyro's ``NUTS`` and ``HMC(num_steps=1)`` (MALA as a one-step HMC); and
BlackJAX's MALA as one-leapfrog HMC under ``blackjax.window_adaptation``
(``blackjax.mala`` takes no mass matrix, so ``window_adaptation`` cannot tune
it; the one-step HMC is the same algorithm with the preconditioning).

Usage (from the repository's root)::

    python benchmarks/bench_posteriors.py                      # everything
    python benchmarks/bench_posteriors.py --posteriors gaussian_10d,funnel_10d
    python benchmarks/bench_posteriors.py --samplers ne.MALA,NUTS --budget draws
"""

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

import jax
from numpyro.infer import HMC, MCMC, NUTS
from numpyro.infer.util import initialize_model

import numpyro_ebm as ne

if __package__ in (None, ""):  # run as a script: the repository's root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.posteriors import POSTERIORS, gate  # noqa: E402
from benchmarks.timing import timed  # noqa: E402

try:
    import blackjax
except ImportError:  # optional comparison
    blackjax = None


class Run:
    """One sampler's run: draws by chain, divergences, costs and times."""

    def __init__(
        self,
        samples,
        divergences,
        grads_warmup,
        grads_sampling,
        seconds,
        compile_seconds,
    ):
        self.samples = samples
        self.divergences = divergences
        self.grads_warmup = grads_warmup
        self.grads_sampling = grads_sampling
        self.seconds = seconds
        self.compile_seconds = compile_seconds


def run_numpyro(
    kernel, posterior, key, num_warmup, num_samples, num_chains, grads_per_step
):
    """A NumPyro-interface kernel through ``MCMC``; NUTS's gradients are its
    leapfrog steps."""
    kwargs = posterior.kwargs()
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    fields = ("diverging",) + (("num_steps",) if grads_per_step is None else ())

    def go():
        key_warm, key_sample = jax.random.split(key)
        mcmc.warmup(key_warm, extra_fields=fields, collect_warmup=True, **kwargs)
        warm = mcmc.get_extra_fields()
        mcmc.run(key_sample, extra_fields=fields, **kwargs)
        jax.block_until_ready(mcmc.last_state)
        return warm, mcmc.get_extra_fields()

    (warm, sampled), seconds, compile_seconds = timed(go)
    if grads_per_step is None:
        grads = (int(np.sum(warm["num_steps"])), int(np.sum(sampled["num_steps"])))
    else:
        grads = (
            grads_per_step * num_warmup * num_chains,
            grads_per_step * num_samples * num_chains,
        )
    return Run(
        {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()},
        int(np.sum(sampled["diverging"])),
        *grads,
        seconds,
        compile_seconds,
    )


def run_blackjax(posterior, key, num_warmup, num_samples, num_chains):
    """BlackJAX: one-leapfrog HMC (= MALA) tuned by ``window_adaptation``,
    each chain adapted on its own (``vmap``), then sampled."""
    kwargs = posterior.kwargs()
    info = initialize_model(jax.random.key(0), posterior.model, model_kwargs=kwargs)
    potential, postprocess = info.potential_fn, info.postprocess_fn

    def logdensity(z):
        return -potential(z)

    def chain(key, position):
        key_warm, key_sample = jax.random.split(key)
        adaptation = blackjax.window_adaptation(
            blackjax.hmc,
            logdensity,
            num_integration_steps=1,
            target_acceptance_rate=0.574,
        )
        (state, params), _ = adaptation.run(key_warm, position, num_steps=num_warmup)
        kernel = blackjax.hmc(logdensity, **params)

        def body(state, key):
            state, info = kernel.step(key, state)
            return state, (postprocess(state.position), info.is_divergent)

        keys = jax.random.split(key_sample, num_samples)
        return jax.lax.scan(body, state, keys)[1]

    starts = jax.vmap(
        lambda k: initialize_model(k, posterior.model, model_kwargs=kwargs).param_info.z
    )(jax.random.split(jax.random.fold_in(key, 1), num_chains))
    run = jax.jit(jax.vmap(chain))
    (draws, divergent), seconds, compile_seconds = timed(
        lambda: jax.block_until_ready(run(jax.random.split(key, num_chains), starts))
    )
    return Run(
        {k: np.asarray(v) for k, v in draws.items()},
        int(np.sum(divergent)),
        num_warmup * num_chains,
        num_samples * num_chains,
        seconds,
        compile_seconds,
    )


PT_LEVELS = 16
#: samplers run only on the posteriors with one of these tags
SAMPLER_TAGS = {"ne.PT(MALA)": ("multimodal",)}
#: samplers whose 'draws' budget takes this many times the draws: mode
#: weights mix slowly (ParallelTempering's mode indicator reaches an ESS of
#: about 0.15 per iteration and chain on bimodal_unequal), and 1000 draws do
#: not bring its weight within 0.03 reliably
DRAWS_FACTOR = {"ne.PT(MALA)": 4}

SAMPLERS = {
    "NUTS": lambda m: (NUTS(m), None),
    "ne.MALA": lambda m: (ne.MALA(m), 1),
    "ne.MALA dense": lambda m: (ne.MALA(m, dense_mass=True), 1),
    # ULA tuned as a user would: step and diagonal mass in warm-up, its
    # step aimed at a MALA acceptance of 0.9 (its default)
    "ne.ULA": lambda m: (
        ne.ULA(m, step_size=0.1, adapt_step_size=True, adapt_mass_matrix=True),
        1,
    ),
    "ne.RWMH": lambda m: (ne.RWMH(m), 1),
    # trajectories of several gradients: counted from num_steps, like NUTS
    "ne.MALT": lambda m: (ne.MALT(m), None),
    "ne.MALT dense": lambda m: (ne.MALT(m, dense_mass=True), None),
    "ne.Underdamped": lambda m: (
        ne.UnderdampedLangevin(
            m, step_size=0.1, adapt_step_size=True, adapt_mass_matrix=True
        ),
        1,
    ),
    "HMC(num_steps=1)": lambda m: (HMC(m, num_steps=1, trajectory_length=None), 1),
    # L = 16 MALA levels: 16 gradients per iteration (multimodal posteriors only)
    "ne.PT(MALA)": lambda m: (
        ne.ParallelTempering(ne.MALA(m), num_temperatures=PT_LEVELS),
        PT_LEVELS,
    ),
    "BlackJAX MALA": None,
}


def _gradients_per_step(name):
    return PT_LEVELS if name == "ne.PT(MALA)" else 1


def _draws_within(run, nuts, num_samples):
    """Draws that keep a sampler that counts its gradients within NUTS's total:
    ``None`` if its ``run`` already is, else the same warm-up (same seed, so
    the same tuning and cost per draw) and fewer draws."""
    total = run.grads_warmup + run.grads_sampling
    budget = nuts.grads_warmup + nuts.grads_sampling
    if total <= budget:
        return None
    per_draw = run.grads_sampling / num_samples
    return int((budget - run.grads_warmup) // per_draw)


def _counts_its_gradients(name):
    """Samplers whose iterations take several gradients (reported, not fixed)."""
    return name in ("NUTS", "ne.MALT", "ne.MALT dense") or name in DRAWS_FACTOR


def run_sampler(name, posterior, key, num_warmup, num_samples, num_chains):
    if name == "BlackJAX MALA":
        return run_blackjax(posterior, key, num_warmup, num_samples, num_chains)
    kernel, grads_per_step = SAMPLERS[name](posterior.model)
    return run_numpyro(
        kernel, posterior, key, num_warmup, num_samples, num_chains, grads_per_step
    )


HEADER = (
    f"{'sampler':18s} {'budget':9s} {'verdict':34s} {'min ESS':>8s} "
    f"{'grads warm-up':>13s} {'grads sampling':>14s} {'ESS/grad':>9s} "
    f"{'s total':>8s} {'s w/o compile':>13s}"
)


def row(name, budget, posterior, run):
    verdict = gate.evaluate(posterior, run.samples, run.divergences)
    ess_per_grad = (
        verdict.min_ess / run.grads_sampling if run.grads_sampling else float("nan")
    )
    text = verdict.describe()
    if verdict.passed and verdict.mode_error is not None:
        text += f": weights within {verdict.mode_error:.3f}"
    return (
        f"{name:18s} {budget:9s} {text[:34]:34s} {verdict.min_ess:8.0f} "
        f"{run.grads_warmup:13d} {run.grads_sampling:14d} {ess_per_grad:9.4f} "
        f"{run.seconds:8.1f} {run.seconds - run.compile_seconds:13.1f}"
    ), verdict


def bench_posterior(pname, samplers, budgets, args):
    """Print one posterior's table; returns ``{(sampler, budget): passed}``."""
    posterior = POSTERIORS[pname]
    print(f"## {pname}: {posterior.description}\n")
    print(HEADER)
    key = jax.random.key(args.seed)
    nuts = run_sampler(
        "NUTS", posterior, key, args.num_warmup, args.num_samples, args.num_chains
    )
    line, verdict = row("NUTS", "draws", posterior, nuts)
    print(line, flush=True)
    passed = {("NUTS", "draws"): verdict.passed}
    per_chain = (
        max(args.num_warmup, nuts.grads_warmup // args.num_chains),
        max(args.num_samples, nuts.grads_sampling // args.num_chains),
    )
    for sname in samplers:
        if sname == "NUTS":
            continue
        tags = SAMPLER_TAGS.get(sname)
        if tags is not None and not set(tags) & set(posterior.tags):
            continue
        last = None  # the sampler's 'draws' run
        for budget in budgets:
            # several gradients per iteration: fewer iterations for the budget
            per_step = 1 if SAMPLERS[sname] is None else _gradients_per_step(sname)
            warmup, draws = (
                (args.num_warmup, args.num_samples)
                if budget == "draws"
                else tuple(
                    max(n, m // per_step)
                    for n, m in zip(
                        (args.num_warmup, args.num_samples), per_chain, strict=True
                    )
                )
            )
            label = budget
            if budget == "gradients" and _counts_its_gradients(sname):
                if sname in DRAWS_FACTOR or last is None:
                    continue
                warmup = args.num_warmup
                draws = _draws_within(last, nuts, args.num_samples)
                if draws is None:  # the 'draws' run is within NUTS's budget
                    passed[sname, budget] = passed.get((sname, "draws"), False)
                    continue
                if draws < 1:
                    print(f"{sname:18s} {label:9s} its warm-up alone exceeds NUTS's")
                    passed[sname, budget] = False
                    continue
            if sname in DRAWS_FACTOR:
                draws *= DRAWS_FACTOR[sname]
                label = f"draws x{DRAWS_FACTOR[sname]}"
            try:
                run = run_sampler(sname, posterior, key, warmup, draws, args.num_chains)
            except Exception as error:  # a sampler that cannot run this model
                message = f"{type(error).__name__}: {error}"
                print(f"{sname:18s} {label:9s} error: {message}"[:200])
                continue
            if budget == "draws":
                last = run
            line, verdict = row(sname, label, posterior, run)
            print(line, flush=True)
            passed[sname, budget] = verdict.passed
    print()
    return passed


def main(args):
    names = args.posteriors.split(",") if args.posteriors else list(POSTERIORS)
    samplers = args.samplers.split(",") if args.samplers else list(SAMPLERS)
    if blackjax is None and "BlackJAX MALA" in samplers:
        samplers.remove("BlackJAX MALA")
    budgets = ("draws", "gradients") if args.budget == "both" else (args.budget,)
    if args.summary_only:  # a child process: one posterior, its table and verdicts
        passed = bench_posterior(names[0], samplers, budgets, args)
        print(SUMMARY_TAG + json.dumps([[*k, v] for k, v in passed.items()]))
        return
    print(
        f"# {platform.machine()}, {jax.device_count()} x {jax.devices()[0].platform}, "
        f"jax {jax.__version__}; {args.num_chains} chains x ({args.num_warmup} "
        f"warm-up + {args.num_samples} draws) at the 'draws' budget\n",
        flush=True,
    )
    summary = {}
    for pname in names:
        # one process per posterior: the compiled programs of a posterior's
        # runs are freed with it (in one process memory grows past 20 GB)
        child = subprocess.run(
            [sys.executable, __file__, "--summary-only", "--posteriors", pname]
            + [
                f"--{k.replace('_', '-')}={v}"
                for k, v in vars(args).items()
                if k not in ("posteriors", "summary_only")
            ],
            capture_output=True,
            text=True,
        )
        verdicts = []
        for line in child.stdout.splitlines():
            if line.startswith(SUMMARY_TAG):
                verdicts = json.loads(line[len(SUMMARY_TAG) :])
            else:
                print(line, flush=True)
        if child.returncode:
            print(f"{pname}: the benchmark process failed:\n{child.stderr[-2000:]}\n")
        for sname, budget, ok in verdicts:
            summary[pname, sname, budget] = ok
    print("## Posteriors passed\n")
    for sname in ["NUTS"] + [name for name in samplers if name != "NUTS"]:
        for budget in ("draws",) if sname == "NUTS" else budgets:
            if not any(key[1:] == (sname, budget) for key in summary):
                continue  # not run at this budget
            passed = [p for p in names if summary.get((p, sname, budget))]
            print(
                f"{sname:18s} {budget:9s} {len(passed):2d} / {len(names)}: "
                f"{', '.join(passed)}"
            )


SUMMARY_TAG = "#SUMMARY "


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--posteriors", default="", help="comma-separated names (default: all)"
    )
    parser.add_argument(
        "--samplers", default="", help="comma-separated names (default: all)"
    )
    parser.add_argument(
        "--budget",
        choices=("draws", "gradients", "both"),
        default="both",
        help="equal draws, NUTS's gradient budget, or both (default)",
    )
    parser.add_argument(
        "--num-warmup", type=int, default=1000, help="warm-up steps per chain"
    )
    parser.add_argument("--num-samples", type=int, default=1000, help="draws per chain")
    parser.add_argument("--num-chains", type=int, default=4, help="chains")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="(internal) run one posterior in this process and print its verdicts",
    )
    main(parser.parse_args())
