"""Inference after fitting: standard errors, Wald tests and a summary table.

The covariance of the maximum-likelihood estimate is the inverse of the
observed information (:func:`moelearn.refine.observed_information`, exact and
one pass over the data).  The softmax gate is identified only up to a common
shift of its rows, so the information is singular along those ``d + 1``
directions; the covariance is that of the *centred* gate (rows and intercepts
summing to zero over the experts), obtained by inverting the information on
the orthogonal complement of the shift directions.  The noise enters as
``log sigma``; its standard error is mapped to ``sigma`` by the delta method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import null_space
from scipy.stats import norm

from ._logspace import logsumexp_k
from .diagnostics import gate_separation
from .engine import Design, State, pass_statistics, tied_column, tied_coordinates
from .model import MoEParams, count_parameters
from .refine import Data, observed_information

__all__ = [
    "ParameterRow",
    "StandardErrors",
    "Summary",
    "bootstrap_standard_errors",
    "data_standard_errors",
    "standard_errors",
    "summarize",
]


@dataclass(frozen=True, eq=False)
class StandardErrors:
    """Standard errors of a fitted mixture of experts, in the layout of :class:`MoEParams`.

    Attributes
    ----------
    experts : ndarray of shape (k, d)
    expert_bias : ndarray of shape (k,)
        Zeros when the intercepts are not fitted (they are fixed at 0).
    gating : ndarray of shape (k, d)
        Standard errors of the centred gating rows.
    gating_bias : ndarray of shape (k,)
        Standard errors of the centred gating intercepts (zeros when not fitted).
    noise_std : float or ndarray of shape (k,)
        Standard error of ``sigma`` (shared) or of each ``sigma_i`` (delta method).
    covariance : ndarray of shape (p, p)
        Covariance of the coordinates in ``names`` (noise as ``log sigma``),
        gating centred.
    names : tuple of str
        Coordinate names, in the order experts, expert_bias, gating,
        gating_bias, noise (as :func:`moelearn.refine.observed_information`);
        for other families and covariate roles, the order of
        :func:`moelearn.engine.State.flat` with the gate centred.
    df : ndarray of shape (k,) or None
        Standard errors of Student-t degrees of freedom.
    """

    experts: np.ndarray
    expert_bias: np.ndarray
    gating: np.ndarray
    gating_bias: np.ndarray
    noise_std: float | np.ndarray | None
    covariance: np.ndarray
    names: tuple
    df: np.ndarray | None = None


def _shift_directions(names, k, d, fit_intercept):
    """Unit vectors along which the likelihood is flat: a common shift of the gate rows."""
    p = len(names)
    start = names.index("gating[0]")
    cols = []
    for j in range(d):
        v = np.zeros(p)
        v[start + j + d * np.arange(k)] = 1.0
        cols.append(v)
    if fit_intercept:
        v = np.zeros(p)
        v[names.index("gating_bias[0]") + np.arange(k)] = 1.0
        cols.append(v)
    return np.array(cols).T / np.sqrt(k)


def _covariance(info, names, k, d, fit_intercept):
    """Inverse of the information on the complement of the gate's shift directions."""
    basis = null_space(_shift_directions(names, k, d, fit_intercept).T)  # (p, p - d - 1)
    reduced = basis.T @ info @ basis
    # Jacobi scaling: original units may give coordinates of very different sizes
    scale = 1.0 / np.sqrt(np.maximum(np.diag(reduced), 1e-300))
    inner = np.linalg.pinv(reduced * np.outer(scale, scale), rcond=1e-12, hermitian=True)
    inner *= np.outer(scale, scale)
    cov = basis @ inner @ basis.T
    return 0.5 * (cov + cov.T)


def _unflatten(se, k, d, fit_intercept):
    """Split a coordinate vector into experts, expert_bias, gating, gating_bias, log sigma."""
    sizes = [k * d, k if fit_intercept else 0, k * d, k if fit_intercept else 0]
    A, b, W, c, log_sigma = np.split(se, np.cumsum(sizes))
    if not fit_intercept:
        b, c = np.zeros(k), np.zeros(k)
    return A.reshape(k, d), b, W.reshape(k, d), c, log_sigma


