"""Plots of a fitted mixture of experts (matplotlib, imported on first use).

Every function draws on ``ax`` (a new figure when None) and returns the axes,
so it works with any backend, the non-interactive ``Agg`` included.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["plot_criterion", "plot_experts", "plot_gating", "plot_trace"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _grid(est, X, feature, n_grid):
    """Rows along ``feature`` over its observed range, the other features at their means."""
    check_is_fitted(est)
    X = est._check_X(X)
    d = X.shape[1]
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
        raise TypeError(f"feature must be an integer index, got {type(feature).__name__}")
    if not -d <= feature < d:
        raise ValueError(f"feature must index one of the {d} features, got {feature}")
    feature = int(feature) % d
    t = np.linspace(X[:, feature].min(), X[:, feature].max(), int(n_grid))
    grid = np.repeat(X.mean(axis=0)[None, :], t.size, axis=0)
    grid[:, feature] = t
    return X, grid, t, feature


def _feature_label(est, feature):
    names = getattr(est, "feature_names_in_", None)
    return str(names[feature]) if names is not None else f"x{feature}"


def plot_experts(est, X, y, feature=0, ax=None, alpha=0.1, n_grid=200):
    """Fitted experts along one feature, with a predictive band and the data.

    The other features are held at their means.  Each expert's mean
    ``g(<a_i, x> + b_i)`` is a line, the mixture mean a dashed black line and
    the equal-tailed ``1 - alpha`` predictive interval a shaded band; the data
    are coloured by their most probable expert (:meth:`predict_expert`).

    Parameters
    ----------
    est : fitted MixtureOfExpertsRegressor
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    feature : int
    ax : matplotlib Axes or None
    alpha : float
        Miscoverage of the band.
    n_grid : int

    Returns
    -------
    matplotlib Axes
    """
    X, grid, t, feature = _grid(est, X, feature, n_grid)
    y = np.asarray(y, dtype=float).ravel()
    ax = _axes(ax)
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    labels = est.predict_expert(X, y)
    ax.scatter(X[:, feature], y, c=[colours(i % 10) for i in labels], s=6, alpha=0.4, linewidths=0)
    band = est.predict_interval(grid, alpha)
    ax.fill_between(
        t,
        band[:, 0],
        band[:, 1],
        color="0.6",
        alpha=0.3,
        label=f"{1 - alpha:.0%} predictive interval",
    )
    means = est.predict_experts(grid)
    for i in range(means.shape[1]):
        ax.plot(t, means[:, i], color=colours(i % 10), lw=2, label=f"expert {i}")
    ax.plot(t, est.predict(grid), "k--", lw=1.5, label="mixture mean")
    ax.set_xlabel(_feature_label(est, feature))
    ax.set_ylabel("y")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_gating(est, X, feature=0, ax=None, n_grid=200):
    """Gating probabilities ``p_i(x)`` along one feature (the others at their means).

    Returns
    -------
    matplotlib Axes
    """
    _, grid, t, feature = _grid(est, X, feature, n_grid)
    ax = _axes(ax)
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    proba = est.predict_gating(grid)
    for i in range(proba.shape[1]):
        ax.plot(t, proba[:, i], color=colours(i % 10), lw=2, label=f"expert {i}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_feature_label(est, feature))
    ax.set_ylabel("gating probability")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_criterion(selection, ax=None):
    """Selection criterion against the number of experts, the choice marked.

    Parameters
    ----------
    selection : ExpertSelection
        The result of :func:`moelearn.select_n_experts`.

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


def plot_trace(history, ax=None):
    """Objective of a fit against the optimiser's steps.

    Parameters
    ----------
    history : array-like, FitResult or fitted MixtureOfExpertsRegressor
        A :class:`~moelearn.refine.FitResult` (its ``history``), an estimator
        (its ``history_``: the final fit's trace - the refinement for the
        default solver) or the values themselves.  The values are the mean
        log-likelihood per sample at each evaluation (for L-BFGS each
        function evaluation, line-search probes included; per iteration for
        EM), or the squared loss for ``solver="gd-l2"``.

    Returns
    -------
    matplotlib Axes
    """
    values = history
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
    ax = _axes(ax)
    ax.plot(np.arange(1, values.size + 1), values, ".-", color="C0")
    ax.set_xlabel("step")
    ax.set_ylabel("objective (mean log-likelihood)")
    return ax
