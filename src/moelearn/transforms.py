"""Output transforms Q_m that make a link "valid" (DESIGN §3).

``Q_m(y) = y^m + sum_{j<m} beta_j y^j`` is chosen so that, under one expert
with ``t = <a, x> ~ N(0, 1)``, the conditional mean ``h_m(t) = E[Q_m(y) | t]``
has vanishing Hermite coefficients of orders ``1 .. m-1``.  Then
``E[Q_m(y) S_m(x)] = c_m sum_i q_i a_i^{(x)m}`` with ``c_m = E[h_m He_m]``.

Every entry of the linear system is a one-dimensional Gaussian integral of
``g(t)^p He_r(t)``.  Those integrals do not depend on the noise level (the
Gaussian noise enters through its known moments), so they are computed once
per link by adaptive quadrature, split at the link's kinks, and cached.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from math import comb, factorial, sqrt

import numpy as np
from numpy.polynomial import hermite_e
from numpy.typing import ArrayLike
from scipy import integrate

from .links import Link, get_link

__all__ = [
    "OutputTransform",
    "FactorialTransform",
    "output_transform",
    "factorial_transform",
    "gaussian_link_moments",
]

_MAX_ORDER = 4
_SQRT_2PI = sqrt(2.0 * np.pi)


def _gauss_expectation(f, kinks) -> np.ndarray:
    """E[f(t)] for t ~ N(0, 1) of a vector-valued ``f``: one adaptive quadrature
    (:func:`scipy.integrate.quad_vec`) of all its entries, split at ``kinks``."""
    points = sorted({float(k) for k in kinks} | {0.0})
    edges = [-np.inf, *points, np.inf]
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        with warnings.catch_warnings():
            # a warning of reaching round-off: that is the accuracy we want
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            val, _ = integrate.quad_vec(
                lambda t: f(t) * (np.exp(-0.5 * t * t) / _SQRT_2PI),
                lo,
                hi,
                epsabs=1e-13,
                epsrel=1e-11,
                limit=400,
            )
        total = total + val
    return total


@lru_cache(maxsize=64)
def gaussian_link_moments(link: Link, max_power: int = 2 * _MAX_ORDER) -> np.ndarray:
    """Table ``mu[p, r] = E[g(t)^p He_r(t)]`` for ``t ~ N(0, 1)``.

    ``p = 0 .. max_power`` and ``r = 0 .. 4``.  Powers above 4 are used only
    for scale estimates (``E[g^8]`` bounds the size of ``c_4``).  The whole table
    is one vector-valued quadrature (0.02 s; 40 scalar ones took 0.1 s, the same
    values to 1e-15 relative).
    """
    powers = np.arange(max_power + 1)[:, None]
    basis = [hermite_e.HermiteE.basis(r) for r in range(_MAX_ORDER + 1)]

    def integrand(t):
        g = float(link.func(np.array([t]))[0])
        he = np.array([b(t) for b in basis])
        return (g**powers * he[None, :]).ravel()

    table = _gauss_expectation(integrand, link.kinks).reshape(max_power + 1, _MAX_ORDER + 1)
    table[0] = 0.0
    table[0, 0] = 1.0  # E[He_r] = [r == 0]
    return table


def _phi_hermite(mu: np.ndarray, variance: float, j: int) -> np.ndarray:
    """Hermite coefficients ``E[phi_j(t) He_r(t)]``, r = 0..4, of ``phi_j = E[y^j | t]``.

    With ``y = g(t) + eps``, ``eps ~ N(0, variance)``:
    ``phi_j = sum_{l even} C(j, l) (l-1)!! variance^{l/2} g^{j-l}``.
    """
    out = np.zeros(mu.shape[1])
    for ell in range(0, j + 1, 2):
        double_fact = float(np.prod(np.arange(ell - 1, 0, -2))) if ell > 0 else 1.0
        out += comb(j, ell) * double_fact * variance ** (ell // 2) * mu[j - ell]
    return out


class OutputTransform:
    """The polynomial ``Q_m(y) = sum_j coefficients[j] y^j`` of DESIGN §3.

    Attributes
    ----------
    link : Link
    noise_std : float
    order : int
        ``m``, 1 to 4.
    coefficients : ndarray of shape (order + 1,)
        ``coefficients[j]`` multiplies ``y**j``; ``coefficients[order] == 1`` and
        ``coefficients[0] == 0`` (a constant has no effect on any moment used).
    constant : float
        ``c_m = E[h_m(t) He_m(t)]``.
    """

    def __init__(self, link, noise_std, order, coefficients, constant):
        self.link = link
        self.noise_std = float(noise_std)
        self.order = int(order)
        self.coefficients = np.asarray(coefficients, dtype=float)
        self.coefficients.setflags(write=False)
        self.constant = float(constant)

    @property
    def beta(self) -> np.ndarray:
        """The lower-order coefficients ``beta_{m,j}``, ``j = 0 .. m-1``."""
        return self.coefficients[:-1]

    def __call__(self, y):
        y = np.asarray(y, dtype=float)
        # Horner's rule: a handful of fused multiply-adds per sample.
        out = np.full_like(y, self.coefficients[-1])
        for coef in self.coefficients[-2::-1]:
            out *= y
            if coef != 0.0:
                out += coef
        return out

    def __repr__(self) -> str:
        return (
            f"OutputTransform(link={self.link.name!r}, order={self.order}, "
            f"noise_std={self.noise_std:g}, constant={self.constant:.6g})"
        )


@lru_cache(maxsize=256)
def _cached_transform(link: Link, noise_std: float, order: int) -> OutputTransform:
    mu = gaussian_link_moments(link)
    variance = noise_std**2
    phis = [_phi_hermite(mu, variance, j) for j in range(order + 1)]
    target = phis[order]
    beta = np.zeros(order + 1)
    beta[order] = 1.0
    if order > 1:
        # rows r = 1..m-1, unknowns beta_1..beta_{m-1}
        system = np.array([[phis[j][r] for j in range(1, order)] for r in range(1, order)])
        rhs = -np.array([target[r] for r in range(1, order)])
        solution, *_ = np.linalg.lstsq(system, rhs, rcond=1e-12)
        residual = system @ solution - rhs
        scale = np.abs(rhs).max() + np.abs(system).max() * np.abs(solution).max() + 1e-300
        if np.abs(residual).max() > 1e-7 * scale:
            raise ValueError(
                f"link {link.name!r} is not valid at order {order}: no output transform "
                "cancels the lower Hermite coefficients (the linear system has no solution)"
            )
        beta[1:order] = solution
    constant = sum(beta[j] * phis[j][order] for j in range(order + 1))
    # Cauchy-Schwarz bound |c_m| <= sqrt(E[h_m^2] m!); compare against the leading term.
    size = sqrt(max(mu[2 * order, 0], 1e-300) * factorial(order))
    if not np.isfinite(constant) or abs(constant) <= 1e-7 * size:
        raise ValueError(
            f"link {link.name!r} is not valid at order {order}: the moment constant "
            f"c_{order} = {constant:.3g} vanishes, so order-{order} moments carry no "
            "information about the experts"
        )
    return OutputTransform(link, noise_std, order, beta, constant)


def output_transform(link: str | Link, noise_std: float, order: int) -> OutputTransform:
    """The output transform ``Q_m`` for a link and noise level.

    Parameters
    ----------
    link : str, Link or callable
        The expert non-linearity.
    noise_std : float
        Standard deviation of the expert noise (>= 0).
    order : int
        ``m``, from 1 to 4.

    Returns
    -------
    OutputTransform
        Callable on ``y``; see its ``coefficients`` and ``constant``.

    Raises
    ------
    ValueError
        For an order outside 1..4, a negative or non-finite noise level, or a
        link that is not valid at this order.

    Examples
    --------
    >>> q4 = output_transform("linear", noise_std=0.0, order=4)
    >>> q4.coefficients.round(6).tolist(), round(q4.constant, 6)
    ([0.0, 0.0, -6.0, 0.0, 1.0], 24.0)
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise TypeError(f"order must be an integer, got {type(order).__name__}")
    if not 1 <= order <= _MAX_ORDER:
        raise ValueError(f"order must be between 1 and {_MAX_ORDER}, got {order}")
    try:
        noise_std = float(noise_std)
    except (TypeError, ValueError):
        raise TypeError(f"noise_std must be a number, got {noise_std!r}") from None
    if not np.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    return _cached_transform(get_link(link), round(noise_std, 12), int(order))


