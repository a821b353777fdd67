"""The likelihood engine for any family of experts and separate gate and expert covariates.

The model (DESIGN §13): the gate ``p_i(z) = softmax_i(<v_i, z>)`` on the gate
design ``z = (1, x_G)`` and expert ``i`` with density ``f(y | eta_i, phi_i)``
(a :class:`~moelearn.families.Family`) on the expert design ``u = (1, x_E)``,
``eta_i = <b_i, u>``.  The last gate row is the reference (fixed at zero).

One pass over the data (:func:`pass_statistics`, a map-reduce over blocks, so
memory maps, Dask arrays and streams work unchanged) returns the
log-likelihood, its exact gradient, and the Fisher information of the
expected complete-data log-likelihood ``Q`` of EM, which separates into one
block per expert and one for the gate.  Two optimisers use it:

* :func:`em` - EM whose M-step is one scoring step on each block of ``Q``
  (Lange's EM-gradient algorithm, with the expected information, which is
  positive definite, so every step ascends; step halving keeps the
  likelihood monotone).  One pass per iteration.
* :func:`polish` - L-BFGS-B on the observed log-likelihood with the exact
  gradient, from the EM solution, to a stationary point (convergence as
  scipy reports it).

:func:`search` screens many starts on a subsample by short EM runs, takes the
best few to convergence there, and finishes the winner on all the data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import block_diag
from scipy.optimize import minimize
from scipy.special import softmax

from . import screening
from ._progress import report
from ._threads import blas_threads
from .data import Data, add_partials
from .families import Family
from .grouping import group_joint, group_posterior
from .penalties import as_penalty, centred_blocks, dispersion_terms, gate_prior_terms

__all__ = [
    "SHARED_INTERCEPT",
    "shared_columns",
    "Design",
    "State",
    "Ties",
    "EngineFit",
    "at_floor",
    "n_free_parameters",
    "canonical",
    "random_partitions",
    "experts_at_bound",
    "pass_statistics",
    "observed_statistics",
    "em",
    "polish",
    "search",
    "grouped_search",
]

# polish() takes Newton steps when the parameters are at most this many: exact ones first
# where they apply (exact_newton_applies), else L-BFGS-B then a chord Newton finish while
# rows x parameters is at most _NEWTON_WORK.  Exact steps first cost 0.43 s where L-BFGS-B
# first cost 1.84 s (n = 10,000, d = 5, k = 3; 0.27 s against 0.38 s at n = 1,000).
_NEWTON_MAX = 300
_NEWTON_WORK = 5_000_000
# When the exact steps first do not converge, L-BFGS-B runs this many iterations before
# exact Newton steps take over again.
_LBFGS_BEFORE_NEWTON = 100
# Newton steps of polish() before it hands over to L-BFGS-B (near the optimum a handful
# suffice; many more mean a region where the quadratic model is poor).
_NEWTON_STEPS = 12
# polish() takes Newton steps with the exact Hessian of all the rows (one pass, costing
# about rows x experts x parameters^2 multiply-adds) while the rows are at most
# _NEWTON_SUB_ROWS and that work at most _NEWTON_WORK_EXACT.
_NEWTON_WORK_EXACT = 20_000_000_000
# Beyond, polish() takes its Newton steps with the Hessian of _NEWTON_SUB_ROWS evenly spaced
# rows (at least _NEWTON_SUB_MIN per parameter, within the work) and the exact gradient of
# all rows: a chord method whose Hessian is off by about sqrt(p / rows) converges linearly
# at about that rate, one full pass per step, where L-BFGS-B took 83 passes (10^7 rows,
# d = 10, k = 3).  Against the exact Hessian of all the rows, at the same optimum to 12
# digits: 4.5 s against 7.0 s at 10^6 (Gaussian, d = 10, k = 3).  Fewer rows fail some
# families: with 50 000 a Poisson mixture of 10^5 rows (d = 5, k = 3) took 90 passes and
# 4.2 s against the exact steps' 5 passes and 2.1 s (the Gaussian 0.69 s against 0.78 s).
_NEWTON_SUB_ROWS = 250_000
_NEWTON_SUB_MIN = 200
# A chord step whose gradient shrinks less than this factor forms the Hessian afresh; with
# the Hessian of a subsample (whose sampling error a new point does not remove) only when
# the steps nearly stall (d = 10, k = 8, n = 2 x 10^5: 8 Hessians of 50,000 rows and 10.3 s
# at 0.1, 1 and 7.8 s at 0.5).
_CHORD_RATE = 0.1
_CHORD_RATE_SUB = 0.5
# Gate blocks up to this many coefficients get the exact Newton step; wider
# gates the Böhning bound (a fixed matrix, one product per pass).
_EXACT_GATE = 64


# the entry of Design.shared_columns that stands for the experts' intercept
SHARED_INTERCEPT = -1


def shared_columns(mask, intercept=False) -> tuple:
    """:attr:`Design.shared_columns` of a boolean ``mask`` over the features (or None) and
    whether the intercept is shared too."""
    columns = () if mask is None else tuple(int(c) for c in np.flatnonzero(mask))
    return columns + ((SHARED_INTERCEPT,) if intercept else ())


@dataclass(frozen=True)
class Design:
    """Which columns of ``X`` the gate and the experts read, and the intercepts.

    Parameters
    ----------
    gating_columns, expert_columns : int arrays
        Column indices into ``X``.
    fit_intercept : bool
    offset_column : int or None
        A column of ``X`` added to every expert's linear predictor with
        coefficient one (the log-exposure of a Poisson rate).
    trials_column : int or None
        A column of ``X`` holding each row's number of trials (binomial
        experts, :attr:`~moelearn.families.Family.needs_trials`).
    shared_columns : tuple of int
        Expert columns whose coefficient is one for all experts (see :class:`Ties`);
        ``-1`` (:data:`SHARED_INTERCEPT`) stands for the intercept.
    """

    gating_columns: np.ndarray
    expert_columns: np.ndarray
    fit_intercept: bool = True
    offset_column: int | None = None
    trials_column: int | None = None
    shared_columns: tuple = ()

    def shared_positions(self) -> tuple:
        """Positions on the expert design (intercept first) whose coefficient the experts share."""
        first = int(self.fit_intercept)
        cols = list(self.expert_columns)
        return tuple(
            0 if c == SHARED_INTERCEPT else first + cols.index(c) for c in self.shared_columns
        )

    def family_at(self, family, X):
        """``family`` bound to the rows of ``X`` (their trials), or itself."""
        if self.trials_column is None:
            return family
        return family.at_rows(X[:, self.trials_column])

    def offset(self, X):
        """The offset added to every expert's predictor (zeros without one), shape (n,)."""
        if self.offset_column is None:
            return np.zeros(X.shape[0])
        return X[:, self.offset_column]

    @property
    def n_gate(self) -> int:
        return len(self.gating_columns) + int(self.fit_intercept)

    @property
    def n_expert(self) -> int:
        return len(self.expert_columns) + int(self.fit_intercept)

    def expert_matrix(self, X):
        Xe = X[:, self.expert_columns]
        return np.hstack([np.ones((X.shape[0], 1)), Xe]) if self.fit_intercept else Xe

    def gate_matrix(self, X):
        Xg = X[:, self.gating_columns]
        return np.hstack([np.ones((X.shape[0], 1)), Xg]) if self.fit_intercept else Xg


@dataclass
class State:
    """Parameters in the engine's coordinates.

    Attributes
    ----------
    coef : (k, q, p_e) expert coefficients (intercept first when fitted)
    log_disp : (k, m) log-dispersion
    gate : (k, p_g) gate coefficients, last row zero
    """

    coef: np.ndarray
    log_disp: np.ndarray
    gate: np.ndarray

    @property
    def n_experts(self) -> int:
        return self.coef.shape[0]

    def copy(self) -> State:
        return State(self.coef.copy(), self.log_disp.copy(), self.gate.copy())

    def flat(self) -> np.ndarray:
        return np.concatenate([self.coef.ravel(), self.log_disp.ravel(), self.gate[:-1].ravel()])

    def with_flat(self, theta) -> State:
        k, q, pe = self.coef.shape
        m = self.log_disp.shape[1]
        a, b = k * q * pe, k * q * pe + k * m
        gate = np.zeros_like(self.gate)
        if k > 1:
            gate[:-1] = theta[b:].reshape(k - 1, -1)
        return State(theta[:a].reshape(k, q, pe), theta[a:b].reshape(k, m), gate)


@dataclass
class EngineFit:
    """Result of an engine optimisation.

    ``log_likelihood`` is the (weighted) mean per sample of the objective the
    engine maximises: the log-likelihood less the ridge of :func:`penalty`
    (:func:`moelearn.family_fit.fit_engine` reports the plain one).
    """

    state: State
    log_likelihood: float
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)
    shares: np.ndarray | None = None
    collapsed: bool = False


def _eta(U, coef):
    # (n, k) for one predictor per expert, (n, k, q) otherwise
    if coef.shape[1] == 1:
        return U @ coef[:, 0, :].T
    return np.einsum("np,kqp->nkq", U, coef)


def _weighted_grams(weights, A):
    """``A' diag(weights[:, j]) A`` for every column j of ``weights``: shape (m, p, p).

    Small blocks: one product with the rows' outer products (little Python
    overhead); larger ones: one BLAS Gram per weight column (4x faster at
    8192 x 12, where the outer products no longer fit in cache).
    """
    n, p = A.shape
    if n * p * p <= 50_000:
        outer = (A[:, :, None] * A[:, None, :]).reshape(n, p * p)
        return (weights.T @ outer).reshape(weights.shape[1], p, p)
    return np.stack([(A * weights[:, j : j + 1]).T @ A for j in range(weights.shape[1])])


def _symmetric_grams(weights, A):
    """``A' diag(weights[:, r, s]) A`` for a symmetric ``weights`` (n, g, g): shape (g, p, g, p).

    The Grams of the pairs ``r <= s`` only; the rest by symmetry.
    """
    g = weights.shape[1]
    p = A.shape[1]
    upper = np.triu_indices(g)
    half = _weighted_grams(weights[:, upper[0], upper[1]], A)  # (g (g + 1) / 2, p, p)
    out = np.empty((g, g, p, p))
    out[upper] = half
    out[upper[1], upper[0]] = half.transpose(0, 2, 1)
    return out.transpose(0, 2, 1, 3)


def _predictors(design, X, U, Z, state):
    """The experts' linear predictors (offset included) and the gate's log-probabilities,
    from the rows ``X`` and their expert and gate designs ``U``, ``Z``."""
    eta = _eta(U, state.coef)
    if design.offset_column is not None:
        off = X[:, design.offset_column]
        eta = eta + (off[:, None] if eta.ndim == 2 else off[:, None, None])
    if state.n_experts > 1:
        logits = Z @ state.gate.T
        logits -= logits.max(axis=1, keepdims=True)
        log_gate = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    else:
        log_gate = np.zeros((X.shape[0], 1))
    return eta, log_gate


def _block_terms(
    family,
    design,
    X,
    y,
    state,
    want,
    fixed_post=None,
    weights=None,
    groups=None,
    gate_weights=None,
):
    """Sums over one block of rows: log-likelihood, gradients, information.

    With ``groups`` (:class:`~moelearn.grouping.Groups`, all the rows) the
    log-likelihood is the grouped one, every row's posterior is its group's and
    the gate's terms carry the weight ``1 / |g|`` (:mod:`moelearn.grouping`);
    ``gate_weights`` gives the gate's weights of a block of grouped rows whose
    posterior is ``fixed_post`` (out of core).  ``want``: ``"value"``, ``"grad"``,
    ``"hess"`` (the block matrices of EM) or ``"moments"`` (those and the weighted
    moments of :meth:`~moelearn.families.Family.weighted_m_step`).
    """
    family = design.family_at(family, X)
    U, Z = design.expert_matrix(X), design.gate_matrix(X)
    k, q, _ = state.coef.shape
    eta, log_gate = _predictors(design, X, U, Z, state)
    disp = np.exp(state.log_disp)
    if want == "value":
        logf = family.log_density(y, eta, disp)
    elif want == "grad":
        (logf, grad), fisher = family.gradient(y, eta, disp), None
    else:
        logf, grad, fisher = family.derivatives(y, eta, disp)
    w = np.ones(X.shape[0]) if weights is None else weights
    wg = w if gate_weights is None else gate_weights  # the gate's weights
    if groups is None:
        joint = log_gate + logf
        top = joint.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        ll = np.log(np.exp(joint - top).sum(axis=1)) + top[:, 0]
        out = {"ll": float(w @ ll), "n": float(w.sum())}
        post = np.exp(joint - ll[:, None]) if fixed_post is None else fixed_post
    else:
        total, _, group_post = group_posterior(group_joint(log_gate, logf, groups), groups, w)
        out = {"ll": total, "n": float(w.sum())}
        post = group_post[groups.codes] if fixed_post is None else fixed_post
        wg = w / groups.sizes[groups.codes]
    out["share"] = w @ post
    if want == "value":
        return out
    rw = post * w[:, None]  # (n, k)
    if grad.ndim == 2:
        grad = grad[..., None]
        fisher = None if fisher is None else fisher[..., None, None]
    g = rw[..., None] * grad  # (n, k, q + m)
    out["g_coef"] = np.tensordot(g[..., :q], U, axes=([0], [0]))  # (k, q, p)
    out["g_disp"] = g[..., q:].sum(axis=0)
    if k > 1:
        gate_p = np.exp(log_gate)
        out["g_gate"] = ((post - gate_p) * wg[:, None]).T @ Z
    if want == "grad":
        return out
    F = rw[..., None, None] * fisher  # (n, k, Q, Q)
    pe = U.shape[1]
    grams = _weighted_grams(F[..., :q, :q].reshape(F.shape[0], -1), U)  # (k q q, pe, pe)
    out["F_cc"] = grams.reshape(k, q, q, pe, pe).transpose(0, 1, 3, 2, 4)
    out["F_cd"] = np.tensordot(F[..., :q, q:], U, axes=([0], [0])).transpose(0, 1, 3, 2)
    out["F_dd"] = F[..., q:, q:].sum(axis=0)
    if want == "moments":
        # and the weighted moments of the closed-form M-step (Family.weighted_m_step)
        t = y - design.offset(X)
        out["m_uu"] = _weighted_grams(rw, U)
        out["m_ut"] = (rw * t[:, None]).T @ U
        out["m_tt"] = t**2 @ rw
        out["m_w"] = rw.sum(axis=0)
    if k > 1:
        gp = gate_p[:, : k - 1] * wg[:, None]
        if (k - 1) * Z.shape[1] <= _EXACT_GATE:
            # sum_n w (diag(p) - p p') (x) z z' over the free rows
            out["H_gate"] = _gate_hessian(gp, gate_p[:, : k - 1], Z)
        else:
            out["B_gate"] = (Z * wg[:, None]).T @ Z  # Böhning: H <= 1/2 (I - 11'/k) (x) Z'WZ
    return out