def _uses_engine(params: MoEParams) -> bool:
    return params.has_roles or params.family_object.name != "gaussian"


def _engine_problem(params: MoEParams, fit_intercept):
    """Design and engine state of ``params`` in the original units (no standardisation)."""
    design = Design(
        np.flatnonzero(params.gating_features),
        np.flatnonzero(params.expert_features),
        fit_intercept,
        params.offset_feature,
    )

    def stack(bias, coef):
        return np.hstack([bias[:, None], coef]) if fit_intercept else coef.copy()

    gate = stack(params.gating_bias, params.gating)
    state = State(
        stack(params.expert_bias, params.experts)[:, None, :],
        np.log(params.dispersion()),
        gate - gate[-1],
    )
    return design, state


def _engine_gradient(params, design, data, state, theta):
    k = state.n_experts
    st = pass_statistics(params.family_object, design, data, state.with_flat(theta), "grad")
    parts = [st["g_coef"].ravel(), st["g_disp"].ravel()]
    if k > 1:
        parts.append(st["g_gate"][: k - 1].ravel())
    return np.concatenate(parts)


def _natural_scales(data: Data, design, state):
    """Per coordinate of ``state.flat()``: 1 / spread of the column it multiplies (1 else)."""

    def block(X, y, w=None):
        return np.array([X.shape[0], *X.sum(axis=0), *(X * X).sum(axis=0)])

    sums = data.map_reduce(block)
    n, d = sums[0], (len(sums) - 1) // 2
    mean = sums[1 : d + 1] / n
    sd = np.sqrt(np.maximum(sums[d + 1 :] / n - mean**2, 0.0))
    sd = np.where(sd > 0, sd, 1.0)
    fi = int(design.fit_intercept)

    def coef_scales(columns, count):
        row = np.concatenate([np.ones(fi), 1.0 / sd[columns]])
        return np.tile(row, count)

    k, q, _ = state.coef.shape
    return np.concatenate(
        [
            coef_scales(design.expert_columns, k * q),
            np.ones(state.log_disp.size),
            coef_scales(design.gating_columns, k - 1),
        ]
    )