class FactorialTransform:
    """The count transform ``Q_m`` of Poisson experts with the log link (DESIGN §13).

    ``Q_m(y) = (1/m!) sum_{j=0}^{m} (-1)^(m-j) C(m, j) (y)_j / E[(y)_j]`` with the
    falling factorials ``(y)_j = y (y-1) ... (y-j+1)``: the ``m``-th finite
    difference of the normalised factorial moments.  Under one expert with
    ``y ~ Poisson(exp(t + b))``, ``t ~ N(0, tau^2)``, its conditional mean has
    vanishing Hermite coefficients (in ``t``) of orders ``0 .. m-1`` and
    ``c_m = 1``, so ``E[Q_m(y) S_m(x)] = sum_i q_i a_i^(x)m`` for experts with a
    common intercept and norm and a gate orthogonal to them.

    Attributes
    ----------
    order : int
        ``m``, 1 to 3.
    factorial_means : ndarray of shape (order,)
        ``E[(y)_j]`` for ``j = 1 .. m`` (sample means; positive).
    coefficients : ndarray of shape (order + 1,)
        ``Q_m(y) = sum_j coefficients[j] (y)_j`` (``(y)_0 = 1``).
    constant : float
        ``c_m = 1``.
    """

    constant = 1.0

    def __init__(self, order, factorial_means):
        self.order = int(order)
        self.factorial_means = np.asarray(factorial_means, dtype=float)[: self.order].copy()
        self.factorial_means.setflags(write=False)
        m = self.order
        norms = np.concatenate([[1.0], self.factorial_means])
        self.coefficients = np.array(
            [(-1) ** (m - j) * comb(m, j) / norms[j] / factorial(m) for j in range(m + 1)]
        )
        self.coefficients.setflags(write=False)

    def __call__(self, y):
        y = np.asarray(y, dtype=float)
        out = np.full_like(y, self.coefficients[0])
        falling = np.ones_like(y)
        for j in range(1, self.order + 1):
            falling *= y - (j - 1)
            out += self.coefficients[j] * falling
        return out

    def __repr__(self) -> str:
        return f"FactorialTransform(order={self.order}, constant=1)"


