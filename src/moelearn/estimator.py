"""The scikit-learn estimator (DESIGN §7): consistent start, (penalised) likelihood finish."""

from __future__ import annotations

import dataclasses
import warnings
from numbers import Integral, Real
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import RegressorMixin
from sklearn.exceptions import ConvergenceWarning

# scikit-learn has no public form of its parameter constraints (Interval, StrOptions, checked
# by BaseEstimator._validate_params); they have lived in this module since 1.2
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import predictive
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
    check_target_and_magnitude,
    refuse_tiny,
    tiny_scale_factors,
)
from .data import (
    ChunkedDataset,
    Data,
    check_out_of_core,
    check_sample_weight,
    head_rows,
    is_dask_array,
    is_out_of_core,
)
from .diagnostics import gate_separation, prediction_range_problem
from .engine import shared_columns
from .exceptions import (
    CollapsedComponentWarning,
    DegenerateFitWarning,
    GateSeparationWarning,
    MomentMethodUnavailable,
    NotIdentifiedWarning,
)
from .families import (
    REGRESSION_FAMILIES,
    Family,
    Gaussian,
    available_families,
    family_config,
    family_from_config,
    get_family,
)
from .family_fit import fit_family, resolve_roles, split_intercept
from .inference import (
    collinear_columns,
)
from .links import Link, get_link
from .model import MoEParams, random_generator, sample_given_x
from .moment_starts import check_moment_method, family_moment_start
from .persistence import register_record
from .solvers import SOLVERS, Problem, get_solver
from .standardize import NOISE_FLOOR, Scaling

__all__ = ["MixtureOfExpertsRegressor"]

# The solvers that maximise the likelihood (and so the posterior of prior_strength).
_LIKELIHOOD_SOLVERS = ("moments", "em", "gd-nll")
# what each likelihood solver is in the engine: the start search (None) or a baseline
_ENGINE_BASELINES = {"moments": None, "em": "em", "gd-nll": "gd"}

# prior_strength="auto" for the likelihood solvers (DESIGN §13, "The prior", where the choice
# is measured); 0 for the solvers without a likelihood.
DEFAULT_PRIOR_STRENGTH = 0.5

# Arrays of a saved regressor; constructor parameters that its record leaves out
# (stored apart, or not restorable from JSON).
_RECORD_ARRAYS = (
    "experts",
    "gating",
    "expert_bias",
    "gating_bias",
    "noise_std",
    "x_mean",
    "x_whiten",
    "x_unwhiten",
)
_UNSAVED_PARAMS = (
    "init_params",
    "link",
    "random_state",
    "family",
    "gating_features",
    "expert_features",
    "offset",
    "trials",
    "shared_features",
    "verbose",
)


