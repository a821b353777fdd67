"""Speed of the default estimator, and success rates of every solver on a grid.

    python benchmarks/estimator.py                 # speed ratios (a minute)
    python benchmarks/estimator.py --grid --seeds 20 --jobs 2   # solver grid (long)
    python benchmarks/estimator.py --basins --seeds 10 --jobs 2  # off-regime basins (long)

Writes benchmarks/reports/estimator.{json,md} (and estimator_grid.{json,md},
estimator_basins.{json,md}).

``--basins``: problems off the papers' theory regime -- gating not orthogonal
to the experts (gating scale 2, intercepts of scale 0.5), k up to d
((d, k) = (5, 3), (5, 5), (10, 8)), correlated (equicorrelation 0.5), uniform
and standardised log-normal inputs, one noise level per expert drawn in
[0.125, 0.5], n = 50,000.  For each seed the default fit's expert error
(``parameter_errors``, experts matched) is compared with that of the same
estimator started at the truth (``init_params=truth``); the default succeeds
when its error is at most 1.1 x the truth-start error + 0.01.
Targets: the default fit at n=1e5, d=10, k=3 costs at most 2x version 0.1's
default (one shared noise level, the moment start alone), at most 500 times one
``X @ M`` product with a (d, k) matrix, and at most 1/10 of ``solver="em"``
with ``n_init=10`` at equal or better log-likelihood; the default's expert error
(with its prior, ``prior_strength="auto"``) at most 1.1 x that of the
maximum-likelihood fit started at the truth.  All times are measured
in the same process (best of several runs).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import best_time, progress, write_report
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from moelearn import MixtureOfExpertsRegressor, make_moe, parameter_errors, sample
from moelearn.experiments import SOLVERS, success_table


def speed():
    warnings.simplefilter("ignore", ConvergenceWarning)
    p = make_moe(10, 3, noise_std=0.2, random_state=0)
    X, y = sample(p, 100_000, random_state=1)
    M = np.ones((10, 3))
    t_xm = best_time(lambda: X @ M, repeat=200)
    default = MixtureOfExpertsRegressor(3, random_state=0)
    t_default = best_time(lambda: default.fit(X, y), repeat=5)
    # version 0.1's default: one noise level, the moment start alone, 200 iterations
    v01 = MixtureOfExpertsRegressor(3, noise="shared", n_init=1, max_iter=200, random_state=0)
    t_v01 = best_time(lambda: v01.fit(X, y), repeat=5)
    t_se = best_time(lambda: default.standard_errors(X, y), repeat=2)
    em = MixtureOfExpertsRegressor(3, solver="em", n_init=10, random_state=0)
    t_em = best_time(lambda: em.fit(X, y), repeat=2)
    # the maximum-likelihood fit started at the truth: what the prior may cost (issue target:
    # the default's expert error at most 1.1 x this one's)
    truth_start = MixtureOfExpertsRegressor(3, prior_strength=0, init_params=p, random_state=0)
    truth_start.fit(X, y)
    rows = dict(
        truth_mle_expert_error=parameter_errors(truth_start, p).experts,
        xm_s=t_xm,
        default_fit_s=t_default,
        standard_errors_s=t_se,
        em10_fit_s=t_em,
        default_over_xm=t_default / t_xm,
        default_over_em10=t_default / t_em,
        v01_fit_s=t_v01,
        default_over_v01=t_default / t_v01,
        v01_expert_error=parameter_errors(v01, p).experts,
        default_loglik=default.log_likelihood_,
        em10_loglik=em.log_likelihood_,
        default_expert_error=parameter_errors(default, p).experts,
        em10_expert_error=parameter_errors(em, p).experts,
    )
    rows["passed_xm"] = rows["default_over_xm"] <= 500
    rows["passed_em"] = (
        rows["default_over_em10"] <= 0.1 and rows["default_loglik"] >= rows["em10_loglik"] - 1e-6
    )
    rows["passed_truth"] = rows["default_expert_error"] <= 1.1 * rows["truth_mle_expert_error"]
    md = [
        "# Default estimator speed (n=100,000, d=10, k=3, linear)",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| X @ M, (d, k) matrix | {1e3 * t_xm:.3f} ms |",
        f"| default fit (solver='moments') | {1e3 * t_default:.1f} ms = "
        f"{rows['default_over_xm']:.0f} x X @ M {'✓' if rows['passed_xm'] else '✗'} (≤ 500) |",
        f"| single start (noise='shared', n_init=1, max_iter=200) | "
        f"{1e3 * t_v01:.1f} ms; default / single start = {rows['default_over_v01']:.2f} "
        f"{'✓' if rows['default_over_v01'] <= 2 else '✗'} (≤ 2) |",
        f"| expert error: default vs single start | {rows['default_expert_error']:.4f} vs "
        f"{rows['v01_expert_error']:.4f} |",
        f"| expert error: default (prior_strength='auto') vs maximum likelihood started at "
        f"the truth | {rows['default_expert_error']:.4f} vs "
        f"{rows['truth_mle_expert_error']:.4f} {'✓' if rows['passed_truth'] else '✗'} "
        "(≤ 1.1 x) |",
        f"| standard errors (observed information, on request) | {1e3 * t_se:.0f} ms |",
        f"| solver='em', n_init=10 | {1e3 * t_em:.0f} ms |",
        f"| default / em10 | {rows['default_over_em10']:.3f} "
        f"{'✓' if rows['passed_em'] else '✗'} (≤ 0.1 at equal or better likelihood) |",
        f"| mean log-likelihood: default vs em10 | {rows['default_loglik']:.6f} vs "
        f"{rows['em10_loglik']:.6f} |",
        f"| expert error: default vs em10 | {rows['default_expert_error']:.4f} vs "
        f"{rows['em10_expert_error']:.4f} |",
    ]
    return rows, md


def grid(seeds, jobs):
    cells = [
        dict(k=k, scale=s, noise=0.2, link=ln)
        for k in (3, 6)
        for s in (1, 3)
        for ln in ("linear", "relu")
    ]
    table = success_table(cells, seeds, 100_000, jobs, label="grid")
    md = [
        f"# Solver success rates (expert error ≤ 0.1) over {seeds} seeds, n=100,000, d=10, "
        f"sigma=0.2; one fit each (the moments solver with its default start search, the "
        f"others from one start); {jobs} parallel job(s), times are per fit",
        "",
        "| k | gating scale | link | " + " | ".join(SOLVERS) + " |",
        "|---|---|---|" + "---|" * len(SOLVERS),
    ]
    for cell in cells:
        vals = [t for t in table if all(t[key] == cell[key] for key in cell)]
        md.append(
            f"| {cell['k']} | {cell['scale']} | {cell['link']} | "
            + " | ".join(f"{v['success']:.0%} ({v['median_time_s']:.1f}s)" for v in vals)
            + " |"
        )
    return table, md


BASIN_SHAPES = ((5, 3), (5, 5), (10, 8))
BASIN_INPUTS = ("correlated", "uniform", "lognormal")


def _draw_inputs(law, n, d, rng):
    """Inputs for the basin grid; log-normal ones are standardised (mean 0, variance 1)."""
    if law == "lognormal":
        e = np.e
        return (np.exp(rng.standard_normal((n, d))) - np.sqrt(e)) / np.sqrt((e - 1.0) * e)
    if law == "uniform":
        return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), (n, d))
    shared = rng.standard_normal((n, 1))  # equicorrelation 0.5
    return np.sqrt(0.5) * rng.standard_normal((n, d)) + np.sqrt(0.5) * shared


def _draw_y(params, X, rng):
    """y given X from a linear-link MoEParams: gate by Gumbel-max, then expert + noise."""
    logits = params.gating_logits(X)
    z = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    means = X @ params.experts.T + params.expert_bias
    return means[np.arange(len(z)), z] + params.noise_vector[z] * rng.standard_normal(len(z))


def basin_case(d, k, law, seed, n):
    rng = np.random.default_rng(seed)
    truth = make_moe(
        d,
        k,
        noise_std=0.25,
        gating_scale=2.0,
        orthogonal_gating=False,
        random_state=rng,
        intercept_scale=0.5,
        per_expert_noise=True,
    )
    X = _draw_inputs(law, n, d, rng)
    y = _draw_y(truth, X, rng)
    # maximum likelihood, as the truth start's refinement; reproducible reruns
    est = MixtureOfExpertsRegressor(k, prior_strength=0, random_state=seed)
    rows = {}
    for label, model in (
        ("default", est),
        ("truth start", clone(est).set_params(init_params=truth)),
    ):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        rows[label] = dict(
            seconds=time.perf_counter() - t,
            error=parameter_errors(model, truth).experts,
            loglik=model.log_likelihood_ * n,
        )
    ok = rows["default"]["error"] <= 1.1 * rows["truth start"]["error"] + 0.01
    return dict(
        d=d,
        k=k,
        inputs=law,
        seed=seed,
        n=n,
        success=bool(ok),
        default_error=rows["default"]["error"],
        truth_error=rows["truth start"]["error"],
        loglik_gap=rows["truth start"]["loglik"] - rows["default"]["loglik"],
        default_s=rows["default"]["seconds"],
        truth_s=rows["truth start"]["seconds"],
    )


def _basin_job(job):
    return basin_case(*job)


def basins(seeds, n=50_000, workers=1):
    cells = [(d, k, law) for d, k in BASIN_SHAPES for law in BASIN_INPUTS]
    jobs = [(d, k, law, s, n) for d, k, law in cells for s in range(seeds)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            records = list(progress(pool.map(_basin_job, jobs), total=len(jobs), label="basins"))
    else:
        records = [_basin_job(job) for job in progress(jobs, label="basins")]
    md = [
        f"# Default fit vs a fit started at the truth, off the theory regime ({seeds} seeds "
        f"per cell, n={n:,}; {workers} parallel job(s), times are per fit)",
        "",
        "Gating scale 2 and not orthogonal to the experts, intercepts of scale 0.5, one noise "
        "level per expert in [0.125, 0.5]; the default is `MixtureOfExpertsRegressor(k, "
        "random_state=seed)`, the truth start the same estimator with `init_params=truth`. "
        "Success: default expert "
        "error <= 1.1 x truth-start error + 0.01 (experts matched). Log-lik gap: truth "
        "start - default, total nats (positive: the default stopped at a worse optimum).",
        "",
        "| d | k | inputs | success | median error default / truth start | "
        "median log-lik gap | worst log-lik gap | median time default / truth start (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table = []
    for d, k, law in cells:
        rs = [r for r in records if (r["d"], r["k"], r["inputs"]) == (d, k, law)]
        row = dict(
            d=d,
            k=k,
            inputs=law,
            success=float(np.mean([r["success"] for r in rs])),
            median_default_error=float(np.median([r["default_error"] for r in rs])),
            median_truth_error=float(np.median([r["truth_error"] for r in rs])),
            median_loglik_gap=float(np.median([r["loglik_gap"] for r in rs])),
            max_loglik_gap=float(np.max([r["loglik_gap"] for r in rs])),
            median_default_s=float(np.median([r["default_s"] for r in rs])),
            median_truth_s=float(np.median([r["truth_s"] for r in rs])),
        )
        table.append(row)
        md.append(
            f"| {d} | {k} | {law} | {row['success']:.0%} | "
            f"{row['median_default_error']:.3f} / {row['median_truth_error']:.3f} | "
            f"{row['median_loglik_gap']:.1f} | {row['max_loglik_gap']:.1f} | "
            f"{row['median_default_s']:.1f} / {row['median_truth_s']:.1f} |"
        )
    total = np.mean([r["success"] for r in records])
    md += ["", f"Overall: {total:.0%} of {len(records)} fits succeed."]
    return dict(seeds=seeds, n=n, jobs=workers, table=table, records=records), md


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="store_true", help="run the solver grid instead")
    ap.add_argument(
        "--basins",
        action="store_true",
        help="run the off-regime basin grid (default vs truth start) instead",
    )
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    if args.basins:
        payload, md = basins(args.seeds, workers=args.jobs)
        js, mdp = write_report("estimator_basins", payload, md)
    elif args.grid:
        table, md = grid(args.seeds, args.jobs)
        js, mdp = write_report("estimator_grid", dict(seeds=args.seeds, table=table), md)
    else:
        for _ in progress(range(1), label="speed"):
            rows, md = speed()
        js, mdp = write_report("estimator", rows, md)
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}")


if __name__ == "__main__":
    main()
