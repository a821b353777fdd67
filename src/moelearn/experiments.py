"""Reproducible experiments behind ``moelearn reproduce`` (figures, JSON, Markdown).

Each experiment is a list of independent tasks, each a pure function of its
settings and seed, so results are identical whatever ``--jobs`` is.  Every
experiment writes ``NAME.png``, ``NAME.json`` (every number) and ``NAME.md``
(a summary) into the output folder.
"""

from __future__ import annotations

import datetime
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import numpy as np

from ._optional import pyplot
from ._progress import progress
from .solvers import available_solvers

EXPERIMENTS = ("convergence", "success", "samples", "timing")
# the solvers compared by every experiment, in the registry's order
SOLVERS = available_solvers()


# --------------------------------------------------------------------------
# Running tasks
# --------------------------------------------------------------------------
def _init_worker():
    # one BLAS thread per process: --jobs processes share the cores
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _run_tasks(fn, tasks, jobs, label):
    if jobs <= 1:
        return [fn(t) for t in progress(tasks, label=label)]
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker) as pool:
        return list(progress(pool.map(fn, tasks), total=len(tasks), label=label))


def _quiet():
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)


def _fit_solver(solver, X, y, k, link, seed, max_iter=200):
    from .estimator import MixtureOfExpertsRegressor

    est = MixtureOfExpertsRegressor(
        k,
        link=link,
        solver=solver,
        fit_intercept=False,
        compute_standard_errors=False,
        max_iter=max_iter,
        prior_strength=0,  # the papers' experiments: maximum likelihood
        random_state=seed,
    )
    t = time.perf_counter()
    est.fit(X, y)
    return est, time.perf_counter() - t


def _plt():
    plt = pyplot()  # an ImportError naming the plot extra when matplotlib is missing
    plt.switch_backend("Agg")
    return plt


