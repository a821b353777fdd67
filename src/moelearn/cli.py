"""The ``moelearn`` command line: demo, fit, select, predict, summary, reproduce."""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .solvers import available_solvers


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------
def run_demo(
    n_samples=100_000,
    n_features=10,
    n_experts=3,
    link="linear",
    noise_std=0.2,
    gating_scale=1.0,
    seed=0,
    n_init=3,
    output="moelearn-demo",
    out=None,
):
    """Fit one theory-regime problem with every solver; print a table, save a figure."""
    out = out or sys.stdout
    from sklearn.exceptions import ConvergenceWarning

    from .estimator import MixtureOfExpertsRegressor
    from .metrics import parameter_errors
    from .model import make_moe, sample
    from .refine import Data, maximize_likelihood

    truth = make_moe(
        n_features,
        n_experts,
        link=link,
        noise_std=noise_std,
        gating_scale=gating_scale,
        random_state=seed,
    )
    X, y = sample(truth, n_samples, random_state=seed + 1)
    X_test, y_test = sample(truth, max(n_samples // 5, 1000), random_state=seed + 2)
    print(
        f"moelearn {__version__} demo: k={n_experts} experts, d={n_features} features, "
        f"link={link}, sigma={noise_std}, n={n_samples:,} (theory regime, seed {seed})",
        file=out,
    )

    rows = []
    floor = maximize_likelihood(
        Data(X, y, n_experts=n_experts), truth, free={"experts", "gating", "noise"}
    )
    e = parameter_errors(floor.params, truth)
    rows.append(
        (
            "MLE from the truth (floor)",
            e.experts,
            e.gating,
            float(np.mean(floor.params.log_likelihood(X_test, y_test))),
            float("nan"),
        )
    )
    for solver in available_solvers():
        kw = dict(n_init=n_init) if solver in ("em", "gd-nll", "gd-l2") else {}
        est = MixtureOfExpertsRegressor(
            n_experts,
            link=link,
            solver=solver,
            fit_intercept=False,
            compute_standard_errors=False,
            random_state=seed,
            **kw,
        )
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)
        elapsed = time.perf_counter() - t
        e = parameter_errors(est, truth)
        rows.append(
            (
                solver,
                e.experts,
                e.gating,
                float(np.mean(est.log_density(X_test, y_test))),
                elapsed,
            )
        )
    header = (
        f"{'solver':<28}{'expert err':>11}{'gating err':>11}{'test loglik':>13}{'time (s)':>10}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for name, ee, ge, ll, tt in rows:
        tstr = "" if np.isnan(tt) else f"{tt:10.2f}"
        print(f"{name:<28}{ee:11.4f}{ge:11.4f}{ll:13.4f}{tstr}", file=out)
    classification = _demo_classification(seed, out)
    try:
        fig_path = _demo_figure(rows, classification, Path(output), n_samples, n_experts, link)
    except ImportError as exc:  # matplotlib comes with the plot extra
        fig_path = None
        print(f"\nfigure not drawn: {exc}", file=out)
    else:
        print(f"\nfigure: {fig_path}", file=out)
    return rows, fig_path


def _demo_classification(seed, out, n_samples=20_000):
    """A gated classifier: two logistic experts, the gate on a third feature."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from .classifier import MixtureOfExpertsClassifier

    rng = np.random.default_rng(seed + 3)
    n = n_samples + n_samples // 4
    X = rng.standard_normal((n, 3))
    first = rng.random(n) < 1.0 / (1.0 + np.exp(-3.0 * X[:, 2]))
    eta = np.where(first, 2.0 * X[:, 0] - 1.0, -2.0 * X[:, 1] + 0.5)
    y = np.where(rng.random(n) < 1.0 / (1.0 + np.exp(-eta)), "yes", "no")
    tr, te = slice(0, n_samples), slice(n_samples, n)
    print(
        f"\nclassification: 2 logistic experts, gate on x2, n={n_samples:,} "
        f"(held-out n={n - n_samples:,})",
        file=out,
    )
    header = f"{'model':<28}{'accuracy':>11}{'log-loss':>11}{'time (s)':>10}"
    print(header, file=out)
    print("-" * len(header), file=out)
    scores = {}
    for name, model in (
        ("logistic regression", LogisticRegression(max_iter=1000)),
        ("mixture of 2 experts", MixtureOfExpertsClassifier(2, random_state=seed)),
    ):
        t = time.perf_counter()
        model.fit(X[tr], y[tr])
        elapsed = time.perf_counter() - t
        proba = model.predict_proba(X[te])
        acc = float(np.mean(model.predict(X[te]) == y[te]))
        loss = log_loss(y[te], proba, labels=model.classes_)
        print(f"{name:<28}{acc:11.4f}{loss:11.4f}{elapsed:10.2f}", file=out)
        scores[name] = acc
    return dict(model=model, X=X[tr], y=y[tr], scores=scores)


def _demo_figure(rows, classification, output: Path, n, k, link):
    from ._optional import pyplot
    from .plot import plot_gating

    plt = pyplot()  # an ImportError naming the plot extra when matplotlib is missing
    plt.switch_backend("Agg")

    output.mkdir(parents=True, exist_ok=True)
    names = [r[0].replace(" (floor)", "\n(floor)") for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    pos = np.arange(len(rows))
    axes[0].bar(pos - 0.2, [max(r[1], 1e-4) for r in rows], 0.4, label="experts")
    axes[0].bar(pos + 0.2, [max(r[2], 1e-4) for r in rows], 0.4, label="gating")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("parameter error (Frobenius, matched)")
    axes[0].set_title(f"Regression: recovery, n={n:,}, k={k}, {link} link", fontsize="medium")
    axes[0].set_xticks(pos, names, rotation=35, ha="right", fontsize=8)
    axes[0].axhline(0.1, color="grey", lw=0.8, ls="--", label="error 0.1")
    axes[0].legend()
    times = [r[4] for r in rows[1:]]
    axes[1].bar(np.arange(len(times)), times, color="tab:green")
    axes[1].set_xticks(np.arange(len(times)), names[1:], rotation=35, ha="right", fontsize=8)
    axes[1].set_ylabel("fit time (s)")
    axes[1].set_title("Regression: fit time", fontsize="medium")
    # the classifier: its fitted gate along x2 against the true one, sigmoid(+-3 x2)
    model, X = classification["model"], classification["X"]
    plot_gating(model, X, feature=2, ax=axes[2])
    t = np.linspace(X[:, 2].min(), X[:, 2].max(), 200)
    true_gate = 1.0 / (1.0 + np.exp(-3.0 * t))
    axes[2].plot(t, true_gate, color="k", ls=":", lw=1.5, label="true gate (both labellings)")
    axes[2].plot(t, 1.0 - true_gate, color="k", ls=":", lw=1.5)
    axes[2].legend(loc="center left", fontsize="small")
    scores = classification["scores"]
    axes[2].set_title(
        "Classification: the gate of 2 logistic experts\n"
        + axes[2].get_title()
        + "\nheld-out accuracy: "
        + ", ".join(f"{name.split()[0]} {acc:.3f}" for name, acc in scores.items()),
        fontsize="small",
    )
    fig.tight_layout()
    path = output / "demo.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# fit / predict
# --------------------------------------------------------------------------
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


def _delimiter(text):
    """``--delimiter``: one character; ``tab`` and ``\\t`` name the tab."""
    if text in ("tab", "\\t"):
        return "\t"
    if len(text) != 1 or text in '"\r\n':
        raise argparse.ArgumentTypeError(f"expected one character (or 'tab'), got {text!r}")
    return text


def _sniff(header_line):
    """The most frequent of ``,``, ``;`` and tab in the header line (``,`` if none)."""
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


class Table:
    """A CSV file read as text cells: header names and rows of equal length.

    Rows are numbered as in a spreadsheet: the header is row 1, the first data
    row is row 2 (blank lines count, quoted fields spanning lines are not
    supported).
    """

    def __init__(self, path, delimiter=None):
        self.path = Path(path)
        if self.path.is_dir():
            raise CLIError(f"{self.path} is a directory, not a CSV file")
        if not self.path.is_file():
            raise CLIError(f"no such file: {self.path}")
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read {self.path}: {exc}") from None
        lines = text.splitlines()
        if not lines or not lines[0].strip():
            raise CLIError(
                f"{self.path}: empty file or empty first line (expected a header "
                "row of column names)"
            )
        self.delimiter = delimiter or _sniff(lines[0])
        try:
            rows = list(csv.reader(lines, delimiter=self.delimiter, strict=True))
        except csv.Error as exc:
            raise CLIError(f"cannot read {self.path} as CSV: {exc}") from None
        if len(rows) != len(lines):
            self._refuse_multiline_field(lines)
        header = [name.strip() for name in rows[0]]
        if any(not name for name in header):
            raise CLIError(f"{self.path}, row 1: column {header.index('') + 1} has no name")
        seen = set()
        for name in header:
            if name in seen:
                raise CLIError(f"{self.path}, row 1: column {name!r} appears twice")
            seen.add(name)
        self.header = header
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        self._row_number = np.flatnonzero(lengths > 0)[1:] + 1  # spreadsheet numbering
        bad = np.flatnonzero(lengths[self._row_number - 1] != len(header))
        if bad.size:
            i = self._row_number[bad[0]]
            raise CLIError(
                f"{self.path}, row {i}: {lengths[i - 1]} fields, expected "
                f"{len(header)} as in the header (delimiter "
                f"{_DELIMITERS.get(self.delimiter, repr(self.delimiter))}; "
                "set another with --delimiter)"
            )
        if self._row_number.size == 0:
            raise CLIError(f"{self.path}: no data rows after the header")
        self._cells = np.array([rows[i - 1] for i in self._row_number], dtype=str)

    def _refuse_multiline_field(self, lines):
        """Name the first record that spans several lines (a quoted field holding a newline)."""
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        end = 0
        for _ in reader:
            if reader.line_num - end > 1:
                break
            end = reader.line_num
        raise CLIError(
            f"{self.path}, row {end + 1}: a quoted field spans lines {end + 1} to "
            f"{reader.line_num} (fields holding line breaks are not supported)"
        )

    def numbers(self, columns):
        """The named columns as a float array, (n_rows, len(columns))."""
        idx = [self.header.index(c) for c in columns]
        cells = self._cells[:, idx]
        try:
            values = cells.astype(float)
        except ValueError:
            values = None
        if values is not None and np.all(np.isfinite(values)):
            return values
        for j, name in enumerate(columns):  # locate the first bad cell (error path only)
            ok = np.vectorize(_is_finite_number, otypes=[bool])(cells[:, j])
            if not np.all(ok):
                i = int(np.argmin(ok))
                cell = str(cells[i, j])
                raise CLIError(
                    f"{self.path}, row {self._row_number[i]}, column {name!r}: "
                    f"{_why_not_a_number(cell, self.delimiter)}"
                )
        raise CLIError(f"{self.path}: cannot read the values as numbers")  # pragma: no cover


def _labels(table, column):
    """A column of class labels (any text), refusing empty cells."""
    cells = np.char.strip(table._cells[:, table.header.index(column)])
    empty = np.flatnonzero(cells == "")
    if empty.size:
        raise CLIError(
            f"{table.path}, row {table._row_number[empty[0]]}, column {column!r}: missing label"
        )
    return cells.astype(object)


def _is_finite_number(cell):
    try:
        return bool(np.isfinite(float(cell)))
    except ValueError:
        return False


def _why_not_a_number(cell, delimiter):
    if not cell.strip():
        return "missing value (only numbers are accepted)"
    try:
        float(cell)
    except ValueError:
        hint = ""
        if "," in cell and delimiter != ",":
            hint = " (decimal commas are not supported: write 1.5, not 1,5)"
        return f"{cell!r} is not a number{hint}"
    return f"{cell!r} is not a finite number"


def _columns(names):
    return ", ".join(repr(n) for n in names)


def _check_output(path, force):
    if path.exists() and not force:
        raise CLIError(f"{path} exists; pass --force to overwrite it")


def _model_path(args):
    out = Path(args.output)  # written as named: the format does not need the suffix
    if out.is_dir():
        raise CLIError(f"--output {out} is a directory; name the model file to write")
    _check_output(out, args.force)
    return out


def _column_flag(table, args, flag, taken):
    """The column that ``--offset``, ``--trials``, ``--weights`` or ``--groups`` names (or None)."""
    name = getattr(args, flag)
    if name is None:
        return None
    if name not in table.header:
        raise CLIError(
            f"--{flag} {name!r} is not a column of {table.path} (columns: {_columns(table.header)})"
        )
    if name in taken:
        raise CLIError(f"--{flag} {name!r} is already the {taken[name]}")
    taken[name] = f"--{flag} column"
    return name


def _training_inputs(args):
    """The CSV's features and target, the row weights and the estimator options of the flags.

    Returns ``(table, X, y, features, options, weights, groups)``; ``options``
    holds only the flags given, so absent ones leave the estimator's defaults.
    The ``--weights`` and ``--groups`` columns are not features; the ``--offset`` and ``--trials``
    columns are columns of ``X`` (the model reads them when predicting) that
    neither the gate nor the experts use.
    """
    table = Table(args.data, args.delimiter)
    if args.target not in table.header:
        raise CLIError(
            f"--target {args.target!r} is not a column of {table.path} "
            f"(columns: {_columns(table.header)})"
        )
    taken = {args.target: "--target"}
    weights_column = _column_flag(table, args, "weights", taken)
    groups_column = _column_flag(table, args, "groups", taken)
    offset_column = _column_flag(table, args, "offset", taken)
    trials_column = _column_flag(table, args, "trials", taken)
    known = {offset_column: "--offset", trials_column: "--trials"}
    known.pop(None, None)
    features = [c for c in table.header if c not in (args.target, weights_column, groups_column)]
    if not [c for c in features if c not in known]:
        raise CLIError(f"{table.path} has no feature columns besides the target {args.target!r}")
    X = table.numbers(features)
    weights = None if weights_column is None else table.numbers([weights_column])[:, 0]
    groups = None if groups_column is None else _labels(table, groups_column)
    if args.classify:
        for flag in ("link", "family", "solver", "noise", "offset", "trials"):
            if getattr(args, flag) is not None:
                raise CLIError(f"--{flag} applies to regression; drop it or --classify")
        y = _labels(table, args.target)
        options = {
            name: getattr(args, name)
            for name in ("n_init", "max_iter", "alpha", "prior_strength")
            if getattr(args, name) is not None
        }
    else:
        if args.alpha is not None:
            raise CLIError("--alpha applies to --classify")
        y = table.numbers([args.target])[:, 0]
        options = {
            name: getattr(args, name)
            for name in (
                "link",
                "family",
                "solver",
                "noise",
                "n_init",
                "max_iter",
                "prior_strength",
            )
            if getattr(args, name) is not None
        }
    if offset_column is not None:
        options["offset"] = features.index(offset_column)
    if trials_column is not None:
        options["trials"] = features.index(trials_column)
    for role in ("gating_features", "expert_features", "shared_features"):
        spec = getattr(args, role)
        if spec is None:
            continue
        names = [c.strip() for c in spec.split(",") if c.strip()]
        flag = "--" + role.replace("_", "-")
        intercept = role == "shared_features" and "intercept" in names
        if intercept and "intercept" not in features:  # the experts' intercept, not a column
            names = [c for c in names if c != "intercept"]
        else:
            intercept = False
        unknown = [c for c in names if c not in features]
        if unknown:
            raise CLIError(
                f"{flag}: {_columns(unknown)} not among the feature columns of {table.path} "
                f"({_columns(features)})"
            )
        for column, owner in known.items():
            if column in names:
                raise CLIError(f"{flag}: {column!r} is the {owner} column")
        options[role] = [features.index(c) for c in names] + (["intercept"] if intercept else [])
    return table, X, y, features, options, weights, groups


def _save_model(est, out, features, target, weights_name=None, groups_name=None):
    # the model remembers its columns, so that predict can match them by name
    est.feature_names_in_ = np.asarray(features, dtype=object)
    est.target_name_ = target
    if weights_name is not None:
        est.weights_name_ = weights_name
    if groups_name is not None:
        est.groups_name_ = groups_name
    try:
        est.save(out)
    except OSError as exc:
        raise CLIError(f"cannot write {out}: {exc}") from None


def _print_warning(w, hint=""):
    print(f"moelearn: warning: {w.message}{hint}", file=sys.stderr)


def cmd_fit(args):
    from sklearn.exceptions import ConvergenceWarning

    from .estimator import MixtureOfExpertsRegressor
    from .exceptions import GateSeparationWarning, NotIdentifiedWarning

    out = _model_path(args)
    table, X, y, features, options, weights, groups = _training_inputs(args)
    if args.classify:
        from .classifier import MixtureOfExpertsClassifier

        est = MixtureOfExpertsClassifier(args.experts, random_state=args.seed, **options)
    else:
        est = MixtureOfExpertsRegressor(args.experts, random_state=args.seed, **options)
    est.set_params(verbose=min(args.verbose, 1))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            warnings.simplefilter("always", GateSeparationWarning)
            warnings.simplefilter("always", NotIdentifiedWarning)
            est.fit(X, y, sample_weight=weights, groups=groups)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot fit {table.path}: {exc}") from None
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            _print_warning(w, " (use --max-iter)")
        elif issubclass(w.category, (GateSeparationWarning, NotIdentifiedWarning)):
            _print_warning(w)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    score = est.score(X, y, sample_weight=weights)
    metric = "accuracy" if args.classify else "R^2"
    if groups is None:
        density = est.log_density(X, y)
        total = float(np.sum(density) if weights is None else weights @ density)
    else:  # one log-density per group; weights are constant within a group
        total = est.log_likelihood_ * (X.shape[0] if weights is None else float(np.sum(weights)))
    _save_model(est, out, features, args.target, args.weights, args.groups)
    grouped = "" if groups is None else f" in {est.n_groups_} groups"
    print(
        f"fitted {args.experts} experts on {X.shape[0]} rows{grouped} x {X.shape[1]} features "
        f"({est.init_method_}); log-likelihood {total:.6g} "
        f"({'total over the rows' if weights is None else 'weighted total'}), "
        f"{metric} {score:.4f}"
    )
    print(f"model saved to {out}")


def _candidates(text):
    """``--candidates``: ``1,2,3`` or a range ``1-6``."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(part) for part in text.split("-", 1))
            values = list(range(lo, hi + 1))
        else:
            values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers of experts as 1,2,3 or 1-6, got {text!r}"
        ) from None
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"expected distinct positive numbers of experts, got {text!r}"
        )
    return values


