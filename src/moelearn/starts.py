"""Start strategy: many cheap candidate starts, screened, the best refined (DESIGN §12).

The likelihood of a mixture of experts has many local maxima off the papers'
theory regime, and with one noise level per expert it is unbounded (an expert
collapsing on a few points with ``sigma -> 0``).  :func:`search` is the
default strategy of the estimator:

1. **Candidates** on a random subsample (the caller's ``sub``): the starts the
   caller supplies (the consistent moment start) and generated ones, cycling
   through random gate partitions (random hyperplanes of ``x``), residual
   partitions (quantiles of the residual of one global regression, tilted by a
   random direction of ``x``: the classical mixture-of-regressions start),
   k-means clusters of ``(x, y)`` and random parameter draws.  Every
   candidate is a function of the rows' values and weights and of random
   draws whose number does not depend on the rows, so a fit with integer
   sample weights equals one on rows repeated that many times.
2. **Screening**: a short EM run from each candidate, all candidates at once
   in one batched EM (:func:`_batched_em`), the noise levels tied for the
   first half (an expert cannot shrink onto a few points before the others
   have found their data), per expert for the second.
3. **Finalists**: the best screened candidates run to convergence on the
   subsample, directly and by continuation through the optimum of the nested
   shared-noise model; and the growth path (:func:`_grow_by_splits`), which
   grows one expert to ``k`` by splitting one expert at a time.
4. **Moves**: remove-and-split moves (split-and-merge EM in spirit) from the
   best distinct finalists, as long as one raises the likelihood (skipped
   when every finalist reached one optimum).
5. The winner is refined on all the data: at large ``n`` the full data see
   about one refinement.  When the finalists disagree, the distinct ones
   are refined on four times the subsample's rows, the best three of them on
   all the data, and the best there wins: with ``k (d + 1)`` coefficients
   on a few thousand rows, the subsample can prefer an optimum with a sharp
   expert on a few of its rows.

A component is **collapsed** when it explains fewer samples (sum of its
responsibilities, weighted by the sample weights) than its expert has
coefficients plus one, so that it can interpolate them, or when its noise
level sits at the floor.  Collapsed fits
rank below every fit without a collapsed component.

For a non-linear link the generated candidates are random parameter draws
screened by the sequential EM of :mod:`moelearn.refine` (the batched engine
solves linear least squares).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._progress import report
from ._threads import blas_threads
from .data import Data
from .model import MoEParams
from .refine import FitResult, maximize_likelihood, random_params

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


class _Screened(NamedTuple):
    """A candidate after screening: its shared-noise state and its own."""

    name: str
    shared: MoEParams
    shared_loglik: float
    params: MoEParams
    loglik: float
    collapsed: bool


def responsibilities(data: Data, params: MoEParams) -> np.ndarray:
    """Posterior expert probabilities, shape (n_experts, n_samples), for in-memory data."""
    return np.concatenate([params.posterior(Xb, yb).T for Xb, yb in data], axis=1)


def collapsed_components(
    data: Data, params: MoEParams, noise_floor: float, n_expert_params: int
) -> np.ndarray:
    """Which components are collapsed (boolean, one per expert); see the module notes."""
    share = data.map_reduce(
        lambda Xb, yb, wb=None: (
            params.posterior(Xb, yb).sum(axis=0) if wb is None else wb @ params.posterior(Xb, yb)
        )
    )
    at_floor = params.noise_vector <= 1.001 * noise_floor
    return (share < n_expert_params + 1) | at_floor


def _one_hot(labels, k, smooth=0.1):
    post = np.full((k, labels.size), smooth / k)
    post[labels, np.arange(labels.size)] += 1.0 - smooth
    return post


def _partition(kind, X, y, w, k, rng, order=None):
    """Hard labels of the rows of (X, y) (standardised, weights ``w`` or None) for one candidate.

    Each is a function of the rows' values and weights and of random draws whose
    number does not depend on the rows (DESIGN §12): ``order`` is a canonical
    order of the rows (:func:`_canonical_order`) for the k-means seeding.
    """
    n, d = X.shape
    if kind == "gate":
        W = rng.standard_normal((k, d))
        c = 0.5 * rng.standard_normal(k)
        return np.argmax(X @ W.T + c, axis=1)
    if kind == "residual":
        design = np.hstack([X, np.ones((n, 1))])
        if w is None:
            beta = np.linalg.lstsq(design, y, rcond=None)[0]
        else:
            root = np.sqrt(w)
            beta = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
        resid = y - design @ beta
        spread = np.sqrt(np.average((resid - np.average(resid, weights=w)) ** 2, weights=w))
        v = rng.standard_normal(d) / np.sqrt(d)
        score = resid / max(float(spread), 1e-12) + rng.uniform(0, 1) * (X @ v)
        levels = np.sort(rng.dirichlet(np.full(k, 4.0)).cumsum()[:-1])
        edges = np.quantile(score, levels, weights=w, method="inverted_cdf")
        return np.searchsorted(edges, score)
    # kmeans on (x, y), ten Lloyd iterations from k rows drawn by weight
    Z = np.hstack([X, y[:, None] * np.sqrt(d)])
    return _kmeans_labels(Z, w, k, rng, _canonical_order(Z) if order is None else order)


def _canonical_order(Z):
    """Row order by value (lexicographic): equal rows are adjacent, whatever their positions."""
    return np.lexsort(Z.T[::-1])


def _kmeans_labels(Z, w, k, rng, order, n_iter=10):
    """Weighted Lloyd iterations from ``k`` rows drawn with probability proportional to weight.

    The rows are drawn by inverting the cumulative weight in the canonical
    ``order`` (a zero-weight row is never drawn), and every step is a function
    of the rows' values and weights; an empty cluster keeps its centre.
    (:func:`scipy.cluster.vq.kmeans2` takes no weights.)
    """
    n = Z.shape[0]
    cum = np.cumsum(np.ones(n) if w is None else w[order])
    picks = np.searchsorted(cum, rng.uniform(0.0, cum[-1], k), side="right")
    centres = Z[order[np.minimum(picks, n - 1)]]
    weights = np.ones(n) if w is None else w
    rows = np.arange(n)
    member = np.zeros((k, n))
    labels = np.zeros(n, dtype=np.intp)
    for _ in range(n_iter):
        # nearest centre: argmin of |c|^2 - 2 <z, c> (|z|^2 is common to a row)
        labels = np.argmin(np.sum(centres**2, axis=1) - 2.0 * (Z @ centres.T), axis=1)
        member[:] = 0.0
        member[labels, rows] = weights
        mass = np.bincount(labels, weights=weights, minlength=k)
        full = mass > 0
        centres[full] = (member[full] @ Z) / mass[full, None]
    return labels


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


_HALF_LOG_2PI = 0.5 * np.log(2.0 * np.pi)


def _stack(params_list, fit_intercept):
    """(C, k, q) expert and gate coefficients and (C, k) noise of a list of MoEParams."""
    B = np.stack(
        [
            np.hstack([p.experts, p.expert_bias[:, None]]) if fit_intercept else p.experts
            for p in params_list
        ]
    )
    G = np.stack(
        [
            np.hstack([p.gating, p.gating_bias[:, None]]) if fit_intercept else p.gating
            for p in params_list
        ]
    )
    S = np.stack([p.noise_vector for p in params_list])
    return B, G, S


def _unstack(B, G, S, c, d, link, per_expert):
    if B.shape[2] > d:
        experts, expert_bias, gating, gating_bias = B[c, :, :d], B[c, :, d], G[c, :, :d], G[c, :, d]
    else:
        experts, expert_bias, gating, gating_bias = B[c], None, G[c], None
    noise = S[c].copy() if per_expert else float(np.sqrt(np.mean(S[c] ** 2)))
    return MoEParams(
        experts.copy(),
        gating.copy(),
        None if expert_bias is None else expert_bias.copy(),
        None if gating_bias is None else gating_bias.copy(),
        noise,
        link,
    )


@functools.cache
def _upper(q):
    """Row and column indices of the upper triangle of a q x q matrix (read-only)."""
    i, j = np.triu_indices(q)
    i.flags.writeable = j.flags.writeable = False
    return i, j


def _pair_products(Xt, w=None):
    """(n, q (q + 1) / 2) products of the design's column pairs ``i <= j``, weighted by ``w``.

    A weighted Gram matrix is symmetric: one GEMM with these columns forms its
    upper triangle at about half the cost of all ``q**2`` products.
    """
    i, j = _upper(Xt.shape[1])
    P = Xt[:, i] * Xt[:, j]
    if w is not None:
        P *= w[:, None]
    return P


def _symmetric(V, q):
    """(..., q (q + 1) / 2) upper-triangle entries as (..., q, q) symmetric matrices."""
    i, j = _upper(q)
    out = np.empty(V.shape[:-1] + (q, q))
    out[..., i, j] = V
    out[..., j, i] = V
    return out


def _log_gate(G, Xt, out=None, scratch=None):
    """(C, k, n) log gate probabilities of C gates.

    ``out`` (C, k, n) receives them and ``scratch``, a pair of (C, k, n) and
    (C, 1, n) arrays, holds the intermediates: the screening loop reuses its
    buffers instead of allocating arrays of megabytes at every step (whose
    page faults cost more than the arithmetic).
    """
    C, k, q = G.shape
    n = Xt.shape[0]
    if out is None:
        out = np.empty((C, k, n))
    if scratch is None:
        scratch = (np.empty((C, k, n)), np.empty((C, 1, n)))
    np.matmul(G.reshape(C * k, q), Xt.T, out=out.reshape(C * k, n))
    top = np.max(out, axis=1, keepdims=True, out=scratch[1])
    out -= top
    total = np.sum(np.exp(out, out=scratch[0]), axis=1, keepdims=True, out=scratch[1])
    out -= np.log(total, out=total)
    return out


class _Buffers:
    """Work arrays of the batched EM for C candidates, k experts and n rows."""

    def __init__(self, C, k, n):
        self.logp = np.empty((C, k, n))
        self.J = np.empty((C, k, n))
        self.post = np.empty((C, k, n))
        self.trial = np.empty((C, k, n))
        self.scratch = (np.empty((C, k, n)), np.empty((C, 1, n)))
        self.small = np.empty((C, 1, n))
        self.weighted = np.empty((C, k, n))
        self.p = np.empty((C, k, n))
        self.diff = np.empty((C, max(k - 1, 1), n))
        # the gate Hessian's weights, one row per block (a, b), a <= b < k - 1
        self.W = np.empty((C, max(k * (k - 1) // 2, 1), n))

    def gate_scratch(self, c):
        return self.scratch[0][:c], self.scratch[1][:c]


def _batched_em(Xt, y, B, G, S, post, n_iter, n_tied, noise_floor, gate_steps=2, w=None):
    """EM for C linear mixtures of experts at once (the screening engine).

    ``Xt`` is (n, q) (the design, with a column of ones for intercepts), ``B``,
    ``G`` (C, k, q) and ``S`` (C, k) the candidates; ``post`` (C, k, n), when
    given, replaces the first E-step.  The first ``n_tied`` iterations tie the
    noise levels.  The gate takes ``gate_steps`` damped Newton steps per
    iteration (:func:`_gate_newton_steps`).  ``w``: sample weights of the
    rows (None: all one).

    Returns ``(B, G, S, loglik_tied, loglik, post)``; the log-likelihoods are
    (weighted) totals, evaluated at the start of the last tied and the last
    iteration; ``post`` is not weighted.
    """
    C, k, q = B.shape
    n = y.size
    B, G, S = B.copy(), G.copy(), S.copy()
    buf = _Buffers(C, k, n)
    given = post is not None
    if given:
        buf.post[...] = post
    post = buf.post
    pairs = _pair_products(Xt, w)  # (n, q (q + 1) / 2), weighted
    if w is None:
        total, Xw = n, Xt
    else:
        total, Xw = float(w.sum()), Xt * w[:, None]
    gram = Xw.T @ Xt
    Xy = Xw * y[:, None]
    # The ridge sets the coefficients along directions the rows do not span (n < q, or
    # collinear columns) to 0; at 1e-10 the condition number 1e10 left them at
    # round-off times 1e10 (1e-6), so predictions off the rows changed with the order
    # of the rows.  The winner is refined without it.
    ridge = 1e-8 * (np.trace(gram) / q + 1e-300) * np.eye(q)
    ll_tied = ll = np.full(C, -np.inf)
    J = buf.J
    # the log gate probabilities at G, kept current by the gate steps
    logp = _log_gate(G, Xt, buf.logp, buf.scratch)
    for it in range(n_iter + 1):
        if it > 0 or not given:
            # J = log gate + log N(y | expert, S^2), as few passes over (C, k, n) as can be
            np.matmul(B.reshape(C * k, q), Xt.T, out=J.reshape(C * k, n))
            np.subtract(y, J, out=J)
            np.square(J, out=J)
            J *= (-0.5 / S**2)[:, :, None]
            J += logp
            J -= (np.log(S) + _HALF_LOG_2PI)[:, :, None]
            top = np.max(J, axis=1, keepdims=True, out=buf.small)
            J -= top
            np.exp(J, out=post)
            sums = np.sum(post, axis=1, keepdims=True, out=buf.scratch[1])
            post /= sums
            lse = np.log(sums, out=sums)
            lse += top
            ll = lse[:, 0, :].sum(axis=1) if w is None else lse[:, 0, :] @ w
            if it == n_tied:
                ll_tied = ll.copy()
        if it == n_iter:
            break
        # experts: weighted least squares (a lost component keeps its coefficients)
        wsum = post.sum(axis=2) if w is None else post @ w
        A = _symmetric(post.reshape(C * k, n) @ pairs, q).reshape(C, k, q, q) + ridge
        rhs = (post.reshape(C * k, n) @ Xy).reshape(C, k, q)
        alive = wsum > 1e-8 * total
        B[alive] = np.linalg.solve(A[alive], rhs[alive][:, :, None])[:, :, 0]
        np.matmul(B.reshape(C * k, q), Xt.T, out=J.reshape(C * k, n))
        np.subtract(y, J, out=J)
        np.square(J, out=J)
        if w is not None:
            J *= w
        sq = np.einsum("ckn,ckn->ck", post, J)
        if it < n_tied:
            S = np.repeat(np.sqrt(sq.sum(axis=1, keepdims=True) / total), k, axis=1)
        else:
            S = np.where(alive, np.sqrt(sq / np.maximum(wsum, 1e-300)), S)
        S = np.maximum(S, noise_floor)
        # gate: damped Newton steps on the soft-label logit, the last expert the reference
        if k > 1:
            G = _gate_newton_steps(G, post, Xt, pairs, gate_steps, w, logp, buf)
    return B, G, S, ll_tied, ll, post


# Remove-and-split moves tried per round (a random subset when k (k - 1) * 2 is larger).
_MAX_MOVES_PER_ROUND = 24
# Best screened moves of a round that are refined.
_MOVE_REFINES = 1
# Distinct finalists refined on all the data when the finalists disagree, chosen by
# refinements on _CHECK_ROWS times the subsample's rows (DESIGN §12).
_FULL_DATA_FINALISTS = 3
_CHECK_ROWS = 4


def _gate_newton_steps(G, post, Xt, pairs, n_steps, w, logp, buf):
    """Damped Newton steps of C soft-label multinomial logits at once.

    The last expert is the reference.  Each step is halved, candidate by
    candidate, until the objective does not increase (a candidate with no such
    step keeps its gate).  ``pairs`` holds the (weighted) products of the
    design's column pairs (:func:`_pair_products`), ``logp`` the log gate
    probabilities at ``G`` (updated in place with ``G``) and ``buf`` the work
    arrays (:class:`_Buffers`).
    """
    C, k, q = G.shape
    m = k - 1
    if w is not None:
        post = np.multiply(post, w, out=buf.weighted)
    f = -np.einsum("ckn,ckn->c", post, logp)
    p = np.exp(logp, out=buf.p)
    a, b = _upper(m)
    eye = np.eye(m * q)
    diff = buf.diff
    W = buf.W
    for _ in range(n_steps):
        np.subtract(post[:, :m], p[:, :m] if w is None else p[:, :m] * w, out=diff)
        grad = (diff.reshape(C * m, -1) @ Xt).reshape(C, m * q)
        # the Hessian's (a, b) block: sum_n (delta_ab p_a - p_a p_b) x x^T, for a <= b
        for i, (ai, bi) in enumerate(zip(a, b, strict=True)):
            np.multiply(p[:, ai], p[:, bi], out=W[:, i])
            if ai == bi:
                np.subtract(p[:, ai], W[:, i], out=W[:, i])
            else:
                np.negative(W[:, i], out=W[:, i])
        blocks = _symmetric((W.reshape(C * a.size, -1) @ pairs).reshape(C, a.size, -1), q)
        # the blocks straight into the (C, m q, m q) layout (each block is symmetric)
        H = np.empty((C, m, q, m, q))
        for i, (ai, bi) in enumerate(zip(a, b, strict=True)):
            H[:, ai, :, bi, :] = blocks[:, i]
            if ai != bi:
                H[:, bi, :, ai, :] = blocks[:, i]
        H = H.reshape(C, m * q, m * q)
        H += (1e-8 * (np.trace(H, axis1=1, axis2=2) / (m * q) + 1e-12))[:, None, None] * eye
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0].reshape(C, m, q)
        # halve the step of the candidates whose objective rose; only they are re-evaluated
        todo = np.arange(C)
        t = 1.0
        for _ in range(12):
            c = todo.size
            G_try = G[todo].copy()
            G_try[:, :m] += t * step[todo]
            lp = _log_gate(G_try, Xt, buf.trial[:c], buf.gate_scratch(c))
            f_try = -np.einsum("ckn,ckn->c", post if c == C else post[todo], lp)
            ok = f_try <= f[todo]
            done = todo[ok]
            G[done], f[done] = G_try[ok], f_try[ok]
            if c == C and ok.all():
                np.copyto(logp, lp)
                np.exp(lp, out=p)
            elif done.size:
                logp[done] = lp[ok]
                p[done] = np.exp(logp[done])
            todo = todo[~ok]
            if not todo.size:
                break
            t *= 0.5
    return G


def search(
    data: Data,
    sub: Data,
    n_experts,
    link,
    *,
    starts=(),
    n_candidates=10,
    screen_iter=20,
    n_finalists=3,
    per_expert_noise=True,
    free,
    fit_intercept=True,
    refine="lbfgs",
    max_iter=1000,
    tol=1e-8,
    noise_floor=1e-6,
    max_moves=5,
    n_move_starts=8,
    n_grow=4,
    trusted=None,
    random_state,
):
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
        Rounds of remove-and-split moves (0: none).
    n_move_starts : int
        Distinct finalists the moves start from.
    n_grow : int
        Split starts refined per level of the growth path (0: no growth path).
    trusted : str or None
        The name of a start in ``starts`` whose basin theory identifies as the
        global maximum's (the moment start on Gaussian inputs).  It is always a
        finalist, and when every finalist ends at its optimum the growth path
        is skipped (DESIGN §12).
    random_state : numpy.random.Generator

    Returns
    -------
    StartSearch
    """
    with blas_threads(sub.n_features * n_experts):
        return _search(
            data,
            sub,
            n_experts,
            link,
            starts=starts,
            n_candidates=n_candidates,
            screen_iter=screen_iter,
            n_finalists=n_finalists,
            per_expert_noise=per_expert_noise,
            free=free,
            fit_intercept=fit_intercept,
            refine=refine,
            max_iter=max_iter,
            tol=tol,
            noise_floor=noise_floor,
            max_moves=max_moves,
            n_move_starts=n_move_starts,
            n_grow=n_grow,
            trusted=trusted,
            random_state=random_state,
        )


