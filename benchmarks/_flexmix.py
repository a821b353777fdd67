"""Running R's flexmix from Python: install check, one R script, parameters back.

flexmix fits mixtures of linear regressions with a multinomial-logit
concomitant model (the gate) by EM; ``stepFlexmix`` keeps the best of
``nrep`` random starts.  The R side only fits and writes the parameters; the
Python side evaluates them with the same code as moelearn's models, so both
are scored identically.  ``run_hmeem`` does the same for mixtools' ``hmeEM``
(two experts, a logistic gate).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from moelearn import MoEParams

R_SCRIPT = r"""
suppressMessages(library(flexmix))
args <- commandArgs(trailingOnly = TRUE)
df <- read.csv(args[1])
tasks <- read.csv(args[2])
if (is.null(tasks$nrep)) tasks$nrep <- 3
out <- file(args[3], "w")
xcols <- setdiff(names(df), c("y", "fold"))
f_exp <- as.formula(paste("y ~", paste(xcols, collapse = " + ")))
f_gate <- as.formula(paste("~", paste(xcols, collapse = " + ")))
writeLines("task,status,seconds,k_found,kind,component,index,value", out)
for (i in seq_len(nrow(tasks))) {
  K <- tasks$k[i]; fold <- tasks$fold[i]
  rows <- if (fold == -1) rep(TRUE, nrow(df)) else df$fold != fold
  train <- df[rows, c(xcols, "y")]
  set.seed(tasks$seed[i])
  t0 <- proc.time()[["elapsed"]]
  fit <- tryCatch(
    stepFlexmix(f_exp, data = train, k = K, nrep = tasks$nrep[i],
                concomitant = FLXPmultinom(f_gate), verbose = FALSE),
    error = function(e) NULL)
  secs <- proc.time()[["elapsed"]] - t0
  if (is.null(fit)) {
    writeLines(sprintf("%d,error,%f,0,,,,", i - 1, secs), out)
    next
  }
  ll <- logLik(fit)
  writeLines(sprintf("%d,ok,%f,%d,loglik,0,0,%.17g", i - 1, secs, fit@k, as.numeric(ll)), out)
  writeLines(sprintf("%d,ok,%f,%d,df,0,0,%d", i - 1, secs, fit@k, attr(ll, "df")), out)
  pe <- parameters(fit)
  pc <- parameters(fit, which = "concomitant")
  for (j in seq_len(ncol(pe))) for (r in seq_len(nrow(pe)))
    writeLines(sprintf("%d,ok,%f,%d,expert,%d,%d,%.17g", i - 1, secs, fit@k, j - 1, r - 1,
                       pe[r, j]), out)
  for (j in seq_len(ncol(pc))) for (r in seq_len(nrow(pc)))
    writeLines(sprintf("%d,ok,%f,%d,gate,%d,%d,%.17g", i - 1, secs, fit@k, j - 1, r - 1,
                       pc[r, j]), out)
}
close(out)
"""

HME_SCRIPT = r"""
suppressMessages(library(mixtools))
args <- commandArgs(trailingOnly = TRUE)
df <- read.csv(args[1])
seeds <- as.integer(strsplit(args[2], ",")[[1]])
out <- file(args[3], "w")
x <- as.matrix(df[, setdiff(names(df), "y"), drop = FALSE])
writeLines("task,status,seconds,kind,component,index,value", out)
for (i in seq_along(seeds)) {
  set.seed(seeds[i])
  t0 <- proc.time()[["elapsed"]]
  fit <- tryCatch({
    junk <- capture.output(f <- hmeEM(df$y, x, k = 2))
    f
  }, error = function(e) NULL)
  secs <- proc.time()[["elapsed"]] - t0
  if (is.null(fit)) {
    writeLines(sprintf("%d,error,%f,,,,", i - 1, secs), out)
    next
  }
  for (j in 1:2) for (r in seq_len(nrow(fit$beta)))
    writeLines(sprintf("%d,ok,%f,expert,%d,%d,%.17g", i - 1, secs, j - 1, r - 1,
                       fit$beta[r, j]), out)
  for (j in 1:2)
    writeLines(sprintf("%d,ok,%f,noise,%d,0,%.17g", i - 1, secs, j - 1, fit$sigma[j]), out)
  for (r in seq_along(fit$w))
    writeLines(sprintf("%d,ok,%f,gate,0,%d,%.17g", i - 1, secs, r - 1, fit$w[r]), out)
  writeLines(sprintf("%d,ok,%f,loglik,0,0,%.17g", i - 1, secs, fit$loglik), out)
}
close(out)
"""


def ensure_flexmix(mixtools=False):
    """Install R and flexmix (and mixtools) from Debian's packages when missing (needs root)."""
    libs = ["flexmix"] + (["mixtools"] if mixtools else [])
    check = "; ".join(f"suppressMessages(library({lib}))" for lib in libs)
    ok = (
        shutil.which("Rscript")
        and subprocess.run(["Rscript", "-e", check], capture_output=True).returncode == 0
    )
    if ok:
        return
    packages = ["r-base-core"] + [f"r-cran-{lib}" for lib in libs]
    print(f"installing {' '.join(packages)} from Debian's packages ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/bin:/bin"},
    )


