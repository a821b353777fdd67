"""Inference after fitting: standard errors, Wald tests and a summary table.

The covariance of the maximum-likelihood estimate is the inverse of the
observed information (:func:`moelearn.refine.observed_information`, exact and
one pass over the data).  The softmax gate is identified only up to a common
shift of its rows, so the information is singular along those ``d + 1``
directions; the covariance is that of the *centred* gate (rows and intercepts
summing to zero over the experts), obtained by inverting the information on
the orthogonal complement of the shift directions.  The noise enters as
``log sigma``; its standard error is mapped to ``sigma`` by the delta method.

Coefficients that the data do not identify are found by a rank-revealing
eigendecomposition of the information (in the unit-free Jacobi scaling):
eigenvalues below ``1e-10`` times the largest span directions along which the
likelihood is flat (collinear columns, an empty expert) or curves up (not a
maximum), and every coordinate
with weight on them gets a NaN standard error (with NaN rows and columns of
the covariance), never the small finite number that a pseudo-inverse, which
drops those directions, would give.
"""

from __future__ import annotations

import html
import textwrap
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.linalg import null_space
from scipy.stats import norm
from sklearn.utils.validation import validate_data

from ._logspace import logsumexp_k
from .diagnostics import gate_separation
from .engine import (
    Design,
    State,
    observed_statistics,
    shared_columns,
    tied_coordinates,
    tied_parameters,
)
from .model import MoEParams, count_parameters
from .refine import Data, observed_information

__all__ = [
    "ParameterRow",
    "StandardErrors",
    "Summary",
    "bootstrap_standard_errors",
    "collinear_columns",
    "data_standard_errors",
    "classification_entropy",
    "standard_errors",
    "summarize",
]