def _write(output: Path, name, payload, md_lines, fig):
    """Write NAME.json, NAME.md and NAME.png, the first two stamped with the date and version."""
    from . import __version__

    output.mkdir(parents=True, exist_ok=True)
    made = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    payload = {"stamp": {"date": made, "moelearn": __version__}, **payload}
    (output / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
    md_lines = [*md_lines, "", f"<sub>Made {made} with moelearn {__version__}.</sub>"]
    (output / f"{name}.md").write_text("\n".join(md_lines) + "\n")
    fig.savefig(output / f"{name}.png", dpi=130)
    _plt().close(fig)
    return [output / f"{name}.{ext}" for ext in ("png", "json", "md")]


def _pad(values, length):
    values = list(values)[:length]
    return values + [values[-1]] * (length - len(values))


def _band(ax, curves, label, color):
    curves = np.asarray(curves)
    it = np.arange(curves.shape[1])
    lo, med, hi = np.percentile(curves, [10, 50, 90], axis=0)
    ax.fill_between(it, lo, hi, color=color, alpha=0.2)
    ax.plot(it, med, color=color, label=f"{label} (median, 10-90%)")


# --------------------------------------------------------------------------
# convergence
# --------------------------------------------------------------------------
def _convergence_task(args):
    seed, n, iters = args
    _quiet()
    from .experts import recover_experts
    from .metrics import parameter_errors
    from .model import MoEParams, make_moe, sample
    from .refine import Data, fit_squared_loss, maximize_likelihood, random_params

    truth = make_moe(10, 3, noise_std=0.2, random_state=seed)
    X, y = sample(truth, n, random_state=10_000 + seed)
    data = Data(X, y, n_experts=3)
    out = {}
    r = recover_experts(
        X,
        y,
        3,
        method="landscape",
        n_restarts=1,
        max_iter=iters,
        record_trajectory=True,
        random_state=seed,
        return_info=True,
    )
    out["experts: L_4 gradient descent"] = _pad(
        [parameter_errors(A, truth.experts).experts for A in r.trajectories[0]], iters
    )
    init = random_params(10, 3, "linear", 1.0, random_state=seed)
    l2 = fit_squared_loss(data, init, max_iter=iters, fit_intercept=False, record=True)
    nll = maximize_likelihood(
        data, init, method="gd", max_iter=iters, record=True, free={"experts", "gating", "noise"}
    )
    for label, fit in (("squared loss", l2), ("negative log-likelihood", nll)):
        traj = fit.trajectory or [fit.params]
        errs = [parameter_errors(p, truth) for p in traj]
        out[f"experts: joint GD, {label}"] = _pad([e.experts for e in errs], iters)
        out[f"gating: joint GD, {label}"] = _pad([e.gating for e in errs], iters)
    start = MoEParams(truth.experts, np.zeros_like(truth.gating), noise_std=1.0)
    gate = maximize_likelihood(
        data, start, method="gd", max_iter=iters, record=True, free={"gating", "noise"}
    )
    out["gating: L_log gradient descent (true experts)"] = _pad(
        [parameter_errors(p, truth).gating for p in (gate.trajectory or [gate.params])], iters
    )
    return out


def _method_color(label):
    # one colour per method in both panels: consistent losses blue, baselines warm
    if "squared" in label:
        return "tab:orange"
    if "negative log" in label:
        return "tab:red"
    return "tab:blue"


def plot_convergence(curves, n, seeds):
    """The convergence figure from the curves of :func:`experiment_convergence`."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, prefix in zip(axes, ("experts", "gating"), strict=True):
        for key in (k for k in curves if k.startswith(prefix)):
            label = key.split(": ", 1)[1]
            _band(ax, curves[key], label, _method_color(label))
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{prefix} error (Frobenius, matched)")
        ax.set_title(f"{prefix.capitalize()}: d=10, k=3, n={n:,}, {seeds} random starts")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def experiment_convergence(quick=False, seeds=None, jobs=1, output="results"):
    seeds = seeds or (4 if quick else 20)
    n, iters = (20_000, 100) if quick else (100_000, 300)
    results = _run_tasks(
        _convergence_task, [(s, n, iters) for s in range(seeds)], jobs, "convergence"
    )
    curves = {key: [r[key] for r in results] for key in results[0]}
    fig = plot_convergence(curves, n, seeds)
    md = [
        f"# Convergence ({seeds} seeds, n={n:,}, d=10, k=3, linear, sigma=0.2)",
        "",
        "| curve | median final error | 90th percentile | share of starts with error <= 0.1 |",
        "|---|---|---|---|",
    ]
    for key, val in curves.items():
        final = np.asarray(val)[:, -1]
        md.append(
            f"| {key} | {np.median(final):.4f} | {np.percentile(final, 90):.4f} | "
            f"{np.mean(final <= 0.1):.0%} |"
        )
    payload = dict(seeds=seeds, n=n, iterations=iters, curves=curves)
    return _write(Path(output), "convergence", payload, md, fig)


# --------------------------------------------------------------------------
# success
# --------------------------------------------------------------------------
def _success_grid(quick):
    if quick:
        return [dict(k=k, scale=s, noise=0.2, link="linear") for k, s in product((3, 6), (1, 3))]
    return [
        dict(k=k, scale=s, noise=nz, link=ln)
        for k, s, nz, ln in product((3, 6), (1, 3), (0.1, 0.5), ("linear", "relu"))
    ]


def _success_task(args):
    cell, seed, n = args
    _quiet()
    from .metrics import parameter_errors
    from .model import make_moe, sample

    truth = make_moe(
        10,
        cell["k"],
        link=cell["link"],
        noise_std=cell["noise"],
        gating_scale=cell["scale"],
        random_state=seed,
    )
    X, y = sample(truth, n, random_state=20_000 + seed)
    out = {}
    for solver in SOLVERS:
        est, t = _fit_solver(solver, X, y, cell["k"], cell["link"], seed)
        out[solver] = (parameter_errors(est, truth).experts, t)
    return out


def success_table(grid, seeds, n, jobs=1, label="success"):
    """Run every solver on ``seeds`` problems per grid cell; one row per (cell, solver)."""
    tasks = [(cell, s, n) for cell in grid for s in range(seeds)]
    results = _run_tasks(_success_task, tasks, jobs, label)
    table = []
    for ci, cell in enumerate(grid):
        chunk = results[ci * seeds : (ci + 1) * seeds]
        for solver in SOLVERS:
            errs = np.array([r[solver][0] for r in chunk])
            times = np.array([r[solver][1] for r in chunk])
            table.append(
                dict(
                    **cell,
                    solver=solver,
                    success=float(np.mean(errs <= 0.1)),
                    median_error=float(np.median(errs)),
                    median_time_s=float(np.median(times)),
                    errors=errs.tolist(),
                )
            )
    return table


def experiment_success(quick=False, seeds=None, jobs=1, output="results"):
    seeds = seeds or (3 if quick else 10)
    n = 20_000 if quick else 100_000
    grid = _success_grid(quick)
    table = success_table(grid, seeds, n, jobs)
    plt = _plt()
    rows = sorted({(c["k"], c["scale"]) for c in grid})
    cols = sorted({(c["noise"], c["link"]) for c in grid}, key=lambda t: (t[1], t[0]))
    fig, axes = plt.subplots(
        2,
        3,
        figsize=(4 + 1.6 * len(cols) * 3, 1.5 + 0.6 * len(rows) * 2),
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for ax, solver in zip(axes.ravel(), SOLVERS, strict=True):
        mat = np.full((len(rows), len(cols)), np.nan)
        for t in table:
            if t["solver"] == solver:
                mat[rows.index((t["k"], t["scale"])), cols.index((t["noise"], t["link"]))] = t[
                    "success"
                ]
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(mat):
            ax.text(
                j,
                i,
                f"{v:.0%}",
                ha="center",
                va="center",
                color="white" if v < 0.6 else "black",
                fontsize=9,
            )
        ax.set_xticks(range(len(cols)), [f"{ln}\nσ={nz}" for nz, ln in cols], fontsize=8)
        ax.set_yticks(range(len(rows)), [f"k={k}, |w|={s}" for k, s in rows], fontsize=8)
        ax.set_title(solver)
    for ax in axes[-1]:
        ax.set_xlabel("link, noise σ")
    for ax in axes[:, 0]:
        ax.set_ylabel("experts k, gating scale |w|")
    fig.colorbar(im, ax=axes, shrink=0.6, label="success rate (expert error ≤ 0.1)")
    fig.suptitle(f"Success over {seeds} problems/starts per cell, n={n:,}, d=10")
    md = [
        f"# Success rates ({seeds} seeds per cell, n={n:,}, d=10; success = expert error <= 0.1)",
        "",
        "| k | gating scale | noise | link | " + " | ".join(SOLVERS) + " |",
        "|---|---|---|---|" + "---|" * len(SOLVERS),
    ]
    for cell in grid:
        vals = [
            next(t for t in table if t["solver"] == s and all(t[key] == cell[key] for key in cell))
            for s in SOLVERS
        ]
        md.append(
            f"| {cell['k']} | {cell['scale']} | {cell['noise']} | {cell['link']} | "
            + " | ".join(f"{v['success']:.0%}" for v in vals)
            + " |"
        )
    md += [
        "",
        "Median fit time (s) per solver over all cells: "
        + ", ".join(
            f"{s} {np.median([t['median_time_s'] for t in table if t['solver'] == s]):.2f}"
            for s in SOLVERS
        ),
    ]
    return _write(Path(output), "success", dict(seeds=seeds, n=n, table=table), md, fig)


# --------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------
def _samples_task(args):
    n, seed = args
    _quiet()
    from .experts import recover_experts
    from .metrics import parameter_errors
    from .model import make_moe, sample
    from .refine import Data, maximize_likelihood

    truth = make_moe(10, 3, noise_std=0.2, random_state=seed)
    X, y = sample(truth, n, random_state=30_000 + seed)
    out = {}
    for method in ("tensor", "landscape"):
        out[f"{method} (moments alone)"] = parameter_errors(
            recover_experts(X, y, 3, method=method, random_state=seed), truth.experts
        ).experts
    est, _ = _fit_solver("moments", X, y, 3, "linear", seed)
    out["full pipeline (solver='moments')"] = parameter_errors(est, truth).experts
    ref = maximize_likelihood(Data(X, y, n_experts=3), truth, free={"experts", "gating", "noise"})
    out["MLE started at the truth"] = parameter_errors(ref.params, truth).experts
    return out


def experiment_samples(quick=False, seeds=None, jobs=1, output="results"):
    seeds = seeds or (3 if quick else 10)
    ns = [1_000, 3_000, 10_000, 30_000, 100_000] + ([] if quick else [300_000, 1_000_000])
    tasks = [(n, s) for n in ns for s in range(seeds)]
    results = _run_tasks(_samples_task, tasks, jobs, "samples")
    keys = list(results[0])
    med = {
        key: [
            float(np.median([r[key] for r, (n, _) in zip(results, tasks, strict=True) if n == nn]))
            for nn in ns
        ]
        for key in keys
    }
    fit_from = 2  # slopes from n = 1e4 on: below that the moments are dominated by noise
    slopes = {
        key: float(np.polyfit(np.log(ns[fit_from:]), np.log(v[fit_from:]), 1)[0])
        for key, v in med.items()
    }
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    styles = [
        dict(marker="o"),
        dict(marker="s"),
        dict(marker="^", ms=11, mfc="none", ls="--", lw=2.5),  # coincides with the MLE
        dict(marker="D", ms=4),
    ]
    for key, style in zip(keys, styles, strict=False):
        ax.loglog(ns, med[key], label=f"{key} (slope {slopes[key]:.2f})", **style)
    ax.loglog(
        ns,
        med[keys[-1]][-1] * np.sqrt(ns[-1] / np.array(ns)),
        "k:",
        lw=1,
        label="n^(-1/2) reference",
    )
    ax.set_xlabel("number of samples n")
    ax.set_ylabel(f"expert error (median over {seeds} seeds)")
    ax.set_title("Error against sample size: d=10, k=3, linear, σ=0.2")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    md = [
        f"# Error against n ({seeds} seeds; medians)",
        "",
        "| n | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for i, nn in enumerate(ns):
        md.append(f"| {nn:,} | " + " | ".join(f"{med[k][i]:.4f}" for k in keys) + " |")
    md += [
        "",
        "Log-log slopes (n >= 1e4): " + ", ".join(f"{k}: {v:.2f}" for k, v in slopes.items()),
    ]
    payload = dict(
        seeds=seeds,
        n=ns,
        median_errors=med,
        slopes=slopes,
        raw=[dict(n=t[0], seed=t[1], **r) for t, r in zip(tasks, results, strict=True)],
    )
    return _write(Path(output), "samples", payload, md, fig)


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------
def _timing_task(args):
    n, d, seed = args
    _quiet()
    from .model import make_moe, sample

    truth = make_moe(d, 3, noise_std=0.2, random_state=seed)
    X, y = sample(truth, n, random_state=40_000 + seed)
    return {s: _fit_solver(s, X, y, 3, "linear", seed)[1] for s in SOLVERS}


def _timing_sizes(quick):
    """Sample sizes (at d=10), dimensions, and the sample size of the dimension sweep."""
    ns = [10_000, 30_000, 100_000] + ([] if quick else [300_000, 1_000_000])
    ds = [5, 10, 20] + ([] if quick else [40])
    return ns, ds, 30_000 if quick else 100_000


def experiment_timing(quick=False, seeds=None, jobs=1, output="results"):
    seeds = seeds or (1 if quick else 3)
    ns, ds, n_for_d = _timing_sizes(quick)
    # timings run one at a time whatever --jobs says: parallel runs would share cores
    tasks_n = [(n, 10, s) for n in ns for s in range(seeds)]
    tasks_d = [(n_for_d, d, s) for d in ds for s in range(seeds)]
    res_n = _run_tasks(_timing_task, tasks_n, 1, "timing vs n")
    res_d = _run_tasks(_timing_task, tasks_d, 1, "timing vs d")

    def medians(res, tasks, idx, values):
        return {
            s: [
                float(np.median([r[s] for r, t in zip(res, tasks, strict=True) if t[idx] == v]))
                for v in values
            ]
            for s in SOLVERS
        }

    tn, td = medians(res_n, tasks_n, 0, ns), medians(res_d, tasks_d, 1, ds)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for s in SOLVERS:
        axes[0].loglog(ns, tn[s], marker="o", label=s)
        axes[1].loglog(ds, td[s], marker="o", label=s)
    axes[0].set_xlabel("number of samples n (d=10, k=3)")
    axes[1].set_xlabel(f"number of features d (n={tasks_d[0][0]:,}, k=3)")
    for ax in axes:
        ax.set_ylabel("fit time (s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Fit time against n")
    axes[1].set_title("Fit time against d")
    fig.tight_layout()
    md = [
        "# Fit time (seconds, median over seeds; one start per solver)",
        "",
        "| n | " + " | ".join(SOLVERS) + " |",
        "|---|" + "---|" * len(SOLVERS),
    ]
    md += [
        f"| {n:,} | " + " | ".join(f"{tn[s][i]:.2f}" for s in SOLVERS) + " |"
        for i, n in enumerate(ns)
    ]
    md += ["", "| d | " + " | ".join(SOLVERS) + " |", "|---|" + "---|" * len(SOLVERS)]
    md += [
        f"| {d} | " + " | ".join(f"{td[s][i]:.2f}" for s in SOLVERS) + " |"
        for i, d in enumerate(ds)
    ]
    payload = dict(seeds=seeds, n=ns, d=ds, time_vs_n=tn, time_vs_d=td)
    return _write(Path(output), "timing", payload, md, fig)


_RUNNERS = {
    "convergence": experiment_convergence,
    "success": experiment_success,
    "samples": experiment_samples,
    "timing": experiment_timing,
}


def run_experiments(name, quick=False, output="results", seeds=None, jobs=1):
    """Run one experiment (or ``"all"``); return the files written."""
    names = EXPERIMENTS if name == "all" else (name,)
    unknown = [n for n in names if n not in _RUNNERS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}; choose from {EXPERIMENTS}")
    written = []
    for exp in names:
        files = _RUNNERS[exp](quick=quick, seeds=seeds, jobs=jobs, output=output)
        print(f"{exp}: wrote " + ", ".join(str(f) for f in files))
        written += files
    return written
