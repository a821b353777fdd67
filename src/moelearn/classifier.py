"""Mixture-of-experts classification: logistic or multinomial experts with a softmax gate.

``P(y = c | x) = sum_i p_i(z) P_i(y = c | u)``: the gate ``p_i`` on the gate
columns ``z``, and expert ``i`` a logistic regression (two classes) or a
multinomial logistic regression (more) on the expert columns ``u``
(Jordan & Jacobs 1994).  Fitted by the engine of DESIGN §13 (start search,
EM with scoring M-steps, L-BFGS-B), as a maximum a posteriori fit under a
Gaussian prior of one row's worth on the standardised coefficients by default
(``prior_strength``).

No consistent moment start exists for these experts: the output transforms
of DESIGN §3 need distinct powers of ``y``, and a class indicator has
``y^m = y`` (DESIGN §13).
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import ClassifierMixin
from sklearn.exceptions import ConvergenceWarning

# scikit-learn has no public form of its parameter constraints (Interval, StrOptions, checked
# by BaseEstimator._validate_params); they have lived in this module since 1.2
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._base import (
    MixtureOfExpertsBase,
    mask_from_record,
    mean_log_likelihood,
    names_from_record,
    names_to_record,
    shared_features_spec,
)
from ._progress import reported_fit
from ._validation import (
    MIN_MAGNITUDE,
    back_to_original_units,
    check_fit_size,
    refuse_tiny,
    tiny_scale_factors,
)
from .data import (
    ChunkedDataset,
    Data,
    check_out_of_core,
    check_sample_weight,
    head_rows,
    is_out_of_core,
)
from .engine import shared_columns
from .families import Bernoulli, Multinomial
from .family_fit import fit_engine, resolve_roles, split_intercept, unscale
from .model import MoEParams, random_generator
from .persistence import register_record

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
class MixtureOfExpertsClassifier(ClassifierMixin, MixtureOfExpertsBase):
    """Mixture of logistic (two classes) or multinomial (more) experts with a softmax gate.

    Parameters
    ----------
    n_experts : int, default 2
    alpha : float, default 0.0
        A fixed ridge on the experts' and the (centred) gate's coefficients on
        standardised columns, intercepts excluded: the fit maximises the mean
        log-likelihood minus ``alpha / 2`` times their squared norm (the
        convention of scikit-learn's ``alpha``).  Its pull on the estimates
        does not fall as ``n`` grows; ``prior_strength`` is the penalty whose
        does.  ``alpha=0`` with ``prior_strength=0`` is plain maximum
        likelihood, with a warning when the classes are separated.
    prior_strength : float, default 1.0
        ``lambda >= 0``: a Gaussian prior of precision ``lambda`` on the same
        standardised coefficients, carrying ``lambda`` rows' worth of
        information: it adds ``lambda / n`` to ``alpha`` (``n``: the total
        weight of the rows), so that its pull falls like ``1 / n``, as that of
        the regressor's ``prior_strength`` (DESIGN §13).  With more than two
        classes the ridge and the prior act on each expert's centred class
        logits, so the fit does not depend on the order of the classes.  The
        default, one row's worth (a unit-information prior), is at every ``n``
        the penalty of scikit-learn's ``LogisticRegression(C=1)`` on
        standardised columns (one expert gives that model's probabilities);
        it keeps the answer finite when an expert or the gate separates the
        classes.  ``log_likelihood_``, ``bic`` and ``aic`` stay those of the
        plain likelihood at the estimate; ``objective_`` is the maximised one.
    gating_features, expert_features : None, array-like of int or str, or boolean mask
        Columns of ``X`` that the gate and the experts read (None: all).
    shared_features : None, array-like of int or str, or boolean mask
        Columns of ``X`` whose log-odds coefficients are the same for every
        expert (one per class contrast; each expert keeps its intercepts).
        They are expert features (added to ``expert_features`` when it does
        not list them) and count once in :attr:`n_parameters_`.
    fit_intercept : bool, default True
    n_init : "auto" or int, default "auto"
        Starts screened by short EM runs on a subsample (DESIGN §13).
    max_iter : int, default 1000
    tol : float, default 1e-8
    compute_standard_errors : bool, default False
        Compute ``standard_errors_`` from the observed information during
        ``fit`` (one more pass over the data), as the regressor does;
        :meth:`standard_errors` and :meth:`summary` give the same numbers later.
    chunk_size : int or None
        Rows per chunk when reading memory-mapped data.
    random_state : int, RandomState, Generator or None
    verbose : int, default 0
        0: silent.  1: write the stages of the fit to standard error (the
        candidates screened by the start search, its finalists and the
        winner) and, out of core, every pass over the data with its rows per
        second.  Not saved with the model.

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
    objective_ : float
        Mean per training sample of the objective the fit maximised:
        ``log_likelihood_`` less the ridge and the prior.
    n_parameters_ : int
    n_iter_ : int
    converged_ : bool
    init_method_ : str
    standard_errors_ : StandardErrors or None
        Standard errors in the layout of ``params_``; None unless
        ``compute_standard_errors``.
    n_features_in_ : int
    n_groups_ : int
        Number of groups of a fit with ``groups`` (absent otherwise).
    """

    _parameter_constraints: dict = {
        "n_experts": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "prior_strength": [Interval(Real, 0, None, closed="left")],
        "gating_features": ["array-like", None],
        "expert_features": ["array-like", None],
        "shared_features": ["array-like", None],
        "fit_intercept": ["boolean"],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "compute_standard_errors": ["boolean"],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state", np.random.Generator],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_experts=2,
        alpha=0.0,
        prior_strength=1.0,
        gating_features=None,
        expert_features=None,
        shared_features=None,
        fit_intercept=True,
        n_init="auto",
        max_iter=1000,
        tol=1e-8,
        compute_standard_errors=False,
        chunk_size=None,
        random_state=None,
        verbose=0,
    ):
        self.n_experts = n_experts
        self.alpha = alpha
        self.prior_strength = prior_strength
        self.gating_features = gating_features
        self.expert_features = expert_features
        self.shared_features = shared_features
        self.fit_intercept = fit_intercept
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.compute_standard_errors = compute_standard_errors
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @reported_fit
    def fit(
        self,
        X: ArrayLike | ChunkedDataset,
        y: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
        groups: ArrayLike | None = None,
    ) -> Self:
        """Fit the mixture of experts.

        Parameters
        ----------
        X : array-like, memory map, dask array or ChunkedDataset
        y : array-like of shape (n_samples,), any hashable labels (None with a
            ChunkedDataset, whose chunks hold numeric labels)
        sample_weight : array-like of shape (n_samples,) or None
            Non-negative row weights (in-memory data).
        groups : array-like of shape (n_samples,) or None
            A label per row (out of core: one per row in the order the rows
            are read): every row of a group comes from the same expert, as in
            :meth:`MixtureOfExpertsRegressor.fit <moelearn.MixtureOfExpertsRegressor.fit>`
            (the gate's columns and the weights constant within a group).

        Returns
        -------
        self
        """
        self._validate_params()
        rescaled = self._fit_rescaled(X, y, sample_weight, groups)
        if rescaled is not None:
            return rescaled
        rng = random_generator(self.random_state)
        raw, weights = self._source(X, y, sample_weight)
        family = self._family()
        names = getattr(self, "feature_names_in_", None)
        d = raw.n_features
        gmask = resolve_roles(self.gating_features, d, names, "gating_features")
        emask = resolve_roles(self.expert_features, d, names, "expert_features")
        shared, shared_b = np.zeros(d, dtype=bool), False
        if self.shared_features is not None:
            spec, shared_b = split_intercept(self.shared_features, names, self.fit_intercept)
            if len(spec):
                shared = resolve_roles(spec, d, names, "shared_features")
        emask = emask | shared  # shared coefficients are the experts'
        coefs = family.n_predictors * (int(emask.sum()) + self.fit_intercept)
        check_fit_size(raw.n_samples, self.n_experts, coefs, self.n_init)
        self.__dict__.pop("n_groups_", None)
        if groups is not None:
            groups = self._fit_groups(groups, raw, np.flatnonzero(gmask), weights)
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
                prior_strength=self.prior_strength,
                # LogisticRegression's prior on every slope: a heavy-tailed gate lets two
                # experts separate the classes through the gate (DESIGN §13, the prior)
                gate_prior="normal",
                sample_weight=weights,
                random_state=rng,
                shared_columns=shared_columns(shared, shared_b),
                groups=groups,
            )
        fit = res.fit
        fi = self.fit_intercept
        A, b = unscale(fit.state.coef, res.design.expert_columns, res.x_mean, res.x_scale, fi)
        W, c = unscale(fit.state.gate, res.design.gating_columns, res.x_mean, res.x_scale, fi)
        self._set_params(
            A, b, W - W.mean(axis=0), c - c.mean(), family, gmask, emask, shared, shared_b
        )
        self.n_iter_ = int(fit.n_iter)
        self.converged_ = bool(fit.converged)
        self.init_method_ = f"{res.method}; no moment start for class labels (y^m = y, DESIGN §13)"
        self.n_parameters_ = self.params_.n_parameters(fi)
        if groups is None:
            self.log_likelihood_ = mean_log_likelihood(self.params_, raw, weights)
        else:  # the engine's grouped pass at the fit, without the ridge
            self.log_likelihood_ = float(fit.log_likelihood)
            self.n_groups_ = groups.n_groups
        self.objective_ = self.log_likelihood_ - res.penalty
        self.history_ = np.asarray(fit.history, dtype=float)
        slopes = fit.state.coef[..., 1:] if fi else fit.state.coef
        if (
            self.alpha == 0
            and self.prior_strength == 0
            and np.max(np.abs(slopes), initial=0.0) > _SEPARATED
        ):
            warnings.warn(
                "the classes are (nearly) perfectly separated by some expert: without a "
                "ridge the likelihood has no maximum and the coefficients grow without "
                "bound; the answer is the finite point where the optimiser stopped. "
                "Set prior_strength > 0 (the default is 1) or alpha > 0 for a unique answer",
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
        self.standard_errors_ = None
        if self.compute_standard_errors:
            # the information of the rows as given (weights count as frequencies)
            data = (
                raw.with_groups(groups)
                if weights is None
                else Data(  # in memory: the rows and their weights
                    raw.X, raw.y, n_experts=self.n_experts, sample_weight=weights, groups=groups
                )
            )
            self.standard_errors_ = self._standard_errors(data)
        return self

    def _fit_rescaled(self, X, y, sample_weight, groups=None):
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
        if self.compute_standard_errors:
            raise ValueError(
                "standard errors of data this small (largest |value| below "
                f"{MIN_MAGNITUDE:g}) underflow; rescale X, or set compute_standard_errors=False"
            )
        Xs = Xa * fx
        if hasattr(X, "columns"):  # keep the names (covariate roles may use them)
            import pandas as pd

            Xs = pd.DataFrame(Xs, columns=X.columns)
        self.fit(Xs, y, sample_weight, groups)
        p = self.params_
        with back_to_original_units():
            self._set_params(
                self.experts_ * fx[self._emask],
                self.expert_bias_,
                self.gating_ * fx[self._gmask],
                self.gating_bias_,
                p.family_object,
                p.gating_features,
                p.expert_features,
                p.shared_features,
                p.shared_intercept,
            )
        self._keep_training_data(X, y, sample_weight, groups)  # the data as given, not the copy
        return self

    def _source(self, X, y, sample_weight):
        if is_out_of_core(X):
            self._keep_training_data(None, None, None)
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
        given = (X, y, sample_weight)
        with np.errstate(invalid="ignore", over="ignore"):
            X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        _check_labels(y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        self._check_classes()
        weights = None
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, X.shape[0])
        self._keep_training_data(*given)  # for summary() without data
        return Data(X, codes.astype(float), self.chunk_size, n_experts=self.n_experts), weights

    def _check_classes(self):
        if len(self.classes_) < 2:
            raise ValueError(
                "a classifier needs samples of at least 2 classes in the data, but the "
                f"data contain only one class: {self.classes_[0]!r}"
            )

    # -------------------------------------------------------------- predict
    def _set_params(self, A, b, W, c, family, gmask, emask, shared=None, shared_b=False):
        """Store the fitted parameters: ``params_`` and the attributes that show them."""
        self._gmask, self._emask = gmask, emask
        one = family.n_predictors == 1
        self.params_ = MoEParams(
            A[:, 0, :] if one else A,
            W,
            b[:, 0] if one else b,
            c,
            None,
            family=family,
            gating_features=gmask,
            expert_features=emask,
            shared_features=None if shared is None or not np.any(shared) else shared,
            shared_intercept=bool(shared_b),
        )
        p = self.params_
        self.experts_ = p.experts if not one else p.experts[:, None, :]
        self.expert_bias_ = b
        self.gating_, self.gating_bias_ = W, c

    @classmethod
    def from_params(
        cls, params: MoEParams, classes: ArrayLike, **kwargs: object
    ) -> MixtureOfExpertsClassifier:
        """A fitted classifier holding ``params`` (e.g. from a torch layer or a file).

        Parameters
        ----------
        params : MoEParams
            Bernoulli experts (two classes: the log-odds of ``classes[1]``) or
            multinomial ones (the log-odds of ``classes[:-1]`` against the last).
        classes : array-like of shape (n_classes,)
            The class labels, sorted and distinct.
        **kwargs
            Other constructor parameters (``fit_intercept``...).  The covariate
            roles follow ``params``.

        Returns
        -------
        MixtureOfExpertsClassifier
        """
        if not isinstance(params, MoEParams):
            raise TypeError(f"params must be a MoEParams, got {type(params).__name__}")
        classes = np.asarray(classes)
        if classes.ndim != 1 or len(classes) < 2 or len(np.unique(classes)) != len(classes):
            raise ValueError("classes must hold at least 2 distinct labels")
        family = params.family_object
        if not hasattr(family, "log_proba") or family.n_predictors != len(classes) - 1:
            raise ValueError(
                f"params has {family!r} experts, which do not give the probabilities of "
                f"{len(classes)} classes"
            )
        if params.has_roles:
            kwargs.setdefault("gating_features", np.flatnonzero(params.gating_features).tolist())
            kwargs.setdefault("expert_features", np.flatnonzero(params.expert_features).tolist())
        spec = shared_features_spec(params.shared_features, params.shared_intercept)
        if spec is not None:
            kwargs.setdefault("shared_features", spec)
        est = cls(n_experts=params.n_experts, **kwargs)
        est._validate_params()
        est.classes_ = classes
        est.n_features_in_ = params.n_features
        A = params.experts if params.experts.ndim == 3 else params.experts[:, None, :]
        b = params.expert_bias if params.expert_bias.ndim == 2 else params.expert_bias[:, None]
        W, c = params.gating, params.gating_bias
        est._set_params(
            A.copy(),
            b.copy(),
            W - W.mean(axis=0),
            c - c.mean(),
            family,
            params.gating_features.copy(),
            params.expert_features.copy(),
            params.shared_features,
            params.shared_intercept,
        )
        est.n_iter_, est.converged_, est.log_likelihood_ = 0, True, float("nan")
        est.objective_ = float("nan")
        est.init_method_ = "from_params"
        est.n_parameters_ = est.params_.n_parameters(est.fit_intercept)
        return est

    def _family(self):
        n_classes = len(self.classes_)
        return Bernoulli() if n_classes == 2 else Multinomial(n_classes)

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Log of the class probabilities, shape (n_samples, n_classes)."""
        X = self._check_X(X)
        return self.params_.class_log_proba(X)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities ``sum_i p_i(x) P_i(y = c | x)``, shape (n_samples, n_classes)."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class of each row."""
        log_proba = self.predict_log_proba(X)
        return self.classes_[np.argmax(log_proba, axis=1)]

    def predict_experts(self, X: ArrayLike) -> np.ndarray:
        """Each expert's class probabilities, shape (n_samples, n_experts, n_classes)."""
        X = self._check_X(X)
        p = self.params_
        return np.exp(p.family_object.log_proba(p.expert_predictors(X)))

    def _codes(self, y, n):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"y must have shape ({n},), got {y.shape}")
        return LabelCodes(self.classes_)(None, y)[1].astype(int)

    def _response(self, y, n_samples):
        return self._codes(y, n_samples).astype(float)

    def _predictor_names(self):
        # the multinomial's predictors: log-odds of each class against the last
        if len(self.classes_) == 2:
            return None
        last = self.classes_[-1]
        return [f"log-odds {c} : {last}" for c in self.classes_[:-1]]

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
            if k
            not in (
                "random_state",
                "gating_features",
                "expert_features",
                "shared_features",
                "verbose",
            )
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
                "objective_": self.objective_,
                "init_method_": self.init_method_,
                "n_parameters_": self.n_parameters_,
            },
        }
        if self.params_.shared_features is not None:
            meta["shared_features"] = [bool(v) for v in self.params_.shared_features]
        if self.params_.shared_intercept:
            meta["shared_intercept"] = True
        names_to_record(self, meta)
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
            shared = mask_from_record(meta, "shared_features", d)
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
        # a record written before prior_strength existed was fitted without a prior
        params.setdefault("prior_strength", 0.0)
        est = cls(
            **{key: v for key, v in params.items() if key in known},
            random_state=meta.get("random_state"),
        )
        est.gating_features = np.flatnonzero(g).tolist()
        est.expert_features = np.flatnonzero(e).tolist()
        shared_b = meta.get("shared_intercept", False) is True
        if shared is not None or shared_b:
            est.shared_features = shared_features_spec(shared, shared_b)
        est._validate_params()
        dtype = meta.get("label_dtype", "object")
        est.classes_ = np.asarray(labels, dtype=None if dtype == "object" else dtype)
        est._set_params(
            arrays["experts"].astype(float),
            arrays["expert_bias"].astype(float),
            arrays["gating"].astype(float),
            arrays["gating_bias"].astype(float),
            est._family(),
            g,
            e,
            shared,
            shared_b,
        )
        est.n_features_in_ = d
        est.n_iter_ = int(fitted["n_iter_"])
        est.converged_ = bool(fitted["converged_"])
        est.log_likelihood_ = float(fitted["log_likelihood_"])
        est.objective_ = float(fitted.get("objective_", est.log_likelihood_))
        est.init_method_ = str(fitted["init_method_"])
        est.n_parameters_ = int(fitted["n_parameters_"])
        for key, value in names_from_record(meta, d).items():
            setattr(est, key, value)
        return est

    def _penalty_parts(self):
        parts = super()._penalty_parts()
        if self.alpha > 0:
            parts.append(f"ridge alpha = {float(self.alpha):g} per sample")
        return parts

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
