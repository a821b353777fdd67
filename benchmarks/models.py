"""Models users fit in flexmix: does moelearn reach flexmix's best likelihood on them?

    python benchmarks/models.py            # seeds 0..4
    python benchmarks/models.py --quick    # seed 0 only

Needs R with flexmix; the script installs r-base-core and r-cran-flexmix from
Debian's packages when they are missing.  The data sets are the copies that
ship with flexmix, exported at run time (nothing is downloaded).

Cases (binomial experts with each row's number of trials, flexmix's
``cbind(successes, failures) ~ x`` with ``FLXMRglm(family = "binomial")``, its
grouped rows ``| g`` and its shared coefficients ``FLXMRglmfix(fixed = ~ x)``):

* ``tribolium`` (flexmix; Wang and Puterman's flour-beetle data, 27 rows):
  beetles remaining out of the total released, by species (3 levels,
  treatment contrasts), K = 2 and 3 with constant mixing weights, and K = 2
  with a multinomial-logit gate on the replicate (3 levels,
  ``concomitant = FLXPmultinom(~ Replicate)``).
* ``betablocker`` (flexmix; 22 centres x 2 arms, 44 rows): deaths out of the
  patients of an arm, by treatment, K = 2 and 3 with constant weights, each
  row its own draw from the mixture; then the models of flexmix's vignette
  ("FlexMix version 2", section 4.1): both arms of a centre from one expert
  (``~ Treatment | Center``, ``groups=``), and centre-level intercepts with
  one treatment effect shared by the experts (``~ 1 | Center`` with
  ``FLXMRglmfix(fixed = ~ Treatment)``, ``shared_features=``), K = 2 and 3.
* ``dmft`` (flexmix; 797 children, decayed, missing or filled teeth after a
  dental health campaign): the zero-inflated Poisson regression of
  flexmix's ``FLXMRziglm`` example, ``End ~ log(Begin + 0.5) + Gender +
  Ethnic + Treatment`` (``family="zero-inflated-poisson"``, K = 2: the point
  mass and one Poisson expert, constant weights; flexmix run with
  ``minprior = 0.01``, as its example, so that the small point mass is kept).

Methods, per case and seed s:

* flexmix: ``set.seed(s); stepFlexmix(..., k = K, nrep = 10)``, its own
  ``logLik`` (binomial and factorial constants included) and df, the time of the fit
  alone measured inside R;
* moelearn default: ``MixtureOfExpertsRegressor(K, family=..., trials=...,
  gating_features=..., expert_features=..., shared_features=...,
  random_state=s).fit(X, y, groups=...)`` with the case's model and nothing
  else; its total log-likelihood ``log_density(X, y, groups=...).sum()`` and
  ``n_parameters_``.

* moelearn with a longer search: the same with ``n_init=100`` (``SEARCH_N_INIT``),
  the counterpart of flexmix's ``nrep = 10``.

The target of a case is the best flexmix log-likelihood over the seeds with
all K components (flexmix drops components that empty; such a run has fewer
parameters and is not a target).  PASS: with flexmix's parameter count, every
seed of the default reaches the target within 0.5 nats (``LOOSE``) and every
seed of the longer search within 0.05 nats (``TOLERANCE``).  Writes
benchmarks/reports/models.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import progress, write_report
from _flexmix import ensure_flexmix

TOLERANCE = 0.05  # nats below the target that still count as reaching it
LOOSE = 0.5  # the default's tolerance (the model alone, no option)
SEARCH_N_INIT = 100  # starts of the longer search, against flexmix's nrep = 10

# columns of the exported data: species dummies 2, 3; replicate dummies 2, 3; total (trials)
CASES = {
    "tribolium_k2": dict(
        title="tribolium, binomial ~ species, constant weights, K = 2",
        data="tribolium",
        r_formula="cbind(Remaining, Total - Remaining) ~ Species",
        r_concomitant=None,
        k=2,
        expert_features=[0, 1],
        gating_features=[],
        df_formula="2 × 3 coefficients + 1 weight",
        df=7,
    ),
    "tribolium_k3": dict(
        title="tribolium, binomial ~ species, constant weights, K = 3",
        data="tribolium",
        r_formula="cbind(Remaining, Total - Remaining) ~ Species",
        r_concomitant=None,
        k=3,
        expert_features=[0, 1],
        gating_features=[],
        df_formula="3 × 3 coefficients + 2 weights",
        df=11,
    ),
    "tribolium_k2_gate": dict(
        title="tribolium, binomial ~ species, gate on replicate, K = 2",
        data="tribolium",
        r_formula="cbind(Remaining, Total - Remaining) ~ Species",
        r_concomitant="~ Replicate",
        k=2,
        expert_features=[0, 1],
        gating_features=[2, 3],
        df_formula="2 × 3 coefficients + 3 gate coefficients",
        df=9,
    ),
    "betablocker_k2": dict(
        title="betablocker, binomial ~ treatment, constant weights, K = 2",
        data="betablocker",
        r_formula="cbind(Deaths, Total - Deaths) ~ Treatment",
        r_concomitant=None,
        k=2,
        expert_features=[0],
        gating_features=[],
        df_formula="2 × 2 coefficients + 1 weight",
        df=5,
    ),
    "betablocker_k3": dict(
        title="betablocker, binomial ~ treatment, constant weights, K = 3",
        data="betablocker",
        r_formula="cbind(Deaths, Total - Deaths) ~ Treatment",
        r_concomitant=None,
        k=3,
        expert_features=[0],
        gating_features=[],
        df_formula="3 × 2 coefficients + 2 weights",
        df=8,
    ),
    "betablocker_grouped_k2": dict(
        title="betablocker, binomial ~ treatment, rows grouped by centre, constant weights, K = 2",
        data="betablocker",
        r_formula="cbind(Deaths, Total - Deaths) ~ Treatment | Center",
        r_concomitant=None,
        k=2,
        expert_features=[0],
        gating_features=[],
        groups="center",
        df_formula="2 × 2 coefficients + 1 weight",
        df=5,
    ),
    "betablocker_grouped_k3": dict(
        title="betablocker, binomial ~ treatment, rows grouped by centre, constant weights, K = 3",
        data="betablocker",
        r_formula="cbind(Deaths, Total - Deaths) ~ Treatment | Center",
        r_concomitant=None,
        k=3,
        expert_features=[0],
        gating_features=[],
        groups="center",
        df_formula="3 × 2 coefficients + 2 weights",
        df=8,
    ),
    "betablocker_fixed_k2": dict(
        title="betablocker, binomial ~ 1, rows grouped by centre, treatment shared, K = 2",
        data="betablocker",
        r_formula="cbind(Deaths, Total - Deaths) ~ 1 | Center",
        r_concomitant=None,
        r_fixed="~ Treatment",
        k=2,
        expert_features=[],
        shared_features=[0],
        gating_features=[],
        groups="center",
        df_formula="2 intercepts + 1 shared treatment effect + 1 weight",
        df=4,
    ),
    "betablocker_fixed_k3": dict(
        title="betablocker, binomial ~ 1, rows grouped by centre, treatment shared, K = 3",
        data="betablocker",
        r_formula="cbind(Deaths, Total - Deaths) ~ 1 | Center",
        r_concomitant=None,
        r_fixed="~ Treatment",
        k=3,
        expert_features=[],
        shared_features=[0],
        gating_features=[],
        groups="center",
        df_formula="3 intercepts + 1 shared treatment effect + 2 weights",
        df=6,
    ),
    "dmft_zip": dict(
        title="dmft, zero-inflated Poisson ~ log(begin + 0.5) + gender + ethnic + treatment",
        data="dmft",
        family="zero-inflated-poisson",
        r_formula="End ~ log(Begin + 0.5) + Gender + Ethnic + Treatment",
        r_concomitant=None,
        r_model="ziglm",
        k=2,
        expert_features=list(range(9)),
        gating_features=[],
        df_formula="10 Poisson coefficients + 1 weight (the point mass has none)",
        df=11,
    ),
}

R_SCRIPT = r"""
suppressMessages(library(flexmix))
args <- commandArgs(trailingOnly = TRUE)
tmp <- args[1]
seeds <- as.integer(strsplit(args[2], ",")[[1]])
cases <- read.csv(file.path(tmp, "cases.csv"), stringsAsFactors = FALSE)
data("tribolium", package = "flexmix")
data("betablocker", package = "flexmix")
lev <- function(f, i) as.numeric(as.integer(f) == i)
write.csv(data.frame(sp2 = lev(tribolium$Species, 2), sp3 = lev(tribolium$Species, 3),
                     rep2 = lev(tribolium$Replicate, 2), rep3 = lev(tribolium$Replicate, 3),
                     total = tribolium$Total, y = tribolium$Remaining),
          file.path(tmp, "tribolium.csv"), row.names = FALSE)