def run_flexmix(X, y, folds, tasks):
    """Fit flexmix for each task ``(k, fold, seed[, nrep])`` on the rows whose fold differs.

    ``folds`` gives each row's fold; a task with fold -1 fits every row.
    ``nrep`` (default 3) is stepFlexmix's number of random starts.  Returns one
    dict per task: status, seconds (the fit alone, timed inside R), k_found,
    loglik and df (flexmix's own log-likelihood and parameter count) and a
    MoEParams (or None).
    """
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cols = [f"x{j}" for j in range(X.shape[1])]
        with open(tmp / "data.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([*cols, "y", "fold"])
            for row, target, fold in zip(X, y, folds, strict=True):
                w.writerow([*(repr(float(v)) for v in row), repr(float(target)), int(fold)])
        with open(tmp / "tasks.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["k", "fold", "seed", "nrep"])
            w.writerows([(*t, 3) if len(t) == 3 else t for t in tasks])
        (tmp / "fit.R").write_text(R_SCRIPT)
        subprocess.run(
            [
                "Rscript",
                str(tmp / "fit.R"),
                str(tmp / "data.csv"),
                str(tmp / "tasks.csv"),
                str(tmp / "out.csv"),
            ],
            check=True,
            capture_output=True,
        )
        rows = list(csv.DictReader(open(tmp / "out.csv")))
    d = X.shape[1]
    results = []
    for i in range(len(tasks)):
        mine = [r for r in rows if int(r["task"]) == i]
        if not mine or mine[0]["status"] != "ok":
            results.append(
                dict(
                    status="error",
                    seconds=float(mine[0]["seconds"]) if mine else float("nan"),
                    k_found=0,
                    params=None,
                    loglik=np.nan,
                    df=-1,
                )
            )
            continue
        k = int(mine[0]["k_found"])
        E = np.zeros((d + 2, k))
        G = np.zeros((d + 1, k))
        extra = {}
        for r in mine:
            if r["kind"] in ("loglik", "df"):
                extra[r["kind"]] = float(r["value"])
                continue
            target = E if r["kind"] == "expert" else G
            target[int(r["index"]), int(r["component"])] = float(r["value"])
        params = MoEParams(
            experts=E[1 : d + 1].T,
            gating=G[1:].T,
            expert_bias=E[0],
            gating_bias=G[0],
            noise_std=np.maximum(E[d + 1], 1e-12),
            link="linear",
        )
        results.append(
            dict(
                status="ok",
                seconds=float(mine[0]["seconds"]),
                k_found=k,
                params=params,
                loglik=extra.get("loglik", np.nan),
                df=int(extra.get("df", -1)),
            )
        )
    return results


def _write_csv(path, X, y, folds=None):
    cols = [f"x{j}" for j in range(X.shape[1])]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*cols, "y"] + ([] if folds is None else ["fold"]))
        for i, (row, target) in enumerate(zip(X, y, strict=True)):
            w.writerow(
                [*(repr(float(v)) for v in row), repr(float(target))]
                + ([] if folds is None else [int(folds[i])])
            )


