"""Batched EM over many starts at once, for experts of every family.

:func:`moelearn.engine.search` screens its starts by short EM runs, all of
them at once here.  Class-label experts (logistic and multinomial-logit,
:func:`supports`) have a hand-written E-step; every other family goes through
its :meth:`~moelearn.families.Family.derivatives` on all candidates' experts
at once.  For class labels the unpenalised likelihood often has its suprema
at infinity (an expert that separates its rows), with many such
configurations; which one a start reaches depends on the start, so many
starts screened for long enough pay off.  This module runs the EM of
:func:`moelearn.engine.em` (one scoring
step on every block of the expected complete-data log-likelihood ``Q`` per
iteration, step halving on the observed (penalised) log-likelihood) for
``C`` candidates at once: one E-step is one product of the design with all
``C x K`` experts, and the information matrices of all candidates come from
one product of the weights with the rows' outer products (DESIGN §13).
The class-label screen's long runs are accelerated by SQUAREM (Varadhan &
Roland 2008), candidate by candidate and still monotone.

Also here: :func:`hashed_partitions`, random hard partitions of the rows into
``K`` groups (the classical start of EM for mixtures of GLMs) drawn as a
function of each row's values, so that a row repeated ``m`` times and a row
of weight ``m`` start alike.
"""

from __future__ import annotations

import numpy as np

from .penalties import as_penalty, centred_blocks, dispersion_terms, gate_prior_terms

__all__ = ["supports", "hashed_partitions", "batched_em", "squarem_point"]

# Floats held at once by one chunk of candidates (the per-row information terms).
_CHUNK_FLOATS = 4_000_000
# SQUAREM's steps are capped at this many EM steps' length
_SQUAREM_MAX = 30.0
# ... and taken only where it is longer than this many: a shorter one marks an EM that
# converges fast already, where the extrapolation's evaluation and iteration cost more
# than they save (DESIGN §13)
SQUAREM_MIN_STEP = 2.0


def supports(family) -> bool:
    """Whether :func:`batched_em` handles the family: class-label experts, no dispersion."""
    return family.screen_steps is not None and not family.dispersion_names


def hashed_partitions(feats, k, count, rng):
    """``count`` random hard partitions of the rows into ``k`` groups, shape (count, n, k).

    Row ``j``'s group in partition ``c`` is ``floor(k * frac(a_c . feats_j + b_c))``
    for a random direction ``a_c`` of large norm and a random shift ``b_c``: a
    deterministic function of the row's values that scatters distinct rows over
    the groups with nearly equal chances (rows with equal values share a group).
    """
    n, d = feats.shape
    scale = 1.0e3 / np.sqrt(max(d, 1))
    A = rng.standard_normal((d, count)) * scale
    b = rng.random(count)
    t = feats @ A + b  # (n, count)
    groups = np.minimum((k * (t - np.floor(t))).astype(int), k - 1)
    return np.moveaxis(np.eye(k)[groups], 1, 0)  # (count, n, k)


def ridge_block(metric, mask, q):
    """The ridge's Hessian block of one expert with ``q`` predictors,
    ``kron(metric, diag(mask))`` in its flat ``(q, p)`` coordinates; ``metric`` is the
    family's :attr:`~moelearn.families.Family.penalty_metric` (None: the identity)."""
    if metric is None and q == 1:
        return np.diag(mask)
    return np.kron(np.eye(q) if metric is None else metric, np.diag(mask))