def _search(
    data,
    sub,
    n_experts,
    link,
    *,
    starts,
    n_candidates,
    screen_iter,
    n_finalists,
    per_expert_noise,
    free,
    fit_intercept,
    refine,
    max_iter,
    tol,
    noise_floor,
    max_moves,
    n_move_starts,
    n_grow,
    trusted,
    random_state,
):
    rng = random_state
    k = n_experts
    d_params = sub.n_features + (1 if fit_intercept else 0)
    if link.is_linear:
        screened = _screen_batched(
            sub,
            starts,
            n_candidates,
            k,
            link,
            per_expert_noise,
            noise_floor,
            fit_intercept,
            screen_iter,
            d_params,
            rng,
        )
    else:
        named = list(starts) + [
            ("random", random_params(sub.n_features, k, link, 1.0, rng, per_expert_noise))
            for _ in range(n_candidates)
        ]
        screened = []
        half = max(screen_iter // 2, 1)
        for name, start in named:
            tied = _quiet(
                maximize_likelihood,
                sub,
                _shared(start),
                free=free,
                method="em",
                per_expert_noise=False,
                max_iter=half,
                tol=0.0,
                noise_floor=noise_floor,
                gating_steps=5,
            )
            run = tied
            if per_expert_noise:
                run = _quiet(
                    maximize_likelihood,
                    sub,
                    _per_expert(tied.params),
                    free=free,
                    method="em",
                    per_expert_noise=True,
                    max_iter=screen_iter - half,
                    tol=0.0,
                    noise_floor=noise_floor,
                    gating_steps=5,
                )
            bad = bool(np.any(collapsed_components(sub, run.params, noise_floor, d_params)))
            screened.append(
                _Screened(
                    name,
                    _shared(tied.params),
                    tied.log_likelihood,
                    run.params,
                    run.log_likelihood,
                    bad,
                )
            )
    report(f"start search: {len(screened)} candidates screened on {sub.n_samples:,} rows")
    same = sub is data
    sub_tol = tol if same else max(tol, 1e-7)

    def refined(start, on=sub, per_expert=per_expert_noise, quiet=True):
        """The start refined to convergence, and whether it has a collapsed component."""
        run = _quiet if quiet else (lambda fn, *a, **kw: fn(*a, **kw))
        fit = run(
            maximize_likelihood,
            on,
            start,
            free=free,
            method=refine,
            per_expert_noise=per_expert,
            max_iter=max_iter,
            tol=tol if on is data else sub_tol,
            noise_floor=noise_floor,
        )
        return fit, bool(np.any(collapsed_components(on, fit.params, noise_floor, d_params)))

    # finalists: the best screened candidates of the model itself, run directly...
    by_model = _ranked(screened, lambda c: (c.collapsed, -c.loglik))
    paths = [(c.name, c.params) for c in by_model[:n_finalists]]
    if trusted is not None and all(name != trusted for name, _ in paths):
        paths += [(c.name, c.params) for c in screened if c.name == trusted][:1]
    if per_expert_noise:
        # ... and the best of the nested shared-noise model (bounded, smoother), run to
        # its optimum first: a continuation from the simpler model
        by_tied = _ranked(screened, lambda c: (False, -c.shared_loglik))
        for c in by_tied[:n_finalists]:
            tied, _ = refined(c.shared, per_expert=False)
            paths.append((f"{c.name} via shared noise", _per_expert(tied.params)))
    finals = []
    for label, start in paths:
        fit, bad = refined(start)
        finals.append((bad, -fit.log_likelihood, label, fit))
    # the trusted start (consistent in the theory regime) and every other finalist at one
    # optimum: the landscape the starts saw has one basin, the one theory points to
    settled = any(label == trusted for *_, label, _ in finals) and _one_optimum(finals)
    # With fewer rows than k (d + 1) parameters plus one per expert (UnidentifiableWarning),
    # some expert has no samples of its own: the growth path and the moves, built to find a
    # small sharp expert that the starts missed, look for what these rows cannot identify.
    identified = k * (d_params + 1) <= data.n_samples
    if n_grow and k > 1 and link.is_linear and identified and not settled:
        # ... and the path that grows the model one expert at a time by splits
        grown = _grow_by_splits(
            sub,
            k,
            link,
            refined,
            per_expert_noise,
            fit_intercept,
            noise_floor,
            screen_iter,
            n_grow,
            rng,
        )
        for bad, fit in grown:
            finals.append((bad, -fit.log_likelihood, "split growth", fit))
    finals = _ranked(finals, lambda t: (t[0], t[1]))
    # every finalist (the growth path's included) at one optimum, none collapsed: the
    # landscape the starts saw has one basin, and the moves (built to leave one) are skipped
    agree = _one_optimum(finals)
    if max_moves and k > 1 and link.is_linear and identified and not agree:
        # remove-and-split moves from the best distinct finalists
        improved = []
        for bad, _, name, fit in _distinct(finals)[:n_move_starts]:
            fit, bad, moved = _improve_by_moves(
                sub,
                fit,
                bad,
                refined,
                per_expert_noise,
                fit_intercept,
                noise_floor,
                screen_iter,
                max_moves,
                rng,
            )
            improved.append(
                (bad, -fit.log_likelihood, name + (" + split moves" if moved else ""), fit)
            )
        finals = _ranked(improved + finals, lambda t: (t[0], t[1]))
    bad, _, name, fit = finals[0]
    report(f"start search: {len(finals)} finalists run to convergence; best there: {name}")
    if not same:
        # rows the subsample did not see judge the finalists when they disagree
        compare = not agree and data.n_samples > sub.n_samples
        fit, bad, name = _refine_on_all(data, sub, finals, compare, refined, rng)
    summary = [(c.name, float(c.loglik)) for c in screened]
    return StartSearch(fit, name, len(screened), summary, bad)


def _refine_on_all(data, sub, finals, compare, refined, rng):
    """The best finalist on all the data: ``(fit, collapsed, name)``.

    With ``k (d + 1)`` coefficients on a few thousand rows the subsample can
    rank first an optimum with a sharp expert on a few of its rows over the
    one all the data prefer, and the likelihood of the subsample's optima on
    other rows does not tell them apart (each is fitted to the subsample's
    noise): only refined on more rows do they separate.  With ``compare``
    (the finalists disagree and the data have rows the subsample lacks), the
    distinct finalists (none collapsed on the subsample, unless the best is)
    are refined on ``_CHECK_ROWS`` times the subsample's rows drawn from the
    data (when there are more of them than ``_FULL_DATA_FINALISTS``), the best
    ``_FULL_DATA_FINALISTS`` of those are refined on all the data, and the
    best wins.  The warnings of the winner's refinement are the ones raised.
    """
    pool = [finals[0]]
    if compare:
        # the collapsed ones (ranked last) only when the best is collapsed too
        distinct = _distinct([item for item in finals if finals[0][0] or not item[0]])
        size = _CHECK_ROWS * sub.n_samples
        if len(distinct) > _FULL_DATA_FINALISTS and data.n_samples > size:
            rows = np.sort(rng.choice(data.n_samples, size, replace=False))
            Xc, yc, wc = data.weighted_rows(rows)
            check = Data(Xc, yc, n_experts=finals[0][3].params.n_experts, sample_weight=wc)
            scored = []
            for item in distinct:
                fit, bad = refined(item[3].params, on=check)
                scored.append((bad, -fit.log_likelihood, item))
            distinct = [t[2] for t in _ranked(scored, lambda t: (t[0], t[1]))]
        pool = distinct[:_FULL_DATA_FINALISTS]
    outcomes = []
    for _, _, name, fit in pool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            full, bad = refined(fit.params, on=data, quiet=False)
        outcomes.append((bad, -full.log_likelihood, name, full, caught))
    bad, _, name, fit, caught = _ranked(outcomes, lambda t: (t[0], t[1]))[0]
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=3)
    return fit, bad, name