def run_hmeem(X, y, seeds):
    """Fit mixtools' ``hmeEM`` (two experts, logistic gate) once per seed on every row.

    ``hmeEM`` accepts only ``k = 2``, and its Newton step for the gate uses
    the intercept and the first predictor only, so it fits moelearn's model
    only when X has one column (a ValueError otherwise).  Returns one dict per
    seed: status, seconds (timed inside R), loglik (hmeEM's own) and a
    MoEParams (or None).
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != 1:
        raise ValueError(f"hmeEM fits a one-feature gate only; X has shape {X.shape}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _write_csv(tmp / "data.csv", X, y)
        (tmp / "hme.R").write_text(HME_SCRIPT)
        subprocess.run(
            [
                "Rscript",
                str(tmp / "hme.R"),
                str(tmp / "data.csv"),
                ",".join(str(int(s)) for s in seeds),
                str(tmp / "out.csv"),
            ],
            check=True,
            capture_output=True,
        )
        rows = list(csv.DictReader(open(tmp / "out.csv")))
    results = []
    for i in range(len(seeds)):
        mine = [r for r in rows if int(r["task"]) == i]
        if not mine or mine[0]["status"] != "ok":
            results.append(
                dict(
                    status="error",
                    seconds=float(mine[0]["seconds"]) if mine else float("nan"),
                    params=None,
                    loglik=np.nan,
                )
            )
            continue
        beta, sigma, w, loglik = np.zeros((2, 2)), np.zeros(2), np.zeros(2), np.nan
        for r in mine:
            value = float(r["value"])
            if r["kind"] == "expert":
                beta[int(r["index"]), int(r["component"])] = value
            elif r["kind"] == "noise":
                sigma[int(r["component"])] = value
            elif r["kind"] == "gate":
                w[int(r["index"])] = value
            else:
                loglik = value
        # hmeEM: P(expert 1 | x) = logistic(w0 + w1 x), i.e. softmax logits (w0 + w1 x, 0)
        params = MoEParams(
            experts=beta[1:].T,
            gating=np.array([[w[1]], [0.0]]),
            expert_bias=beta[0],
            gating_bias=np.array([w[0], 0.0]),
            noise_std=np.maximum(sigma, 1e-12),
            link="linear",
        )
        results.append(
            dict(status="ok", seconds=float(mine[0]["seconds"]), params=params, loglik=loglik)
        )
    return results


BINOMIAL_SCRIPT = r"""
suppressMessages(library(flexmix))
args <- commandArgs(trailingOnly = TRUE)
df <- read.csv(args[1])
tasks <- read.csv(args[2])
out <- file(args[3], "w")
xcols <- setdiff(names(df), c("y", "fold"))
f_exp <- as.formula(paste("cbind(y, 1 - y) ~", paste(xcols, collapse = " + ")))
f_gate <- as.formula(paste("~", paste(xcols, collapse = " + ")))
writeLines("task,status,seconds,k_found,kind,component,index,value", out)
for (i in seq_len(nrow(tasks))) {
  K <- tasks$k[i]; fold <- tasks$fold[i]
  rows <- if (fold == -1) rep(TRUE, nrow(df)) else df$fold != fold
  train <- df[rows, c(xcols, "y")]
  set.seed(tasks$seed[i])
  t0 <- proc.time()[["elapsed"]]
  fit <- tryCatch(
    suppressWarnings(
      stepFlexmix(f_exp, data = train, k = K, nrep = tasks$nrep[i],
                  model = FLXMRglm(family = "binomial"),
                  concomitant = FLXPmultinom(f_gate), verbose = FALSE)),
    error = function(e) NULL)
  secs <- proc.time()[["elapsed"]] - t0
  if (is.null(fit)) {
    writeLines(sprintf("%d,error,%f,0,,,,", i - 1, secs), out)
    next
  }
  ll <- logLik(fit)
  pe <- parameters(fit)
  pc <- parameters(fit, which = "concomitant")
  n_na <- sum(is.na(pe)) + sum(is.na(pc))
  pe[is.na(pe)] <- 0
  pc[is.na(pc)] <- 0
  head <- sprintf("%d,ok,%f,%d", i - 1, secs, fit@k)
  writeLines(sprintf("%s,loglik,0,0,%.17g", head, as.numeric(ll)), out)
  writeLines(sprintf("%s,df,0,0,%d", head, attr(ll, "df")), out)
  writeLines(sprintf("%s,iter,0,0,%d", head, fit@iter), out)
  writeLines(sprintf("%s,converged,0,0,%d", head, as.integer(fit@converged)), out)
  writeLines(sprintf("%s,aliased,0,0,%d", head, n_na), out)
  pe <- as.matrix(pe); pc <- as.matrix(pc)
  for (j in seq_len(ncol(pe))) for (r in seq_len(nrow(pe)))
    writeLines(sprintf("%s,expert,%d,%d,%.17g", head, j - 1, r - 1, pe[r, j]), out)
  for (j in seq_len(ncol(pc))) for (r in seq_len(nrow(pc)))
    writeLines(sprintf("%s,gate,%d,%d,%.17g", head, j - 1, r - 1, pc[r, j]), out)
}
close(out)
"""


def run_flexmix_binomial(X, y, folds, tasks):
    """Fit flexmix's mixture of logistic regressions for each task ``(k, fold, seed, nrep)``.

    The model is ``stepFlexmix(cbind(y, 1 - y) ~ x, k=k, nrep=nrep,
    model=FLXMRglm(family="binomial"), concomitant=FLXPmultinom(~ x))``: K
    logistic experts and a multinomial-logit gate, both on every column of X;
    y holds 0/1.  It is fitted on the rows whose fold differs from the task's
    (fold -1: every row).  Returns one dict per task: status, seconds (the fit
    alone, timed inside R), k_found (flexmix drops components whose prior falls
    below 5%), loglik and df (flexmix's own training log-likelihood and
    parameter count), iter, converged, aliased (coefficients R reported as NA,
    set to 0), and ``expert_coef`` / ``gate_coef``, arrays of shape
    ``(k_found, d + 1)`` with the intercept first (or None on error); score
    them with :func:`binomial_mixture_log_density`.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("run_flexmix_binomial needs y in {0, 1}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _write_csv(tmp / "data.csv", X, y, folds)
        with open(tmp / "tasks.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["k", "fold", "seed", "nrep"])
            w.writerows(tasks)
        (tmp / "fit.R").write_text(BINOMIAL_SCRIPT)
        subprocess.run(
            [
                "Rscript",
                str(tmp / "fit.R"),
                str(tmp / "data.csv"),
                str(tmp / "tasks.csv"),
                str(tmp / "out.csv"),
            ],
            check=True,
            capture_output=True,
        )
        rows = list(csv.DictReader(open(tmp / "out.csv")))
    d = X.shape[1]
    results = []
    for i in range(len(tasks)):
        mine = [r for r in rows if int(r["task"]) == i]
        if not mine or mine[0]["status"] != "ok":
            results.append(
                dict(
                    status="error",
                    seconds=float(mine[0]["seconds"]) if mine else float("nan"),
                    k_found=0,
                    loglik=np.nan,
                    df=-1,
                    iter=-1,
                    converged=False,
                    aliased=0,
                    expert_coef=None,
                    gate_coef=None,
                )
            )
            continue
        k = int(mine[0]["k_found"])
        E = np.zeros((k, d + 1))
        G = np.zeros((k, d + 1))
        extra = {}
        for r in mine:
            if r["kind"] in ("expert", "gate"):
                target = E if r["kind"] == "expert" else G
                target[int(r["component"]), int(r["index"])] = float(r["value"])
            else:
                extra[r["kind"]] = float(r["value"])
        results.append(
            dict(
                status="ok",
                seconds=float(mine[0]["seconds"]),
                k_found=k,
                loglik=extra.get("loglik", np.nan),
                df=int(extra.get("df", -1)),
                iter=int(extra.get("iter", -1)),
                converged=bool(extra.get("converged", 0)),
                aliased=int(extra.get("aliased", 0)),
                expert_coef=E,
                gate_coef=G,
            )
        )
    return results


def binomial_mixture_log_density(expert_coef, gate_coef, X, y):
    """Per-row ``log p(y | x)`` of a mixture of logistic experts with a softmax gate.

    ``expert_coef`` and ``gate_coef`` have shape ``(K, d + 1)`` with the
    intercept first (as returned by :func:`run_flexmix_binomial`); y holds
    0/1.  Computed in log space: ``logsumexp_k(log g_k(x) + log p_k(y | x))``.
    """
    from scipy.special import log_expit, log_softmax, logsumexp

    X1 = np.column_stack([np.ones(len(X)), np.asarray(X, dtype=float)])
    y = np.asarray(y, dtype=float)[:, None]
    log_gate = log_softmax(X1 @ np.asarray(gate_coef).T, axis=1)
    eta = X1 @ np.asarray(expert_coef).T
    log_expert = y * log_expit(eta) + (1 - y) * log_expit(-eta)
    return logsumexp(log_gate + log_expert, axis=1)


def ensure_r_package(lib):
    """Load the R package ``lib``, installing Debian's ``r-cran-<lib>`` when missing.

    Returns True when ``library(lib)`` loads afterwards, and False when Debian
    has no such package or it cannot be installed (no root, no network): the
    caller decides whether that is fatal.  R itself must be there already
    (see :func:`ensure_flexmix`).
    """

    def loads():
        check = f"suppressMessages(library({lib}))"
        return subprocess.run(["Rscript", "-e", check], capture_output=True).returncode == 0

    if loads():
        return True
    package = f"r-cran-{lib.lower()}"
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/bin:/bin"}
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        policy = subprocess.run(
            ["apt-cache", "policy", package], check=True, capture_output=True, text=True
        ).stdout
        if "Candidate:" not in policy or "Candidate: (none)" in policy:
            return False
        print(f"installing {package} from Debian's packages ...", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package], check=True, capture_output=True, env=env
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    return loads()


def r_data(package, item, columns):
    """Columns of the R data set ``package::item`` as float arrays, read through a CSV.

    Uses the copy that ships with the installed R package, so nothing is
    downloaded.  Returns ``{column: np.ndarray}`` in the order of ``columns``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        cols = ", ".join(f'"{c}"' for c in columns)
        expr = (
            f'data("{item}", package = "{package}"); '
            f"write.csv({item}[, c({cols})], {_r_string(str(path))}, row.names = FALSE)"
        )
        subprocess.run(["Rscript", "-e", expr], check=True, capture_output=True)
        table = np.genfromtxt(path, delimiter=",", names=True, dtype=float)
    return {c: np.asarray(table[c.replace(".", "_")], dtype=float) for c in columns}


def _r_string(text):
    """``text`` as a double-quoted string literal that R (and JSON) read back unchanged."""
    import json

    return json.dumps(text)