class _Problem:
    """The fixed parts of one batched fit: designs, outer products, penalty masks, bounds."""

    def __init__(
        self, family, U, Z, y, w, alpha, fit_intercept, k, offset=None, bounds=None, tied=None
    ):
        self.family, self.U, self.Z, self.y, self.w = family, U, Z, y, w
        self.n, self.pe = U.shape
        self.pg = Z.shape[1]
        self.q = family.n_predictors
        self.m = len(family.dispersion_names)
        self.k = k
        self.labels = supports(family)  # the hand-written class-label E-step
        # the family's closed-form M-step (not with shared coefficients)
        self.closed = family.closed_m_step and (tied is None or not tied.coef)
        self.target = y if offset is None else y - offset
        self.offset = offset
        m = self.m
        low, high = (
            (np.full((k, m), -np.inf), np.full((k, m), np.inf)) if bounds is None else bounds
        )
        self.low, self.high = np.asarray(low)[None], np.asarray(high)[None]  # (1, k, m)
        self.tied = tied
        self.total = float(w.sum())
        self.pen = as_penalty(alpha)
        self.a_e, self.a_g = self.pen.expert * self.total, self.pen.gate * self.total
        self.tied_disp = None if tied is None else tied.dispersion
        self.mask_e = np.ones(self.pe)
        self.mask_g = np.ones(self.pg)
        if tied is not None:  # a shared coefficient is penalised once (engine._ridge_masks)
            self.mask_e[list(tied.coef)] = 1.0 / k
        if fit_intercept:
            self.mask_e[0] = 0.0
            self.mask_g[0] = 0.0
        # the ridge's metric over the predictors (engine._penalize): M B on every block
        self.metric = family.penalty_metric
        q = family.n_predictors
        self.pen_expert = ridge_block(self.metric, self.mask_e, q)
        self.sign = 2.0 * y - 1.0
        # indicators of classes 0..q-1 (Bernoulli: of class 1, whose log-odds eta is)
        if self.q == 1:
            self.onehot = y[:, None].astype(float)
        else:
            self.onehot = (y[:, None] == np.arange(self.q)).astype(float)
        self.outer_u = PackedOuter(U)
        self.outer_z = PackedOuter(Z)
        m = k - 1
        self.gate_pairs = np.triu_indices(m)
        self.gate_diag = self.gate_pairs[0] == self.gate_pairs[1]
        self.pen_gate = self.a_g * np.kron(np.eye(m) - 1.0 / k, np.diag(self.mask_g))

    # Arrays over rows, experts and candidates are laid out (n, k, C): sums over the
    # experts then run over contiguous blocks of candidates.
    # --------------------------------------------------------------- E-step
    def eta(self, coef):
        """Linear predictors of all experts, shape (n, k, C, q)."""
        c, k, q, pe = coef.shape
        flat = np.swapaxes(coef, 0, 1).reshape(k * c * q, pe)
        eta = (self.U @ flat.T).reshape(self.n, k, c, q)
        if self.offset is not None:
            eta = eta + self.offset[:, None, None, None]
        return eta

    def family_terms(self, eta, log_disp, want="derivatives"):
        """The family's log-density (n, k, C) and, with ``want="derivatives"``, its
        gradient (n, k, C, Q) and information (n, k, C, Q, Q) on all candidates' experts.

        The candidates' experts are laid side by side as ``k C`` experts (expert
        major, as in ``eta``) with their dispersions ``exp(log_disp)`` (C, k, m).
        """
        n, k, c, q = eta.shape
        flat = eta.reshape(n, k * c, q)
        if q == 1:
            flat = flat[..., 0]
        disp = np.exp(np.swapaxes(log_disp, 0, 1).reshape(k * c, self.m))
        if want == "value":
            return self.family.log_density(self.y, flat, disp).reshape(n, k, c), None
        logf, grad, fisher = self.family.derivatives(self.y, flat, disp)
        if grad.ndim == 2:
            grad, fisher = grad[..., None], fisher[..., None, None]
        Q = grad.shape[-1]
        return logf.reshape(n, k, c), (grad.reshape(n, k, c, Q), fisher.reshape(n, k, c, Q, Q))

    def log_density(self, eta):
        """Each expert's log-probability of the labels (n, k, C), and the class probabilities.

        The probabilities of classes ``0..q-1`` (n, k, C, q) come from the same
        exponentials and serve the next expert step.  Bernoulli experts:
        ``log P(y) = min(s eta, 0) - log1p(exp(-|eta|))`` with ``s = 2y - 1``;
        multinomial ones: ``log P(y) = eta_y - m - log(exp(-m) + sum_j exp(eta_j - m))``
        with ``m = max(0, max_j eta_j)`` and ``eta`` of the last class zero.
        """
        if self.q == 1:
            z = eta[..., 0]
            e = np.exp(-np.abs(z))
            inv = 1.0 / (1.0 + e)
            logf = np.minimum(self.sign[:, None, None] * z, 0.0) - np.log1p(e)
            p = np.where(z >= 0, inv, e * inv)
            return logf, p[..., None]
        n, k, c, q = eta.shape
        m = np.maximum(eta.max(axis=-1), 0.0)
        e = np.exp(eta - m[..., None])
        total = np.exp(-m) + e.sum(axis=-1)
        picked = (eta.reshape(n, k * c, q) @ self.onehot[:, :, None]).reshape(n, k, c)
        return picked - m - np.log(total), e / total[..., None]

    def logits(self, gate):
        c, k, pg = gate.shape
        return (self.Z @ np.swapaxes(gate, 0, 1).reshape(k * c, pg).T).reshape(self.n, k, c)

    def gate_proba(self, gate):
        logits = self.logits(gate)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def evaluate(self, coef, log_disp, gate):
        """Penalised mean log-likelihood (C,), responsibilities, gate probabilities, a cache.

        The cache (see :meth:`log_density`, :meth:`family_terms`) lets the next
        expert step skip the predictors.
        """
        if self.labels:
            logf, cache = self.log_density(self.eta(coef))
        else:
            want = "value" if self.closed else "derivatives"
            logf, cache = self.family_terms(self.eta(coef), log_disp, want)
        logits = self.logits(gate)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        norm = e.sum(axis=1)  # (n, C)
        joint = logits + logf
        top = joint.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        ej = np.exp(joint - top)
        mass = ej.sum(axis=1)
        rows = np.log(mass) + top[:, 0] - np.log(norm)  # (n, C)
        ll = self.w @ rows
        post = ej / mass[:, None]
        penalty = self.penalty(coef, gate, log_disp)
        return (ll - penalty) / self.total, post, e / norm[:, None], cache

    def prior_terms(self, log_disp):
        """The dispersion prior (:func:`~moelearn.penalties.dispersion_terms`) of every
        candidate (C, k, m), on the scale of the total log-likelihood, or None."""
        return dispersion_terms(self.family, log_disp, self.pen, self.total, self.tied_disp)

    def penalty(self, coef, gate, log_disp=None):
        """Every candidate's penalty (C,): the ridges and the dispersion prior."""
        out = np.zeros(coef.shape[0])
        prior = None if log_disp is None else self.prior_terms(log_disp)
        if prior is not None:
            out -= prior[0]
        cauchy = gate_prior_terms(gate, self.mask_g, self.pen, self.total)
        if cauchy is not None:
            out -= cauchy[0]
        if self.a_e > 0:
            out += 0.5 * self.a_e * np.sum(coef * self._metric(coef * self.mask_e), axis=(1, 2, 3))
        if self.a_g > 0:
            V = gate * self.mask_g
            centred = V - V.mean(axis=1, keepdims=True)
            out += 0.5 * self.a_g * np.sum(centred**2, axis=(1, 2))
        return out

    def _metric(self, B):
        """The ridge's metric times ``B`` (C, k, q, p) over its predictors."""
        return B if self.metric is None else np.einsum("cd,nkdp->nkcp", self.metric, B)

    # --------------------------------------------------------------- M-step
    def expert_step(self, coef, log_disp, post, cache=None, penalised=True):
        """One scoring step of every expert on Q at fixed responsibilities.

        ``cache`` is :meth:`evaluate`'s cache at ``coef`` (None: computed here);
        ``penalised=False`` leaves the ridge out (the starts, as the engine's).
        Returns the new ``(coef, log_disp)``.
        """
        if self.closed:
            return self._closed_step(coef, log_disp, post, penalised)
        if not self.labels:
            return self._dispersion_step(coef, log_disp, post, cache, penalised)
        c, k, q, pe = coef.shape
        n = self.n
        if cache is None:
            cache = self.log_density(self.eta(coef))[1]
        p = cache.reshape(n, k * c, q)
        grad = self.onehot[:, None, :] - p
        if q == 1:
            fisher = (p * (1 - p))[..., None]
        else:
            fisher = -p[..., :, None] * p[..., None, :]
            idx = np.arange(q)
            fisher[..., idx, idx] += p
        rw = post.reshape(n, k * c) * self.w[:, None]
        g = (rw[..., None] * grad).reshape(n, k * c * q).T @ self.U  # (k C q, pe)
        F = (rw[..., None, None] * fisher).reshape(n, -1)
        H = self.outer_u.grams(F).reshape(k * c, q, q, pe, pe).transpose(0, 1, 3, 2, 4)
        H = H.reshape(k * c, q * pe, q * pe)
        g = g.reshape(k * c, q * pe)
        if self.a_e > 0 and penalised:
            pulled = self._metric(coef * self.mask_e)
            g = g - self.a_e * np.swapaxes(pulled, 0, 1).reshape(k * c, q * pe)
            H = H + self.a_e * self.pen_expert
        step = self._solve_blocks(H, g, k, c, q, pe, 0).reshape(k, c, q, pe)
        return coef + np.swapaxes(step, 0, 1), log_disp

    def _closed_step(self, coef, log_disp, post, penalised):
        """:meth:`expert_step` by the family's closed-form M-step
        (:meth:`~moelearn.families.Family.weighted_m_step`)."""
        c, k, q, pe = coef.shape
        rw = post.reshape(self.n, k * c) * self.w[:, None]
        ridge = self.a_e * self.mask_e if self.a_e > 0 and penalised else None
        pool = None
        if self.tied is not None and self.tied.dispersion is not None:
            pool = np.tile(np.arange(c), k)  # block i C + j is expert i of candidate j
        disp = np.swapaxes(log_disp, 0, 1).reshape(k * c, self.m)
        prior = None
        if self.pen.dispersion > 0 and penalised:
            prior = (self.pen.dispersion * self.total, self.pen.reference)
        beta, new = self.family.weighted_m_step(
            _moments(rw, self.U, self.outer_u, self.target),
            disp,
            ridge=ridge,
            pool=pool,
            prior=prior,
        )
        new_coef = np.swapaxes(beta.reshape(k, c, q, pe), 0, 1)
        new_disp = np.swapaxes(new.reshape(k, c, self.m), 0, 1)
        return new_coef, np.clip(new_disp, self.low, self.high)

    def _dispersion_step(self, coef, log_disp, post, cache, penalised):
        """:meth:`expert_step` for families with dispersions: the joint scoring step of
        each expert's coefficients and log-dispersions (engine's ``_scoring_step``),
        with the ties of :meth:`_solve_blocks`, and the bounds."""
        c, k, q, pe = coef.shape
        n, m = self.n, self.m
        if cache is None:
            cache = self.family_terms(self.eta(coef), log_disp)[1]
        blocks = k * c
        grad, fisher = (a.reshape(n, blocks, *a.shape[3:]) for a in cache)
        qp = q * pe
        rw = post.reshape(n, blocks) * self.w[:, None]
        g_c = ((rw[..., None] * grad[..., :q]).reshape(n, blocks * q).T @ self.U).reshape(
            blocks, qp
        )
        g_d = np.einsum("nb,nbj->bj", rw, grad[..., q:])
        F = rw[..., None, None] * fisher
        F_cc = self.outer_u.grams(F[..., :q, :q].reshape(n, -1)).reshape(blocks, q, q, pe, pe)
        F_cc = F_cc.transpose(0, 1, 3, 2, 4).reshape(blocks, qp, qp)
        # one BLAS product, not an einsum over four axes (9x faster at n = 1e3, 108 blocks)
        F_cd = np.ascontiguousarray(F[..., :q, q:]).reshape(n, -1).T @ self.U  # (b q m, pe)
        F_cd = F_cd.reshape(blocks, q, m, pe).transpose(0, 1, 3, 2).reshape(blocks, qp, m)
        F_dd = F[..., q:, q:].sum(axis=0)
        if self.a_e > 0 and penalised:
            flat = np.swapaxes(self._metric(coef * self.mask_e), 0, 1).reshape(blocks, qp)
            g_c = g_c - self.a_e * flat
            F_cc = F_cc + self.a_e * self.pen_expert
        prior = self.prior_terms(log_disp) if penalised else None
        if prior is not None:  # (C, k, m) laid out as the blocks (k C, m)
            g_d = g_d + np.swapaxes(prior[1], 0, 1).reshape(blocks, m)
            idx = np.arange(m)
            F_dd = F_dd.copy()
            F_dd[:, idx, idx] += np.swapaxes(prior[2], 0, 1).reshape(blocks, m)
        H = np.zeros((blocks, qp + m, qp + m))
        H[:, :qp, :qp] = F_cc
        H[:, :qp, qp:] = F_cd
        H[:, qp:, :qp] = np.swapaxes(F_cd, 1, 2)
        H[:, qp:, qp:] = F_dd
        g = np.concatenate([g_c, g_d], axis=1)
        step = self._solve_blocks(H, g, k, c, q, pe, m)
        new_coef = coef + np.swapaxes(step[:, :qp].reshape(k, c, q, pe), 0, 1)
        new_disp = log_disp + np.swapaxes(step[:, qp:].reshape(k, c, m), 0, 1)
        return new_coef, np.clip(new_disp, self.low, self.high)

    def _solve_blocks(self, H, g, k, c, q, pe, m):
        """The experts' scoring steps (k C, D) from their blocks ``H`` (k C, D, D).

        With ties (:class:`moelearn.engine.Ties`) each candidate's experts form one
        block-diagonal system reduced to the free coordinates, as the engine's
        ``_scoring_step`` does.
        """
        if self.tied is None:
            return _batched_solve(H, g)
        D = q * pe + m
        E = self.tied.reduction_matrix(k, q, pe, m)  # (k D, R)
        full = np.zeros((c, k * D, k * D))
        blocks = H.reshape(k, c, D, D)
        for i in range(k):
            full[:, i * D : (i + 1) * D, i * D : (i + 1) * D] = blocks[i]
        g_full = np.swapaxes(g.reshape(k, c, D), 0, 1).reshape(c, k * D)
        reduced = _batched_solve(E.T @ full @ E, g_full @ E)
        step = (reduced @ E.T).reshape(c, k, D)
        return np.swapaxes(step, 0, 1).reshape(k * c, D)

    def tie(self, coef, log_disp):
        """Candidates ``coef`` (C, k, q, pe) and ``log_disp`` (C, k, m) with each shared
        parameter at the experts' mean (in place)."""
        tied = self.tied
        if tied is not None:
            for p in tied.coef:
                coef[:, :, :, p] = coef[:, :, :, p].mean(axis=1, keepdims=True)
            if tied.dispersion is not None:
                j = tied.dispersion
                log_disp[:, :, j] = log_disp[:, :, j].mean(axis=1, keepdims=True)
        return coef, log_disp

    def gate_step(self, gate, post, gate_p, ridge=0.0, penalised=True):
        """One Newton step of the gate on Q at fixed responsibilities, shape of gate."""
        c, k, pg = gate.shape
        if k == 1:
            return gate
        m = k - 1
        n = self.n
        wr = self.w[:, None, None]
        resid = ((post - gate_p) * wr)[:, :m].reshape(n, m * c)
        g = np.swapaxes((resid.T @ self.Z).reshape(m, c, pg), 0, 1)  # (C, m, pg)
        p = gate_p[:, :m]  # (n, m, C)
        wp = p * wr
        # the blocks (r, s) with r <= s: the Hessian is symmetric in the experts' pairs
        upper, lower = self.gate_pairs
        pairs = -wp[:, upper, :] * p[:, lower, :]  # (n, m (m + 1) / 2, C)
        pairs[:, self.gate_diag, :] += wp
        half = self.outer_z.grams(pairs.reshape(n, -1)).reshape(len(upper), c, pg, pg)
        H = np.empty((m, m, c, pg, pg))
        H[upper, lower] = half
        H[lower, upper] = half  # each block is symmetric
        H = H.transpose(2, 0, 3, 1, 4).reshape(c, m * pg, m * pg)
        if self.a_g > 0 and penalised:
            V = gate * self.mask_g
            g = g - self.a_g * (V - V.mean(axis=1, keepdims=True))[:, :m]
            H = H + self.pen_gate
        cauchy = gate_prior_terms(gate, self.mask_g, self.pen, self.total) if penalised else None
        if cauchy is not None:  # its quadratic minorant at the current gate
            g = g + cauchy[1][:, :m]
            H = H + centred_blocks(cauchy[2])
        if ridge > 0:
            H = H + ridge * self.total * np.eye(m * pg)
        step = _batched_solve(H, g.reshape(c, m * pg))
        out = gate.copy()
        out[:, :m] += step.reshape(c, m, pg)
        return out