write.csv(data.frame(treated = lev(betablocker$Treatment, 2), total = betablocker$Total,
                     center = as.integer(betablocker$Center), y = betablocker$Deaths),
          file.path(tmp, "betablocker.csv"), row.names = FALSE)
data("dmft", package = "flexmix")
write.csv(data.frame(logbegin = log(dmft$Begin + 0.5), male = lev(dmft$Gender, 2),
                     white = lev(dmft$Ethnic, 2), black = lev(dmft$Ethnic, 3),
                     educ = lev(dmft$Treatment, 2), all = lev(dmft$Treatment, 3),
                     enrich = lev(dmft$Treatment, 4), rinse = lev(dmft$Treatment, 5),
                     hygiene = lev(dmft$Treatment, 6), y = dmft$End),
          file.path(tmp, "dmft.csv"), row.names = FALSE)
out <- file(file.path(tmp, "out.csv"), "w")
writeLines("case,seed,status,seconds,loglik,df,k_found", out)
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  df <- get(cs$data)
  binomial <- if (cs$model == "ziglm") FLXMRziglm(family = "poisson") else
    if (cs$fixed == "") FLXMRglm(family = "binomial") else
    FLXMRglmfix(family = "binomial", fixed = as.formula(cs$fixed))
  ctrl <- if (cs$model == "ziglm") list(minprior = 0.01) else list()
  for (s in seeds) {
    set.seed(s)
    t0 <- proc.time()[["elapsed"]]
    fit <- tryCatch({
      if (cs$concomitant == "") {
        stepFlexmix(as.formula(cs$formula), data = df, k = cs$k, nrep = 10,
                    model = binomial, control = ctrl, verbose = FALSE)
      } else {
        stepFlexmix(as.formula(cs$formula), data = df, k = cs$k, nrep = 10, model = binomial,
                    concomitant = FLXPmultinom(as.formula(cs$concomitant)), verbose = FALSE)
      }
    }, error = function(e) { message("  error: ", conditionMessage(e)); NULL })
    secs <- proc.time()[["elapsed"]] - t0
    if (is.null(fit)) {
      writeLines(sprintf("%s,%d,error,%.6f,,,", cs$case, s, secs), out)
      next
    }
    ll <- logLik(fit)
    writeLines(sprintf("%s,%d,ok,%.6f,%.17g,%d,%d", cs$case, s, secs, as.numeric(ll),
                       attr(ll, "df"), fit@k), out)
    message(sprintf("  %s seed %d: logLik %.4f (df %d, k %d) in %.3f s", cs$case, s,
                    as.numeric(ll), attr(ll, "df"), fit@k, secs))
  }
}
close(out)
"""


def run_r(seeds):
    """The exported data sets ``{name: (X, y)}`` and the rows of flexmix's fits."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with open(tmp / "cases.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "data", "formula", "concomitant", "fixed", "model", "k"])
            for name, c in CASES.items():
                w.writerow(
                    [
                        name,
                        c["data"],
                        c["r_formula"],
                        c["r_concomitant"] or "",
                        c.get("r_fixed", ""),
                        c.get("r_model", "glm"),
                        c["k"],
                    ]
                )
        (tmp / "models.R").write_text(R_SCRIPT)
        print("R: flexmix fits ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            ["Rscript", str(tmp / "models.R"), str(tmp), ",".join(str(int(s)) for s in seeds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the R script failed (exit {proc.returncode}):\n{proc.stdout}")
        data = {}
        for name in ("tribolium", "betablocker", "dmft"):
            table = np.genfromtxt(tmp / f"{name}.csv", delimiter=",", names=True, dtype=float)
            cols = [c for c in table.dtype.names if c != "y"]
            data[name] = (np.column_stack([table[c] for c in cols]), table["y"], cols)
        with open(tmp / "out.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    for r in rows:
        ok = r["status"] == "ok"
        r["seed"] = int(r["seed"])
        r["seconds"] = float(r["seconds"])
        r["loglik"] = float(r["loglik"]) if ok else float("nan")
        r["df"] = int(r["df"]) if ok else None
        r["k_found"] = int(r["k_found"]) if ok else None
    return data, rows


def fit_moelearn(spec, X, y, trials, seed, n_init="auto", groups=None):
    """One fit: total log-likelihood, parameter count and time (or the error)."""
    from moelearn import MixtureOfExpertsRegressor

    est = MixtureOfExpertsRegressor(
        n_experts=spec["k"],
        family=spec.get("family", "binomial"),
        trials=trials,
        gating_features=spec["gating_features"],
        expert_features=spec["expert_features"],
        shared_features=spec.get("shared_features"),
        n_init=n_init,
        prior_strength=0,  # the peers' model: plain maximum likelihood
        random_state=seed,
    )
    t = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(X, y, groups=groups)
    except (ValueError, TypeError) as exc:
        return dict(
            seed=seed,
            status="error",
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - t,
            loglik=float("nan"),
            n_params=None,
        )
    secs = time.perf_counter() - t
    return dict(
        seed=seed,
        status="ok",
        seconds=secs,
        loglik=float(np.sum(est.log_density(X, y, groups=groups))),
        n_params=int(est.n_parameters_),
        converged=bool(est.converged_),
        warnings=sorted({type(w.message).__name__ for w in caught}),
    )


def spread(values):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    return dict(min=float(v.min()), median=float(np.median(v)), max=float(v.max()), n=int(v.size))


def _setting(fits, target, df):
    ok = [f for f in fits if f["status"] == "ok"]

    def within(tol):
        return sum(f["loglik"] >= target - tol and f["n_params"] == df for f in ok)

    return dict(
        fits=fits,
        loglik=spread([f["loglik"] for f in ok]),
        n_params=sorted({f["n_params"] for f in ok}),
        seconds=spread([f["seconds"] for f in ok]),
        within_tolerance=within(TOLERANCE),
        within_loose=within(LOOSE),
        best_gain=max((f["loglik"] - target for f in ok), default=float("nan")),
    )


def summarise(name, spec, r_rows, fits, search_fits):
    mine = [r for r in r_rows if r["case"] == name]
    full = [r for r in mine if r["status"] == "ok" and r["k_found"] == spec["k"]]
    target = max((r["loglik"] for r in full), default=float("nan"))
    default = _setting(fits, target, spec["df"])
    search = _setting(search_fits, target, spec["df"])
    r_secs = spread([r["seconds"] for r in mine])
    m_secs = default["seconds"]
    passed = (
        np.isfinite(target)
        and default["within_loose"] == len(fits)
        and search["within_tolerance"] == len(search_fits)
    )
    return dict(
        case=name,
        **spec,
        flexmix=dict(
            per_seed=mine,
            loglik=spread([r["loglik"] for r in full]),
            dfs=sorted({r["df"] for r in mine if r["df"] is not None}),
            dropped=sum(r["status"] == "ok" and r["k_found"] != spec["k"] for r in mine),
            seconds=r_secs,
        ),
        target=target,
        moelearn=default,
        moelearn_search=dict(search, n_init=SEARCH_N_INIT),
        time_ratio=(m_secs["median"] / r_secs["median"]) if (m_secs and r_secs) else None,
        verdict="PASS" if passed else "FAIL",
    )


def _range(s, spec=".4f"):
    if s is None:
        return "–"
    if s["n"] == 1:
        return format(s["median"], spec)
    return f"{s['min']:{spec}} / {s['median']:{spec}} / {s['max']:{spec}}"


def markdown(cases, seeds):
    n = len(seeds)
    seeds_txt = f"seed {seeds[0]}" if n == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
    passed = sum(c["verdict"] == "PASS" for c in cases)
    md = [
        "# Models users fit in flexmix: binomial trials, grouped rows, shared coefficients, "
        "zero inflation",
        "",
        f"**moelearn: {passed} of {len(cases)} cases PASS** (with flexmix's parameter count, "
        f"every seed of the default within {LOOSE} nats of flexmix's best, and every seed with "
        f"`n_init={SEARCH_N_INIT}` within {TOLERANCE}).",
        "",
        "Total log-likelihood in nats on the full data (every constant included, as "
        "flexmix's `logLik`); df = free parameters. flexmix: `stepFlexmix(..., nrep = 10)` "
        f"per seed; its best over the seeds with all K components is the target. Per-seed "
        f"columns: min / median / max over {seeds_txt}. Times: flexmix's fit alone inside R, "
        "moelearn's wall-clock `fit`, on a shared 2-core machine; the time ratio is the "
        "default's median over flexmix's.",
        "",
        "| case | df | flexmix logLik | flexmix time (s) | target | moelearn default logLik | "
        f"time (s) | time ratio | within {LOOSE} | `n_init={SEARCH_N_INIT}` logLik | time (s) | "
        f"within {TOLERANCE} | PASS/FAIL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        fx, ml, ms = c["flexmix"], c["moelearn"], c["moelearn_search"]
        dropped = f" ({fx['dropped']} dropped a component)" if fx["dropped"] else ""
        ratio = "–" if c["time_ratio"] is None else f"{c['time_ratio']:.2f}"
        md.append(
            f"| {c['title']} | {c['df']} | {_range(fx['loglik'])}{dropped} | "
            f"{_range(fx['seconds'], '.3f')} | {c['target']:.4f} | {_range(ml['loglik'])} | "
            f"{_range(ml['seconds'], '.3f')} | {ratio} | "
            f"{ml['within_loose']}/{len(ml['fits'])} | {_range(ms['loglik'])} | "
            f"{_range(ms['seconds'], '.3f')} | {ms['within_tolerance']}/{len(ms['fits'])}"
            f" | {c['verdict']} |"
        )
    md += ["", "Calls and parameter counts:", ""]
    for c in cases:
        gate = f", concomitant = FLXPmultinom({c['r_concomitant']})" if c["r_concomitant"] else ""
        model = (
            f'FLXMRglmfix(family = "binomial", fixed = {c["r_fixed"]})'
            if c.get("r_fixed")
            else 'FLXMRglm(family = "binomial")'
        )
        if c.get("r_model") == "ziglm":
            model = 'FLXMRziglm(family = "poisson"), control = list(minprior = 0.01)'

        md.append(
            f"* {c['title']}: `stepFlexmix({c['r_formula']}, k = {c['k']}, nrep = 10, "
            f"model = {model}{gate})`; df = {c['df_formula']} = {c['df']}."
        )
    errors = [
        f"{c['case']} seed {f['seed']}: {f['error']}"
        for c in cases
        for f in c["moelearn"]["fits"] + c["moelearn_search"]["fits"]
        if f["status"] != "ok"
    ]
    if errors:
        md += ["", "moelearn fits that raised:", ""] + [f"* {e}" for e in errors]
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    ap.add_argument("--quick", action="store_true", help="seed 0 only")
    ap.add_argument("--report", default="models", help="benchmarks/reports/NAME.{json,md}")
    args = ap.parse_args()
    seeds = [0] if args.quick else list(range(args.seeds))
    ensure_flexmix()
    data, r_rows = run_r(seeds)
    cases = []
    for name in progress(list(CASES), label="moelearn fits"):
        spec = CASES[name]
        X, y, cols = data[spec["data"]]
        groups = None
        if "groups" in spec:  # a column of the export that is not a feature
            at = cols.index(spec["groups"])
            groups = X[:, at].astype(int)
        keep = [i for i, c in enumerate(cols) if c != "center"]  # groups are not a feature
        X, cols = X[:, keep], [cols[i] for i in keep]
        trials = cols.index("total") if "total" in cols else None
        fits = [fit_moelearn(spec, X, y, trials, s, groups=groups) for s in seeds]
        search = [fit_moelearn(spec, X, y, trials, s, SEARCH_N_INIT, groups=groups) for s in seeds]
        cases.append(summarise(name, spec, r_rows, fits, search))
    md = markdown(cases, seeds)
    js, mdp = write_report(
        args.report,
        dict(
            seeds=seeds,
            tolerance=TOLERANCE,
            loose=LOOSE,
            search_n_init=SEARCH_N_INIT,
            cases=cases,
        ),
        md,
    )
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}")


if __name__ == "__main__":
    main()
