"""The consistent moment start for experts other than Gaussian (DESIGN §13).

Each function turns moment estimates into a start of the likelihood engine
(a :class:`~moelearn.model.MoEParams` of the family, in original units):

* :func:`count_moment_start` - Poisson experts (log link): the factorial
  transforms, whitening and the tensor power method of
  :func:`~moelearn.experts.recover_count_directions` on whitened inputs;
* :func:`gamma_from_lognormal` - Gamma experts (log link): ``log y`` is a
  linear expert with additive log-gamma noise, so the Gaussian moment start
  (and its Gaussian refinement) on ``(x, log y)`` converts to Gamma parameters;
* :func:`student_t_from_gaussian` - Student-t experts: the Gaussian start with
  the same noise variance;
* :func:`overdispersed_from_poisson` - negative-binomial experts: the count
  start, whose directions the Gamma frailty leaves consistent (DESIGN §13),
  with a moderate shape.

They hold under the theory regime of DESIGN §1 (Gaussian inputs, a gate
orthogonal to the experts, a common intercept and norm); elsewhere they are
one candidate among the start search's.  :func:`family_moment_start` picks the
one a family names in its :attr:`~moelearn.families.Family.moment_start` hook.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from ._validation import check_target_and_magnitude
from .data import ChunkedDataset, Data
from .exceptions import MomentMethodUnavailable
from .experts import recover_count_directions
from .links import get_link
from .model import MoEParams, random_generator
from .solvers import Problem, moment_fit, moment_start
from .standardize import Scaling

__all__ = [
    "check_moment_method",
    "count_moment_start",
    "family_moment_start",
    "gamma_from_lognormal",
    "gaussian_moment_fit",
    "log_response",
    "moment_methods",
    "overdispersed_from_poisson",
    "student_t_from_gaussian",
]


def _all_columns(d):
    return np.ones(d, dtype=bool)


def count_moment_start(raw: Data, n_experts: int, rng) -> MoEParams:
    """Poisson experts from the factorial moments of whitened inputs.

    The directions come from the order-3 count tensor (signs included: the
    order is odd); every expert gets the common norm ``tau`` and intercept
    ``b`` that the first two factorial moments give,
    ``E[(y)_2] / E[y]^2 = exp(tau^2)`` and ``E[y] = exp(b + tau^2 / 2)``
    (second-order statistics, far less noisy than the tensor's weights).  The
    gate starts flat.

    Parameters
    ----------
    raw : Data
        Counts in original units (all columns for gate and experts, no offset).
    n_experts : int
        At most ``raw.n_features``.
    rng : numpy.random.Generator

    Returns
    -------
    MoEParams
        ``family="poisson"``, in original units.

    Raises
    ------
    MomentMethodUnavailable
        When the moments cannot be formed (see :func:`recover_count_directions`).
    """
    scaling = Scaling.fit(raw, get_link("linear"), scale_y=False)
    info = recover_count_directions(
        scaling.standardize(raw, n_experts=n_experts), n_experts, rng, return_info=True
    )
    U = info.experts / np.linalg.norm(info.experts, axis=1, keepdims=True)
    m1, m2 = info.factorial_means[:2]
    # the overdispersion of the mixture bounds tau^2 from below by 0 (equality: one constant
    # rate); keep a small positive norm so that the directions matter
    tau2 = float(np.clip(np.log(m2 / m1**2), 0.01, 4.0))
    A = np.sqrt(tau2) * U @ scaling.x_whiten
    b = np.log(m1) - 0.5 * tau2 - A @ scaling.x_mean
    d = raw.n_features
    return MoEParams(
        A,
        np.zeros((n_experts, d)),
        b,
        np.zeros(n_experts),
        None,
        family="poisson",
        gating_features=_all_columns(d),
        expert_features=_all_columns(d),
    )


def log_response(raw: Data):
    """``(X, log y)`` of a data source, for a Gaussian fit (streams stay streams).

    Returns ``(X, y)`` to pass to an estimator's ``fit``: memory maps give an
    in-memory ``log y`` (one column), Dask arrays a lazy one, and a
    :class:`~moelearn.data.ChunkedDataset` a stream whose chunks carry ``log y``.
    """
    if raw.kind == "stream":
        source = raw.X

        def chunks():
            for chunk in source:
                yield (chunk[0], _log(np.asarray(chunk[1], dtype=float)), *chunk[2:])

        return ChunkedDataset(chunks), None
    return raw.X, _log(raw.y)


def _log(y):
    # a non-positive y gives NaN here, which the fit's validation reports; the mask
    # keeps a lazy Dask log (computed later, outside any errstate) from warning
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.where(y > 0, y, np.nan))


def _inverse_trigamma(v):
    """``alpha`` with ``psi'(alpha) = v`` (``psi'`` decreases from inf to 0)."""
    return optimize.brentq(
        lambda s: special.polygamma(1, np.exp(s)) - v, -30.0, 30.0, xtol=1e-12, rtol=1e-12
    )


def gamma_from_lognormal(p: MoEParams, shape_max=1e8) -> MoEParams:
    """Gaussian experts fitted to ``log y`` as Gamma experts with the log link.

    Under a Gamma expert ``log y = eta + log G`` with ``G ~ Gamma(alpha, 1/alpha)``:
    ``Var(log G) = psi'(alpha)`` and ``E[log G] = psi(alpha) - log(alpha)``.  Each
    expert's shape solves ``psi'(alpha_i) = sigma_i^2`` and its intercept drops
    ``E[log G]``; the slopes and the gate carry over.

    Parameters
    ----------
    p : MoEParams
        A Gaussian fit (linear link) of ``log y`` on all columns.
    shape_max : float, default 1e8
        Upper bound of the shape (the Gamma family's bound).

    Returns
    -------
    MoEParams
        ``family="gamma"``, ``noise_std = 1 / sqrt(shape)``.
    """
    sigma2 = np.maximum(p.noise_vector**2, special.polygamma(1, shape_max))
    log_shape = np.array([_inverse_trigamma(v) for v in sigma2])  # one root per expert
    shape = np.minimum(np.exp(log_shape), shape_max)
    offset = special.digamma(shape) - np.log(shape)
    d = p.n_features
    return MoEParams(
        p.experts,
        p.gating,
        p.expert_bias - offset,
        p.gating_bias,
        1.0 / np.sqrt(shape),
        family="gamma",
        gating_features=_all_columns(d),
        expert_features=_all_columns(d),
    )


def student_t_from_gaussian(p: MoEParams, df=10.0) -> MoEParams:
    """Gaussian experts as Student-t experts with the same noise variance at ``df``."""
    k, d = p.n_experts, p.n_features
    return MoEParams(
        p.experts,
        p.gating,
        p.expert_bias,
        p.gating_bias,
        p.noise_vector * np.sqrt((df - 2.0) / df),
        family="student-t",
        df=np.full(k, float(df)),
        gating_features=_all_columns(d),
        expert_features=_all_columns(d),
    )


def overdispersed_from_poisson(p: MoEParams, family, shape=10.0) -> MoEParams:
    """Poisson experts as experts of a count ``family`` with a dispersion (negative binomial).

    Every expert gets the shape ``shape`` (coefficient of variation
    ``1 / sqrt(shape)`` of the rate's Gamma frailty); the directions, norms and
    intercepts are the count start's.  Under a common shape ``theta`` the
    factorial moments are the Poisson ones times ``prod_{l<j} (1 + l / theta)``,
    which the normalised transforms cancel, so the directions stay consistent;
    the norm absorbs the frailty (``E[(y)_2] / E[y]^2 = (1 + 1/theta) exp(tau^2)``),
    which the likelihood then separates.
    """
    d = p.n_features
    return MoEParams(
        p.experts,
        p.gating,
        p.expert_bias,
        p.gating_bias,
        np.full(p.n_experts, 1.0 / np.sqrt(shape)),
        family=family,
        gating_features=_all_columns(d),
        expert_features=_all_columns(d),
    )


def gaussian_moment_fit(
    X,
    y,
    sample_weight,
    n_experts,
    rng,
    *,
    fit_intercept=True,
    chunk_size=None,
    max_iter=200,
    link="linear",
    refine=True,
    moment_method="tensor",
) -> MoEParams:
    """The Gaussian moment start refined as a Gaussian mixture, in original units.

    The tensor directions are consistent for Student-t noise with ``nu > 6``
    and for the log-gamma noise of ``log y`` under Gamma experts (DESIGN §13),
    so this fit seeds both; with ``refine=False`` it is the start alone (the
    directions fixed, the rest fitted on a subsample), a candidate of the
    likelihood engine's search for Gaussian experts with the ``link``.
    ``moment_method`` recovers the directions (:data:`MOMENT_METHODS`).
    ``X``, ``y`` and ``sample_weight`` are arrays,
    memory maps, Dask arrays or a :class:`~moelearn.data.ChunkedDataset` (then
    ``y`` is None); the random draws come from a generator seeded by one draw
    of ``rng``.

    Raises
    ------
    MomentMethodUnavailable
        When the moment method cannot run on these data.
    """
    seed = int(rng.integers(2**31 - 1))
    raw = Data(X, y, chunk_size, n_experts=n_experts, sample_weight=sample_weight)
    if raw.kind == "memory":
        check_target_and_magnitude(np.asarray(X), np.asarray(y))
    link = get_link(link)
    scaling = Scaling.fit(raw, link, fit_intercept=fit_intercept, scale_y=True)
    problem = Problem(
        scaling.standardize(raw, n_experts=n_experts),
        link,
        n_experts,
        random_generator(seed),
        fit_intercept=fit_intercept,
        n_init=1 if refine else "auto",
        max_iter=max_iter,
        noise_floor=scaling.noise_floor,
        moment_method=moment_method,
    )
    if not refine:
        return scaling.from_standard(moment_start(problem)[1])
    return scaling.from_standard(moment_fit(problem).fit.params)


#: The direction recoveries each kind of moment start takes (``moment_method``): the
#: Gaussian start's tensor or landscape method (DESIGN §4-§5), which the starts built on
#: it share; the count start's order-3 tensor alone.
MOMENT_METHODS = {
    "gaussian": ("tensor", "landscape"),
    "gaussian-scale": ("tensor", "landscape"),
    "log-gaussian": ("tensor", "landscape"),
    "count": ("tensor",),
}


def moment_methods(family) -> tuple[str, ...]:
    """The ``moment_method`` values ``family``'s moment start takes (none without one)."""
    return MOMENT_METHODS.get(family.moment_start, ())


def check_moment_method(family, method) -> None:
    """Raise a ``ValueError`` naming the family when its moment start does not take ``method``."""
    methods = moment_methods(family)
    if methods and method not in methods:
        raise ValueError(
            f"moment_method={method!r}: the moment start of family={family.name!r} takes "
            f"{' or '.join(repr(m) for m in methods)}"
        )


def family_moment_start(family, raw: Data, n_experts, rng, *, fit_intercept=True, method="tensor"):
    """The consistent moment start that ``family.moment_start`` names: ``(name, MoEParams)``.

    ``method`` recovers the expert directions (:func:`moment_methods`).

    * ``"count"``: :func:`count_moment_start` (Poisson experts; with a
      dispersion, :func:`overdispersed_from_poisson`);
    * ``"log-gaussian"``: the Gaussian fit of ``log y``, as Gamma experts
      (:func:`gamma_from_lognormal`);
    * ``"gaussian-scale"``: the Gaussian fit, as Student-t experts
      (:func:`student_t_from_gaussian`);
    * ``"gaussian"``: the Gaussian moment start itself (DESIGN §4-§5, §12), not
      refined: Gaussian experts that the likelihood engine fits (grouped rows,
      shared coefficients).

    Raises
    ------
    MomentMethodUnavailable
        When the family has none of these (DESIGN §13) or the moments cannot be
        formed on these data.
    """
    kind = family.moment_start
    check_moment_method(family, method)
    w = raw.w if raw.kind != "stream" else None
    opts = dict(fit_intercept=fit_intercept, chunk_size=raw.chunk_size, moment_method=method)
    if kind == "count":
        p = count_moment_start(raw, n_experts, rng)
        if family.dispersion_names:
            p = overdispersed_from_poisson(p, family)
        return "moments (count, tensor)", p
    if kind == "log-gaussian":
        X, y = log_response(raw)
        p = gaussian_moment_fit(X, y, w, n_experts, rng, **opts)
        return f"moments (log y, {method})", gamma_from_lognormal(p, family.shape_max)
    if kind == "gaussian":
        p = gaussian_moment_fit(
            raw.X, raw.y, raw.w, n_experts, rng, link=family.link, refine=False, **opts
        )
        return f"moments ({method})", p
    if kind == "gaussian-scale":
        p = gaussian_moment_fit(raw.X, raw.y, raw.w, n_experts, rng, **opts)
        return f"moments (Gaussian, {method})", student_t_from_gaussian(p, df=10.0)
    raise MomentMethodUnavailable(f"no moment start for family={family.name!r} (DESIGN §13)")