class PackedOuter:
    """The rows' outer products ``a_n a_n'`` of a matrix ``A`` (n, p), for weighted Grams.

    From :data:`PACK_MIN` columns on they are kept as their upper triangles
    (n, p (p + 1) / 2), about half the arithmetic of the products; with fewer the
    scatter back to full matrices costs more than it saves (measured at n = 133 to
    2,500 and 20 to 180 Grams: 0.4-1.0x at p <= 5, 1.2-1.7x at p = 9 and 14).
    """

    def __init__(self, A):
        n, self.p = A.shape
        self.packed = self.p >= PACK_MIN
        if self.packed:
            self.upper = np.triu_indices(self.p)
            self.rows = A[:, self.upper[0]] * A[:, self.upper[1]]
        else:
            self.rows = (A[:, :, None] * A[:, None, :]).reshape(n, -1)

    def grams(self, weights):
        """``A' diag(weights[:, b]) A`` for every column ``b`` of ``weights`` (n, B): (B, p, p)."""
        flat = weights.T @ self.rows
        if not self.packed:
            return flat.reshape(weights.shape[1], self.p, self.p)
        out = np.empty((weights.shape[1], self.p, self.p))
        out[:, self.upper[0], self.upper[1]] = flat
        out[:, self.upper[1], self.upper[0]] = flat
        return out


