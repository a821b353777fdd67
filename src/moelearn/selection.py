"""Choosing the number of experts: a table of fits and criteria per candidate.

:func:`select_n_experts` fits every candidate number of experts once and
reports, as flexmix's ``stepFlexmix`` does, the log-likelihood, the number of
parameters, AIC, BIC and ICL of each fit, whether it converged and whether it
is degenerate, with the fitted models kept.
"""

from __future__ import annotations

import html
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from ._progress import Reporter
from .classifier import MixtureOfExpertsClassifier
from .data import check_sample_weight
from .estimator import MixtureOfExpertsRegressor
from .exceptions import CollapsedComponentWarning, GateSeparationWarning, NotIdentifiedWarning
from .grouping import check_groups

__all__ = ["ExpertSelection", "SelectionResult", "SelectionRow", "select_n_experts"]

_CRITERIA = ("bic", "aic", "icl", "cv")
# warnings of a candidate's fit that the table records instead of repeating
_DEGENERATE = (
    (CollapsedComponentWarning, "collapsed component"),
    (GateSeparationWarning, "separated gate"),
    (NotIdentifiedWarning, "not identified"),
)


@dataclass(frozen=True)
class SelectionRow:
    """One candidate of :func:`select_n_experts`: its fit and criteria.

    Attributes
    ----------
    n_experts : int
    log_likelihood : float
        Total log-likelihood of the fit on the data (weighted sum with
        ``sample_weight``; without any ridge of the classifier).
    n_parameters : int
        Free parameters (``n_parameters_`` of the estimator).
    aic, bic, icl : float
        ``-2 log L + 2 p``, ``-2 log L + p log n`` and ``-2 clogLik + p log
        n`` (flexmix's ICL: the classification log-likelihood of each row's
        most probable expert; see
        :meth:`moelearn.MixtureOfExpertsRegressor.icl`); lower is better.
        ``n`` is the sum of the weights with ``sample_weight``.
    cv_log_likelihood : float
        Mean held-out log-likelihood per sample over the folds (higher is
        better); NaN unless ``criterion="cv"``.
    converged : bool
    fit_time : float
        Seconds of the fit on all the data (the folds excluded).
    degenerate : str
        Empty, or what made the fit degenerate, comma-separated: ``"collapsed
        component"`` (every start ended with a component explaining too few
        rows), ``"separated gate"`` (:func:`moelearn.gate_separation`), ``"not
        identified"`` (collinear columns).
    """

    n_experts: int
    log_likelihood: float
    n_parameters: int
    aic: float
    bic: float
    icl: float
    cv_log_likelihood: float
    converged: bool
    fit_time: float
    degenerate: str


