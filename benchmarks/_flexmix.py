"""Running R's flexmix from Python: install check, one R script, parameters back.

flexmix fits mixtures of linear regressions with a multinomial-logit
concomitant model (the gate) by EM; ``stepFlexmix`` keeps the best of
``nrep`` random starts.  The R side only fits and writes the parameters; the
Python side evaluates them with the same code as moelearn's models, so both
are scored identically.
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
out <- file(args[3], "w")
xcols <- setdiff(names(df), c("y", "fold"))
f_exp <- as.formula(paste("y ~", paste(xcols, collapse = " + ")))
f_gate <- as.formula(paste("~", paste(xcols, collapse = " + ")))
writeLines("task,status,seconds,k_found,kind,component,index,value", out)
for (i in seq_len(nrow(tasks))) {
  K <- tasks$k[i]; fold <- tasks$fold[i]
  train <- df[df$fold != fold, c(xcols, "y")]
  set.seed(tasks$seed[i])
  t0 <- proc.time()[["elapsed"]]
  fit <- tryCatch(
    stepFlexmix(f_exp, data = train, k = K, nrep = 3, concomitant = FLXPmultinom(f_gate),
                verbose = FALSE),
    error = function(e) NULL)
  secs <- proc.time()[["elapsed"]] - t0
  if (is.null(fit)) {
    writeLines(sprintf("%d,error,%f,0,,,,", i - 1, secs), out)
    next
  }
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


def ensure_flexmix():
    """Install R and flexmix from Debian's packages when they are missing (needs root)."""
    ok = shutil.which("Rscript") and subprocess.run(
        ["Rscript", "-e", "suppressMessages(library(flexmix))"], capture_output=True
    ).returncode == 0
    if ok:
        return
    print("installing r-base-core and r-cran-flexmix from Debian's packages ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "r-base-core", "r-cran-flexmix"],
                   check=True, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/bin:/bin"})


def run_flexmix(X, y, folds, tasks):
    """Fit flexmix for each task ``(k, fold, seed)`` on the rows whose fold differs.

    ``folds`` gives each row's fold (-1: every row is training data).  Returns
    one dict per task: status, seconds, k_found and a MoEParams (or None).
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
            w.writerow(["k", "fold", "seed"])
            w.writerows(tasks)
        (tmp / "fit.R").write_text(R_SCRIPT)
        subprocess.run(["Rscript", str(tmp / "fit.R"), str(tmp / "data.csv"),
                        str(tmp / "tasks.csv"), str(tmp / "out.csv")], check=True,
                       capture_output=True)
        rows = list(csv.DictReader(open(tmp / "out.csv")))
    d = X.shape[1]
    results = []
    for i in range(len(tasks)):
        mine = [r for r in rows if int(r["task"]) == i]
        if not mine or mine[0]["status"] != "ok":
            results.append(dict(status="error", seconds=float(mine[0]["seconds"]) if mine else
                                float("nan"), k_found=0, params=None))
            continue
        k = int(mine[0]["k_found"])
        E = np.zeros((d + 2, k))
        G = np.zeros((d + 1, k))
        for r in mine:
            target = E if r["kind"] == "expert" else G
            target[int(r["index"]), int(r["component"])] = float(r["value"])
        params = MoEParams(experts=E[1 : d + 1].T, gating=G[1:].T, expert_bias=E[0],
                           gating_bias=G[0], noise_std=np.maximum(E[d + 1], 1e-12),
                           link="linear")
        results.append(dict(status="ok", seconds=float(mine[0]["seconds"]), k_found=k,
                            params=params))
    return results