def cmd_select(args):
    from .estimator import MixtureOfExpertsRegressor
    from .selection import select_n_experts

    out = _model_path(args)
    table, X, y, features, options, weights, groups = _training_inputs(args)
    if args.classify:
        from .classifier import MixtureOfExpertsClassifier

        template = MixtureOfExpertsClassifier()
    else:
        template = MixtureOfExpertsRegressor()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            result = select_n_experts(
                X,
                y,
                candidates=args.candidates,
                criterion=args.criterion,
                cv=args.folds,
                random_state=args.seed,
                estimator=template,
                verbose=args.verbose,
                sample_weight=weights,
                groups=groups,
                **options,
            )
    except (ValueError, TypeError) as exc:
        raise CLIError(f"cannot fit {table.path}: {exc}") from None
    for w in caught:
        if issubclass(w.category, UserWarning):
            _print_warning(w)
        else:  # pragma: no cover - passed on as they came
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    print(
        f"{len(args.candidates)} candidates on {X.shape[0]} rows x {X.shape[1]} features "
        f"(log-likelihoods are {'totals over the rows' if weights is None else 'weighted totals'})"
    )
    print(result)
    _save_model(result.estimator, out, features, args.target, args.weights, args.groups)
    print(f"model with {result.n_experts} experts saved to {out}")