def _gate_hessian(wp, p, Z):
    """``sum_n w_n (diag(p_n) - p_n p_n') (x) z_n z_n'`` over the free rows, (k-1, pg, k-1, pg).

    ``wp`` is ``w * p`` (weighted probabilities), ``p`` the probabilities.
    """
    m = p.shape[1]
    pairs = -wp[:, :, None] * p[:, None, :]
    idx = np.arange(m)
    pairs[:, idx, idx] += wp
    return _symmetric_grams(pairs, Z)


def pass_statistics(family, design, data: Data, state, want="hess", fixed_post=None, weights=None):
    """One pass: totals of :func:`_block_terms` over the data's blocks.

    A weighted :class:`~moelearn.data.Data` source weights its rows; ``fixed_post``
    and ``weights`` (per-row arrays) require in-memory data.
    """
    groups = getattr(data, "groups", None)
    if groups is not None and not data.in_memory:
        return _grouped_pass(family, design, data, state, want)
    if groups is not None and weights is None and data.weighted:
        weights = np.asarray(data.w, dtype=float)
    if fixed_post is not None or weights is not None or groups is not None:
        return _block_terms(
            family, design, data.X, data.y, state, want, fixed_post, weights, groups
        )
    return data.map_reduce(
        lambda Xb, yb, wb=None: _block_terms(family, design, Xb, yb, state, want, weights=wb)
    )


def _grouped_pass(family, design, data, state, want):
    """:func:`pass_statistics` of grouped rows out of core: two reads of the data.

    The first read sums each group's expert log-densities and gate
    log-probabilities into ``(n_groups, k)`` arrays (the gate is constant
    within a group: its mean over the group's rows is its value), which give
    the groups' posteriors; the second computes the per-row sums of
    :func:`_block_terms` with the rows' posterior their group's and the gate
    weighted by ``1 / |g|``.  Memory: ``O(n_groups k)`` besides a block.
    """
    groups = data.groups
    G, k = groups.n_groups, state.n_experts

    def first(Xb, yb, wb, codes):
        U, Z = design.expert_matrix(Xb), design.gate_matrix(Xb)
        eta, log_gate = _predictors(design, Xb, U, Z, state)
        logf = design.family_at(family, Xb).log_density(yb, eta, np.exp(state.log_disp))
        out = {"logf": np.zeros((G, k)), "gate": np.zeros((G, k)), "w": np.zeros(G)}
        with np.errstate(invalid="ignore"):
            np.add.at(out["logf"], codes, logf)
        np.add.at(out["gate"], codes, log_gate)
        np.add.at(out["w"], codes, np.ones(len(yb)) if wb is None else wb)
        return out

    sums = data.grouped_map_reduce(first)
    sizes = groups.sizes
    w_group = sums["w"] / sizes  # a group's weight (constant within it)
    joint = sums["gate"] / sizes[:, None] + sums["logf"]
    _, per_group, post = group_posterior(joint, groups)
    total = float(w_group @ per_group)
    n = float(sums["w"].sum())
    if want == "value":
        return {"ll": total, "n": n, "share": (w_group * sizes) @ post}

    def second(Xb, yb, wb, codes):
        wb = np.ones(len(yb)) if wb is None else wb
        return _block_terms(
            family,
            design,
            Xb,
            yb,
            state,
            want,
            fixed_post=post[codes],
            weights=wb,
            gate_weights=wb / sizes[codes],
        )

    out = data.grouped_map_reduce(second)
    out["ll"], out["n"] = total, n
    return out


def _block_observed(family, design, X, y, state, weights=None):
    """Sums over one block: log-likelihood, its gradient and its exact Hessian (flat coordinates).

    The coordinates are those of :meth:`State.flat`.  Per row the Hessian of
    ``l = log sum_i pi_i f_i`` is first formed in the working coordinates (each
    expert's ``(eta, log phi)``, the free gate logits): with ``r`` the
    responsibilities, ``p`` the gate, ``s_i`` and ``A_i`` the gradient and
    Hessian of ``log f_i`` (the family's :meth:`~moelearn.families.Family.hessian`)
    and ``v_i = r_i s_i``,

    * expert-expert: ``delta_ij r_i (A_i + s_i s_i') - v_i v_j'``,
    * expert-gate: ``v_i (e_i - r)'``,
    * gate-gate: ``diag(r - p) + p p' - r r'``;

    the coefficients' Hessian is then the weighted Grams of the design columns
    with these per-row weights (the chain rule through ``eta = U b``, ``zeta = Z c``),
    which costs ``O(n g^2 p^2)`` for ``g`` working coordinates, not
    ``O(n (g p)^2)``.
    """
    family = design.family_at(family, X)
    U, Z = design.expert_matrix(X), design.gate_matrix(X)
    k, q, pe = state.coef.shape
    m = state.log_disp.shape[1]
    pg = Z.shape[1]
    n = X.shape[0]
    eta, log_gate = _predictors(design, X, U, Z, state)
    disp = np.exp(state.log_disp)
    logf, grad = family.gradient(y, eta, disp)
    hess = family.hessian(y, eta, disp)
    if grad.ndim == 2:
        grad = grad[..., None]
    joint = log_gate + logf
    top = joint.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    ll = np.log(np.exp(joint - top).sum(axis=1)) + top[:, 0]
    post = np.exp(joint - ll[:, None])
    w = np.ones(n) if weights is None else weights
    nc, nd, ng = k * q * pe, k * m, (k - 1) * pg
    # the per-row working Hessian W (n, g, g), rows weighted, in the order: every
    # expert's eta entries, then every expert's log phi entries, then the free gate
    # logits (so that each block below is a slice of W, not a gathered copy)
    v = post[..., None] * grad  # (n, k, Q)
    kq, km = k * q, k * m
    ge = kq + km
    W = np.zeros((n, ge + k - 1, ge + k - 1))
    vf = np.concatenate([v[..., :q].reshape(n, kq), v[..., q:].reshape(n, km)], axis=1)
    np.multiply(vf[:, :, None], vf[:, None, :], out=W[:, :ge, :ge])
    np.negative(W[:, :ge, :ge], out=W[:, :ge, :ge])
    own = post[:, :, None, None] * (hess + grad[..., :, None] * grad[..., None, :])  # (n,k,Q,Q)
    for i in range(k):
        es, ds = slice(i * q, (i + 1) * q), slice(kq + i * m, kq + (i + 1) * m)
        W[:, es, es] += own[:, i, :q, :q]
        if m:
            W[:, es, ds] += own[:, i, :q, q:]
            W[:, ds, es] += own[:, i, q:, :q]
            W[:, ds, ds] += own[:, i, q:, q:]
    if k > 1:
        gate_p = np.exp(log_gate)
        e_minus_r = np.eye(k)[None, :, : k - 1] - post[:, None, : k - 1]  # (n, k, k-1)
        cross = v[..., None] * e_minus_r[:, :, None, :]  # (n, k, Q, k-1)
        W[:, :kq, ge:] = cross[:, :, :q].reshape(n, kq, k - 1)
        W[:, kq:ge, ge:] = cross[:, :, q:].reshape(n, km, k - 1)
        W[:, ge:, :ge] = W[:, :ge, ge:].transpose(0, 2, 1)
        r1, p1 = post[:, : k - 1], gate_p[:, : k - 1]
        gg = W[:, ge:, ge:]
        np.multiply(p1[:, :, None], p1[:, None, :], out=gg)
        gg -= r1[:, :, None] * r1[:, None, :]
        idx = np.arange(k - 1)
        gg[:, idx, idx] += r1 - p1
    if weights is not None:
        W *= w[:, None, None]
    H = np.empty((nc + nd + ng, nc + nd + ng))
    H[:nc, :nc] = _symmetric_grams(W[:, :kq, :kq], U).reshape(nc, nc)
    if m:
        cd = np.einsum("nrs,nj->rjs", W[:, :kq, kq:ge], U, optimize=True).reshape(nc, nd)
        H[:nc, nc : nc + nd] = cd
        H[nc : nc + nd, :nc] = cd.T
        H[nc : nc + nd, nc : nc + nd] = W[:, kq:ge, kq:ge].sum(axis=0)
    if k > 1:
        weg = W[:, :kq, ge:].reshape(n, kq * (k - 1))
        M = (U[:, :, None] * weg[:, None, :]).reshape(n, pe * kq * (k - 1))
        cg = (M.T @ Z).reshape(pe, kq, k - 1, pg).transpose(1, 0, 2, 3).reshape(nc, ng)
        H[:nc, nc + nd :] = cg
        H[nc + nd :, :nc] = cg.T
        if m:
            dg = np.einsum("nsl,nt->slt", W[:, kq:ge, ge:], Z, optimize=True).reshape(nd, ng)
            H[nc : nc + nd, nc + nd :] = dg
            H[nc + nd :, nc : nc + nd] = dg.T
        H[nc + nd :, nc + nd :] = _symmetric_grams(W[:, ge:, ge:], Z).reshape(ng, ng)
    vw = v * w[:, None, None]
    grad_flat = [np.einsum("nka,nj->kaj", vw[..., :q], U).ravel(), vw[..., q:].sum(axis=0).ravel()]
    if k > 1:
        grad_flat.append((((post - gate_p)[:, : k - 1]) * w[:, None]).T.dot(Z).ravel())
    return {
        "ll": float(w @ ll),
        "n": float(w.sum()),
        "share": w @ post,
        "grad": np.concatenate(grad_flat),
        "hess": H,
    }


def observed_statistics(family, design, data: Data, state, weights=None):
    """One pass: the log-likelihood, its gradient and its exact Hessian in :meth:`State.flat`.

    Totals over the rows (weighted by ``weights`` in memory, or by the data
    source's own weights); see :func:`_block_observed`.
    """
    if getattr(data, "groups", None) is not None:
        return _grouped_observed(family, design, data, state, weights)
    rows = observed_block_rows(state, data.block_rows)
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        total = None
        for start in range(0, data.n_samples, rows):
            block = slice(start, start + rows)
            part = _block_observed(family, design, data.X[block], data.y[block], state, w[block])
            total = add_partials(total, part)
        return total
    return data.map_reduce(
        lambda Xb, yb, wb=None: _block_observed(family, design, Xb, yb, state, wb), rows
    )


#: floats of the per-row working Hessian of one block of :func:`_block_observed`
#: (2 MiB): at 8192 rows a Student-t mixture's (8192 x 11 x 11) left the cache and its
#: pass took 1.6x as long as at 2048 rows (n = 1e5, d = 5, k = 3)
_OBSERVED_BLOCK_FLOATS = 262_144


