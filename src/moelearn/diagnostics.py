"""Diagnostics: the assumptions of the moment methods, and a separated gate.

The consistency guarantees need Gaussian inputs, a link that is valid at the
moment orders used, and a second moment that supports ``k`` experts.
:func:`diagnose` measures each, so a user knows when to trust the
consistent estimate alone and when it is only a starting point for the
maximum-likelihood refinement (which the default estimator always runs).

:func:`gate_separation` tells whether a fitted gate separates the rows: then
the likelihood approaches its supremum as the gate's coefficients grow, no
maximum is attained, and the gate's coefficients and standard errors are not
identified (the analogue of perfect separation in logistic regression).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_softmax, logsumexp
from sklearn.utils import check_X_y

from ._validation import check_link, check_Xy
from .data import check_sample_weight
from .links import Link
from .model import MoEParams
from .moments import MomentAccumulator
from .transforms import output_transform

__all__ = [
    "diagnose",
    "Diagnosis",
    "gate_separation",
    "GateSeparation",
    "inputs_look_gaussian",
    "prediction_range_problem",
]


@dataclass
class Diagnosis:
    """What :func:`diagnose` found.

    Attributes
    ----------
    n_samples, n_features : int
    max_abs_skewness, max_abs_excess_kurtosis : float
        Over the whitened input coordinates (0 for a Gaussian).
    skewness_tolerance, kurtosis_tolerance : float
        Four standard errors of each statistic under Gaussianity
        (``sqrt(6/n)`` and ``sqrt(24/n)``), plus a practical margin.
    inputs_gaussian : bool
    input_condition_number : float
        Of the input covariance (the estimator whitens it away).
    m2_eigenvalues : ndarray
        Eigenvalues of ``sign(c_2) M_2`` on whitened inputs, largest first.
    m2_noise_level : float
        Eigenvalues below this are indistinguishable from sampling noise.
    supported_experts : int
        Number of eigenvalues above the noise level.
    link_orders : dict
        For each order 1-4, the constant ``c_m`` or the reason the link is invalid.
    noise_std : float
        Theory-regime noise estimate.
    trust_moments : bool
        Whether the consistent estimate alone can be trusted for ``n_experts``.
    notes : list of str
    """

    n_samples: int
    n_features: int
    max_abs_skewness: float
    max_abs_excess_kurtosis: float
    skewness_tolerance: float
    kurtosis_tolerance: float
    inputs_gaussian: bool
    input_condition_number: float
    m2_eigenvalues: np.ndarray
    m2_noise_level: float
    supported_experts: int
    link_orders: dict
    noise_std: float
    trust_moments: bool
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["m2_eigenvalues"] = self.m2_eigenvalues.tolist()
        return out

    def __str__(self) -> str:
        lines = [
            f"samples: {self.n_samples}, features: {self.n_features}",
            f"inputs Gaussian: {'yes' if self.inputs_gaussian else 'NO'} (max |skew| "
            f"{self.max_abs_skewness:.3f} vs {self.skewness_tolerance:.3f}, max |excess kurtosis| "
            f"{self.max_abs_excess_kurtosis:.3f} vs {self.kurtosis_tolerance:.3f})",
            f"input covariance condition number: {self.input_condition_number:.3g}",
            "M2 eigenvalues: "
            + ", ".join(f"{v:.3g}" for v in self.m2_eigenvalues[:8])
            + (" ..." if len(self.m2_eigenvalues) > 8 else ""),
            f"M2 supports {self.supported_experts} experts (noise level {self.m2_noise_level:.3g})",
            "link: " + "; ".join(f"order {m}: {v}" for m, v in self.link_orders.items()),
            f"noise estimate (theory regime): {self.noise_std:.4g}",
            f"trust the consistent estimate alone: {'yes' if self.trust_moments else 'no'}",
        ]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _whitened(X, w=None):
    """Centred rows, covariance, its eigenpairs, the directions with variance, whitened rows.

    ``w``: frequency weights (None: all one).  The whitened rows ``Z`` keep
    only the directions with variance above 1e-12 of the largest.
    """
    C = X - np.average(X, axis=0, weights=w)
    cov = np.cov(X, rowvar=False, bias=True, aweights=w).reshape(X.shape[1], X.shape[1])
    evals, evecs = np.linalg.eigh(cov)
    ok = evals > 1e-12 * max(evals.max(), 1e-300)
    return C, cov, evals, ok, C @ (evecs[:, ok] / np.sqrt(evals[ok]))


def _moments_within_tolerance(Z, w, n):
    """Whether every column of ``Z`` has Gaussian skewness and excess kurtosis.

    The tolerances are four standard errors under Gaussianity (``sqrt(6/n)``,
    ``sqrt(24/n)``) plus a practical margin (0.1, 0.2).  Returns
    ``(ok, largest |skewness|, largest |excess kurtosis|, skew_tol, kurt_tol)``.
    """
    skew = float(np.abs(np.average(Z**3, axis=0, weights=w)).max()) if Z.size else 0.0
    kurt = float(np.abs(np.average(Z**4, axis=0, weights=w) - 3.0).max()) if Z.size else 0.0
    skew_tol, kurt_tol = 4.0 * np.sqrt(6.0 / n) + 0.1, 4.0 * np.sqrt(24.0 / n) + 0.2
    return bool(skew <= skew_tol and kurt <= kurt_tol), skew, kurt, skew_tol, kurt_tol


def inputs_look_gaussian(X, sample_weight=None) -> bool:
    """Whether the rows of ``X`` look like draws of a Gaussian (the papers' theory regime).

    Three checks, each within four standard errors under Gaussianity plus a
    practical margin: the skewness and excess kurtosis of every whitened
    coordinate (the check of :func:`diagnose`), the same of every
    standardised input column (rotations by the whitening mix independent
    coordinates into nearly Gaussian ones: isotropic uniform inputs pass the
    first check), and Mardia's multivariate kurtosis ``mean(|z|^4)``, which is
    ``d (d + 2)`` with variance ``8 d (d + 2) / n`` for Gaussian inputs
    (margin ``0.2 d``).  Sample weights count as frequencies.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,) or None

    Returns
    -------
    bool
    """
    X = np.asarray(X, dtype=float)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    total = X.shape[0] if w is None else float(w.sum())
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] == 0 or total <= 1:
        return False
    C, cov, _, ok, Z = _whitened(X, w)
    if not ok.all():
        return False
    d = X.shape[1]
    for cols in (Z, C / np.sqrt(np.diag(cov))):
        if not _moments_within_tolerance(cols, w, total)[0]:
            return False
    b2 = np.average(np.einsum("ij,ij->i", Z, Z) ** 2, weights=w)
    return bool(abs(b2 - d * (d + 2)) <= 4.0 * np.sqrt(8.0 * d * (d + 2) / total) + 0.2 * d)


def diagnose(
    X: ArrayLike, y: ArrayLike, n_experts: int | None = None, link: str | Link = "linear"
) -> Diagnosis:
    """Check the assumptions of the moment methods on ``(X, y)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_experts : int or None
        The number of experts you intend to fit (for the verdict).
    link : str, Link or callable

    Returns
    -------
    Diagnosis
    """
    link = check_link(link)
    X, y = check_Xy(X, y, min_samples=10)
    n, d = X.shape
    notes = []
    _, _, evals, ok, Z = _whitened(X)
    cond = float(evals.max() / evals[ok].min()) if ok.any() else float("inf")
    if not ok.all():
        notes.append(f"{int((~ok).sum())} input direction(s) have zero variance")
    gaussian, skew, kurt, skew_tol, kurt_tol = _moments_within_tolerance(Z, None, n)
    if not gaussian:
        notes.append(
            "inputs are not Gaussian: the moment estimates are biased; use them only "
            "as a start for maximum likelihood (the estimator's default)"
        )

    link_orders = {}
    for m in (1, 2, 3, 4):
        try:
            link_orders[m] = f"c_{m} = {output_transform(link, 0.0, m).constant:.4g}"
        except ValueError as exc:
            link_orders[m] = f"invalid ({exc})"
    valid2 = not link_orders[2].startswith("invalid")
    valid34 = any(not link_orders[m].startswith("invalid") for m in (3, 4))

    m2_evals = np.zeros(Z.shape[1])
    noise_level = float("inf")
    supported = 0
    sigma = float("nan")
    if valid2 and Z.shape[1] > 0:
        acc = MomentAccumulator(link, Z.shape[1]).fit(Z, y)
        q2 = acc.q2
        m2_evals = np.sort(np.linalg.eigvalsh(np.sign(q2.constant) * acc.second_moment))[::-1]
        # standard error of the off-diagonal entries of M_2, estimated from a subsample;
        # the spectral norm of a d x d noise matrix is about sqrt(d) times it
        rows = Z[: min(n, 20_000)]
        w = q2(y[: rows.shape[0]])
        j = min(1, Z.shape[1] - 1)
        se = float(np.std(w * rows[:, 0] * rows[:, j]) / np.sqrt(n))
        noise_level = 3.0 * np.sqrt(Z.shape[1]) * se
        supported = int(np.sum(m2_evals > noise_level))
        sigma = acc.noise_std()
    else:
        notes.append("the link is not valid at order 2: no whitening, no moment method")

    trust = bool(gaussian and valid2 and valid34 and (n_experts is None or supported >= n_experts))
    if n_experts is not None and supported < n_experts:
        notes.append(
            f"M2 supports only {supported} of the {n_experts} experts: too few "
            "samples, too many experts, or experts that nearly coincide"
        )
    return Diagnosis(
        n,
        d,
        float(skew),
        float(kurt),
        float(skew_tol),
        float(kurt_tol),
        gaussian,
        cond,
        m2_evals,
        float(noise_level),
        supported,
        link_orders,
        sigma,
        trust,
        notes,
    )


@dataclass
class GateSeparation:
    """What :func:`gate_separation` found.

    Attributes
    ----------
    log_likelihood : float
        Total log-likelihood of the fit on the rows given.
    hard_gate_gain : float
        Total log-likelihood of the gate's limit as its coefficients grow
        (each row given to its most probable expert, exact ties shared),
        minus ``log_likelihood`` (nats).
    hard_share : float
        Share of the rows (weighted) whose largest gate probability exceeds
        ``1 - 1e-6``.
    separated : bool
        The limit fits as well (``hard_gate_gain > -tol``) and the gate is not
        constant over the experts on every row: the gate separates the rows,
        and the likelihood's supremum lies at infinity.
    """

    log_likelihood: float
    hard_gate_gain: float
    hard_share: float
    separated: bool


def gate_separation(
    params: MoEParams,
    X: ArrayLike,
    y: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    tol: float = 0.01,
) -> GateSeparation:
    """Whether the gate of a fit separates the rows ``(X, y)``.

    As the gate's coefficients are multiplied by ``t -> infinity``, each row
    goes to the expert with its largest gate logit.  When that limit fits at
    least as well as the fit itself, the gate separates the rows: the
    likelihood approaches its supremum as ``t`` grows and no maximum is
    attained (the analogue of perfect separation in logistic regression).
    Optimisers then stop where the gradient has become tiny along a growing
    gate, and the gate's coefficients and standard errors are not identified.
    On data with few rows per gate coefficient such suprema are common: every
    partition of the rows by hyperplanes, with its own regression in each
    part, is one (DESIGN §12).  A gate whose logits are equal on every row
    (no gate) does not count.

    Parameters
    ----------
    params : MoEParams
        A fitted model (``estimator.params_``).
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    sample_weight : array-like of shape (n_samples,) or None
        Frequencies.
    tol : float, default 0.01
        Nats: the fit counts as separated when the limit loses less.

    Returns
    -------
    GateSeparation
    """
    if not isinstance(params, MoEParams):
        raise TypeError(f"params must be a MoEParams, got {type(params).__name__}")
    if not (np.isfinite(tol) and tol >= 0.0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    # sklearn's checks, not check_Xy's: a constant response (all-zero counts) is fine here
    X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True)
    if X.shape[1] != params.n_features:
        raise ValueError(f"X has {X.shape[1]} features; the fit has {params.n_features}")
    w = np.ones(len(y)) if sample_weight is None else check_sample_weight(sample_weight, len(y))
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        # experts by rows, (k, n): reductions over the k experts then run along
        # contiguous rows of n, several times faster than across (n, k)'s short rows
        logits = np.ascontiguousarray(params.gating_logits(X).T)
        log_gate = log_softmax(logits, axis=0)
        # each expert's log-density, from the family (not the joint minus the gate)
        log_f = params.family_at(X).log_density(y, params.expert_predictors(X), params.dispersion())
        log_f = np.ascontiguousarray(log_f.T)
        ll = float(logsumexp(log_gate + log_f, axis=0) @ w)
        top = logits == logits.max(axis=0)  # the limit's experts, ties shared
        limit = logsumexp(np.where(top, log_f, -np.inf), axis=0) - np.log(top.sum(axis=0))
        gain = float(limit @ w) - ll
        hard = float((log_gate.max(axis=0) > np.log1p(-1e-6)) @ w / max(w.sum(), 1e-300))
    gated = bool(np.any(~top[:, w > 0])) if params.n_experts > 1 else False
    return GateSeparation(ll, gain, hard, bool(gated and np.isfinite(gain) and gain > -tol))


# An expert's mean this many spans of y beyond the range of y, on rows its gate
# weighs at least _ANSWERED, is called degenerate.
_RANGE_FACTOR = 100.0
_ANSWERED = 0.05


def _range_block(params, Xb, yb):
    """Extremes of one block: of y, of each expert on the rows it answers, of the mixture.

    Returns ``(y_low, y_high, expert_high (k,), expert_low (k,), mix_high, mix_low,
    answers (k,))`` with each mixture extreme as ``(value, expert contributing most)``
    and ``answers`` whether each expert answers a row of the block.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # judged by the comparison below
        means = params.expert_means(Xb)
        gate = params.gating_proba(Xb)
        means = np.where(np.isnan(means), np.inf, means)
        answered = gate >= _ANSWERED
        high = np.where(answered, means, -np.inf).max(axis=0)
        low = np.where(answered, means, np.inf).min(axis=0)
        parts = np.where(gate > 0, gate * means, 0.0)
        mix = parts.sum(axis=1)
        mix = np.where(np.isnan(mix), np.inf, mix)
    top, bottom = int(np.argmax(mix)), int(np.argmin(mix))
    return (
        float(yb.min()),
        float(yb.max()),
        high,
        low,
        (float(mix[top]), int(np.argmax(parts[top]))),
        (float(mix[bottom]), int(np.argmin(parts[bottom]))),
        answered.any(axis=0),
    )