@dataclass(frozen=True, eq=False)
class StandardErrors:
    """Standard errors of a fitted mixture of experts, in the layout of :class:`MoEParams`.

    Attributes
    ----------
    experts : ndarray of shape (k, d), or (k, q, d) for experts with ``q`` linear predictors
    expert_bias : ndarray of shape (k,) or (k, q)
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


# Relative eigenvalue of the Jacobi-scaled information (or column Gram matrix) below which
# a direction counts as not identified, and the weight on such directions above which a
# coordinate does.
_RANK_RTOL = 1e-10
_MIN_LOADING = 1e-6


def _null_loadings(scaled):
    """Weight of each coordinate on the (near-)null eigenvectors of a scaled symmetric matrix."""
    evals, evecs = np.linalg.eigh(0.5 * (scaled + scaled.T))
    null = evecs[:, evals <= _RANK_RTOL * max(float(evals.max(initial=0.0)), 1e-300)]
    return null


def collinear_columns(X, columns, fit_intercept=True, sample_weight=None) -> list[int]:
    """The columns among ``columns`` of ``X`` that take part in a (near-)collinearity.

    With ``fit_intercept`` the columns are centred first, so a constant column
    is collinear with the intercept; the Gram matrix is scaled to unit
    diagonal, and a column with weight above ``1e-6`` on an eigenvector whose
    eigenvalue is below ``1e-10`` times the largest is reported.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    columns : array-like of int
        The columns that one linear predictor reads.
    fit_intercept : bool, default True
    sample_weight : ndarray of shape (n_samples,) or None

    Returns
    -------
    list of int
        Indices into the columns of ``X``, sorted (empty when none).
    """
    columns = np.asarray(columns, dtype=int)
    if columns.size == 0:
        return []
    Z = np.asarray(X[:, columns], dtype=float)
    w = np.ones(Z.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    w = w / max(float(w.sum()), 1e-300)
    if fit_intercept:
        Z = Z - w @ Z
    gram = (Z * w[:, None]).T @ Z
    diag = np.diag(gram).copy()
    top = max(float(diag.max(initial=0.0)), 1e-300)
    empty = diag <= 1e-24 * top  # constant (centred away) or all-zero columns
    keep = ~empty
    bad = empty.copy()
    if keep.sum() > 1:
        scale = 1.0 / np.sqrt(diag[keep])
        null = _null_loadings(gram[np.ix_(keep, keep)] * np.outer(scale, scale))
        bad[np.flatnonzero(keep)] = np.sum(null**2, axis=1) > _MIN_LOADING
    return sorted(int(c) for c in columns[bad])


def classification_entropy(log_responsibilities, sample_weight=None) -> float:
    """``-sum_n w_n log r_{n, z_n}`` at the most probable expert ``z_n`` of each row.

    Twice this is what ICL adds to BIC in flexmix's convention:
    ``ICL = -2 clogLik + p log n`` with the classification log-likelihood
    ``clogLik = sum_n log(pi_{z_n} f_{z_n}(y_n)) = log L - classification_entropy``.

    Parameters
    ----------
    log_responsibilities : ndarray of shape (n_samples, n_experts)
        ``log P(z = i | x, y)``.
    sample_weight : ndarray of shape (n_samples,) or None
        Frequencies (None: one each).

    Returns
    -------
    float
    """
    per_row = -np.max(np.asarray(log_responsibilities, dtype=float), axis=1)
    return float(per_row.sum() if sample_weight is None else np.asarray(sample_weight) @ per_row)


def _blank_unidentified(cov, flagged):
    """NaN rows and columns of the covariance at the coordinates not identified."""
    if np.any(flagged):
        cov = cov.copy()
        cov[flagged, :] = np.nan
        cov[:, flagged] = np.nan
    return cov


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
    """Inverse of the information on the complement of the gate's shift directions.

    The information is Jacobi-scaled first (coordinates ``theta_j *
    sqrt(info_jj)``, free of the units of ``X`` and ``y``); the covariance is
    the inverse on the scaled complement of ``D S`` (``S`` the shift
    directions, ``D`` the scaling), whose range in the original coordinates
    is orthogonal to ``S``: the covariance of the centred gate.
    """
    root = np.sqrt(np.maximum(np.diag(info), 1e-300))
    info_s = info / np.outer(root, root)
    shifts = _shift_directions(names, k, d, fit_intercept) / root[:, None]
    basis = null_space(shifts.T)  # (p, p - d - 1)
    reduced = basis.T @ info_s @ basis
    scale = 1.0 / np.sqrt(np.maximum(np.diag(reduced), 1e-300))
    scaled = reduced * np.outer(scale, scale)
    inner = np.linalg.pinv(scaled, rcond=1e-12, hermitian=True)
    inner *= np.outer(scale, scale)
    cov = (basis @ inner @ basis.T) / np.outer(root, root)
    cov = 0.5 * (cov + cov.T)
    null = _null_loadings(scaled)
    if null.shape[1]:
        # the flat directions in the (unit-free) scaled coordinates
        full = basis @ (scale[:, None] * null)
        full /= np.maximum(np.linalg.norm(full, axis=0), 1e-300)
        cov = _blank_unidentified(cov, np.sum(full**2, axis=1) > _MIN_LOADING)
    return cov


def _unflatten(se, k, d, fit_intercept):
    """Split a coordinate vector into experts, expert_bias, gating, gating_bias, log sigma."""
    sizes = [k * d, k if fit_intercept else 0, k * d, k if fit_intercept else 0]
    A, b, W, c, log_sigma = np.split(se, np.cumsum(sizes))
    if not fit_intercept:
        b, c = np.zeros(k), np.zeros(k)
    return A.reshape(k, d), b, W.reshape(k, d), c, log_sigma


def _uses_engine(params: MoEParams) -> bool:
    return (
        params.has_roles
        or params.shared_features is not None
        or params.shared_intercept
        or params.family_object.name != "gaussian"
    )


def _engine_problem(params: MoEParams, fit_intercept):
    """Design and engine state of ``params`` in the original units (no standardisation)."""
    design = Design(
        np.flatnonzero(params.gating_features),
        np.flatnonzero(params.expert_features),
        fit_intercept,
        params.offset_feature,
        params.trials_feature,
        shared_columns(params.shared_features, params.shared_intercept),
    )

    def stack(bias, coef):
        return np.concatenate([bias[..., None], coef], axis=-1) if fit_intercept else coef.copy()

    # experts (k, d) or (k, q, d) -> (k, q, 1 + d)
    k, q = params.n_experts, params.n_predictors
    experts = params.experts.reshape(k, q, -1)
    gate = stack(params.gating_bias, params.gating)
    state = State(
        stack(np.reshape(params.expert_bias, (k, q)), experts),
        np.log(params.dispersion()),
        gate - gate[-1],
    )
    return design, state


# A coordinate whose observed information per unit of its column's sum of squares is
# below this carries no information in the data: a class an expert never predicts, a
# Poisson expert whose rate is zero on every row it answers (its log-odds or log-rate
# on the way to minus infinity, held only by the ridge); its standard error would be
# the inverse of rounding error, so it is reported as not available.
_MIN_INFORMATION = 1e-10


def _without_information(data, design, state, diag):
    """Coordinates of :meth:`State.flat` whose information is negligible, a boolean mask.

    The reference is the coordinate's information if every row weighed one on
    the linear predictor: the weighted sum of squares of its column (of the
    expert or gate design), or the total weight for a log-dispersion.
    """

    def block(Xb, yb, wb=None):
        w = np.ones(len(yb)) if wb is None else wb
        U, Z = design.expert_matrix(Xb), design.gate_matrix(Xb)
        return np.concatenate([w @ U**2, w @ Z**2, [w.sum()]])

    sums = data.map_reduce(block)
    k, q, pe = state.coef.shape
    u, z, total = sums[:pe], sums[pe:-1], sums[-1]
    reference = np.concatenate(
        [np.tile(u, k * q), np.full(state.log_disp.size, total), np.tile(z, k - 1)]
    )
    return diag < _MIN_INFORMATION * np.maximum(reference, 1e-300)


def _family_standard_errors(data: Data, params: MoEParams, fit_intercept):
    """Standard errors from the exact observed information of the engine (one pass).

    The coordinates are those of :class:`moelearn.engine.State` in the original
    units (dispersions on the log scale, the last gate row as reference); the
    covariance is mapped to the centred gate and the natural dispersions by the
    delta method.
    """
    fam = params.family_object
    k = params.n_experts
    design, state = _engine_problem(params, fit_intercept)
    p = state.flat().size
    H = observed_statistics(fam, design, data, state)["hess"]
    info = info_full = -0.5 * (H + H.T)
    # a shared parameter (noise, coefficient) is one coordinate: the information of
    # L(T theta_r) is T' I T, and the covariance maps back by T (T copies the shared entry)
    shared = params.noise_std is not None and np.ndim(params.noise_std) == 0
    expand, keep = tied_coordinates(state, tied_parameters(fam, design, k, shared))
    T = np.zeros((p, keep.size))
    T[np.arange(p), expand] = 1.0
    info = T.T @ info @ T
    scale = 1.0 / np.sqrt(np.maximum(np.abs(np.diag(info)), 1e-300))
    scaled = info * np.outer(scale, scale)
    cov = np.linalg.pinv(scaled, rcond=1e-12, hermitian=True)
    cov *= np.outer(scale, scale)
    flagged = np.sum(_null_loadings(scaled) ** 2, axis=1) > _MIN_LOADING
    cov = T @ cov @ T.T
    flagged = ((T @ flagged) > 0) | _without_information(data, design, state, np.diag(info_full))
    # map the reference-row gate to the centred gate: V_c = C V_free, C = I - 11'/k
    nc, nd = state.coef.size, state.log_disp.size
    pg = state.gate.shape[1]
    C = np.eye(k)[:, : k - 1] - 1.0 / k
    J = np.zeros((nc + nd + k * pg, p))
    J[: nc + nd, : nc + nd] = np.eye(nc + nd)
    J[nc + nd :, nc + nd :] = np.kron(C, np.eye(pg))
    cov = J @ cov @ J.T
    cov = 0.5 * (cov + cov.T)
    # a free gate coordinate not identified leaves every centred row of its column so
    cov = _blank_unidentified(cov, (np.abs(J) @ flagged) > 0)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    q, pe = state.coef.shape[1:]
    se_coef = se[:nc].reshape(k, q, pe)
    if params.experts.ndim == 2:
        se_coef = se_coef[:, 0]
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
        [
            f"expert[{i}][{j}]" if params.experts.ndim == 2 else f"expert[{i}][{c}][{j}]"
            for i in range(k)
            for c in range(q)
            for j in range(pe)
        ]
        + [f"log_{n}[{i}]" for i in range(k) for n in names_]
        + [f"gate[{i}][{j}]" for i in range(k) for j in range(pg)]
    )
    return StandardErrors(
        se_coef[..., fi:],
        se_coef[..., 0] if fi else np.zeros(se_coef.shape[:-1]),
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
    if _uses_engine(params) or getattr(data, "groups", None) is not None:
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
    X = params.check_X(X)
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
    """Summary of a fitted mixture of experts.

    Print it for a plain-text table (every column as wide as its content),
    call :meth:`to_frame` for a pandas DataFrame; Jupyter shows its HTML form.

    Attributes
    ----------
    rows : tuple of ParameterRow
        Experts (coefficients then intercept), centred gate, noise levels.
        The standard error (and z, p-value and interval) of a coefficient
        that the data do not identify is NaN, printed ``n/a``.
    standard_errors : StandardErrors
    n_samples, n_experts, n_parameters : int
        ``n_parameters`` counts identified parameters (the centred gate has
        ``(k - 1)(d + 1)``).
    log_likelihood : float
        Total log-likelihood on the data summarised.
    aic, bic : float
    icl : float
        ``-2 clogLik + n_parameters log n`` (flexmix's ``ICL``): BIC plus twice
        ``classification_entropy``; lower is better.
    entropy : float
        ``-sum_n sum_i r_ni log r_ni``: the entropy of the posterior
        responsibilities (``bic + 2 * entropy`` is McLachlan and Peel's
        soft-assignment ICL-BIC).
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
    n_groups : int or None
        The number of groups of grouped rows (None: ungrouped); the entropies
        are then over the groups' posteriors.
    point_masses : int
        Leading experts that are point masses at zero (zero-inflated families).
    total_weight : float or None
        The sum of the frequency weights of a weighted summary (None: unweighted);
        ``n_samples`` counts the rows, BIC's ``n`` is this sum.
    prior : str or None
        The prior of a maximum a posteriori fit (the estimator's
        ``prior_strength``), None for a maximum-likelihood one.  The
        log-likelihood and the criteria are those of the plain likelihood.
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
    classification_entropy: float = float("nan")
    n_groups: int | None = None
    point_masses: int = 0
    total_weight: float | None = None
    prior: str | None = None

    def _header(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs of the header, in print order."""
        pairs = [
            ("Experts", str(self.n_experts)),
            ("Link", self.link),
            ("Noise", self.noise),
            ("Samples", str(self.n_samples)),
        ]
        if self.total_weight is not None:
            pairs.append(("Weights (frequencies)", f"{self.total_weight:.6g}"))
        if self.n_groups is not None:
            pairs.append(("Groups", str(self.n_groups)))
        pairs += [
            ("Log-likelihood", f"{self.log_likelihood:.6g}"),
            ("Parameters", str(self.n_parameters)),
            ("Converged", str(self.converged)),
            ("AIC", f"{self.aic:.6g}"),
            ("BIC", f"{self.bic:.6g}"),
            ("ICL", f"{self.icl:.6g}"),
            ("Start", str(self.init_method)),
        ]
        if self.prior is not None:
            pairs.append(("Prior", self.prior))
        return pairs

    def _kind(self) -> str:
        return "maximum-likelihood" if self.prior is None else "maximum a posteriori"

    def _notes(self) -> list[str]:
        notes = ["gate centred (rows and intercepts sum to zero over experts); Wald z, normal p"]
        if self.point_masses:
            notes.append("expert 0 is a point mass at zero (no parameters of its own)")
        if self.gate_separated and self.prior is not None:
            notes.append(
                "the gate SEPARATES the rows (a sharper gate fits as well): the likelihood "
                "alone would send the gate's coefficients to infinity; the prior holds them "
                "finite, so their size (and their standard errors) reflect the prior, not the data"
            )
        elif self.gate_separated:
            notes.append(
                "the gate SEPARATES the rows (a sharper gate fits as well): the likelihood's "
                "supremum lies at infinity; the gate's coefficients and standard errors are "
                "not identified"
            )
        if any(np.isnan(r.std_error) for r in self.rows):
            notes.append(
                "n/a: not available, the coefficient is not identified (the observed "
                "information is singular, indefinite or nil along it: collinear columns, "
                "not a maximum, or an expert that never predicts a class)"
            )
        return notes

    def _cells(self) -> tuple[list[str], list[tuple[str, list[str]]]]:
        """Column titles and, per row, its group and formatted cells (text and HTML)."""
        lo = f"[{(1 - self.level) / 2:.3f}"
        hi = f"{1 - (1 - self.level) / 2:.3f}]"
        titles = ["", "coef", "std err", "z", "P>|z|", lo, hi]
        body = []
        for r in self.rows:
            untested = r.group in ("noise", "dispersion")

            def num(v, fmt, blank=False):
                if np.isnan(v):
                    return "" if blank else "n/a"
                return format(v, fmt)

            body.append(
                (
                    r.group,
                    [
                        r.name,
                        num(r.estimate, ".4g"),
                        num(r.std_error, ".4g"),
                        num(r.z, ".3f", untested),
                        num(r.p_value, ".3f", untested),
                        num(r.ci_low, ".4g"),
                        num(r.ci_high, ".4g"),
                    ],
                )
            )
        return titles, body

    def to_frame(self):
        """The parameter table as a pandas DataFrame (needs pandas).

        One row per parameter with the columns ``group``, ``name``,
        ``estimate``, ``std_error``, ``z``, ``p_value``, ``ci_low`` and
        ``ci_high`` (NaN where not available); the header values are in
        ``DataFrame.attrs``.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Summary.to_frame needs pandas: pip install pandas") from None
        frame = pd.DataFrame([r.__dict__ for r in self.rows])
        frame.attrs.update(
            n_samples=self.n_samples,
            n_experts=self.n_experts,
            n_parameters=self.n_parameters,
            log_likelihood=self.log_likelihood,
            aic=self.aic,
            bic=self.bic,
            icl=self.icl,
            converged=self.converged,
            gate_separated=self.gate_separated,
        )
        return frame

    def __str__(self) -> str:
        titles, body = self._cells()
        # every column as wide as its widest cell, two spaces between columns
        widths = [
            max([len(titles[j])] + [len(c[j]) + (2 if j == 0 else 0) for _, c in body])
            for j in range(len(titles))
        ]

        def line(cells):
            return cells[0].ljust(widths[0]) + "".join(
                "  " + c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)
            )

        table_width = len(line(titles))
        pairs = self._header()
        head_lines, current = [], ""
        room = max(table_width, 60)
        for label, value in pairs:
            item = f"{label}: {value}"
            if len(item) > room:  # a long item (the prior) on lines of its own
                if current:
                    head_lines.append(current)
                head_lines += textwrap.wrap(
                    item, room, subsequent_indent="  ", break_on_hyphens=False
                )
                current = ""
            elif current and len(current) + 3 + len(item) > room:
                head_lines.append(current)
                current = item
            else:
                current = f"{current}   {item}" if current else item
        if current:
            head_lines.append(current)
        width = max(table_width, *(len(h) for h in head_lines))
        lines = [f"Mixture of experts: {self._kind()} summary", "=" * width, *head_lines]
        lines += ["Note: " + n for n in self._notes()]
        lines += ["=" * width, line(titles)]
        group = None
        for g, cells in body:
            if g != group:
                group = g
                lines += ["-" * width, g]
            lines.append(line(["  " + cells[0], *cells[1:]]))
        lines.append("=" * width)
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):  # IPython
        printer.text(str(self))

    def _repr_html_(self) -> str:
        """The summary as an HTML table (Jupyter)."""
        esc = html.escape
        titles, body = self._cells()
        parts = [f"<div><p><b>Mixture of experts: {self._kind()} summary</b></p>"]
        parts.append("<table><tbody>")
        for label, value in self._header():
            parts.append(
                f"<tr><th style='text-align:left'>{esc(label)}</th>"
                f"<td style='text-align:left'>{esc(value)}</td></tr>"
            )
        parts.append("</tbody></table>")
        parts += [f"<p>Note: {esc(n)}</p>" for n in self._notes()]
        parts.append("<table><thead><tr>")
        parts += [f"<th>{esc(t)}</th>" for t in titles]
        parts.append("</tr></thead><tbody>")
        group = None
        for g, cells in body:
            if g != group:
                group = g
                parts.append(
                    f"<tr><th colspan='{len(titles)}' style='text-align:left'>{esc(g)}</th></tr>"
                )
            parts.append(
                "<tr>"
                + f"<td style='text-align:left'>{esc(cells[0])}</td>"
                + "".join(f"<td style='text-align:right'>{esc(c)}</td>" for c in cells[1:])
                + "</tr>"
            )
        parts.append("</tbody></table></div>")
        return "".join(parts)