def observed_block_rows(state, block_rows):
    """Rows per block of :func:`observed_statistics`: at most ``block_rows``, fewer where
    the per-row working Hessian is large (at least 256)."""
    k = state.n_experts
    g = k * (state.coef.shape[1] + state.log_disp.shape[1]) + k - 1
    return int(min(block_rows, max(256, _OBSERVED_BLOCK_FLOATS // (g * g))))


def _flat_gradient(stats, k):
    """The gradient of :func:`pass_statistics` in the coordinates of :meth:`State.flat`."""
    parts = [stats["g_coef"].ravel(), stats["g_disp"].ravel()]
    return np.concatenate(parts + ([stats["g_gate"][: k - 1].ravel()] if k > 1 else []))


def _grouped_observed(family, design, data, state, weights=None):
    """:func:`observed_statistics` of grouped rows: the Hessian by central differences.

    The grouped log-likelihood is not a sum over rows (a group's rows share
    one posterior), so the per-row Hessian of :func:`_block_observed` does not
    apply; its exact gradient is differenced instead, one pair of passes per
    coordinate (steps ``1e-5 max(1, |theta_j|)``: truncation and rounding
    errors both near ``1e-10`` relative).
    """
    k = state.n_experts
    theta = state.flat()

    def at(t):
        return pass_statistics(family, design, data, state.with_flat(t), "grad", weights=weights)

    stats = at(theta)
    H = np.empty((theta.size, theta.size))
    for j in range(theta.size):
        h = 1e-5 * max(1.0, abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        H[:, j] = (_flat_gradient(at(up), k) - _flat_gradient(at(down), k)) / (2 * h)
    return {
        "ll": stats["ll"],
        "n": stats["n"],
        "share": stats["share"],
        "grad": _flat_gradient(stats, k),
        "hess": 0.5 * (H + H.T),
    }


def _ridge_masks(state, fit_intercept, tied=None):
    """The ridge's weights of the expert and gate coefficients: ``(mc, mg)``.

    Intercepts are not penalised; a coefficient the experts share (``tied.coef``)
    has weight ``1/k`` on each expert's copy, so that it is penalised once, as a
    free coefficient is.
    """
    mc = np.ones_like(state.coef)
    mg = np.ones(state.gate.shape[1])
    if tied is not None:
        for p in tied.coef:
            mc[..., p] = 1.0 / state.n_experts
    if fit_intercept:
        mc[..., 0] = 0.0
        mg[0] = 0.0
    return mc, mg


def _dispersion_prior(family, state, pen, n, tied=None):
    """:func:`~moelearn.penalties.dispersion_terms` at ``state``: ``(value, gradient,
    curvature)`` or None."""
    column = None if tied is None else tied.dispersion
    terms = dispersion_terms(family, state.log_disp, pen, n, column)
    return None if terms is None else (float(terms[0]), terms[1], terms[2])


def _metric_times(metric, B):
    """``metric @ B[i]`` for every expert ``i`` of ``B`` (k, q, p); ``B`` if metric is None."""
    return B if metric is None else np.einsum("cd,idp->icp", metric, B)


def _flat_penalty(state, alpha, fit_intercept, n, tied=None, family=None):
    """The penalty of :func:`_penalize` in flat coordinates: ``(value, gradient, Hessian)``."""
    size = state.coef.size + state.log_disp.size + state.gate[:-1].size
    pen = as_penalty(alpha)
    grad, hess = np.zeros(size), np.zeros((size, size))
    value = 0.0
    nc, nd = state.coef.size, state.log_disp.size
    prior = _dispersion_prior(family, state, pen, n, tied)
    if prior is not None:
        value += prior[0]
        grad[nc : nc + nd] = prior[1].ravel()
        hess[np.arange(nc, nc + nd), np.arange(nc, nc + nd)] = -prior[2].ravel()
    mc, mg = _ridge_masks(state, fit_intercept, tied)
    k = state.n_experts
    cauchy = gate_prior_terms(state.gate, mg, pen, n)
    if cauchy is not None:
        value += float(cauchy[0])
        grad[nc + nd :] = cauchy[1][: k - 1].ravel()
        hess[nc + nd :, nc + nd :] = centred_blocks(cauchy[3])
    a_e, a_g = pen.expert * n, pen.gate * n
    if a_e <= 0 and a_g <= 0:
        return value, grad, hess
    metric = None if family is None else family.penalty_metric
    B = _metric_times(metric, state.coef * mc)
    V = state.gate * mg
    centred = V - V.mean(axis=0)
    value -= 0.5 * (a_e * np.sum(B * state.coef) + a_g * np.sum(centred**2))
    grad[:nc] = -a_e * B.ravel()
    block = state.coef[0].size
    for i in range(k):
        span = slice(i * block, (i + 1) * block)
        hess[span, span] = -a_e * screening.ridge_block(metric, mc[i, 0], mc.shape[1])
    if k > 1:
        grad[nc + nd :] -= a_g * centred[: k - 1].ravel()
        hess[nc + nd :, nc + nd :] -= a_g * np.kron(np.eye(k - 1) - 1.0 / k, np.diag(mg))
    return value, grad, hess


def penalty(state, alpha, fit_intercept, tied=None, family=None) -> float:
    """The penalty of :func:`_penalize` per sample at ``state``.

    The engine maximises the mean log-likelihood less this; adding it back to
    the maximised objective gives the plain mean log-likelihood.
    """
    return -_flat_penalty(state, alpha, fit_intercept, 1.0, tied, family)[0]


def _penalize(stats, state, alpha, fit_intercept, tied=None, family=None):
    """Add the penalty to a pass's statistics in place; ``stats["obj"]`` receives the
    penalised total.

    The ridge ``a_e/2 ||B||^2 + a_g/2 sum_p ||v_p - mean_p||^2`` (per sample): ``B``
    are the expert coefficients and ``v_p`` the gate coefficients of column ``p``
    over the experts, intercepts excluded; the gate is penalised in its centred
    form, so the penalty does not depend on which expert is the reference; a
    shared coefficient (``tied``) is penalised once.  ``alpha`` is one number for
    both, ``(a_e, a_g)``, or a :class:`~moelearn.penalties.Penalty`, whose
    dispersion prior (``family``'s
    :meth:`~moelearn.families.Family.dispersion_prior`) and Cauchy gate prior
    (:func:`~moelearn.penalties.gate_prior_terms`; in the scoring step by its
    quadratic minorant, so that the step stays an ascent) are subtracted too.
    The family's
    :attr:`~moelearn.families.Family.penalty_metric` (None: the identity) is the
    quadratic form over an expert's predictors: ``||B||^2`` reads
    ``sum_p B[:, p]' metric B[:, p]``.
    """
    stats["obj"] = stats["ll"]
    pen = as_penalty(alpha)
    if not pen.active:
        return stats
    prior = _dispersion_prior(family, state, pen, stats["n"], tied)
    if prior is not None:
        stats["obj"] = stats["obj"] + prior[0]
        if "g_disp" in stats:
            stats["g_disp"] = stats["g_disp"] + prior[1]
        if "F_dd" in stats:
            idx = np.arange(state.log_disp.shape[1])
            F_dd = stats["F_dd"].copy()
            F_dd[:, idx, idx] += prior[2]
            stats["F_dd"] = F_dd
    mc, mg = _ridge_masks(state, fit_intercept, tied)
    k = state.n_experts
    cauchy = gate_prior_terms(state.gate, mg, pen, stats["n"])
    if cauchy is not None:
        stats["obj"] = stats["obj"] + float(cauchy[0])
        if "g_gate" in stats:
            stats["g_gate"] = stats["g_gate"] + cauchy[1]
        if "F_cc" in stats:  # the scoring step's: the minorant's curvature (positive)
            stats["pen_gate"] = centred_blocks(cauchy[2])
    a_e, a_g = pen.expert * stats["n"], pen.gate * stats["n"]
    if a_e <= 0 and a_g <= 0:
        return stats
    metric = None if family is None else family.penalty_metric
    B = _metric_times(metric, state.coef * mc)
    V = state.gate * mg
    centred = V - V.mean(axis=0)
    stats["obj"] = stats["obj"] - 0.5 * (a_e * np.sum(B * state.coef) + a_g * np.sum(centred**2))
    if "g_coef" in stats:
        stats["g_coef"] = stats["g_coef"] - a_e * B
        if k > 1:
            stats["g_gate"] = stats["g_gate"] - a_g * centred
    if "F_cc" in stats:
        F = stats["F_cc"].copy()
        kk, q, pe = state.coef.shape
        for i in range(kk):
            flat = F[i].reshape(q * pe, q * pe)
            flat += a_e * screening.ridge_block(metric, mc[i, 0], q)
            F[i] = flat.reshape(q, pe, q, pe)
        stats["F_cc"] = F
        if k > 1 and a_g > 0:
            # Hessian of the centred penalty over the free rows: (I - 11'/k) (x) diag(mask)
            ridge = a_g * np.kron(np.eye(k - 1) - 1.0 / k, np.diag(mg))
            stats["pen_gate"] = stats.get("pen_gate", 0.0) + ridge
    return stats


def _solve(F, g, ridge=1e-10):
    F = 0.5 * (F + F.T)
    F = F + ridge * max(np.trace(F) / max(len(F), 1), 1e-12) * np.eye(len(F))
    try:
        return np.linalg.solve(F, g)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(F, g, rcond=None)[0]


def _scoring_step(stats, state, bounds, tied=None):
    """The scoring step on every block of Q, and the squared Newton decrement.

    Without ties each expert's block is solved on its own.  With ``tied``
    (:class:`Ties`: parameters the experts share) the experts' blocks form one
    block-diagonal system, reduced to the free coordinates (a shared
    coordinate takes the sum of the experts' terms) and solved at once: the
    exact scoring step of the constrained ``Q``.
    """
    k, q, pe = state.coef.shape
    m = state.log_disp.shape[1]
    D = q * pe + m
    new = state.copy()
    decrement = 0.0
    Fs = np.zeros((k, D, D))
    gs = np.zeros((k, D))
    for i in range(k):
        F = Fs[i]
        F[: q * pe, : q * pe] = stats["F_cc"][i].reshape(q * pe, q * pe)
        F[: q * pe, q * pe :] = stats["F_cd"][i].reshape(q * pe, m)
        F[q * pe :, : q * pe] = F[: q * pe, q * pe :].T
        F[q * pe :, q * pe :] = stats["F_dd"][i]
        gs[i] = np.concatenate([stats["g_coef"][i].ravel(), stats["g_disp"][i]])
    if tied is None:
        steps = np.stack([_solve(Fs[i], gs[i]) for i in range(k)])
        decrement += float(np.sum(gs * steps))
    else:
        E = tied.reduction_matrix(k, q, pe, m)  # (k D, R)
        Fr = E.T @ block_diag(*Fs) @ E
        gr = E.T @ gs.ravel()
        reduced = _solve(Fr, gr)
        decrement += float(gr @ reduced)
        steps = (E @ reduced).reshape(k, D)
    new.coef += steps[:, : q * pe].reshape(k, q, pe)
    new.log_disp += steps[:, q * pe :]
    if k > 1:
        g = stats["g_gate"][: k - 1].ravel()
        pg = state.gate.shape[1]
        if "H_gate" in stats:
            H = stats["H_gate"].reshape((k - 1) * pg, (k - 1) * pg)
        else:
            J = 0.5 * (np.eye(k - 1) - 1.0 / k)
            H = np.kron(J, stats["B_gate"])
        if "pen_gate" in stats:
            H = H + stats["pen_gate"]
        step = _solve(H, g)
        decrement += float(g @ step)
        new.gate[: k - 1] += step.reshape(k - 1, pg)
    low, high = bounds
    np.clip(new.log_disp, low, high, out=new.log_disp)
    return new, decrement


def _bounds(family, k, log_floor):
    low, high = family.dispersion_bounds()
    floored = [name for name, end in family.collapse_ends if end == "low"]
    low = np.where(
        np.array([n in floored for n in family.dispersion_names], dtype=bool),
        np.maximum(low, log_floor),
        low,
    )
    return np.broadcast_to(low, (k, len(low))), np.broadcast_to(high, (k, len(high)))


def tied_column(family, n_experts, shared_noise):
    """The dispersion column that ``noise="shared"`` ties across the experts, or None.

    The family's :attr:`~moelearn.families.Family.noise_parameter` (``sigma``,
    the Gamma ``shape``); None without sharing, with one expert, or for a
    family without one.
    """
    name = family.noise_parameter
    if not shared_noise or n_experts < 2 or name is None:
        return None
    return family.dispersion_names.index(name)


@dataclass(frozen=True)
class Ties:
    """Parameters that every expert shares: equality constraints across the experts.

    Attributes
    ----------
    dispersion : int or None
        The dispersion column with one value for all experts (``noise="shared"``,
        :func:`tied_column`).
    coef : tuple of int
        Positions on the expert design (intercept first) whose coefficient is one
        for all experts (``shared_features``; of every linear predictor).
    """

    dispersion: int | None = None
    coef: tuple = ()

    def block_positions(self, q, pe):
        """Tied positions inside one expert's block ``(coef (q, pe) raveled, log_disp)``."""
        out = [c * pe + p for c in range(q) for p in self.coef]
        if self.dispersion is not None:
            out.append(q * pe + self.dispersion)
        return out

    def reduction_matrix(self, k, q, pe, m):
        """The 0/1 matrix ``E`` (k D, R) with ``full = E @ reduced`` over the experts' blocks."""
        D = q * pe + m
        groups = [np.arange(k) * D + j for j in self.block_positions(q, pe)]
        expand, keep = _reduction(k * D, groups)
        E = np.zeros((k * D, keep.size))
        E[np.arange(k * D), expand] = 1.0
        return E

    def flat_groups(self, state):
        """The tied entries of :meth:`State.flat`, one index array per shared parameter."""
        k, q, pe = state.coef.shape
        m = state.log_disp.shape[1]
        groups = [np.arange(k) * q * pe + c * pe + p for c in range(q) for p in self.coef]
        if self.dispersion is not None:
            groups.append(state.coef.size + np.arange(k) * m + self.dispersion)
        return groups


def tied_parameters(family, design, n_experts, shared_noise) -> Ties | None:
    """The :class:`Ties` of a model (None when the experts share nothing)."""
    if n_experts < 2:
        return None
    dispersion = tied_column(family, n_experts, shared_noise)
    coef = design.shared_positions()
    if dispersion is None and not coef:
        return None
    return Ties(dispersion, coef)


def tie(state, tied):
    """``state`` with each shared parameter at the experts' mean (in place)."""
    if tied is not None:
        for p in tied.coef:
            state.coef[:, :, p] = state.coef[:, :, p].mean(axis=0)
        if tied.dispersion is not None:
            state.log_disp[:, tied.dispersion] = state.log_disp[:, tied.dispersion].mean()
    return state


def _reduction(size, groups):
    """Index maps ``(expand, keep)`` of coordinates ``0..size-1`` with each group tied."""
    drop = np.concatenate([g[1:] for g in groups]) if groups else np.zeros(0, int)
    keep = np.setdiff1d(np.arange(size), drop)
    expand = np.searchsorted(keep, np.arange(size))
    for g in groups:
        expand[g] = np.searchsorted(keep, g[0])
    return expand, keep


def tied_coordinates(state, tied):
    """Index maps between :meth:`State.flat` and the coordinates with the ties imposed.

    Returns ``(expand, keep)``: ``full = reduced[expand]`` and ``reduced =
    full[keep]``; a gradient in full coordinates maps to the reduced ones by
    ``np.bincount(expand, weights=grad)`` (the sum over the tied entries).
    """
    size = state.coef.size + state.log_disp.size + state.gate[:-1].size
    if tied is None:
        every = np.arange(size)
        return every, every
    return _reduction(size, tied.flat_groups(state))


def takes_closed_step(family, data, tied=None) -> bool:
    """Whether :func:`em` takes the family's closed-form M-step of the experts
    (:attr:`~moelearn.families.Family.closed_m_step`; not with shared coefficients
    or grouped rows), rather than a scoring step."""
    if not family.closed_m_step or (tied is not None and tied.coef):
        return False
    return getattr(data, "groups", None) is None


def _closed_experts(family, stats, state, alpha, fit_intercept, tied, bounds):
    """The experts' closed-form M-step (:meth:`~moelearn.families.Family.weighted_m_step`)
    from a pass's weighted moments: ``(coef, log_disp)``."""
    pen = as_penalty(alpha)
    k = state.n_experts
    ridge = None
    if pen.expert > 0:
        ridge = pen.expert * stats["n"] * _ridge_masks(state, fit_intercept, tied)[0][0, 0]
    pool = None
    if tied is not None and tied.dispersion is not None:
        pool = np.zeros(k, dtype=int)
    prior = None
    if pen.dispersion > 0:
        prior = (pen.dispersion * stats["n"], pen.reference)
    moments = (stats["m_uu"], stats["m_ut"], stats["m_tt"], stats["m_w"])
    beta, log_disp = family.weighted_m_step(
        moments, state.log_disp, ridge=ridge, pool=pool, prior=prior
    )
    return beta[:, None, :], np.clip(log_disp, *bounds)


def _squarem_point(start, one, two, bounds):
    """SQUAREM's extrapolated state (:func:`moelearn.screening.squarem_point`) from
    ``start`` through two EM iterations ``one`` and ``two``; None where the step is not
    longer than ``screening.SQUAREM_MIN_STEP``."""
    parts = ("coef", "log_disp", "gate")
    new, step = screening.squarem_point(
        *([getattr(s, a)[None] for a in parts] for s in (start, one, two))
    )
    if step[0] >= -screening.SQUAREM_MIN_STEP:
        return None
    return State(new[0][0], np.clip(new[1][0], *bounds), new[2][0])


def em(
    family,
    design,
    data,
    state,
    *,
    max_iter=500,
    tol=1e-8,
    log_floor=-np.inf,
    weights=None,
    alpha=0.0,
    tied=None,
    accelerate=False,
) -> EngineFit:
    """EM with a scoring M-step (one pass per iteration), monotone by step halving.

    Converged when the mean log-likelihood changes by less than ``tol``
    (relative to ``max(1, |ll|)``) in one iteration (EM's usual rule; :func:`polish`
    then checks the gradient).  ``tied`` holds the parameters the experts
    share (:class:`Ties`), or None.  Where the family has a closed-form M-step
    (:func:`closed_rows`) the experts take it instead of the scoring step.
    ``accelerate``: SQUAREM cycles (:func:`_squarem_point`) of two iterations, the
    extrapolated point and one iteration from it, kept where it ends above the
    two (still monotone); a cycle counts as three iterations of ``max_iter`` (the two,
    and the extrapolation with the iteration from it: two passes).
    """
    bounds = _bounds(family, state.n_experts, log_floor)
    state = tie(state.copy(), tied)
    np.clip(state.log_disp, *bounds, out=state.log_disp)
    fi = design.fit_intercept
    closed = takes_closed_step(family, data, tied)
    want = "moments" if closed else "hess"
    stats = pass_statistics(family, design, data, state, want, weights=weights)
    stats = _penalize(stats, state, alpha, fi, tied, family)
    n = stats["n"]
    ll = stats["obj"] / n

    def iterate(state, stats, ll):
        """One monotone EM iteration: ``(state, stats, ll)`` after it, or None at a
        stationary point (no halving of the scoring direction ascends)."""
        full_step, _ = _scoring_step(stats, state, bounds, tied)
        if closed:
            full_step.coef, full_step.log_disp = _closed_experts(
                family, stats, state, alpha, fi, tied, bounds
            )
        candidate, fraction = full_step, 1.0
        for _ in range(12):
            new_stats = pass_statistics(family, design, data, candidate, want, weights=weights)
            new_stats = _penalize(new_stats, candidate, alpha, fi, tied, family)
            new_ll = new_stats["obj"] / n
            if np.isfinite(new_ll) and new_ll >= ll - 1e-12 * max(1.0, abs(ll)):
                return candidate, new_stats, new_ll
            fraction *= 0.5
            candidate = State(
                state.coef + fraction * (full_step.coef - state.coef),
                state.log_disp + fraction * (full_step.log_disp - state.log_disp),
                state.gate + fraction * (full_step.gate - state.gate),
            )
        return None

    history = [ll]
    converged = False
    it = 0
    while it < max_iter:
        start = state
        steps = []
        for _ in range(2 if accelerate and it + 3 <= max_iter else 1):
            it += 1
            nxt = iterate(state, stats, ll)
            if nxt is None:
                break
            change = nxt[2] - ll
            state, stats, ll = nxt
            history.append(ll)
            steps.append(state)
            if abs(change) <= tol * max(1.0, abs(ll)):
                converged = True
                break
        if nxt is None or converged:
            break
        if len(steps) == 2:
            trial = _squarem_point(start, *steps, bounds)
            if trial is not None:
                it += 1
                t_stats = _penalize(
                    pass_statistics(family, design, data, trial, want, weights=weights),
                    trial,
                    alpha,
                    fi,
                    tied,
                    family,
                )
                t_ll = t_stats["obj"] / n
                if np.isfinite(t_ll):
                    nxt = iterate(trial, t_stats, t_ll)
                    if nxt is not None and nxt[2] >= ll:
                        state, stats, ll = nxt
                        history.append(ll)
    return EngineFit(state, ll, it, converged, history, stats["share"] / n)


def polish(
    family,
    design,
    data,
    state,
    *,
    max_iter=1000,
    tol=1e-8,
    log_floor=-np.inf,
    weights=None,
    alpha=0.0,
    tied=None,
) -> EngineFit:
    """L-BFGS-B on the observed log-likelihood (minus the ridge) with its exact gradient.

    With ``tied`` (:class:`Ties`) each shared parameter is one coordinate of the optimiser.
    """
    k = state.n_experts
    state = tie(state.copy(), tied)
    low, high = _bounds(family, k, log_floor)
    expand, keep = tied_coordinates(state, tied)
    nc = state.coef.size
    lb = np.full(expand.size, -np.inf)
    ub = np.full(expand.size, np.inf)
    lb[nc : nc + low.size] = low.ravel()
    ub[nc : nc + high.size] = high.ravel()
    lb, ub = lb[keep], ub[keep]
    theta0 = np.clip(state.flat()[keep], lb, ub)
    history = []
    newton_steps = 0  # exact Newton steps taken before L-BFGS-B
    cache = {}
    # grouped rows: the Hessian is not a sum over rows (the forward-difference finish below)
    grouped = getattr(data, "groups", None) is not None
    rows = 0 if grouped else newton_rows(state, data.n_samples, theta0.size)
    sub = None if rows in (0, data.n_samples) else _sub_rows(data, weights, rows)

    def newton_from(start):
        """:func:`_newton_polish` from ``start`` with this polish's coordinates and rows."""
        return _newton_polish(
            family, design, data, start, expand, keep, lb, ub, weights, alpha, max_iter, tied, sub
        )

    if rows:
        newton, theta_newton = newton_from(state)
        if newton.converged:
            return newton
        history.extend(newton.history)
        newton_steps = newton.n_iter
        if np.all(np.isfinite(theta_newton)):
            theta0 = theta_newton

    def fun(reduced):
        theta = reduced[expand]
        s = state.with_flat(theta)
        st = pass_statistics(family, design, data, s, "grad", weights=weights)
        st = _penalize(st, s, alpha, design.fit_intercept, tied, family)
        n = st["n"]
        g = _flat_gradient(st, k)
        cache["share"] = st["share"] / n
        value = st["obj"] / n
        if not np.isfinite(value):
            return np.inf, np.zeros_like(reduced)
        return -value, -np.bincount(expand, weights=g, minlength=reduced.size) / n

    def lbfgs(theta, iters):
        return minimize(
            fun,
            theta,
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lb, ub, strict=True)),
            options={"maxiter": iters, "ftol": 1e-4 * tol, "gtol": 1e-8, "maxcor": 20},
            callback=lambda intermediate_result: history.append(-float(intermediate_result.fun)),
        )

    switch = not grouped and max_iter > _LBFGS_BEFORE_NEWTON and rows > 0
    res = lbfgs(theta0, _LBFGS_BEFORE_NEWTON if switch else max_iter)
    nit, success = int(res.nit), bool(res.success)
    theta, value, jac = res.x, float(res.fun), res.jac
    newton_done = False
    if switch and not success:
        # L-BFGS-B crawls along the ridges of these likelihoods (hundreds of iterations on
        # real data) where exact Newton steps from its point converge in a handful
        newton, theta_newton = newton_from(state.with_flat(res.x[expand]))
        history.extend(newton.history)
        if newton.converged:
            theta = newton.state.flat()[keep]
            value, jac = fun(theta)
            nit, success, newton_done = nit + newton.n_iter, True, True
        else:
            nit += newton.n_iter
            start = theta_newton if np.all(np.isfinite(theta_newton)) else theta
            res = lbfgs(start, max_iter - nit)
            nit, success = nit + int(res.nit), bool(res.success)
            theta, value, jac = res.x, float(res.fun), res.jac
    steps = 0
    # (exact Newton steps that converged already end at rounding level)
    if (
        not newton_done
        and theta.size <= _NEWTON_MAX
        and data.n_samples * theta.size <= _NEWTON_WORK
    ):
        # L-BFGS-B stops with a gradient of about 1e-8: Newton steps with a
        # forward-difference Hessian take it to rounding level, so that the answer
        # reproduces to many digits (integer weights against repeated rows)
        hessian = None
        if not grouped and exact_newton_applies(state, data.n_samples, theta.size):
            T = _expansion(expand, keep)

            def hessian(reduced, idx):
                s = state.with_flat(reduced[expand])
                H = -_observed_objective(family, design, data, s, T, weights, alpha, tied)[2]
                return H[np.ix_(idx, idx)]

        theta, value, jac, steps = _newton_finish(
            fun, theta, value, jac, lb, ub, history, hessian=hessian
        )
    final = state.with_flat(theta[expand])
    grad = -jac
    free = ~(((theta <= lb) & (grad < 0)) | ((theta >= ub) & (grad > 0)))
    small = float(np.max(np.abs(grad[free]), initial=0.0)) <= 1e-5
    converged = success or small
    fun(theta)  # the shares at the answer
    return EngineFit(
        final, -value, newton_steps + nit + steps, converged, history, cache.get("share")
    )


#: The final refinement's optimisers (the estimators' ``refine``): EM, then exact Newton
#: steps and L-BFGS-B (:func:`polish`), or EM alone to its tolerance (:func:`em`)
FINISHES = ("lbfgs", "em")


def refine_fit(family, design, data, state, *, finish="lbfgs", max_iter=1000, tol=1e-8, **opts):
    """The final refinement of ``state`` on ``data`` by ``finish`` (:data:`FINISHES`):
    :func:`polish` (``"lbfgs"``), or :func:`em` to convergence (``"em"``, at most
    ``max_iter`` iterations); ``opts`` are theirs (``log_floor``, ``weights``,
    ``alpha``, ``tied``)."""
    if finish not in FINISHES:
        raise ValueError(f"finish={finish!r}: expected one of {FINISHES}")
    if finish == "em":
        return em(family, design, data, state, max_iter=max_iter, tol=tol, **opts)
    return polish(family, design, data, state, max_iter=max_iter, tol=tol, **opts)


def _n_params(state, n_params=None) -> int:
    """The free parameters of ``state`` (the gate's reference row excluded), or ``n_params``."""
    if n_params is not None:
        return n_params
    return state.coef.size + state.log_disp.size + state.gate[:-1].size


def exact_newton_applies(state, n_samples, n_params=None) -> bool:
    """Whether :func:`polish`'s Newton steps take the Hessian of all ``n_samples`` rows."""
    return newton_rows(state, n_samples, n_params) == n_samples


def newton_rows(state, n_samples, n_params=None) -> int:
    """Rows whose Hessian :func:`polish`'s Newton steps take: all ``n_samples`` up to
    ``_NEWTON_SUB_ROWS`` (and the work ``_NEWTON_WORK_EXACT``), else evenly spaced rows,
    ``_NEWTON_SUB_ROWS`` or ``_NEWTON_SUB_MIN`` per parameter if more, as many as the work
    allows; 0 where too few would remain or the parameters are too many (no Newton steps)."""
    p = _n_params(state, n_params)
    if p > _NEWTON_MAX:
        return 0
    most = int(_NEWTON_WORK_EXACT // (state.n_experts * p * p))
    rows = min(int(n_samples), max(_NEWTON_SUB_ROWS, _NEWTON_SUB_MIN * p), most)
    return rows if rows == n_samples or rows >= _NEWTON_SUB_MIN * p else 0


def _sub_rows(data, weights, rows):
    """``(Data, weights)`` of ``rows`` evenly spaced rows of ``data`` (in memory)."""
    index = np.unique(np.linspace(0, data.n_samples - 1, rows).round().astype(np.intp))
    X, y, w = data.weighted_rows(index)
    if w is None and weights is not None:
        w = np.asarray(weights, dtype=float)[index]
    return Data(X, y), w


def _expansion(expand, keep):
    """The 0/1 matrix taking the optimiser's coordinates to :meth:`State.flat`'s."""
    T = np.zeros((expand.size, keep.size))
    T[np.arange(expand.size), expand] = 1.0
    return T


def _observed_objective(family, design, data, state, T, weights, alpha, tied):
    """The penalised objective per unit weight at ``state``, its gradient and exact Hessian
    in the reduced coordinates (``T``, :func:`_expansion`), and the experts' shares."""
    st = observed_statistics(family, design, data, state, weights)
    pv, pg, ph = _flat_penalty(state, alpha, design.fit_intercept, st["n"], tied, family)
    n = st["n"]
    return (
        (st["ll"] + pv) / n,
        T.T @ (st["grad"] + pg) / n,
        T.T @ (st["hess"] + ph) @ T / n,
        st["share"] / n,
    )


def _newton_polish(
    family,
    design,
    data,
    state,
    expand,
    keep,
    lb,
    ub,
    weights,
    alpha,
    max_iter,
    tied=None,
    sub=None,
):
    """Projected Newton ascent with the exact observed information (a chord method).

    From a point near the optimum (the EM solution) Newton's method converges
    quadratically: a handful of passes where L-BFGS needs about a hundred.
    The Hessian (one pass of :func:`observed_statistics`, about ten gradient
    passes' work) is kept while each step shrinks the gradient at least
    tenfold, so that most steps cost one gradient pass.  Coordinates at a
    bound with the gradient pointing out stay there; a Hessian that is not
    negative definite on the free coordinates is damped (Levenberg) until it
    is; each step is halved until the objective rises (Armijo).  Returns
    ``(fit, theta)``; ``fit.converged`` is False when the steps stall, or have not
    converged after ``_NEWTON_STEPS`` (far from the optimum, where the quadratic
    model is poor): the caller then runs L-BFGS-B from ``theta``, the last (best)
    point, and counts the steps taken (``fit.n_iter``, ``fit.history``).  ``sub`` (a
    ``(Data, weights)`` pair of rows of ``data``, :func:`newton_rows`) gives the Hessian
    in place of all the rows' (scaled to all of them; the gradient stays exact).
    """
    T = _expansion(expand, keep)
    fi = design.fit_intercept
    k = state.n_experts

    def with_hessian(reduced, known=None):
        """Value, gradient, Hessian and shares at ``reduced``; with ``sub``, ``known``
        holds the first three of :func:`gradient` there (the Hessian alone is formed)."""
        s = state.with_flat(reduced[expand])
        if sub is not None:
            value, grad, share = gradient(reduced) if known is None else known
            st = observed_statistics(family, design, sub[0], s, sub[1])
            n = total[0]
            _, _, ph = _flat_penalty(s, alpha, fi, n, tied, family)
            return value, grad, T.T @ (st["hess"] / st["n"] + ph / n) @ T, share
        return _observed_objective(family, design, data, s, T, weights, alpha, tied)

    total = []  # the rows' total weight, from the first gradient pass

    def gradient(reduced):
        s = state.with_flat(reduced[expand])
        st = pass_statistics(family, design, data, s, "grad", weights=weights)
        st = _penalize(st, s, alpha, fi, tied, family)
        n = st["n"]
        total[:] = [n]
        g = _flat_gradient(st, k)
        return (
            st["obj"] / n,
            np.bincount(expand, weights=g, minlength=keep.size) / n,
            st["share"] / n,
        )

    def finite(*arrays):
        return all(np.all(np.isfinite(a)) for a in arrays)

    theta = np.clip(state.flat()[keep], lb, ub)
    history, steps, share = [], 0, None

    def failed():
        """The steps taken so far, not converged (their last point is ``theta``)."""
        last = history[-1] if history else np.nan
        return EngineFit(state.with_flat(theta[expand]), last, steps, False, history, share), theta

    with np.errstate(all="ignore"):
        value, grad, hess, share = with_hessian(theta)
    if not finite(value, grad, hess):
        return failed()
    history.append(value)
    converged = False
    for _ in range(min(max_iter, _NEWTON_STEPS)):
        free = ~(((theta <= lb) & (grad < 0)) | ((theta >= ub) & (grad > 0)))
        g = grad[free]
        if g.size == 0 or np.max(np.abs(g)) <= 1e-10:
            converged = True
            break
        A = -hess[np.ix_(free, free)]
        A = 0.5 * (A + A.T)
        scale = max(float(np.max(np.abs(np.diag(A)), initial=0.0)), 1e-12)
        lam = 0.0
        for _ in range(30):
            try:
                chol = np.linalg.cholesky(A + lam * scale * np.eye(len(A)))
                break
            except np.linalg.LinAlgError:
                lam = 1e-10 if lam == 0.0 else 10.0 * lam
        else:
            return failed()
        direction = np.linalg.solve(chol.T, np.linalg.solve(chol, g))
        decrement = float(g @ direction)
        if decrement <= 1e-15 * max(1.0, abs(value)):
            converged = True
            break
        t = 1.0
        for _ in range(40):
            trial = theta.copy()
            trial[free] = np.clip(theta[free] + t * direction, lb[free], ub[free])
            with np.errstate(all="ignore"):
                got = gradient(trial)
            if np.isfinite(got[0]) and got[0] >= value + 1e-4 * t * float(
                g @ (trial - theta)[free]
            ):
                break
            t *= 0.5
        else:
            break
        if not finite(got[1]):
            return failed()
        slow = np.max(np.abs(got[1][free]), initial=0.0) > (
            _CHORD_RATE if sub is None else _CHORD_RATE_SUB
        ) * np.max(np.abs(g))
        theta = trial
        value, grad, share = got
        if slow:
            # the chord Hessian no longer predicts the steps: form it afresh here
            with np.errstate(all="ignore"):
                value, grad, hess, share = with_hessian(theta, (value, grad, share))
            if not finite(value, grad, hess):
                return failed()
        history.append(value)
        steps += 1
    if not converged:
        return failed()
    return EngineFit(state.with_flat(theta[expand]), value, steps, True, history, share), theta


def _newton_finish(fun, theta, value, jac, lb, ub, history, max_steps=6, hessian=None):
    """Newton steps from L-BFGS's answer, to rounding level.

    L-BFGS stops with a gradient of about 1e-8; a few Newton steps take it to
    rounding level, so that the answer is reproducible to many digits (a fit
    with integer weights then equals one on repeated rows to ~1e-12).
    Coordinates at their bounds stay there.  The Hessian of ``fun`` in the free
    coordinates is ``hessian(theta, idx)`` (the exact one, one pass of about ten
    gradient passes' work) or, without it, forward differences of the exact
    gradient (``p`` passes).  It is formed once and kept while each step shrinks
    the gradient at least tenfold (a chord Newton method: near the optimum the
    Hessian barely changes); a slow step with a stale Hessian forms it again, and
    a slow step with a fresh one ends the steps: the gradient is at its rounding
    floor (on real fits, the first step reaches it and further Hessians buy
    nothing).  Used only for small problems.
    """
    steps = 0
    H, H_idx, fresh = None, None, False
    for _ in range(max_steps):
        free = ~(((theta <= lb) & (jac > 0)) | ((theta >= ub) & (jac < 0)))
        g = jac[free]
        if g.size == 0 or np.max(np.abs(g)) <= 1e-14 * max(1.0, abs(value)):
            break
        idx = np.flatnonzero(free)
        if H is None or not np.array_equal(idx, H_idx):
            with np.errstate(all="ignore"):
                H = _fd_hessian(fun, theta, jac, idx) if hessian is None else hessian(theta, idx)
            H_idx, fresh = idx, True
        if not np.all(np.isfinite(H)):
            break  # a difference step left the domain (an overflow): keep L-BFGS's point
        # least squares: directions the data do not determine (a singular
        # Hessian) get no step
        try:
            direction = -np.linalg.lstsq(H, g, rcond=1e-10)[0]
        except np.linalg.LinAlgError:
            break  # LAPACK's SVD did not converge: keep L-BFGS's point
        if not np.all(np.isfinite(direction)) or g @ direction >= 0:
            break  # not a descent direction: not at a strict local optimum
        t = 1.0
        for _ in range(20):
            trial = theta.copy()
            trial[idx] = np.clip(theta[idx] + t * direction, lb[idx], ub[idx])
            f_trial, g_trial = fun(trial)
            if f_trial <= value:
                break
            t *= 0.5
        else:
            break
        slow = np.max(np.abs(g_trial[idx])) > 0.1 * np.max(np.abs(g))
        theta, value, jac = trial, float(f_trial), g_trial
        history.append(-value)
        steps += 1
        if slow and fresh:
            break  # a fresh Hessian's step is slow: the rounding floor
        if slow:
            H = None  # a stale Hessian's slow step: the next one forms it afresh
        fresh = False
    return theta, value, jac, steps


def _fd_hessian(fun, theta, jac, idx):
    """Forward differences of the exact gradient in the coordinates ``idx``, symmetrised."""
    H = np.empty((idx.size, idx.size))
    for col, j in enumerate(idx):
        h = 1e-7 * max(1.0, abs(theta[j]))
        up = theta.copy()
        up[j] += h
        H[:, col] = (fun(up)[1][idx] - jac[idx]) / h
    return 0.5 * (H + H.T)


# -------------------------------------------------------------------- starts
def _gate_fit(Z, post, weights=None, steps=8):
    """Gate coefficients fitted to fixed responsibilities (Newton on soft targets)."""
    k = post.shape[1]
    V = np.zeros((k, Z.shape[1]))
    if k == 1:
        return V
    w = np.ones(len(Z)) if weights is None else weights
    for _ in range(steps):
        p = softmax(Z @ V.T, axis=1)
        g = (((post - p) * w[:, None]).T @ Z)[: k - 1].ravel()
        H = _gate_hessian(p[:, : k - 1] * w[:, None], p[:, : k - 1], Z)
        pg = Z.shape[1]
        H = H.reshape((k - 1) * pg, (k - 1) * pg) + 1e-6 * w.sum() * np.eye((k - 1) * pg)
        V[: k - 1] += _solve(H, g).reshape(k - 1, pg)
    return V


def _ridge_lstsq(U, h, w, ridge):
    """Weighted least squares with a ridge relative to the total weight (``ridge * sum(w)``)."""
    Uw = U * w[:, None]
    return np.linalg.solve(Uw.T @ U + ridge * w.sum() * np.eye(U.shape[1]), Uw.T @ h)


def state_from_responsibilities(
    family, design, X, y, post, log_floor=-np.inf, steps=6, weights=None, tied=None
):
    """Parameters fitted to fixed responsibilities (scoring M-steps), in memory."""
    k = post.shape[1]
    U, Z = design.expert_matrix(X), design.gate_matrix(X)
    q = family.n_predictors
    h = design.family_at(family, X).working_response(y) - design.offset(X)
    rw = np.ones(len(y)) if weights is None else weights
    coef = np.zeros((k, q, U.shape[1]))
    for i in range(k if family.least_squares_start else 0):
        coef[i, :, :] = _ridge_lstsq(U, h, (post[:, i] + 1e-8) * rw, 1e-6)
    disp = np.tile(np.log(family.initial_dispersion(y)), (k, 1))
    state = tie(State(coef, disp, _gate_fit(Z, post, weights)), tied)
    bounds = _bounds(family, k, log_floor)
    data = Data(X, y)
    if takes_closed_step(family, data, tied):  # the exact M-step in one
        stats = pass_statistics(
            family, design, data, state, "moments", fixed_post=post, weights=weights
        )
        state.coef, state.log_disp = _closed_experts(
            family, stats, state, 0.0, design.fit_intercept, tied, bounds
        )
        return state
    for _ in range(steps):
        stats = pass_statistics(
            family, design, data, state, "hess", fixed_post=post, weights=weights
        )
        new, _ = _scoring_step(stats, state, bounds, tied)
        new.gate = state.gate
        state = new
    return state


def _weighted_quantiles(values, levels, weights):
    if weights is None:
        return np.quantile(values, levels, method="inverted_cdf")
    return np.quantile(values, levels, method="inverted_cdf", weights=weights)


def _binned(values, k, weights):
    """Hard partition of the rows into ``k`` weighted-quantile bins of ``values``."""
    edges = _weighted_quantiles(values, np.linspace(0, 1, k + 1)[1:-1], weights)
    return np.eye(k)[np.searchsorted(edges, values)]


def _candidates(family, design, X, y, k, n, rng, weights=None, partitions=False):
    """Responsibility matrices of ``n`` diverse starts (rows sum to one).

    Every candidate is a function of the rows' values (random directions and
    gates applied to each row, weighted quantiles), never of their order or
    count: a row repeated ``m`` times and a row of weight ``m`` start alike,
    so integer weights fit as repeated rows do.

    * residual: one expert fitted to all rows, rows binned by residual;
    * gate: a random gate on the gate's columns;
    * projection: rows binned along a random direction of (expert columns, y);
    * joint: a random soft gate on (gate columns, y);
    * partition (with ``partitions``, :func:`random_partitions` of them, added
      to the above): a random hard partition of the rows, hashed from their values
      (:func:`moelearn.screening.hashed_partitions`), the classical random
      start of EM (flexmix's): it reaches groupings of rows that no direction
      of ``(x, y)`` separates, such as rows with equal covariates whose
      responses come from different experts.
    """
    Z = design.gate_matrix(X)
    h = design.family_at(family, X).working_response(y) - design.offset(X)
    w = np.ones(len(h)) if weights is None else weights
    mean = np.average(h, weights=w)
    hs = (h - mean) / max(np.sqrt(np.average((h - mean) ** 2, weights=w)), 1e-12)
    out, kinds = [], []
    U = design.expert_matrix(X)
    # a slight ridge (relative to the total weight) keeps the residuals defined
    # when the expert has as many columns as rows
    beta = _ridge_lstsq(U, h, w, 1e-3)
    out.append(_binned(h - U @ beta, k, weights))
    kinds.append("residual")
    feats = np.hstack([X[:, design.expert_columns], 2.0 * hs[:, None]])
    joint = np.hstack([Z, 2.0 * hs[:, None]])
    has_gate = Z.shape[1] > int(design.fit_intercept)
    while len(out) < n:
        kind = ("gate", "projection", "joint")[len(out) % 3]
        if kind == "gate" and not has_gate:
            kind = "joint"
        if kind == "gate":
            V = rng.standard_normal((k, Z.shape[1])) * 2.0
            if design.fit_intercept:
                V[:, 0] = 0.0
            post = softmax(Z @ V.T, axis=1)
        elif kind == "projection":
            u = rng.standard_normal(feats.shape[1])
            post = 0.9 * _binned(feats @ u, k, weights) + 0.1 / k
        else:
            V = rng.standard_normal((k, joint.shape[1])) * 2.0
            post = softmax(joint @ V.T, axis=1)
        out.append(post)
        kinds.append(kind)
    if partitions:
        rows = np.hstack([X, np.asarray(y, dtype=float)[:, None]])
        count = random_partitions(family, n)
        # softened a little, as the projections are, so that EM can move rows
        out.extend(0.9 * screening.hashed_partitions(rows, k, count, rng) + 0.1 / k)
        kinds.extend(["partition"] * count)
    return list(zip(kinds, out, strict=True))


def experts_at_bound(state, family, log_floor):
    """Which experts' spread sits at a degenerate end, a boolean array of shape (k,).

    The ends are the family's :attr:`~moelearn.families.Family.collapse_ends`:
    ``sigma`` at its floor, or a Gamma ``shape`` at its upper bound; either way
    the component has collapsed onto (nearly) tied responses, where the
    likelihood grows without bound.
    """
    names = family.dispersion_names
    out = np.zeros(state.n_experts, dtype=bool)
    high = family.dispersion_bounds()[1]
    for name, end in family.collapse_ends:
        j = names.index(name)
        if end == "low":
            if np.isfinite(log_floor):
                out |= state.log_disp[:, j] <= log_floor + 1e-6
        else:
            out |= state.log_disp[:, j] >= high[j] - 1e-6
    return out


def at_floor(state, family, log_floor):
    """Whether some expert's spread sits at its bound (a collapsed component)."""
    return bool(np.any(experts_at_bound(state, family, log_floor)))


def _rank(fit, min_share, family=None, log_floor=-np.inf):
    collapsed = bool(np.min(fit.shares) < min_share)
    if family is not None:
        collapsed = collapsed or at_floor(fit.state, family, log_floor)
    return (collapsed, -fit.log_likelihood)


#: Two objectives within this (relative) stand at one optimum: EM stops its climb
#: towards one at a tolerance, so its ends differ by about this much.
SAME_OPTIMUM = 1e-6


def _same_optimum(a, b):
    """Whether objectives ``a`` and ``b`` stand at one optimum (:data:`SAME_OPTIMUM`)."""
    return abs(a - b) <= SAME_OPTIMUM * max(1.0, abs(a), abs(b))


def _ordered(entries):
    """Entries ``(rank, kind, fit)`` best first; values within 1e-9 tie and keep their order.

    A tie broken by round-off would make the winner depend on the order of
    the sums (rows repeated or weighted, shuffled): ties go to the earlier
    candidate instead.
    """
    entries = sorted(entries, key=lambda t: t[0])  # stable
    out = []
    while entries:
        (collapsed, value), *_ = entries[0]
        scale = 1e-9 * max(1.0, abs(value))
        tied = [e for e in entries if e[0][0] == collapsed and e[0][1] <= value + scale]
        first = min(tied, key=lambda e: e[3])
        out.append(first)
        entries = [e for e in entries if e is not first]
    return out


# Class-label experts (Bernoulli, multinomial): their unpenalised likelihood often has
# suprema at infinity (an expert that separates its rows), one per way of separating,
# and which one EM reaches depends on the start.  Their screen runs every candidate
# at once (moelearn.screening): the generated starts plus DISCRETE_PARTITIONS random
# hard partitions of the rows per generated start (the classical start of EM for
# mixtures of GLMs), DISCRETE_SCREEN_ITER EM iterations whose M-step takes
# Family.screen_steps steps (experts, gate), then DISCRETE_LONG_ITER more for the best
# DISCRETE_LONG.  Random partitions start near the point where all experts agree and
# leave it, towards the separated configurations, only after some dozens of such
# iterations; a separated configuration may need a hundred more to show its value.
# Measured on 10 binary data sets x K = 2, 3 x 3 seeds against flexmix's best of two
# 5-start runs: 2 shortfalls of 60 (16 with the former 20-iteration screen).  Two expert
# steps per M-step speed the binary screen; for multinomial experts they left fgl
# (6 classes, K = 3, alpha = 0) at -9.53, -8.25, -13.84, -23.24 over seeds 0-3 against
# -6.74, -6.97, -6.92, -14.89 with one step, so those take one (at about twice the time).
# With a ridge (alpha > 0, the default) every candidate has a finite fixed point and
# both runs are accelerated by SQUAREM (moelearn.screening), which shortens the slow
# departure from the point where the experts agree: DISCRETE_ACCELERATED_ITER
# iterations instead.  On the 8 data sets of benchmarks/classification.py and two
# synthetic ones x K = 2, 3 x seeds 0-2 (alpha = 1e-4), 53 of 60 fits reach the best
# objective any search found (within 0.1 nats) against 44 of 60 unaccelerated, in 0.75x
# the time.  Unpenalised, a separated expert has no fixed point and the accelerated
# screen reached lower suprema (43 of 60 against 50; 60 + 140 accelerated: 49, 1.2x
# the time), so alpha = 0 keeps the plain screen (DESIGN §13).
DISCRETE_PARTITIONS = 3.0
DISCRETE_SCREEN_ITER = 60
DISCRETE_LONG = 10
DISCRETE_LONG_ITER = 140
DISCRETE_ACCELERATE = True
DISCRETE_ACCELERATED_ITER = (40, 90)
# every extrapolation, however short, pays in this screen (53 of 60 against 48 with
# screening.SQUAREM_MIN_STEP, DESIGN §13)
DISCRETE_SQUAREM_MIN_STEP = 1.0


# Regression experts: one random hard partition per REGRESSION_PARTITIONS generated
# starts, and the best of them is a finalist beside the directed starts (DESIGN §13).
REGRESSION_PARTITIONS = 3
# EM iterations of each finalist before they are ranked
FINALIST_EM_ITER = 200
# SQUAREM (see em) in the regression families' batched screen, and in the finalists' EM
# where the search runs on all the rows: on 120 fits of 5 models (Student-t, Poisson,
# Gamma, negative-binomial and Gaussian with gate columns; n = 300 to 2 000; K = 2 to 4;
# 3 seeds) 99 reach the best objective found (within 0.1 nats) against 85 unaccelerated,
# in 0.80x the time.  On a subsample the finalists' EM stays plain: converged there, it
# reached the subsample's own best configuration, 660-850 nats below on all 1e5 rows
# (2 of 15 fits; DESIGN §13).
SCREEN_ACCELERATE = True
FINALIST_ACCELERATE = True
# A subsample search's best fit is polished on MIDWAY_FACTOR times the subsample's rows
# before all of them (engine._midway), where there are at least twice as many; 0: never
MIDWAY_FACTOR = 8


def random_partitions(family, n_candidates):
    """How many random hard partitions :func:`search` adds to ``n_candidates`` starts."""
    if not screening.supports(family):
        return -(-n_candidates // REGRESSION_PARTITIONS)
    return int(round(DISCRETE_PARTITIONS * n_candidates))


def _screen_discrete(
    family, design, sub_X, sub_y, k, n_candidates, rng, sub_weights, starts, alpha, tol, min_share
):
    """Screen the starts of class-label experts in one batch (:mod:`moelearn.screening`).

    Returns the entries ``(rank, kind, fit, order)`` of :func:`search`'s screen.
    """
    candidates = _candidates(family, design, sub_X, sub_y, k, n_candidates, rng, sub_weights)
    n_parts = random_partitions(family, n_candidates)
    feats = np.hstack([sub_X, np.asarray(sub_y, dtype=float)[:, None]])
    kinds = [kind for kind, _ in candidates] + ["partition"] * n_parts
    posts = np.stack([post for _, post in candidates])
    if n_parts:
        posts = np.concatenate([posts, screening.hashed_partitions(feats, k, n_parts, rng)])
    accelerate = DISCRETE_ACCELERATE and as_penalty(alpha).active
    screen_iter, long_iter = (
        DISCRETE_ACCELERATED_ITER if accelerate else (DISCRETE_SCREEN_ITER, DISCRETE_LONG_ITER)
    )
    opts = dict(
        n_iter=screen_iter,
        tol=tol,
        alpha=alpha,
        weights=sub_weights,
        inner=family.screen_steps,
        accelerate=accelerate,
        min_step=DISCRETE_SQUAREM_MIN_STEP,
    )
    results = []
    if starts:
        coef = np.stack([st.coef for _, st in starts])
        gate = np.stack([st.gate for _, st in starts])
        results.append(
            (
                [name for name, _ in starts],
                screening.batched_em(family, design, sub_X, sub_y, coef=coef, gate=gate, **opts),
            )
        )
    results.append((kinds, screening.batched_em(family, design, sub_X, sub_y, posts=posts, **opts)))

    def entries(names, result, iters):
        coef, gate, obj, shares, log_disp = result
        out = []
        for i, kind in enumerate(names):
            if np.isfinite(obj[i]):
                state = State(coef[i], log_disp[i], gate[i])
                fit = EngineFit(state, float(obj[i]), iters, False, [float(obj[i])], shares[i])
                out.append((_rank(fit, min_share, family), kind, fit))
        return out

    screened = [e for names, res in results for e in entries(names, res, screen_iter)]
    screened = [(*e, order) for order, e in enumerate(screened)]
    # the best few go on together: a separated configuration may need a few hundred
    # iterations to show its full likelihood
    top = _ordered(screened)[:DISCRETE_LONG]
    if top and long_iter:
        coef = np.stack([fit.state.coef for _, _, fit, _ in top])
        gate = np.stack([fit.state.gate for _, _, fit, _ in top])
        longer = screening.batched_em(
            family,
            design,
            sub_X,
            sub_y,
            coef=coef,
            gate=gate,
            **dict(opts, n_iter=long_iter),
        )
        iters = screen_iter + long_iter
        again = entries([kind for _, kind, _, _ in top], longer, iters)
        if len(again) == len(top):
            done = {order: (*e, order) for e, (*_, order) in zip(again, top, strict=True)}
            screened = [done.get(e[3], e) for e in screened]
    return screened


# Remove-and-split moves (split-and-merge EM in spirit, Ueda et al. 2000) from the best
# finalist of a continuous family and each other distinct, converged one (at most
# MOVE_STARTS in all; one per optimum the finalists reached, _move_starts), side by side:
# each round screens up to MOVES_PER_ROUND moves of every still-climbing start in one
# batch (every ordered pair of experts, the split by the residual's sign, by a random
# hyperplane of the gate's columns or by the size of the residual, the tail), runs each
# start's best MOVE_REFINES in one more as the finalists are run, and keeps a start's best
# when it raises its objective; a start that reaches an optimum another holds stops there
# (map_optima's cases x seeds 0-19: the same 292 of 380 hits as one start after another;
# seeds 0-9 in 0.67x its time, where batching without the stop gave 0.81x); at most
# MOVE_ROUNDS rounds, none when the moment start and every other finalist reached one
# optimum (the theory regime: the moves cost 0.26 s of a 1.1 s fit at n = 1e5, d = 10,
# k = 3, for nothing; without the moment start, as on mcycle (k > d), agreeing finalists
# can all sit in one local optimum, which is what the moves leave).
# A move reaches a basin where one expert covers two regimes while two others share
# one: whole-model starts reach it seldom, and a local climb never leaves it.  The
# "tail" split gives the freed slot the fifth of an expert's rows that it fits worst:
# the start of a small, sharp expert (or of a robust one beside an outlying group).  On the
# 19 cases of benchmarks/map_optima.py x seeds 0-9 the default reached the best known
# maximum of its objective in 132 of 190 fits with the moves against 120 without (the
# summed shortfall 418 nats against 544), in 1.35x the time; three refines per round or
# ten rounds added one hit or none.  Moves from every distinct finalist and the tail
# split: DESIGN §13 gives what they add (map_optima 152 of 190) and cost (up to 3x the
# time at k = 4, 5).
MOVE_ROUNDS = 5
MOVES_PER_ROUND = 36
MOVE_REFINES = 1
MOVE_STARTS = 4
MOVE_KINDS = ("residual", "gate", "tail")
TAIL_SHARE = 0.2


def _move_starts(finalists):
    """The finalists the moves start from: the best, and after it, up to ``MOVE_STARTS``
    in all, each converged finalist whose objective differs from every better pick's (one
    per optimum reached, :func:`_same_optimum`).  A finalist whose EM stopped at its
    iteration limit is a point on a slow climb, not an optimum: its moves would only go
    on climbing (Poisson experts on 2,500 rows: four such starts, five rounds each, ten
    seconds, for the optimum the best finalist's moves reach alone)."""
    out = finalists[:1]
    for e in finalists[1:]:
        if len(out) >= MOVE_STARTS:
            break
        if e[2].converged and not any(_same_optimum(e[0][1], o[0][1]) for o in out):
            out.append(e)
    return out


def _posterior(family, design, X, y, state):
    """Each row's posterior over the experts, and the residuals of the working response."""
    fam = design.family_at(family, X)
    U, Z = design.expert_matrix(X), design.gate_matrix(X)
    eta, log_gate = _predictors(design, X, U, Z, state)
    with np.errstate(all="ignore"):
        joint = log_gate + fam.log_density(y, eta, np.exp(state.log_disp))
    joint = np.where(np.isfinite(joint), joint, -1e300)
    mean = eta if eta.ndim == 2 else eta[..., 0]
    h = fam.working_response(y) - design.offset(X)
    return softmax(joint, axis=1), h[:, None] - mean


def _above_mean(values, mass):
    return values > np.average(values, weights=mass + 1e-300)


def _move(post, resid, Z, remove, split, kind, rng, weights):
    """Responsibilities with expert ``remove``'s rows given to the others (in proportion
    to theirs) and expert ``split``'s rows divided between it and the freed slot: by the
    sign of its residual (``kind="residual"``), by a random hyperplane of the gate's
    columns (``"gate"``), or its worst-fitted rows to the freed slot (``"tail"``)."""
    new = np.delete(post, remove, axis=1)
    new /= np.maximum(new.sum(axis=1, keepdims=True), 1e-300)
    new = np.insert(new, remove, 0.0, axis=1)
    share = new[:, split]
    mass = share if weights is None else share * weights
    if kind == "gate":
        side = _above_mean(Z @ rng.standard_normal(Z.shape[1]), mass)
    elif kind == "tail":
        # the expert's worst-fitted rows, the largest TAIL_SHARE of its residuals by weight
        values = np.abs(resid[:, split])
        side = values > _weighted_quantiles(values, [1.0 - TAIL_SHARE], mass + 1e-300)[0]
    else:
        side = _above_mean(resid[:, split], mass)
    new[:, remove] = share * side
    new[:, split] = share * ~side
    return 0.95 * new + 0.05 / post.shape[1]


def _better(candidate, current):
    """Whether entry ``candidate`` ranks above ``current`` by more than one optimum's width
    (a sound fit above a collapsed one, or a higher objective: ranks hold its negation)."""
    (bad, value), (was_bad, was) = candidate[0], current[0]
    gain = was - value
    return (was_bad and not bad) or (bad == was_bad and gain > SAME_OPTIMUM * max(1.0, abs(was)))


def _improve_by_moves(family, design, sub, entries, batch, rank, run_all, rng, weights):
    """Rounds of remove-and-split moves from each of ``entries`` (finalists), while one improves.

    The starts climb side by side: each round screens every still-climbing start's moves
    in one batch and runs each start's best :data:`MOVE_REFINES` in one more
    (``run_all(states)`` runs starts as the finalists are run; ``rank(fit)`` ranks a fit).
    A start stops when no move raises its objective, or when it reaches the optimum
    another start holds (:func:`_same_optimum`): from there its moves would repeat that
    start's.  Returns, for each entry, its best entry and how many moves it took.
    """
    k = entries[0][2].state.n_experts
    Z = design.gate_matrix(sub.X)
    pairs = [(r, s, kind) for r in range(k) for s in range(k) if s != r for kind in MOVE_KINDS]
    best = list(entries)
    moved = [0] * len(entries)
    climbing = list(range(len(entries)))
    for _ in range(MOVE_ROUNDS):
        if not climbing:
            break
        posts, owner = [], []
        for c in climbing:
            post, resid = _posterior(family, design, sub.X, sub.y, best[c][2].state)
            moves = pairs
            if len(moves) > MOVES_PER_ROUND:
                chosen = np.sort(rng.choice(len(moves), MOVES_PER_ROUND, False))
                moves = [moves[i] for i in chosen]
            posts.extend(_move(post, resid, Z, *m, rng, weights) for m in moves)
            owner.extend([c] * len(moves))
        coef, gate, obj, shares, log_disp = screening.batched_em(
            family, design, sub.X, sub.y, posts=np.stack(posts), **batch
        )
        owner = np.asarray(owner)
        ranked = np.argsort(-np.where(np.isfinite(obj), obj, -np.inf), kind="stable")
        picks = [
            (c, i)
            for c in climbing
            for i in [i for i in ranked if owner[i] == c and np.isfinite(obj[i])][:MOVE_REFINES]
        ]
        if not picks:
            break
        fits = run_all([State(coef[i], log_disp[i], gate[i]) for _, i in picks])
        improved = []
        for (c, _), fit in zip(picks, fits, strict=True):
            candidate = (rank(fit), best[c][1], fit, best[c][3])
            # above a start whose EM stopped at its limit, a move that stopped there too
            # may only be further up the same climb: it counts once it converged
            sound = fit.converged or best[c][2].converged
            if sound and _better(candidate, best[c]):
                if c not in improved:
                    improved.append(c)
                    moved[c] += 1
                best[c] = candidate
        # a start that reached the optimum of one that stopped, or of an earlier one that
        # climbs on, stops there
        climbing = []
        for c in improved:
            held = [o for o in range(len(best)) if o in climbing or o not in improved]
            if not any(_same_optimum(best[c][0][1], best[o][0][1]) for o in held):
                climbing.append(c)
    return best, moved


def search(
    family: Family,
    design: Design,
    data: Data,
    sub_X,
    sub_y,
    n_experts,
    *,
    n_candidates=20,
    n_finalists=3,
    screen_iter=20,
    max_iter=1000,
    tol=1e-8,
    log_floor=-np.inf,
    random_state=None,
    alpha=0.0,
    weights=None,
    sub_weights=None,
    starts=(),
    tied=None,
    finish="lbfgs",
):
    """Screen starts on ``(sub_X, sub_y)``; refine the best on ``data``.

    Class-label families (:func:`moelearn.screening.supports`) are screened in one
    batch with random hard partitions among the starts (see ``DISCRETE_PARTITIONS``);
    there ``screen_iter`` gives way to ``DISCRETE_SCREEN_ITER``.

    ``weights`` (in-memory data only) and ``sub_weights`` weight the rows of
    ``data`` and of the subsample; ``alpha`` is the ridge of :func:`em`.
    ``starts`` are extra ``(name, State)`` pairs screened before the generated
    candidates (e.g. a consistent moment start); ``finish`` is the final
    refinement's optimiser (:func:`refine_fit`).

    Returns
    -------
    fit : EngineFit
        The final fit on all the data (EM, then by default the polish of :func:`polish`).
    kind : str
        The kind of start that won.
    """
    rng = random_state
    k = n_experts
    # the per-block products are thin (rows x a few dozen columns): one BLAS thread
    width = k * (design.n_expert * family.n_predictors + design.n_gate)
    sub = Data(sub_X, sub_y)
    opts = dict(log_floor=log_floor, alpha=alpha, tied=tied)
    sub_opts = dict(opts, weights=sub_weights)
    full_opts = dict(opts, weights=weights)
    min_share = _min_share(family, design, len(sub_y) if sub_weights is None else sub_weights)
    # whether the search runs on all the rows (no subsample)
    same = data.in_memory and data.n_samples == len(sub_y) and sub_weights is weights
    screened = []
    with blas_threads(width), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if screening.supports(family):
            screened = _screen_discrete(
                family,
                design,
                sub_X,
                sub_y,
                k,
                n_candidates,
                rng,
                sub_weights,
                starts,
                alpha,
                tol,
                min_share,
            )
        else:
            candidates = _candidates(
                family, design, sub_X, sub_y, k, n_candidates, rng, sub_weights, partitions=True
            )
            # every start at once (moelearn.screening): the extra starts are parameters
            # already, the generated candidates responsibilities
            batch = dict(
                n_iter=screen_iter,
                tol=tol,
                alpha=alpha,
                weights=sub_weights,
                bounds=_bounds(family, k, log_floor),
                tied=tied,
                accelerate=SCREEN_ACCELERATE,
            )
            results = []
            if starts:
                results.append(
                    (
                        [name for name, _ in starts],
                        screening.batched_em(
                            family,
                            design,
                            sub_X,
                            sub_y,
                            coef=np.stack([st.coef for _, st in starts]),
                            gate=np.stack([st.gate for _, st in starts]),
                            log_disp=np.stack([st.log_disp for _, st in starts]),
                            **batch,
                        ),
                    )
                )
            posts = np.stack([post for _, post in candidates])
            results.append(
                (
                    [kind for kind, _ in candidates],
                    screening.batched_em(family, design, sub_X, sub_y, posts=posts, **batch),
                )
            )
            for names, (coef, gate, obj, shares, log_disp) in results:
                for i, kind in enumerate(names):
                    if np.isfinite(obj[i]):
                        state = State(coef[i], log_disp[i], gate[i])
                        fit = EngineFit(
                            state, float(obj[i]), screen_iter, False, [float(obj[i])], shares[i]
                        )
                        screened.append(
                            (_rank(fit, min_share, family, log_floor), kind, fit, len(screened))
                        )
        if not screened:
            raise ValueError("every start failed: the data may not suit this family")
        screened = _ordered(screened)
        report(f"start search: {len(screened)} candidates screened on {len(sub_y):,} rows")
        if screening.supports(family):
            chosen = screened[:n_finalists]
        else:
            # the best few of the directed starts as before, and the best random partition
            # beside them: a short screen ranks a partition's start by a likelihood that its
            # first iterations have not yet settled, so partitions never displace them
            directed = [e for e in screened if e[1] != "partition"]
            chosen = directed[:n_finalists] + [e for e in screened if e[1] == "partition"][:1]

        def run_all(states):
            """The finalists' runs on the subsample, all at once (the EM of :func:`em`,
            batched: :func:`moelearn.screening.batched_em`); the moves' starts run alike."""
            info = {}
            coef, gate, obj, shares, log_disp = screening.batched_em(
                family,
                design,
                sub_X,
                sub_y,
                coef=np.stack([st.coef for st in states]),
                gate=np.stack([st.gate for st in states]),
                log_disp=np.stack([st.log_disp for st in states]),
                n_iter=FINALIST_EM_ITER,
                tol=max(tol, 1e-7),
                alpha=alpha,
                weights=sub_weights,
                bounds=_bounds(family, k, log_floor),
                tied=tied,
                accelerate=FINALIST_ACCELERATE and same,
                info=info,
            )
            return [
                EngineFit(
                    State(coef[i], log_disp[i], gate[i]),
                    float(obj[i]),
                    int(info["n_iter"][i]),
                    bool(info["converged"][i]),
                    info["history"][i],
                    shares[i],
                )
                for i in range(len(states))
            ]

        def rank(fit):
            return _rank(fit, min_share, family, log_floor)

        runs = run_all([fit.state for _, _, fit, _ in chosen])
        finalists = _ordered(
            [
                (rank(full), kind, full, order)
                for (_, kind, _, order), full in zip(chosen, runs, strict=True)
            ]
        )
        n_final = len(finalists)
        identified = len(sub_y) >= k * (design.n_expert * family.n_predictors + 1)
        # a start of the caller's (the consistent moment start) and every other finalist at
        # one optimum, none collapsed: the landscape the starts saw has one basin, the one
        # theory points to, and the moves (built to leave one) are skipped
        given = {name for name, _ in starts}
        bad0, top = finalists[0][0]
        settled = (
            len(finalists) > 1
            and any(e[1] in given for e in finalists)
            and all(
                not bad and not bad0 and _same_optimum(value, top)
                for (bad, value), *_ in finalists[1:]
            )
        )
        if MOVE_ROUNDS and k > 1 and identified and not settled and not screening.supports(family):
            origins = _move_starts(finalists)
            ends, moves = _improve_by_moves(
                family, design, sub, origins, batch, rank, run_all, rng, sub_weights
            )
            improved = [
                (end[0], f"{origin[1]} + {moved} split moves", *end[2:])
                for origin, end, moved in zip(origins, ends, moves, strict=True)
                if moved
            ]
            if improved:
                finalists = _ordered([*improved, *finalists])
                n_final += len(improved)
        directed = [e for e in finalists if e[1] != "partition"]
        if not screening.supports(family) and finalists[0][1] == "partition" and directed:
            # a partition's start leads after EM, whose last steps are slow: compare it
            # with the best directed start after both are polished (a seed of a mixture of
            # negative binomials: -1.364 against -1.366 per row after EM, -1.364 against
            # -1.357 after the polish)
            polished = []
            for _, kind, fit, order in (finalists[0], directed[0]):
                done = polish(
                    family, design, sub, fit.state, max_iter=max_iter, tol=tol, **sub_opts
                )
                done.history = fit.history + done.history
                done.n_iter += fit.n_iter
                polished.append((_rank(done, min_share, family, log_floor), kind, done, order))
            finalists = _ordered(polished)
    if not same and len(finalists) > 1:
        # the subsample's likelihood ranks the finalists by its rows alone: rank them by
        # the objective on all the rows, where the fit goes on (DESIGN §13)
        with blas_threads(width):
            finalists = reranked(
                finalists, lambda state: _objective(family, design, data, state, full_opts)
            )
    _, kind, best, _ = finalists[0]
    report(f"start search: {n_final} finalists run to convergence; best there: {kind}")
    grouped = getattr(data, "groups", None) is not None
    mid_rows = MIDWAY_FACTOR * len(sub_y)
    if (
        MIDWAY_FACTOR
        and not same
        and not grouped
        and data.n_samples >= 2 * mid_rows
        and exact_newton_applies(best.state, mid_rows)
    ):
        midway = _midway(family, design, data, best, mid_rows, rng, width, max_iter, tol, full_opts)
        best = best if midway is None else midway
    else:
        midway = None
    # with Newton steps ahead a few EM iterations suffice to leave the subsample's optimum
    full_em = 3 if newton_rows(best.state, data.n_samples) else 50
    with blas_threads(width):
        fit = (
            best
            if same or midway is not None
            else em(
                family,
                design,
                data,
                best.state,
                max_iter=full_em,
                tol=max(tol, 1e-7),
                **full_opts,
            )
        )
        final = refine_fit(
            family, design, data, fit.state, finish=finish, max_iter=max_iter, tol=tol, **full_opts
        )
    return _finished(final, fit, min_share, family, log_floor), kind


def _midway(family, design, data, fit, rows, rng, width, max_iter, tol, opts):
    """``fit`` polished on ``rows`` random rows of ``data``, on its way to all of them.

    The subsample's optimum lies about ``p / (2 n_sub)`` per row below the full
    data's (its parameters are off by the subsample's sampling error), far
    enough that exact Newton steps on all the rows begin outside their quadratic
    region (nine Hessians of 1e5 rows for a Poisson mixture); on ``rows``
    rows the same steps cost ``rows / n`` as much and leave the point within
    ``p / (2 rows)`` per row, where two or three steps on all the rows converge
    (no EM iterations on all the rows are needed first).  Returns None where the
    polish fails.
    """
    index = np.sort(rng.choice(data.n_samples, rows, replace=False))
    X, y, w = data.weighted_rows(index)
    if opts["weights"] is not None:
        w = np.asarray(opts["weights"])[index]
    with blas_threads(width):
        mid = polish(
            family,
            design,
            Data(X, y),
            fit.state,
            max_iter=max_iter,
            tol=tol,
            **dict(opts, weights=w),
        )
    if not (mid.converged and np.isfinite(mid.log_likelihood)):
        return None
    mid.history = fit.history + mid.history
    mid.n_iter += fit.n_iter
    return mid


def reranked(entries, objective, same_optimum=SAME_OPTIMUM):
    """Entries ``(rank, kind, fit, order)``, best first by the subsample, ranked by
    ``objective(fit.state)`` (higher is better): a collapsed fit (``rank[0]``) below
    every other, ties in their order.

    An entry whose subsample value is within ``same_optimum`` (relative) of a better
    one's stands at the same optimum, and stays behind it: the finalists' EM stops
    when an iteration changes the value by 1e-7 (relative), some ten iterations'
    worth short of its limit at EM's usual rates, and their differences on all the
    rows are then those of where each stopped, not of their optima.
    """
    kept, same = [], []
    for entry in entries:
        (collapsed, value), *_ = entry
        scale = same_optimum * max(1.0, abs(value))
        if any(k[0][0] == collapsed and abs(k[0][1] - value) <= scale for k in kept):
            same.append(entry)
        else:
            kept.append(entry)
    return (
        _ordered(
            [
                ((rank[0], -objective(fit.state)), kind, fit, order)
                for rank, kind, fit, order in kept
            ]
        )
        + same
    )


def _objective(family, design, data, state, opts):
    """The penalised mean log-likelihood of ``state`` on ``data`` (``-inf`` if not finite);
    ``opts`` holds ``weights``, ``alpha`` and ``tied``."""
    stats = pass_statistics(family, design, data, state, "value", weights=opts["weights"])
    stats = _penalize(stats, state, opts["alpha"], design.fit_intercept, opts["tied"], family)
    value = stats["obj"] / stats["n"]
    return float(value) if np.isfinite(value) else -np.inf


def expert_parameters(family, design) -> int:
    """Free parameters of one expert: its coefficients and dispersions."""
    return design.n_expert * family.n_predictors + len(family.dispersion_names)


def n_free_parameters(family, design, n_experts) -> int:
    """Free parameters of a mixture of ``n_experts`` (the gate's last row is zero)."""
    return n_experts * expert_parameters(family, design) + (n_experts - 1) * design.n_gate


def _min_share(family, design, rows):
    """The collapse rule's smallest share: an expert's parameters over the rows (or their
    weights' sum)."""
    total = float(np.sum(rows)) if np.ndim(rows) else float(rows)
    return expert_parameters(family, design) / total


def _finished(final, start, min_share, family, log_floor):
    """The polished ``final`` with the history of ``start``, flagged when collapsed; ``start``
    itself when the polish did not converge and did not improve on it."""
    final.history = start.history + final.history
    final.n_iter += start.n_iter
    final.collapsed = bool(np.min(final.shares) < min_share) or at_floor(
        final.state, family, log_floor
    )
    if not final.converged and start.converged and final.log_likelihood <= start.log_likelihood:
        return start
    return final


def grouped_search(
    family: Family,
    design: Design,
    data: Data,
    n_experts,
    *,
    n_candidates=20,
    n_finalists=3,
    screen_iter=20,
    max_iter=1000,
    tol=1e-8,
    log_floor=-np.inf,
    random_state=None,
    alpha=0.0,
    weights=None,
    starts=(),
    tied=None,
    finish="lbfgs",
):
    """The start search of :func:`search` for grouped rows (``data.groups``).

    Candidates: the generated responsibilities of :func:`_candidates` averaged
    over each group, random hard partitions of the groups (flexmix's start),
    and ``starts`` (e.g. the ungrouped fit; out of core only these); each gets ``screen_iter`` EM
    iterations of the grouped likelihood, the best ``n_finalists`` go on to
    200, and the best of those is refined on all the data (:func:`refine_fit` by
    ``finish``).

    Returns
    -------
    fit : EngineFit
    kind : str
        The start the fit came from.
    n_starts : int
        The starts screened.
    """
    rng = random_state
    k = n_experts
    groups = data.groups
    X, y = data.X, data.y
    width = k * (design.n_expert * family.n_predictors + design.n_gate)
    opts = dict(log_floor=log_floor, alpha=alpha, tied=tied, weights=weights)
    min_share = _min_share(family, design, data.n_samples if weights is None else weights)
    named = []
    if data.in_memory:  # out of core the search starts from ``starts`` (the ungrouped fit)
        generated = _candidates(family, design, X, y, k, n_candidates, rng, weights)
        sizes = groups.sizes[:, None]
        named = [(kind, (groups.sum_rows(post) / sizes)[groups.codes]) for kind, post in generated]
        named += [
            ("partition", np.eye(k)[rng.integers(k, size=groups.n_groups)][groups.codes])
            for _ in range(max(2, n_candidates // 2))
        ]
    screened = []
    with blas_threads(width), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        states = list(starts) + [
            (
                kind,
                state_from_responsibilities(
                    family, design, X, y, post, log_floor, weights=weights, tied=tied
                ),
            )
            for kind, post in named
        ]
        for kind, state in states:
            fit = em(family, design, data, state, max_iter=screen_iter, tol=tol, **opts)
            if np.isfinite(fit.log_likelihood):
                entry = (_rank(fit, min_share, family, log_floor), kind, fit, len(screened))
                screened.append(entry)
        if not screened:
            raise ValueError("every start failed: the data may not suit this family")
        screened = _ordered(screened)
        report(f"start search: {len(screened)} candidates screened on {groups.n_groups:,} groups")
        finalists = []
        for _, kind, fit, order in screened[:n_finalists]:
            more = em(family, design, data, fit.state, max_iter=200, tol=max(tol, 1e-7), **opts)
            more.history = fit.history + more.history
            more.n_iter += fit.n_iter
            finalists.append((_rank(more, min_share, family, log_floor), kind, more, order))
        _, kind, best, _ = _ordered(finalists)[0]
        final = refine_fit(
            family, design, data, best.state, finish=finish, max_iter=max_iter, tol=tol, **opts
        )
    return _finished(final, best, min_share, family, log_floor), kind, len(states)


# ------------------------------------------------------------ degenerate fits
def _min_norm_fit(U, h, w, fit_intercept):
    """Weighted least squares of ``h`` on ``U`` with the smallest norm of the slopes.

    The intercept (the first column when fitted) is free, as under the
    engine's ridge; on a consistent system this is the minimum-norm
    interpolant.  Singular values below ``1e-10`` of the largest count as zero.
    """
    sw = np.sqrt(w)
    if not fit_intercept:
        return np.linalg.lstsq(sw[:, None] * U, sw * h, rcond=1e-10)[0]
    x_mean, h_mean = w @ U[:, 1:] / w.sum(), w @ h / w.sum()
    slopes = np.linalg.lstsq(sw[:, None] * (U[:, 1:] - x_mean), sw * (h - h_mean), rcond=1e-10)[0]
    return np.concatenate([[h_mean - x_mean @ slopes], slopes])


# the share below which an expert carries no row (canonical)
SWITCHED_OFF = 1e-8


def canonical(family, design, data, fit, *, log_floor=-np.inf, weights=None, alpha=0.0, tied=None):
    """The canonical point of a fit that one expert would reproduce (DESIGN §13).

    When the experts that carry the rows (a share of at least
    ``SWITCHED_OFF``) have their spread at its bound (:func:`experts_at_bound`)
    and a single linear predictor passes through every row of positive
    weight, the likelihood stands at its ceiling and identifies neither the
    gate nor the experts' coefficients beyond the rows (nor any parameter of
    an expert the gate has switched off): the optimisers stop anywhere on
    that plateau.  The canonical point is the one-expert fit repeated: every
    expert the minimum-norm fit of the working response
    (:func:`_min_norm_fit`, the limit of the engine's ridge maximum), with
    the spreads of the expert that reproduces the rows best, and the gate
    zero (the minimum-norm gate; with equal experts it does not matter).  It
    is a function of the weighted rows alone (computed on the distinct rows).
    Under a dispersion prior the experts the gate switched off sit at the
    prior's mode, which copies of the best expert's spreads would leave: where
    that full point's objective is lower, only the coefficients of the experts
    that carry the rows move to the minimum-norm fit.

    Every other fit is returned unchanged, as is this one when the data are
    out of core, the family is not a regression family, or the canonical
    point's (penalised) log-likelihood would be lower than the fit's.
    """
    if not (data.in_memory and family.n_predictors == 1 and family.least_squares_start):
        return fit
    state = fit.state
    bound = experts_at_bound(state, family, log_floor)
    if not np.any(bound):
        return fit
    # an expert the gate has switched off (a share below SWITCHED_OFF) carries no row: no
    # optimiser moves its parameters (weights against repeated rows left its spread
    # apart by 1e-5 at a share of 1e-14)
    shares = fit.shares
    if shares is None:
        stats = pass_statistics(family, design, data, state, "value", weights=weights)
        shares = stats["share"] / stats["n"]
    if not np.all(bound | (np.asarray(shares) < SWITCHED_OFF)):
        return fit
    k = state.n_experts
    w = np.ones(data.n_samples) if weights is None else np.asarray(weights, dtype=float)
    rows = w > 0
    X, y, w = data.X[rows], data.y[rows], w[rows]
    U, off = design.expert_matrix(X), design.offset(X)
    rows_family = design.family_at(family, X)
    with np.errstate(all="ignore"):
        h = rows_family.working_response(y) - off
        # on the distinct rows, their weights summed (in their sorted order): a row of weight
        # m and m repeated rows give the same fit to the last bit, not to rounding
        distinct, where = np.unique(np.column_stack([U, h]), axis=0, return_inverse=True)
        b = _min_norm_fit(
            distinct[:, :-1],
            distinct[:, -1],
            np.bincount(np.ravel(where), weights=w),
            design.fit_intercept,
        )
        logf = rows_family.log_density(y, np.outer(U @ b + off, np.ones(k)), np.exp(state.log_disp))
    if not np.all(np.isfinite(b)):
        return fit
    best = int(np.argmax(w @ logf))
    full = State(
        np.tile(b, (k, 1, 1)), np.tile(state.log_disp[best], (k, 1)), np.zeros_like(state.gate)
    )
    # under a dispersion prior the experts the gate switched off keep their own spreads (at
    # the prior's mode, which the full point's copies of the best's would leave): then only
    # the coefficients of the experts that carry the rows move to the minimum-norm fit
    carrying = np.asarray(shares) >= SWITCHED_OFF
    partial = state.copy()
    partial.coef[carrying] = b
    for out in (full, partial):
        stats = pass_statistics(family, design, data, out, "value", weights=weights)
        stats = _penalize(stats, out, alpha, design.fit_intercept, tied, family)
        n = stats["n"]
        ll = stats["obj"] / n
        if ll >= fit.log_likelihood - 1e-6 * max(1.0, abs(fit.log_likelihood)):
            # the history ends at the point returned
            return EngineFit(
                out,
                ll,
                fit.n_iter,
                fit.converged,
                list(fit.history) + [ll],
                stats["share"] / n,
                True,
            )
    return fit