@dataclass
class SelectionResult:
    """Result of :func:`select_n_experts`; print it for the table.

    Attributes
    ----------
    n_experts : int
        The chosen number of experts.
    candidates : list of int
    scores : list of float
        The criterion per candidate: AIC, BIC or ICL (lower is better) or the
        mean held-out log-likelihood per sample (``"cv"``, higher is better).
    criterion : {"bic", "aic", "icl", "cv"}
    estimator : MixtureOfExpertsRegressor or MixtureOfExpertsClassifier
        The fit with the chosen number of experts, on all the data (the one
        in ``estimators``; no refit).
    rows : tuple of SelectionRow
        The table, one row per candidate, in the order of ``candidates``.
    estimators : dict of int to estimator
        The fit of every candidate on all the data.
    """

    n_experts: int
    candidates: list
    scores: list
    criterion: str
    estimator: object
    rows: tuple = ()
    estimators: dict = field(default_factory=dict)

    _COLUMNS = (
        ("n_experts", "K", "d"),
        ("converged", "converged", "b"),
        ("log_likelihood", "logLik", ".6g"),
        ("n_parameters", "params", "d"),
        ("aic", "AIC", ".6g"),
        ("bic", "BIC", ".6g"),
        ("icl", "ICL", ".6g"),
        ("cv_log_likelihood", "cv logLik/n", ".5g"),
        ("fit_time", "time (s)", ".2f"),
        ("degenerate", "degenerate", "s"),
    )

    def _columns(self):
        return [c for c in self._COLUMNS if self.criterion == "cv" or c[0] != "cv_log_likelihood"]

    def _cells(self):
        out = []
        for row in self.rows:
            cells = []
            for attr, _, fmt in self._columns():
                value = getattr(row, attr)
                cells.append(
                    ("TRUE" if value else "FALSE")
                    if fmt == "b"
                    else value
                    if fmt == "s"
                    else format(value, fmt)
                )
            out.append(cells)
        return out

    def to_frame(self):
        """The table as a pandas DataFrame indexed by ``n_experts`` (needs pandas).

        The column ``chosen`` marks the chosen candidate.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("SelectionResult.to_frame needs pandas: pip install pandas") from None
        frame = pd.DataFrame([r.__dict__ for r in self.rows])
        if self.criterion != "cv":
            frame = frame.drop(columns="cv_log_likelihood")
        frame["chosen"] = frame["n_experts"] == self.n_experts
        return frame.set_index("n_experts")

    def __str__(self) -> str:
        titles = [title for _, title, _ in self._columns()]
        cells = self._cells()
        widths = [max([len(t)] + [len(c[j]) for c in cells]) for j, t in enumerate(titles)]
        # numbers to the right, the text of the last column to the left
        last = len(titles) - 1

        def line(mark, row):
            parts = [
                c.ljust(w) if j == last else c.rjust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            return (mark + "  " + "  ".join(parts)).rstrip()

        better = "higher" if self.criterion == "cv" else "lower"
        lines = [line(" ", titles)]
        for k, row in zip(self.candidates, cells, strict=True):
            lines.append(line("*" if k == self.n_experts else " ", row))
        lines.append(
            f"* chosen: {self.n_experts} experts by {self.criterion.upper()} ({better} is better)"
        )
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(str(self))

    def _repr_html_(self) -> str:
        """The table as HTML (Jupyter), the chosen row in bold."""
        esc = html.escape
        titles = [title for _, title, _ in self._columns()]
        parts = ["<table><thead><tr>"]
        parts += [f"<th>{esc(t)}</th>" for t in titles]
        parts.append("</tr></thead><tbody>")
        for k, row in zip(self.candidates, self._cells(), strict=True):
            style = " style='font-weight:bold'" if k == self.n_experts else ""
            parts.append(f"<tr{style}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
        parts.append(f"<p>chosen: {self.n_experts} experts by {esc(self.criterion.upper())}</p>")
        return "".join(parts)


# The former name of the result.
ExpertSelection = SelectionResult


def _n_rows(X):
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None else len(X)


def _take(a, index):
    """Rows ``index`` of an array, a DataFrame or a Series (positions, not labels)."""
    if a is None:
        return None
    if hasattr(a, "iloc"):
        return a.iloc[index]
    return np.asarray(a)[index]


def _fit(est, X, y, sample_weight, groups=None):
    """Fit, with the warnings a table row records caught: ``(seconds, degenerate)``."""
    start = time.perf_counter()
    extra = {} if groups is None else {"groups": groups}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if sample_weight is None:
            est.fit(X, y, **extra)
        else:
            est.fit(X, y, sample_weight=sample_weight, **extra)
    seconds = time.perf_counter() - start
    found = []
    for w in caught:
        labels = [label for cls, label in _DEGENERATE if issubclass(w.category, cls)]
        if labels:
            found += [label for label in labels if label not in found]
        elif not issubclass(w.category, ConvergenceWarning):  # converged_ says it
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return seconds, ", ".join(found)


def _total_log_likelihood(est, X, y, sample_weight, groups):
    """``(sum of the (weighted) log-likelihood, the sample size)`` of ``(X, y)``."""
    n = _n_rows(X)
    w = np.ones(n) if sample_weight is None else sample_weight
    if groups is None:
        ll = est.log_density(X, y)
        return float(w @ ll), float(w.sum())
    ll = est.log_density(X, y, groups=groups)  # one per group, a group's weight its rows'
    return float(w[check_groups(groups, n).first] @ ll), float(w.sum())


def _held_out(template, X, y, sample_weight, folds, groups=None):
    """Mean held-out log-likelihood per sample (weighted) over the folds."""
    scores = []
    for train, test in folds:
        est = clone(template)
        w_train = None if sample_weight is None else sample_weight[train]
        _fit(est, _take(X, train), _take(y, train), w_train, _take(groups, train))
        w_test = None if sample_weight is None else sample_weight[test]
        total, size = _total_log_likelihood(
            est, _take(X, test), _take(y, test), w_test, _take(groups, test)
        )
        scores.append(total / size)
    return float(np.mean(scores))


def select_n_experts(
    X,
    y,
    candidates=range(1, 7),
    criterion="bic",
    cv=5,
    random_state=0,
    *,
    sample_weight=None,
    groups=None,
    estimator=None,
    verbose=0,
    **params,
) -> SelectionResult:
    """How many experts?  Fit each candidate once and compare AIC, BIC, ICL or held-out fit.

    Every candidate number of experts is fitted once on all the data (the
    chosen fit is returned as it is, not refitted), and the result prints a
    table like flexmix's ``stepFlexmix``: log-likelihood, parameters, AIC,
    BIC, ICL, convergence, fit time and a flag on degenerate fits, with the
    chosen candidate marked.

    Each candidate maximises the estimator's own objective (the penalised
    likelihood of its ``prior_strength``, the default fit's), with the start
    search of a single fit; the criteria use the plain log-likelihood at that
    fit (``log_likelihood_``), as every other tool's do.

    Parameters
    ----------
    X : array-like or DataFrame of shape (n_samples, n_features)
        A DataFrame keeps its column names, so that ``gating_features``,
        ``expert_features`` and ``offset`` may name columns.
    y : array-like of shape (n_samples,)
        Numbers for a regressor, class labels for a classifier.
    candidates : iterable of int, default 1..6
    criterion : {"bic", "aic", "icl", "cv"}, default "bic"
        ``"bic"``, ``"aic"``, ``"icl"``: the smallest wins (ICL, flexmix's
        convention, is BIC plus ``-2 sum_n log max_i r_ni`` of the posterior
        responsibilities; it prefers well-separated experts).  ``"cv"``: the largest
        mean held-out log-likelihood per sample over ``cv`` shuffled folds
        (stratified for a classifier) wins; the folds are fitted besides the
        fit on all the data.
    cv : int, default 5
        Folds of ``criterion="cv"``.
    random_state : int, RandomState, Generator or None, default 0
        Seeds the folds and every fit (the same seed for every candidate, so a
        row equals ``Estimator(k, random_state=random_state).fit(X, y)``).
        None keeps the ``estimator`` template's own ``random_state``.
    sample_weight : array-like of shape (n_samples,) or None
        Row weights, passed to every fit; the criteria count them as
        frequencies (weighted log-likelihood, ``n`` the sum of the weights).
    groups : array-like of shape (n_samples,) or None
        Group labels passed to every fit (every row of a group comes from one
        expert); the criteria are those of the grouped likelihood (``n`` the
        rows), and the folds of ``criterion="cv"`` keep whole groups together.
    estimator : MixtureOfExpertsRegressor, MixtureOfExpertsClassifier or None
        A template, cloned for every candidate with ``n_experts`` set (None: a
        default :class:`~moelearn.MixtureOfExpertsRegressor`).
    verbose : int, default 0
        1: one line per candidate to standard error as it is fitted; 2: also
        the stages of each fit (the estimators' ``verbose=1``).
    **params
        Estimator parameters set on every candidate (``family``,
        ``gating_features``, ``alpha``, ...).

    Returns
    -------
    SelectionResult
        ``.n_experts`` the choice, ``.estimator`` its fit, ``.rows`` the table
        (``to_frame()`` for a DataFrame), ``.estimators`` every fit.

    Warns
    -----
    UserWarning
        When the choice is the largest candidate, or the smallest one above
        one expert: the best number may lie outside the candidates.
    """
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}")
    try:
        candidates = [int(k) for k in candidates]
    except (TypeError, ValueError):
        raise ValueError("candidates must be a non-empty list of integers >= 1") from None
    if not candidates or min(candidates) < 1 or len(set(candidates)) != len(candidates):
        raise ValueError("candidates must be a non-empty list of distinct integers >= 1")
    if not isinstance(verbose, (int, np.integer)) or verbose < 0:  # bool is an int
        raise ValueError(f"verbose must be an integer >= 0, got {verbose!r}")
    verbose = int(verbose)
    if estimator is None:
        estimator = MixtureOfExpertsRegressor()
    if not isinstance(estimator, (MixtureOfExpertsRegressor, MixtureOfExpertsClassifier)):
        raise TypeError(
            "estimator must be a MixtureOfExpertsRegressor or MixtureOfExpertsClassifier, "
            f"got {type(estimator).__name__}"
        )
    if "n_experts" in params:
        raise ValueError("pass the numbers of experts as candidates, not n_experts")
    template = clone(estimator).set_params(**params)
    if random_state is not None:
        template.set_params(random_state=random_state)
    if verbose >= 2:
        template.set_params(verbose=verbose - 1)
    if criterion == "cv":
        if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
            raise ValueError(f"cv must be an integer >= 2, got {cv!r}")
    n = _n_rows(X)
    if _n_rows(y) != n:
        raise ValueError(f"X has {n} rows but y has {_n_rows(y)}")
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, n)
    if groups is not None:
        groups = np.asarray(groups.to_numpy() if hasattr(groups, "to_numpy") else groups)
        codes = check_groups(groups, n).codes  # a clear error before any fit
    folds = None
    if criterion == "cv":
        seed = random_state if isinstance(random_state, (int, np.integer)) else None
        if groups is not None:
            splitter = (
                StratifiedGroupKFold(int(cv), shuffle=True, random_state=seed)
                if is_classifier(template)
                else GroupKFold(int(cv), shuffle=True, random_state=seed)
            )
            folds = list(splitter.split(np.zeros((n, 1)), np.asarray(y), codes))
        elif is_classifier(template):
            splitter = StratifiedKFold(int(cv), shuffle=True, random_state=seed)
            folds = list(splitter.split(np.zeros((n, 1)), np.asarray(y)))
        else:
            folds = list(KFold(int(cv), shuffle=True, random_state=seed).split(np.zeros((n, 1))))
    report = Reporter(verbose, "select_n_experts")

    rows, fits, scores = [], {}, []
    for k in candidates:
        est = clone(template).set_params(n_experts=k)
        try:
            seconds, degenerate = _fit(est, X, y, sample_weight, groups)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"fitting {k} experts: {exc}") from exc
        ll = _total_log_likelihood(est, X, y, sample_weight, groups)[0]
        cv_ll = float("nan")
        if folds is not None:
            cv_ll = _held_out(clone(est), X, y, sample_weight, folds, groups)
        row = SelectionRow(
            k,
            ll,
            int(est.n_parameters_),
            float(est.aic(X, y, sample_weight, groups)),
            float(est.bic(X, y, sample_weight, groups)),
            float(est.icl(X, y, sample_weight, groups)),
            cv_ll,
            bool(est.converged_),
            seconds,
            degenerate,
        )
        rows.append(row)
        fits[k] = est
        scores.append(cv_ll if criterion == "cv" else getattr(row, criterion))
        report(
            f"{k} expert{'s' if k > 1 else ''}: logLik {ll:.6g}, BIC {row.bic:.6g}"
            + (f", cv logLik/n {cv_ll:.5g}" if folds is not None else "")
            + f", {seconds:.1f}s"
            + (f" ({degenerate})" if degenerate else "")
        )
    values = np.asarray(scores, dtype=float)
    if not np.any(np.isfinite(values)):
        raise ValueError(f"no candidate has a finite {criterion} score")
    values = np.where(np.isfinite(values), values, np.inf if criterion != "cv" else -np.inf)
    best = int(np.argmax(values) if criterion == "cv" else np.argmin(values))
    chosen = candidates[best]
    if len(candidates) > 1 and chosen == max(candidates):
        warnings.warn(
            f"{criterion.upper()} chose {chosen} experts, the largest candidate: more experts "
            "may fit better; try larger candidates",
            UserWarning,
            stacklevel=2,
        )
    elif len(candidates) > 1 and chosen == min(candidates) and chosen > 1:
        warnings.warn(
            f"{criterion.upper()} chose {chosen} experts, the smallest candidate: fewer "
            "experts may fit better; try smaller candidates",
            UserWarning,
            stacklevel=2,
        )
    return SelectionResult(chosen, candidates, scores, criterion, fits[chosen], tuple(rows), fits)
