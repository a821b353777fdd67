"""The solvers of Gaussian experts on all columns, on standardised data (DESIGN §7, §12).

Every solver has one signature, ``solver(problem: Problem) -> Solution``: it
reads standardised data (:mod:`moelearn.standardize`) and returns the fit in
standardised units, with the name of the start that won and of the final
step (for the :class:`~sklearn.exceptions.ConvergenceWarning` of the
estimator).  The registry :data:`SOLVERS` maps the names that
``MixtureOfExpertsRegressor(solver=...)`` accepts to them:

* ``"moments"``, ``"em"``, ``"gd-nll"``: the likelihood engine
  (:func:`moelearn.family_fit.fit_family`, DESIGN §13) on the problem's data:
  its start search with the consistent moment start among the candidates, or
  its joint EM and L-BFGS-B baselines from random starts.  The estimator runs
  these three through the engine on the data in original units, for every
  family (their entries here serve solvers that build on them);
* ``"landscape"``, ``"tensor"``: the papers' two-stage pipelines (experts
  from moments, then the gating; no refinement);
* ``"gd-l2"``: the squared-loss baseline from random starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._validation import SEARCH_ROWS
from .data import Data
from .exceptions import MomentMethodUnavailable
from .experts import recover_directions
from .families import get_family
from .family_fit import fit_family
from .links import Link
from .model import MoEParams
from .refine import FitResult, fit_squared_loss, maximize_likelihood, random_params

__all__ = [
    "SOLVERS",
    "Problem",
    "Solution",
    "available_solvers",
    "get_solver",
    "moment_fit",
    "register_solver",
]

# Rows on which a start is fitted (the lengths, intercepts, gating and noise of the
# moment start; the noise level of every start).
_INIT_SUBSAMPLE = 20_000
# L-BFGS-B iterations of the moment start's fit with its directions fixed: it only has
# to land in the basin, and the start search's EM goes on from it
MOMENT_START_ITER = 40


@dataclass(frozen=True)
class Problem:
    """What every solver reads: standardised data and the estimator's options.

    Attributes
    ----------
    data : Data
        The standardised samples (whitened ``x``; ``y`` centred and scaled
        for a linear link), in memory or out of core.
    link : Link
    n_experts : int
    rng : numpy.random.Generator
        Every random draw of the solver comes from it, in a fixed order.
    per_expert_noise : bool, default True
        One noise level per expert (False: one shared by all).
    fit_intercept : bool, default True
        Fit expert and gating intercepts.
    n_init : "auto" or int, default "auto"
        Starts (see :class:`~moelearn.MixtureOfExpertsRegressor`).
    max_iter : int, default 1000
    tol : float, default 1e-8
    refine : {"lbfgs", "em"}, default "lbfgs"
        Optimiser of the maximum-likelihood refinement.
    moment_method : {"tensor", "landscape"}, default "tensor"
        Expert recovery of the moment start.
    noise_floor : float, default 1e-3
        Lower bound of every noise level, in standardised units.
    """

    data: Data
    link: Link
    n_experts: int
    rng: np.random.Generator
    per_expert_noise: bool = True
    fit_intercept: bool = True
    n_init: int | str = "auto"
    max_iter: int = 1000
    tol: float = 1e-8
    refine: str = "lbfgs"
    moment_method: str = "tensor"
    noise_floor: float = 1e-3

    @property
    def free(self) -> set[str]:
        """Parameter groups of a full refinement (intercepts only when fitted)."""
        free = {"experts", "gating", "noise"}
        if self.fit_intercept:
            free |= {"expert_bias", "gating_bias"}
        return free

    @property
    def refine_name(self) -> str:
        """The refinement's optimiser as the warnings name it."""
        return "L-BFGS" if self.refine == "lbfgs" else "EM"


@dataclass
class Solution:
    """What a solver returns.

    Attributes
    ----------
    fit : FitResult
        The fit in standardised units.
    init_method : str
        The start that won (``init_method_`` of the estimator).
    final_step : str
        The step whose convergence the estimator reports, e.g. ``"the L-BFGS
        refinement of the best start (kmeans)"``.
    collapsed : bool, default False
        Every start ended with a collapsed component (DESIGN §12).
    """

    fit: FitResult
    init_method: str
    final_step: str
    collapsed: bool = False


#: The registry of the Gaussian solvers: name -> ``solver(problem) -> Solution``.
#: :func:`register_solver` adds to it; ``solver=`` of the estimator picks from it.
SOLVERS: dict[str, Callable[[Problem], Solution]] = {}


