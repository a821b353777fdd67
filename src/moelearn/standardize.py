"""Standardisation of the solvers' problems (DESIGN §12): whitened ``x``, scaled ``y``.

The solvers of :mod:`moelearn.solvers` work on ``S (x - m)`` with
``S = Cov(x)^{-1/2}`` (the standard Gaussian that the moment methods assume)
and, for a linear link, on ``(y - mean(y)) / std(y)``.  :class:`Scaling`
holds that map, standardises the data, and carries parameters between the
original and the standardised units.  Out-of-core data are validated and
summarised in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import MAX_MAGNITUDE
from .data import Data, Transform, check_weight_values
from .model import MoEParams

__all__ = ["NOISE_FLOOR", "Scaling"]

# Noise levels are bounded below by this fraction of std(y): with one noise level per
# expert the likelihood is unbounded as an expert collapses on a few points.
NOISE_FLOOR = 1e-3


@dataclass(frozen=True, eq=False)
class Scaling:
    """The affine map between the original and the standardised units.

    ``x -> (x - x_mean) @ x_whiten`` and ``y -> (y - y_mean) / y_scale``;
    ``x_whiten`` is symmetric and ``x_unwhiten`` its inverse on the directions
    of non-zero variance.

    Attributes
    ----------
    x_mean : ndarray (d,)
    x_whiten, x_unwhiten : ndarray (d, d)
    y_mean, y_scale : float
    noise_floor : float
        Lower bound of the noise levels in standardised units,
        ``NOISE_FLOOR * std(y) / y_scale`` (meaningful after :meth:`fit`).
    """

    x_mean: np.ndarray
    x_whiten: np.ndarray
    x_unwhiten: np.ndarray
    y_mean: float = 0.0
    y_scale: float = 1.0
    noise_floor: float = NOISE_FLOOR

    @classmethod
    def identity(cls, n_features: int) -> Scaling:
        """The identity map on ``n_features`` columns (parameters already in original units)."""
        d = int(n_features)
        return cls(np.zeros(d), np.eye(d), np.eye(d))

    @classmethod
    def fit(cls, raw: Data, link, *, fit_intercept=True, scale_y=True) -> Scaling:
        """Whiten X (always) and standardise y (linear link only: other links fix its scale).

        Full whitening ``S = Cov(X)^{-1/2}``, rather than per-feature scaling,
        turns correlated Gaussian inputs into the standard Gaussian that the
        moment methods assume.  Directions of zero variance keep scale 1.

        Parameters
        ----------
        raw : Data
            The data in original units; out-of-core data are validated here
            (non-finite values, magnitudes, weights, a constant ``y``).
        link : Link
        fit_intercept : bool, default True
            Centre ``x`` and ``y`` (False: the model has no intercepts, so
            the second moments are taken about zero).
        scale_y : bool, default True
            Standardise ``y`` when the link is linear.

        Returns
        -------
        Scaling
        """
        if raw.in_memory and raw.w is None:
            X, y = raw.X, raw.y
            x_mean = X.mean(axis=0)
            Xc = X - x_mean if fit_intercept else X
            cov = Xc.T @ Xc / X.shape[0]
            y_mean, y_var = float(y.mean()), float(y.var())
        elif raw.in_memory:
            X, y, w = raw.X, raw.y, raw.w / raw.total_weight
            x_mean = w @ X
            Xc = X - x_mean if fit_intercept else X
            cov = (Xc * w[:, None]).T @ Xc
            y_mean = float(w @ y)
            y_var = float(w @ (y - y_mean) ** 2)
        else:
            x_mean, cov, y_mean, y_var = _streamed_moments(raw, fit_intercept)
        if not fit_intercept:
            x_mean = np.zeros_like(x_mean)
        evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
        ok = evals > 1e-10 * max(evals.max(), 1e-300)
        root = np.where(ok, np.sqrt(np.where(ok, evals, 1.0)), 1.0)
        if link.is_linear and scale_y:
            y_loc = y_mean if fit_intercept else 0.0
            y_scale = float(np.sqrt(y_var)) if fit_intercept else float(np.sqrt(y_var + y_mean**2))
        else:
            y_loc, y_scale = 0.0, 1.0
        return cls(
            x_mean,
            (evecs / root) @ evecs.T,
            (evecs * root) @ evecs.T,
            y_loc,
            y_scale,
            NOISE_FLOOR * max(np.sqrt(y_var) / y_scale, 1e-300),
        )

    @property
    def transform(self) -> Transform:
        """The map of the data, as :class:`~moelearn.data.Data` applies it block by block."""
        return Transform(self.x_mean, self.x_whiten, self.y_mean, self.y_scale)

    def standardize(self, raw: Data, n_experts=None) -> Data:
        """The standardised data: materialised once in memory, applied per block out of core."""
        if raw.in_memory:
            return Data(*self.transform(raw.X, raw.y), n_experts=n_experts, sample_weight=raw.w)
        return raw.with_transform(self.transform, n_experts=n_experts)

    def from_standard(self, p: MoEParams) -> MoEParams:
        """Parameters fitted on standardised data, in original units (gate centred)."""
        # <a, S (x - m)> = <S a, x> - <S a, m>, S symmetric
        sy, my = self.y_scale, self.y_mean
        A = p.experts @ self.x_whiten
        W = p.gating @ self.x_whiten
        b = sy * (p.expert_bias - A @ self.x_mean) + my
        c = p.gating_bias - W @ self.x_mean
        noise = sy * (p.noise_vector if np.ndim(p.noise_std) else float(p.noise_std))
        return MoEParams(sy * A, W - W.mean(0), b, c - c.mean(), noise, p.link)

    def to_standard(self, p: MoEParams, *, per_expert_noise=True) -> MoEParams:
        """Parameters in original units, in standardised units (a warm start).

        With ``per_expert_noise=False`` the noise levels are averaged into one.
        """
        sy, my = self.y_scale, self.y_mean
        A = p.experts / sy
        b = (p.expert_bias - my) / sy + A @ self.x_mean
        c = p.gating_bias + p.gating @ self.x_mean
        noise = p.noise_vector / sy
        if not per_expert_noise:
            noise = float(np.mean(noise))
        return MoEParams(A @ self.x_unwhiten, p.gating @ self.x_unwhiten, b, c, noise, p.link)


def _stats_block(X, y, shift, w=None):
    with np.errstate(all="ignore"):  # non-finite values are counted, then refused
        Xs = X - shift
        out = dict(
            bad_x=int(np.sum(~np.isfinite(X))),
            bad_y=int(np.sum(~np.isfinite(y))),
            big=int(np.sum(np.abs(X) > MAX_MAGNITUDE) + np.sum(np.abs(y) > MAX_MAGNITUDE)),
        )
        if w is None:
            out.update(n=X.shape[0], sx=Xs.sum(axis=0), sxx=Xs.T @ Xs, sy=float(y.sum()))
            out.update(syy=float(y @ y))
        else:
            bad_w = ~np.isfinite(w)
            w = np.where(bad_w, 0.0, w)
            out.update(bad_w=int(np.sum(bad_w)), neg_w=int(np.sum(w < 0)))
            out.update(n=float(w.sum()), sx=w @ Xs, sxx=(Xs * w[:, None]).T @ Xs)
            out.update(sy=float(w @ y), syy=float(w @ (y * y)))
    if out["bad_x"] or out["bad_y"] or out["big"]:
        # the data are refused after the pass: sums that stay finite, so that adding
        # the blocks' partial sums warns of nothing (inf - inf)
        for key in ("sx", "sxx", "sy", "syy"):
            out[key] = np.zeros_like(out[key]) if np.ndim(out[key]) else 0.0
    return out


def _streamed_moments(raw: Data, center):
    """Validate out-of-core data and return mean, covariance, mean and variance of y.

    One pass of shifted sums (the shift, from the first rows, keeps the
    covariance accurate when the mean is large next to the spread).

    Parameters
    ----------
    raw : Data
    center : bool
        Covariance about the mean (True) or second moment about zero.

    Returns
    -------
    x_mean : ndarray (d,)
    cov : ndarray (d, d)
    y_mean, y_var : float

    Raises
    ------
    ValueError
        Non-finite values, values whose 4th powers overflow, bad weights, or
        a constant ``y``.
    """
    head, _ = raw.rows(np.arange(min(raw.n_samples, 1000)))
    shift = head.mean(axis=0) if center else np.zeros(raw.n_features)
    if not np.all(np.isfinite(shift)):
        raise ValueError("X contains NaN or infinite values")
    st = raw.map_reduce(lambda Xb, yb, wb=None: _stats_block(Xb, yb, shift, wb))
    if raw.weighted:
        check_weight_values(st["neg_w"], st["n"], st["bad_w"])
        raw.record_total_weight(st["n"])  # the pass already summed the weights
    if st["bad_x"]:
        raise ValueError("X contains NaN or infinite values")
    if st["bad_y"]:
        raise ValueError("y contains NaN or infinite values")
    if st["big"]:
        raise ValueError(
            f"X or y has values larger than {MAX_MAGNITUDE:g}: moments up to the "
            "4th power would overflow; rescale the data"
        )
    n = st["n"]
    dx = st["sx"] / n
    x_mean = shift + dx
    cov = st["sxx"] / n - np.outer(dx, dx) if center else st["sxx"] / n
    y_mean = st["sy"] / n
    y_var = max(st["syy"] / n - y_mean**2, 0.0)
    if y_var <= 1e-24 * max(y_mean**2, 1e-300):
        raise ValueError("y is constant: a mixture of experts needs a target that varies")
    return x_mean, cov, y_mean, y_var