def _rows(params, se: StandardErrors, fit_intercept, feature_names, level, predictor_names=None):
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

    q = params.n_predictors
    if predictor_names is None:
        predictor_names = [f"predictor {c}" for c in range(q)]
    if q > 1 and len(predictor_names) != q:
        raise ValueError(f"predictor_names must have {q} entries, got {len(predictor_names)}")
    # one block of rows per expert and linear predictor: (k, q, d) views of both layouts
    A, b = params.experts.reshape(k, q, -1), np.reshape(params.expert_bias, (k, q))
    sA, sb = se.experts.reshape(k, q, -1), np.reshape(se.expert_bias, (k, q))
    shared = np.zeros(A.shape[-1], dtype=bool)
    pm = params.family_object.point_masses  # point masses at zero: no rows of their own
    if params.shared_features is not None and k - pm > 1:
        # a coefficient every expert shares is one parameter: one row
        shared = params.shared_features[params.expert_features]
        for r in range(q):
            group = "all experts" if q == 1 else f"all experts, {predictor_names[r]}"
            for j in np.flatnonzero(shared):
                add(group, expert_names[j], A[pm, r, j], sA[pm, r, j])
    one_intercept = fit_intercept and params.shared_intercept and k - pm > 1
    if one_intercept:
        for r in range(q):
            group = "all experts" if q == 1 else f"all experts, {predictor_names[r]}"
            add(group, "intercept", b[pm, r], sb[pm, r])
    for i in range(pm, k):
        for r in range(q):
            group = f"expert {i}" if q == 1 else f"expert {i}, {predictor_names[r]}"
            for j, name in enumerate(expert_names):
                if not shared[j]:
                    add(group, name, A[i, r, j], sA[i, r, j])
            if fit_intercept and not one_intercept:
                add(group, "intercept", b[i, r], sb[i, r])
    if k > 1:
        for i in range(k):
            for j, name in enumerate(gate_names):
                add(f"gate {i}", name, W[i, j], se.gating[i, j])
            if fit_intercept:
                add(f"gate {i}", "intercept", c[i], se.gating_bias[i])
    row = params.family_object.noise_row  # (group, label) of the noise parameter, or None
    one_noise = row is not None and np.ndim(se.noise_std) == 0
    if one_noise:
        add(row[0], row[1], params.noise_vector[0], se.noise_std, test=False)
    for i in range(pm, k):
        if row is not None and not one_noise:
            add(row[0], f"{row[1]}[{i}]", params.noise_vector[i], se.noise_std[i], test=False)
        if se.df is not None:
            add("dispersion", f"df[{i}]", params.df[i], se.df[i], test=False)
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
    predictor_names=None,
    groups=None,
    sample_weight=None,
    prior=None,
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
    predictor_names : sequence of str or None
        Labels of an expert's linear predictors when it has several (the
        multinomial family's log-odds of each class against the last); None:
        ``"predictor c"``.
    groups : moelearn.grouping.Groups or None
        Grouped rows: the grouped log-likelihood, its information and the
        entropy of the groups' posteriors (``n`` stays the number of rows).
    sample_weight : ndarray of shape (n_samples,) or None
        Frequency weights (checked): the information, the log-likelihood and
        the entropies are weighted sums and ``n`` is the weights' sum (a
        group's weight is its rows').
    prior : str or None
        Shown in the header: the prior of a maximum a posteriori fit.

    Returns
    -------
    Summary
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    X, y = _check_data(params, X, y)
    per_expert = _per_expert_noise(params, per_expert_noise)
    w = sample_weight
    source = Data(X, y, groups=groups, sample_weight=w)
    se = data_standard_errors(source, params, per_expert, fit_intercept)
    if groups is None:
        joint = params.joint_log_likelihood(X, y).T  # (k, n)
        unit_w = w
    else:
        joint = params.group_joint_log_likelihood(X, y, groups).T  # (k, n_groups)
        unit_w = None if w is None else w[groups.first]
    lse, post = logsumexp_k(joint)
    log_post = joint - lse
    with np.errstate(invalid="ignore"):  # a posterior of 0 (log -inf) adds nothing
        per_unit = -np.where(post > 0, post * log_post, 0.0).sum(axis=0)
    entropy = float(per_unit.sum() if unit_w is None else per_unit @ unit_w)
    hard = classification_entropy(log_post.T, unit_w)
    ll = float(lse.sum() if unit_w is None else lse @ unit_w)
    k = params.n_experts
    n_params = count_parameters(
        params.family_object,
        k,
        params.gating_features,
        params.expert_features,
        fit_intercept,
        shared_noise=not per_expert,
        n_shared=params.n_shared,
    )
    n = X.shape[0] if w is None else float(np.sum(w))
    bic = -2.0 * ll + n_params * np.log(n)
    return Summary(
        rows=_rows(params, se, fit_intercept, feature_names, level, predictor_names),
        standard_errors=se,
        n_samples=X.shape[0],
        n_experts=k,
        n_parameters=n_params,
        log_likelihood=ll,
        aic=-2.0 * ll + 2.0 * n_params,
        bic=float(bic),
        icl=float(bic + 2.0 * hard),
        entropy=entropy,
        link=params.family_object.link_label,
        noise="none" if params.noise_std is None else ("per expert" if per_expert else "shared"),
        converged=None if converged is None else bool(converged),
        init_method=init_method,
        level=float(level),
        gate_separated=gate_separation(params, X, y).separated if k > 1 else None,
        classification_entropy=hard,
        n_groups=None if groups is None else groups.n_groups,
        point_masses=params.family_object.point_masses,
        total_weight=None if w is None else float(np.sum(w)),
        prior=prior,
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
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    from .exceptions import GateSeparationWarning, NotIdentifiedWarning

    refit = clone(est).set_params(init_params=est.params_, compute_standard_errors=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", GateSeparationWarning)
        warnings.simplefilter("ignore", NotIdentifiedWarning)
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
    X = validate_data(est, X, reset=False, dtype=np.float64)
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