def _family_standard_errors(data: Data, params: MoEParams, fit_intercept):
    """Observed information by central differences of the exact engine gradient (2p passes).

    The coordinates are those of :class:`moelearn.engine.State` in the original
    units (dispersions on the log scale, the last gate row as reference); the
    covariance is mapped to the centred gate and the natural dispersions by the
    delta method.
    """
    fam = params.family_object
    k = params.n_experts
    design, state = _engine_problem(params, fit_intercept)
    theta = state.flat()
    p = theta.size
    natural = _natural_scales(data, design, state)
    H = np.empty((p, p))
    for j in range(p):
        # a step relative to the coordinate's natural size (1 / spread of its column):
        # the information does not depend on the units of X
        h = 1e-5 * max(natural[j], abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        H[:, j] = (
            _engine_gradient(params, design, data, state, up)
            - _engine_gradient(params, design, data, state, down)
        ) / (2 * h)
    info = -0.5 * (H + H.T)
    # a shared noise parameter is one coordinate: the information of L(T theta_r) is
    # T' I T, and the covariance maps back by T (T copies the shared entry)
    shared = params.noise_std is not None and np.ndim(params.noise_std) == 0
    expand, keep = tied_coordinates(state, tied_column(fam, k, shared))
    T = np.zeros((p, keep.size))
    T[np.arange(p), expand] = 1.0
    info = T.T @ info @ T
    scale = 1.0 / np.sqrt(np.maximum(np.abs(np.diag(info)), 1e-300))
    cov = np.linalg.pinv(info * np.outer(scale, scale), rcond=1e-12, hermitian=True)
    cov *= np.outer(scale, scale)
    cov = T @ cov @ T.T
    # map the reference-row gate to the centred gate: V_c = C V_free, C = I - 11'/k
    nc, nd = state.coef.size, state.log_disp.size
    pg = state.gate.shape[1]
    C = np.eye(k)[:, : k - 1] - 1.0 / k
    J = np.zeros((nc + nd + k * pg, p))
    J[: nc + nd, : nc + nd] = np.eye(nc + nd)
    J[nc + nd :, nc + nd :] = np.kron(C, np.eye(pg))
    cov = J @ cov @ J.T
    cov = 0.5 * (cov + cov.T)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    pe = state.coef.shape[2]
    se_coef = se[:nc].reshape(k, pe)
    se_disp = se[nc : nc + nd].reshape(k, -1)
    se_gate = se[nc + nd :].reshape(k, pg)
    fi = int(fit_intercept)
    zeros = np.zeros(k)
    names_ = fam.dispersion_names
    disp = params.dispersion()
    noise = df = None
    if "sigma" in names_:
        noise = se_disp[:, names_.index("sigma")] * disp[:, names_.index("sigma")]
    if "shape" in names_:
        # cv = shape^(-1/2): d cv / d log shape = -cv / 2
        noise = 0.5 * se_disp[:, names_.index("shape")] * params.noise_vector
    if "nu" in names_:
        df = se_disp[:, names_.index("nu")] * disp[:, names_.index("nu")]
    if shared and noise is not None:
        noise = float(noise[0])
    names = (
        [f"expert[{i}][{j}]" for i in range(k) for j in range(pe)]
        + [f"log_{n}[{i}]" for i in range(k) for n in names_]
        + [f"gate[{i}][{j}]" for i in range(k) for j in range(pg)]
    )
    return StandardErrors(
        se_coef[:, fi:],
        se_coef[:, 0] if fi else zeros,
        se_gate[:, fi:],
        se_gate[:, 0] if fi else zeros,
        noise,
        cov,
        tuple(names),
        df,
    )


def data_standard_errors(
    data: Data, params: MoEParams, per_expert_noise, fit_intercept
) -> StandardErrors:
    """:func:`standard_errors` on a :class:`~moelearn.data.Data` source (any size).

    Parameters
    ----------
    data : Data
        The training data, in memory or out of core (one pass).
    params : MoEParams
        The maximum-likelihood estimate on ``data``.
    per_expert_noise : bool
        One noise level per expert (False: one shared by all).
    fit_intercept : bool
        Whether the intercepts were fitted.

    Returns
    -------
    StandardErrors
    """
    if _uses_engine(params):
        return _family_standard_errors(data, params, fit_intercept)
    info, names = observed_information(
        data, params, per_expert_noise=per_expert_noise, fit_intercept=fit_intercept
    )
    k, d = params.n_experts, params.n_features
    cov = _covariance(info, names, k, d, fit_intercept)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    A, b, W, c, log_sigma = _unflatten(se, k, d, fit_intercept)
    sigma = params.noise_vector if per_expert_noise else float(np.mean(params.noise_vector))
    noise = log_sigma * sigma if per_expert_noise else float(log_sigma[0] * sigma)
    return StandardErrors(A, b, W, c, noise, cov, tuple(names))


def _per_expert_noise(params, per_expert_noise):
    if per_expert_noise is None:
        return bool(np.ndim(params.noise_std))
    return bool(per_expert_noise)


def _check_data(params, X, y):
    if not isinstance(params, MoEParams):
        raise TypeError(f"params must be a MoEParams, got {type(params).__name__}")
    X = params._check_X(X)
    y = np.asarray(y, dtype=float).ravel()
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    return X, y


def standard_errors(
    params: MoEParams, X, y, *, per_expert_noise=None, fit_intercept=True
) -> StandardErrors:
    """Asymptotic standard errors from the observed information on ``(X, y)``.

    Parameters
    ----------
    params : MoEParams
        The maximum-likelihood estimate on ``(X, y)`` (standard errors at any
        other point are not meaningful).
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    per_expert_noise : bool or None
        One noise level per expert; None follows ``params.noise_std``.
    fit_intercept : bool
        Whether the intercepts were fitted (False treats them as fixed).

    Returns
    -------
    StandardErrors
    """
    X, y = _check_data(params, X, y)
    return data_standard_errors(
        Data(X, y), params, _per_expert_noise(params, per_expert_noise), fit_intercept
    )


@dataclass(frozen=True)
class ParameterRow:
    """One line of a :class:`Summary` table.

    ``group`` is ``"expert i"``, ``"gate i"`` or ``"noise"``; for noise rows
    ``z`` and ``p_value`` are NaN (a standard deviation is not tested against 0).
    """

    group: str
    name: str
    estimate: float
    std_error: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, eq=False)