def _distinct(finals):
    """The ranked ``(collapsed, cost, name, fit)`` finals, one per optimum (the first)."""
    out = []
    for item in finals:
        if not any(_same_optimum(item[1], other[1]) for other in out):
            out.append(item)
    return out


def _one_optimum(finals):
    """Whether finalists ``(collapsed, -loglik, name, fit)`` share one optimum, none collapsed."""
    return all(not bad and _same_optimum(finals[0][1], negll) for bad, negll, _, _ in finals)


def _same_optimum(negll, other):
    """Whether two refined fits' costs (negative mean log-likelihoods) are one optimum."""
    return abs(negll - other) <= 1e-6 * max(1.0, abs(negll))


def _move_responsibilities(post, resid, X, remove, split, kind, rng, sample_weight=None):
    """Responsibilities after removing expert ``remove`` and splitting expert ``split``.

    The removed expert's samples go to the others in proportion to their
    responsibilities; the split expert's samples are divided between it and
    the freed slot by the sign of its residual or by a random hyperplane of
    ``x`` through their weighted mean (responsibilities times sample weights).
    """
    new = np.delete(post, remove, axis=0)
    new /= np.maximum(new.sum(axis=0), 1e-300)
    new = np.insert(new, remove, 0.0, axis=0)
    w = new[split]
    mass = w if sample_weight is None else w * sample_weight
    if kind == "residual":
        side = resid[split] > np.average(resid[split], weights=mass + 1e-300)
    else:
        v = rng.standard_normal(X.shape[1])
        proj = X @ v
        side = proj > np.average(proj, weights=mass + 1e-300)
    new[remove] = w * side
    new[split] = w * ~side
    return new


