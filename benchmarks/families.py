"""Speed of the default fit of every family and of the classifier, relative to the Gaussian.

    python benchmarks/families.py            # n = 1e3 and 1e5 (a few minutes)
    python benchmarks/families.py --quick    # n = 1e3 only

Every family is fitted by the one likelihood engine; the target is that no
family, and not the classifier, costs more than twice the Gaussian default
at the same ``n`` (d = 5, k = 3).  The data share one design: inputs and gate
from ``make_moe(5, 3)``, each expert's linear predictor ``<a_i, x> + b_i``, and
``y`` drawn from the family (Gaussian noise 0.2; Student-t with 5 degrees of
freedom and scale 0.2; Poisson and Gamma (shape 5) with the log link on half
the predictor; Bernoulli labels with the logit link on twice it).  Every time is
the best of ``--repeat`` fits (one at n = 1e5) with ``random_state=0``, and all
are measured in the same run, so the ratios compare like with like.  Writes
``benchmarks/reports/families.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import progress, write_report
from sklearn.exceptions import ConvergenceWarning

from moelearn import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor, make_moe, sample

FAMILIES = ("gaussian", "student-t", "poisson", "gamma", "classifier")


def _data(n, seed=1):
    """``(X, {family: y})`` on one design (see the module notes)."""
    truth = make_moe(5, 3, noise_std=0.2, random_state=0)
    X, _, z = sample(truth, n, random_state=seed, return_labels=True)
    eta = np.take_along_axis(truth.expert_predictors(X), z[:, None], axis=1)[:, 0]
    rng = np.random.default_rng(seed)
    return X, {
        "gaussian": eta + 0.2 * rng.standard_normal(n),
        "student-t": eta + 0.2 * rng.standard_t(5.0, n),
        "poisson": rng.poisson(np.exp(0.5 * eta)).astype(float),
        "gamma": rng.gamma(5.0, np.exp(0.5 * eta) / 5.0),
        "classifier": (rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * eta))).astype(int),
    }


def _estimator(family):
    if family == "classifier":
        return MixtureOfExpertsClassifier(3, random_state=0)
    return MixtureOfExpertsRegressor(3, family=family, random_state=0)


def _time(family, X, y, repeat):
    best, fitted = np.inf, None
    for _ in range(repeat):
        est = _estimator(family)
        t = time.perf_counter()
        est.fit(X, y)
        best = min(best, time.perf_counter() - t)
        fitted = est
    return best, fitted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1e3 only")
    parser.add_argument("--repeat", type=int, default=3, help="fits per time at n = 1e3")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    sizes = (1_000,) if args.quick else (1_000, 100_000)
    rows = []
    for n in sizes:
        X, ys = _data(n)
        repeat = args.repeat if n <= 10_000 else 1
        times = {}
        for family in progress(FAMILIES, label=f"n={n}"):
            seconds, est = _time(family, X, ys[family], repeat)
            times[family] = seconds
            rows.append(
                dict(
                    n=n,
                    family=family,
                    seconds=seconds,
                    converged=bool(est.converged_),
                    log_likelihood=float(est.log_likelihood_),
                    init_method=est.init_method_,
                )
            )
        for row in rows:
            if row["n"] == n:
                row["over_gaussian"] = row["seconds"] / times["gaussian"]
    worst = max(row["over_gaussian"] for row in rows)
    lines = [
        "# Every family's default fit against the Gaussian default",
        "",
        "`python benchmarks/families.py`: d = 5, k = 3, one design, `random_state=0`;",
        "times are the best of several fits in one run. Target: every family and the",
        "classifier at most 2x the Gaussian default at the same n.",
        "",
        "| n | family | fit (s) | / Gaussian | converged | mean log-lik | start |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['family']} | {r['seconds']:.3f} | {r['over_gaussian']:.2f} | "
            f"{r['converged']} | {r['log_likelihood']:.4f} | {r['init_method']} |"
        )
    lines += ["", f"Largest ratio: {worst:.2f} (target <= 2)."]
    paths = write_report("families", {"rows": rows, "largest_ratio": worst}, lines)
    print("\n".join(lines))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
