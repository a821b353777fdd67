"""Observed information: exact one-pass Hessian against central differences.

    python benchmarks/information.py

Writes benchmarks/reports/information.{json,md}.  Target (issue 14): the exact
information is at least 5 times faster than the central differences of the
gradient (2p passes) and agrees with them to 1e-6 (relative to the largest
entry).  Both are timed in the same process, best of several runs, at the
maximum-likelihood estimate of each problem.
"""

from __future__ import annotations

import warnings

import numpy as np
from _common import best_time, write_report
from sklearn.exceptions import ConvergenceWarning

from moelearn import make_moe, sample
from moelearn.refine import (
    Data,
    _observed_information_fd,
    maximize_likelihood,
    observed_information,
)

CASES = [
    dict(d=10, k=3, link="linear", per_expert=False),
    dict(d=10, k=3, link="tanh", per_expert=True),
    dict(d=20, k=5, link="linear", per_expert=True),
]
N = 100_000


def run_case(d, k, link, per_expert):
    p = make_moe(
        d,
        k,
        link=link,
        noise_std=0.2,
        random_state=0,
        intercept_scale=0.3,
        per_expert_noise=per_expert,
    )
    X, y = sample(p, N, random_state=1)
    data = Data(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mle = maximize_likelihood(data, p, per_expert_noise=per_expert).params
    kw = dict(per_expert_noise=per_expert)
    exact, names = observed_information(data, mle, **kw)
    fd, _ = _observed_information_fd(data, mle, **kw)
    t_exact = best_time(lambda: observed_information(data, mle, **kw), repeat=5)
    t_fd = best_time(lambda: _observed_information_fd(data, mle, **kw), repeat=2)
    agreement = float(np.abs(exact - fd).max() / np.abs(fd).max())
    return dict(
        n=N,
        d=d,
        k=k,
        link=link,
        noise="per expert" if per_expert else "shared",
        n_coordinates=len(names),
        exact_s=t_exact,
        finite_differences_s=t_fd,
        speedup=t_fd / t_exact,
        max_relative_difference=agreement,
        passed=bool(t_fd / t_exact >= 5 and agreement <= 1e-6),
    )


def main():
    rows = [run_case(**case) for case in CASES]
    md = [
        "# Observed information: exact (one pass) vs central differences (2p passes)",
        "",
        f"n = {N:,} samples, at the maximum-likelihood estimate; best of 5 (exact) and 2",
        "(differences) runs in the same process.  Target: speed-up >= 5, agreement <= 1e-6.",
        "",
        "| d | k | link | noise | coordinates | exact | differences | speed-up | "
        "max relative difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['d']} | {r['k']} | {r['link']} | {r['noise']} | {r['n_coordinates']} "
            f"| {1e3 * r['exact_s']:.0f} ms | {1e3 * r['finite_differences_s']:.0f} ms "
            f"| {r['speedup']:.1f} {'✓' if r['passed'] else '✗'} "
            f"| {r['max_relative_difference']:.1e} |"
        )
    js, mdp = write_report("information", {"cases": rows}, md)
    print("\n".join(md))
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
