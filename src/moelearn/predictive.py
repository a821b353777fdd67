"""The predictive distribution of a fitted mixture of experts.

Given ``x``, ``y`` is a mixture of the experts' distributions (Gaussians with
means ``g(<a_i, x> + b_i)`` and standard deviations ``sigma_i`` by default, or
any :mod:`~moelearn.families` member) with weights ``p_i(x)``.  This module gives its
standard deviation, its CDF, quantiles and equal-tailed intervals, draws from
it, and the posterior probability of each expert once ``y`` is seen.  Every
function works on all rows at once (quantiles by a vectorised bracketed root
search, no loop over samples).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize.elementwise import bracket_root, find_root

from ._logspace import logsumexp_k
from .model import MoEParams, random_generator

__all__ = [
    "predict_cdf",
    "predict_expert",
    "predict_interval",
    "predict_quantiles",
    "predict_responsibilities",
    "predict_std",
    "sample_y",
]


def _check_params(params):
    if not isinstance(params, MoEParams):
        raise TypeError(f"params must be a MoEParams, got {type(params).__name__}")
    return params


def _components(params, X):
    """Weights, means and standard deviations, each of shape (n, k)."""
    params = _check_params(params)
    X = params.check_X(X)
    eta = params.expert_predictors(X)
    disp = params.dispersion()
    fam = params.family_at(X)
    return params.gating_proba(X), fam.mean(eta, disp), fam.std(eta, disp)


def _check_y(y, n):
    y = np.asarray(y, dtype=float)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite values")
    return y


def predict_std(params: MoEParams, X: ArrayLike) -> np.ndarray:
    """Standard deviation of ``y | x`` under the mixture, shape (n_samples,).

    ``Var(y | x) = sum_i p_i(x) (sigma_i^2 + (mu_i(x) - m(x))^2)`` with ``m`` the
    mixture mean: within-expert noise plus the spread of the experts; ``inf``
    where an expert has no variance (Student-t experts with ``df <= 2``).
    """
    w, mu, sd = _components(params, X)
    m = np.sum(w * mu, axis=1, keepdims=True)
    # an expert of weight 0 adds nothing, even one without a variance (0 * inf)
    used = w > 0
    sd = np.where(used, sd, 0.0)
    dev = np.where(used, np.abs(mu - m), 0.0)
    # in units of the row's largest term, so that squares of tiny scales do not underflow
    size = np.max(sd + dev, axis=1, keepdims=True)
    unit = np.where((size > 0) & np.isfinite(size), size, 1.0)
    spread = unit[:, 0] * np.sqrt(np.sum(w * ((sd / unit) ** 2 + (dev / unit) ** 2), axis=1))
    return np.where(np.isinf(size[:, 0]), np.inf, spread)


def predict_cdf(params: MoEParams, X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """``P(Y <= y | x)`` for each row, shape (n_samples,)."""
    params = _check_params(params)
    X = params.check_X(X)
    y = _check_y(y, X.shape[0])
    w = params.gating_proba(X)
    eta = params.expert_predictors(X)
    return np.sum(w * params.family_at(X).cdf(y, eta, params.dispersion()), axis=1)


def _check_levels(q, name="q"):
    q = np.asarray(q, dtype=float)
    if q.ndim > 1:
        raise ValueError(f"{name} must be a float or a 1-D array of probabilities")
    if not np.all((q > 0) & (q < 1)):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {q}")
    return q


def predict_quantiles(params: MoEParams, X: ArrayLike, q: float | ArrayLike) -> np.ndarray:
    """Quantiles of ``y | x`` from the mixture CDF.

    Parameters
    ----------
    params : MoEParams
    X : array-like of shape (n_samples, n_features)
    q : float or array-like of shape (n_levels,)
        Probabilities in (0, 1).

    Returns
    -------
    ndarray of shape (n_samples,) for a scalar ``q``, else (n_samples, n_levels)

    Notes
    -----
    The ``q``-quantile of a mixture lies between the smallest and the largest
    of its experts' own ``q``-quantiles (``Family.ppf``; for Gaussian experts
    ``mu_i + sigma_i Phi^{-1}(q)``), which bracket it.  For a family without a
    quantile function :func:`scipy.optimize.elementwise.bracket_root` grows a
    bracket from the mixture's mean and spread.  Chandrupatla's bracketed
    method (:func:`scipy.optimize.elementwise.find_root`) then solves
    ``F(y | x) = q`` inside the bracket for all rows and levels at once; for
    count families the quantile is the smallest integer ``y`` with
    ``F(y | x) >= q``.
    """
    q = _check_levels(q)
    params = _check_params(params)
    out = _root_quantiles(params, params.check_X(X), np.atleast_1d(q))
    return out[:, 0] if q.ndim == 0 else out


def _start_bracket(fam, w, eta, disp, levels, low):
    """``(xl0, xr0)`` of shape (n, m) for the bracket search.

    The experts' own quantiles (``Family.ppf``) where the family has them,
    widened a little against rounding; else the mixture mean plus or minus its
    spread, kept inside the support.
    """
    with np.errstate(all="ignore"):
        # the levels, then the quartiles (each expert's scale)
        comp = fam.ppf(np.r_[levels, 0.25, 0.75], eta, disp)
    if comp is not None and np.all(np.isfinite(comp)):
        comp = np.asarray(comp, dtype=float)
        quartiles, comp = comp[..., -2:], comp[..., :-2]  # (n, k, 2), (n, k, m)
        lo, hi = comp.min(axis=1), comp.max(axis=1)
        if fam.discrete:
            # F(lo - 1) < q <= F(hi) at the integers: open the bracket below the jump
            return np.maximum(lo - 1.5, low), hi + 0.25
        # F is flat to rounding within about eps * scale of a point: a pad of 1e-8 of
        # the experts' interquartile range puts the start's ends on either side
        iqr = np.max(quartiles[..., 1] - quartiles[..., 0], axis=1)[:, None]
        pad = np.maximum(1e-6 * (hi - lo), 1e-8 * iqr)
        pad = np.maximum(pad, 1e-9 * np.maximum(np.abs(lo), np.abs(hi)))
        pad = np.maximum(pad, 1e-300)
        return np.maximum(lo - pad, low), np.maximum(hi + pad, low + pad)
    mu, sd = fam.mean(eta, disp), fam.std(eta, disp)
    centre = np.nan_to_num(np.sum(w * mu, axis=1), nan=0.0)[:, None]
    # the spread without squaring (squares of tiny scales underflow)
    size = np.nan_to_num(np.max(np.abs(mu) + sd, axis=1), nan=1.0, posinf=1e6)
    spread = np.maximum(size, 1e-300)[:, None]
    shape = (w.shape[0], len(levels))
    xl0 = np.broadcast_to(np.maximum(centre - spread, low), shape)
    xr0 = np.broadcast_to(np.maximum(centre + spread, low + spread), shape)
    return xl0, xr0


def _root_quantiles(params, X, levels):
    """Quantiles of any family's mixture from its CDF, shape (n, n_levels).

    For a count family the quantile is the smallest integer ``y`` with
    ``F(y) >= q``: ``F`` jumps there, and the bracket closes on the jump from
    the right.
    """
    fam = params.family_at(X)
    eta = params.expert_predictors(X)
    disp = params.dispersion()
    w = params.gating_proba(X)
    q = np.asarray(levels, dtype=float)[None, :]  # (1, m)
    rows = np.arange(X.shape[0], dtype=float)[:, None]  # (n, 1)

    def f(x, q, row):
        # find_root passes the (row, level) pairs still unsolved, flattened or not
        r = row.astype(np.intp).ravel()
        F = np.sum(w[r] * fam.take(r).cdf(np.ravel(x), eta[r], disp), axis=1)
        return F.reshape(np.shape(x)) - q

    args = (q, rows)
    # below the support F = 0 < q: a count family's bracket may start at y_min - 1
    low = fam.y_min - 1.0 if fam.discrete else fam.y_min
    xl0, xr0 = _start_bracket(fam, w, eta, disp, levels, low)
    # returns at once where the start already brackets the root, grows it elsewhere
    bracket = bracket_root(f, xl0, xr0, xmin=low, args=args)
    if not np.all(bracket.success):
        raise ArithmeticError(
            f"no bracket of the {fam.name} mixture's quantiles found for "
            f"{int(np.sum(~bracket.success))} of {bracket.success.size} (row, level) pairs"
        )
    bracket = bracket.bracket
    tol = {"xatol": 0.25} if fam.discrete else None
    res = find_root(f, bracket, args=args, tolerances=tol)
    if fam.discrete:
        # F(xl) < q <= F(xr) with xr - xl < 1: the jump is at the integer floor(xr)
        return np.floor(res.bracket[1])
    return np.asarray(res.x, dtype=float)


def predict_interval(params: MoEParams, X: ArrayLike, alpha: float = 0.1) -> np.ndarray:
    """Equal-tailed ``1 - alpha`` predictive interval, shape (n_samples, 2).

    Columns are the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of ``y | x``.
    """
    alpha = float(_check_levels(alpha, "alpha"))
    return predict_quantiles(params, X, [alpha / 2.0, 1.0 - alpha / 2.0])


def sample_y(
    params: MoEParams,
    X: ArrayLike,
    n_samples: int = 1,
    random_state: int | np.random.Generator | np.random.RandomState | None = None,
) -> np.ndarray:
    """Draw ``y ~ p(y | x)`` independently, ``n_samples`` times per row.

    Returns
    -------
    ndarray of shape (n_rows, n_samples)
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an integer, got {type(n_samples).__name__}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    params = _check_params(params)
    X = params.check_X(X)
    rng = random_generator(random_state)
    log_w = params.gating_log_proba(X)  # (n, k)
    # Gumbel-max: z ~ Categorical(p(x)) without leaving log space
    z = np.argmax(
        log_w[:, None, :] + rng.gumbel(size=(X.shape[0], n_samples, log_w.shape[1])), axis=2
    )
    eta = np.repeat(params.expert_predictors(X), n_samples, axis=0)  # (n * s, k)
    fam = params.family_at(X).take(np.repeat(np.arange(X.shape[0]), n_samples))
    draws = fam.sample_chosen(eta, params.dispersion(), z.reshape(-1), rng)
    return draws.reshape(z.shape)


def predict_responsibilities(
    params: MoEParams, X: ArrayLike, y: ArrayLike, log: bool = False
) -> np.ndarray:
    """Posterior probability of each expert given ``(x, y)``, shape (n_samples, n_experts).

    ``P(z = i | x, y) ∝ p_i(x) N(y | mu_i(x), sigma_i^2)``, normalised in log
    space.  ``log=True`` returns the log-probabilities.
    """
    params = _check_params(params)
    X = params.check_X(X)
    y = _check_y(y, X.shape[0])
    joint = params.joint_log_likelihood(X, y).T  # (k, n)
    lse, post = logsumexp_k(joint)
    return (joint - lse).T if log else post.T


def predict_expert(params: MoEParams, X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Most probable expert given ``(x, y)``, shape (n_samples,)."""
    return np.argmax(predict_responsibilities(params, X, y, log=True), axis=1)
