"""Start strategy: many cheap candidate starts, screened, the best refined (DESIGN §12).

The likelihood of a mixture of experts has many local maxima off the papers'
theory regime, and with one noise level per expert it is unbounded (an expert
collapsing on a few points with ``sigma -> 0``).  :func:`search` is the
default strategy of the estimator:

1. **Candidates** on a random subsample of at most ``screen_rows`` rows: the
   starts the caller supplies (the consistent moment start, warm starts) and
   partitions of the subsample turned into parameters by one M-step
   (:func:`~moelearn.refine.params_from_responsibilities`): random gate
   partitions (random hyperplanes of ``x``), residual partitions (quantiles of
   the residual of one global regression, tilted by a random direction of
   ``x``: the classical mixture-of-regressions start) and k-means clusters of
   ``(x, y)``.  For a non-linear link random parameter draws replace the
   partitions, whose least-squares M-step needs a linear expert.
2. **Screening**: a short EM run from each candidate, the noise levels tied
   for the first half (an expert cannot shrink onto a few points before the
   others have found their data), per expert for the second.
3. **Finalists**: the best ``n_finalists`` screened candidates that are not
   collapsed run to convergence on the subsample; the best of them is refined
   on all the data.  At large ``n`` the full data therefore see about one
   refinement, and on small data every stage runs on all of it.

A component is **collapsed** when it explains fewer samples (sum of its
responsibilities) than its expert has coefficients plus one, so that it can
interpolate them, or when its noise level sits at the floor.  Collapsed fits
rank below every fit without a collapsed component.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .data import Data
from .model import MoEParams
from .refine import FitResult, maximize_likelihood, params_from_responsibilities, random_params

__all__ = ["StartSearch", "collapsed_components", "responsibilities", "search"]

_KINDS = ("gate", "residual", "kmeans", "random")


@dataclass
class StartSearch:
    """Outcome of :func:`search`.

    Attributes
    ----------
    fit : FitResult
        The refined winner (on all the data).
    method : str
        The candidate it came from (``"moments"``, ``"gate"``, ...).
    n_candidates : int
        Candidates screened.
    screened : list of (str, float)
        Each candidate's kind and mean log-likelihood after screening.
    collapsed : bool
        Whether the winner still has a collapsed component (only when every
        finalist had one).
    """

    fit: FitResult
    method: str
    n_candidates: int
    screened: list
    collapsed: bool


def responsibilities(data: Data, params: MoEParams) -> np.ndarray:
    """Posterior expert probabilities, shape (n_experts, n_samples), for in-memory data."""
    return np.concatenate([params.posterior(Xb, yb).T for Xb, yb in data], axis=1)


def collapsed_components(data: Data, params: MoEParams, noise_floor: float,
                         n_expert_params: int) -> np.ndarray:
    """Which components are collapsed (boolean, one per expert); see the module notes."""
    share = data.map_reduce(lambda Xb, yb: params.posterior(Xb, yb).sum(axis=0))
    at_floor = params.noise_vector <= 1.001 * noise_floor
    return (share < n_expert_params + 1) | at_floor


def _one_hot(labels, k, smooth=0.1):
    post = np.full((k, labels.size), smooth / k)
    post[labels, np.arange(labels.size)] += 1.0 - smooth
    return post


def _partition(kind, X, y, k, rng):
    """Hard labels of the rows of (X, y) (standardised) for one candidate."""
    n, d = X.shape
    if kind == "gate":
        W = rng.standard_normal((k, d))
        c = 0.5 * rng.standard_normal(k)
        return np.argmax(X @ W.T + c, axis=1)
    if kind == "residual":
        design = np.hstack([X, np.ones((n, 1))])
        beta = np.linalg.lstsq(design, y, rcond=None)[0]
        resid = y - design @ beta
        v = rng.standard_normal(d) / np.sqrt(d)
        score = resid / max(float(np.std(resid)), 1e-12) + rng.uniform(0, 1) * (X @ v)
        edges = np.quantile(score, np.sort(rng.dirichlet(np.full(k, 4.0)).cumsum()[:-1]))
        return np.searchsorted(edges, score)
    # kmeans: Lloyd's algorithm on (x, y) from k random rows (sklearn's KMeans
    # would cost more than the EM run that follows)
    Z = np.hstack([X, y[:, None] * np.sqrt(d)])
    centres = Z[rng.choice(n, k, replace=False)]
    labels = np.zeros(n, dtype=int)
    for _ in range(10):
        dist = (Z**2).sum(1)[:, None] - 2 * Z @ centres.T + (centres**2).sum(1)
        labels = np.argmin(dist, axis=1)
        for j in range(k):
            if np.any(labels == j):
                centres[j] = Z[labels == j].mean(axis=0)
    return labels


def _candidate(kind, sub, k, link, per_expert, noise_floor, fit_intercept, rng):
    d = sub.n_features
    if kind == "random" or not link.is_linear:
        return random_params(d, k, link, 1.0, rng, per_expert)
    labels = _partition(kind, sub.X, sub.y, k, rng)
    base = MoEParams(np.zeros((k, d)), np.zeros((k, d)), noise_std=np.ones(k), link=link)
    return params_from_responsibilities(sub, _one_hot(labels, k), base,
                                        per_expert_noise=per_expert, noise_floor=noise_floor,
                                        fit_intercept=fit_intercept, gating_steps=10)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn(*args, **kwargs)


def _shared(params: MoEParams) -> MoEParams:
    out = params.copy()
    out.noise_std = float(np.sqrt(np.mean(params.noise_vector**2)))
    return out


def _per_expert(params: MoEParams) -> MoEParams:
    out = params.copy()
    out.noise_std = params.noise_vector
    return out


def search(data: Data, sub: Data, n_experts, link, *, starts=(), n_candidates=10,
           screen_iter=20, n_finalists=3, per_expert_noise=True, free, fit_intercept=True,
           refine="lbfgs", max_iter=1000, tol=1e-8, noise_floor=1e-6, max_moves=5, n_move_starts=1,
           random_state):
    """Screen candidate starts on ``sub`` and refine the best on ``data``.

    Parameters
    ----------
    data : Data
        All the samples (standardised), in memory or out of core.
    sub : Data
        An in-memory random subsample of ``data`` (``data`` itself when small).
    n_experts : int
    link : Link
    starts : sequence of (str, MoEParams)
        Named starts screened with the generated candidates (the moment start).
    n_candidates : int
        Generated candidates besides ``starts``.
    screen_iter : int
        EM iterations of the screening run.
    n_finalists : int
        Screened candidates run to convergence on ``sub``.
    per_expert_noise : bool
    free : set
        Parameter groups of the refinement (see :func:`~moelearn.refine.maximize_likelihood`).
    fit_intercept : bool
    refine : {"lbfgs", "em"}
    max_iter, tol, noise_floor
        Of the refinements.
    max_moves : int
        Rounds of remove-and-split moves tried on the winner (0: none).
    random_state : numpy.random.Generator

    Returns
    -------
    StartSearch
    """
    rng = random_state
    k = n_experts
    d_params = sub.n_features + (1 if fit_intercept else 0)
    kinds = [_KINDS[i % len(_KINDS)] if link.is_linear else "random"
             for i in range(n_candidates)]
    named = list(starts) + [(kind, _candidate(kind, sub, k, link, per_expert_noise,
                                              noise_floor, fit_intercept, rng))
                            for kind in kinds]
    screened = []
    half = max(screen_iter // 2, 1)
    for name, start in named:
        tied = _quiet(maximize_likelihood, sub, _shared(start), free=free, method="em",
                      per_expert_noise=False, max_iter=half, tol=0.0, noise_floor=noise_floor,
                      gating_steps=5)
        run = tied
        if per_expert_noise:
            run = _quiet(maximize_likelihood, sub, _per_expert(tied.params), free=free,
                         method="em", per_expert_noise=True, max_iter=screen_iter - half,
                         tol=0.0, noise_floor=noise_floor, gating_steps=5)
        bad = bool(np.any(collapsed_components(sub, run.params, noise_floor, d_params)))
        screened.append((name, tied, run, bad))
    same = sub is data
    sub_tol = tol if same else max(tol, 1e-7)
    # finalists: the best screened candidates of the model itself, run directly...
    by_model = sorted(range(len(screened)),
                      key=lambda i: (screened[i][3], -screened[i][2].log_likelihood))
    paths = [(screened[i][0], screened[i][2].params) for i in by_model[:n_finalists]]
    if per_expert_noise:
        # ... and the best of the nested shared-noise model (bounded, smoother), run to
        # its optimum first: a continuation from the simpler model
        by_tied = sorted(range(len(screened)), key=lambda i: -screened[i][1].log_likelihood)
        for i in by_tied[:n_finalists]:
            tied = _quiet(maximize_likelihood, sub, screened[i][1].params, free=free,
                          method=refine, per_expert_noise=False, max_iter=max_iter,
                          tol=sub_tol, noise_floor=noise_floor)
            paths.append((f"{screened[i][0]} via shared noise", _per_expert(tied.params)))
    finals = []
    for label, start in paths:
        fit = _quiet(maximize_likelihood, sub, start, free=free, method=refine,
                     per_expert_noise=per_expert_noise, max_iter=max_iter, tol=sub_tol,
                     noise_floor=noise_floor)
        bad = bool(np.any(collapsed_components(sub, fit.params, noise_floor, d_params)))
        finals.append((bad, -fit.log_likelihood, label, fit))
    finals.sort(key=lambda t: (t[0], t[1]))
    if max_moves and k > 1 and link.is_linear:
        # remove-and-split moves from the best distinct finalists
        improved, seen = [], []
        for bad, negll, name, fit in finals:
            if len(seen) == n_move_starts:
                break
            if any(abs(negll - other) <= 1e-6 * max(1.0, abs(negll)) for other in seen):
                continue
            seen.append(negll)
            fit, bad, moved = _improve_by_moves(sub, fit, bad, free, per_expert_noise,
                                                fit_intercept, refine, max_iter, sub_tol,
                                                noise_floor, screen_iter, d_params, max_moves,
                                                rng)
            improved.append((bad, -fit.log_likelihood, name + (" + split moves" if moved
                                                               else ""), fit))
        finals = sorted(improved + finals, key=lambda t: (t[0], t[1]))
    bad, _, name, fit = finals[0]
    if not same:
        fit = maximize_likelihood(data, fit.params, free=free, method=refine,
                                  per_expert_noise=per_expert_noise, max_iter=max_iter, tol=tol,
                                  noise_floor=noise_floor)
        bad = bool(np.any(collapsed_components(data, fit.params, noise_floor, d_params)))
    summary = [(nm, float(run.log_likelihood)) for nm, _, run, _ in screened]
    return StartSearch(fit, name, len(named), summary, bad)


def _move_responsibilities(post, resid, X, remove, split, kind, rng):
    """Responsibilities after removing expert ``remove`` and splitting expert ``split``.

    The removed expert's samples go to the others in proportion to their
    responsibilities; the split expert's samples are divided between it and
    the freed slot by the sign of its residual or by a random hyperplane of
    ``x`` through their weighted mean.
    """
    new = np.delete(post, remove, axis=0)
    new /= np.maximum(new.sum(axis=0), 1e-300)
    new = np.insert(new, remove, 0.0, axis=0)
    w = new[split]
    if kind == "residual":
        side = resid[split] > np.average(resid[split], weights=w + 1e-300)
    else:
        v = rng.standard_normal(X.shape[1])
        proj = X @ v
        side = proj > np.average(proj, weights=w + 1e-300)
    new[remove] = w * side
    new[split] = w * ~side
    return new


def _improve_by_moves(sub, fit, bad, free, per_expert, fit_intercept, refine, max_iter, tol,
                      noise_floor, screen_iter, d_params, max_moves, rng):
    """Remove-and-split moves (in the spirit of split-and-merge EM) until none improves."""
    k = fit.params.n_experts
    moved = False
    for _ in range(max_moves):
        params = fit.params
        post = responsibilities(sub, params)
        mu = params.link_function(params.experts @ sub.X.T + params.expert_bias[:, None])
        resid = sub.y - mu
        trials = []
        for remove in range(k):
            for split in range(k):
                if split == remove:
                    continue
                for kind in ("residual", "gate"):
                    R = _move_responsibilities(post, resid, sub.X, remove, split, kind, rng)
                    start = params_from_responsibilities(
                        sub, R, params, per_expert_noise=per_expert, noise_floor=noise_floor,
                        fit_intercept=fit_intercept, gating_steps=10)
                    run = _quiet(maximize_likelihood, sub, start, free=free, method="em",
                                 per_expert_noise=per_expert, max_iter=screen_iter, tol=0.0,
                                 noise_floor=noise_floor, gating_steps=5)
                    trials.append(run)
        trials.sort(key=lambda r: -r.log_likelihood)
        improved = False
        for run in trials[:2]:
            cand = _quiet(maximize_likelihood, sub, run.params, free=free, method=refine,
                          per_expert_noise=per_expert, max_iter=max_iter, tol=tol,
                          noise_floor=noise_floor)
            cand_bad = bool(np.any(collapsed_components(sub, cand.params, noise_floor,
                                                        d_params)))
            gain = cand.log_likelihood - fit.log_likelihood
            if (not cand_bad or bad) and (gain > 1e-6 * max(1.0, abs(fit.log_likelihood))
                                          or (bad and not cand_bad)):
                fit, bad, improved, moved = cand, cand_bad, True, True
                break
        if not improved:
            break
    return fit, bad, moved
