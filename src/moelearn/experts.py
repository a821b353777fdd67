"""Expert recovery from transformed cross-moments (DESIGN §4).

* ``method="landscape"`` - the landscape-designed loss ``L_4`` of the AISTATS
  2020 paper, minimised by gradient descent on the unit sphere; whitened
  (default, any linearly independent experts) or on raw samples (the paper's
  form, full-batch or mini-batch, for near-orthogonal experts).
* ``method="tensor"`` - the ICML 2019 cross-moment tensor, whitened and
  decomposed by the robust tensor power method with deflation.

Both read the data through the mergeable accumulators of :mod:`moelearn.moments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import factorial, sqrt

import numpy as np
from numpy.typing import ArrayLike

from ._validation import (
    check_int,
    check_link,
    check_n_experts,
    check_noise_std,
    check_real,
    check_Xy,
)
from .data import Data
from .exceptions import MomentMethodUnavailable
from .links import Link
from .model import random_generator
from .moments import (
    FactorialMomentAccumulator,
    MomentAccumulator,
    ReducedMomentAccumulator,
    Whitening,
    symmetrise,
)
from .transforms import gaussian_link_moments, output_transform

__all__ = [
    "ExpertRecoveryResult",
    "landscape_loss",
    "recover_count_directions",
    "recover_count_experts",
    "recover_directions",
    "recover_experts",
    "resolve_signs",
]

_METHODS = ("landscape", "tensor")


@dataclass
class ExpertRecoveryResult:
    """Experts recovered from moments, with what is needed to inspect the fit.

    Attributes
    ----------
    experts : ndarray (k, d)
        Unit-norm expert directions, signs fixed by the first moment where the
        link allows it.
    method, form : str
    noise_std : float
        The noise level used (estimated when not given).
    order : int
        Moment order used (3 or 4).
    loss_history : list of ndarray
        Loss per iteration for each random start (landscape only).
    restart_losses : ndarray
        Final loss (landscape) or score (tensor) of each start.
    best_restart : int
        The restart kept: the first whose loss is within round-off (1e-9,
        relative) of the lowest.
    weights : ndarray (k,)
        Tensor weights of the recovered components (tensor method), or the
        loss-normalised ``T_4`` weights ``T(u_i,u_i,u_i,u_i)`` (landscape).
    whitening : Whitening or None
    n_samples : int
    first_moment : ndarray (d,)
        ``M_1 = mean(y x)``.
    trajectories : list of ndarray (n_iter, k, d)
        Expert estimates after every iteration of each start (whitened
        landscape with ``record_trajectory=True``).
    factorial_means : ndarray (3,) or None
        ``mean((y)_j)``, j = 1..3 (count moment start only).
    """

    experts: np.ndarray
    method: str
    form: str
    noise_std: float
    order: int
    loss_history: list = field(default_factory=list)
    restart_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    best_restart: int = 0
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    whitening: Whitening | None = None
    n_samples: int = 0
    first_moment: np.ndarray | None = None
    trajectories: list = field(default_factory=list)
    factorial_means: np.ndarray | None = None


# --------------------------------------------------------------------------
# Landscape loss, whitened form: a k x k problem on the reduced tensor.
# --------------------------------------------------------------------------
def _pair_matrix(k: int, mu: float) -> np.ndarray:
    """K with L = sum_ij K_ij T(u_i,u_i,u_j,u_j): 1 off the diagonal, -mu on it."""
    return np.ones((k, k)) - (1.0 + mu) * np.eye(k)


def landscape_loss(T4: np.ndarray, U: np.ndarray, mu: float = 0.5):
    """Whitened ``L_4`` and its gradient for rows ``u_i`` of ``U`` on the sphere.

    ``L(U) = sum_{i != j} T(u_i,u_i,u_j,u_j) - mu sum_i T(u_i,u_i,u_i,u_i)`` with
    ``u_i`` normalised; ``T4`` a symmetric (k,k,k,k) tensor with positive
    weights.  Returns ``(loss, gradient)``; the gradient is with respect to the
    unnormalised rows and tangent to the sphere.
    """
    k = U.shape[0]
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    V = U / norms
    K = _pair_matrix(k, mu)
    # Y[i, j, :] = T(., v_i, v_j, v_j)
    Tjj = np.einsum("abcd,jc,jd->jab", T4, V, V)
    F = np.einsum("jab,ib->ija", Tjj, V)  # (i, j, a)
    loss = float(np.einsum("ij,ija,ia->", K, F, V))
    grad_v = 4.0 * np.einsum("ij,ija->ia", K, F)
    # chain rule through v = u/|u|: project on the tangent space
    grad = (grad_v - np.sum(grad_v * V, axis=1, keepdims=True) * V) / norms
    return loss, grad


def _sphere_gradient_descent(fun, U0, max_iter, tol, step0=0.5, iterates=None):
    """Riemannian gradient descent with Armijo backtracking and renormalisation.

    Appends every iterate to ``iterates`` when a list is given.
    """
    U = U0 / np.linalg.norm(U0, axis=1, keepdims=True)
    loss, grad = fun(U)
    history = [loss]
    if iterates is not None:
        iterates.append(U)
    step = step0
    for _ in range(max_iter):
        gnorm2 = float(np.sum(grad * grad))
        if gnorm2 <= tol**2:
            break
        while True:
            cand = U - step * grad
            cand /= np.linalg.norm(cand, axis=1, keepdims=True)
            new_loss, new_grad = fun(cand)
            if new_loss <= loss - 1e-4 * step * gnorm2 or step < 1e-12:
                break
            step *= 0.5
        decrease = loss - new_loss
        U, loss, grad = cand, new_loss, new_grad
        history.append(loss)
        if iterates is not None:
            iterates.append(U)
        step = min(step * 2.0, 10.0)
        if 0 <= decrease <= tol * max(1.0, abs(loss)) * 1e-3:
            break
    return U, np.asarray(history)


def _normalised_fourth(reduced: ReducedMomentAccumulator):
    """``sign(c_4) T_4^w`` denoised to rank k and divided by its top weight.

    The population unfolding ``sum_i lambda_i (b_i (x) b_i)(b_i (x) b_i)^T`` is
    positive semi-definite of rank k.  Sampling noise adds negative directions,
    and then ``L_4`` on the sphere prefers all ``u_i`` collapsed onto one of them
    (seen with ReLU at n = 10^6).  Keeping the top-k positive eigenpairs of the
    unfolding removes those directions; dividing by the top eigenvalue keeps
    the loss bounded below whatever the weights (DESIGN §4 pitfall 1).
    """
    k = reduced.n_experts
    T = np.sign(reduced.transforms[4].constant) * reduced.fourth_order()
    evals, evecs = np.linalg.eigh(T.reshape(k * k, k * k))
    top = evals[-1]
    if not np.isfinite(top) or top <= 0:
        raise MomentMethodUnavailable(
            "the fourth-order moment carries no positive signal: too few samples, "
            "or the data do not follow the model"
        )
    keep = evals[-k:].clip(min=0.0)
    low_rank = (evecs[:, -k:] * keep) @ evecs[:, -k:].T
    return symmetrise(low_rank.reshape(k, k, k, k)) / top


def _first_best(losses, rel=1e-9):
    """The first restart within round-off of the lowest loss.

    Restarts that reach one optimum (up to a permutation of the experts) tie
    up to round-off; taking the first of them, rather than the exact minimum,
    keeps the choice stable when the data are summed in another order (e.g.
    weighted rows against repeated ones).
    """
    low = float(np.min(losses))
    return int(np.flatnonzero(losses <= low + rel * max(1.0, abs(low)))[0])


def _landscape_whitened(reduced, n_restarts, max_iter, tol, mu, rng, record):
    T = _normalised_fourth(reduced)
    k = T.shape[0]
    results, paths = [], []
    for _ in range(n_restarts):
        U0 = rng.standard_normal((k, k))
        path = [] if record else None
        U, hist = _sphere_gradient_descent(
            lambda V: landscape_loss(T, V, mu), U0, max_iter, tol, iterates=path
        )
        results.append((U, hist))
        paths.append(path)
    losses = np.array([h[-1] for _, h in results])
    best = _first_best(losses)
    U = results[best][0]
    weights = np.einsum("abcd,ia,ib,ic,id->i", T, U, U, U, U)
    return U, [h for _, h in results], losses, best, weights, paths


# --------------------------------------------------------------------------
# Landscape loss on raw samples (the paper's form).
# --------------------------------------------------------------------------
def _raw_loss_chunk(X, w, B, K, rho):
    """Sum over a chunk of ``w S_4(x)`` contracted into ``sum_ij K_ij F_ij``, and its gradient.

    Rows of ``B`` are unit vectors, ``rho = B B^T``; uses
    ``S_4(u,u,v,v) = t_u^2 t_v^2 - t_u^2 - t_v^2 - 4 rho t_u t_v + 1 + 2 rho^2``.
    Returns (loss_sum, grad_B_sum, weight_sum) with the gradient w.r.t. ``B``
    (rows not yet projected on the sphere).
    """
    t = X @ B.T
    t2 = t * t
    wt2 = t2 * w[:, None]
    E1 = t2.T @ wt2  # sum w t_i^2 t_j^2
    m2 = wt2.sum(axis=0)  # sum w t_i^2
    C = t.T @ (t * w[:, None])  # sum w t_i t_j
    wsum = w.sum()
    kappa = K.sum(axis=1)
    loss = (
        np.sum(K * E1)
        - 2.0 * kappa @ m2
        - 4.0 * np.sum(K * rho * C)
        + wsum * np.sum(K * (1.0 + 2.0 * rho**2))
    )
    G_t = w[:, None] * (4.0 * t * (t2 @ K) - 4.0 * t * kappa - 8.0 * t @ (K * rho))
    H = -4.0 * K * C + 4.0 * wsum * K * rho
    grad = G_t.T @ X + 2.0 * H @ B
    return loss, grad


def _landscape_raw(data, q4, k, d, scale, n_samples, options, rng, span):
    mu = options["mu"]
    K = _pair_matrix(k, mu)
    batch_size = options["batch_size"]
    n_restarts, max_iter, tol = options["n_restarts"], options["max_iter"], options["tol"]

    def full_loss(B):
        rho = B @ B.T
        total_loss, total_grad = data.map_reduce(
            lambda Xb, yb, wb=None: _raw_loss_chunk(
                Xb, q4(yb) / scale if wb is None else q4(yb) * wb / scale, B, K, rho
            )
        )
        return total_loss / n_samples, total_grad / n_samples

    def project(B, grad):
        return grad - np.sum(grad * B, axis=1, keepdims=True) * B

    results = []
    for _ in range(n_restarts):
        # Random starts inside the span of the top-k eigenvectors of M_2: outside
        # it T_4 vanishes, and the flat region there stalls (stochastic) descent.
        B0 = rng.standard_normal((k, k)) @ span.T
        B0 /= np.linalg.norm(B0, axis=1, keepdims=True)
        if batch_size is None:

            def fun(B):
                loss, grad = full_loss(B)
                return loss, project(B, grad)

            B, hist = _sphere_gradient_descent(fun, B0, max_iter, tol)
        else:
            B, hist = _minibatch_descent(
                data, q4, scale, K, B0, batch_size, max_iter, options["learning_rate"], rng
            )
            # report the full-data loss at the end so restarts compare fairly
            hist = np.append(hist, full_loss(B)[0])
        results.append((B, hist))
    losses = np.array([h[-1] for _, h in results])
    best = _first_best(losses)
    return results[best][0], [h for _, h in results], losses, best


def _minibatch_descent(data, q4, scale, K, B0, batch_size, n_steps, lr, rng):
    """Projected stochastic gradient descent with a 1/sqrt(t) step decay."""
    B = B0.copy()
    history = []
    step = 0
    while step < n_steps:
        for Xc, yc, wc in data.blocks():
            perm = rng.permutation(Xc.shape[0])
            for start in range(0, Xc.shape[0], batch_size):
                idx = perm[start : start + batch_size]
                w = q4(yc[idx]) / scale
                size = len(idx)
                if wc is not None:
                    w = w * wc[idx]
                    size = max(float(wc[idx].sum()), 1e-300)
                loss, grad = _raw_loss_chunk(Xc[idx], w, B, K, B @ B.T)
                grad = grad / size
                grad -= np.sum(grad * B, axis=1, keepdims=True) * B
                B = B - lr / sqrt(1.0 + step / 100.0) * grad
                B /= np.linalg.norm(B, axis=1, keepdims=True)
                history.append(loss / size)
                step += 1
                if step >= n_steps:
                    return B, np.asarray(history)
    return B, np.asarray(history)


# --------------------------------------------------------------------------
# Tensor power method (order 3 or 4) with deflation.
# --------------------------------------------------------------------------
def _apply(T, V, order):
    """``T(I, v, ..., v)`` for every row ``v`` of ``V`` (R, k), shape (R, k): one product."""
    outer = V
    for _ in range(order - 2):
        outer = (outer[:, :, None] * V[:, None, :]).reshape(len(V), -1)
    return outer @ T.reshape(T.shape[0], -1).T


def _values(T, V, order):
    """``T(v, ..., v)`` for every row of ``V``."""
    return np.sum(_apply(T, V, order) * V, axis=1)


def _power_steps(T, V, order, n_iter, tol):
    """Power steps ``v <- T(I, v, ..., v) / ||.||`` of every row of ``V`` at once; a row
    stops once a step moves it by at most ``tol``, or maps it to zero."""
    V = V.copy()
    active = np.arange(len(V))
    for _ in range(n_iter):
        if active.size == 0:
            break
        W = V[active]
        N = _apply(T, W, order)
        norm = np.linalg.norm(N, axis=1)
        zero = norm == 0
        N = N / np.where(zero, 1.0, norm)[:, None]
        if order == 4:  # even order: power steps can flip sign
            N = np.where(np.sum(N * W, axis=1)[:, None] < 0, -N, N)
        N = np.where(zero[:, None], W, N)
        V[active] = N
        done = zero | (np.linalg.norm(N - W, axis=1) <= tol)
        active = active[~done]
    return V


def tensor_power_method(T, n_components, n_restarts=10, n_iter=100, rng=None):
    """Robust tensor power method with deflation for a symmetric order-3/4 tensor.

    Each component's restarts run their power steps together (one product per
    step for all of them).  Returns ``(V, weights)``: unit components as rows and
    their weights ``T(v, ..., v)``.
    """
    rng = random_generator(rng)
    order = T.ndim
    # work on T / max|T|: the components do not depend on the scale, and a tensor of tiny
    # entries (1e-255) would underflow the norms of the power steps to 0
    scale = float(np.max(np.abs(T))) if T.size else 0.0
    if not (np.isfinite(scale) and scale > 0):
        scale = 1.0
    T = T / scale
    k = T.shape[0]
    comps, weights = [], []
    for _ in range(n_components):
        V = rng.standard_normal((n_restarts, k))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        V = _power_steps(T, V, order, n_iter, tol=1e-12)
        vals = _values(T, V, order)
        best = int(np.argmax(np.where(np.isnan(vals), -np.inf, vals)))
        # polish the winner to rounding level
        v = _power_steps(T, V[best : best + 1], order, n_iter, tol=1e-15)[0]
        if not np.any(_apply(T, v[None], order)):
            v = np.zeros(k)  # the tensor vanishes along it: no component (callers test this)
        lam = float(_values(T, v[None], order)[0])
        comps.append(v)
        weights.append(lam * scale)
        outer = v
        for _ in range(order - 1):
            outer = np.multiply.outer(outer, v)
        T -= lam * outer
    return np.array(comps), np.array(weights)


def _choose_order(link, noise_std) -> int:
    """Order 3 unless the link's c_3 is negligible next to its natural size."""
    try:
        c3 = output_transform(link, noise_std, 3).constant
    except ValueError:
        return 4
    bound = sqrt(max(gaussian_link_moments(link)[6, 0], 1e-300) * factorial(3))
    return 3 if abs(c3) > 1e-2 * bound else 4


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------
def resolve_signs(A, first_moment, c1):
    """Fix row signs from ``M_1 = c_1 sum_i q_i a_i`` with ``q_i > 0``.

    Solves ``M_1 = A^T alpha`` by least squares; then ``sign(alpha_i / c_1)`` is
    the sign of row i.  Exact for any linearly independent experts.

    Parameters
    ----------
    A : ndarray of shape (k, d)
        Expert directions, signs unknown.
    first_moment : ndarray of shape (d,)
        ``M_1 = E[y x]`` (in the coordinates of ``A``).
    c1 : float
        First-order constant of the link's output transform; below ``1e-8``
        in absolute value (an even link) ``A`` is returned unchanged.

    Returns
    -------
    ndarray of shape (k, d)
    """
    if abs(c1) < 1e-8:
        return A  # even link: the sign is not identified
    alpha, *_ = np.linalg.lstsq(A.T, first_moment, rcond=None)
    signs = np.sign(alpha / c1)
    signs[signs == 0] = 1.0
    return A * signs[:, None]