def _improve_by_moves(
    sub, fit, bad, refined, per_expert, fit_intercept, noise_floor, screen_iter, max_moves, rng
):
    """Remove-and-split moves (in the spirit of split-and-merge EM) until none improves.

    ``refined(start)`` refines a start on ``sub`` and says whether it collapsed.
    """
    k = fit.params.n_experts
    moved = False
    for _ in range(max_moves):
        params = fit.params
        post = responsibilities(sub, params)
        mu = params.link_function(params.experts @ sub.X.T + params.expert_bias[:, None])
        resid = sub.y - mu
        moves = [
            (remove, split, kind)
            for remove in range(k)
            for split in range(k)
            if split != remove
            for kind in ("residual", "gate")
        ]
        if len(moves) > _MAX_MOVES_PER_ROUND:
            pick = rng.choice(len(moves), _MAX_MOVES_PER_ROUND, replace=False)
            moves = [moves[i] for i in np.sort(pick)]
        posts = [
            _move_responsibilities(post, resid, sub.X, remove, split, kind, rng, sub.w)
            for remove, split, kind in moves
        ]
        trials = _run_batched(
            sub, params, posts, per_expert, noise_floor, fit_intercept, screen_iter
        )
        improved = False
        for start in trials[:_MOVE_REFINES]:
            cand, cand_bad = refined(start)
            gain = cand.log_likelihood - fit.log_likelihood
            if (not cand_bad or bad) and (
                gain > 1e-6 * max(1.0, abs(fit.log_likelihood)) or (bad and not cand_bad)
            ):
                fit, bad, improved, moved = cand, cand_bad, True, True
                break
        if not improved:
            break
    return fit, bad, moved


