"""Mixture-of-experts classification: logistic or multinomial experts with a softmax gate.

``P(y = c | x) = sum_i p_i(z) P_i(y = c | u)``: the gate ``p_i`` on the gate
columns ``z``, and expert ``i`` a logistic regression (two classes) or a
multinomial logistic regression (more) on the expert columns ``u``
(Jordan & Jacobs 1994).  Fitted by the engine of DESIGN §13 (start search,
EM with scoring M-steps, L-BFGS-B), with an optional ridge ``alpha``.

No consistent moment start exists for these experts: the output transforms
of DESIGN §3 need distinct powers of ``y``, and a class indicator has
``y^m = y`` (DESIGN §13).
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy.special import log_expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._validation import check_fit_size, refuse_tiny, tiny_scale_factors
from .data import Data, check_out_of_core, check_sample_weight, head_rows, is_out_of_core
from .families import Bernoulli, Multinomial
from .family_fit import fit_engine, resolve_roles, unscale
from .model import random_generator
from .persistence import register_record, save

__all__ = ["MixtureOfExpertsClassifier"]

# Standardised coefficients beyond this size put probabilities within e^-30 of 0 or 1:
# the classes are separated and, without a ridge, the likelihood has no maximum.
_SEPARATED = 30.0


class LabelCodes:
    """Map class labels to codes ``0..C-1`` block by block (a picklable transform)."""

    def __init__(self, classes):
        self.classes = np.asarray(classes)

    def __call__(self, X, y):
        codes = np.searchsorted(self.classes, y)
        codes = np.clip(codes, 0, len(self.classes) - 1)
        if not np.all(self.classes[codes] == y):
            unseen = sorted(set(np.asarray(y)[self.classes[codes] != y].tolist()))
            raise ValueError(f"y has labels not seen when fitting: {unseen[:10]}")
        return X, codes.astype(float)


@register_record("classifier")
class MixtureOfExpertsClassifier(ClassifierMixin, BaseEstimator):
    """Mixture of logistic (two classes) or multinomial (more) experts with a softmax gate.

    Parameters
    ----------
    n_experts : int, default 2
    alpha : float, default 1e-4
        Ridge on the experts' and the (centred) gate's coefficients on
        standardised columns, intercepts excluded: the fit maximises the mean
        log-likelihood minus ``alpha / 2`` times their squared norm (the
        convention of scikit-learn's ``alpha``; ``LogisticRegression(C)`` on
        standardised data corresponds to ``alpha = 1 / (C n)``).  It keeps the
        answer finite when an expert separates its classes; ``alpha=0`` is
        plain maximum likelihood, with a warning when the classes are separated.
    gating_features, expert_features : None, array-like of int or str, or boolean mask
        Columns of ``X`` that the gate and the experts read (None: all).
    fit_intercept : bool, default True
    n_init : "auto" or int, default "auto"
        Starts screened by short EM runs on a subsample (DESIGN §13).
    max_iter : int, default 1000
    tol : float, default 1e-8
    chunk_size : int or None
        Rows per chunk when reading memory-mapped data.
    random_state : int, RandomState, Generator or None

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    experts_ : ndarray (n_experts, n_classes - 1, n_expert_features)
        Log-odds slopes of classes ``classes_[:-1]`` against ``classes_[-1]``;
        with two classes, one row: the log-odds of ``classes_[1]``.
    expert_bias_ : ndarray (n_experts, n_classes - 1)
    gating_ : ndarray (n_experts, n_gating_features), centred
    gating_bias_ : ndarray (n_experts,), centred
    log_likelihood_ : float
        Mean log-likelihood per training sample (without the ridge).
    n_parameters_ : int
    n_iter_ : int
    converged_ : bool
    init_method_ : str
    n_features_in_ : int
    """

    _parameter_constraints: dict = {
        "n_experts": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "gating_features": ["array-like", None],
        "expert_features": ["array-like", None],
        "fit_intercept": ["boolean"],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state", np.random.Generator],
    }

    def __init__(
        self,
        n_experts=2,
        alpha=1e-4,
        gating_features=None,
        expert_features=None,
        fit_intercept=True,
        n_init="auto",
        max_iter=1000,
        tol=1e-8,
        chunk_size=None,
        random_state=None,
    ):
        self.n_experts = n_experts
        self.alpha = alpha
        self.gating_features = gating_features
        self.expert_features = expert_features
        self.fit_intercept = fit_intercept
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.chunk_size = chunk_size
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture of experts.

        Parameters
        ----------
        X : array-like, memory map, dask array or ChunkedDataset
        y : array-like of shape (n_samples,), any hashable labels (None with a
            ChunkedDataset, whose chunks hold numeric labels)
        sample_weight : array-like of shape (n_samples,) or None
            Non-negative row weights (in-memory data).

        Returns
        -------
        self
        """
        self._validate_params()
        rescaled = self._fit_rescaled(X, y, sample_weight)
        if rescaled is not None:
            return rescaled
        rng = random_generator(self.random_state)
        raw, weights = self._source(X, y, sample_weight)
        n_classes = len(self.classes_)
        family = Bernoulli() if n_classes == 2 else Multinomial(n_classes)
        names = getattr(self, "feature_names_in_", None)
        d = raw.n_features
        gmask = resolve_roles(self.gating_features, d, names, "gating_features")
        emask = resolve_roles(self.expert_features, d, names, "expert_features")
        coefs = (n_classes - 1) * (int(emask.sum()) + self.fit_intercept)
        check_fit_size(raw.n_samples, self.n_experts, coefs, self.n_init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = fit_engine(
                raw,
                family,
                self.n_experts,
                gmask,
                emask,
                fit_intercept=self.fit_intercept,
                n_init=self.n_init,
                max_iter=self.max_iter,
                tol=self.tol,
                alpha=self.alpha,
                sample_weight=weights,
                random_state=rng,
            )
        fit = res.fit
        fi = self.fit_intercept
        A, b = unscale(fit.state.coef, res.design.expert_columns, res.x_mean, res.x_scale, fi)
        W, c = unscale(fit.state.gate, res.design.gating_columns, res.x_mean, res.x_scale, fi)
        self.experts_, self.expert_bias_ = A, b
        self.gating_, self.gating_bias_ = W - W.mean(axis=0), c - c.mean()
        self._gmask, self._emask = gmask, emask
        self.n_iter_ = int(fit.n_iter)
        self.converged_ = bool(fit.converged)
        self.init_method_ = f"{res.method}; no moment start for class labels (y^m = y, DESIGN §13)"
        q, pe = fit.state.coef.shape[1:]
        pg = fit.state.gate.shape[1]
        self.n_parameters_ = int(self.n_experts * q * pe + (self.n_experts - 1) * pg)
        self.log_likelihood_ = float(self._mean_log_likelihood(raw, weights))
        self.history_ = np.asarray(fit.history, dtype=float)
        slopes = fit.state.coef[..., 1:] if fi else fit.state.coef
        if self.alpha == 0 and np.max(np.abs(slopes), initial=0.0) > _SEPARATED:
            warnings.warn(
                "the classes are (nearly) perfectly separated by some expert: without a "
                "ridge the likelihood has no maximum and the coefficients grow without "
                "bound; the answer is the finite point where the optimiser stopped. "
                "Set alpha > 0 for a unique answer",
                ConvergenceWarning,
                stacklevel=2,
            )
        elif not self.converged_:
            warnings.warn(
                f"the EM / L-BFGS-B fit stopped after {self.n_iter_} iterations without "
                f"converging (max_iter={self.max_iter}); increase max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _fit_rescaled(self, X, y, sample_weight):
        """Fit in-memory ``X`` with columns of tiny magnitude on an exactly rescaled copy.

        Columns whose largest ``|value|`` is below ``MIN_MAGNITUDE`` are
        multiplied by powers of two (exact), and the coefficients mapped back;
        None when no column needs it.
        """
        if is_out_of_core(X) or y is None:
            return None
        try:
            with np.errstate(all="ignore"):
                Xa = check_array(X, dtype=np.float64, ensure_min_samples=2)
        except (TypeError, ValueError):
            return None  # the ordinary path names the problem
        fx = tiny_scale_factors(Xa)
        if fx is None:
            return None
        Xs = Xa * fx
        if hasattr(X, "columns"):  # keep the names (covariate roles may use them)
            import pandas as pd

            Xs = pd.DataFrame(Xs, columns=X.columns)
        self.fit(Xs, y, sample_weight)
        self.experts_ = self.experts_ * fx[self._emask]
        self.gating_ = self.gating_ * fx[self._gmask]
        return self

    def _source(self, X, y, sample_weight):
        if is_out_of_core(X):
            check_out_of_core(X, y, type(self).__name__)
            if sample_weight is not None:
                raise ValueError("sample_weight needs in-memory X and y")
            self.__dict__.pop("feature_names_in_", None)  # an unnamed source: no stale names
            raw = Data(X, y, self.chunk_size, n_experts=self.n_experts)
            refuse_tiny(head_rows(raw)[0])
            classes = raw.map_reduce(_block_labels)
            self.classes_ = classes.values
            self._check_classes()
            self.n_features_in_ = raw.n_features
            return raw.with_transform(LabelCodes(self.classes_), self.n_experts), None
        with np.errstate(invalid="ignore", over="ignore"):
            X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        _check_labels(y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self._check_classes()
        weights = None
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, X.shape[0])
        return Data(X, codes.astype(float), self.chunk_size, n_experts=self.n_experts), weights

    def _check_classes(self):
        if len(self.classes_) < 2:
            raise ValueError(
                "a classifier needs samples of at least 2 classes in the data, but the "
                f"data contain only one class: {self.classes_[0]!r}"
            )

    # -------------------------------------------------------------- predict
    def _check_X(self, X):
        check_is_fitted(self)
        with np.errstate(invalid="ignore", over="ignore"):
            return validate_data(self, X, reset=False, dtype=np.float64)

    def _log_gate(self, X):
        logits = X[:, self._gmask] @ self.gating_.T + self.gating_bias_
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def _expert_log_proba(self, X):
        """``log P_i(y = c | x)``, shape (n, k, C)."""
        eta = np.einsum("nd,kqd->nkq", X[:, self._emask], self.experts_) + self.expert_bias_
        if len(self.classes_) == 2:
            return np.stack([log_expit(-eta[..., 0]), log_expit(eta[..., 0])], axis=-1)
        return Multinomial(len(self.classes_)).log_proba(eta)

    def _joint(self, X):
        return self._log_gate(X)[:, :, None] + self._expert_log_proba(X)

    def predict_log_proba(self, X):
        """Log of the class probabilities, shape (n_samples, n_classes)."""
        X = self._check_X(X)
        joint = self._joint(X)
        top = joint.max(axis=1, keepdims=True)
        return np.log(np.exp(joint - top).sum(axis=1)) + top[:, 0, :]

    def predict_proba(self, X):
        """Class probabilities ``sum_i p_i(x) P_i(y = c | x)``, shape (n_samples, n_classes)."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """The most probable class of each row."""
        log_proba = self.predict_log_proba(X)
        return self.classes_[np.argmax(log_proba, axis=1)]

    def predict_gating(self, X):
        """Gating probabilities, shape (n_samples, n_experts)."""
        return np.exp(self._log_gate(self._check_X(X)))

    def predict_experts(self, X):
        """Each expert's class probabilities, shape (n_samples, n_experts, n_classes)."""
        return np.exp(self._expert_log_proba(self._check_X(X)))

    def _codes(self, y, n):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"y must have shape ({n},), got {y.shape}")
        return LabelCodes(self.classes_)(None, y)[1].astype(int)

    def log_density(self, X, y):
        """``log P(y | x)`` of each labelled row, shape (n_samples,).

        Labels not seen when fitting raise ``ValueError`` (their probability
        under the model is zero).
        """
        X = self._check_X(X)
        codes = self._codes(y, X.shape[0])
        log_proba = self.predict_log_proba(X)
        return log_proba[np.arange(X.shape[0]), codes]

    def _mean_log_likelihood(self, raw, weights):
        if raw.in_memory:
            ll = self._log_density_codes(raw.X, raw.y.astype(int))
            return np.average(ll, weights=weights)

        def block(Xb, yb, wb=None):
            wb = np.ones(len(yb)) if wb is None else wb
            return np.array([wb @ self._log_density_codes(Xb, yb.astype(int)), wb.sum()])

        total = raw.map_reduce(block)
        return total[0] / total[1]

    def _log_density_codes(self, X, codes):
        joint = self._joint(X)
        picked = np.take_along_axis(joint, codes[:, None, None], axis=2)[..., 0]
        top = picked.max(axis=1, keepdims=True)
        return np.log(np.exp(picked - top).sum(axis=1)) + top[:, 0]

    def bic(self, X, y):
        """Bayesian information criterion on ``(X, y)`` (lower is better)."""
        ll = self.log_density(X, y)
        return -2.0 * ll.sum() + self.n_parameters_ * np.log(len(ll))

    def aic(self, X, y):
        """Akaike information criterion on ``(X, y)`` (lower is better)."""
        return -2.0 * self.log_density(X, y).sum() + 2.0 * self.n_parameters_

    def save(self, path):
        """Save the fitted classifier without pickle (see :func:`moelearn.load`).

        Class labels must be numbers or strings (stored as JSON).
        """
        check_is_fitted(self)
        save(self, path)

    def _to_record(self):
        """The fitted classifier as ``(meta, arrays)`` for :mod:`moelearn.persistence`."""
        check_is_fitted(self)
        classes = self.classes_
        labels = [c.item() if isinstance(c, np.generic) else c for c in classes.tolist()]
        if not all(isinstance(c, (str, int, float, bool)) for c in labels):
            raise ValueError("only numeric or string class labels can be saved")
        params = {
            k: v
            for k, v in self.get_params().items()
            if k not in ("random_state", "gating_features", "expert_features")
        }
        meta = {
            "estimator": "classifier",
            "n_experts": int(self.n_experts),
            "n_features": int(self.n_features_in_),
            "classes": labels,
            "label_dtype": str(classes.dtype) if classes.dtype.kind in "biuf" else "object",
            "gating_features": [bool(v) for v in self._gmask],
            "expert_features": [bool(v) for v in self._emask],
            "params": params,
            "random_state": self.random_state if isinstance(self.random_state, int) else None,
            "fitted": {
                "n_iter_": self.n_iter_,
                "converged_": self.converged_,
                "log_likelihood_": self.log_likelihood_,
                "init_method_": self.init_method_,
                "n_parameters_": self.n_parameters_,
            },
        }
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            meta["feature_names_in_"] = [str(name) for name in names]
        target = getattr(self, "target_name_", None)
        if target is not None:
            meta["target_name_"] = str(target)
        arrays = {
            "experts": self.experts_,
            "expert_bias": self.expert_bias_,
            "gating": self.gating_,
            "gating_bias": self.gating_bias_,
        }
        return meta, arrays

    @classmethod
    def _from_record(cls, meta, arrays):
        """The fitted classifier of a record written by :meth:`_to_record`.

        Raises ``ValueError`` naming the first bad field (``KeyError`` or
        ``TypeError`` for missing or mistyped metadata).
        """
        try:
            k, d = int(meta["n_experts"]), int(meta["n_features"])
            labels = list(meta["classes"])
            g = np.asarray(meta["gating_features"], dtype=bool)
            e = np.asarray(meta["expert_features"], dtype=bool)
            params = dict(meta["params"])
            fitted = dict(meta["fitted"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad metadata ({exc})") from None
        if not (1 <= k <= 10**4 and 1 <= d <= 10**6 and 2 <= len(labels) <= 10**5):
            raise ValueError("implausible sizes")
        if g.shape != (d,) or e.shape != (d,):
            raise ValueError(f"gating_features and expert_features must have {d} entries")
        q = len(labels) - 1
        expected = {
            "experts": (k, q, int(e.sum())),
            "expert_bias": (k, q),
            "gating": (k, int(g.sum())),
            "gating_bias": (k,),
        }
        for name, shape in expected.items():
            arr = arrays.get(name)
            if arr is None:
                raise ValueError(f"missing entry {name!r}")
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
            if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must hold finite floating-point numbers")
        known = cls().get_params()
        est = cls(
            **{key: v for key, v in params.items() if key in known},
            random_state=meta.get("random_state"),
        )
        est.gating_features = np.flatnonzero(g).tolist()
        est.expert_features = np.flatnonzero(e).tolist()
        est._validate_params()
        dtype = meta.get("label_dtype", "object")
        est.classes_ = np.asarray(labels, dtype=None if dtype == "object" else dtype)
        est.experts_ = arrays["experts"].astype(float)
        est.expert_bias_ = arrays["expert_bias"].astype(float)
        est.gating_ = arrays["gating"].astype(float)
        est.gating_bias_ = arrays["gating_bias"].astype(float)
        est._gmask, est._emask = g, e
        est.n_features_in_ = d
        est.n_iter_ = int(fitted["n_iter_"])
        est.converged_ = bool(fitted["converged_"])
        est.log_likelihood_ = float(fitted["log_likelihood_"])
        est.init_method_ = str(fitted["init_method_"])
        est.n_parameters_ = int(fitted["n_parameters_"])
        names = meta.get("feature_names_in_")
        if names is not None:
            if not (isinstance(names, list) and len(names) == d):
                raise ValueError(f"feature_names_in_ must be {d} strings")
            est.feature_names_in_ = np.asarray(names, dtype=object)
        target = meta.get("target_name_")
        if target is not None:
            if not isinstance(target, str):
                raise ValueError("target_name_ must be a string")
            est.target_name_ = target
        return est

    def __sklearn_is_fitted__(self):
        return hasattr(self, "experts_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


def _check_labels(y):
    """Refuse missing labels (None) and labels that cannot be sorted, naming the row."""
    if y.dtype != object:
        return
    missing = np.flatnonzero(np.fromiter((v is None for v in y), dtype=bool, count=len(y)))
    if missing.size:
        raise ValueError(
            f"y has {missing.size} missing label{'s' if missing.size > 1 else ''} (None), the "
            f"first at row {missing[0]}: every sample needs a label"
        )
    try:
        np.unique(y)
    except TypeError:
        kinds = {type(v).__name__ for v in y}
        raise TypeError(
            f"the labels of y mix types that cannot be ordered ({', '.join(sorted(kinds))}): "
            "use labels of one kind, all strings or all numbers"
        ) from None


def _block_labels(Xb, yb, wb=None):
    """The labels of one block of out-of-core data (numbers: NaN and inf are refused)."""
    bad = ~np.isfinite(yb)
    if bad.any():
        raise ValueError(
            f"y contains NaN or infinite values ({int(bad.sum())} in one block): every "
            "sample needs a finite label"
        )
    return _LabelSet(np.unique(yb))


class _LabelSet:
    """Distinct labels of a block; adding two merges them (for Data.map_reduce)."""

    def __init__(self, values):
        self.values = np.asarray(values)

    def __add__(self, other):
        return _LabelSet(np.union1d(self.values, other.values))
