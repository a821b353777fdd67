"""Default fit time on small data, against an earlier commit measured in the same run.

    python benchmarks/speed.py                        # against d69eb78, n = 200 .. 100,000
    python benchmarks/speed.py --baseline HEAD~3 --sizes 200 1000

Most mixture-of-regressions data sets have a few hundred to a few thousand rows,
where a fit's cost is its start search and the interpreter's overhead rather
than the arithmetic.  This script times the default
``MixtureOfExpertsRegressor(n_experts=3, random_state=s).fit(X, y)`` on one
design (d = 5, k = 3: inputs and gate from ``make_moe(5, 3)``, Gaussian noise 0.2,
the data of ``families.py``) at each ``n`` of ``--sizes``, for the seeds
``s = 0 .. S-1`` (``--seeds``); each seed's time is the best of ``--repeat``
fits, and the report gives the median over the seeds.  The same fits of the
``--baseline`` commit (its ``src`` exported by ``git archive`` into a temporary
folder and imported in a subprocess, one process per version) run in the same
run, alternating with the current tree's, so the ratio compares like with like
on one machine.  Beside the times: every fit's mean log-likelihood and
objective, so that a faster fit that lands lower shows.

Targets (issue "interactive speed"): the Gaussian default at most 40 ms at
n = 200 and 80 ms at n = 1,000 on a 2-core machine, or 10x faster than the
baseline in the same run.  Writes ``benchmarks/reports/speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import write_report

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "d69eb78"
TARGETS = {200: 0.040, 1_000: 0.080}  # seconds


def _data(n):
    """``families.py``'s design with its Gaussian response."""
    from families import _data as design

    X, ys = design(n)
    return X, ys["gaussian"]


def _worker(sizes, seeds, repeat):
    """Time the fits with whichever moelearn this process imports; one JSON line out."""
    from sklearn.exceptions import ConvergenceWarning

    from moelearn import MixtureOfExpertsRegressor

    warnings.simplefilter("ignore", ConvergenceWarning)
    out = []
    X0, y0 = _data(200)
    MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X0, y0)  # imports, caches
    for n in sizes:
        X, y = _data(n)
        for s in range(seeds):
            best = np.inf
            for _ in range(repeat):
                est = MixtureOfExpertsRegressor(n_experts=3, random_state=s)
                t = time.perf_counter()
                est.fit(X, y)
                best = min(best, time.perf_counter() - t)
            out.append(
                dict(
                    n=n,
                    seed=s,
                    seconds=best,
                    log_likelihood=float(est.log_likelihood_),
                    objective=float(getattr(est, "objective_", np.nan)),
                )
            )
    print(json.dumps(out))


def _run(src, sizes, seeds, repeat):
    """The worker under ``src`` (a folder holding the package ``moelearn``)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, __file__, "--worker", "--sizes", *map(str, sizes)]
    cmd += ["--seeds", str(seeds), "--repeat", str(repeat)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _export(rev, folder):
    """``rev``'s ``src`` folder written under ``folder`` (by ``git archive``)."""
    archive = Path(folder) / "src.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return Path(folder) / "src"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1_000, 10_000, 100_000])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2, help="fits per seed (the best is kept)")
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two versions")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.sizes, args.seeds, args.repeat)
    rev = subprocess.run(
        ["git", "rev-parse", "--short=12", args.baseline],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base_src = _export(rev, tmp)
        runs = {"current": [], "baseline": []}
        for _ in range(args.rounds):  # alternate, so that drift in the machine hits both
            runs["current"].append(_run(ROOT / "src", args.sizes, args.seeds, args.repeat))
            runs["baseline"].append(_run(base_src, args.sizes, args.seeds, args.repeat))
    rows = []
    for n in args.sizes:
        row = {"n": n}
        for name, results in runs.items():
            # per seed the best over the rounds, then the median over the seeds
            per_seed = {}
            for result in results:
                for r in result:
                    if r["n"] == n:
                        keep = per_seed.get(r["seed"])
                        if keep is None or r["seconds"] < keep["seconds"]:
                            per_seed[r["seed"]] = r
            fits = list(per_seed.values())
            row[name] = dict(
                seconds=float(np.median([f["seconds"] for f in fits])),
                log_likelihood=float(np.median([f["log_likelihood"] for f in fits])),
                objective=float(np.median([f["objective"] for f in fits])),
                fits=fits,
            )
        row["speedup"] = row["baseline"]["seconds"] / row["current"]["seconds"]
        target = TARGETS.get(n)
        row["target_seconds"] = target
        row["meets"] = (
            None
            if target is None
            else bool(row["current"]["seconds"] <= target or row["speedup"] >= 10.0)
        )
        rows.append(row)
    lines = [
        "# Default fit time on small data",
        "",
        "`python benchmarks/speed.py`: the Gaussian default, d = 5, k = 3,"
        f" seeds 0-{args.seeds - 1} (each the best of {args.repeat} fits and {args.rounds}"
        " rounds), the median over the"
        f" seeds; the baseline is commit {rev}, measured in the same run, alternating with the"
        " current tree. Target: at most 40 ms at n = 200 and 80 ms at n = 1,000, or 10x the"
        " baseline's speed. Mean log-likelihood and objective are medians over the seeds.",
        "",
        "| n | fit (ms) | baseline (ms) | speedup | target | mean log-lik | baseline | objective |"
        " baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, b = r["current"], r["baseline"]
        mark = "" if r["meets"] is None else (" ✓" if r["meets"] else " ✗")
        target = "—" if r["target_seconds"] is None else f"{1e3 * r['target_seconds']:.0f} ms{mark}"
        lines.append(
            f"| {r['n']:,} | {1e3 * c['seconds']:.0f} | {1e3 * b['seconds']:.0f} |"
            f" {r['speedup']:.2f}x | {target} | {c['log_likelihood']:.5f} |"
            f" {b['log_likelihood']:.5f} | {c['objective']:.5f} | {b['objective']:.5f} |"
        )
    paths = write_report("speed", {"baseline": rev, "rows": rows}, lines)
    print("\n".join(lines))
    print("wrote", *paths)


if __name__ == "__main__":
    main()
