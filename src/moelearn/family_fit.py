"""Fitting a mixture of experts of any family, with separate gate and expert columns.

The functional core behind :class:`~moelearn.MixtureOfExpertsRegressor` when
``family`` is not Gaussian or the gate and the experts read different
columns (DESIGN §13): standardise the columns (centre and scale each one, so
that the roles stay apart), standardise ``y`` as far as the family allows,
run the start search of :func:`moelearn.engine.search` (or refine a warm
start), and map the result back to the original units.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
from sklearn.linear_model import HuberRegressor

from ._validation import MAX_MAGNITUDE, search_rows
from .data import Data, Transform, check_weight_values
from .engine import (
    SHARED_INTERCEPT,
    Design,
    EngineFit,
    State,
    at_floor,
    canonical,
    em,
    grouped_search,
    n_free_parameters,
    penalty,
    polish,
    random_partitions,
    refine_fit,
    search,
    state_from_responsibilities,
    tied_column,
    tied_parameters,
)
from .families import Family
from .model import MoEParams
from .penalties import as_penalty
from .screening import hashed_partitions

__all__ = [
    "Chain",
    "EngineResult",
    "FamilyFit",
    "fit_engine",
    "fit_family",
    "resolve_roles",
    "split_intercept",
    "unscale",
]

# Screening work (rows x coefficients x experts) of n_init="auto".
AUTO_BUDGET = 1_000_000
AUTO_CANDIDATES = (10, 30)
# A ridge this small on the experts' standardised slopes (per sample; the gate is not
# penalised: a near-step gate has large coefficients by right) moves a well-posed
# maximum by about 1e-6 x slope^2 nats per sample, but gives a unique, finite answer
# where the likelihood has none: an expert that interpolates its rows (Poisson rates
# -> 0 on zero counts).
RIDGE = (1e-6, 0.0)


@dataclass
class FamilyFit:
    """Result of :func:`fit_family`: parameters in original units and how they were found."""

    params: MoEParams
    log_likelihood: float
    n_iter: int
    converged: bool
    init_method: str
    history: list = field(default_factory=list)
    collapsed: bool = False
    x_mean: np.ndarray | None = None
    x_scale: np.ndarray | None = None
    y_mean: float = 0.0
    y_scale: float = 1.0
    penalty: float = 0.0


def split_intercept(spec, names, fit_intercept=True):
    """``shared_features`` without the entry ``"intercept"``, and whether it was there.

    A column of ``X`` named ``"intercept"`` is that column, not the intercept.
    Raises ``ValueError`` for a shared intercept without ``fit_intercept``.
    """
    if names is not None and "intercept" in [str(n) for n in names]:
        return spec, False
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, np.ndarray) and spec.dtype == bool:
        return spec, False
    try:
        entries = list(spec)
    except TypeError:
        return spec, False
    rest = [v for v in entries if not (isinstance(v, str) and v == "intercept")]
    if len(rest) != len(entries) and not fit_intercept:
        raise ValueError('shared_features lists "intercept", but fit_intercept=False')
    return rest, len(rest) != len(entries)


def resolve_roles(spec, n_features, feature_names, name):
    """A boolean mask over the columns from ``None``, indices, names or a mask.

    Raises ``ValueError`` naming ``name`` for out-of-range indices, unknown
    or duplicated names, names without column names, or a mask of the wrong
    length.
    """
    if spec is None:
        return np.ones(n_features, dtype=bool)
    if isinstance(spec, (str, bytes)) or np.isscalar(spec):
        spec = [spec]
    arr = np.asarray(spec, dtype=object).ravel()
    mask = np.zeros(n_features, dtype=bool)
    if arr.size == 0:
        return mask
    if all(isinstance(v, (bool, np.bool_)) for v in arr):
        if arr.size != n_features:
            raise ValueError(
                f"{name} as a boolean mask must have one entry per column ({n_features}), "
                f"got {arr.size}"
            )
        return arr.astype(bool)
    if all(isinstance(v, str) for v in arr):
        if feature_names is None:
            raise ValueError(
                f"{name} names columns {list(arr)}, but X has no column names (fit on a "
                "pandas DataFrame, or pass column indices)"
            )
        lookup = {str(n): i for i, n in enumerate(feature_names)}
        unknown = [v for v in arr if v not in lookup]
        if unknown:
            raise ValueError(f"{name}: unknown columns {unknown}; X has {list(lookup)}")
        idx = np.array([lookup[v] for v in arr])
    elif all(isinstance(v, (Integral, np.integer)) and not isinstance(v, bool) for v in arr):
        idx = np.array(arr, dtype=int)
        bad = idx[(idx < -n_features) | (idx >= n_features)]
        if bad.size:
            raise ValueError(f"{name}: column indices {bad.tolist()} out of range for {n_features}")
        idx = idx % n_features
    else:
        raise TypeError(f"{name} must hold column indices, column names or booleans, got {spec!r}")
    if len(set(idx.tolist())) != len(idx):
        raise ValueError(f"{name} lists a column twice: {list(arr)}")
    mask[idx] = True
    return mask


def _column_stats(raw: Data, family: Family, weights=None, trials_column=None):
    """One pass: weighted column sums, the y sums, and the checks of X and of y.

    The family refuses invalid responses block by block (negative counts,
    more successes than trials...).  ``weights`` (in memory) weight the rows
    so that integer weights act as repeated rows; a weighted source carries
    its own.
    """

    # sums about a shift from the first rows keep the variances accurate where a
    # column's (or y's) mean is large next to its spread
    if weights is not None:
        X, y = (raw.X, raw.y) if raw.transform is None else raw.transform(raw.X, raw.y)
        head_x, head_y = X[:1000], y[:1000]
    else:
        head_x, head_y = raw.rows(np.arange(min(raw.n_samples, 1000)))
    with np.errstate(all="ignore"):
        shift_x = np.asarray(head_x, dtype=float).mean(axis=0)
        shift_y = float(np.mean(np.asarray(head_y, dtype=float)))
    shift_x = np.where(np.isfinite(shift_x), shift_x, 0.0)  # bad values are refused later
    shift_y = shift_y if np.isfinite(shift_y) else 0.0

    def block(X, y, w=None):
        rows_family = family if trials_column is None else family.at_rows(X[:, trials_column])
        rows_family.check_y(y)
        bad_w = neg_w = 0
        if w is None:
            w = np.ones(X.shape[0])
        else:  # a source's weights are counted here and refused after the pass
            finite = np.isfinite(w)
            bad_w, neg_w = int(np.sum(~finite)), int(np.sum(w < 0))
            w = np.where(finite, w, 0.0)
        with np.errstate(all="ignore"):
            # (C order: the sums, and so the fit, do not depend on the layout of X)
            Xs, ys = np.ascontiguousarray(X) - shift_x, y - shift_y
            return dict(
                bad_w=bad_w,
                neg_w=neg_w,
                n=float(w.sum()),
                sx=w @ Xs,
                sxx=w @ (Xs * Xs),
                sy=float(w @ ys),
                syy=float(w @ (ys * ys)),
                bad_x=int(np.sum(~np.isfinite(X))),
                bad_y=int(np.sum(~np.isfinite(y))),
                big=int(np.sum(np.abs(X) > MAX_MAGNITUDE) + np.sum(np.abs(y) > MAX_MAGNITUDE)),
            )

    if weights is not None:
        st = block(X, y, weights)
    else:
        st = raw.map_reduce(block)
    st["shift_x"], st["shift_y"] = shift_x, shift_y
    return st


@dataclass(frozen=True)
class Chain:
    """Two data transforms applied in turn (a picklable callable for Dask workers)."""

    first: object
    second: object

    def __call__(self, X, y):
        return self.second(*self.first(X, y))


def unscale(coef, cols, x_mean, x_scale, fit_intercept):
    """Coefficients on standardised columns -> slopes and intercepts in original units.

    ``coef`` has shape (..., p) with the intercept first when fitted; returns
    ``(slopes (..., len(cols)), intercepts (...))``.
    """
    c = coef[..., 1:] if fit_intercept else coef
    b = coef[..., 0] if fit_intercept else np.zeros(coef.shape[:-1])
    a = c / x_scale[cols]
    return a, b - a @ x_mean[cols]


def _robust_sd(y, weights=None):
    """Interquartile range / 1.349 (the weighted std if it is 0); weights act as repeated rows.

    Quantiles by the inverted empirical CDF, so that integer weights and repeated
    rows give the same spread.
    """
    y = np.asarray(y, dtype=float)
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        keep = w > 0
        y, w = y[keep], w[keep]
    q25, q75 = np.quantile(y, [0.25, 0.75], method="inverted_cdf", weights=w)
    iqr = (q75 - q25) / 1.349
    if iqr > 0:
        return float(iqr)
    return float(np.sqrt(np.cov(y, aweights=w, ddof=0))) if w is not None else float(np.std(y))


def _scaling(raw: Data, family: Family, fit_intercept, weights=None, trials_column=None):
    st = _column_stats(raw, family, weights, trials_column)
    if raw.weighted and weights is None:  # a source's own weights, counted in the pass
        check_weight_values(st["neg_w"], st["n"], st["bad_w"])
    if st["bad_x"]:
        raise ValueError("X contains NaN or infinite values")
    if st["bad_y"]:
        raise ValueError("y contains NaN or infinite values")
    if st["big"]:
        raise ValueError(f"X or y has values larger than {MAX_MAGNITUDE:g}; rescale the data")
    n = st["n"]
    dx, dy = st["sx"] / n, st["sy"] / n  # the means less the shifts
    mean = st["shift_x"] + dx
    var = np.maximum(st["sxx"] / n - dx**2, 0.0)
    if not fit_intercept:  # second moments about zero
        var = var + mean**2
        mean = np.zeros_like(mean)
    scale = np.sqrt(var)
    scale = np.where(scale > 1e-12 * max(float(scale.max(initial=0.0)), 1e-300), scale, 1.0)
    y_mean = st["shift_y"] + dy
    y_var = max(st["syy"] / n - dy**2, 0.0)
    y_sd = float(np.sqrt(y_var))
    if family.location_scale:
        if y_sd <= 1e-12 * max(abs(y_mean), 1e-300):
            raise ValueError("y is constant: a mixture of experts needs a target that varies")
        ym, ys = (y_mean, y_sd) if fit_intercept else (0.0, float(np.sqrt(y_var + y_mean**2)))
    elif family.scale_family and fit_intercept:
        ym, ys = 0.0, max(y_mean, 1e-300)
    else:
        ym, ys = 0.0, 1.0
    return mean, scale, ym, ys, y_sd, float(n)


def prior_alpha(alpha, prior_strength, total_weight, gate_prior="cauchy"):
    """The engine's per-sample penalty: the ridge ``alpha`` and the prior's share.

    The prior carries as much information as ``prior_strength`` rows, so its
    pull on the estimate falls like ``1 / n``: a Gaussian prior of precision
    ``prior_strength`` on each standardised expert slope is, per sample, a
    ridge of ``prior_strength / total_weight``.  The gate's centred slopes get
    the same share of a Cauchy prior to the power ``prior_strength``
    (``gate_prior="cauchy"``, the regressor's) or of the Gaussian one
    (``"normal"``, the classifier's) (:class:`~moelearn.penalties.Penalty`,
    DESIGN §13).  ``alpha`` itself without a prior.
    """
    if gate_prior not in ("cauchy", "normal"):
        raise ValueError(f"gate_prior must be 'cauchy' or 'normal', got {gate_prior!r}")
    extra = float(prior_strength) / max(float(total_weight), 1e-300)
    if extra <= 0:
        return alpha
    pen = as_penalty(alpha)
    if gate_prior == "normal":
        return pen._replace(expert=pen.expert + extra, gate=pen.gate + extra)
    return pen._replace(expert=pen.expert + extra, gate_prior=pen.gate_prior + extra)


def reference_dispersion(family, design, X, y, weights=None, floor=1e-3):
    """The family's reference dispersion: the residual spread of one robust expert.

    The Huber regression (scikit-learn's ``HuberRegressor``, robust to gross
    outliers in the response, which would tilt a least-squares line and spread
    every residual) of the family's
    :meth:`~moelearn.families.Family.working_response` (``y`` for Gaussian and
    Student-t experts, ``log y`` for Gamma ones, whose variance within an expert
    is about ``1 / shape``) on the expert design, less any offset; the square of
    its residuals' robust spread (interquartile range / 1.349, as the noise
    floor's): the spread that one expert would leave.  At least ``floor**2``
    times the working response's squared robust spread (a response that is a
    linear function of ``x``).
    """
    U = design.expert_matrix(X)
    t = family.working_response(y) - design.offset(X)
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=float)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs's iteration cap: a start, not a result
            # tight: weights and repeated rows must reach the same reference
            huber = HuberRegressor(alpha=0.0, fit_intercept=False, max_iter=1000, tol=1e-10)
            beta = huber.fit(U, t, sample_weight=w).coef_
    except ValueError:  # degenerate rows (no spread): least squares
        root = np.sqrt(w)
        beta = np.linalg.lstsq(U * root[:, None], t * root, rcond=None)[0]
    residual = _robust_sd(t - U @ beta, weights) ** 2
    return max(residual, floor**2 * _robust_sd(t, weights) ** 2, 1e-300)


def with_dispersion_prior(alpha, family, design, X, y, weights, strength, k, floor=1e-3):
    """``alpha`` as a :class:`~moelearn.penalties.Penalty` whose dispersion prior has
    ``strength`` per sample at ``reference_dispersion / k**2`` of the rows ``(X, y)``
    (the search subsample, in the engine's units); ``alpha`` itself where the family
    has no dispersion prior.

    The division by ``k**2`` is that of Fraley & Raftery's (2007) prior for ``k``
    Gaussian components (``var / k^(2/d)``, ``d = 1`` for one response): each of ``k``
    experts leaves about a ``k``-th of the one expert's spread.
    """
    if not family.has_dispersion_prior:
        return alpha
    reference = reference_dispersion(family, design, X, y, weights, floor) / k**2
    return as_penalty(alpha)._replace(dispersion=float(strength), reference=reference)


def _to_params(
    state: State, family, design, gmask, emask, x_mean, x_scale, ym, ys, shared_noise=False
):
    """Engine state (standardised) -> MoEParams in the original units."""
    fi = design.fit_intercept
    A, b = unscale(state.coef[:, 0, :], design.expert_columns, x_mean, x_scale, fi)
    W, c = unscale(state.gate, design.gating_columns, x_mean, x_scale, fi)
    disp = np.exp(state.log_disp)
    pm = family.point_masses
    if pm:
        # a point mass has no parameters: its unused coordinates are zero (a shared
        # coefficient keeps the common value) and its dispersion the first count expert's
        shared = np.zeros(A.shape[1], dtype=bool)
        shared[[p - int(fi) for p in design.shared_positions() if p >= int(fi)]] = True
        A, b, disp = A.copy(), b.copy(), disp.copy()
        A[:pm, ~shared] = 0.0
        b[:pm] = b[pm] if SHARED_INTERCEPT in design.shared_columns else 0.0
        disp[:pm] = disp[pm]
    if family.location_scale:
        A, b = ys * A, ys * b + ym
    elif family.scale_family:
        b = b + np.log(ys)
    names = family.dispersion_names
    noise = df = None
    if "sigma" in names:
        noise = disp[:, names.index("sigma")] * (ys if family.location_scale else 1.0)
    if "shape" in names:
        noise = 1.0 / np.sqrt(disp[:, names.index("shape")])
    if "nu" in names:
        df = disp[:, names.index("nu")]
    if shared_noise and noise is not None:
        noise = float(noise[0])  # one noise parameter for every expert
    return MoEParams(
        A,
        W - W.mean(axis=0),
        b,
        c - c.mean(),
        noise,
        link=getattr(family, "link", "linear"),
        family=family,
        df=df,
        gating_features=gmask,
        expert_features=emask,
        offset_feature=design.offset_column,
        trials_feature=design.trials_column,
        shared_features=_mask(
            [c for c in design.shared_columns if c != SHARED_INTERCEPT], len(emask)
        ),
        shared_intercept=SHARED_INTERCEPT in design.shared_columns,
    )


def _mask(columns, n_features):
    """A boolean mask of ``columns`` over the features, or None when empty."""
    if not len(columns):
        return None
    mask = np.zeros(n_features, dtype=bool)
    mask[list(columns)] = True
    return mask


def _to_state(p: MoEParams, family, design, x_mean, x_scale, ym, ys):
    """MoEParams in original units -> engine state (standardised); inverse of :func:`_to_params`."""
    fi = design.fit_intercept
    A, b = p.experts.copy(), p.expert_bias.copy()
    if family.location_scale:
        A, b = A / ys, (b - ym) / ys
    elif family.scale_family:
        b = b - np.log(ys)

    def rescale(a, bias, cols):
        a_std = a * x_scale[cols]
        bias_std = bias + a @ x_mean[cols]
        return np.hstack([bias_std[:, None], a_std]) if fi else a_std

    coef = rescale(A, b, design.expert_columns)[:, None, :]
    gate = rescale(p.gating, p.gating_bias, design.gating_columns)
    gate = gate - gate[-1]
    disp = p.dispersion().copy()
    names = family.dispersion_names
    if "sigma" in names and family.location_scale:
        disp[:, names.index("sigma")] /= ys
    return State(coef, np.log(disp), gate)


@dataclass
class EngineResult:
    """:func:`fit_engine`'s answer: the engine fit in standardised units and the scaling."""

    fit: EngineFit
    design: Design
    method: str
    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float
    y_scale: float
    penalty: float = 0.0
    """The ridge and prior per sample at the fit (:func:`moelearn.engine.penalty`):
    the maximised objective is the mean log-likelihood less this."""

    @property
    def log_likelihood_shift(self) -> float:
        """Add to a standardised mean log-likelihood to get it in original units of y."""
        return -float(np.log(self.y_scale))


def fit_engine(
    raw: Data,
    family: Family,
    n_experts,
    gating_mask,
    expert_mask,
    *,
    fit_intercept=True,
    n_init="auto",
    max_iter=1000,
    tol=1e-8,
    init=None,
    noise_floor=1e-3,
    alpha=0.0,
    prior_strength=0.0,
    gate_prior="cauchy",
    sample_weight=None,
    random_state=None,
    extra_starts=(),
    offset_column=None,
    trials_column=None,
    shared_noise=False,
    shared_columns=(),
    baseline=None,
    groups=None,
    refine="lbfgs",
) -> EngineResult:
    """Standardise, search starts (or refine ``init``), and fit by the engine.

    Parameters
    ----------
    raw : Data
        The data in original units (in memory or out of core); a transform it
        already carries (e.g. label encoding) is applied first.
    family : Family
    n_experts : int
    gating_mask, expert_mask : boolean arrays of shape (n_features,)
    fit_intercept : bool
    n_init : "auto" or int
        Starts screened (``"auto"``: 10 to 30 generated, more on small problems,
        besides ``extra_starts``); an integer counts ``extra_starts`` among its
        starts, and ``1`` with an extra start refines that start alone.
    max_iter, tol : int, float
        Iterations and relative tolerance of EM and of the final L-BFGS-B.
    init : callable or None
        ``init(design, x_mean, x_scale, y_mean, y_scale) -> State``: a warm
        start in standardised units (then no start search).
    noise_floor : float
        Lower bound on ``sigma`` as a fraction of ``std(y)`` (bounds the likelihood).
    alpha : float or (float, float)
        Ridge on the standardised coefficients per sample (:func:`moelearn.engine.em`).
    prior_strength : float
        ``lambda >= 0``: a prior worth ``lambda`` rows whatever ``n``
        (:func:`prior_alpha`, DESIGN §13): a Gaussian prior of precision
        ``lambda`` on every standardised expert slope, added to ``alpha`` as
        ``lambda / W`` per sample (``W``: the total weight of the rows), one on
        the centred gate's slopes (``gate_prior``), intercepts excluded, and
        the family's dispersion prior
        (:meth:`~moelearn.families.Family.dispersion_prior`).
    gate_prior : {"cauchy", "normal"}
        The gate's prior: Cauchy of scale 1.25 to the power ``lambda``, or
        Gaussian of precision ``lambda``.
    sample_weight : ndarray of shape (n_samples,) or None
        Row weights (in-memory data only).
    random_state : numpy Generator
    extra_starts : sequence of (name, MoEParams)
        Starts in original units screened with the generated ones.
    offset_column : int or None
        A column added to every expert's predictor with coefficient one (left
        unscaled); log-link families only.
    trials_column : int or None
        The column holding each row's number of trials (left unscaled); the
        families that :attr:`~moelearn.families.Family.needs_trials` only, and
        required by them.
    shared_noise : bool
        One noise parameter (the family's ``noise_parameter``) for all experts.
    shared_columns : sequence of int
        Expert columns whose coefficient is one for all experts; ``-1``
        (:data:`moelearn.engine.SHARED_INTERCEPT`) shares the intercept too
        (otherwise each expert keeps its own).
    baseline : {None, "em", "gd"}
        Instead of the start search, the best of ``n_init`` (``"auto"``: 1)
        random starts fitted by joint EM (``"em"``) or by L-BFGS-B on the
        log-likelihood (``"gd"``) alone: the baselines of DESIGN §6.
    groups : moelearn.grouping.Groups or None
        Grouped rows, in the source's row order: every row of a group comes from one
        expert (:func:`moelearn.engine.grouped_search`, started from the
        ungrouped fit among others).
    refine : {"lbfgs", "em"}
        The final refinement's optimiser (:func:`moelearn.engine.refine_fit`): EM, then
        exact Newton steps and L-BFGS-B, or EM alone to ``tol``; not of the baselines.

    Returns
    -------
    EngineResult
    """
    rng = random_state
    k = n_experts
    if sample_weight is not None and not raw.in_memory:
        raise ValueError("pass the weights of out-of-core data inside the Data source")
    if raw.weighted and raw.in_memory:
        sample_weight = np.asarray(raw.w, dtype=float)
    if offset_column is not None and not family.log_link:
        raise ValueError(
            f"an offset applies to the log-link families (poisson, gamma), not {family.name!r}"
        )
    if family.needs_trials != (trials_column is not None):
        raise ValueError(
            f"family={family.name!r} needs the column of each row's number of trials (trials=)"
            if family.needs_trials
            else f"trials= applies to binomial experts, not family={family.name!r}"
        )
    x_mean, x_scale, ym, ys, y_sd, total = _scaling(
        raw, family, fit_intercept, sample_weight, trials_column
    )
    alpha = prior_alpha(alpha, prior_strength, total, gate_prior)
    for column in (offset_column, trials_column):
        if column is not None:  # read as they are: never standardised
            x_mean, x_scale = x_mean.copy(), x_scale.copy()
            x_mean[column], x_scale[column] = 0.0, 1.0
    if SHARED_INTERCEPT in shared_columns:
        # a shared intercept is the experts' value at x = 0: centring a column whose slope
        # differs between experts would move it to x = mean
        x_mean = x_mean.copy()
        own = np.flatnonzero(expert_mask)
        x_mean[[c for c in own if c not in shared_columns]] = 0.0
    if not fit_intercept and not expert_mask.any():
        raise ValueError("experts without columns need fit_intercept=True")
    transform = Transform(x_mean, np.diag(1.0 / x_scale), ym, ys)
    if raw.in_memory:
        X0, y0 = (raw.X, raw.y) if raw.transform is None else raw.transform(raw.X, raw.y)
        # weights travel as sample_weight
        data = Data(*transform(X0, y0), n_experts=k, groups=groups)
    else:
        chained = transform if raw.transform is None else Chain(raw.transform, transform)
        data = raw.with_transform(chained, n_experts=k).with_groups(groups)
    design = Design(
        np.flatnonzero(gating_mask),
        np.flatnonzero(expert_mask),
        fit_intercept,
        offset_column,
        trials_column,
        tuple(int(c) for c in shared_columns),
    )
    n = data.n_samples
    # the rows the start search screens on (moelearn._validation.search_rows)
    n_rows = search_rows(n_free_parameters(family, design, k))
    if n > n_rows:
        rows = np.sort(rng.choice(n, n_rows, replace=False))
    else:
        rows = np.arange(n)
    if data.in_memory:
        subsampled = len(rows) < n
        sub_X, sub_y = (data.X[rows], data.y[rows]) if subsampled else (data.X, data.y)
        sub_w = sample_weight
        if sample_weight is not None and subsampled:
            sub_w = sample_weight[rows]
    else:
        sub_X, sub_y, sub_w = data.weighted_rows(rows)
    log_floor = -np.inf
    if "sigma" in family.dispersion_names:
        # the floor scales with a robust spread of y (interquartile range of the
        # subsample), so that a few gross outliers cannot lift it above the noise
        spread = min(y_sd / (ys if family.location_scale else 1.0), _robust_sd(sub_y, sub_w))
        log_floor = np.log(noise_floor * max(spread, 1e-300))
    if prior_strength > 0:
        alpha = with_dispersion_prior(
            alpha,
            family,
            design,
            sub_X,
            sub_y,
            sub_w,
            prior_strength / total,
            k,
            noise_floor,
        )
    tied = tied_parameters(family, design, k, shared_noise)
    opts = dict(log_floor=log_floor, alpha=alpha, weights=sample_weight, tied=tied)

    def warm(state):
        """``state`` alone refined on all the data: a short EM, then the finish."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            first = em(family, design, data, state, max_iter=min(max_iter, 50), tol=tol, **opts)
            fit = refine_fit(
                family,
                design,
                data,
                first.state,
                finish=refine,
                max_iter=max_iter,
                tol=tol,
                **opts,
            )
        fit.history = first.history + fit.history
        fit.n_iter += first.n_iter
        fit.collapsed = at_floor(fit.state, family, log_floor)
        return fit

    if init is not None:
        fit = warm(init(design, x_mean, x_scale, ym, ys))
        method = "init_params"
    elif baseline is not None:
        n_starts = 1 if n_init == "auto" else int(n_init)
        fit = _baseline(
            family, design, data, sub_X, sub_y, k, baseline, n_starts, rng, max_iter, tol, opts
        )
        fit.collapsed = at_floor(fit.state, family, log_floor)
        method = "random"
    elif n_init == 1 and extra_starts:
        # one start: the caller's first (the consistent moment start) alone, refined
        name, p = extra_starts[0]
        fit = warm(_to_state(p, family, design, x_mean, x_scale, ym, ys))
        method = name
    else:
        if n_init == "auto":
            rows_seen = len(sub_y) if sub_w is None else float(sub_w.sum())
            cost = rows_seen * k * (design.n_expert + design.n_gate)
            n_candidates = int(np.clip(AUTO_BUDGET // max(cost, 1), *AUTO_CANDIDATES))
        else:
            # an integer counts every start, the caller's among them
            n_candidates = max(int(n_init) - len(extra_starts), 1)
        starts = [
            (name, _to_state(p, family, design, x_mean, x_scale, ym, ys))
            for name, p in extra_starts
        ]
        common = dict(
            n_candidates=n_candidates,
            n_finalists=max(2, min(3, n_candidates)),
            max_iter=max_iter,
            tol=tol,
            log_floor=log_floor,
            random_state=rng,
            alpha=alpha,
            weights=sample_weight,
            tied=tied,
            finish=refine,
        )
        fit, kind = search(
            family,
            design,
            data.with_groups(None),
            sub_X,
            sub_y,
            k,
            sub_weights=sub_w,
            starts=starts,
            **common,
        )
        if groups is not None:
            # the ungrouped optimum is one start of the grouped search
            fit, kind, n_grouped = grouped_search(
                family, design, data, k, starts=[("ungrouped fit", fit.state)] + starts, **common
            )
        n_candidates += len(extra_starts)
        parts = random_partitions(family, n_candidates - len(extra_starts))
        plural = "s" if n_candidates > 1 else ""
        extra = f" and {parts} random partition{'s' if parts > 1 else ''}" if parts else ""
        method = f"{kind} (best of {n_candidates} start{plural}{extra})"
        if groups is not None:
            method = (
                f"{kind} (best of {n_grouped} starts on {groups.n_groups} groups; the "
                f"ungrouped fit: best of {n_candidates} start{plural}{extra})"
            )
    # every expert at its spread's bound: the plateau's canonical point (DESIGN §13)
    fit = canonical(
        family,
        design,
        data,
        fit,
        log_floor=log_floor,
        weights=sample_weight,
        alpha=alpha,
        tied=tied,
    )
    # the engine's value is the penalised objective; the fit reports the plain
    # log-likelihood at its parameters
    ridge = penalty(fit.state, alpha, design.fit_intercept, tied, family)
    fit.log_likelihood = float(fit.log_likelihood + ridge)
    return EngineResult(fit, design, method, x_mean, x_scale, ym, ys, float(ridge))


def _baseline(family, design, data, sub_X, sub_y, k, kind, n_starts, rng, max_iter, tol, opts):
    """The best of ``n_starts`` random starts, each fitted by EM or by L-BFGS-B alone.

    A random start is the classical one of EM for mixtures of regressions (and
    flexmix's): the parameters fitted to a random hard partition of the rows of
    the subsample (:func:`~moelearn.screening.hashed_partitions`, a function of
    each row's values, so that a row of weight ``m`` and ``m`` repeated rows start
    alike), softened a little so that EM can move rows.
    """
    best = None
    rows = np.hstack([sub_X, np.asarray(sub_y, dtype=float)[:, None]])
    posts = 0.9 * hashed_partitions(rows, k, n_starts, rng) + 0.1 / k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for post in posts:
            state = state_from_responsibilities(
                family, design, sub_X, sub_y, post, opts["log_floor"], tied=opts["tied"]
            )
            if kind == "em":
                fit = em(family, design, data, state, max_iter=max_iter, tol=tol, **opts)
            else:
                fit = polish(family, design, data, state, max_iter=max_iter, tol=tol, **opts)
            # a later start wins only beyond EM's tolerance: starts that reach one
            # optimum (with the experts in another order) tie, and the first is kept
            if best is None or fit.log_likelihood > best.log_likelihood + tol * max(
                1.0, abs(best.log_likelihood)
            ):
                best = fit
    return best


def fit_family(
    raw: Data,
    family: Family,
    n_experts,
    gating_mask,
    expert_mask,
    *,
    fit_intercept=True,
    n_init="auto",
    max_iter=1000,
    tol=1e-8,
    init_params=None,
    noise_floor=1e-3,
    sample_weight=None,
    random_state=None,
    alpha=RIDGE,
    prior_strength=0.0,
    extra_starts=(),
    offset_column=None,
    trials_column=None,
    shared_noise=False,
    shared_columns=(),
    baseline=None,
    groups=None,
    refine="lbfgs",
) -> FamilyFit:
    """Maximum-likelihood fit of a mixture of experts of any regression family.

    :func:`fit_engine` with the result mapped to a :class:`~moelearn.MoEParams`
    in original units; ``init_params`` (a MoEParams in original units, on
    the masks' columns) is a warm start.

    Returns
    -------
    FamilyFit
    """
    init = None
    if init_params is not None:

        def init(design, x_mean, x_scale, ym, ys):
            return _to_state(init_params, family, design, x_mean, x_scale, ym, ys)

    res = fit_engine(
        raw,
        family,
        n_experts,
        gating_mask,
        expert_mask,
        fit_intercept=fit_intercept,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        init=init,
        noise_floor=noise_floor,
        alpha=alpha,
        prior_strength=prior_strength,
        sample_weight=sample_weight,
        random_state=random_state,
        extra_starts=extra_starts,
        offset_column=offset_column,
        trials_column=trials_column,
        shared_noise=shared_noise,
        shared_columns=shared_columns,
        baseline=baseline,
        groups=groups,
        refine=refine,
    )
    fit = res.fit
    params = _to_params(
        fit.state,
        family,
        res.design,
        gating_mask,
        expert_mask,
        res.x_mean,
        res.x_scale,
        res.y_mean,
        res.y_scale,
        shared_noise=tied_column(family, n_experts, shared_noise) is not None,
    )
    return FamilyFit(
        params,
        float(fit.log_likelihood + res.log_likelihood_shift),
        fit.n_iter,
        fit.converged,
        res.method,
        list(fit.history),
        fit.collapsed,
        res.x_mean,
        res.x_scale,
        res.y_mean,
        res.y_scale,
        res.penalty,
    )
