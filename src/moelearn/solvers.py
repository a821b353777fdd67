"""The solvers of Gaussian experts on all columns, on standardised data (DESIGN §7, §12).

Every solver has one signature, ``solver(problem: Problem) -> Solution``: it
reads standardised data (:mod:`moelearn.standardize`) and returns the fit in
standardised units, with the name of the start that won and of the final
step (for the :class:`~sklearn.exceptions.ConvergenceWarning` of the
estimator).  The registry :data:`SOLVERS` maps the names that
``MixtureOfExpertsRegressor(solver=...)`` accepts to them:

* ``"moments"``: the consistent moment start, screened with generated starts
  by :func:`moelearn.starts.search`, the best refined by maximum likelihood;
* ``"landscape"``, ``"tensor"``: the papers' two-stage pipelines (experts
  from moments, then the gating; no refinement);
* ``"em"``, ``"gd-nll"``, ``"gd-l2"``: the baselines from random starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .data import Data
from .diagnostics import inputs_look_gaussian
from .exceptions import MomentMethodUnavailable
from .experts import recover_directions
from .links import Link
from .model import MoEParams
from .refine import FitResult, fit_squared_loss, maximize_likelihood, random_params
from .starts import search

__all__ = [
    "SOLVERS",
    "Problem",
    "Solution",
    "available_solvers",
    "get_solver",
    "moment_fit",
    "refine_start",
    "register_solver",
]

# Rows on which a start is fitted (the lengths, intercepts, gating and noise of the
# moment start; the noise level of every start).
_INIT_SUBSAMPLE = 20_000
# Rows on which the start search screens and compares its candidates (DESIGN §12).
_SEARCH_ROWS = 2_500
# Generated candidate starts screened by n_init="auto" besides the moment start.
# L-BFGS-B iterations of the moment start's fit with its directions fixed: it only has
# to land in the basin, and the start search's EM goes on from it
MOMENT_START_ITER = 40
_AUTO_CANDIDATES = 10
_MAX_CANDIDATES = 150
# Screening work (rows x coefficients x experts) that n_init="auto" spends before it
# stops adding candidates beyond _AUTO_CANDIDATES (up to six times as many).
_AUTO_BUDGET = 2_000_000


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


def refine_start(problem: Problem, init: MoEParams) -> Solution:
    """Refine a given start (standardised units) by maximum likelihood: a warm start."""
    return Solution(
        _maximize(problem, init), "init_params", f"the {problem.refine_name} refinement"
    )


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
    # With a search, the start is screened on _SEARCH_ROWS rows anyway: fit it on as
    # many (evenly spaced rows of the random subsample), not on all of ``sub``.
    on = sub if problem.n_init == 1 else _spaced_rows(problem, sub, _SEARCH_ROWS)
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


@register_solver("moments")
def solve_moments(problem: Problem) -> Solution:
    """The moment start screened with generated starts; the best refined (DESIGN §12)."""
    data, link, k, rng = problem.data, problem.link, problem.n_experts, problem.rng
    d = data.n_features
    per_expert = problem.per_expert_noise
    sub = _subsample(problem)
    starts = []
    try:
        starts.append(_moment_start(problem, sub))
    except MomentMethodUnavailable as exc:
        unavailable = str(exc)
    else:
        unavailable = None
    if problem.n_init == 1 and starts:
        # the moment start alone, refined on all the data
        return Solution(
            _maximize(problem, starts[0][1]),
            starts[0][0],
            f"the {problem.refine_name} refinement of the moment start",
        )
    search_data = _subsample(problem, _SEARCH_ROWS)
    if problem.n_init == "auto":
        # a fixed budget of screening work: small problems get more candidates
        cost = search_data.n_samples * (d + 1) * k
        n_generated = int(np.clip(_AUTO_BUDGET // cost, _AUTO_CANDIDATES, _MAX_CANDIDATES))
        if not link.is_linear:
            # non-linear candidates are screened one by one, not batched
            n_generated = _AUTO_CANDIDATES
    else:
        n_generated = problem.n_init - len(starts)
    if not starts:
        n_generated = max(n_generated, 1)
    # the moment start is consistent on Gaussian inputs (the papers' theory regime)
    gaussian = bool(starts) and inputs_look_gaussian(search_data.X, search_data.w)
    found = search(
        data,
        search_data,
        k,
        link,
        starts=starts,
        n_candidates=n_generated,
        n_finalists=max(3, n_generated // 20),
        per_expert_noise=per_expert,
        free=problem.free,
        fit_intercept=problem.fit_intercept,
        refine=problem.refine,
        max_iter=problem.max_iter,
        tol=problem.tol,
        noise_floor=problem.noise_floor,
        trusted=starts[0][0] if gaussian else None,
        random_state=rng,
    )
    plural = "s" if found.n_candidates > 1 else ""
    init_method = f"{found.method} (best of {found.n_candidates} start{plural})"
    if unavailable is not None:
        init_method += f"; moment start unavailable: {unavailable}"
    return Solution(
        found.fit,
        init_method,
        f"the {problem.refine_name} refinement of the best start ({found.method})",
        found.collapsed,
    )


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


def _objective(fit, solver):
    if solver == "gd-l2":
        return -fit.history[-1]  # lower squared loss is better
    return fit.log_likelihood


def _baseline(problem: Problem, solver: str) -> Solution:
    """The best of ``n_init`` random starts (``"auto"``: 1), each fitted by ``solver``."""
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
        if solver == "gd-l2":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fit = fit_squared_loss(
                    problem.data,
                    init,
                    max_iter=problem.max_iter,
                    tol=problem.tol,
                    fit_intercept=problem.fit_intercept,
                )
        else:
            fit = _maximize(problem, init, method="em" if solver == "em" else "gd")
        if best is None or _objective(fit, solver) > _objective(best, solver):
            best = fit
    return Solution(best, "random", f"the {solver} solver (best of its random starts)")


@register_solver("em")
def solve_em(problem: Problem) -> Solution:
    """Joint EM from random starts (a baseline)."""
    return _baseline(problem, "em")


@register_solver("gd-nll")
def solve_gd_nll(problem: Problem) -> Solution:
    """Joint gradient descent on the negative log-likelihood from random starts."""
    return _baseline(problem, "gd-nll")


@register_solver("gd-l2")
def solve_gd_l2(problem: Problem) -> Solution:
    """Joint gradient descent on the squared loss from random starts."""
    return _baseline(problem, "gd-l2")
