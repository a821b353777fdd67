"""Maximum-likelihood fitting: exact log-likelihood, EM, gradient descent (DESIGN §5-7).

One engine serves three uses:

* gating recovery with the experts fixed (``free = {"gating", ...}``, §5);
* joint refinement of every parameter from any start (§7);
* the baselines of §6 (joint EM, joint gradient descent on the negative
  log-likelihood or on the squared loss, from random starts).

Every quantity is a sum over samples, evaluated chunk by chunk through a
:class:`Data` source, so the same code runs in memory and out of core.
Probabilities stay in log space throughout.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning

from ._logspace import logsumexp_k, softmax_k
from ._threads import blas_threads
from .data import Data, add_partials
from .links import get_link
from .model import MoEParams, random_generator

__all__ = [
    "Data",
    "FitResult",
    "maximize_likelihood",
    "fit_squared_loss",
    "random_params",
    "observed_information",
    "params_from_responsibilities",
]

_LOG_2PI = np.log(2.0 * np.pi)
_ALL = frozenset({"experts", "expert_bias", "gating", "gating_bias", "noise"})
# "expert_scale" fits one length per expert along fixed directions (the initial
# experts' rows): the step after moment recovery, which gives directions only.
_GROUPS = _ALL | {"expert_scale"}


# --------------------------------------------------------------------------
# Parameter packing
# --------------------------------------------------------------------------
@dataclass
class _Layout:
    k: int
    d: int
    free: frozenset
    per_expert_noise: bool

    def sizes(self):
        k, d = self.k, self.d
        return [
            ("expert_scale", k),
            ("experts", k * d),
            ("expert_bias", k),
            ("gating", k * d),
            ("gating_bias", k),
            ("noise", k if self.per_expert_noise else 1),
        ]

    def pack(self, p: MoEParams) -> np.ndarray:
        parts = []
        for name, _ in self.sizes():
            if name not in self.free:
                continue
            if name == "expert_scale":
                parts.append(np.ones(self.k))
            elif name == "noise":
                sig = (
                    p.noise_vector
                    if self.per_expert_noise
                    else np.atleast_1d(np.mean(p.noise_vector))
                )
                parts.append(np.log(sig))
            else:
                parts.append(np.ravel(getattr(p, name)))
        return np.concatenate(parts) if parts else np.zeros(0)

    def unpack(self, theta, base: MoEParams) -> dict:
        out = {
            "experts": base.experts,
            "expert_bias": base.expert_bias,
            "gating": base.gating,
            "gating_bias": base.gating_bias,
            "noise": base.noise_vector,
        }
        pos = 0
        for name, size in self.sizes():
            if name not in self.free:
                continue
            chunk = theta[pos : pos + size]
            pos += size
            if name == "expert_scale":
                out["experts"] = chunk[:, None] * base.experts
            elif name in ("experts", "gating"):
                out[name] = chunk.reshape(self.k, self.d)
            elif name == "noise":
                out[name] = np.broadcast_to(np.exp(chunk), (self.k,)).copy()
            else:
                out[name] = chunk.copy()
        return out

    def expert_scaling(self, scale) -> np.ndarray:
        """Vector D with ``scale`` on the expert coordinates and 1 elsewhere."""
        parts = []
        for name, size in self.sizes():
            if name in self.free:
                expert = name in ("experts", "expert_bias", "expert_scale")
                parts.append(np.full(size, scale if expert else 1.0))
        return np.concatenate(parts) if parts else np.zeros(0)

    def grad_vector(self, grads: dict, base: MoEParams | None = None) -> np.ndarray:
        parts = []
        for name, _ in self.sizes():
            if name not in self.free:
                continue
            if name == "expert_scale":
                parts.append(np.sum(grads["experts"] * base.experts, axis=1))
                continue
            g = grads[name]
            if name == "noise" and not self.per_expert_noise:
                g = np.atleast_1d(g.sum())
            parts.append(np.ravel(g))
        return np.concatenate(parts) if parts else np.zeros(0)


def _to_params(values: dict, link, per_expert_noise) -> MoEParams:
    noise = values["noise"] if per_expert_noise else float(values["noise"][0])
    return MoEParams(
        np.array(values["experts"]),
        np.array(values["gating"]),
        np.array(values["expert_bias"]),
        np.array(values["gating_bias"]),
        noise,
        link,
    )


# --------------------------------------------------------------------------
# Log-likelihood and gradients, one chunk at a time
# --------------------------------------------------------------------------
def _chunk_terms(X, y, v, link, want_grad, want_post=False, w=None):
    """Sum of log-likelihood over a chunk and (optionally) gradients/posteriors.

    Per-sample quantities are (k, n) arrays (see :mod:`moelearn._logspace`);
    ``post`` is returned as (k, n) too (not weighted).  ``w``: sample weights
    of the rows (None: all one), which weight the sums.
    """
    k = v["experts"].shape[0]
    # one GEMM for both the expert and the gating pre-activations
    pre = np.vstack([v["experts"], v["gating"]]) @ X.T
    U = pre[:k] + v["expert_bias"][:, None]
    logits = pre[k:] + v["gating_bias"][:, None]
    sigma = v["noise"][:, None]
    resid = (y - link(U)) / sigma
    logp, p = softmax_k(logits)
    joint = logp - 0.5 * resid**2 - (np.log(sigma) + 0.5 * _LOG_2PI)
    ll, post = logsumexp_k(joint)
    out = {"loglik": float(ll.sum() if w is None else ll @ w)}
    if want_post:
        out["post"] = post
    if want_grad:
        wpost = post if w is None else post * w
        g_U = wpost * resid / sigma
        if not link.is_linear:
            g_U *= link.grad(U)
        g_both = np.vstack([g_U, post - p if w is None else wpost - p * w])
        both = g_both @ X
        sums = g_both.sum(axis=1)
        out.update(
            experts=both[:k],
            gating=both[k:],
            expert_bias=sums[:k],
            gating_bias=sums[k:],
            noise=(wpost * (resid**2 - 1.0)).sum(axis=1),  # d/d log sigma
        )
    return out


def _sum_terms(data, values, link, want_grad):
    return data.map_reduce(
        lambda Xb, yb, wb=None: _chunk_terms(Xb, yb, values, link, want_grad, w=wb)
    )


def _total_loglik(data, values, link) -> float:
    return float(_sum_terms(data, values, link, False)["loglik"])


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------
@dataclass
class FitResult:
    """Outcome of a likelihood fit.

    Attributes
    ----------
    params : MoEParams
    log_likelihood : float
        Mean log-likelihood per sample at ``params`` (weighted by the sample
        weights of a weighted :class:`Data`).
    n_iter : int
    converged : bool
    history : ndarray
        Objective per iteration (mean log-likelihood, or squared loss for
        :func:`fit_squared_loss`).
    trajectory : list of MoEParams
        Parameters after each iteration, when requested.
    """

    params: MoEParams
    log_likelihood: float
    n_iter: int
    converged: bool
    history: np.ndarray
    trajectory: list = field(default_factory=list)


def _check_free(free):
    free = frozenset(free)
    unknown = free - _GROUPS
    if unknown:
        raise ValueError(
            f"unknown parameter groups {sorted(unknown)}; choose from {sorted(_GROUPS)}"
        )
    if {"experts", "expert_scale"} <= free:
        raise ValueError("'experts' and 'expert_scale' cannot both be free")
    return free


# --------------------------------------------------------------------------
# Optimisers
# --------------------------------------------------------------------------
def maximize_likelihood(
    data: Data,
    init: MoEParams,
    *,
    free=_ALL,
    method="lbfgs",
    per_expert_noise=False,
    max_iter=200,
    tol=1e-8,
    noise_floor=1e-6,
    learning_rate=None,
    record=False,
    gating_steps=25,
) -> FitResult:
    """Maximise the exact log-likelihood over the parameter groups in ``free``.

    Parameters
    ----------
    data : Data
    init : MoEParams
        Starting point; groups not in ``free`` stay at these values.
    free : set of {"experts", "expert_bias", "gating", "gating_bias", "noise"}
    method : {"lbfgs", "em", "gd"}
        L-BFGS on the analytic gradient, expectation-maximisation, or plain
        gradient ascent with backtracking.
    per_expert_noise : bool
    max_iter : int
    tol : float
        Stop when the mean log-likelihood improves by less than ``tol`` (relative).
    noise_floor : float
        Lower bound on every noise standard deviation (keeps the likelihood
        bounded when an expert collapses on a few points).
    learning_rate : float or None
        Initial step for ``method="gd"``.
    record : bool
        Keep the parameters after every iteration in ``trajectory``.
    gating_steps : int
        L-BFGS iterations of the gating M-step per EM iteration (``method="em"``).
    """
    free = _check_free(free)
    if method not in ("lbfgs", "em", "gd"):
        raise ValueError(f"method must be 'lbfgs', 'em' or 'gd', got {method!r}")
    if method == "em" and "expert_scale" in free:
        raise ValueError("method='em' does not fit 'expert_scale'; use 'lbfgs' or 'gd'")
    with blas_threads(data.n_features * init.n_experts):
        if method == "em":
            return _em(
                data, init, free, per_expert_noise, max_iter, tol, noise_floor, record, gating_steps
            )
        return _maximize_gradient(
            data,
            init,
            free,
            method,
            per_expert_noise,
            max_iter,
            tol,
            noise_floor,
            learning_rate,
            record,
        )


def _maximize_gradient(
    data, init, free, method, per_expert_noise, max_iter, tol, noise_floor, learning_rate, record
):
    link = get_link(init.link)
    layout = _Layout(init.n_experts, init.n_features, free, per_expert_noise)
    n = data.total_weight
    theta0 = layout.pack(init)

    def fun(theta):
        values = layout.unpack(theta, init)
        t = _sum_terms(data, values, link, want_grad=True)
        return -t["loglik"] / n, -layout.grad_vector(t, init) / n

    bounds = None
    if "noise" in free:
        lo = np.log(noise_floor)
        n_noise = init.n_experts if per_expert_noise else 1
        hi = lo + np.log(_NOISE_RANGE)  # an unused expert's noise cannot run off to inf
        bounds = [(None, None)] * (theta0.size - n_noise) + [(lo, hi)] * n_noise
        theta0 = np.clip(theta0, *_bound_arrays(bounds))
    history, trajectory = [], []

    def callback(theta):
        if record:
            trajectory.append(_to_params(layout.unpack(theta, init), init.link, per_expert_noise))

    if method == "lbfgs":
        # Diagonal preconditioning: the curvature of the expert coordinates is
        # about 1/sigma^2 times that of the gating; optimising over theta / D
        # with D = sigma on the expert entries evens them out (fewer iterations).
        D = layout.expert_scaling(float(np.min(init.noise_vector)))
        # Where the exact Hessian is cheap, L-BFGS gets a first stretch of iterations
        # and Newton steps finish what it has not (L-BFGS crawls on flat ridges).
        newton = _newton_applies(layout, free, theta0.size)
        first = min(max_iter, _NEWTON_AFTER) if newton else max_iter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # line-search probes may overflow
            res = minimize(
                lambda phi: _record(_scaled(fun, D), phi, history),
                theta0 / D,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                callback=lambda phi: callback(phi * D),
                options={"maxiter": first, "ftol": tol, "gtol": 1e-10, "maxcor": 20},
            )
        theta, n_iter = res.x * D, int(res.nit)
        # A line-search failure is convergence only where the gradient vanishes
        # (round-off stops the search at an optimum); a cap on iterations never is.
        converged = bool(res.success) or (
            res.status == 2 and _projected_gradient_norm(res.x, res.jac, bounds, D) <= 1e-6
        )
        if newton and not converged and n_iter < max_iter:
            fit_intercept = "expert_bias" in free
            perm = _information_index(layout, fit_intercept)

            def hess(th):
                values = layout.unpack(th, init)
                H = data.map_reduce(
                    lambda Xb, yb, wb=None: _chunk_hessian(
                        Xb, yb, values, link, perm, fit_intercept, wb
                    )
                )
                return -0.5 * (H + H.T) / n

            theta, steps, converged = _newton(
                fun, hess, theta, bounds, max_iter - n_iter, tol, history, callback
            )
            n_iter += steps
    elif method == "gd":
        theta, n_iter, converged = _gradient_descent(
            fun, theta0, bounds, max_iter, tol, learning_rate, history, callback
        )
    params = _to_params(layout.unpack(theta, init), init.link, per_expert_noise)
    final = -fun(theta)[0]
    return FitResult(params, final, n_iter, converged, -np.asarray(history), trajectory)


# L-BFGS iterations before Newton steps take over, and the largest parameter count
# for which they do (the Hessian costs n p^2 per evaluation).
_NEWTON_AFTER = 100
_NEWTON_MAX_PARAMS = 200


def _newton_applies(layout, free, size):
    full = free in (_ALL, _ALL - {"expert_bias", "gating_bias"})
    return full and size <= _NEWTON_MAX_PARAMS


def _newton(fun, hess, theta, bounds, max_steps, tol, history, callback):
    """Damped Newton steps on ``fun`` (value, gradient) with the exact Hessian ``hess``.

    The step uses the eigen-decomposition of the Hessian: directions of
    negligible curvature (the gating's common shift) are dropped and negative
    curvature is flipped, so every step descends; the step is halved until the
    value decreases (Armijo) and clipped at the bounds.  Converged when the
    Newton decrement falls below ``tol * max(1, |f|)``.
    """
    lower, upper = _bound_arrays(bounds, theta.size)
    f, g = fun(theta)
    for step in range(1, max_steps + 1):
        w, V = np.linalg.eigh(hess(theta))
        scale = np.max(np.abs(w)) if w.size else 0.0
        keep = np.abs(w) > 1e-10 * max(scale, 1e-300)
        delta = -(V[:, keep] @ ((V[:, keep].T @ g) / np.abs(w[keep])))
        decrement = -float(g @ delta)
        if decrement <= tol * max(1.0, abs(f)):
            return theta, step - 1, True
        t = 1.0
        while t >= 1e-8:
            cand = np.clip(theta + t * delta, lower, upper)
            with np.errstate(over="ignore", invalid="ignore"):
                fc, gc = fun(cand)
            if np.isfinite(fc) and fc <= f - 1e-4 * t * decrement:
                break
            t *= 0.5
        else:
            # no decrease along the Newton direction: converged only at round-off level
            return theta, step, bool(decrement <= 1e-10 * max(1.0, abs(f)))
        theta, f, g = cand, fc, gc
        history.append(f)
        callback(theta)
    return theta, max_steps, False


# Noise levels live in [floor, _NOISE_RANGE * floor].
_NOISE_RANGE = 1e12


def _bound_arrays(bounds, size=None):
    """Lower and upper bound vectors (+-inf where unbounded) from L-BFGS-B style bounds."""
    if bounds is None:
        return np.full(size, -np.inf), np.full(size, np.inf)
    lower = np.array([-np.inf if b[0] is None else b[0] for b in bounds], dtype=float)
    upper = np.array([np.inf if b[1] is None else b[1] for b in bounds], dtype=float)
    return lower, upper


def _projected_gradient_norm(phi, grad, bounds, D):
    """Largest entry of the gradient projected on the feasible directions."""
    g = np.asarray(grad, dtype=float).copy()
    if bounds is not None:
        lower, upper = _bound_arrays(bounds)
        lower, upper = lower / D, upper / D
        with np.errstate(invalid="ignore"):  # inf - inf on unbounded coordinates
            at_lower = phi <= lower + 1e-12 * np.maximum(1.0, np.abs(lower))
            at_upper = phi >= upper - 1e-12 * np.maximum(1.0, np.abs(upper))
        # minimising: a positive gradient at a lower bound points out of the box
        g[at_lower & (g > 0)] = 0.0
        g[at_upper & (g < 0)] = 0.0
    return float(np.max(np.abs(g))) if g.size else 0.0


def _scaled(fun, D):
    def scaled(phi):
        f, g = fun(phi * D)
        return f, g * D

    return scaled


def _record(fun, theta, history):
    f, g = fun(theta)
    history.append(f)
    return f, g


def _gradient_descent(fun, theta0, bounds, max_iter, tol, step, history, callback):
    """Gradient descent with Armijo backtracking; the step grows back after success."""
    lower, upper = _bound_arrays(bounds, theta0.size)
    theta = theta0.copy()
    f, g = fun(theta)
    history.append(f)
    step = 1.0 if step is None else float(step)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        gnorm2 = float(g @ g)
        while True:
            cand = np.clip(theta - step * g, lower, upper)
            with np.errstate(over="ignore", invalid="ignore"):
                fc, gc = fun(cand)
            if np.isfinite(fc) and fc <= f - 1e-4 * step * gnorm2:
                break
            step *= 0.5
            if step < 1e-14:
                # no descent step exists: converged only if the gradient vanishes
                return theta, it, bool(np.sqrt(gnorm2) <= 1e-6)
        improvement = f - fc
        theta, f, g = cand, fc, gc
        history.append(f)
        callback(theta)
        step *= 1.5
        if improvement <= tol * max(1.0, abs(f)):
            converged = True
            break
    return theta, it, converged


def _weighted_lstsq(design, y, weights, ridge=1e-10):
    """Solve ``min sum w (y - design @ beta)^2`` with a tiny ridge for stability."""
    dw = design * weights[:, None]
    gram = dw.T @ design
    gram[np.diag_indices_from(gram)] += ridge * (np.trace(gram) / len(gram) + 1e-300)
    return np.linalg.solve(gram, dw.T @ y)


def _em(data, init, free, per_expert_noise, max_iter, tol, noise_floor, record, gating_steps=25):
    """EM (Jordan & Jacobs 1994) over the groups in ``free``.

    E-step: posteriors.  M-step: weighted least squares per expert (one
    Gauss-Newton step for a non-linear link), noise from weighted residuals,
    gating by a warm-started weighted multinomial logistic regression.
    """
    link = get_link(init.link)
    values = {
        "experts": init.experts.copy(),
        "expert_bias": init.expert_bias.copy(),
        "gating": init.gating.copy(),
        "gating_bias": init.gating_bias.copy(),
        "noise": init.noise_vector,
    }
    gating_free = free & {"gating", "gating_bias"}
    n = data.total_weight
    history, trajectory = [], []
    converged = False
    it = 0
    prev = -np.inf
    good = values  # the last iterate whose E-step was finite
    for it in range(1, max_iter + 1):
        # E-step and the sufficient statistics of the M-step, block by block.
        cache_posts = bool(gating_free) and data.in_memory
        estep_values = {key: np.copy(val) for key, val in values.items()}
        with np.errstate(over="ignore", invalid="ignore"):
            if cache_posts:
                posts = []
                stats = None
                for Xb, yb, wb in data.blocks():
                    part = _em_block_stats(Xb, yb, values, link, keep_post=True, w=wb)
                    posts.append(part.pop("post"))
                    stats = add_partials(stats, part)
            else:
                posts = None
                stats = data.map_reduce(
                    lambda Xb, yb, wb=None, v=estep_values: _em_block_stats(Xb, yb, v, link, w=wb)
                )
        loglik, gram, rhs, sq, wsum = (
            stats[key] for key in ("loglik", "gram", "rhs", "sq", "wsum")
        )
        if it > 1 and not all(np.all(np.isfinite(a)) for a in (loglik, gram, rhs, sq)):
            # a Gauss-Newton step of a non-linear link overshot until the predictions
            # overflow: keep the last iterate whose E-step was finite, not converged
            values = good
            break
        good = estep_values
        mean_ll = loglik / n
        history.append(mean_ll)
        if record:
            trajectory.append(_to_params(values, init.link, per_expert_noise))
        if it > 1 and abs(mean_ll - prev) <= tol * max(1.0, abs(mean_ll)):
            converged = True
            break
        prev = mean_ll
        _mstep_experts_noise(values, gram, rhs, sq, wsum, n, free, per_expert_noise, noise_floor)
        # M-step: gating
        if gating_free:
            _gating_mstep(
                data, values, gating_free, posts, estep_values, link, max_iter=gating_steps
            )
    if not converged:
        warnings.warn(
            f"EM did not converge in {max_iter} iterations", ConvergenceWarning, stacklevel=3
        )
    params = _to_params(values, init.link, per_expert_noise)
    final = _total_loglik(data, values, link) / n
    return FitResult(params, final, it, converged, np.asarray(history), trajectory)


def _mstep_experts_noise(values, gram, rhs, sq, wsum, n, free, per_expert_noise, noise_floor):
    """M-step of the experts (weighted least squares / Gauss-Newton) and of the noise."""
    k, d = values["experts"].shape
    fit_expert = "experts" in free
    fit_ebias = "expert_bias" in free
    if fit_expert or fit_ebias:
        for i in range(k):
            if wsum[i] < 1e-8 * n:
                continue  # a lost component keeps its parameters
            G = gram[i].copy()
            if not fit_ebias:
                G, r = G[:d, :d], rhs[i, :d] - gram[i, :d, d] * values["expert_bias"][i]
            elif not fit_expert:
                G = G[d:, d:]
                r = rhs[i, d:] - gram[i, d, :d] @ values["experts"][i]
            else:
                r = rhs[i]
            G[np.diag_indices_from(G)] += 1e-10 * (np.trace(G) / len(G) + 1e-300)
            sol = np.linalg.solve(G, r)
            if fit_expert and fit_ebias:
                values["experts"][i], values["expert_bias"][i] = sol[:d], sol[d]
            elif fit_expert:
                values["experts"][i] = sol
            else:
                values["expert_bias"][i] = sol[0]
    # noise from the E-step residuals (a standard ECM ordering)
    if "noise" in free:
        if per_expert_noise:
            var = sq / np.maximum(wsum, 1e-300)
        else:
            var = np.full(k, sq.sum() / n)
        values["noise"] = np.sqrt(np.maximum(var, noise_floor**2))


def params_from_responsibilities(
    data: Data,
    responsibilities,
    init: MoEParams,
    *,
    per_expert_noise=True,
    noise_floor=1e-6,
    fit_intercept=True,
    gating_steps=25,
) -> MoEParams:
    """One M-step from given responsibilities: the parameters that explain a partition.

    Parameters
    ----------
    data : Data
        In-memory samples.
    responsibilities : ndarray of shape (n_experts, n_samples)
        Soft assignment of every sample to the experts (columns sum to 1).
    init : MoEParams
        Link, and the point a non-linear expert is linearised around
        (Gauss-Newton); its gating warm-starts the gating fit.
    per_expert_noise, noise_floor, fit_intercept, gating_steps
        As in :func:`maximize_likelihood`.

    Returns
    -------
    MoEParams
        Experts by weighted least squares, noise from the weighted residuals,
        gating by a weighted multinomial logistic regression on the
        responsibilities.
    """
    if not data.in_memory:
        raise ValueError("params_from_responsibilities needs in-memory data")
    post = np.asarray(responsibilities, dtype=float)
    k = init.n_experts
    if post.shape != (k, data.n_samples):
        raise ValueError(
            f"responsibilities must have shape ({k}, {data.n_samples}), got {post.shape}"
        )
    link = get_link(init.link)
    values = {
        "experts": init.experts.copy(),
        "expert_bias": init.expert_bias.copy(),
        "gating": init.gating.copy(),
        "gating_bias": init.gating_bias.copy(),
        "noise": init.noise_vector,
    }
    free = _ALL if fit_intercept else _ALL - {"expert_bias", "gating_bias"}
    posts, stats, start = [], None, 0
    for Xb, yb, wb in data.blocks():
        pb = post[:, start : start + Xb.shape[0]]
        start += Xb.shape[0]
        posts.append(pb)
        stats = add_partials(stats, _em_block_stats(Xb, yb, values, link, post=pb, w=wb))
    _mstep_experts_noise(
        values,
        stats["gram"],
        stats["rhs"],
        stats["sq"],
        stats["wsum"],
        data.total_weight,
        free - {"noise"},
        per_expert_noise,
        noise_floor,
    )
    # noise from the residuals of the new experts (not of the point of linearisation)
    sq, start = np.zeros(k), 0
    for (Xb, yb, wb), pb in zip(data.blocks(), posts, strict=True):
        mu = link(values["experts"] @ Xb.T + values["expert_bias"][:, None])
        sq += np.sum((pb if wb is None else pb * wb) * (yb - mu) ** 2, axis=1)
    _mstep_experts_noise(
        values,
        stats["gram"],
        stats["rhs"],
        sq,
        stats["wsum"],
        data.total_weight,
        frozenset({"noise"}),
        per_expert_noise,
        noise_floor,
    )
    _gating_mstep(
        data, values, free & {"gating", "gating_bias"}, posts, None, link, max_iter=gating_steps
    )
    return _to_params(values, init.link, per_expert_noise)


def _em_block_stats(X, y, values, link, keep_post=False, post=None, w=None):
    """E-step on one block: log-likelihood and the weighted normal equations per expert.

    With ``post`` given, those responsibilities replace the E-step (no
    log-likelihood).  ``w``: sample weights of the rows (None: all one); a
    kept ``post`` is not weighted.
    """
    k, d = values["experts"].shape
    if post is None:
        t = _chunk_terms(X, y, values, link, want_grad=False, want_post=True, w=w)
        post, loglik = t["post"], t["loglik"]
    else:
        loglik = float("nan")
    kept = post
    if w is not None:
        post = post * w
    U = values["experts"] @ X.T + values["expert_bias"][:, None]
    mu = link(U)
    design = np.hstack([X, np.ones((X.shape[0], 1))])
    gram = np.empty((k, d + 1, d + 1))
    rhs = np.empty((k, d + 1))
    for i in range(k):
        if link.is_linear:
            target, jac = y, design
        else:
            # Gauss-Newton: linearise g around the current expert
            jac = design * link.grad(U[i])[:, None]
            target = y - mu[i] + jac @ np.r_[values["experts"][i], values["expert_bias"][i]]
        jw = jac * post[i][:, None]
        gram[i] = jw.T @ jac
        rhs[i] = jw.T @ target
    out = dict(
        loglik=loglik,
        gram=gram,
        rhs=rhs,
        sq=np.sum(post * (y - mu) ** 2, axis=1),
        wsum=post.sum(axis=1),
    )
    if keep_post:
        out["post"] = kept
    return out


# Gating M-steps with at most this many coefficients take damped Newton steps
# (the Hessian costs n (k (d + 1))^2); larger ones use L-BFGS.
_NEWTON_GATE_SIZE = 64


def _gating_newton(data, values, posts, max_iter):
    """Damped Newton steps of the soft-label multinomial logistic regression.

    The last expert's gate is the reference during a step (its rows of the
    Hessian are dropped, which removes the shift invariance); the objective is
    checked after each step and the step halved until it improves, so a
    separable partition cannot overflow.  Stops when the Newton decrement is
    negligible or after ``max_iter`` steps.
    """
    k, d = values["gating"].shape
    m = k - 1
    n = data.total_weight
    # (design, weighted design, weighted soft labels) per block
    blocks = []
    for (Xb, _, wb), post in zip(data.blocks(), posts, strict=True):
        Xt = np.hstack([Xb, np.ones((Xb.shape[0], 1))])
        if wb is None:
            blocks.append((Xt, Xt, post))
        else:
            blocks.append((Xt, Xt * wb[:, None], post * wb))

    def value(theta):
        return -sum(float(np.sum(post * softmax_k(theta @ Xt.T)[0])) for Xt, _, post in blocks)

    def derivatives(theta):
        grad, hess = np.zeros((m, d + 1)), np.zeros((m, d + 1, m, d + 1))
        for Xt, Xw, post in blocks:
            p = softmax_k(theta @ Xt.T)[1]
            grad += post[:m] @ Xt - p[:m] @ Xw
            for a in range(m):
                for b in range(a, m):
                    block = (Xw * (p[a] * ((a == b) - p[b]))[:, None]).T @ Xt
                    hess[a, :, b, :] = block
                    hess[b, :, a, :] = block.T
        return grad.ravel(), hess.reshape(m * (d + 1), m * (d + 1))

    theta = np.hstack([values["gating"], values["gating_bias"][:, None]])
    f = value(theta)
    for _ in range(max_iter):
        g, H = derivatives(theta)
        H[np.diag_indices_from(H)] += 1e-8 * (np.trace(H) / len(H) + 1e-12)
        try:
            step = np.linalg.solve(H, g).reshape(m, d + 1)
        except np.linalg.LinAlgError:
            break
        decrement = float(g @ step.ravel())
        if decrement <= 1e-12 * n:
            break
        t = 1.0
        while t > 1e-4:
            cand = theta.copy()
            cand[:m] += t * step
            f_new = value(cand)
            if f_new <= f - 1e-4 * t * decrement:
                break
            t *= 0.5
        else:
            break
        theta, f = cand, f_new
    values["gating"], values["gating_bias"] = theta[:, :d].copy(), theta[:, d].copy()


def _gating_mstep(data, values, gating_free, cached_posts, estep_values, link, max_iter=25):
    """Weighted multinomial logistic regression with soft labels (convex), warm-started."""
    k, d = values["gating"].shape
    fit_w = "gating" in gating_free
    fit_c = "gating_bias" in gating_free
    n = data.total_weight
    if cached_posts is not None and fit_w and fit_c and k * (d + 1) <= _NEWTON_GATE_SIZE and k > 1:
        _gating_newton(data, values, cached_posts, max_iter)
        return

    def block(X, post, W, c, w=None):
        logp, p = softmax_k(W @ X.T + c[:, None])
        diff = p - post
        if w is not None:
            diff *= w
            post = post * w
        return dict(f=-float(np.sum(post * logp)), gW=diff @ X, gc=diff.sum(axis=1))

    def fun(theta):
        W = theta[: k * d].reshape(k, d) if fit_w else values["gating"]
        c = theta[-k:] if fit_c else values["gating_bias"]
        if cached_posts is not None:
            tot = None
            for (Xb, _, wb), post in zip(data.blocks(), cached_posts, strict=True):
                tot = add_partials(tot, block(Xb, post, W, c, wb))
        else:
            tot = data.map_reduce(
                lambda Xb, yb, wb=None: block(
                    Xb, _chunk_terms(Xb, yb, estep_values, link, False, True)["post"], W, c, wb
                )
            )
        parts = ([tot["gW"].ravel()] if fit_w else []) + ([tot["gc"]] if fit_c else [])
        return tot["f"] / n, np.concatenate(parts) / n

    theta0 = np.concatenate(
        ([values["gating"].ravel()] if fit_w else []) + ([values["gating_bias"]] if fit_c else [])
    )
    res = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "ftol": 1e-12, "gtol": 1e-9},
    )
    if fit_w:
        values["gating"] = res.x[: k * d].reshape(k, d)
    if fit_c:
        values["gating_bias"] = res.x[-k:]


# --------------------------------------------------------------------------
# Baseline: gradient descent on the squared loss
# --------------------------------------------------------------------------
def fit_squared_loss(
    data: Data, init: MoEParams, *, max_iter=500, tol=1e-9, fit_intercept=True, record=False
) -> FitResult:
    """Joint gradient descent on ``mean((y - sum_i p_i(x) g(<a_i,x>+b_i))^2)`` (DESIGN §6).

    The noise level is set afterwards to the root-mean-square residual.
    """
    link = get_link(init.link)
    free = _ALL - {"noise"} if fit_intercept else frozenset({"experts", "gating"})
    layout = _Layout(init.n_experts, init.n_features, free, False)
    n = data.total_weight
    k = init.n_experts

    def fun(theta):
        v = layout.unpack(theta, init)

        def block(X, y, w=None):
            pre = np.vstack([v["experts"], v["gating"]]) @ X.T
            U = pre[:k] + v["expert_bias"][:, None]
            p = softmax_k(pre[k:] + v["gating_bias"][:, None])[1]
            mu = link(U)
            m = np.sum(p * mu, axis=0)
            e2 = -2.0 * (y - m)
            loss = float(e2 @ e2) / 4.0 if w is None else float((e2 * w) @ e2) / 4.0
            if w is not None:
                e2 *= w
            g_U = e2 * p
            g_logits = g_U * (mu - m)
            if not link.is_linear:
                g_U *= link.grad(U)
            g_both = np.vstack([g_U, g_logits])
            both = g_both @ X
            sums = g_both.sum(axis=1)
            return dict(
                loss=loss,
                experts=both[:k],
                gating=both[k:],
                expert_bias=sums[:k],
                gating_bias=sums[k:],
            )

        grads = data.map_reduce(block)
        total = grads["loss"]
        return total / n, layout.grad_vector(grads) / n

    history, trajectory = [], []

    def callback(theta):
        if record:
            trajectory.append(_to_params(layout.unpack(theta, init), init.link, False))

    theta, n_iter, converged = _gradient_descent(
        fun, layout.pack(init), None, max_iter, tol, None, history, callback
    )
    v = layout.unpack(theta, init)
    mse = fun(theta)[0]
    v["noise"] = np.full(k, max(np.sqrt(mse), 1e-6))
    params = _to_params(v, init.link, False)
    ll = _total_loglik(data, v, link) / n
    return FitResult(params, ll, n_iter, converged, np.asarray(history), trajectory)


# --------------------------------------------------------------------------
# Random starts and standard errors
# --------------------------------------------------------------------------
def random_params(
    n_features, n_experts, link, y_scale=1.0, random_state=None, per_expert_noise=False
) -> MoEParams:
    """Random start used by the baselines: experts and gating ~ N(0, I/d), noise = y scale."""
    rng = random_generator(random_state)
    d, k = n_features, n_experts
    experts = rng.standard_normal((k, d)) / np.sqrt(d)
    gating = rng.standard_normal((k, d)) / np.sqrt(d)
    noise = np.full(k, float(y_scale)) if per_expert_noise else float(y_scale)
    return MoEParams(experts, gating, noise_std=noise, link=link)


def observed_information(
    data: Data, params: MoEParams, *, per_expert_noise=False, fit_intercept=True
) -> tuple[np.ndarray, list]:
    """Observed information (negative Hessian of the total log-likelihood).

    Exact, in one pass over the data: per sample, the Hessian of
    ``log sum_i exp(J_i)`` is the posterior mean of the Hessians of the ``J_i``
    plus the posterior covariance of their gradients (Louis' identity); it is
    accumulated chunk by chunk through ``data.map_reduce``.  The log-noise
    coordinates are ``log sigma`` (one, or one per expert).

    Parameters
    ----------
    data : Data
    params : MoEParams
    per_expert_noise : bool
    fit_intercept : bool
        False drops the expert and gating intercepts from the coordinates.

    Returns
    -------
    info : ndarray of shape (p, p)
    names : list of str
        Names of the coordinates, in the order experts, expert_bias, gating,
        gating_bias, noise.
    """
    free = _ALL if fit_intercept else _ALL - {"expert_bias", "gating_bias"}
    layout = _Layout(params.n_experts, params.n_features, free, per_expert_noise)
    link = get_link(params.link)
    values = layout.unpack(layout.pack(params), params)
    perm = _information_index(layout, fit_intercept)
    with blas_threads(params.n_features * params.n_experts):
        H = data.map_reduce(
            lambda Xb, yb, wb=None: _chunk_hessian(Xb, yb, values, link, perm, fit_intercept, wb)
        )
    info = -0.5 * (H + H.T)
    return info, _coordinate_names(layout, free)


def _coordinate_names(layout, free):
    names = []
    for name, size in layout.sizes():
        if name in free:
            names += [f"{name}[{i}]" for i in range(size)]
    return names


def _information_index(layout, fit_intercept):
    """Parameter index of each latent coordinate: (a_i, b_i) per expert, (w_i, c_i), log sigma."""
    k, d = layout.k, layout.d
    pos, start = 0, {}
    for name, size in layout.sizes():
        if name in layout.free:
            start[name] = pos
            pos += size
    parts = []
    for rows, bias in (("experts", "expert_bias"), ("gating", "gating_bias")):
        for i in range(k):
            parts.append(np.arange(start[rows] + i * d, start[rows] + (i + 1) * d))
            if fit_intercept:
                parts.append(np.array([start[bias] + i]))
    n_noise = k if layout.per_expert_noise else 1
    parts.append(start["noise"] + np.arange(n_noise))
    return np.concatenate(parts)


def _outer_rows(c, Z):
    """``(n, k * D)`` matrix whose block i is ``c[i][:, None] * Z`` (c is (k, n))."""
    out = np.empty((Z.shape[0], c.shape[0], Z.shape[1]))
    np.multiply(np.ascontiguousarray(c.T)[:, :, None], Z[:, None, :], out=out)
    return out.reshape(Z.shape[0], -1)


def _chunk_hessian(X, y, v, link, perm, fit_intercept, w=None):
    """Hessian of the log-likelihood summed over one chunk (rows weighted by ``w``).

    With ``J_i = log p_i + log N(y | g(U_i), sigma_i^2)``, ``U_i = <a_i,x> + b_i``,
    ``eta_i = <w_i,x> + c_i``, ``s_i = log sigma_i`` and posteriors ``pi_i``, the
    per-sample Hessian in the coordinates (U, eta, s) is

        sum_i pi_i (E_i + f_i f_i^T) - (diag(p) - p p^T)_{eta} - m m^T,

    where ``f_i`` has ``u_i = r_i g'(U_i) / sigma_i`` at U_i, 1 at eta_i and
    ``v_i = r_i^2 - 1`` at s_i, ``m = sum_i pi_i f_i``, and ``E_i`` holds the second
    derivatives of the Gaussian term: ``(-g'^2 + (y - g) g'') / sigma^2`` (UU),
    ``-2 u`` (Us) and ``-2 r^2`` (ss).  The chain rule through ``z = (x, 1)``
    gives weighted Gram matrices; the result is in the order of ``perm``.
    """
    k = v["experts"].shape[0]
    pre = np.vstack([v["experts"], v["gating"]]) @ X.T
    U = pre[:k] + v["expert_bias"][:, None]
    logits = pre[k:] + v["gating_bias"][:, None]
    sigma = v["noise"][:, None]
    err = y - link(U)
    r = err / sigma
    logp, p = softmax_k(logits)
    _, post = logsumexp_k(logp - 0.5 * r**2 - np.log(sigma))
    if link.is_linear:
        g1, e_uu = 1.0, -1.0 / sigma**2
    else:
        g1 = link.grad(U)
        e_uu = (err * link.grad2(U) - g1**2) / sigma**2
    u = r * g1 / sigma
    vv = r**2 - 1.0
    Z = np.hstack([X, np.ones((X.shape[0], 1))]) if fit_intercept else X
    Zw = Z if w is None else Z * w[:, None]  # right factor of every per-sample sum
    D = Z.shape[1]
    per_expert = perm.size - 2 * k * D == k
    c_ue = post * u
    c_es = post * vv
    # the rank parts: - m m^T with m = (pi u, pi, pi v), + p p^T on eta
    s_cols = c_es.T if per_expert else c_es.sum(axis=0)[:, None]
    M = np.hstack([_outer_rows(np.vstack([c_ue, post]), Z), s_cols])
    H = -(M.T @ (M if w is None else M * w[:, None]))
    P = _outer_rows(p, Z)
    H[k * D : 2 * k * D, k * D : 2 * k * D] += P.T @ (P if w is None else P * w[:, None])
    # the block-diagonal part: pi_i (E_i + f_i f_i^T) - diag(p) on eta
    G_ue = M[:, : k * D].T @ Zw
    G_uu, G_ee = np.split(_outer_rows(np.vstack([post * (e_uu + u**2), post - p]), Z).T @ Zw, 2)
    h_us = (post * (u * vv - 2.0 * u)) @ Zw
    h_es = c_es @ Zw
    h_ss = post * (vv**2 - 2.0 * r**2)
    h_ss = h_ss.sum(axis=1) if w is None else h_ss @ w
    for i in range(k):
        iu = slice(i * D, (i + 1) * D)
        ie = slice((k + i) * D, (k + i + 1) * D)
        js = 2 * k * D + (i if per_expert else 0)
        H[iu, iu] += G_uu[iu]
        H[iu, ie] += G_ue[iu]
        H[ie, iu] += G_ue[iu].T
        H[ie, ie] += G_ee[iu]
        H[iu, js] += h_us[i]
        H[js, iu] += h_us[i]
        H[ie, js] += h_es[i]
        H[js, ie] += h_es[i]
        H[js, js] += h_ss[i]
    out = np.empty_like(H)
    out[np.ix_(perm, perm)] = H
    return out


def _observed_information_fd(
    data: Data, params: MoEParams, *, per_expert_noise=False, fit_intercept=True
) -> tuple[np.ndarray, list]:
    """Observed information by central differences of the analytic gradient.

    The reference for :func:`observed_information` (``2 p`` passes over the data).
    """
    free = _ALL if fit_intercept else _ALL - {"expert_bias", "gating_bias"}
    layout = _Layout(params.n_experts, params.n_features, free, per_expert_noise)
    link = get_link(params.link)
    theta = layout.pack(params)

    def grad(th):
        t = _sum_terms(data, layout.unpack(th, params), link, want_grad=True)
        return layout.grad_vector(t)

    p = theta.size
    H = np.zeros((p, p))
    with blas_threads(params.n_features * params.n_experts):
        for j in range(p):
            h = 1e-5 * max(1.0, abs(theta[j]))
            e = np.zeros(p)
            e[j] = h
            H[:, j] = (grad(theta + e) - grad(theta - e)) / (2 * h)
    info = -0.5 * (H + H.T)
    return info, _coordinate_names(layout, free)
