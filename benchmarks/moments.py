"""Cost of the moment passes relative to ``X.T @ X`` on the same array.

    python benchmarks/moments.py [--n 1000000] [--d 20] [--k 5]

Writes benchmarks/reports/moments.{json,md}.  Target (issue): one full
moment pass (the first pass: M_1, M_2 and the y powers) at most 3x the time
of ``X.T @ X``; the second (whitened third/fourth order) pass is reported too.
Times are the best of 5 runs, measured in the same process.
"""

from __future__ import annotations

import argparse

from _common import best_time, write_report

from moelearn import MomentAccumulator, ReducedMomentAccumulator, make_moe, sample


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=20)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    p = make_moe(args.d, args.k, link="relu", noise_std=0.2, random_state=0)
    X, y = sample(p, args.n, random_state=1)

    t_gram = best_time(lambda: X.T @ X)
    first = MomentAccumulator("relu", args.d).fit(X, y)
    t_pass1 = best_time(lambda: MomentAccumulator("relu", args.d).fit(X, y))
    wh = first.whitening(args.k)
    sigma = first.noise_std()
    t_pass2 = best_time(lambda: ReducedMomentAccumulator("relu", wh, sigma).fit(X, y))
    ratio1, ratio2 = t_pass1 / t_gram, t_pass2 / t_gram
    md = [
        f"# Moment passes (n={args.n:,}, d={args.d}, k={args.k}, relu)",
        "",
        "| computation | time (ms) | ratio to X.T @ X |",
        "|---|---|---|",
        f"| X.T @ X | {1e3 * t_gram:.1f} | 1.00 |",
        f"| pass 1: M_1, M_2, y powers | {1e3 * t_pass1:.1f} | {ratio1:.2f} "
        f"({'✓' if ratio1 <= 3 else '✗'} target ≤ 3) |",
        f"| pass 2: whitened T_3 and T_4 | {1e3 * t_pass2:.1f} | {ratio2:.2f} |",
    ]
    js, mdp = write_report(
        "moments",
        dict(
            n=args.n,
            d=args.d,
            k=args.k,
            gram_s=t_gram,
            pass1_s=t_pass1,
            pass2_s=t_pass2,
            ratio_pass1=ratio1,
            ratio_pass2=ratio2,
        ),
        md,
    )
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}")


if __name__ == "__main__":
    main()
