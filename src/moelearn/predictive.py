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
from scipy.special import ndtr, ndtri

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
    weights = params.gating_proba(X)
    means = params.expert_means(X)
    if _is_gaussian(params):
        sd = np.broadcast_to(params.noise_vector, means.shape)
    else:
        sd = np.sqrt(params.expert_variances(X))
    return weights, means, sd


def _is_gaussian(params):
    return params.family_object.name == "gaussian"


def _family_cdf(params, X, y):
    """Mixture CDF at one ``y`` per row for any family, shape (n,)."""
    w = params.gating_proba(X)
    eta = params.expert_predictors(X)
    return np.sum(w * params.family_object.cdf(y, eta, params.dispersion()), axis=1)


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
    mixture mean: within-expert noise plus the spread of the experts.
    """
    w, mu, sd = _components(params, X)
    m = np.sum(w * mu, axis=1, keepdims=True)
    return np.sqrt(np.sum(w * (sd**2 + (mu - m) ** 2), axis=1))


def predict_cdf(params: MoEParams, X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """``P(Y <= y | x)`` for each row, shape (n_samples,)."""
    params = _check_params(params)
    X = params.check_X(X)
    y = _check_y(y, X.shape[0])
    if not _is_gaussian(params):
        return _family_cdf(params, X, y)
    w, mu, sd = _components(params, X)
    return np.sum(w * ndtr((y[:, None] - mu) / sd), axis=1)


def _mixture_cdf_minus(x, q, *args):
    # args: k weights, k means, k standard deviations (each broadcastable with x)
    k = len(args) // 3
    total = -q
    for w, mu, sd in zip(args[:k], args[k : 2 * k], args[2 * k :], strict=True):
        total = total + w * ndtr((x - mu) / sd)
    return total


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
    For Gaussian experts the ``q``-quantile lies between the smallest and the
    largest of the experts' own ``q``-quantiles ``mu_i + sigma_i Phi^{-1}(q)``;
    for other families :func:`scipy.optimize.elementwise.bracket_root` finds a
    bracket from the mixture's mean and spread.  Chandrupatla's bracketed
    method (:func:`scipy.optimize.elementwise.find_root`) then solves
    ``F(y | x) = q`` inside the bracket for all rows and levels at once; for
    count families the quantile is the smallest integer ``y`` with
    ``F(y | x) >= q``.
    """
    q = _check_levels(q)
    scalar = q.ndim == 0
    if not _is_gaussian(params):
        params = _check_params(params)
        out = _root_quantiles(params, params.check_X(X), np.atleast_1d(q))
        return out[:, 0] if scalar else out
    w, mu, sd = _components(params, X)
    levels = np.atleast_1d(q)[None, :]  # (1, m)
    expert_q = mu[:, :, None] + sd[:, :, None] * ndtri(levels)[:, None, :]  # (n, k, m)
    # widen the bracket by a little so that rounding cannot invalidate it
    pad = 1e-3 * sd.min(axis=1)[:, None]
    lo = expert_q.min(axis=1) - pad
    hi = expert_q.max(axis=1) + pad
    k = w.shape[1]
    args = (
        tuple(w[:, i : i + 1] for i in range(k))
        + tuple(mu[:, i : i + 1] for i in range(k))
        + tuple(sd[:, i : i + 1] for i in range(k))
    )
    res = find_root(_mixture_cdf_minus, (lo, hi), args=(levels, *args))
    out = np.asarray(res.x, dtype=float)
    return out[:, 0] if scalar else out


def _family_cdf_minus(x, q, *args):
    # args: k weights, then k linear predictors (each broadcastable with x); the
    # family and its dispersion are bound by the caller
    fam, disp = args[-2], args[-1]
    args = args[:-2]
    k = len(args) // 2
    shape = np.shape(x)
    w = np.stack([np.broadcast_to(a, shape).ravel() for a in args[:k]], axis=1)
    eta = np.stack([np.broadcast_to(a, shape).ravel() for a in args[k:]], axis=1)
    total = np.sum(w * fam.cdf(np.ravel(x), eta, disp), axis=1)
    return (total - np.broadcast_to(q, shape).ravel()).reshape(shape)


def _root_quantiles(params, X, levels):
    """Quantiles of any family's mixture from its CDF, shape (n, n_levels).

    :func:`scipy.optimize.elementwise.bracket_root` grows a bracket from the
    mixture mean plus or minus its spread (kept inside the support), and
    :func:`scipy.optimize.elementwise.find_root` (Chandrupatla's method) solves
    ``F(y | x) = q`` inside it, for all rows and levels at once.  For a count
    family the quantile is the smallest integer ``y`` with ``F(y) >= q``: ``F``
    jumps there, and the bracket closes on the jump from the right.
    """
    fam = params.family_object
    w, mu, sd = _components(params, X)
    eta = params.expert_predictors(X)
    disp = params.dispersion()
    k = w.shape[1]
    centre = np.nan_to_num(np.sum(w * mu, axis=1), nan=0.0)
    spread = np.nan_to_num(np.sqrt(np.sum(w * (sd**2 + mu**2), axis=1)), nan=1.0, posinf=1e6)
    spread = np.maximum(spread, 1e-300)[:, None]
    centre = centre[:, None]
    nonnegative = fam.name in ("poisson", "gamma", "bernoulli")
    # below the support F = 0 < q: a count family's bracket may start at -1
    low = (-1.0 if fam.discrete else 0.0) if nonnegative else -np.inf
    q = np.asarray(levels, dtype=float)[None, :]  # (1, m)
    shape = (X.shape[0], q.shape[1])
    xl0 = np.broadcast_to(np.maximum(centre - spread, low), shape)
    xr0 = np.broadcast_to(np.maximum(centre + spread, low + spread), shape)

    def f(x, q, *cols):
        return _family_cdf_minus(x, q, *cols, fam, disp)

    cols = tuple(w[:, i : i + 1] for i in range(k)) + tuple(eta[:, i : i + 1] for i in range(k))
    bracket = bracket_root(f, xl0, xr0, xmin=low, args=(q, *cols))
    if not np.all(bracket.success):
        raise ArithmeticError(
            f"no bracket of the {fam.name} mixture's quantiles found for "
            f"{int(np.sum(~bracket.success))} of {bracket.success.size} (row, level) pairs"
        )
    tol = {"xatol": 0.25} if fam.discrete else None
    res = find_root(f, bracket.bracket, args=(q, *cols), tolerances=tol)
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
    if not _is_gaussian(params):
        z = np.argmax(
            log_w[:, None, :] + rng.gumbel(size=(X.shape[0], n_samples, log_w.shape[1])), axis=2
        )
        eta = np.repeat(params.expert_predictors(X), n_samples, axis=0)  # (n * s, k)
        draws = params.family_object.sample(eta, params.dispersion(), rng)
        return np.take_along_axis(draws, z.reshape(-1, 1), axis=1).reshape(z.shape)
    mu = params.expert_means(X)
    # Gumbel-max: z ~ Categorical(p(x)) without leaving log space
    z = np.argmax(
        log_w[:, None, :] + rng.gumbel(size=(X.shape[0], n_samples, log_w.shape[1])), axis=2
    )
    centre = np.take_along_axis(mu, z, axis=1)
    return centre + params.noise_vector[z] * rng.standard_normal(z.shape)


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
