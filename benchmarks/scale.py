"""Throughput and memory: in memory, memory-mapped, and on a local Dask cluster.

    python benchmarks/scale.py [--sizes 1000000 10000000] [--folder /tmp/moelearn-scale]
                               [--fit-only]

For each n (d = 10, k = 3, theory regime) and each mode, a fresh subprocess
measures the rows/s of one moment pass (both passes of the expert recovery)
and of one gradient pass of the likelihood engine (one refinement iteration), and the peak
anonymous memory it added (RssAnon, sampled every 20 ms: memory-mapped file
pages are not anonymous).  At the largest n it also fits the default
estimator on the memory-mapped file and reports the expert error and the
anonymous memory added (target: < 400 MB for 10^7 x 10, error <= 0.01), and
counts its passes over all the rows against those of version 0.1's default,
which refines the moment start once (target: the start search, on subsamples,
leaves the full data about one refinement).  ``--fit-only`` reruns only that
fit and keeps the throughput rows of the existing report.
Writes benchmarks/reports/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

D, K, SEED = 10, 3, 0


def _rss_anon_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class PeakMemory:
    """Peak RssAnon above the level at entry, sampled in a thread."""

    def __enter__(self):
        self.base = self.peak = _rss_anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon_mb())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon_mb())
        self.added = self.peak - self.base


def make_files(folder: Path, n):
    """Write X.npy and y.npy of n rows chunk by chunk (never all in memory)."""
    from moelearn import make_moe, sample

    X_path, y_path = folder / f"X_{n}.npy", folder / f"y_{n}.npy"
    if X_path.exists() and y_path.exists():
        return X_path, y_path
    truth = make_moe(D, K, noise_std=0.2, random_state=SEED)
    X = np.lib.format.open_memmap(X_path, mode="w+", dtype=np.float64, shape=(n, D))
    y = np.lib.format.open_memmap(y_path, mode="w+", dtype=np.float64, shape=(n,))
    step = 1_000_000
    for i, start in enumerate(range(0, n, step)):
        Xc, yc = sample(truth, min(step, n - start), random_state=1000 + i)
        X[start : start + len(yc)] = Xc
        y[start : start + len(yc)] = yc
    X.flush()
    y.flush()
    del X, y
    return X_path, y_path


def _timed_passes(data):
    """Seconds for (pass 1 + pass 2 of the moments) and one likelihood-gradient pass of the
    engine (what each iteration of a fit's refinement costs)."""
    from scipy.special import softmax
    from threadpoolctl import threadpool_limits

    from moelearn.engine import Design, pass_statistics, state_from_responsibilities
    from moelearn.families import get_family
    from moelearn.moments import MomentAccumulator, ReducedMomentAccumulator

    t = time.perf_counter()
    first = data.map_reduce(lambda X, y: MomentAccumulator("linear", D).update(X, y))
    wh = first.whitening(K)
    sigma = first.noise_std()
    data.map_reduce(lambda X, y: ReducedMomentAccumulator("linear", wh, sigma).update(X, y))
    t_moments = time.perf_counter() - t
    # a point of the engine's parameters: any serves to time a pass
    family = get_family("gaussian").with_experts(K)
    design = Design(np.arange(D), np.arange(D), True)
    rng = np.random.default_rng(SEED)
    X0 = rng.standard_normal((2_000, D))
    y0 = rng.standard_normal(2_000)
    state = state_from_responsibilities(
        family, design, X0, y0, softmax(rng.standard_normal((2_000, K)), axis=1)
    )
    # one BLAS thread, as the fits run the passes of narrow problems
    with threadpool_limits(limits=1, user_api="blas"):
        pass_statistics(family, design, data, state, "grad")  # warm-up (page cache, workers)
        t = time.perf_counter()
        pass_statistics(family, design, data, state, "grad")
        return t_moments, time.perf_counter() - t


def _count_full_passes(n):
    """Count the passes over all ``n`` rows from now on; ``.pop()`` returns and resets the count.

    A pass is one :meth:`Data.map_reduce` over the full data (a moment pass or
    one likelihood and gradient evaluation of a refinement); passes over a
    subsample are not counted.
    """
    from moelearn.data import Data

    count = [0]
    original = Data.map_reduce

    def counted(self, fn, *args, **kwargs):
        if self.n_samples == n:
            count[0] += 1
        return original(self, fn, *args, **kwargs)

    Data.map_reduce = counted

    class Counter:
        def pop(self):
            value, count[0] = count[0], 0
            return value

    return Counter()


def worker(mode, n, folder):
    """One measurement in a fresh process; prints a JSON line."""
    from threadpoolctl import threadpool_limits

    from moelearn.data import Data

    X_path, y_path = make_files(Path(folder), n)
    out = dict(mode=mode, n=n)
    if mode == "memory":
        X, y = np.load(X_path), np.load(y_path)  # loading is not part of the measurement
        _timed_passes(Data(X, y, n_experts=K))  # warm-up: caches, quadrature of the link
        with PeakMemory() as mem, threadpool_limits(1, user_api="blas"):
            t_m, t_g = _timed_passes(Data(X, y, n_experts=K))
    elif mode == "memmap":
        X, y = np.load(X_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")
        _timed_passes(Data(X, y, n_experts=K))  # first read puts the file in the page cache
        with PeakMemory() as mem, threadpool_limits(1, user_api="blas"):
            t_m, t_g = _timed_passes(Data(X, y, n_experts=K))
    elif mode == "dask":
        import dask.array as da
        import distributed

        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            Xm = np.load(X_path, mmap_mode="r")
            chunk = 500_000
            # the blocks are read by the workers from the file and kept in their memory
            X = da.from_array(Xm, chunks=(chunk, D))
            y = da.from_array(np.load(y_path, mmap_mode="r"), chunks=chunk)
            X, y = client.persist([X, y])
            distributed.wait([X, y])
            _timed_passes(Data(X, y, n_experts=K))  # warm-up
            with PeakMemory() as mem:
                t_m, t_g = _timed_passes(Data(X, y, n_experts=K))
    elif mode == "fit":
        from moelearn import MixtureOfExpertsRegressor, make_moe, parameter_errors

        X, y = np.load(X_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")
        passes = _count_full_passes(n)
        with PeakMemory() as mem:
            t = time.perf_counter()
            est = MixtureOfExpertsRegressor(K, random_state=0).fit(X, y)
            out["fit_s"] = time.perf_counter() - t
        out["full_passes"] = passes.pop()
        truth = make_moe(D, K, noise_std=0.2, random_state=SEED)
        out["expert_error"] = parameter_errors(est, truth).experts
        out["init_method"] = est.init_method_
        out["final_n_iter"] = est.n_iter_
        # version 0.1's default (one noise level, the moment start alone): one refinement
        t = time.perf_counter()
        v01 = MixtureOfExpertsRegressor(K, noise="shared", n_init=1, max_iter=200, random_state=0)
        v01.fit(X, y)
        out["v01_fit_s"] = time.perf_counter() - t
        out["v01_full_passes"] = passes.pop()
        out["v01_n_iter"] = v01.n_iter_
        t_m = t_g = float("nan")
    else:
        raise SystemExit(f"unknown mode {mode}")
    out.update(moment_rows_per_s=n / t_m, gradient_rows_per_s=n / t_g, anon_mb_added=mem.added)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--folder", default="/tmp/moelearn-scale")
    ap.add_argument(
        "--fit-only",
        action="store_true",
        help="rerun only the default fit on the largest file; keep the throughput rows "
        "of the existing report",
    )
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.folder)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import progress, write_report

    Path(args.folder).mkdir(parents=True, exist_ok=True)
    jobs = [(m, n) for n in args.sizes for m in ("memory", "memmap", "dask")]
    rows = []
    if args.fit_only:
        report = Path(__file__).parent / "reports" / "scale.json"
        rows = [r for r in json.loads(report.read_text())["rows"] if r["mode"] != "fit"]
        jobs = []
    jobs.append(("fit", max(args.sizes)))
    for mode, n in progress(jobs, label="scale"):
        res = subprocess.run(
            [sys.executable, __file__, "--folder", args.folder, "--worker", mode, str(n)],
            capture_output=True,
            text=True,
        )
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode or not line:
            rows.append(dict(mode=mode, n=n, error=res.stderr[-2000:]))
        else:
            rows.append(json.loads(line[-1]))
    md = [
        "# Scale (d=10, k=3): throughput and anonymous memory",
        "",
        "| n | mode | moment pass (rows/s) | refinement iteration (rows/s) | "
        "anonymous memory added (MB) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["mode"] == "fit" or "error" in r:
            continue
        md.append(
            f"| {r['n']:,} | {r['mode']} | {r['moment_rows_per_s']:.3g} | "
            f"{r['gradient_rows_per_s']:.3g} | {r['anon_mb_added']:.0f} |"
        )
    for n in args.sizes:
        by = {r["mode"]: r for r in rows if r["n"] == n and "error" not in r}
        if "memory" in by and "memmap" in by:
            ratio = by["memory"]["moment_rows_per_s"] / by["memmap"]["moment_rows_per_s"]
            md.append(
                f"\nn={n:,}: memory / memmap moment throughput = {ratio:.2f} "
                f"({'✓' if ratio <= 2 else '✗'} target ≤ 2)"
            )
    fit = [r for r in rows if r["mode"] == "fit"]
    if fit and "error" not in fit[0]:
        f = fit[0]
        md.append(
            f"\nDefault fit on the memory-mapped {f['n']:,} x 10 file: {f['fit_s']:.1f} s, "
            f"expert error {f['expert_error']:.4f} ({f['init_method']}), anonymous "
            f"memory added {f['anon_mb_added']:.0f} MB "
            f"({'✓' if f['anon_mb_added'] < 400 and f['expert_error'] <= 0.01 else '✗'} "
            "targets < 400 MB, error ≤ 0.01)"
        )
        if "full_passes" in f:
            # the start search works on subsamples: the full data see about one refinement
            ok = f["full_passes"] <= 1.5 * f["v01_full_passes"]
            md.append(
                f"\nPasses over all {f['n']:,} rows: the default fit {f['full_passes']} "
                f"(its final refinement: {f['final_n_iter']} iterations), the single-start fit "
                f"(one refinement of the moment start) {f['v01_full_passes']} "
                f"({f['v01_n_iter']} iterations, {f['v01_fit_s']:.1f} s); "
                f"{'✓' if ok else '✗'} target: about one full-data refinement "
                "(≤ 1.5× the single-start fit's passes)"
            )
    if args.fit_only:
        md.append(
            "\nThe throughput rows above come from an earlier run (`--fit-only` reran the fit)."
        )
    errors = [r for r in rows if "error" in r]
    for r in errors:
        md.append(f"\n{r['mode']} n={r['n']} failed: {r['error'][-300:]}")
    js, mdp = write_report("scale", dict(rows=rows), md)
    print("\n".join(md))
    print(f"\nwrote {js} and {mdp}")


if __name__ == "__main__":
    main()