class Summary:
    """Summary of a fitted mixture of experts (print it for a table).

    Attributes
    ----------
    rows : tuple of ParameterRow
        Experts (coefficients then intercept), centred gate, noise levels.
    standard_errors : StandardErrors
    n_samples, n_experts, n_parameters : int
        ``n_parameters`` counts identified parameters (the centred gate has
        ``(k - 1)(d + 1)``).
    log_likelihood : float
        Total log-likelihood on the data summarised.
    aic, bic : float
    icl : float
        ``bic + 2 * entropy``: BIC penalised by the entropy of the posterior
        responsibilities (Biernacki et al. 2000); lower is better.
    entropy : float
        ``-sum_n sum_i r_ni log r_ni``.
    link, noise : str
    converged : bool or None
    init_method : str or None
    level : float
        Confidence level of the Wald intervals.
    gate_separated : bool or None
        Whether the gate separates the rows (:func:`moelearn.gate_separation`):
        then the likelihood's supremum lies at infinity, and the gate's
        coefficients and standard errors are not identified.  None for one
        expert.
    """

    rows: tuple
    standard_errors: StandardErrors
    n_samples: int
    n_experts: int
    n_parameters: int
    log_likelihood: float
    aic: float
    bic: float
    icl: float
    entropy: float
    link: str
    noise: str
    converged: bool | None = None
    init_method: str | None = None
    level: float = 0.95
    gate_separated: bool | None = None

    def to_frame(self):
        """The table as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.rows])

    def __str__(self) -> str:
        width = 84
        lo = f"[{(1 - self.level) / 2:.3f}"
        hi = f"{1 - (1 - self.level) / 2:.3f}]"
        head = [
            "Mixture of experts: maximum-likelihood summary".center(width),
            "=" * width,
            f"Experts: {self.n_experts:<6d} Link: {self.link:<12s} Noise: {self.noise:<10s} "
            f"Samples: {self.n_samples}",
            f"Log-likelihood: {self.log_likelihood:<14.6g} Parameters: {self.n_parameters:<6d} "
            f"Converged: {self.converged}",
            f"AIC: {self.aic:<14.6g} BIC: {self.bic:<14.6g} ICL: {self.icl:<14.6g}",
            f"Start: {self.init_method}",
            "Gate: centred (rows and intercepts sum to zero over experts); Wald z, normal p-values",
        ]
        if self.gate_separated:
            head += [
                "Gate: SEPARATES the rows (a sharper gate fits as well): the likelihood's supremum",
                "  lies at infinity; the gate's coefficients and standard errors are not "
                "identified",
            ]
        head += [
            "=" * width,
            f"{'':<22s}{'coef':>10s}{'std err':>11s}{'z':>10s}{'P>|z|':>9s}{lo:>11s}{hi:>11s}",
        ]
        lines = list(head)
        group = None
        for r in self.rows:
            if r.group != group:
                group = r.group
                lines.append("-" * width)
                lines.append(group)
            z = "" if np.isnan(r.z) else f"{r.z:10.3f}"
            p = "" if np.isnan(r.p_value) else f"{r.p_value:9.3f}"
            lines.append(
                f"  {r.name[:20]:<20s}{r.estimate:10.4g}{r.std_error:11.4g}{z:>10s}"
                f"{p:>9s}{r.ci_low:11.4g}{r.ci_high:11.4g}"
            )
        lines.append("=" * width)
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(str(self))


def _rows(params, se: StandardErrors, fit_intercept, feature_names, level):
    k, d = params.n_experts, params.n_features
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    if len(names) != d:
        raise ValueError(f"feature_names must have {d} entries, got {len(names)}")
    expert_names, gate_names = names, names
    if params.has_roles:
        expert_names = [n for n, keep in zip(names, params.expert_features, strict=True) if keep]
        gate_names = [n for n, keep in zip(names, params.gating_features, strict=True) if keep]
    crit = norm.ppf(0.5 + level / 2.0)
    W = params.gating - params.gating.mean(axis=0)
    c = params.gating_bias - params.gating_bias.mean()
    rows = []

    def add(group, name, est, s, test=True):
        est, s = float(est), float(s)
        if test and s > 0:
            z = est / s
            pv = float(2.0 * norm.sf(abs(z)))
        else:
            z = pv = float("nan")
        rows.append(ParameterRow(group, name, est, s, z, pv, est - crit * s, est + crit * s))

    for i in range(k):
        for j, name in enumerate(expert_names):
            add(f"expert {i}", name, params.experts[i, j], se.experts[i, j])
        if fit_intercept:
            add(f"expert {i}", "intercept", params.expert_bias[i], se.expert_bias[i])
    if k > 1:
        for i in range(k):
            for j, name in enumerate(gate_names):
                add(f"gate {i}", name, W[i, j], se.gating[i, j])
            if fit_intercept:
                add(f"gate {i}", "intercept", c[i], se.gating_bias[i])
    family = params.family_object.name
    if family != "gaussian":
        label = {"student-t": "scale", "gamma": "cv"}.get(family)
        shared = label is not None and np.ndim(se.noise_std) == 0
        if shared:
            add("dispersion", label, params.noise_vector[0], se.noise_std, False)
        for i in range(k):
            if label is not None and not shared:
                add("dispersion", f"{label}[{i}]", params.noise_vector[i], se.noise_std[i], False)
            if se.df is not None:
                add("dispersion", f"df[{i}]", params.df[i], se.df[i], test=False)
        return tuple(rows)
    if np.ndim(se.noise_std):
        for i in range(k):
            add("noise", f"sigma[{i}]", params.noise_vector[i], se.noise_std[i], test=False)
    else:
        add("noise", "sigma", np.mean(params.noise_vector), se.noise_std, test=False)
    return tuple(rows)


def summarize(
    params: MoEParams,
    X,
    y,
    *,
    per_expert_noise=None,
    fit_intercept=True,
    converged=None,
    init_method=None,
    feature_names=None,
    level=0.95,
) -> Summary:
    """Coefficient table with standard errors, Wald tests and information criteria.

    Parameters
    ----------
    params : MoEParams
        The maximum-likelihood estimate on ``(X, y)``.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    per_expert_noise : bool or None
        None follows ``params.noise_std``.
    fit_intercept : bool
    converged : bool or None
        Shown in the header (the estimator passes ``converged_``).
    init_method : str or None
        Shown in the header (the estimator passes ``init_method_``).
    feature_names : sequence of str or None
    level : float, default 0.95
        Confidence level of the Wald intervals.

    Returns
    -------
    Summary
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    X, y = _check_data(params, X, y)
    per_expert = _per_expert_noise(params, per_expert_noise)
    se = data_standard_errors(Data(X, y), params, per_expert, fit_intercept)
    joint = params._joint_k(X, y)  # (k, n)
    lse, post = logsumexp_k(joint)
    log_post = joint - lse
    entropy = float(-np.sum(post * log_post))
    ll = float(lse.sum())
    k = params.n_experts
    n_params = count_parameters(
        params.family_object,
        k,
        params.gating_features,
        params.expert_features,
        fit_intercept,
        shared_noise=not per_expert,
    )
    n = X.shape[0]
    bic = -2.0 * ll + n_params * np.log(n)
    return Summary(
        rows=_rows(params, se, fit_intercept, feature_names, level),
        standard_errors=se,
        n_samples=n,
        n_experts=k,
        n_parameters=n_params,
        log_likelihood=ll,
        aic=-2.0 * ll + 2.0 * n_params,
        bic=float(bic),
        icl=float(bic + 2.0 * entropy),
        entropy=entropy,
        link=params.link_function.name
        if params.family_object.name == "gaussian"
        else {"student-t": "t (identity)", "bernoulli": "logit"}.get(
            params.family_object.name, f"{params.family_object.name} (log)"
        ),
        noise="none" if params.noise_std is None else ("per expert" if per_expert else "shared"),
        converged=None if converged is None else bool(converged),
        init_method=init_method,
        level=float(level),
        gate_separated=gate_separation(params, X, y).separated if k > 1 else None,
    )