def factorial_transform(order: int, factorial_means: ArrayLike) -> FactorialTransform:
    """The count transform ``Q_m`` of DESIGN §13 for Poisson experts (log link).

    Parameters
    ----------
    order : int
        ``m``, from 1 to 3 (the variance of ``(y)_m`` grows like ``exp(m^2 tau^2)``,
        so order 4 is not offered).
    factorial_means : array-like of shape (>= order,)
        ``E[(y)_j]`` for ``j = 1 .. m``, e.g. the sample means of the falling
        factorials.

    Returns
    -------
    FactorialTransform

    Raises
    ------
    ValueError
        For an order outside 1..3 or factorial means that are not finite and positive.

    Examples
    --------
    >>> q2 = factorial_transform(2, [2.0, 5.0])
    >>> round(float(q2(3.0)), 12)  # (1/2) (6/5 - 2 * 3/2 + 1)
    -0.4
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise TypeError(f"order must be an integer, got {type(order).__name__}")
    if not 1 <= order <= 3:
        raise ValueError(f"order must be between 1 and 3, got {order}")
    means = np.asarray(factorial_means, dtype=float).ravel()
    if means.size < order or not np.all(np.isfinite(means[:order])) or np.any(means[:order] <= 0):
        raise ValueError(
            f"factorial_means must hold {order} finite positive values E[(y)_j], j = 1..{order}; "
            f"got {means.tolist()}"
        )
    return FactorialTransform(int(order), means)
