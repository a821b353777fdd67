"""moelearn vs flexmix on synthetic theory-regime problems, n from 1e3 to 1e6.

    python benchmarks/peer_synthetic.py [--seeds 3] [--max-flexmix-n 100000]

d = 10, k = 3, linear experts, sigma = 0.2, orthogonal gating.  Reports the
expert error against the truth (DESIGN §8), the fit time, the time ratio and
failures (non-finite output or a lost component).  flexmix (stepFlexmix, 3
starts, linear experts with intercepts, FLXPmultinom gate) runs up to
``--max-flexmix-n`` rows: beyond that a single fit takes minutes.  Writes
benchmarks/reports/peer_synthetic.{json,md} and a figure.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import REPORT_DIR, progress, write_report
from _flexmix import ensure_flexmix, run_flexmix

from moelearn import MixtureOfExpertsRegressor, make_moe, parameter_errors, sample

NS = [1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-flexmix-n", type=int, default=100_000)
    args = ap.parse_args()
    ensure_flexmix()
    rows = []
    for n in progress(NS, label="peer"):
        for seed in range(args.seeds):
            truth = make_moe(10, 3, noise_std=0.2, random_state=seed)
            X, y = sample(truth, n, random_state=100 + seed)
            t = time.perf_counter()
            est = MixtureOfExpertsRegressor(3, prior_strength=0, random_state=seed).fit(X, y)
            secs = time.perf_counter() - t
            lost = est.predict_gating(X[:20000]).mean(0).min() < 0.01
            rows.append(
                dict(
                    method="moelearn",
                    n=n,
                    seed=seed,
                    seconds=secs,
                    error=parameter_errors(est, truth).experts,
                    failed=bool(lost),
                )
            )
            if n <= args.max_flexmix_n:
                res = run_flexmix(X, y, np.full(n, -1), [(3, 0, 1000 + seed)])[0]
                if res["params"] is None or res["k_found"] < 3:
                    rows.append(
                        dict(
                            method="flexmix",
                            n=n,
                            seed=seed,
                            seconds=res["seconds"],
                            error=np.nan,
                            failed=True,
                        )
                    )
                else:
                    rows.append(
                        dict(
                            method="flexmix",
                            n=n,
                            seed=seed,
                            seconds=res["seconds"],
                            error=parameter_errors(res["params"], truth).experts,
                            failed=False,
                        )
                    )
    md = [
        f"# moelearn vs flexmix, synthetic (d=10, k=3, linear, sigma=0.2; {args.seeds} seeds)",
        "",
        "| n | moelearn error | flexmix error | moelearn time (s) | flexmix time (s) | "
        "time ratio | failures (moelearn / flexmix) |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    for n in NS:
        m = [r for r in rows if r["n"] == n and r["method"] == "moelearn"]
        f = [r for r in rows if r["n"] == n and r["method"] == "flexmix"]
        s = dict(
            n=n,
            moelearn_error=float(np.nanmedian([r["error"] for r in m])),
            moelearn_s=float(np.median([r["seconds"] for r in m])),
            moelearn_failures=sum(r["failed"] for r in m),
        )
        if f:
            errs = [r["error"] for r in f if np.isfinite(r["error"])]
            s.update(
                flexmix_error=float(np.median(errs)) if errs else np.nan,
                flexmix_s=float(np.median([r["seconds"] for r in f])),
                flexmix_failures=sum(r["failed"] for r in f),
            )
            s["ratio"] = s["flexmix_s"] / s["moelearn_s"]
            md.append(
                f"| {n:,} | {s['moelearn_error']:.4f} | {s['flexmix_error']:.4f} | "
                f"{s['moelearn_s']:.2f} | {s['flexmix_s']:.2f} | {s['ratio']:.0f}x | "
                f"{s['moelearn_failures']} / {s['flexmix_failures']} |"
            )
        else:
            md.append(
                f"| {n:,} | {s['moelearn_error']:.4f} | - | {s['moelearn_s']:.2f} | - | - "
                f"| {s['moelearn_failures']} / - |"
            )
        summary.append(s)
    _figure(summary)
    js, mdp = write_report("peer_synthetic", dict(seeds=args.seeds, rows=rows, summary=summary), md)
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}")


def _figure(summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [s["n"] for s in summary]
    fm = [s for s in summary if "flexmix_s" in s]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].loglog(ns, [s["moelearn_error"] for s in summary], "o-", label="moelearn (default)")
    axes[0].loglog(
        [s["n"] for s in fm],
        [s["flexmix_error"] for s in fm],
        "s--",
        label="flexmix (stepFlexmix, 3 starts)",
    )
    axes[0].set_ylabel("expert error (median over seeds)")
    axes[1].loglog(ns, [s["moelearn_s"] for s in summary], "o-", label="moelearn (default)")
    axes[1].loglog(
        [s["n"] for s in fm],
        [s["flexmix_s"] for s in fm],
        "s--",
        label="flexmix (stepFlexmix, 3 starts)",
    )
    axes[1].set_ylabel("fit time (s)")
    for ax in axes:
        ax.set_xlabel("number of samples n (d=10, k=3)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title("Accuracy against n")
    axes[1].set_title("Fit time against n")
    fig.tight_layout()
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(REPORT_DIR / "peer_synthetic.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