def recover_experts(
    X: ArrayLike,
    y: ArrayLike,
    n_experts: int,
    link: str | Link = "linear",
    method: str = "landscape",
    noise_std: float | None = None,
    random_state: int | np.random.Generator | np.random.RandomState | None = None,
    *,
    return_info: bool = False,
    form: str = "whitened",
    order: int | None = None,
    n_restarts: int = 5,
    max_iter: int = 500,
    tol: float = 1e-9,
    mu: float = 0.5,
    batch_size: int | None = None,
    learning_rate: float = 0.05,
    chunk_size: int | None = None,
    record_trajectory: bool = False,
) -> np.ndarray | ExpertRecoveryResult:
    """Estimate the expert directions from cross-moments of ``(x, y)``.

    Consistent (globally, without a good initialisation) when ``x ~ N(0, I)``,
    the gating is orthogonal to the experts, intercepts are zero, the experts
    are linearly independent with unit norm and share the link and noise.

    Parameters
    ----------
    X : array-like or memory map of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_experts : int
        ``k``, at most ``n_features``.
    link : str, Link or callable, default "linear"
    method : {"landscape", "tensor"}, default "landscape"
    noise_std : float or None
        Expert noise; estimated from ``E[y^2]`` when None.
    random_state : int, RandomState, Generator or None
    return_info : bool, default False
        Return an :class:`ExpertRecoveryResult` instead of the array.
    form : {"whitened", "raw"}, default "whitened"
        Landscape only: optimise in whitened coordinates, or on raw samples.
    order : {3, 4} or None
        Tensor only: moment order; None picks 3 unless ``c_3`` is negligible.
    n_restarts : int, default 5
        Random starts (landscape) or power-method starts per component (tensor).
    max_iter : int, default 500
        Gradient steps per start (landscape) or power iterations (tensor).
    tol : float, default 1e-9
        Gradient-norm tolerance (landscape).
    mu : float, default 0.5
        Weight of the alignment term in ``L_4``.
    batch_size : int or None
        Raw landscape only: mini-batch size for stochastic gradient descent
        (None: full-batch descent with backtracking).
    learning_rate : float, default 0.05
        Raw mini-batch only: initial step.
    chunk_size : int or None
        Rows read at a time from ``X``.
    record_trajectory : bool, default False
        Whitened landscape only: keep the estimate after every iteration (in
        ``ExpertRecoveryResult.trajectories``), for convergence plots.

    Returns
    -------
    experts : ndarray of shape (n_experts, n_features), or ExpertRecoveryResult

    Examples
    --------
    >>> from moelearn import expert_error, make_moe, sample
    >>> p = make_moe(6, 2, noise_std=0.2, random_state=0)
    >>> X, y = sample(p, 20_000, random_state=1)
    >>> A = recover_experts(X, y, 2, random_state=0)
    >>> A.shape
    (2, 6)
    >>> bool(expert_error(A, p.experts) < 0.2)  # up to the order of the rows
    True
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if form not in ("whitened", "raw"):
        raise ValueError(f"form must be 'whitened' or 'raw', got {form!r}")
    link = check_link(link)
    noise_std = check_noise_std(noise_std)
    n_restarts = check_int("n_restarts", n_restarts, minimum=1)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    tol = check_real("tol", tol, minimum=0.0)
    mu = check_real("mu", mu, minimum=0.0, strict=True)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    learning_rate = check_real("learning_rate", learning_rate, minimum=0.0, strict=True)
    if order is not None and order not in (3, 4):
        raise ValueError(f"order must be 3, 4 or None, got {order!r}")
    X, y = check_Xy(X, y)
    data = Data(X, y, chunk_size)
    return recover_directions(
        data,
        n_experts,
        link,
        method,
        random_generator(random_state),
        noise_std=noise_std,
        return_info=return_info,
        form=form,
        order=order,
        n_restarts=n_restarts,
        max_iter=max_iter,
        tol=tol,
        mu=mu,
        batch_size=batch_size,
        learning_rate=learning_rate,
        record_trajectory=record_trajectory,
    )


def _check_moment_sizes(n_experts, n, d) -> int:
    """``k``, checked against ``d``; raises when ``n`` is too small for the moments."""
    k = check_n_experts(n_experts, d, moment_method=True)
    min_samples = max(10 * d, 50)
    if n < min_samples:
        raise MomentMethodUnavailable(
            f"n_samples={n} is too small to estimate the moments for n_features={d}: "
            f"need at least {min_samples}"
        )
    return k


def recover_directions(
    data,
    n_experts,
    link,
    method,
    rng,
    *,
    noise_std=None,
    return_info=False,
    form="whitened",
    order=None,
    n_restarts=5,
    max_iter=500,
    tol=1e-9,
    mu=0.5,
    batch_size=None,
    learning_rate=0.05,
    record_trajectory=False,
):
    """:func:`recover_experts` on a :class:`~moelearn.data.Data` source, options checked.

    The options and defaults are those of :func:`recover_experts`; nothing is
    validated again here, so this is the entry point of callers that already
    hold checked data (the estimator's solvers).

    Parameters
    ----------
    data : Data
        The samples (in memory or out of core; read in two passes).
    n_experts : int
    link : Link
    method : {"landscape", "tensor"}
    rng : numpy.random.Generator
    noise_std, return_info, form, order, n_restarts, max_iter, tol, mu
        As in :func:`recover_experts`.
    batch_size, learning_rate, record_trajectory
        As in :func:`recover_experts`.

    Returns
    -------
    experts : ndarray of shape (n_experts, n_features), or ExpertRecoveryResult

    Raises
    ------
    MomentMethodUnavailable
        When the moment method cannot run on these data (``k > d``, too few
        samples, a link invalid for the needed moment orders, no signal).
    """
    n, d = data.n_samples, data.n_features
    k = _check_moment_sizes(n_experts, n, d)

    # Pass 1: M_1, M_2, noise, whitening.
    first = data.map_reduce(lambda Xb, yb, wb=None: MomentAccumulator(link, d).update(Xb, yb, wb))
    sigma = first.noise_std() if noise_std is None else noise_std
    try:
        c1 = output_transform(link, sigma, 1).constant
    except ValueError:
        c1 = 0.0  # an even link: E[y x] carries no sign information

    if method == "tensor":
        use_order = order or _choose_order(link, sigma)
    else:
        use_order = 4
    for m in (2, use_order):
        try:
            output_transform(link, sigma, m)
        except ValueError as exc:
            raise MomentMethodUnavailable(str(exc)) from None

    info = dict(method=method, form=form, noise_std=sigma, order=use_order, n_samples=n)
    if method == "landscape" and form == "raw":
        q4 = output_transform(link, sigma, 4)
        m2 = np.sign(first.q2.constant) * first.second_moment
        top = np.linalg.eigvalsh(m2)[-1] / abs(first.q2.constant)
        scale = abs(q4.constant) * max(top, 1e-12)
        opts = dict(
            mu=mu,
            batch_size=batch_size,
            n_restarts=n_restarts,
            max_iter=max_iter,
            tol=tol,
            learning_rate=learning_rate,
        )
        span = first.whitening(k).eigenvectors
        A, hists, losses, best = _landscape_raw(
            data, q4, k, d, np.sign(q4.constant) * scale, data.total_weight, opts, rng, span
        )
        A = resolve_signs(A, first.first_moment, c1)
        result = ExpertRecoveryResult(
            A,
            loss_history=hists,
            restart_losses=losses,
            best_restart=best,
            first_moment=first.first_moment,
            **info,
        )
        return result if return_info else result.experts

    whitening = first.whitening(k)
    reduced = data.map_reduce(
        lambda Xb, yb, wb=None: ReducedMomentAccumulator(
            link, whitening, sigma, orders=(use_order,)
        ).update(Xb, yb, wb)
    )

    trajectories = []
    if method == "landscape":
        U, hists, losses, best, weights, paths = _landscape_whitened(
            reduced, n_restarts, max_iter, tol, mu, rng, record_trajectory
        )
        if record_trajectory:
            for path in paths:
                trajectories.append(
                    np.array(
                        [resolve_signs(whitening.unwhiten(V), first.first_moment, c1) for V in path]
                    )
                )
    else:
        T = reduced.third_order() if use_order == 3 else reduced.fourth_order()
        T = np.sign(reduced.transforms[use_order].constant) * T
        U, weights = tensor_power_method(
            T, k, n_restarts=max(n_restarts, 10), n_iter=min(max_iter, 200), rng=rng
        )
        hists, losses, best = [], weights.copy(), 0
        if not np.all(np.isfinite(U)) or np.any(np.linalg.norm(U, axis=1) < 0.5):
            # the power method returns unit rows unless the tensor vanishes along them
            raise MomentMethodUnavailable(
                f"the order-{use_order} moment tensor carries no signal for {k} experts: "
                "too few samples, features without variance, or data that do not follow "
                "the model"
            )
    A = whitening.unwhiten(U)
    if use_order == 4:
        A = resolve_signs(A, first.first_moment, c1)
    result = ExpertRecoveryResult(
        A,
        loss_history=hists,
        restart_losses=np.asarray(losses),
        best_restart=best,
        weights=np.asarray(weights),
        whitening=whitening,
        first_moment=first.first_moment,
        trajectories=trajectories,
        **info,
    )
    return result if return_info else result.experts


def recover_count_experts(
    X: ArrayLike,
    y: ArrayLike,
    n_experts: int,
    random_state: int | np.random.Generator | np.random.RandomState | None = None,
    *,
    return_info: bool = False,
    n_restarts: int = 10,
    max_iter: int = 200,
    chunk_size: int | None = None,
) -> np.ndarray | ExpertRecoveryResult:
    """Poisson experts (log link) from factorial cross-moments (DESIGN §13).

    The count transforms ``Q_2, Q_3`` of :func:`~moelearn.transforms.factorial_transform`
    give ``M_2 = sum_i q_i a_i a_i^T`` and ``T_3 = sum_i q_i a_i^(x)3`` with
    ``c_m = 1``; whitening by ``M_2`` and the tensor power method on ``T_3``
    recover the experts *with their norms* and the mixing weights ``q_i``.
    Consistent when ``x ~ N(0, I)``, the gate is orthogonal to the experts, and
    the experts share one intercept and one norm (so that the normalising
    constants ``E[(y)_j]`` are common), with ``y | x, i ~ Poisson(exp(<a_i, x> + b))``.

    Parameters
    ----------
    X : array-like or memory map of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Non-negative counts.
    n_experts : int
        ``k``, at most ``n_features``.
    random_state : int, RandomState, Generator or None
    return_info : bool, default False
        Return an :class:`ExpertRecoveryResult` (with ``weights = q`` and
        ``factorial_means``) instead of the array.
    n_restarts : int, default 10
        Power-method starts per component.
    max_iter : int, default 200
        Power iterations.
    chunk_size : int or None
        Rows read at a time from ``X``.

    Returns
    -------
    experts : ndarray of shape (n_experts, n_features), or ExpertRecoveryResult

    Examples
    --------
    >>> from moelearn import MoEParams, expert_error, make_moe, sample
    >>> base = make_moe(4, 2, random_state=1)
    >>> p = MoEParams(0.4 * base.experts, base.gating, expert_bias=[2.0, 2.0], family="poisson")
    >>> X, y = sample(p, 200_000, random_state=1)
    >>> A = recover_count_experts(X, y, 2, random_state=0)
    >>> bool(expert_error(A, p.experts) < 0.2)
    True
    """
    n_restarts = check_int("n_restarts", n_restarts, minimum=1)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    X, y = check_Xy(X, y)
    if np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError("y must hold non-negative integer counts for the count moment start")
    return recover_count_directions(
        Data(X, y, chunk_size),
        n_experts,
        random_generator(random_state),
        return_info=return_info,
        n_restarts=n_restarts,
        max_iter=max_iter,
    )


def recover_count_directions(
    data, n_experts, rng, *, return_info=False, n_restarts=10, max_iter=200
):
    """:func:`recover_count_experts` on a :class:`~moelearn.data.Data` source, options checked.

    Two passes: the factorial moments and ``M_2``, then the whitened ``T_3``.

    Raises
    ------
    MomentMethodUnavailable
        When ``k > d``, too few samples, no positive factorial moments, or no signal.
    """
    n, d = data.n_samples, data.n_features
    k = _check_moment_sizes(n_experts, n, d)
    first = data.map_reduce(
        lambda Xb, yb, wb=None: FactorialMomentAccumulator(d).update(Xb, yb, wb)
    )
    whitening = first.whitening(k)
    q3 = first.transform(3)
    reduced = data.map_reduce(
        lambda Xb, yb, wb=None: ReducedMomentAccumulator(
            "linear", whitening, 0.0, orders=(3,), transforms={3: q3}
        ).update(Xb, yb, wb)
    )
    U, weights = tensor_power_method(
        reduced.third_order(), k, n_restarts=max(n_restarts, 10), n_iter=min(max_iter, 200), rng=rng
    )
    if (
        not np.all(np.isfinite(U))
        or np.any(np.linalg.norm(U, axis=1) < 0.5)
        or np.any(weights <= 0)
    ):
        raise MomentMethodUnavailable(
            f"the order-3 count moment tensor carries no signal for {k} experts: too few "
            "samples, features without variance, or data that do not follow the model"
        )
    # whitened v_i = sqrt(q_i) P a_i are orthonormal and T_3^w = sum_i q_i^(-1/2) v_i^(x)3,
    # so q_i = weight_i^(-2) and a_i = weight_i U D^(1/2) v_i (norms included: c_3 = 1)
    A = weights[:, None] * ((U * np.sqrt(whitening.eigenvalues)) @ whitening.eigenvectors.T)
    q = 1.0 / weights**2
    result = ExpertRecoveryResult(
        A,
        method="tensor",
        form="count",
        noise_std=float("nan"),
        order=3,
        restart_losses=weights.copy(),
        weights=q,
        whitening=whitening,
        n_samples=n,
        first_moment=first.first_moment,
        factorial_means=first.factorial_means,
    )
    return result if return_info else result.experts