def register_solver(name: str, *, scale_y: bool = True):
    """Decorator adding ``solver(problem) -> Solution`` to :data:`SOLVERS` as ``name``.

    Parameters
    ----------
    name : str
    scale_y : bool, default True
        Whether the solver reads ``y`` standardised (False: ``x`` is
        whitened, ``y`` left in its units, as the papers' pipelines assume).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a solver name must be a non-empty string, got {name!r}")

    def decorate(fn):
        fn.scale_y = bool(scale_y)
        SOLVERS[name] = fn
        return fn

    return decorate


def available_solvers() -> tuple[str, ...]:
    """Names of the registered solvers, in registration order."""
    return tuple(SOLVERS)


def get_solver(name: str) -> Callable[[Problem], Solution]:
    """The solver registered as ``name``.

    Raises
    ------
    ValueError
        If no solver has that name.
    """
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown solver {name!r}; available: {available_solvers()}") from None


# --------------------------------------------------------------------------
# Pieces shared by the solvers
# --------------------------------------------------------------------------
def _subsample(problem: Problem, size=None) -> Data:
    """Data on at most ``size`` random rows (the whole data when smaller).

    The rows are drawn uniformly and keep their sample weights.
    """
    data = problem.data
    size = size or _INIT_SUBSAMPLE
    if data.n_samples <= size:
        if data.in_memory and data.transform is None:
            return data
        rows = np.arange(data.n_samples)
    else:
        rows = np.sort(problem.rng.choice(data.n_samples, size, replace=False))
    return _rows(problem, data, rows)


def _spaced_rows(problem: Problem, data: Data, size) -> Data:
    """``size`` evenly spaced rows of ``data`` (``data`` itself when not larger)."""
    if data.n_samples <= size:
        return data
    return _rows(problem, data, np.linspace(0, data.n_samples - 1, size).round().astype(np.intp))


def _rows(problem: Problem, data: Data, rows) -> Data:
    """In-memory data on the sorted positions ``rows`` of ``data``, with their weights."""
    Xs, ys, ws = data.weighted_rows(rows)
    if ws is not None and not np.any(ws > 0):
        ws = None  # every drawn row has weight 0: the rows alone still locate the starts
    return Data(Xs, ys, n_experts=problem.n_experts, sample_weight=ws)


def _noise_start(ys, k, per_expert, w=None):
    spread = np.std(ys) if w is None else np.sqrt(np.cov(ys, aweights=w, ddof=0))
    s = max(float(spread), 1e-12)
    return np.full(k, s) if per_expert else s


def _directions(problem: Problem, method: str):
    return recover_directions(problem.data, problem.n_experts, problem.link, method, problem.rng)


def _maximize(problem: Problem, start, **options) -> FitResult:
    """:func:`maximize_likelihood` with the problem's options, its warnings silenced."""
    kw = dict(
        free=problem.free,
        method=problem.refine,
        per_expert_noise=problem.per_expert_noise,
        max_iter=problem.max_iter,
        tol=problem.tol,
        noise_floor=problem.noise_floor,
    )
    kw.update(options)
    data = kw.pop("data", problem.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return maximize_likelihood(data, start, **kw)


# --------------------------------------------------------------------------
# The solvers
# --------------------------------------------------------------------------
def _moment_start(problem: Problem, sub: Data):
    """The consistent moment start ``(name, MoEParams)`` (standardised units).

    The expert directions from the moments; their lengths, the intercepts,
    the gating and the noise fitted with the directions fixed, on the
    subsample ``sub`` with a loose tolerance: this only has to land in the
    basin.

    Raises
    ------
    MomentMethodUnavailable
        When the moment method cannot run on these data.
    """
    link, k, rng = problem.link, problem.n_experts, problem.rng
    directions = _directions(problem, problem.moment_method)
    start = MoEParams(
        directions,
        0.01 * rng.standard_normal((k, problem.data.n_features)),
        noise_std=_noise_start(sub.y, k, problem.per_expert_noise, sub.w),
        link=link,
    )
    free = {"expert_scale", "gating", "noise"}
    if problem.fit_intercept:
        free |= {"expert_bias", "gating_bias"}
    # With a search, the start is screened on SEARCH_ROWS rows anyway: fit it on as
    # many (evenly spaced rows of the random subsample), not on all of ``sub``.
    on = sub if problem.n_init == 1 else _spaced_rows(problem, sub, SEARCH_ROWS)
    step = _maximize(
        problem,
        start,
        data=on,
        free=free,
        method="lbfgs",
        tol=max(problem.tol, 1e-6),
        max_iter=min(problem.max_iter, MOMENT_START_ITER),
    )
    return f"moments ({problem.moment_method})", step.params


def moment_start(problem: Problem):
    """The consistent moment start ``(name, MoEParams)`` in standardised units, its
    directions from the moments and the rest fitted with them fixed on a subsample:
    one candidate of a start search (the likelihood engine's, DESIGN §13).

    Raises
    ------
    MomentMethodUnavailable
        When the moment method cannot run on these data.
    """
    return _moment_start(problem, _subsample(problem))


def moment_fit(problem: Problem) -> Solution:
    """The moment start alone, refined by maximum likelihood on all the data.

    What ``solver="moments"`` with ``n_init=1`` returns, and the Gaussian fit
    behind the moment starts of other families (DESIGN §13).

    Raises
    ------
    MomentMethodUnavailable
        When the moment method cannot run on these data.
    """
    name, start = _moment_start(problem, _subsample(problem))
    return Solution(
        _maximize(problem, start), name, f"the {problem.refine_name} refinement of the moment start"
    )


def _on_engine(problem: Problem, baseline, name="moments") -> Solution:
    """The likelihood engine (:func:`moelearn.family_fit.fit_family`, DESIGN §13) on the
    problem's standardised data: the start search with the moment start among its
    candidates (``baseline=None``), or a baseline (``"em"``, ``"gd"``)."""
    k, d = problem.n_experts, problem.data.n_features
    family = get_family("gaussian", problem.link).with_experts(k)
    extra, unavailable = [], None
    if baseline is None:
        try:
            extra = [moment_start(problem)]
        except MomentMethodUnavailable as exc:
            unavailable = str(exc)
    every = np.ones(d, dtype=bool)
    fit = fit_family(
        problem.data,
        family,
        k,
        every,
        every,
        fit_intercept=problem.fit_intercept,
        n_init=problem.n_init,
        max_iter=problem.max_iter,
        tol=problem.tol,
        noise_floor=problem.noise_floor,
        random_state=problem.rng,
        extra_starts=extra,
        shared_noise=not problem.per_expert_noise,
        baseline=baseline,
        refine=problem.refine,
    )
    method = fit.init_method
    if unavailable is not None:
        method += f"; moment start unavailable: {unavailable}"
    p = fit.params
    result = FitResult(
        MoEParams(p.experts, p.gating, p.expert_bias, p.gating_bias, p.noise_std, problem.link),
        fit.log_likelihood,
        fit.n_iter,
        fit.converged,
        np.asarray(fit.history, dtype=float),
    )
    step = (
        f"the {problem.refine_name} refinement of the best start"
        if baseline is None
        else f"the {name} solver (best of its random starts)"
    )
    return Solution(result, method, step, fit.collapsed)


@register_solver("moments")
def solve_moments(problem: Problem) -> Solution:
    """The start search of the likelihood engine, the moment start among its candidates."""
    return _on_engine(problem, None)


def _paper(problem: Problem, method: str) -> Solution:
    """The papers' two-stage pipelines: experts from moments, then gating."""
    data, k, rng = problem.data, problem.n_experts, problem.rng
    d = data.n_features
    experts = _directions(problem, method)
    sub = _subsample(problem)
    start = MoEParams(
        experts,
        0.01 * rng.standard_normal((k, d)),
        noise_std=_noise_start(sub.y, k, problem.per_expert_noise, sub.w),
        link=problem.link,
    )
    free = {"gating", "noise"} | ({"gating_bias"} if problem.fit_intercept else set())
    gate = "lbfgs" if method == "landscape" else "em"
    final_step = (
        f"the gating fit ({'L-BFGS' if gate == 'lbfgs' else 'EM'}) of the {method} pipeline"
    )
    return Solution(_maximize(problem, start, free=free, method=gate), method, final_step)


@register_solver("landscape", scale_y=False)
def solve_landscape(problem: Problem) -> Solution:
    """The AISTATS 2020 pipeline: experts by the landscape loss, gating by L-BFGS."""
    return _paper(problem, "landscape")


@register_solver("tensor", scale_y=False)
def solve_tensor(problem: Problem) -> Solution:
    """The ICML 2019 pipeline: experts by tensor decomposition, gating by EM."""
    return _paper(problem, "tensor")


def _squared_loss_baseline(problem: Problem) -> Solution:
    """The best of ``n_init`` random starts (``"auto"``: 1), each fitted by gradient
    descent on the squared loss (the lowest loss wins)."""
    best = None
    for _ in range(1 if problem.n_init == "auto" else problem.n_init):
        init = random_params(
            problem.data.n_features,
            problem.n_experts,
            problem.link,
            1.0,
            problem.rng,
            problem.per_expert_noise,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = fit_squared_loss(
                problem.data,
                init,
                max_iter=problem.max_iter,
                tol=problem.tol,
                fit_intercept=problem.fit_intercept,
            )
        if best is None or fit.history[-1] < best.history[-1]:
            best = fit
    return Solution(best, "random", "the gd-l2 solver (best of its random starts)")


@register_solver("em")
def solve_em(problem: Problem) -> Solution:
    """Joint EM from random starts (a baseline), by the likelihood engine."""
    return _on_engine(problem, "em", "em")


@register_solver("gd-nll")
def solve_gd_nll(problem: Problem) -> Solution:
    """Joint gradient descent (L-BFGS-B) on the negative log-likelihood from random
    starts (a baseline), by the likelihood engine."""
    return _on_engine(problem, "gd", "gd-nll")


@register_solver("gd-l2")
def solve_gd_l2(problem: Problem) -> Solution:
    """Joint gradient descent on the squared loss from random starts."""
    return _squared_loss_baseline(problem)
