"""What the regressor and the classifier share: one fitted model and its likelihood.

:class:`MixtureOfExpertsBase` holds a fitted :class:`~moelearn.model.MoEParams`
(``params_``) and gives both estimators the methods that depend on nothing
else: the gate's probabilities, each row's log-density, the posterior
responsibilities, the information criteria (BIC, AIC, ICL: plain
log-likelihood, the one parameter count :func:`~moelearn.model.count_parameters`),
saving without pickle and the fitted check.  A subclass fits (validating its
parameters and calling the functional core), stores ``params_``, and says how
``y`` enters the likelihood (:meth:`_response`: numbers for the regressor,
class codes for the classifier).
"""

from __future__ import annotations

import os
from abc import ABCMeta, abstractmethod

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from ._logspace import logsumexp_k
from .data import Data, check_sample_weight, is_dask_array
from .grouping import (
    check_constant_in_groups,
    check_groups,
    group_posterior,
    groups_out_of_core,
)
from .inference import (
    StandardErrors,
    Summary,
    classification_entropy,
    data_standard_errors,
    summarize,
)
from .persistence import save

__all__ = [
    "MixtureOfExpertsBase",
    "mean_log_likelihood",
    "names_to_record",
    "names_from_record",
    "shared_features_spec",
]

# names of the columns a command-line fit used for the target, the row weights and the groups
_COLUMN_NAMES = ("target_name_", "weights_name_", "groups_name_")


def names_to_record(est, meta):
    """Column names of a fitted estimator into record metadata (those that are set).

    ``feature_names_in_`` (a DataFrame's columns), ``target_name_`` and
    ``weights_name_`` (the target and weight columns of a command-line fit).
    """
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        meta["feature_names_in_"] = [str(name) for name in names]
    for key in _COLUMN_NAMES:
        value = getattr(est, key, None)
        if value is not None:
            meta[key] = str(value)


def mask_from_record(meta, key, d):
    """The boolean mask ``meta[key]`` of ``d`` entries as an array, or None when absent.

    Raises ``ValueError`` unless it is a list of ``d`` booleans.
    """
    mask = meta.get(key)
    if mask is None:
        return None
    if not (isinstance(mask, list) and len(mask) == d and all(isinstance(v, bool) for v in mask)):
        raise ValueError(f"{key} must be {d} booleans")
    return np.asarray(mask, dtype=bool)


def names_from_record(meta, d):
    """The validated names of :func:`names_to_record`: a dict of the attributes to set.

    Raises ``ValueError`` for names that are not ``d`` distinct strings, or a
    column name that is not a string.
    """
    out = {}
    names = meta.get("feature_names_in_")
    if names is not None:
        if not (
            isinstance(names, list)
            and len(names) == d
            and all(isinstance(name, str) for name in names)
            and len(set(names)) == d
        ):
            raise ValueError(f"feature_names_in_ must be {d} distinct strings")
        out["feature_names_in_"] = np.asarray(names, dtype=object)
    for key in _COLUMN_NAMES:
        value = meta.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            out[key] = value
    return out


def shared_features_spec(mask, intercept=False):
    """The ``shared_features`` parameter that a boolean ``mask`` (or None) and a shared
    intercept stand for (column indices, then ``"intercept"``), or None when nothing is shared."""
    if mask is None and not intercept:
        return None
    columns = [] if mask is None else np.flatnonzero(mask).tolist()
    return columns + (["intercept"] if intercept else [])


def mean_log_likelihood(params, data: Data, weights=None) -> float:
    """(Weighted) mean log-likelihood of ``params`` over a data source (one pass).

    ``weights`` weight the rows of in-memory data; a weighted source carries
    its own.
    """
    if weights is not None:
        X, y = (data.X, data.y) if data.transform is None else data.transform(data.X, data.y)
        return float(np.average(params.log_likelihood(X, y), weights=weights))

    def block(Xb, yb, wb=None):
        ll = params.log_likelihood(Xb, yb)
        return np.array(
            [float(np.sum(ll) if wb is None else wb @ ll), len(yb) if wb is None else wb.sum()]
        )

    total = data.map_reduce(block)
    return float(total[0] / total[1])