def _feature_matrix(est, table):
    """The model's feature columns of ``table``, matched by name (or by position)."""
    names = getattr(est, "feature_names_in_", None)
    target = getattr(est, "target_name_", None)
    weights = getattr(est, "weights_name_", None)
    groups = getattr(est, "groups_name_", None)
    if names is None:
        # a model fitted on a plain array: columns can only be matched by position
        columns = [c for c in table.header if c != target]
        if len(columns) != est.n_features_in_:
            raise CLIError(
                f"{table.path} has {len(columns)} columns; the model expects "
                f"{est.n_features_in_} (it has no column names, so columns are "
                "matched by position)"
            )
        return table.numbers(columns)
    names = [str(n) for n in names]
    missing = [n for n in names if n not in table.header]
    if missing:
        raise CLIError(
            f"{table.path} lacks the column(s) {_columns(missing)} the model was "
            f"fitted on (expected {_columns(names)})"
        )
    extra = [c for c in table.header if c not in names and c not in (target, weights, groups)]
    if extra:
        raise CLIError(
            f"{table.path} has column(s) {_columns(extra)} the model was not "
            f"fitted on (expected {_columns(names)})"
        )
    return table.numbers(names)


def cmd_predict(args):
    from .persistence import load

    if args.output:
        _check_output(Path(args.output), args.force)
    try:
        est = load(args.model)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    table = Table(args.data, args.delimiter)
    X = _feature_matrix(est, table)
    with warnings.catch_warnings():
        # the columns are already matched by name; the array itself has none
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            pred = est.predict(X)
            gate = est.predict_gating(X)
            proba = est.predict_proba(X) if hasattr(est, "classes_") else None
        except ValueError as exc:
            raise CLIError(f"cannot predict on {table.path}: {exc}") from None
    buffer = io.StringIO()
    if proba is None:
        np.savetxt(
            buffer,
            np.column_stack([pred, gate]),
            delimiter=",",
            comments="",
            fmt=["%.10g"] + ["%.6g"] * gate.shape[1],
            header="prediction," + ",".join(f"gate_{i}" for i in range(gate.shape[1])),
        )
    else:
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            ["prediction"]
            + [f"proba_{c}" for c in est.classes_]
            + [f"gate_{i}" for i in range(gate.shape[1])]
        )
        for label, p_row, g_row in zip(pred, proba, gate, strict=True):
            writer.writerow([label] + [f"{v:.6g}" for v in p_row] + [f"{v:.6g}" for v in g_row])
    text = buffer.getvalue()
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise CLIError(f"cannot write {args.output}: {exc}") from None
        print(f"wrote {len(pred)} predictions to {args.output}")
    else:
        sys.stdout.write(text)