@register_record("regressor")
class MixtureOfExpertsRegressor(RegressorMixin, MixtureOfExpertsBase):
    """Mixture-of-experts regression with a consistent initialisation.

    ``y | x`` is a mixture of ``n_experts`` regressions ``g(<a_i, x> + b_i) +
    N(0, sigma_i^2)`` weighted by a softmax gate ``p_i(x) ∝ exp(<w_i, x> + c_i)``,
    or of experts of another ``family`` (Student-t, Poisson, Gamma), with the
    gate and the experts reading their own columns of ``X`` if asked.

    Parameters
    ----------
    n_experts : int, default 2
    link : str, Link or callable, default "linear"
        Expert non-linearity ``g`` of Gaussian experts (see
        :func:`moelearn.available_links`); the other families have their
        canonical link (log for Poisson and Gamma, identity for Student-t).
    family : str or Family, default "gaussian"
        ``"gaussian"``, ``"student-t"``, ``"poisson"``, ``"gamma"``,
        ``"negative-binomial"`` or a :class:`~moelearn.families.Family`.
        Distribution of ``y`` given the expert (:mod:`moelearn.families`):
        Gaussian noise; Student-t noise with its degrees of freedom estimated
        per expert (robust to outliers); Poisson counts (log link); positive
        Gamma responses (log link, one shape per expert); overdispersed counts
        (negative binomial NB2, log link, one shape per expert); successes out
        of each row's known number of trials (binomial, logit link, with
        ``trials``).  Every fit with a prior (the default), and every
        family other than the Gaussian or layout other than all columns, goes
        through the start search and EM / Newton / L-BFGS-B engine of DESIGN §13
        (solvers ``"moments"``, ``"em"`` and ``"gd-nll"``).
    gating_features, expert_features : None, array-like of int or str, or boolean mask
        Columns of ``X`` that the gate and the experts read (None: all
        columns).  Names need ``X`` to be a DataFrame.  An empty
        ``gating_features`` gives constant mixing weights: the classical
        mixture of regressions.
    shared_features : None, array-like of int or str, or boolean mask
        Columns of ``X`` whose coefficient is the same for every expert
        (flexmix's ``FLXMRglmfix(fixed = ~ x)``, Stata's ``lcinvariant``);
        each expert keeps its own intercept unless the list holds
        ``"intercept"`` (and X no column of that name): then the experts
        differ only where they do not share (with every column shared, a
        scale mixture: one line, several noise levels).  They are expert features (added
        to ``expert_features`` when it does not list them), count once in
        :attr:`n_parameters_` and show once in :meth:`summary`.  Any family.
    offset : None, int or str, default None
        A column of ``X`` added to every expert's linear predictor with
        coefficient one — for Poisson rates, the log of the exposure (time at
        risk, population); also for Gamma experts.  It is neither a gate nor
        an expert feature.
    trials : None, int or str, default None
        The column of ``X`` holding each row's number of trials, for
        ``family="binomial"`` (required there, refused elsewhere); ``y`` then
        counts the successes, integers from 0 to the trials.  Like
        ``offset`` it is neither a gate nor an expert feature, and
        :meth:`predict` reads it from ``X``: the predicted mean is a number
        of successes.
    solver : {"moments", "landscape", "tensor", "em", "gd-nll", "gd-l2"}, default "moments"
        * ``"moments"``: standardise, recover the expert directions from
          moments (globally consistent in the theory regime) and fit their
          lengths, intercepts, gating and noise: the moment start; screen it
          with other starts (``n_init``) and refine the best by maximum
          likelihood.  When the moment method cannot run (``n_experts >
          n_features``, a link invalid for the moments, or too few samples)
          the other starts alone are screened (``init_method_`` says which
          start won and why the moment start was missing).
        * ``"landscape"``: the AISTATS 2020 pipeline - experts by the
          landscape loss ``L_4``, gating by ``L_log``; no refinement.
        * ``"tensor"``: the ICML 2019 pipeline - experts by tensor
          decomposition, gating by EM with the experts fixed; no refinement.
          The two paper pipelines assume the theory regime (unit-norm
          experts, no expert intercepts); they standardise ``X`` only.
        * ``"em"``, ``"gd-nll"``, ``"gd-l2"``: joint EM, joint gradient descent
          on the negative log-likelihood, joint gradient descent on the
          squared loss, each from ``n_init`` random starts (the baselines).
          ``"em"`` and ``"gd-nll"`` (by L-BFGS-B) fit every family and
          covariate layout; the paper pipelines and ``"gd-l2"`` need Gaussian
          experts on all columns.

        The names are those of the registry :data:`moelearn.solvers.SOLVERS`;
        a solver added with :func:`moelearn.solvers.register_solver` is
        accepted too.
    fit_intercept : bool, default True
        Fit expert and gating intercepts.
    prior_strength : float or "auto", default "auto"
        ``lambda >= 0``: the fit maximises the log-likelihood plus the log of a
        prior worth about ``lambda`` rows of data (a maximum a posteriori fit,
        DESIGN §13), on standardised columns and (for a location-scale family)
        standardised ``y``, intercepts excluded: a Gaussian prior of precision
        ``lambda`` on every expert slope; a Cauchy prior of scale 1.25 (Gelman
        et al. 2008) to the power ``lambda`` on every slope of the centred
        gate, heavy-tailed so that a steep switch the data support stays
        affordable; for the families whose dispersion can shrink onto a few
        rows, an inverse-gamma prior of weight ``lambda`` on each expert's
        variance (Gaussian and Student-t ``sigma**2``, Gamma ``1 / shape``) at
        the robust residual variance of one expert over ``k**2`` (Chen, Tan &
        Zhang 2008; Fraley & Raftery 2007); and ``Gamma(2, 0.1)**lambda`` on
        the Student-t degrees of freedom (Juárez & Steel 2010).  The penalised
        likelihood is then bounded, a gate that separates the rows becomes a
        finite maximum, and the prior's pull on the estimates falls like
        ``1 / n``.  ``"auto"`` is ``lambda = 0.5``
        (``moelearn.estimator.DEFAULT_PRIOR_STRENGTH``, chosen in DESIGN §13 from the held-out
        fit of 31 real cases and the weakest strength that keeps one extreme
        response from making predictions explode) for the likelihood solvers
        (``"moments"``, ``"em"``, ``"gd-nll"``, fitted by the engine of DESIGN
        §13) and ``0`` for the paper pipelines and ``"gd-l2"``, which do not
        maximise a likelihood and refuse a positive value.  ``0`` is the plain
        maximum-likelihood fit (for comparisons with other software and the
        papers' experiments), up to the ridge of ``1e-6`` per row on the
        standardised expert slopes that every fit carries (it keeps the
        estimate unique; ``moelearn.family_fit.RIDGE``).  ``log_likelihood_``,
        BIC, AIC and ICL stay those of the plain likelihood; ``objective_`` is
        the maximised one.
    noise : {"expert", "shared"}, default "expert"
        One noise level per expert (the model flexmix and mixtools fit), or
        one shared by all: for every family with a noise parameter (the
        Gaussian and Student-t scale, the Gamma coefficient of variation) and
        any covariate roles; Poisson experts have none.  Every noise level is kept above
        ``NOISE_FLOOR * std(y)`` (``1e-3``), which bounds the likelihood; a
        component left explaining fewer samples than its expert has
        coefficients plus one, or with its noise at that floor, counts as
        collapsed and loses to every start without one (DESIGN §11).
    max_iter : int, default 1000
        Iterations of each stage of the optimiser (per start): EM, then the
        gradient finish; ``n_iter_`` counts the iterations of every stage,
        Newton steps included, so it can exceed ``max_iter``.
    tol : float, default 1e-8
        Relative tolerance on the mean log-likelihood.
    n_init : "auto" or int, default "auto"
        Starts of the ``"moments"`` solver, for every family, covariate layout
        and ``prior_strength`` (:func:`moelearn.engine.search`, DESIGN §13):
        ``"auto"`` screens 10 to 30 starts (the family's moment start where it
        applies, residual partitions, random gates and projections of
        ``(x, y)``) and random partitions of the rows by one batched short EM
        on a subsample of 2 500 rows (30 per free parameter where more), runs the best three to
        convergence there, tries remove-and-split moves from the best, and
        refines the winner on all the data; an integer ``m`` screens ``m``
        starts, the moment start among them where it applies (and random
        partitions beside them), and ``1`` refines the moment start alone
        (where it does not apply, one generated start and one partition are
        screened).  For
        the baselines ``"em"``, ``"gd-nll"`` and ``"gd-l2"`` it is the number of
        random starts (``"auto"``: 1).
    init_params : MoEParams or None
        Warm start, in the original units; the solver then only refines.
    refine : {"lbfgs", "em"}, default "lbfgs"
        Optimiser of the final refinement of the ``"moments"`` solver's best
        start (and of a warm start), for every family and covariate layout:
        EM, then exact Newton steps and L-BFGS-B (``"lbfgs"``), or EM alone
        until the objective changes by less than ``tol`` (``"em"``: slower, and
        monotone in the objective at every iteration).
    moment_method : {"tensor", "landscape"}, default "tensor"
        Expert recovery of the consistent moment start (DESIGN §4-§5): the
        cross-moment tensor's power method (ICML 2019), or gradient descent
        on the landscape-designed loss (AISTATS 2020).  The Gaussian,
        Student-t and Gamma starts take either; the count start of Poisson
        and negative-binomial experts the tensor method only
        (``"landscape"`` raises there).
    compute_standard_errors : bool, default False
        Compute ``standard_errors_`` from the observed information during
        ``fit`` (one more pass over the data: the exact observed information).
        Off by default; :meth:`standard_errors` and :meth:`summary` give the
        same numbers later.
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
    experts_ : ndarray of shape (n_experts, n_expert_features)
        Expert coefficients, one row per expert, on the columns of
        ``expert_features`` (all the features by default).
    expert_bias_ : ndarray of shape (n_experts,)
        Expert intercepts.
    gating_ : ndarray of shape (n_experts, n_gating_features)
        Gating coefficients on the columns of ``gating_features`` (all the
        features by default), rows centred (they sum to zero).
    gating_bias_ : ndarray of shape (n_experts,)
        Gating intercepts, centred.
    noise_std_ : float or ndarray of shape (n_experts,) or None
        Noise standard deviation (Gaussian), scale (Student-t), coefficient
        of variation (Gamma), the coefficient of variation ``1 / sqrt(theta)``
        of the rate's Gamma frailty (negative binomial); None for Poisson experts.
    df_ : ndarray of shape (n_experts,) or None
        Degrees of freedom of Student-t experts.
    params_ : MoEParams
        All of the above in one object.
    n_iter_ : int
    converged_ : bool
    log_likelihood_ : float
        Mean log-likelihood per training sample.
    objective_ : float
        Mean per training sample of the objective the fit maximised: equal to
        ``log_likelihood_`` less the prior's penalty (``prior_strength``) and
        the engine's ``1e-6`` ridge on the experts' standardised slopes (DESIGN
        §13), if any.
    standard_errors_ : StandardErrors or None
        Standard errors in the layout of ``params_`` (the noise entry holds the
        standard error of ``sigma``); None unless ``compute_standard_errors``.
        See :meth:`summary` for a table with tests and information criteria.
    init_method_ : str
    history_ : ndarray
        Objective at each step of the final fit (mean log-likelihood; the
        squared loss for ``solver="gd-l2"``), for :func:`moelearn.plot.plot_trace`.
    n_features_in_ : int
    n_groups_ : int
        Number of groups of a fit with ``groups`` (absent otherwise).
    n_parameters_ : int
        Free parameters of the fitted model (for AIC and BIC).
    """

    _parameter_constraints: dict = {
        "n_experts": [Interval(Integral, 1, None, closed="left")],
        "link": [str, callable, Link],
        "family": [StrOptions(set(REGRESSION_FAMILIES)), Family],
        "gating_features": ["array-like", None],
        "expert_features": ["array-like", None],
        "shared_features": ["array-like", None],
        "offset": [Integral, str, None],
        "trials": [Integral, str, None],
        "solver": [StrOptions(SOLVERS.keys())],
        "fit_intercept": ["boolean"],
        "noise": [StrOptions({"shared", "expert"})],
        "prior_strength": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "init_params": [MoEParams, None],
        "refine": [StrOptions({"lbfgs", "em"})],
        "moment_method": [StrOptions({"tensor", "landscape"})],
        "compute_standard_errors": ["boolean"],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state", np.random.Generator],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_experts=2,
        link="linear",
        family="gaussian",
        gating_features=None,
        expert_features=None,
        offset=None,
        trials=None,
        shared_features=None,
        solver="moments",
        fit_intercept=True,
        noise="expert",
        prior_strength="auto",
        max_iter=1000,
        tol=1e-8,
        n_init="auto",
        init_params=None,
        refine="lbfgs",
        moment_method="tensor",
        compute_standard_errors=False,
        chunk_size=None,
        random_state=None,
        verbose=0,
    ):
        self.n_experts = n_experts
        self.link = link
        self.family = family
        self.gating_features = gating_features
        self.expert_features = expert_features
        self.offset = offset
        self.trials = trials
        self.shared_features = shared_features
        self.solver = solver
        self.fit_intercept = fit_intercept
        self.noise = noise
        self.prior_strength = prior_strength
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.init_params = init_params
        self.refine = refine
        self.moment_method = moment_method
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
            Shape (n_samples, n_features).  Memory maps and Dask arrays are
            read block by block (memory independent of n; Dask blocks are
            reduced on the active scheduler); a :class:`~moelearn.ChunkedDataset`
            is streamed once per pass.
        y : array-like of shape (n_samples,), or None with a ChunkedDataset
        sample_weight : array-like of shape (n_samples,) or None
            Non-negative weight of every row (finite, not all zero): every
            statistic and solver uses weighted sums, and a row of integer
            weight ``m`` counts as ``m`` copies of it (weight 0 removes it).
            With a memory map or a Dask array ``X`` it may be a memory map or
            a Dask array of the same length; a ChunkedDataset carries the
            weights in its chunks, ``(X, y, w)``, instead.  ``log_likelihood_``
            is then the weighted mean; ``standard_errors_`` (from
            ``compute_standard_errors``) and :meth:`summary` without data treat
            the weights as frequencies, as :meth:`standard_errors`,
            :meth:`bic` and :meth:`aic` do when given ``sample_weight``.
        groups : array-like of shape (n_samples,) or None
            A label per row (numbers or strings; for out-of-core ``X`` one per
            row in the order the rows are read, an array or a memory map or
            Dask array read by slices): every row of
            a group comes from the same expert (repeated measures, panels;
            flexmix's ``y ~ x | g``), so the likelihood is a mixture over
            groups and the posterior is one per group.  The columns the gate
            reads must be constant within a group, and so must
            ``sample_weight`` (a group's weight).  Pass the same labels to
            :meth:`log_density`, :meth:`predict_responsibilities`,
            :meth:`bic`, :meth:`aic`, :meth:`icl` and :meth:`standard_errors`
            to evaluate the grouped model; :meth:`summary` without data uses
            them.

        Returns
        -------
        self

        Warns
        -----
        ConvergenceWarning
            The final fit stopped at ``max_iter``; its subclass
            :class:`~moelearn.exceptions.CollapsedComponentWarning` when every
            start ended with a collapsed component.
        moelearn.exceptions.NotIdentifiedWarning
            The columns an expert or the gate reads are collinear (in-memory
            data): their coefficients are not identified.
        moelearn.exceptions.GateSeparationWarning
            The gate separates the training rows (in-memory data; see
            :func:`moelearn.gate_separation`).
        """
        self._validate_params()
        rescaled = self._fit_rescaled(X, y, sample_weight, groups)
        if rescaled is not None:
            return rescaled
        link = get_link(self.link)
        k = self.n_experts
        family = get_family(self.family, link).with_experts(k)
        rng = random_generator(self.random_state)
        raw = self._source(X, y, sample_weight)
        names = getattr(self, "feature_names_in_", None)
        gmask = resolve_roles(self.gating_features, raw.n_features, names, "gating_features")
        emask = resolve_roles(self.expert_features, raw.n_features, names, "expert_features")
        offset = self._known_column("offset", raw.n_features, names, gmask, emask)
        trials = self._known_column("trials", raw.n_features, names, gmask, emask)
        if offset is not None and offset == trials:
            raise ValueError("offset and trials name the same column")
        shared, shared_b = self._shared_columns(raw.n_features, names, offset, trials)
        emask = emask | shared  # shared coefficients are the experts'
        check_fit_size(raw.n_samples, k, int(emask.sum()) + self.fit_intercept, self.n_init)
        self.__dict__.pop("n_groups_", None)
        if groups is not None:
            groups = self._fit_groups(groups, raw, np.flatnonzero(gmask), raw.w)
        plain = isinstance(family, Gaussian) and gmask.all() and emask.all()
        special = offset is not None or trials is not None or shared.any() or shared_b
        if self.prior_strength != "auto" and self.prior_strength > 0 and not self._penalised():
            raise ValueError(
                f"prior_strength={self.prior_strength!r} applies to the likelihood solvers "
                f"{_LIKELIHOOD_SOLVERS}; solver={self.solver!r} does not maximise a "
                "likelihood: set prior_strength=0"
            )
        # the likelihood solvers and every warm start run on the engine; the papers'
        # pipelines and registered solvers take the standardised problem (moelearn.solvers)
        if (
            self.solver in _LIKELIHOOD_SOLVERS
            or self.init_params is not None
            or special
            or groups is not None
            or not plain
        ):
            return self._fit_family(
                raw, family, gmask, emask, rng, offset, trials, shared, groups, shared_b
            )
        solver = get_solver(self.solver)
        scaling = Scaling.fit(raw, link, fit_intercept=self.fit_intercept, scale_y=solver.scale_y)
        self._scaling = scaling
        # in memory the standardised data are materialised once: every pass reads them
        data = scaling.standardize(raw, n_experts=k)
        problem = Problem(
            data,
            link,
            k,
            rng,
            per_expert_noise=self.noise == "expert",
            fit_intercept=self.fit_intercept,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            refine=self.refine,
            moment_method=self.moment_method,
            noise_floor=scaling.noise_floor,
        )
        solution = solver(problem)
        fit = solution.fit
        self.init_method_ = solution.init_method
        self._final_step = solution.final_step
        self._collapsed = solution.collapsed
        params = scaling.from_standard(fit.params)
        self._store(params, fit, raw)
        return self

    def _shared_columns(self, n_features, names, offset, trials):
        """``(mask, intercept)``: the columns of ``shared_features`` (all False when unset),
        checked against the roles, and whether it lists ``"intercept"``."""
        if self.shared_features is None:
            return np.zeros(n_features, dtype=bool), False
        spec, intercept = split_intercept(self.shared_features, names, self.fit_intercept)
        if not len(spec):
            return np.zeros(n_features, dtype=bool), intercept
        mask = resolve_roles(spec, n_features, names, "shared_features")
        for role, column in (("offset", offset), ("trials", trials)):
            if column is not None and mask[column]:
                raise ValueError(
                    f"the {role} column is also listed in shared_features: it enters with a "
                    "known coefficient, not a shared one"
                )
        return mask, intercept

    def _known_column(self, role, n_features, names, gmask, emask):
        """The column index of ``offset`` or ``trials`` (None when unset).

        Such a column holds a known per-row quantity: it leaves the default
        (all-column) gate and expert masks, and may not be listed in a role.
        """
        spec = getattr(self, role)
        if spec is None:
            return None
        column = int(np.flatnonzero(resolve_roles(spec, n_features, names, role))[0])
        for name, given, mask in (
            ("gating_features", self.gating_features, gmask),
            ("expert_features", self.expert_features, emask),
        ):
            if given is None:
                mask[column] = False
            elif mask[column]:
                raise ValueError(f"the {role} column is also listed in {name}")
        return column

    def _fit_rescaled(self, X, y, sample_weight, groups=None):
        """Fit in-memory data of tiny magnitude on exactly rescaled copies (None if not tiny).

        Columns of ``X`` (and ``y``) whose largest ``|value|`` is below
        ``MIN_MAGNITUDE`` are multiplied by powers of two, which is exact; the
        fitted parameters are mapped back to the original units.  A tiny ``y``
        that no exact rescaling preserves (a link that is not positively
        homogeneous, counts) is refused, naming its scale.
        """
        if is_out_of_core(X) or y is None:
            return None
        try:
            with np.errstate(all="ignore"):
                Xa = check_array(X, dtype=np.float64, ensure_min_samples=2)
                ya = check_array(y, dtype=np.float64, ensure_2d=False).ravel()
        except (TypeError, ValueError):
            return None  # the ordinary path names the problem
        fx = tiny_scale_factors(Xa)
        fy = tiny_scale_factors(ya)
        if fx is None and fy is None:
            return None
        for spec in (self.offset, self.trials):
            if spec is None or fx is None:
                continue
            names = getattr(X, "columns", None)
            column = spec if isinstance(spec, Integral) else None
            if column is None and names is not None and spec in list(names):
                column = list(names).index(spec)
            if column is not None and 0 <= column < fx.size:
                # an offset enters with coefficient one, trials are counts: never rescaled
                fx[column] = 1.0
        if fx is not None and np.all(fx == 1.0):
            fx = None  # only an offset or trials column is tiny: nothing to rescale
        if fx is None and fy is None:
            return None
        try:
            family = get_family(self.family, self.link)
        except (TypeError, ValueError):
            return None  # the ordinary path names the problem
        fy = 1.0 if fy is None else float(fy)
        if fy != 1.0 and family.y_scaling is None:
            raise ValueError(
                f"y has values no larger than {np.abs(ya).max():.3g} in magnitude: below "
                f"{MIN_MAGNITUDE:g} its moments underflow, and with {family!r} experts no exact "
                "rescaling "
                "of y leaves the model unchanged; rescale y (e.g. divide it by its standard "
                "deviation)"
            )
        if self.compute_standard_errors:
            raise ValueError(
                "standard errors of data this small (largest |value| below "
                f"{MIN_MAGNITUDE:g}) underflow; rescale X and y, or set "
                "compute_standard_errors=False"
            )
        fx = np.ones(Xa.shape[1]) if fx is None else fx
        Xs = Xa * fx
        if hasattr(X, "columns"):  # keep the names (covariate roles may use them)
            import pandas as pd

            Xs = pd.DataFrame(Xs, columns=X.columns)
        init = self.init_params
        try:
            if init is not None:
                self.init_params = _rescale_params(init, fx, fy, family.y_scaling)
            self.fit(Xs, ya * fy, sample_weight, groups)
        finally:
            self.init_params = init
        history = self.history_
        with back_to_original_units():
            self._unscale(fx, fy, family, history)
        # the data as given, not the copies
        self._keep_training_data(X, y, sample_weight, groups)
        return self

    def _unscale(self, fx, fy, family, history):
        """The fit on ``(X * fx, y * fy)`` converted back to the units of ``X`` and ``y``."""
        self._set_fitted(
            _rescale_params(self.params_, 1.0 / fx, 1.0 / fy, family.y_scaling),
            self.n_iter_,
            self.converged_,
            self.log_likelihood_ + float(np.log(fy)),
            self.init_method_,
            self.log_likelihood_ - self.objective_,
        )
        self.history_ = history / fy**2 if self.solver == "gd-l2" else history + np.log(fy)
        sc = self._scaling
        self._scaling = Scaling(
            sc.x_mean / fx,
            fx[:, None] * sc.x_whiten,
            sc.x_unwhiten / fx[None, :],
            sc.y_mean / fy,
            sc.y_scale / fy,
            sc.noise_floor,
        )

    def _fit_family(
        self,
        raw,
        family,
        gmask,
        emask,
        rng,
        offset=None,
        trials=None,
        shared=None,
        groups=None,
        shared_intercept=False,
    ):
        """Every likelihood fit and every warm start: the engine of DESIGN §13."""
        # a warm start is refined whatever the solver
        baseline = (
            None if self.init_params is not None else _ENGINE_BASELINES.get(self.solver, False)
        )
        if baseline is False:
            raise ValueError(
                f"solver={self.solver!r} fits Gaussian experts on all columns only (the "
                "papers' pipelines assume them); "
                f"family={family.name!r} with these covariate roles takes solver='moments' "
                "(the start search), 'em' or 'gd-nll'"
            )
        if self.noise == "shared" and family.noise_parameter is None:
            raise ValueError(
                f"noise='shared' ties the experts' noise parameter, and family={family.name!r} "
                "has none; use noise='expert'"
            )
        init = None
        if self.init_params is not None:
            init = self.init_params
            if init.n_features != raw.n_features or init.n_experts != self.n_experts:
                raise ValueError(
                    f"init_params has {init.n_experts} experts and {init.n_features} features; "
                    f"expected {self.n_experts} and {raw.n_features}"
                )
            if init.has_roles and not (
                np.array_equal(init.gating_features, gmask)
                and np.array_equal(init.expert_features, emask)
            ):
                raise ValueError("init_params reads other columns than gating/expert_features")
            init = self._restrict(
                init, family, gmask, emask, offset, trials, shared, shared_intercept
            )
        check_moment_method(family, self.moment_method)  # before any pass over the data
        extra, unavailable = [], self._moment_unavailable(family, gmask, emask, raw, offset)
        if init is None and unavailable is None and baseline is None:
            try:
                extra = [self._family_moment_start(family, raw, rng)]
            except MomentMethodUnavailable as exc:
                unavailable = str(exc)
        fit = fit_family(
            raw,
            family,
            self.n_experts,
            gmask,
            emask,
            fit_intercept=self.fit_intercept,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            init_params=init,
            noise_floor=NOISE_FLOOR,
            random_state=rng,
            extra_starts=extra,
            offset_column=offset,
            trials_column=trials,
            shared_noise=self.noise == "shared",
            shared_columns=shared_columns(shared, shared_intercept),
            baseline=baseline,
            groups=groups,
            prior_strength=self._prior_strength(),
            refine=self.refine,
        )
        method = fit.init_method
        if init is None and unavailable is not None and baseline is None:
            method += f"; moment start unavailable: {unavailable}"
        self._scaling = Scaling.identity(raw.n_features)
        self._collapsed = fit.collapsed
        refinement = f"the {'EM' if self.refine == 'em' else 'EM / L-BFGS-B'} refinement"
        if init is not None:
            self._final_step = f"{refinement} of init_params"
        elif baseline is not None:
            self._final_step = f"the {self.solver} solver (best of its random starts)"
        elif self.n_init == 1 and extra:
            self._final_step = f"{refinement} of the moment start"
        else:
            self._final_step = f"{refinement} of the best start"
        self._set_fitted(
            fit.params, fit.n_iter, fit.converged, fit.log_likelihood, method, fit.penalty
        )
        self.history_ = np.asarray(fit.history, dtype=float)
        self._warn_fit()
        self._warn_degenerate(raw)
        if groups is not None:
            self.n_groups_ = groups.n_groups
            raw = raw.with_groups(groups)
        if self.compute_standard_errors:
            self.standard_errors_ = self._standard_errors(raw)
        return self

    def _moment_unavailable(self, family, gmask, emask, raw, offset=None):
        """Why the consistent moment start cannot seed this fit (None when it can).

        It applies (DESIGN §13) to the families whose ``moment_start`` hook
        names one (Gaussian, Student-t, Poisson, Gamma), on all columns, without
        an offset, with ``n_experts <= n_features``.
        """
        why = []
        if family.moment_start is None:
            why.append(f"family={family.name!r} (DESIGN §13)")
        if offset is not None:
            why.append("an offset")
        elif not (gmask.all() and emask.all()):
            why.append("separate gate and expert columns")
        if self.n_experts > raw.n_features:
            why.append(f"n_experts={self.n_experts} > n_features={raw.n_features}")
        return " and ".join(why) if why else None

    def _family_moment_start(self, family, raw, rng):
        """The moment start of DESIGN §13 for this family: ``(name, MoEParams)``."""
        if raw.kind == "memory":
            family.check_y(raw.y)  # a clear error before any transform of y
        try:
            return family_moment_start(
                family,
                raw,
                self.n_experts,
                rng,
                fit_intercept=self.fit_intercept,
                method=self.moment_method,
            )
        except MomentMethodUnavailable:
            raise
        except ValueError as exc:
            if raw.kind == "memory":
                raise
            # out of core, y is checked in the engine's first pass, which raises the
            # family's own message; the start just stands aside
            raise MomentMethodUnavailable(f"the start's pass failed ({exc})") from None

    def _restrict(
        self, p, family, gmask, emask, offset=None, trials=None, shared=None, shared_b=False
    ):
        """A full-column MoEParams restricted to the roles' columns (a warm start).

        Coefficients that the model shares start at the experts' mean.
        """
        if p.has_roles:
            experts, gating = p.experts, p.gating
        else:
            experts, gating = p.experts[:, emask], p.gating[:, gmask]
        if shared is not None and shared.any():
            cols = np.flatnonzero(shared[emask])
            experts = experts.copy()
            experts[..., cols] = experts[..., cols].mean(axis=0, keepdims=True)
        else:
            shared = None
        bias = p.expert_bias
        if shared_b:
            bias = np.full_like(bias, np.mean(bias))
        return MoEParams(
            experts,
            gating,
            bias,
            p.gating_bias,
            p.noise_std,
            p.link,
            family,
            p.df
            if p.df is not None
            else (np.full(p.n_experts, 10.0) if "nu" in family.dispersion_names else None),
            gmask,
            emask,
            offset,
            trials,
            shared,
            bool(shared_b),
        )

    def _source(self, X, y, sample_weight=None) -> Data:
        """Validate the input and wrap it in a :class:`~moelearn.data.Data` source."""
        if isinstance(X, ChunkedDataset) and sample_weight is not None:
            raise ValueError(
                "pass sample_weight=None with a ChunkedDataset: its chunks hold the weights "
                "as (X, y, w)"
            )
        if is_out_of_core(X):
            check_out_of_core(X, y, type(self).__name__)
            if y is not None:
                if not (is_dask_array(y) or isinstance(y, np.memmap)):
                    y = np.asarray(y, dtype=float).ravel()
            if sample_weight is not None:
                if is_dask_array(sample_weight) or isinstance(sample_weight, np.memmap):
                    # values are checked in the validation pass (_streamed_moments)
                    if sample_weight.shape != (X.shape[0],):
                        raise ValueError(
                            f"sample_weight must have shape ({X.shape[0]},), got "
                            f"{sample_weight.shape}"
                        )
                else:
                    sample_weight = check_sample_weight(sample_weight, X.shape[0])
            raw = Data(X, y, self.chunk_size, n_experts=self.n_experts, sample_weight=sample_weight)
            self.__dict__.pop("feature_names_in_", None)  # an unnamed source: no stale names
            if raw.n_samples < 2:
                raise ValueError(f"need at least 2 samples, got {raw.n_samples}")
            refuse_tiny(*head_rows(raw))
            self.n_features_in_ = raw.n_features
            self._keep_training_data(None, None, None)  # summary() then needs the data
            return raw
        # the data as given (no copy), for summary() and the checks of _warn_fit
        given = (X, y, sample_weight)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf while checking
            X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64, ensure_min_samples=2)
        check_target_and_magnitude(X, y)
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, X.shape[0])
        self._keep_training_data(*given)
        return Data(X, y, self.chunk_size, n_experts=self.n_experts, sample_weight=sample_weight)

    def _store(self, params, fit, raw):
        self._set_fitted(
            params, fit.n_iter, fit.converged, mean_log_likelihood(params, raw), self.init_method_
        )
        self.history_ = np.asarray(fit.history, dtype=float)
        self._warn_fit()
        self._warn_degenerate(raw)
        if self.compute_standard_errors:
            self.standard_errors_ = self._standard_errors(raw)

    def _warn_degenerate(self, raw):
        """Warn when an expert's predictions on the training inputs leave the range of y."""
        why = prediction_range_problem(self.params_, raw)
        if why is not None:
            warnings.warn(why, DegenerateFitWarning, stacklevel=4)

    def _warn_fit(self):
        if not self.converged_:
            warnings.warn(
                f"{self._final_step} stopped after {self.n_iter_} iterations without "
                f"converging (max_iter={self.max_iter}); increase max_iter",
                ConvergenceWarning,
                stacklevel=4,
            )
        if self._collapsed:
            warnings.warn(
                "every start ended with a collapsed component (one explaining fewer samples "
                "than its expert has coefficients, or with its noise at the floor "
                f"{NOISE_FLOOR:g} * std(y)); the fit is kept, but fewer experts may suit these "
                "data better",
                CollapsedComponentWarning,
                stacklevel=5,
            )
        for message, category in self._identification_problems():
            warnings.warn(message, category, stacklevel=5)

    def _identification_problems(self):
        """``(message, warning class)`` for collinear columns and a separated gate (in memory)."""
        X, y, w = self._training_arrays()
        if X is None:
            return []
        p = self.params_
        problems = []
        names = getattr(self, "feature_names_in_", None)
        masks = [("experts", p.expert_features if p.has_roles else None)]
        if self.n_experts > 1:
            masks.append(("gate", p.gating_features if p.has_roles else None))
        readers = {}  # collinear columns -> who reads them
        for who, mask in masks:
            columns = np.arange(X.shape[1]) if mask is None else np.flatnonzero(mask)
            bad = collinear_columns(X, columns, self.fit_intercept, w)
            if bad:
                readers.setdefault(tuple(bad), []).append(who)
        for bad, who in readers.items():
            shown = [repr(str(names[j])) if names is not None else f"x{j}" for j in bad]
            label = ", ".join(shown if len(shown) <= 8 else [*shown[:6], "..."])
            label += "" if len(shown) <= 8 else f" ({len(shown)} columns)"
            problems.append(
                (
                    f"the columns {label} that the {' and the '.join(who)} read are collinear"
                    + (" (with the intercept)" if self.fit_intercept else "")
                    + ": their coefficients are not identified and summary() reports their "
                    "standard errors as not available; drop a column",
                    NotIdentifiedWarning,
                )
            )
        if self.n_experts > 1 and gate_separation(p, X, y, sample_weight=w).separated:
            held = (
                "the likelihood alone would send the gate's coefficients to infinity, and "
                "the prior holds them finite: their size reflects the prior, not the data"
                if self._prior_strength() > 0
                else "the likelihood's supremum lies at infinity, and the gate's coefficients "
                "and standard errors are not identified"
            )
            problems.append(
                (
                    "the fitted gate separates the training rows (moelearn.gate_separation): "
                    f"a sharper gate fits as well; {held}; fewer experts or fewer gate "
                    "features may suit these data better",
                    GateSeparationWarning,
                )
            )
        return problems

    def _per_expert_noise(self):
        return self.noise == "expert"

    # -------------------------------------------------------------- predict
    def predict(self, X: ArrayLike) -> np.ndarray:
        """Mixture mean ``E[y | x]``, shape (n_samples,)."""
        X = self._check_X(X)
        return self.params_.mean(X)

    def predict_experts(self, X: ArrayLike) -> np.ndarray:
        """Each expert's prediction ``g(<a_i, x> + b_i)``, shape (n_samples, n_experts)."""
        X = self._check_X(X)
        return self.params_.expert_means(X)

    def _response(self, y, n_samples):
        y = np.asarray(y, dtype=float)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.shape[0] != n_samples:
            raise ValueError(f"y must have shape ({n_samples},), got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values")
        return y

    def sample(
        self,
        X: ArrayLike,
        random_state: int | np.random.Generator | np.random.RandomState | None = None,
        return_labels: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw ``y ~ p(y | x)`` for each row of ``X`` (and the answering expert)."""
        X = self._check_X(X)
        _, y, z = sample_given_x(self.params_, X, random_generator(random_state))
        return (y, z) if return_labels else y

    # ------------------------------------------------ predictive distribution
    def predict_std(self, X: ArrayLike) -> np.ndarray:
        """Standard deviation of ``y | x`` under the fitted mixture, shape (n_samples,)."""
        X = self._check_X(X)
        return predictive.predict_std(self.params_, X)

    def predict_quantiles(self, X: ArrayLike, q: float | ArrayLike) -> np.ndarray:
        """Quantiles of ``y | x`` from the mixture CDF.

        ``q`` is a probability or a 1-D array of them; returns shape
        (n_samples,) or (n_samples, len(q)).
        """
        X = self._check_X(X)
        return predictive.predict_quantiles(self.params_, X, q)

    def predict_interval(self, X: ArrayLike, alpha: float = 0.1) -> np.ndarray:
        """Equal-tailed ``1 - alpha`` predictive interval of ``y | x``, shape (n_samples, 2)."""
        X = self._check_X(X)
        return predictive.predict_interval(self.params_, X, alpha)

    def sample_y(
        self,
        X: ArrayLike,
        n_samples: int = 1,
        random_state: int | np.random.Generator | np.random.RandomState | None = None,
    ) -> np.ndarray:
        """``n_samples`` independent draws of ``y | x`` per row, shape (n_rows, n_samples)."""
        X = self._check_X(X)
        return predictive.sample_y(self.params_, X, n_samples, random_state)

    def predict_expert(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Most probable expert given ``(x, y)``, shape (n_samples,)."""
        X = self._check_X(X)
        return predictive.predict_expert(self.params_, X, y)

    def _n_parameters(self):
        return self.params_.n_parameters(self.fit_intercept)

    # ------------------------------------------------------------ records
    def _to_record(self):
        """The fitted model as ``(meta, arrays)`` for :mod:`moelearn.persistence`."""
        check_is_fitted(self)
        p = self.params_
        link = get_link(p.link)
        if not link.builtin:
            raise ValueError(
                f"cannot save a model with the unregistered link {link.name!r}: register it "
                "with moelearn.register_link so that it can be restored by name"
            )
        family_args = family_config(p.family_object)
        if family_args is None:
            raise ValueError(
                f"cannot save a model fitted with the family {p.family_object!r}: it is not "
                f"one of moelearn's families ({available_families()}), which a file restores "
                "by name"
            )
        scaling = self._scaling
        meta = {
            "link": link.name,
            "family": p.family_object.name,
            "n_experts": int(self.n_experts),
            "n_features": int(self.n_features_in_),
            "params": {
                key: value for key, value in self.get_params().items() if key not in _UNSAVED_PARAMS
            },
            "random_state": self.random_state if isinstance(self.random_state, int) else None,
            "fitted": {
                "n_iter_": self.n_iter_,
                "converged_": self.converged_,
                "log_likelihood_": self.log_likelihood_,
                "objective_": self.objective_,
                "init_method_": self.init_method_,
                "y_mean": scaling.y_mean,
                "y_scale": scaling.y_scale,
            },
        }
        if family_args:
            meta["family_args"] = family_args
        if p.df is not None:
            meta["df"] = [float(v) for v in p.df]
        if p.has_roles:
            meta["gating_features"] = [bool(v) for v in p.gating_features]
            meta["expert_features"] = [bool(v) for v in p.expert_features]
        if p.offset_feature is not None:
            meta["offset_feature"] = int(p.offset_feature)
        if p.trials_feature is not None:
            meta["trials_feature"] = int(p.trials_feature)
        if p.shared_features is not None:
            meta["shared_features"] = [bool(v) for v in p.shared_features]
        if p.shared_intercept:
            meta["shared_intercept"] = True
        names_to_record(self, meta)
        arrays = {
            "experts": p.experts,
            "gating": p.gating,
            "expert_bias": p.expert_bias,
            "gating_bias": p.gating_bias,
            "noise_std": np.zeros(0)
            if p.noise_std is None
            else np.atleast_1d(np.asarray(p.noise_std, dtype=float)),
            "x_mean": scaling.x_mean,
            "x_whiten": scaling.x_whiten,
            "x_unwhiten": scaling.x_unwhiten,
        }
        return meta, arrays

    @classmethod
    def _from_record(cls, meta, arrays):
        """The fitted model of a record written by :meth:`_to_record` (format 1 or 2).

        Raises ``ValueError`` naming the first bad field (``KeyError`` or
        ``TypeError`` for missing or mistyped metadata).
        """
        missing = set(_RECORD_ARRAYS) - set(arrays)
        if missing:
            raise ValueError(f"missing entries {sorted(missing)}")
        try:
            k = int(meta["n_experts"])
            d = int(meta["n_features"])
            link = get_link(str(meta["link"]))
            params = dict(meta["params"])
            fitted = dict(meta["fitted"])
            family = str(meta.get("family", "gaussian"))
            family_args = meta.get("family_args", {})
            df = meta.get("df")
            df = None if df is None else np.asarray(df, dtype=float)
            masks = [meta.get("gating_features"), meta.get("expert_features")]
            shared = mask_from_record(meta, "shared_features", d)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad metadata ({exc})") from None
        if family not in available_families():
            raise ValueError(f"unknown family {family!r}")
        try:
            family = family_from_config(family, family_args, link)
        except ValueError as exc:
            raise ValueError(f"bad metadata ({exc})") from None
        if (masks[0] is None) != (masks[1] is None):
            raise ValueError(
                "gating_features and expert_features must both be present or both absent"
            )
        if masks[0] is not None:
            if not all(
                isinstance(m, list) and len(m) == d and all(isinstance(v, bool) for v in m)
                for m in masks
            ):
                raise ValueError(f"gating_features and expert_features must be {d} booleans each")
            masks = [np.asarray(m, dtype=bool) for m in masks]
        d_g = d if masks[0] is None else int(masks[0].sum())
        d_e = d if masks[1] is None else int(masks[1].sum())
        if not (1 <= k <= 10**4 and 1 <= d <= 10**6):
            raise ValueError(f"implausible sizes n_experts={k}, n_features={d}")
        names = names_from_record(meta, d)
        expected = {
            "experts": (k, d_e),
            "gating": (k, d_g),
            "expert_bias": (k,),
            "gating_bias": (k,),
            "x_mean": (d,),
            "x_whiten": (d, d),
            "x_unwhiten": (d, d),
        }
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}, expected {shape}")
        noise = arrays["noise_std"]
        if noise.shape not in ((0,), (1,), (k,)):
            raise ValueError(f"noise_std has shape {noise.shape}")
        for name in _RECORD_ARRAYS:
            if arrays[name].dtype.kind != "f" or not np.all(np.isfinite(arrays[name])):
                raise ValueError(f"{name} must hold finite floating-point numbers")

        p = MoEParams(
            arrays["experts"],
            arrays["gating"],
            arrays["expert_bias"],
            arrays["gating_bias"],
            None if noise.size == 0 else (float(noise[0]) if noise.shape == (1,) else noise),
            link.name,
            family,
            df,
            masks[0],
            masks[1],
            meta.get("offset_feature"),
            meta.get("trials_feature"),
            shared,
            meta.get("shared_intercept", False) is True,
        )
        known = cls().get_params()
        valid = {
            key: value
            for key, value in params.items()
            if key in known and key not in ("n_experts", "link", "noise", "family")
        }
        est = cls.from_params(
            p, random_state=meta.get("random_state"), noise=params.get("noise", "shared"), **valid
        )
        est._set_fitted(
            p,
            fitted["n_iter_"],
            fitted["converged_"],
            float(fitted["log_likelihood_"]),
            fitted["init_method_"],
            float(fitted["log_likelihood_"])
            - float(fitted.get("objective_", fitted["log_likelihood_"])),
        )
        est._scaling = Scaling(
            arrays["x_mean"].astype(float),
            arrays["x_whiten"].astype(float),
            arrays["x_unwhiten"].astype(float),
            float(fitted["y_mean"]),
            float(fitted["y_scale"]),
        )
        for key, value in names.items():
            setattr(est, key, value)
        return est

    @classmethod
    def from_params(cls, params: MoEParams, **kwargs: Any) -> MixtureOfExpertsRegressor:
        """A fitted estimator holding ``params`` (e.g. from a torch layer or a file).

        ``kwargs`` set other constructor parameters.  The noise layout
        (shared or per expert) follows ``params.noise_std``.
        """
        if not isinstance(params, MoEParams):
            raise TypeError(f"params must be a MoEParams, got {type(params).__name__}")
        kwargs.setdefault("noise", "shared" if np.ndim(params.noise_std) == 0 else "expert")
        if params.noise_std is None:
            kwargs["noise"] = "expert"
        # by name where the name builds this very family (so that a refit and a saved file
        # keep it); otherwise the object itself
        family = params.family_object
        named = family.name in REGRESSION_FAMILIES and family_config(family) == family_config(
            get_family(family.name)
        )
        kwargs.setdefault("family", family.name if named else family)
        if params.has_roles:
            kwargs.setdefault("gating_features", np.flatnonzero(params.gating_features).tolist())
            kwargs.setdefault("expert_features", np.flatnonzero(params.expert_features).tolist())
        if params.offset_feature is not None:
            kwargs.setdefault("offset", params.offset_feature)
        if params.trials_feature is not None:
            kwargs.setdefault("trials", params.trials_feature)
        spec = shared_features_spec(params.shared_features, params.shared_intercept)
        if spec is not None:
            kwargs.setdefault("shared_features", spec)
        est = cls(n_experts=params.n_experts, link=params.link, **kwargs)
        est._validate_params()
        est._scaling = Scaling.identity(params.n_features)
        est.n_features_in_ = params.n_features
        est._set_fitted(
            params, n_iter=0, converged=True, log_likelihood=float("nan"), init_method="from_params"
        )
        return est

    def _penalised(self) -> bool:
        """Whether the solver maximises a likelihood, which a prior can penalise."""
        return self.solver in _LIKELIHOOD_SOLVERS

    def _prior_strength(self) -> float:
        """``prior_strength`` as a number: ``"auto"`` is :data:`DEFAULT_PRIOR_STRENGTH` for
        the likelihood solvers and 0 for the others."""
        if self.prior_strength == "auto":
            return DEFAULT_PRIOR_STRENGTH if self._penalised() else 0.0
        return float(self.prior_strength)

    def _penalty_parts(self):
        return super()._penalty_parts() if self._penalised() else []

    def _slope_prior_text(self, lam) -> str:
        return (
            f"normal, precision {lam:g} on standardised expert slopes; Cauchy(0, 1.25) to the "
            f"power {lam:g} on the centred gate's"
        )

    def _set_fitted(self, params, n_iter, converged, log_likelihood, init_method, penalty=0.0):
        self.params_ = params
        self.experts_, self.gating_ = params.experts, params.gating
        self.expert_bias_, self.gating_bias_ = params.expert_bias, params.gating_bias
        self.noise_std_ = params.noise_std
        self.df_ = params.df
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        self.log_likelihood_ = float(log_likelihood)
        self.objective_ = float(log_likelihood) - float(penalty)
        self.init_method_ = str(init_method)
        self.standard_errors_ = None
        self.n_parameters_ = self._n_parameters()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        try:
            family = get_family(self.family, self.link)
        except (TypeError, ValueError):
            return tags
        tags.target_tags.positive_only = family.y_min >= 0
        return tags


def _rescale_params(p: MoEParams, fx, fy, y_scaling) -> MoEParams:
    """Parameters of the model of ``(x * fx, y * fy)`` from those of ``(x, y)``.

    Exact for powers of two; ``y`` is rescaled as the family's ``y_scaling``
    says: ``"multiply"`` (a homogeneous link: ``a, b, sigma`` times ``fy``) or
    ``"log"`` (a log link: ``b + log fy``); with ``fy = 1`` nothing changes.
    """
    g = np.ones(p.n_features, dtype=bool) if p.gating_features is None else p.gating_features
    e = np.ones(p.n_features, dtype=bool) if p.expert_features is None else p.expert_features
    gating = p.gating / fx[g]
    if y_scaling == "log":
        experts, bias, noise = p.experts / fx[e], p.expert_bias + np.log(fy), p.noise_std
    else:
        experts, bias = p.experts * fy / fx[e], p.expert_bias * fy
        noise = None if p.noise_std is None else p.noise_std * fy
    return dataclasses.replace(p, experts=experts, gating=gating, expert_bias=bias, noise_std=noise)
