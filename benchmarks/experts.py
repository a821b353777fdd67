"""Success rates of expert recovery (issue targets), over many seeds.

    python benchmarks/experts.py [--seeds 20] [--quick]

Writes benchmarks/reports/experts.{json,md}.  Each seed draws a new
theory-regime problem (make_moe, orthogonal gating, sigma = 0.2) and a new
sample; the error is the matched Frobenius error of DESIGN §8.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _common import progress, write_report

from moelearn import expert_error, make_moe, recover_experts, sample

# (name, link, d, k, n, threshold, required rate)
TARGETS = [
    ("linear n=1e5", "linear", 10, 3, 100_000, 0.3, 0.95),
    ("linear n=1e6", "linear", 10, 3, 1_000_000, 0.1, 0.95),
    ("tanh n=1e6", "tanh", 10, 3, 1_000_000, 0.3, 0.90),
    ("relu n=1e6", "relu", 10, 3, 1_000_000, 0.5, 0.80),
    ("linear d=16 k=5 n=3e5", "linear", 16, 5, 300_000, 0.4, 0.90),
]
SLOPE_NS = [10_000, 30_000, 100_000, 300_000, 1_000_000]
METHODS = ["landscape", "tensor"]


def run(seeds, quick):
    rows, per_seed = [], {}
    warnings.simplefilter("error", RuntimeWarning)  # no overflow/NaN warnings allowed
    for name, link, d, k, n, thr, rate in TARGETS:
        if quick:
            n = min(n, 100_000)
        errs = {m: [] for m in METHODS}
        times = {m: [] for m in METHODS}
        for seed in progress(range(seeds), label=name):
            p = make_moe(d, k, link=link, noise_std=0.2, random_state=1000 + seed)
            X, y = sample(p, n, random_state=2000 + seed)
            for m in METHODS:
                t = time.perf_counter()
                A = recover_experts(X, y, k, link=link, method=m, random_state=seed)
                times[m].append(time.perf_counter() - t)
                errs[m].append(expert_error(A, p.experts))
        for m in METHODS:
            e = np.array(errs[m])
            ok = float(np.mean(e <= thr))
            rows.append(
                dict(
                    target=name,
                    method=m,
                    n=n,
                    threshold=thr,
                    required=rate,
                    success_rate=ok,
                    median_error=float(np.median(e)),
                    mean_time_s=float(np.mean(times[m])),
                    passed=ok >= rate,
                )
            )
            per_seed[f"{name}/{m}"] = e.tolist()
    # n^(-1/2) rate: median error over seeds at each n, log-log slope
    slopes = {}
    slope_seeds = max(4, seeds // 2)
    for m in METHODS:
        med = []
        for n in progress(SLOPE_NS if not quick else SLOPE_NS[:3], label=f"slope {m}"):
            e = []
            for seed in range(slope_seeds):
                p = make_moe(10, 3, noise_std=0.2, random_state=3000 + seed)
                X, y = sample(p, n, random_state=4000 + seed)
                e.append(
                    expert_error(recover_experts(X, y, 3, method=m, random_state=seed), p.experts)
                )
            med.append(float(np.median(e)))
        ns = SLOPE_NS[: len(med)]
        slope = float(np.polyfit(np.log(ns), np.log(med), 1)[0])
        slopes[m] = dict(n=ns, median_error=med, slope=slope, passed=bool(-0.65 <= slope <= -0.35))
    return rows, per_seed, slopes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="cap n at 1e5 (smoke run)")
    args = ap.parse_args()
    rows, per_seed, slopes = run(args.seeds, args.quick)
    md = [
        f"# Expert recovery success rates ({args.seeds} seeds)",
        "",
        "| target | method | n | threshold | required | success | median error | time/fit (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['target']} | {r['method']} | {r['n']:,} | {r['threshold']} | "
            f"{r['required']:.0%} | {r['success_rate']:.0%} {'✓' if r['passed'] else '✗'}"
            f" | {r['median_error']:.3f} | {r['mean_time_s']:.3f} |"
        )
    md += ["", "| method | n | median error | slope (target [-0.65, -0.35]) |", "|---|---|---|---|"]
    for m, s in slopes.items():
        md.append(
            f"| {m} | {s['n']} | {[round(v, 4) for v in s['median_error']]} | "
            f"{s['slope']:.3f} {'✓' if s['passed'] else '✗'} |"
        )
    js, mdp = write_report(
        "experts",
        dict(
            seeds=args.seeds, quick=args.quick, rows=rows, slopes=slopes, per_seed_errors=per_seed
        ),
        md,
    )
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}")


if __name__ == "__main__":
    main()
