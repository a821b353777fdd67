"""Plots of a fitted mixture of experts (matplotlib, imported on first use).

Every function draws on the axes it is given (a new figure when None) and
returns them, so it works with any backend, the non-interactive ``Agg``
included.  matplotlib comes with the plot extra: ``pip install
"moelearn[plot]"``.  Axis labels use the column names of a model fitted on a
pandas DataFrame (``feature_names_in_``) and the target's name
(``target_name_``, or the name of a pandas Series ``y``) when there are any.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils.validation import check_is_fitted, validate_data

from ._optional import pyplot

__all__ = ["plot_criterion", "plot_experts", "plot_gating", "plot_rootogram", "plot_trace"]


def _axes(ax):
    if ax is None:
        _, ax = pyplot().subplots()
    return ax


def _colours():
    return pyplot().get_cmap("tab10")


def _check_X(est, X):
    """``X`` checked against the fit (its column names included), as a float array."""
    check_is_fitted(est)
    with np.errstate(invalid="ignore", over="ignore"):
        return validate_data(est, X, reset=False, dtype=np.float64)


@contextmanager
def _own_rows():
    """Calls on rows built here from a checked ``X``: they carry no column names."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="X does not have valid feature names", category=UserWarning
        )
        yield


def _check_y(y, n):
    name = getattr(y, "name", None)
    y = np.asarray(y, dtype=float)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite values")
    return y, name


def _grid(est, X, feature, n_grid):
    """Rows along ``feature`` over its observed range, the other features at their means."""
    X = _check_X(est, X)
    d = X.shape[1]
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
        raise TypeError(f"feature must be an integer index, got {type(feature).__name__}")
    if not -d <= feature < d:
        raise ValueError(f"feature must index one of the {d} features, got {feature}")
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 2:
        raise ValueError(f"n_grid must be an integer >= 2, got {n_grid!r}")
    feature = int(feature) % d
    t = np.linspace(X[:, feature].min(), X[:, feature].max(), int(n_grid))
    grid = np.repeat(X.mean(axis=0)[None, :], t.size, axis=0)
    grid[:, feature] = t
    return X, grid, t, feature


def _feature_label(est, feature):
    names = getattr(est, "feature_names_in_", None)
    return str(names[feature]) if names is not None else f"x{feature}"


def _held_fixed(est, feature, means):
    """What the curves hold fixed: the other features at their means."""
    others = [j for j in range(means.size) if j != feature]
    if not others:
        return ""
    if len(others) <= 3:
        return ", ".join(f"{_feature_label(est, j)} = {means[j]:.3g}" for j in others) + (
            " (their means)" if len(others) > 1 else " (its mean)"
        )
    return f"the other {len(others)} features at their means"


def _target_label(est, y_name):
    name = getattr(est, "target_name_", None)
    if name is None:
        name = y_name
    return "y" if name is None else str(name)