def cmd_summary(args):
    from .persistence import load

    try:
        est = load(args.model)
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None
    target = args.target or getattr(est, "target_name_", None)
    if target is None:
        raise CLIError(f"{args.model} does not record its target column: pass --target")
    table = Table(args.data, args.delimiter)
    if target not in table.header:
        raise CLIError(f"{table.path} has no target column {target!r}")
    X = _feature_matrix(est, table)
    classify = hasattr(est, "classes_")
    y = _labels(table, target) if classify else table.numbers([target])[:, 0]
    groups = None
    groups_name = getattr(est, "groups_name_", None)
    if groups_name is not None:
        if groups_name not in table.header:
            raise CLIError(
                f"{table.path} has no column {groups_name!r}: the model was fitted on its groups"
            )
        groups = _labels(table, groups_name)
    weights = getattr(est, "weights_name_", None)
    if weights is not None:
        print(
            f"moelearn: warning: the model was fitted with the row weights of column {weights!r}; "
            "this summary counts every row once",
            file=sys.stderr,
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            print(
                _classifier_summary(est, X, y, groups)
                if classify
                else est.summary(X, y, groups=groups)
            )
        except ValueError as exc:
            raise CLIError(f"cannot summarise on {table.path}: {exc}") from None


def _classifier_summary(est, X, y, groups=None):
    # the classes and the accuracy, then the shared coefficient table
    lines = [
        f"classes: {', '.join(str(c) for c in est.classes_)}   accuracy: {est.score(X, y):.4f}",
        str(est.summary(X, y, groups=groups)),
    ]
    return "\n".join(lines)


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


def _n_init(text):
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, exit status 2 (``--help`` shows the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_training_options(parser):
    """The flags shared by ``fit`` and ``select``: the data, the target and the model."""
    from .families import REGRESSION_FAMILIES
    from .links import available_links

    parser.add_argument("data", help="CSV file with a header row, numeric columns")
    parser.add_argument("--target", required=True, help="name of the column to predict")
    parser.add_argument(
        "--link",
        choices=available_links(),
        default=None,
        help="expert link function (default: linear)",
    )
    parser.add_argument(
        "--classify",
        action="store_true",
        help="the target holds class labels: fit a mixture-of-experts classifier "
        "(logistic or multinomial experts)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="fixed ridge of the classifier per row (default: 0; with --classify)",
    )
    parser.add_argument(
        "--prior-strength",
        type=float,
        default=None,
        metavar="LAMBDA",
        help="the prior worth LAMBDA rows (0: plain maximum likelihood; default: 1 with "
        "--classify, 0.5 for regression with a likelihood solver, 0 for the others)",
    )
    parser.add_argument(
        "--family",
        choices=REGRESSION_FAMILIES,
        default=None,
        help="distribution of the target given an expert (default: gaussian; the "
        "zero-inflated families make expert 0 a point mass at zero)",
    )
    parser.add_argument(
        "--gating-features",
        default=None,
        metavar="COLUMNS",
        help="comma-separated columns the gate reads (default: all features; '' for "
        "constant mixing weights)",
    )
    parser.add_argument(
        "--expert-features",
        default=None,
        metavar="COLUMNS",
        help="comma-separated columns the experts read (default: all features)",
    )
    parser.add_argument(
        "--shared-features",
        default=None,
        metavar="COLUMNS",
        help="comma-separated columns whose coefficient is the same for every expert "
        "(they are expert features); 'intercept' shares the intercept too",
    )
    parser.add_argument(
        "--offset",
        default=None,
        metavar="COLUMN",
        help="a column added to every expert's linear predictor with coefficient one (the "
        "log exposure of counts); neither the gate nor the experts read it",
    )
    parser.add_argument(
        "--trials",
        default=None,
        metavar="COLUMN",
        help="the column of each row's number of trials, with --family binomial (the "
        "target counts the successes); neither the gate nor the experts read it",
    )
    parser.add_argument(
        "--weights",
        default=None,
        metavar="COLUMN",
        help="a column of row weights (frequencies); not a feature",
    )
    parser.add_argument(
        "--groups",
        default=None,
        metavar="COLUMN",
        help="a column of group labels: every row of a group comes from the same expert "
        "(the gate's columns constant within a group); not a feature",
    )
    parser.add_argument(
        "--solver",
        choices=available_solvers(),
        default=None,
        help="estimation method (default: moments)",
    )
    parser.add_argument(
        "--noise",
        choices=("shared", "expert"),
        default=None,
        help="one noise level per expert, or one shared by all (default: the estimator's)",
    )
    parser.add_argument(
        "--n-init",
        type=_n_init,
        default=None,
        help="starting points: an integer, or 'auto' (default: the estimator's)",
    )
    parser.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help="iterations of the likelihood refinement (default: the estimator's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--delimiter",
        type=_delimiter,
        default=None,
        help="field separator (default: the most frequent of , ; and tab in the header)",
    )
    parser.add_argument("--output", default="model.npz", help="model file (default: model.npz)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing model file")
    parser.add_argument(
        "--verbose",
        "-v",
        action="count",
        default=0,
        help="progress to standard error (select: a line per candidate; -vv: also the "
        "stages of every fit)",
    )


def build_parser():
    from .links import available_links

    parser = _Parser(
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

    fit = sub.add_parser(
        "fit",
        help="fit a model to a CSV file and save it",
        description="Fit a mixture of experts to a CSV file with a header row and save it. "
        "Every column except the target is a feature; the model remembers the "
        "column names, so predict matches columns by name.",
    )
    _add_training_options(fit)
    fit.add_argument("--experts", type=_positive_int, required=True, help="number of experts")

    select = sub.add_parser(
        "select",
        help="choose the number of experts: a table of fits and criteria, the best saved",
        description="Fit every candidate number of experts to a CSV file once and print, "
        "per candidate, the total log-likelihood, the number of parameters, AIC, BIC, ICL, "
        "convergence, fit time and degenerate fits (collapsed components, a separated gate, "
        "collinear columns); save the chosen model. Takes the options of fit.",
    )
    _add_training_options(select)
    select.add_argument(
        "--candidates",
        type=_candidates,
        default=list(range(1, 7)),
        help="numbers of experts to compare, as 1,2,3 or 1-6 (default: 1-6)",
    )
    select.add_argument(
        "--criterion",
        choices=("bic", "aic", "icl", "cv"),
        default="bic",
        help="the criterion that chooses (default: bic; cv: held-out log-likelihood)",
    )
    select.add_argument(
        "--folds", type=_positive_int, default=5, help="folds of --criterion cv (default: 5)"
    )

    pred = sub.add_parser(
        "predict",
        help="predict with a saved model",
        description="Predict with a saved model. Columns are matched by name; the target "
        "column, if present, is ignored.",
    )
    pred.add_argument("model")
    pred.add_argument("data", help="CSV file with the feature columns used in fit (any order)")
    pred.add_argument(
        "--delimiter",
        type=_delimiter,
        default=None,
        help="field separator (default: the most frequent of , ; and tab in the header)",
    )
    pred.add_argument("--output", help="CSV file to write (default: standard output)")
    pred.add_argument("--force", action="store_true", help="overwrite an existing output file")

    summ = sub.add_parser(
        "summary",
        help="coefficients, standard errors and fit criteria of a saved model",
        description="Print the coefficient table (estimates, standard errors, z, p-values), "
        "the noise levels, log-likelihood, AIC, BIC and ICL of a saved model, "
        "evaluated on a CSV file (pass the training data for the usual "
        "standard errors).",
    )
    summ.add_argument("model")
    summ.add_argument("data", help="CSV file with the feature columns and the target")
    summ.add_argument(
        "--target", default=None, help="name of the target column (default: the one used in fit)"
    )
    summ.add_argument(
        "--delimiter",
        type=_delimiter,
        default=None,
        help="field separator (default: the most frequent of , ; and tab in the header)",
    )

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
            run_demo(
                args.n_samples,
                args.n_features,
                args.n_experts,
                args.link,
                seed=args.seed,
                output=args.output,
            )
        elif args.command == "fit":
            cmd_fit(args)
        elif args.command == "select":
            cmd_select(args)
        elif args.command == "predict":
            cmd_predict(args)
        elif args.command == "summary":
            cmd_summary(args)
        elif args.command == "reproduce":
            from ._optional import pyplot
            from .experiments import run_experiments

            try:  # before the experiments run, not after: each one ends with a figure
                pyplot()
            except ImportError as exc:
                raise CLIError(f"reproduce draws figures: {exc}") from None

            run_experiments(
                args.experiment,
                quick=args.quick,
                output=args.output,
                seeds=args.seeds,
                jobs=args.jobs,
            )
    except CLIError as exc:
        print(f"moelearn: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output folder that cannot be written
        print(f"moelearn: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:  # sizes are checked before fitting; this is the last resort
        print(
            "moelearn: error: not enough memory for this fit (use fewer --experts or rows)",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