#: columns from which :class:`PackedOuter` keeps the products' upper triangles
PACK_MIN = 6


def _moments(rw, U, outer_u, target):
    """The blocks' weighted moments of :meth:`~moelearn.families.Family.weighted_m_step`
    from their row weights ``rw`` (n, B); ``outer_u`` is ``U``'s :class:`PackedOuter`."""
    gram = outer_u.grams(rw)
    return gram, (rw * target[:, None]).T @ U, target**2 @ rw, rw.sum(axis=0)


def _batched_solve(H, g, ridge=1e-10):
    """Solve ``H x = g`` for a stack of symmetric matrices, as :func:`engine._solve` does each."""
    H = 0.5 * (H + np.swapaxes(H, 1, 2))
    dim = H.shape[1]
    scale = np.maximum(np.trace(H, axis1=1, axis2=2) / max(dim, 1), 1e-12)
    H = H + ridge * scale[:, None, None] * np.eye(dim)
    try:
        return np.linalg.solve(H, g[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = np.empty_like(g)
        for i in range(len(H)):
            try:
                out[i] = np.linalg.solve(H[i], g[i])
            except np.linalg.LinAlgError:
                out[i] = np.linalg.lstsq(H[i], g[i], rcond=None)[0]
        return out


def _chunks(count, n, k, q):
    per = max(1, _CHUNK_FLOATS // max(1, n * k * (q * q + q + 4)))
    return [slice(i, min(i + per, count)) for i in range(0, count, per)]


def batched_em(
    family,
    design,
    X,
    y,
    *,
    posts=None,
    coef=None,
    gate=None,
    log_disp=None,
    n_iter=20,
    tol=1e-8,
    alpha=0.0,
    weights=None,
    start_steps=(6, 8),
    inner=(1, 1),
    bounds=None,
    tied=None,
    accelerate=False,
    min_step=SQUAREM_MIN_STEP,
    info=None,
):
    """EM for many candidates at once; the candidates never interact.

    Parameters
    ----------
    family : Family
        Any family (class-label experts, :func:`supports`, take a hand-written E-step).
    design : moelearn.engine.Design
    X, y : ndarrays
        The rows (standardised, in memory).
    posts : ndarray (C, n, k) or None
        Starting responsibilities: each candidate starts from the parameters
        fitted to them (``start_steps``: scoring steps of the experts and
        Newton steps of the gate from zero, as
        :func:`moelearn.engine.state_from_responsibilities` does).
    coef, gate : ndarrays (C, k, q, p_e) and (C, k, p_g), or None
        Starting parameters instead of ``posts``.
    log_disp : ndarray (C, k, m) or None
        Their log-dispersions (with ``coef``; families with dispersions).
    n_iter : int
        EM iterations (each one E-step and one scoring step on every block of Q,
        halved until the penalised log-likelihood does not fall).
    tol : float
        A candidate stops when its mean log-likelihood changes by less than
        ``tol * max(1, |ll|)`` in one iteration, or when no halving ascends.
    alpha : float or (float, float)
        The ridge of :func:`moelearn.engine.em`.
    weights : ndarray (n,) or None
    start_steps : (int, int)
    inner : (int, int)
        Scoring steps of the experts and Newton steps of the gate per M-step
        (``(1, 1)``: the EM-gradient algorithm of :func:`moelearn.engine.em`;
        more approach a full M-step, as EM for mixtures of GLMs usually takes).
    bounds : (ndarray (k, m), ndarray (k, m)) or None
        Bounds of the log-dispersions (the engine's, with the noise floor).
    tied : moelearn.engine.Ties or None
        The parameters the experts share (``noise="shared"``, ``shared_features``).
    accelerate : bool
        Accelerate the iterations by SQUAREM (Varadhan & Roland 2008, scheme S3):
        two iterations, a step along the extrapolated path, one more iteration
        from there, kept only where it ends above the two plain iterations (so
        every candidate still ascends).  Three iterations of ``n_iter`` each.
    min_step : float
        The shortest SQUAREM step taken (in EM steps, :func:`squarem_point`).
    info : dict or None
        Filled, when given, with every candidate's ``"n_iter"`` (C,) (iterations
        taken, a SQUAREM cycle counting three), ``"converged"`` (C,) (stopped by
        ``tol``) and ``"history"`` (its objective after each iteration, a list of
        lists): what :func:`moelearn.engine.em` reports of one start.

    Returns
    -------
    coef : ndarray (C, k, q, p_e)
    gate : ndarray (C, k, p_g), last row zero
    objective : ndarray (C,)
        Penalised mean log-likelihood (``-inf`` for a candidate that failed).
    shares : ndarray (C, k)
        Mean responsibilities.
    log_disp : ndarray (C, k, m)
        Log-dispersions (m = 0 for class labels).
    """
    U, Z = design.expert_matrix(X), design.gate_matrix(X)
    y = np.asarray(y, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    q = family.n_predictors
    if posts is not None:
        count, _, k = posts.shape
    else:
        count, k = coef.shape[:2]
    offset = None if design.offset_column is None else design.offset(X)
    rows_family = design.family_at(family, X)
    prob = _Problem(rows_family, U, Z, y, w, alpha, design.fit_intercept, k, offset, bounds, tied)
    m = prob.m
    out_coef = np.zeros((count, k, q, prob.pe))
    out_gate = np.zeros((count, k, prob.pg))
    out_disp = np.zeros((count, k, m))
    out_obj = np.full(count, -np.inf)
    out_shares = np.zeros((count, k))
    with np.errstate(all="ignore"):
        for part in _chunks(count, prob.n, k, q + m):
            if posts is not None:
                c0, d0, g0 = _from_responsibilities(prob, posts[part], *start_steps)
            else:
                c0, g0 = coef[part].astype(float), gate[part].astype(float)
                g0 = g0 - g0[:, -1:]
                d0 = np.zeros((len(c0), k, m)) if log_disp is None else log_disp[part]
                c0, d0 = prob.tie(c0, d0.astype(float))
                d0 = np.clip(d0, prob.low, prob.high)
            record = None if info is None else {}
            res = _em(prob, c0, d0, g0, n_iter, tol, inner, accelerate, min_step, record)
            (out_coef[part], out_disp[part], out_gate[part], out_obj[part], out_shares[part]) = res
            if record is not None:
                for key, value in record.items():
                    info.setdefault(key, []).extend(list(value))
    if info is not None:
        info["n_iter"] = np.asarray(info.get("n_iter", []), dtype=int)
        info["converged"] = np.asarray(info.get("converged", []), dtype=bool)
    return out_coef, out_gate, out_obj, out_shares, out_disp


def _from_responsibilities(prob, post, expert_steps, gate_steps):
    """Parameters fitted to fixed responsibilities ``post`` (C, n, k).

    Class labels start from zero coefficients; the other families as
    :func:`moelearn.engine.state_from_responsibilities` does: each expert the
    slightly ridged weighted least-squares fit of the working response, the
    family's initial dispersion, then the scoring steps; the gate by Newton
    steps from zero.
    """
    c, n, k = post.shape
    post = np.ascontiguousarray(np.transpose(post, (1, 2, 0)))  # (n, k, C)
    coef = np.zeros((c, k, prob.q, prob.pe))
    log_disp = np.zeros((c, k, prob.m))
    gate = np.zeros((c, k, prob.pg))
    fam = prob.family
    if not prob.labels:
        if fam.least_squares_start:
            h = fam.working_response(prob.y)
            if prob.offset is not None:
                h = h - prob.offset
            rw = (post.reshape(n, k * c) + 1e-8) * prob.w[:, None]  # (n, kC)
            gram = prob.outer_u.grams(rw)
            gram = gram + 1e-6 * rw.sum(axis=0)[:, None, None] * np.eye(prob.pe)
            rhs = (rw * h[:, None]).T @ prob.U  # (kC, pe)
            beta = np.linalg.solve(gram, rhs[..., None])[..., 0]
            coef[:, :, :, :] = np.swapaxes(beta.reshape(k, c, prob.pe), 0, 1)[:, :, None, :]
        log_disp[:] = np.log(fam.initial_dispersion(prob.y))
        log_disp = np.clip(log_disp, prob.low, prob.high)
        for _ in range(gate_steps):
            gate_p = prob.gate_proba(gate)
            gate = _finite(prob.gate_step(gate, post, gate_p, ridge=1e-6, penalised=False), gate)
    coef, log_disp = prob.tie(coef, log_disp)
    for _ in range(1 if prob.closed else expert_steps):  # a closed-form step is exact
        new_coef, new_disp = prob.expert_step(coef, log_disp, post, penalised=False)
        coef, log_disp = _finite(new_coef, coef), _finite(new_disp, log_disp)
    if prob.labels:
        for _ in range(gate_steps):
            gate_p = prob.gate_proba(gate)
            gate = _finite(prob.gate_step(gate, post, gate_p, ridge=1e-6, penalised=False), gate)
    return coef, log_disp, gate


def _finite(new, old):
    bad = ~np.all(np.isfinite(new.reshape(len(new), -1)), axis=1)
    if np.any(bad):
        new = new.copy()
        new[bad] = old[bad]
    return new


def _cache_take(cache, idx):
    """:meth:`_Problem.evaluate`'s cache restricted to the candidates ``idx`` (axis 2)."""
    if cache is None:
        return None
    if isinstance(cache, tuple):
        return tuple(a[:, :, idx] for a in cache)
    return cache[:, :, idx]


def _cache_put(cache, idx, values):
    """Write the candidates ``idx`` of a cache (in place)."""
    if cache is None:
        return
    if isinstance(cache, tuple):
        for a, v in zip(cache, values, strict=True):
            a[:, :, idx] = v
    else:
        cache[:, :, idx] = values


def _take(arrays, which, parts=None):
    """The working arrays ``(coef, log_disp, gate, obj, post, gate_p, cache)`` of the
    candidates ``which`` (boolean or indices); their first ``parts`` only when given."""
    parts = len(arrays) if parts is None else parts
    out = [a[which] for a in arrays[: min(4, parts)]]
    out += [a[:, :, which] for a in arrays[4 : min(6, parts)]]
    if parts > 6:
        out.append(_cache_take(arrays[6], which))
    return tuple(out)


def _put(arrays, which, values):
    """Write ``values`` (working arrays) into ``arrays`` at the candidates ``which`` (in
    place), as many of their parts as ``arrays`` holds."""
    for i, a in enumerate(arrays):
        if i < 4:
            a[which] = values[i]
        elif i < 6:
            a[:, :, which] = values[i]
        else:
            _cache_put(a, which, values[i])


def _iterate(prob, arrays, inner):
    """One monotone EM-gradient iteration of the working candidates.

    Returns the new working arrays and a boolean mask of the candidates that no
    halving lifted (they keep their old values: a stationary point).
    """
    cf, dp, gt, ob, pa, gp, ca = arrays
    full_c, full_d = prob.expert_step(cf, dp, pa, ca)
    full_c, full_d = _finite(full_c, cf), _finite(full_d, dp)
    for _ in range(inner[0] - 1):
        nc, nd = prob.expert_step(full_c, full_d, pa)
        full_c, full_d = _finite(nc, full_c), _finite(nd, full_d)
    full_g = _finite(prob.gate_step(gt, pa, gp), gt)
    for _ in range(inner[1] - 1):
        full_g = _finite(prob.gate_step(full_g, pa, prob.gate_proba(full_g)), full_g)
    new = [full_c.copy(), full_d.copy(), full_g.copy(), *prob.evaluate(full_c, full_d, full_g)]
    floor = ob - 1e-12 * np.maximum(1.0, np.abs(ob))
    bad = ~(np.isfinite(new[3]) & (new[3] >= floor))
    fraction = 1.0
    for _ in range(12):
        if not np.any(bad):
            break
        fraction *= 0.5
        b = np.flatnonzero(bad)
        tc = cf[b] + fraction * (full_c[b] - cf[b])
        td = dp[b] + fraction * (full_d[b] - dp[b])
        tg = gt[b] + fraction * (full_g[b] - gt[b])
        _put(new, b, (tc, td, tg, *prob.evaluate(tc, td, tg)))
        bad[b] = ~(np.isfinite(new[3][b]) & (new[3][b] >= floor[b]))
    if np.any(bad):
        _put(new, bad, _take(arrays, bad))
    return tuple(new), bad


def squarem_point(start, one, two, max_step=_SQUAREM_MAX):
    """SQUAREM's extrapolation (Varadhan & Roland 2008, scheme S3), candidate by candidate.

    ``start``, ``one``, ``two`` are sequences of arrays whose first axis runs over
    candidates: a point and two EM iterations from it.  With ``r = one - start``
    and ``v = two - 2 one + start`` (over all arrays of a candidate) the step
    length is ``a = -||r|| / ||v||``, held in ``[-max_step, -1]`` (``-1`` where it
    is undefined: the point ``two``), and the point ``start - 2 a r + a^2 v``.

    Returns the extrapolated arrays and the step lengths (C,).
    """
    r = [b - a for a, b in zip(start, one, strict=True)]
    v = [c - 2.0 * b + a for a, b, c in zip(start, one, two, strict=True)]
    rr = sum(np.sum(x.reshape(len(x), -1) ** 2, axis=1) for x in r)
    vv = sum(np.sum(x.reshape(len(x), -1) ** 2, axis=1) for x in v)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = -np.sqrt(rr / vv)
    alpha = np.where(np.isfinite(alpha), np.clip(alpha, -max_step, -1.0), -1.0)
    out = []
    for a0, x, y in zip(start, r, v, strict=True):
        a = alpha.reshape((-1,) + (1,) * (a0.ndim - 1))
        out.append(a0 - 2.0 * a * x + a * a * y)
    return out, alpha


def _extrapolate(prob, start, one, two, inner, min_step):
    """SQUAREM (:func:`squarem_point`) from ``start`` through two EM iterations
    ``one`` and ``two``: the extrapolated point, stabilised by one EM iteration,
    where it ascends above ``two`` (a step longer than ``min_step``); ``two`` elsewhere."""
    trial, alpha = squarem_point(start[:3], one[:3], two[:3])
    trial[1] = np.clip(trial[1], prob.low, prob.high)
    moved = alpha < -min_step
    if not np.any(moved):
        return two
    idx = np.flatnonzero(moved)
    t = [trial[i][idx] for i in range(3)]
    at = (*t, *prob.evaluate(*t))
    ok = np.isfinite(at[3])
    if not np.any(ok):
        return two
    stab, _ = _iterate(prob, _take(at, ok), inner)
    idx = idx[ok]
    better = np.isfinite(stab[3]) & (stab[3] >= two[3][idx])
    if np.any(better):
        _put(two, idx[better], _take(stab, better))  # two's arrays are new: in place
    return two


def _em(
    prob,
    coef,
    log_disp,
    gate,
    n_iter,
    tol,
    inner=(1, 1),
    accelerate=False,
    min_step=SQUAREM_MIN_STEP,
    record=None,
):
    """Monotone EM-gradient iterations of candidates ``coef`` (C, k, q, pe),
    ``log_disp`` (C, k, m) and ``gate`` (C, k, pg).

    The iterations run on the still-active candidates only; one that stops is
    written to the output and dropped from the working arrays (one gather per
    stop, not per iteration).  ``accelerate``: SQUAREM cycles of three
    iterations (:func:`_extrapolate`).  ``record`` (a dict) receives each
    candidate's iterations, convergence and history (:func:`batched_em`'s ``info``).
    """
    obj, post, gate_p, cache = prob.evaluate(coef, log_disp, gate)
    obj = np.where(np.isfinite(obj), obj, -np.inf)
    active = np.flatnonzero(np.isfinite(obj))
    work = _take((coef, log_disp, gate, obj, post, gate_p, cache), active)
    # what the candidates end with: the gate's probabilities and the cache are working
    # state, not results (writing the cache back took about a tenth of a Student-t fit)
    out = (coef, log_disp, gate, obj, post)
    squarem = accelerate and n_iter >= 3
    iters = np.zeros(len(obj), dtype=int)
    converged = np.zeros(len(obj), dtype=bool)
    history = [[float(v)] for v in obj] if record is not None else None
    done_iter = 0
    while done_iter < n_iter:
        if active.size == 0:
            break
        old = work[3]
        one, bad = _iterate(prob, work, inner)
        done_iter += 1
        if squarem and done_iter + 2 <= n_iter:
            two, bad2 = _iterate(prob, one, inner)
            new = _extrapolate(prob, work, one, two, inner, min_step)
            done_iter += 2
            bad = bad & bad2
            steps = (one[3], new[3])
        else:
            new = one
            steps = (one[3],)
        iters[active] += len(steps) + 1 if len(steps) == 2 else 1
        if history is not None:
            for values in steps:
                for i, v in zip(active, values, strict=True):
                    history[i].append(float(v))
        # a candidate that no halving lifts stands at a stationary point: it stops there
        change = np.abs(new[3] - old)
        small = change <= tol * np.maximum(1.0, np.abs(new[3]))
        converged[active] = small & ~bad
        done = bad | small
        work = new
        if np.any(done):
            _put(out, active[done], _take(work, done, parts=len(out)))
            keep = ~done
            work, active = _take(work, keep), active[keep]
    if active.size:
        _put(out, active, work)
    shares = np.einsum("n,nkc->ck", prob.w, post) / prob.total
    if record is not None:
        record.update(n_iter=iters, converged=converged, history=history)
    return coef, log_disp, gate, obj, shares