def plot_experts(
    est: Any,
    X: ArrayLike,
    y: ArrayLike,
    feature: int = 0,
    ax: Any = None,
    alpha: float = 0.1,
    n_grid: int = 200,
    min_weight: float = 0.05,
) -> Any:
    """Fitted experts along one feature, with a predictive band and the data.

    The curves are drawn along ``feature`` with the other features held at
    their means (the title says so): each expert's mean ``g(<a_i, x> + b_i)``
    is a line, drawn only where the gate gives that expert a probability of at
    least ``min_weight``; the mixture mean is a dashed black line and the
    equal-tailed ``1 - alpha`` predictive interval at those rows a shaded band.
    The data are coloured by their most probable expert
    (:meth:`~moelearn.MixtureOfExpertsRegressor.predict_expert`); with other
    features that vary, points may lie outside the band, which is the
    interval for rows at the means of the other features.

    Parameters
    ----------
    est : fitted MixtureOfExpertsRegressor
    X : array-like of shape (n_samples, n_features)
        A pandas DataFrame with the fitted column names, or an array.
    y : array-like of shape (n_samples,)
    feature : int, default 0
        Index of the feature on the horizontal axis.
    ax : matplotlib Axes or None
        Axes to draw on; a new figure when None.
    alpha : float, default 0.1
        Miscoverage of the band.
    n_grid : int, default 200
        Number of points along the feature.
    min_weight : float, default 0.05
        An expert's line is left out where its gating probability is below
        this (0 draws every line everywhere).

    Returns
    -------
    matplotlib Axes
    """
    if not hasattr(est, "predict_interval"):
        raise TypeError(
            f"plot_experts needs a fitted MixtureOfExpertsRegressor, got {type(est).__name__}; "
            "for a classifier use plot_gating or plot_rootogram"
        )
    if isinstance(min_weight, bool) or not isinstance(min_weight, (int, float, np.floating)):
        raise TypeError(f"min_weight must be a number, got {type(min_weight).__name__}")
    if not 0.0 <= min_weight < 1.0:
        raise ValueError(f"min_weight must lie in [0, 1), got {min_weight}")
    X, grid, t, feature = _grid(est, X, feature, n_grid)
    y, y_name = _check_y(y, X.shape[0])
    ax = _axes(ax)
    colours = _colours()
    with _own_rows():
        labels = est.predict_expert(X, y)
        band = est.predict_interval(grid, alpha)
        means = est.predict_experts(grid)
        weights = est.predict_gating(grid)
        mixture = est.predict(grid)
    ax.scatter(X[:, feature], y, c=[colours(i % 10) for i in labels], s=6, alpha=0.4, linewidths=0)
    ax.fill_between(
        t,
        band[:, 0],
        band[:, 1],
        color="0.6",
        alpha=0.3,
        label=f"{1 - alpha:.0%} predictive interval",
    )
    means = np.where(weights >= min_weight, means, np.nan)
    for i in range(means.shape[1]):
        ax.plot(t, means[:, i], color=colours(i % 10), lw=2, label=f"expert {i}")
    ax.plot(t, mixture, "k--", lw=1.5, label="mixture mean")
    fixed = _held_fixed(est, feature, grid[0])
    where = f"experts where their gate weight >= {min_weight:g}" if min_weight > 0 else ""
    ax.set_title("; ".join(part for part in (fixed, where) if part), fontsize="small")
    ax.set_xlabel(_feature_label(est, feature))
    ax.set_ylabel(_target_label(est, y_name))
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_gating(est: Any, X: ArrayLike, feature: int = 0, ax: Any = None, n_grid: int = 200) -> Any:
    """Gating probabilities ``p_i(x)`` along one feature, the others at their means.

    Parameters
    ----------
    est : fitted MixtureOfExpertsRegressor or MixtureOfExpertsClassifier
    X : array-like of shape (n_samples, n_features)
        Gives the range of ``feature`` and the means of the others.
    feature : int, default 0
        Index of the feature on the horizontal axis.
    ax : matplotlib Axes or None
        Axes to draw on; a new figure when None.
    n_grid : int, default 200
        Number of points along the feature.

    Returns
    -------
    matplotlib Axes
    """
    _, grid, t, feature = _grid(est, X, feature, n_grid)
    ax = _axes(ax)
    colours = _colours()
    with _own_rows():
        proba = est.predict_gating(grid)
    for i in range(proba.shape[1]):
        ax.plot(t, proba[:, i], color=colours(i % 10), lw=2, label=f"expert {i}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(_held_fixed(est, feature, grid[0]), fontsize="small")
    ax.set_xlabel(_feature_label(est, feature))
    ax.set_ylabel("gating probability")
    ax.legend(loc="best", fontsize="small")
    return ax


def _posteriors(est, X, y):
    """``P(expert i | x, y)`` for a regressor or a classifier, shape (n, k)."""
    from ._base import MixtureOfExpertsBase

    if not isinstance(est, MixtureOfExpertsBase):
        raise TypeError(
            "plot_rootogram needs a fitted MixtureOfExpertsRegressor or "
            f"MixtureOfExpertsClassifier, got {type(est).__name__}"
        )
    X = _check_X(est, X)
    if not hasattr(est, "classes_"):
        y, _ = _check_y(y, X.shape[0])  # numbers; class labels stay as they are
    with _own_rows():
        return est.predict_responsibilities(X, y)


def plot_rootogram(
    est: Any, X: ArrayLike, y: ArrayLike, bins: int = 20, axes: Sequence[Any] | None = None
) -> np.ndarray:
    """Rootogram of the posterior probabilities of each expert (as flexmix's ``rootogram``).

    One panel per expert: a histogram over ``[0, 1]`` of
    ``P(expert i | x, y)`` for the rows of ``(X, y)``, the counts on a
    square-root scale.  A well-separated fit piles its rows near 0 and 1 in
    every panel; mass in between means rows the experts share.  Every row
    counts in every panel, so each panel's bars add up to the number of rows.

    Parameters
    ----------
    est : fitted MixtureOfExpertsRegressor or MixtureOfExpertsClassifier
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Responses (labels for a classifier).
    bins : int, default 20
        Number of equal bins on ``[0, 1]``.
    axes : sequence of ``n_experts`` matplotlib Axes or None
        Axes to draw on; a new figure with one panel per expert when None.

    Returns
    -------
    ndarray of matplotlib Axes, shape (n_experts,)
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    post = _posteriors(est, X, y)
    k = post.shape[1]
    new_figure = axes is None
    if new_figure:
        plt = pyplot()
        _, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.0), sharey=True, squeeze=False)
        axes = axes[0]
    axes = np.asarray(axes, dtype=object).ravel()
    if axes.size != k:
        raise ValueError(f"axes must hold one Axes per expert ({k}), got {axes.size}")
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    colours = _colours()
    for i, ax in enumerate(axes):
        counts, _ = np.histogram(np.clip(post[:, i], 0.0, 1.0), bins=edges)
        ax.bar(
            edges[:-1],
            counts,
            width=np.diff(edges),
            align="edge",
            color=colours(i % 10),
            edgecolor="white",
            linewidth=0.5,
        )
        ax.set_yscale("function", functions=(_root, np.square))
        ax.set_ylim(bottom=0.0)
        ax.set_xlim(0.0, 1.0)
        ax.set_title(f"expert {i}")
        ax.set_xlabel("posterior probability")
    axes[0].set_ylabel("rows (square-root scale)")
    if new_figure:
        axes[0].figure.tight_layout()
    return axes


def _root(values):
    return np.sqrt(np.maximum(values, 0.0))


def plot_criterion(selection: Any, ax: Any = None) -> Any:
    """Selection criterion against the number of experts, the choice marked.

    Parameters
    ----------
    selection : ExpertSelection
        The result of :func:`moelearn.select_n_experts`.
    ax : matplotlib Axes or None
        Axes to draw on; a new figure when None.

    Returns
    -------
    matplotlib Axes
    """
    for attr in ("candidates", "scores", "criterion", "n_experts"):
        if not hasattr(selection, attr):
            raise TypeError(
                f"selection must be the result of moelearn.select_n_experts (missing {attr!r})"
            )
    ax = _axes(ax)
    k = np.asarray(selection.candidates)
    scores = np.asarray(selection.scores, dtype=float)
    ax.plot(k, scores, "o-", color="C0")
    best = list(selection.candidates).index(selection.n_experts)
    ax.plot(
        [k[best]], [scores[best]], "*", color="C3", ms=14, label=f"chosen: {selection.n_experts}"
    )
    ax.set_xticks(k)
    ax.set_xlabel("number of experts")
    ax.set_ylabel(
        "BIC (lower is better)"
        if selection.criterion == "bic"
        else "held-out log-likelihood per sample"
    )
    ax.legend(loc="best")
    return ax


def plot_trace(history: Any, ax: Any = None) -> Any:
    """Objective of a fit against the optimiser's steps.

    The title gives the number of evaluations, the final value and the gain
    from the first to the last, so a short trace (a start that was already
    near the optimum) is still read at a glance.  The axis shows the values
    themselves, without an offset.

    Parameters
    ----------
    history : array-like, FitResult or fitted MixtureOfExpertsRegressor
        A :class:`~moelearn.refine.FitResult` (its ``history``), an estimator
        (its ``history_``: the final fit's trace - the refinement for the
        default solver) or the values themselves.  The values are the mean
        log-likelihood per sample at each evaluation (for L-BFGS each
        function evaluation, line-search probes included; per iteration for
        EM), or the squared loss for ``solver="gd-l2"``.
    ax : matplotlib Axes or None
        Axes to draw on; a new figure when None.

    Returns
    -------
    matplotlib Axes
    """
    values = history
    loss = getattr(history, "solver", None) == "gd-l2"
    if hasattr(history, "history_"):
        values = history.history_
    elif hasattr(history, "history"):
        values = history.history
    elif hasattr(history, "params_"):
        raise ValueError(
            "this estimator keeps no history (it was loaded or built from "
            "parameters); refit it or pass a FitResult"
        )
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("history is empty: nothing to plot")
    if not np.all(np.isfinite(values)):
        raise ValueError("history contains NaN or infinite values")
    ax = _axes(ax)
    ax.plot(np.arange(1, values.size + 1), values, ".-", color="C0", ms=8)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    what = "squared loss" if loss else "mean log-likelihood per sample"
    steps = f"{values.size} evaluation" + ("s" if values.size != 1 else "")
    change = values[-1] - values[0]
    ax.set_title(
        f"{steps}: final {what} {values[-1]:.6g}, "
        f"{'change' if loss else 'gain'} {change:+.3g} from the first",
        fontsize="small",
    )
    ax.set_xlabel("evaluation")
    ax.set_ylabel(what)
    return ax
