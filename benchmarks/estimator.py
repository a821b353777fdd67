"""Speed of the default estimator, and success rates of every solver on a grid.

    python benchmarks/estimator.py                 # speed ratios (a minute)
    python benchmarks/estimator.py --grid --seeds 20 --jobs 2   # solver grid (long)

Writes benchmarks/reports/estimator.{json,md} (and estimator_grid.{json,md}).
Targets (issue): the default fit at n=1e5, d=10, k=3 costs at most 500 times one
``X @ M`` product with a (d, k) matrix, and at most 1/10 of ``solver="em"``
with ``n_init=10`` at equal or better log-likelihood.  All times are measured
in the same process (best of several runs).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from _common import best_time, progress, write_report
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
    t_se = best_time(lambda: default.standard_errors(X, y), repeat=2)
    em = MixtureOfExpertsRegressor(3, solver="em", n_init=10, random_state=0)
    t_em = best_time(lambda: em.fit(X, y), repeat=2)
    rows = dict(
        xm_s=t_xm, default_fit_s=t_default, standard_errors_s=t_se, em10_fit_s=t_em,
        default_over_xm=t_default / t_xm, default_over_em10=t_default / t_em,
        default_loglik=default.log_likelihood_, em10_loglik=em.log_likelihood_,
        default_expert_error=parameter_errors(default, p).experts,
        em10_expert_error=parameter_errors(em, p).experts,
    )
    rows["passed_xm"] = rows["default_over_xm"] <= 500
    rows["passed_em"] = (rows["default_over_em10"] <= 0.1
                         and rows["default_loglik"] >= rows["em10_loglik"] - 1e-6)
    md = ["# Default estimator speed (n=100,000, d=10, k=3, linear)", "",
          "| measurement | value |", "|---|---|",
          f"| X @ M, (d, k) matrix | {1e3 * t_xm:.3f} ms |",
          f"| default fit (solver='moments') | {1e3 * t_default:.1f} ms = "
          f"{rows['default_over_xm']:.0f} x X @ M {'✓' if rows['passed_xm'] else '✗'} (≤ 500) |",
          f"| standard errors (observed information, on request) | {1e3 * t_se:.0f} ms |",
          f"| solver='em', n_init=10 | {1e3 * t_em:.0f} ms |",
          f"| default / em10 | {rows['default_over_em10']:.3f} "
          f"{'✓' if rows['passed_em'] else '✗'} (≤ 0.1 at equal or better likelihood) |",
          f"| mean log-likelihood: default vs em10 | {rows['default_loglik']:.6f} vs "
          f"{rows['em10_loglik']:.6f} |",
          f"| expert error: default vs em10 | {rows['default_expert_error']:.4f} vs "
          f"{rows['em10_expert_error']:.4f} |"]
    return rows, md


def grid(seeds, jobs):
    cells = [dict(k=k, scale=s, noise=0.2, link=ln)
             for k in (3, 6) for s in (1, 3) for ln in ("linear", "relu")]
    table = success_table(cells, seeds, 100_000, jobs, label="grid")
    md = [f"# Solver success rates (expert error ≤ 0.1) over {seeds} seeds, n=100,000, d=10, "
          f"sigma=0.2; one start each; {jobs} parallel job(s), times are per fit", "",
          "| k | gating scale | link | " + " | ".join(SOLVERS) + " |",
          "|---|---|---|" + "---|" * len(SOLVERS)]
    for cell in cells:
        vals = [t for t in table if all(t[key] == cell[key] for key in cell)]
        md.append(f"| {cell['k']} | {cell['scale']} | {cell['link']} | " + " | ".join(
            f"{v['success']:.0%} ({v['median_time_s']:.1f}s)" for v in vals) + " |")
    return table, md


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="store_true", help="run the solver grid instead")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    if args.grid:
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