# Ways each expert is split when the model grows by one expert (the moves' two kinds).
_GROW_KINDS = ("residual", "gate", "gate")


def _grow_by_splits(
    sub, k, link, refined, per_expert, fit_intercept, noise_floor, screen_iter, n_refine, rng
):
    """Grow the model from one expert to ``k`` by splitting one expert at a time.

    Level ``j`` splits every expert of the best ``(j - 1)``-expert fit in turn
    (by the sign of its residual, or by two random hyperplanes of ``x``
    through its samples: :func:`_move_responsibilities` with the new expert
    as the freed slot; a random ``_MAX_MOVES_PER_ROUND`` of these splits
    when there are more), runs one batched short EM on all these partitions,
    and refines the ``n_refine`` best; the best of them is the next level's
    base.  One expert is weighted least squares on all rows.  A continuation
    from the nested ``(j - 1)``-expert model, in the spirit of greedy EM for
    mixtures (Vlassis & Likas 2002), it reaches optima where a small, sharp
    component sits inside a larger one, which whole-model starts seldom find.

    Returns the refined ``k``-expert fits as ``(collapsed, FitResult)``.
    """
    X, y, w = sub.X, sub.y, sub.w
    n, d = X.shape
    design = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    root = np.ones(n) if w is None else np.sqrt(w)
    beta = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
    post = np.ones((1, n))
    resid = (y - design @ beta)[None, :]
    fits = []
    for j in range(2, k + 1):
        grown = np.vstack([post, np.zeros((1, n))])
        resid = np.vstack([resid, np.zeros((1, n))])
        splits = [(split, kind) for split in range(j - 1) for kind in _GROW_KINDS]
        if len(splits) > _MAX_MOVES_PER_ROUND:
            # as many split starts per level as moves per round: the growth path's cost grows
            # with the levels (k) and the experts' size, not with k squared split starts
            pick = rng.choice(len(splits), _MAX_MOVES_PER_ROUND, replace=False)
            splits = [splits[i] for i in np.sort(pick)]
        posts = [
            _move_responsibilities(grown, resid, X, j - 1, split, kind, rng, w)
            for split, kind in splits
        ]
        like = MoEParams(np.zeros((j, d)), np.zeros((j, d)), noise_std=np.ones(j), link=link)
        trials = _run_batched(sub, like, posts, per_expert, noise_floor, fit_intercept, screen_iter)
        fits = []
        for start in trials[:n_refine]:
            fit, bad = refined(start)
            fits.append((bad, -fit.log_likelihood, fit))
        fits = _ranked(fits, lambda t: (t[0], t[1]))
        params = fits[0][2].params
        post = responsibilities(sub, params)
        resid = y - (params.experts @ X.T + params.expert_bias[:, None])
    return [(bad, fit) for bad, _, fit in fits]