def prediction_range_problem(params: MoEParams, data) -> str | None:
    """Why a fitted model is degenerate on its training data, or None.

    The mixture mean on the training inputs, and each expert's mean on the
    training rows that its gate weighs at least 5%, are compared with the
    range of the training ``y``; a prediction more than 100 times the spread
    of ``y`` beyond that range names its expert and the values (one pass over
    ``data``, a :class:`~moelearn.data.Data`).

    Returns
    -------
    str or None
        The sentence naming the first such expert.
    """
    y_low, y_high, high, low = np.inf, -np.inf, -np.inf, np.inf
    mix_high, mix_low = (-np.inf, 0), (np.inf, 0)
    answers = False
    for Xb, yb in data:
        if len(yb):
            lo, hi, e_high, e_low, m_high, m_low, block_answers = _range_block(params, Xb, yb)
            answers = answers | block_answers
            y_low, y_high = min(y_low, lo), max(y_high, hi)
            high, low = np.maximum(high, e_high), np.minimum(low, e_low)
            mix_high = max(mix_high, m_high, key=lambda t: t[0])
            mix_low = min(mix_low, m_low, key=lambda t: t[0])
    if not np.isfinite(y_high - y_low):
        return None
    limit = _RANGE_FACTOR * max(y_high - y_low, np.finfo(float).tiny)
    candidates = [
        (mix_high[1], mix_high[0], "the mixture mean reaches"),
        (mix_low[1], mix_low[0], "the mixture mean reaches"),
    ]
    for i in np.flatnonzero(answers):
        candidates += [(i, high[i], "its mean reaches"), (i, low[i], "its mean reaches")]
    for i, value, what in candidates:
        beyond = max(value - y_high, y_low - value)
        if beyond <= limit:
            continue
        return (
            f"expert {i} is degenerate: {what} {value:.3g} on the training inputs, where y "
            f"ranges over [{y_low:.3g}, {y_high:.3g}] (e.g. an expert fitted to a few extreme "
            "responses); check those rows, or use fewer experts"
        )
    return None
