"""The ``moelearn`` command line: demo, fit, predict, reproduce."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__

SOLVERS = ("moments", "landscape", "tensor", "em", "gd-nll", "gd-l2")


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------
def run_demo(n_samples=100_000, n_features=10, n_experts=3, link="linear", noise_std=0.2,
             gating_scale=1.0, seed=0, n_init=3, output="moelearn-demo", out=None):
    """Fit one theory-regime problem with every solver; print a table, save a figure."""
    out = out or sys.stdout
    from sklearn.exceptions import ConvergenceWarning

    from .estimator import MixtureOfExpertsRegressor
    from .metrics import parameter_errors
    from .model import make_moe, sample
    from .refine import Data, maximize_likelihood

    truth = make_moe(n_features, n_experts, link=link, noise_std=noise_std,
                     gating_scale=gating_scale, random_state=seed)
    X, y = sample(truth, n_samples, random_state=seed + 1)
    X_test, y_test = sample(truth, max(n_samples // 5, 1000), random_state=seed + 2)
    print(f"moelearn {__version__} demo: k={n_experts} experts, d={n_features} features, "
          f"link={link}, sigma={noise_std}, n={n_samples:,} (theory regime, seed {seed})",
          file=out)

    rows = []
    floor = maximize_likelihood(Data(X, y, n_experts=n_experts), truth,
                                free={"experts", "gating", "noise"})
    e = parameter_errors(floor.params, truth)
    rows.append(("MLE from the truth (floor)", e.experts, e.gating,
                 float(np.mean(floor.params.log_likelihood(X_test, y_test))), float("nan")))
    for solver in SOLVERS:
        kw = dict(n_init=n_init) if solver in ("em", "gd-nll", "gd-l2") else {}
        est = MixtureOfExpertsRegressor(n_experts, link=link, solver=solver, fit_intercept=False,
                                        compute_standard_errors=False, random_state=seed, **kw)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        elapsed = time.perf_counter() - t
        e = parameter_errors(est, truth)
        rows.append((solver, e.experts, e.gating, float(np.mean(est.score_samples(X_test, y_test))),
                     elapsed))
    header = (f"{'solver':<28}{'expert err':>11}{'gating err':>11}{'test loglik':>13}"
              f"{'time (s)':>10}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for name, ee, ge, ll, tt in rows:
        tstr = "" if np.isnan(tt) else f"{tt:10.2f}"
        print(f"{name:<28}{ee:11.4f}{ge:11.4f}{ll:13.4f}{tstr}", file=out)
    fig_path = _demo_figure(rows, Path(output), n_samples, n_experts, link)
    print(f"\nfigure: {fig_path}", file=out)
    return rows, fig_path


def _demo_figure(rows, output: Path, n, k, link):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    names = [r[0].replace(" (floor)", "\n(floor)") for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    pos = np.arange(len(rows))
    axes[0].bar(pos - 0.2, [max(r[1], 1e-4) for r in rows], 0.4, label="experts")
    axes[0].bar(pos + 0.2, [max(r[2], 1e-4) for r in rows], 0.4, label="gating")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("parameter error (Frobenius, matched)")
    axes[0].set_title(f"Recovery, n={n:,}, k={k}, {link} link")
    axes[0].set_xticks(pos, names, rotation=35, ha="right", fontsize=8)
    axes[0].axhline(0.1, color="grey", lw=0.8, ls="--", label="error 0.1")
    axes[0].legend()
    times = [r[4] for r in rows[1:]]
    axes[1].bar(np.arange(len(times)), times, color="tab:green")
    axes[1].set_xticks(np.arange(len(times)), names[1:], rotation=35, ha="right", fontsize=8)
    axes[1].set_ylabel("fit time (s)")
    axes[1].set_title("Fit time")
    fig.tight_layout()
    path = output / "demo.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# fit / predict
# --------------------------------------------------------------------------
def _read_csv(path, target=None):
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().strip().split(",")
        data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=float)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CLIError(f"cannot read {path} as CSV: {exc}") from None
    data = np.atleast_2d(data)
    if data.size == 0 or data.shape[1] != len(header):
        raise CLIError(f"{path}: expected {len(header)} numeric columns per row")
    if not np.all(np.isfinite(data)):
        raise CLIError(f"{path}: non-numeric or missing values (only numbers are accepted)")
    if target is None:
        return data, header, None
    if target not in header:
        raise CLIError(f"--target {target!r} is not a column of {path} (columns: {header})")
    j = header.index(target)
    X = np.delete(data, j, axis=1)
    return X, [h for h in header if h != target], data[:, j]


def cmd_fit(args):
    from .estimator import MixtureOfExpertsRegressor

    X, columns, y = _read_csv(args.data, args.target)
    est = MixtureOfExpertsRegressor(args.experts, link=args.link, solver=args.solver,
                                    random_state=args.seed)
    try:
        est.fit(X, y)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot fit: {exc}") from None
    out = Path(args.output)
    if out.suffix != ".npz":
        out = out.with_suffix(".npz")
    est.save(out)
    print(f"fitted {args.experts} experts on {X.shape[0]} rows x {X.shape[1]} features "
          f"({est.init_method_}); mean log-likelihood {est.log_likelihood_:.4f}, "
          f"R^2 {est.score(X, y):.4f}")
    print(f"model saved to {out}")


def cmd_predict(args):
    from .persistence import load

    try:
        est = load(args.model)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    X, columns, _ = _read_csv(args.data)
    if X.shape[1] != est.n_features_in_:
        raise CLIError(f"{args.data} has {X.shape[1]} columns; the model expects "
                       f"{est.n_features_in_} (the features, without the target)")
    pred = est.predict(X)
    gate = est.predict_gating(X)
    lines = ["prediction," + ",".join(f"gate_{i}" for i in range(gate.shape[1]))]
    lines += [f"{p:.10g}," + ",".join(f"{g:.6g}" for g in row) for p, row in zip(pred, gate,
                                                                                strict=True)]
    text = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {len(pred)} predictions to {args.output}")
    else:
        sys.stdout.write(text)


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser():
    from .links import available_links

    parser = argparse.ArgumentParser(
        prog="moelearn",
        description="Consistent learning of mixture-of-experts models.",
    )
    parser.add_argument("--version", action="version", version=f"moelearn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fit a synthetic problem with every solver")
    demo.add_argument("--n-samples", type=_positive_int, default=100_000)
    demo.add_argument("--n-features", type=_positive_int, default=10)
    demo.add_argument("--n-experts", type=_positive_int, default=3)
    demo.add_argument("--link", choices=available_links(), default="linear")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output", default="moelearn-demo", help="folder for the figure")

    fit = sub.add_parser("fit", help="fit a model to a CSV file and save it")
    fit.add_argument("data", help="CSV file with a header row, numeric columns")
    fit.add_argument("--target", required=True, help="name of the column to predict")
    fit.add_argument("--experts", type=_positive_int, required=True)
    fit.add_argument("--link", choices=available_links(), default="linear")
    fit.add_argument("--solver", choices=SOLVERS, default="moments")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--output", default="model.npz")

    pred = sub.add_parser("predict", help="predict with a saved model")
    pred.add_argument("model")
    pred.add_argument("data", help="CSV file with the same feature columns as in fit")
    pred.add_argument("--output", help="CSV file to write (default: standard output)")

    from .experiments import EXPERIMENTS

    rep = sub.add_parser("reproduce", help="run the papers' experiments, with figures")
    rep.add_argument("experiment", choices=[*EXPERIMENTS, "all"])
    rep.add_argument("--quick", action="store_true", help="small settings (a few minutes)")
    rep.add_argument("--output", default="results")
    rep.add_argument("--seeds", type=_positive_int, default=None)
    rep.add_argument("--jobs", type=_positive_int, default=1)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if args.n_experts >= args.n_features:
                raise CLIError("--n-experts must be smaller than --n-features (theory regime)")
            run_demo(args.n_samples, args.n_features, args.n_experts, args.link,
                     seed=args.seed, output=args.output)
        elif args.command == "fit":
            cmd_fit(args)
        elif args.command == "predict":
            cmd_predict(args)
        elif args.command == "reproduce":
            from .experiments import run_experiments

            run_experiments(args.experiment, quick=args.quick, output=args.output,
                            seeds=args.seeds, jobs=args.jobs)
    except CLIError as exc:
        print(f"moelearn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