def _screen_batched(
    sub,
    starts,
    n_candidates,
    k,
    link,
    per_expert,
    noise_floor,
    fit_intercept,
    screen_iter,
    d_params,
    rng,
):
    """Candidates and their screening runs, all through one batched EM.

    Returns a :class:`_Screened` per candidate (mean log-likelihoods).
    """
    X, y, w = sub.X, sub.y, sub.w
    n, d = X.shape
    total = sub.total_weight
    Xt = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    order = _canonical_order(np.hstack([X, y[:, None]]))  # for the k-means seeding
    names, posts, inits = [], [], []
    for name, params in starts:
        names.append(name)
        inits.append(params)
        posts.append(responsibilities(sub, params))
    zero = MoEParams(np.zeros((k, d)), np.zeros((k, d)), noise_std=np.ones(k), link=link)
    for i in range(n_candidates):
        kind = _KINDS[i % len(_KINDS)]
        names.append(kind)
        if kind == "random":
            params = random_params(d, k, link, 1.0, rng, per_expert)
            inits.append(params)
            posts.append(responsibilities(sub, params))
        else:
            inits.append(zero)
            posts.append(_one_hot(_partition(kind, X, y, w, k, rng, order), k))
    B, G, S = _stack(inits, fit_intercept)
    half = max(screen_iter // 2, 1) if per_expert else screen_iter
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        B, G, S, ll_tied, ll, post = _batched_em(
            Xt, y, B, G, S, np.stack(posts), screen_iter, half, noise_floor, w=w
        )
    # the shared-noise candidates: the state when the noise levels were untied
    share = post.sum(axis=2) if w is None else post @ w
    collapsed = (share < d_params + 1) | (S <= 1.001 * noise_floor)
    out = []
    for c, name in enumerate(names):
        params = _unstack(B, G, S, c, d, link, per_expert)
        shared = _shared(params)
        out.append(
            _Screened(
                name,
                shared,
                float(ll_tied[c]) / total,
                params,
                float(ll[c]) / total,
                bool(np.any(collapsed[c])),
            )
        )
    return out


def _run_batched(sub, like, posts, per_expert, noise_floor, fit_intercept, n_iter):
    """Short EM runs from responsibilities, batched; the parameters, best first."""
    X, y = sub.X, sub.y
    n, d = X.shape
    Xt = np.hstack([X, np.ones((n, 1))]) if fit_intercept else X
    B, G, S = _stack([like] * len(posts), fit_intercept)
    n_tied = 0 if per_expert else n_iter
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        B, G, S, _, ll, _ = _batched_em(
            Xt, y, B, G, S, np.stack(posts), n_iter, n_tied, noise_floor, w=sub.w
        )
    order = _ranked(list(range(len(posts))), lambda c: (False, -float(ll[c])))
    return [_unstack(B, G, S, c, d, like.link, per_expert) for c in order]


def _ranked(items, key, rel=1e-9):
    """``items`` sorted by ``key(item) = (bad, cost)``, round-off ties kept in input order.

    Costs within ``rel`` (relative) of the previous one in sorted order are
    tied: equivalent optima (the same fit with its experts permuted) reached
    from different starts then rank by their start, not by round-off, so the
    choice does not change when the data are summed in another order (e.g.
    weighted rows against repeated ones).
    """
    keys = [key(item) for item in items]
    order = sorted(range(len(items)), key=lambda i: keys[i])
    group = [0] * len(items)
    for prev, i in zip(order, order[1:], strict=False):
        (bad_p, cost_p), (bad, cost) = keys[prev], keys[i]
        step = bad != bad_p or cost - cost_p > rel * max(1.0, abs(cost))
        group[i] = group[prev] + int(step)
    return [items[i] for i in sorted(range(len(items)), key=lambda i: (group[i], i))]