def _coordinates(params: MoEParams, per_expert_noise, fit_intercept):
    """Parameter vector in the order of :class:`StandardErrors` (gate centred, log sigma)."""
    W = params.gating - params.gating.mean(axis=0)
    c = params.gating_bias - params.gating_bias.mean()
    sigma = params.noise_vector
    parts = [params.experts.ravel()]
    if fit_intercept:
        parts.append(params.expert_bias)
    parts.append(W.ravel())
    if fit_intercept:
        parts.append(c)
    parts.append(np.log(sigma) if per_expert_noise else np.log([np.mean(sigma)]))
    return np.concatenate(parts)


def _bootstrap_fit(est, X, y_star):
    import warnings

    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    refit = clone(est).set_params(init_params=est.params_, compute_standard_errors=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return refit.fit(X, y_star).params_


def bootstrap_standard_errors(est, X, n_boot=100, random_state=None, n_jobs=None) -> StandardErrors:
    """Parametric-bootstrap standard errors of a fitted estimator.

    Draws ``n_boot`` new targets ``y* ~ p(y | x)`` from the fitted model at the
    rows of ``X`` (the training inputs), refits each from the fitted
    parameters (which keeps the experts' labels) and takes the spread of the
    refitted parameters.  Slower than :func:`standard_errors` but free of the
    asymptotic normal approximation of the information.

    Parameters
    ----------
    est : fitted MixtureOfExpertsRegressor
    X : array-like of shape (n_samples, n_features)
    n_boot : int, default 100
    random_state : int, RandomState, Generator or None
    n_jobs : int or None
        Parallel refits (joblib).

    Returns
    -------
    StandardErrors
        ``covariance`` is the bootstrap covariance of the coordinates (gate
        centred, noise as ``log sigma``).
    """
    from joblib import Parallel, delayed
    from sklearn.utils.validation import check_is_fitted

    from .model import random_generator
    from .predictive import sample_y

    check_is_fitted(est)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    X = est._check_X(X)
    params = est.params_
    per_expert = est.noise == "expert"
    draws = sample_y(params, X, int(n_boot), random_generator(random_state))  # (n, n_boot)
    fits = Parallel(n_jobs=n_jobs)(
        delayed(_bootstrap_fit)(est, X, draws[:, b]) for b in range(int(n_boot))
    )
    theta = np.array([_coordinates(p, per_expert, est.fit_intercept) for p in fits])
    cov = np.atleast_2d(np.cov(theta, rowvar=False))
    k, d = params.n_experts, params.n_features
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    A, b, W, c, _ = _unflatten(se, k, d, est.fit_intercept)
    sigma = np.array([p.noise_vector for p in fits])
    noise = np.std(sigma, axis=0, ddof=1)
    noise = noise if per_expert else float(np.std(sigma.mean(axis=1), ddof=1))
    names = [f"experts[{i}]" for i in range(k * d)]
    if est.fit_intercept:
        names += [f"expert_bias[{i}]" for i in range(k)]
    names += [f"gating[{i}]" for i in range(k * d)]
    if est.fit_intercept:
        names += [f"gating_bias[{i}]" for i in range(k)]
    names += [f"noise[{i}]" for i in range(k if per_expert else 1)]
    return StandardErrors(A, b, W, c, noise, cov, tuple(names))
