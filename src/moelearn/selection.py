"""Choosing the number of experts."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold

from ._validation import check_Xy
from .estimator import MixtureOfExpertsRegressor

__all__ = ["select_n_experts", "ExpertSelection"]


@dataclass
class ExpertSelection:
    """Result of :func:`select_n_experts`.

    Attributes
    ----------
    n_experts : int
        The chosen number of experts.
    candidates : list of int
    scores : list of float
        BIC (lower is better) or mean held-out log-likelihood per sample
        (higher is better), per candidate.
    criterion : str
    estimator : MixtureOfExpertsRegressor
        Fitted on all the data with the chosen number of experts.
    """

    n_experts: int
    candidates: list
    scores: list
    criterion: str
    estimator: MixtureOfExpertsRegressor


def select_n_experts(
    X, y, candidates=range(1, 7), criterion="bic", cv=5, random_state=0, **estimator_params
) -> ExpertSelection:
    """How many experts? Compare candidate ``k`` by BIC or by cross-validation.

    Parameters
    ----------
    X, y : array-like
    candidates : iterable of int, default 1..6
    criterion : {"bic", "cv"}
        ``"bic"`` fits each candidate once on all data; ``"cv"`` uses the mean
        held-out log-likelihood over ``cv`` shuffled folds.
    cv : int, default 5
    random_state : int
        Seeds the folds and the estimators.
    **estimator_params
        Passed to :class:`MixtureOfExpertsRegressor`.
    """
    if criterion not in ("bic", "cv"):
        raise ValueError(f"criterion must be 'bic' or 'cv', got {criterion!r}")
    candidates = [int(k) for k in candidates]
    if not candidates or min(candidates) < 1:
        raise ValueError("candidates must be a non-empty list of integers >= 1")
    X, y = check_Xy(X, y)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in candidates:
            est = MixtureOfExpertsRegressor(k, random_state=random_state, **estimator_params)
            if criterion == "bic":
                scores.append(float(est.fit(X, y).bic(X, y)))
            else:
                folds = KFold(cv, shuffle=True, random_state=random_state)
                held = [
                    float(np.mean(est.fit(X[tr], y[tr]).log_density(X[te], y[te])))
                    for tr, te in folds.split(X)
                ]
                scores.append(float(np.mean(held)))
        best = int(np.argmin(scores) if criterion == "bic" else np.argmax(scores))
        final = MixtureOfExpertsRegressor(
            candidates[best], random_state=random_state, **estimator_params
        ).fit(X, y)
    return ExpertSelection(candidates[best], candidates, scores, criterion, final)