class MixtureOfExpertsBase(BaseEstimator, metaclass=ABCMeta):
    """Base of :class:`~moelearn.MixtureOfExpertsRegressor` and
    :class:`~moelearn.MixtureOfExpertsClassifier` (not used directly).

    Attributes
    ----------
    params_ : MoEParams
        The fitted model, with the family of the experts (Bernoulli or
        multinomial for the classifier).
    """

    # ------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _response(self, y, n_samples):
        """``y`` as the likelihood reads it (validated), shape (n_samples,)."""

    def _per_expert_noise(self) -> bool:
        """Whether each expert has its own dispersion (the regressor's ``noise``)."""
        return True

    def _predictor_names(self):
        """Labels of an expert's linear predictors when it has several, or None."""
        return None

    # ------------------------------------------------------------- training data
    def _keep_training_data(self, X, y, sample_weight, groups=None):
        """Keep a reference to in-memory training data as given (no copy), for summary().

        As statsmodels' results keep their model's data; a pickle drops it
        (``__getstate__``), and ``None`` (out-of-core data) forgets it.
        """
        self._training_data = None if X is None else (X, y, sample_weight, groups)

    def _training_arrays(self):
        """The training data kept by fit, validated again (a transient copy for a DataFrame).

        ``(None, None, None)`` after an out-of-core fit, or for a loaded or
        unpickled model.  The groups of a grouped fit: :meth:`_training_groups`.
        """
        data = getattr(self, "_training_data", None)
        if data is None:
            return None, None, None
        X, y, w = data[:3]
        X = self._check_X(X)
        y = self._response(y, X.shape[0])
        return X, y, None if w is None else check_sample_weight(w, X.shape[0])

    def _fit_groups(self, groups, raw, gate_columns, sample_weight=None):
        """The :class:`~moelearn.grouping.Groups` of a fit on ``raw``, validated.

        In memory the labels are kept with the training data (for
        ``summary()``); out of core the within-group checks take one read, and
        labels in a memory map or a Dask array are read by slices.
        """
        if raw.in_memory:
            checked = check_groups(
                groups,
                raw.n_samples,
                gate_columns=gate_columns,
                X=raw.X,
                sample_weight=sample_weight,
            )
            self._keep_training_data(*self._training_data[:3], groups)
            return checked
        if isinstance(groups, np.memmap) or is_dask_array(groups):
            checked = groups_out_of_core(groups, raw.n_samples)
        else:
            checked = check_groups(groups, raw.n_samples)
        check_constant_in_groups(raw, checked, gate_columns)
        return checked

    def _training_groups(self):
        """The ``groups`` labels of the kept training data (None if ungrouped or not kept)."""
        data = getattr(self, "_training_data", None)
        return None if data is None or len(data) < 4 else data[3]

    def __getstate__(self):
        # a pickle does not carry the training data that summary() may use
        state = dict(super().__getstate__())  # a copy: the estimator keeps its data
        state.pop("_training_data", None)
        return state

    # ------------------------------------------------------------------ checks
    def _check_X(self, X):
        check_is_fitted(self)
        with np.errstate(invalid="ignore", over="ignore"):
            return validate_data(self, X, reset=False, dtype=np.float64)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "params_")

    # ------------------------------------------------------------- likelihood
    def predict_gating(self, X: ArrayLike) -> np.ndarray:
        """Gating probabilities ``p_i(x)``, shape (n_samples, n_experts)."""
        return self.params_.gating_proba(self._check_X(X))

    def _check_groups(self, groups, X, sample_weight=None):
        """``groups`` validated for the rows of ``X`` (the gate's columns constant in a group)."""
        mask = self.params_.gating_features
        gate = np.arange(X.shape[1]) if mask is None else np.flatnonzero(mask)
        return check_groups(groups, X.shape[0], gate_columns=gate, X=X, sample_weight=sample_weight)

    def _grouped(self, X, y, groups, sample_weight=None):
        """``(Groups, per-group log-likelihood, per-group posterior)`` of validated data."""
        g = self._check_groups(groups, X, sample_weight)
        joint = self.params_.group_joint_log_likelihood(X, y, g)
        _, per_group, post = group_posterior(joint, g)
        return g, per_group, post

    def log_density(
        self, X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None
    ) -> np.ndarray:
        """Conditional log-density ``log p(y | x)`` of each ``(x, y)`` pair, shape (n_samples,).

        Summed over the rows it is the log-likelihood in the original units of
        ``y`` (what AIC, BIC and peers such as flexmix report); for the
        classifier, ``log P(y | x)`` of each labelled row (labels not seen when
        fitting raise ``ValueError``: their probability is zero).

        With ``groups`` (one label per row; every row of a group comes from
        one expert), the log-density of each group's rows together,
        ``log sum_i p_i(z_g) prod_{n in g} f_i(y_n | x_n)``, shape
        (n_groups,), in the order of ``numpy.unique(groups)``.
        """
        X = self._check_X(X)
        y = self._response(y, X.shape[0])
        if groups is not None:
            return self._grouped(X, y, groups)[1]
        return self.params_.log_likelihood(X, y)

    def predict_responsibilities(
        self, X: ArrayLike, y: ArrayLike, log: bool = False, groups: ArrayLike | None = None
    ) -> np.ndarray:
        """Posterior expert probabilities ``P(z = i | x, y)``, shape (n_samples, n_experts).

        ``log=True`` returns their logarithms (normalised in log space).  With
        ``groups`` every row gets its group's posterior, which reads all the
        group's rows.
        """
        X = self._check_X(X)
        y = self._response(y, X.shape[0])
        if groups is not None:
            g, _, post = self._grouped(X, y, groups)
            post = post[g.codes]
            if not log:
                return post
            with np.errstate(divide="ignore"):
                return np.log(post)
        log_post = self._log_posterior(X, y)[1]
        return log_post if log else np.exp(log_post)

    def _log_posterior(self, X, y):
        """``(log-likelihood per row, log responsibilities)`` of validated rows."""
        joint = self.params_.joint_log_likelihood(X, y)
        lse = logsumexp_k(joint.T)[0]
        return lse, joint - lse[:, None]

    # --------------------------------------------------------------- criteria
    @property
    def _n_free(self) -> int:
        return self.params_.n_parameters(self.fit_intercept)

    def _weighted_log_likelihood(self, X, y, sample_weight, groups=None):
        """Total log-likelihood, the sample size (the weights' sum when weighted) and
        the classification entropy ``-sum w log r`` of the most probable experts (of the
        groups' with ``groups``)."""
        X = self._check_X(X)
        y = self._response(y, X.shape[0])
        w = None if sample_weight is None else check_sample_weight(sample_weight, X.shape[0])
        n = float(X.shape[0]) if w is None else float(w.sum())
        if groups is not None:
            g, ll, post = self._grouped(X, y, groups, w)
            wg = None if w is None else w[g.first]
            with np.errstate(divide="ignore"):
                log_post = np.log(post)
        else:
            ll, log_post = self._log_posterior(X, y)
            wg = w
        total = float(ll.sum()) if wg is None else float(wg @ ll)
        return total, n, classification_entropy(log_post, wg)

    def bic(
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        groups: ArrayLike | None = None,
    ) -> float:
        """Bayesian information criterion on ``(X, y)`` (lower is better).

        ``-2 log L + p log n`` with ``p = n_parameters_`` and ``log L`` the
        plain log-likelihood.  With ``sample_weight`` the weights count as
        frequencies: ``log L`` is the weighted sum and ``n`` the sum of the
        weights.  With ``groups`` ``log L`` is the grouped log-likelihood
        (:meth:`log_density`) and ``n`` stays the number of rows, as flexmix
        counts them.
        """
        ll, n, _ = self._weighted_log_likelihood(X, y, sample_weight, groups)
        return -2.0 * ll + self._n_free * np.log(n)

    def aic(
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        groups: ArrayLike | None = None,
    ) -> float:
        """Akaike information criterion ``-2 log L + 2 p`` on ``(X, y)`` (lower is better).

        ``sample_weight`` and ``groups`` as in :meth:`bic`.
        """
        ll, _, _ = self._weighted_log_likelihood(X, y, sample_weight, groups)
        return -2.0 * ll + 2.0 * self._n_free

    def icl(
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        groups: ArrayLike | None = None,
    ) -> float:
        """Integrated completed likelihood criterion on ``(X, y)`` (lower is better).

        flexmix's convention (``ICL()``; Biernacki, Celeux and Govaert 2000):
        ``ICL = -2 clogLik + p log n``, with the classification log-likelihood
        ``clogLik = sum_n log(pi_{z_n}(x_n) f_{z_n}(y_n | x_n))`` of each row's
        most probable expert ``z_n``.  Equivalently ``ICL = BIC + 2 E`` with
        ``E = -sum_n log r_{n, z_n}``, ``r_ni = P(z = i | x_n, y_n)`` the
        posterior responsibilities (:meth:`predict_responsibilities`): BIC
        plus a penalty for experts whose rows overlap.  (The soft-assignment
        variant ``BIC + 2 * (-sum r log r)`` is ``Summary.bic + 2 *
        Summary.entropy``.)  ``sample_weight`` and ``groups`` as in
        :meth:`bic`; with groups ``E`` sums over the groups, whose experts
        are the latent labels.
        """
        ll, n, entropy = self._weighted_log_likelihood(X, y, sample_weight, groups)
        return -2.0 * ll + self._n_free * np.log(n) + 2.0 * entropy

    # ------------------------------------------------------------ persistence
    # -------------------------------------------------------------- inference
    def standard_errors(
        self,
        X: ArrayLike,
        y: ArrayLike,
        groups: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> StandardErrors:
        """Standard errors from the observed information on ``(X, y)``, in original units.

        Pass the training data to get the usual asymptotic standard errors of
        the fitted parameters (for a fit with a prior, the classifier's
        default, those of the likelihood at its estimate).  The
        gating is identified only up to a common shift of its rows; the
        covariance is that of the centred gate (see :mod:`moelearn.inference`).

        Returns
        -------
        StandardErrors
            Same layout as ``params_``; ``noise_std`` holds the error of the
            experts' spread (sigma, or the Gamma and negative-binomial
            coefficient of variation), None for families without one.

        With ``groups`` (the labels of a grouped fit) the information is that
        of the grouped likelihood: central differences of its exact gradient.
        With ``sample_weight`` the weights count as frequencies (the
        information of repeated rows).
        """
        X = self._check_X(X)
        y = self._response(y, X.shape[0])
        w = None if sample_weight is None else check_sample_weight(sample_weight, X.shape[0])
        if groups is not None:
            g = self._check_groups(groups, X)
            return self._standard_errors(
                Data(X, y, n_experts=self.n_experts, groups=g, sample_weight=w)
            )
        return self._standard_errors(Data(X, y, self.chunk_size, self.n_experts, sample_weight=w))

    def _standard_errors(self, data):
        return data_standard_errors(
            data, self.params_, self._per_expert_noise(), self.fit_intercept
        )

    def summary(
        self,
        X: ArrayLike | None = None,
        y: ArrayLike | None = None,
        level: float = 0.95,
        groups: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> Summary:
        """Table of estimates, standard errors, Wald tests and information criteria.

        The standard errors come from the observed information on the training
        data (one pass), and the log-likelihood, AIC, BIC and ICL are totals
        over it; after a weighted fit the weights count as frequencies there,
        as in ``standard_errors_`` and :meth:`bic` with ``sample_weight``.
        After a fit on in-memory data the estimator keeps a reference to the
        training data as given (as statsmodels' results do: no copy, so
        changing those arrays afterwards changes this summary; pickling drops
        the reference), so
        ``summary()`` needs no arguments; after an out-of-core fit, a loaded
        model, or an unpickled one, pass ``X, y``.  The gate is reported
        centred (rows and intercepts sum to zero over the experts).  Standard
        errors of coefficients that the data do not identify (a singular
        observed information: collinear columns) are NaN, printed ``n/a``.
        A classifier with several classes shows one block per expert and
        class: the log-odds of that class against the last of ``classes_``.
        Print the result, or use its ``to_frame()`` and HTML forms.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or None
            None: the training data.
        y : array-like of shape (n_samples,) or None
            Given with ``X``.
        level : float, default 0.95
            Confidence level of the Wald intervals.
        groups : array-like of shape (n_samples,) or None
            The group labels of a grouped fit, given with ``X`` (without data:
            those of the training data).  The log-likelihood, the criteria and
            the information are then the grouped ones.
        sample_weight : array-like of shape (n_samples,) or None
            Frequency weights of the rows given with ``X`` (without data: the
            training weights).

        Returns
        -------
        Summary
        """
        check_is_fitted(self)
        if (X is None) != (y is None):
            raise ValueError("pass both X and y, or neither (the training data)")
        for name, given, what in (
            ("groups", groups, "groups"),
            ("sample_weight", sample_weight, "weights"),
        ):
            if X is None and given is not None:
                raise ValueError(
                    f"{name}= goes with X and y; summary() alone uses the training {what}"
                )
        if X is None:
            groups = self._training_groups()
            X, y, sample_weight = self._training_arrays()
            if X is None:
                raise ValueError(
                    "summary() without data needs a model fitted on in-memory data in this "
                    "session; this one was fitted out of core, loaded or unpickled: pass the "
                    "training data, summary(X, y)"
                )
        else:
            X = self._check_X(X)
            y = self._response(y, X.shape[0])
            if sample_weight is not None:
                sample_weight = check_sample_weight(sample_weight, X.shape[0])
        return summarize(
            self.params_,
            X,
            y,
            per_expert_noise=self._per_expert_noise(),
            fit_intercept=self.fit_intercept,
            converged=self.converged_,
            init_method=self.init_method_,
            feature_names=getattr(self, "feature_names_in_", None),
            level=level,
            predictor_names=self._predictor_names(),
            groups=None if groups is None else self._check_groups(groups, X),
            sample_weight=sample_weight,
            prior=self._prior_description(),
        )

    def _prior_strength(self) -> float:
        """The fit's prior strength as a number (a subclass resolves ``"auto"``)."""
        return float(self.prior_strength)

    def _slope_prior_text(self, lam) -> str:
        """The prior on the slopes, for :meth:`summary`."""
        return f"normal, precision {lam:g} on standardised slopes (experts and gate)"

    def _prior_description(self):
        """The prior of a maximum a posteriori fit, as :meth:`summary` shows it (None: none)."""
        parts = self._penalty_parts()
        if not parts:
            return None
        return "; ".join(parts) + f"; objective {self.objective_:.6g} per sample"

    def _penalty_parts(self):
        """The penalties the fit maximised the likelihood less, one phrase each."""
        lam = self._prior_strength()
        if lam <= 0:
            return []
        parts = [self._slope_prior_text(lam)]
        family = self.params_.family_object
        if family.has_dispersion_prior:
            parts.append(family.dispersion_prior_text.format(lam=f"{lam:g}"))
        return parts

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted model without pickle (see :func:`moelearn.load`).

        The column names ``feature_names_in_`` (set when fitting on a pandas
        DataFrame), ``target_name_`` and ``weights_name_`` (set by the command
        line) are kept when
        present; a classifier's labels must be numbers or strings (stored as
        JSON).
        """
        check_is_fitted(self)
        save(self, path)
