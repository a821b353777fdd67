"""Mergeable moment statistics (DESIGN §3, §4, §9).

Everything the moment methods need is a sum over samples, so the statistics
are held as sums plus a count: they consume ``(X, y)`` in chunks, merge by
addition (``a + b`` equals one pass over the concatenated data) and use
memory independent of ``n``.  With sample weights the sums are weighted and
the count is the weight total (still mergeable by addition).

Two passes are needed because the third/fourth-order transforms depend on
the noise level and the whitening depends on the second moment:

1. :class:`MomentAccumulator` - count, power sums of ``y``, ``sum y x`` and
   ``sum Q_2(y) x x^T`` (``Q_2`` does not depend on the noise, DESIGN §3).
2. :class:`ReducedMomentAccumulator` - given a whitening ``P`` (k x d) and the
   noise level, the k-dimensional statistics of ``z = P x`` from which every
   contraction of ``T_3`` and ``T_4`` with vectors ``P^T u`` follows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import permutations

import numpy as np

from ._chunks import default_chunk_size, iter_chunks
from .exceptions import MomentMethodUnavailable
from .links import get_link
from .transforms import factorial_transform, gaussian_link_moments, output_transform

__all__ = [
    "MomentAccumulator",
    "FactorialMomentAccumulator",
    "ReducedMomentAccumulator",
    "Whitening",
    "symmetrise",
    "iter_chunks",
    "default_chunk_size",
]


class _SumStatistics:
    """Base: named sums plus a count, merged by addition."""

    _fields: tuple[str, ...] = ()

    def __init__(self):
        self.n_samples = 0

    def _key(self):
        return ()

    def __add__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        if self._key() != other._key():
            raise ValueError("cannot merge statistics computed with different settings")
        out = self._empty_like()
        out.n_samples = self.n_samples + other.n_samples
        for name in self._fields:
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def merge(self, other):
        """In-place merge; returns ``self``."""
        merged = self + other
        self.__dict__.update(merged.__dict__)
        return self

    def _mean(self, name):
        if self.n_samples == 0:
            raise ValueError("no samples have been accumulated")
        return getattr(self, name) / self.n_samples

    def fit(self, X, y=None, chunk_size=None):
        """Accumulate every chunk of ``(X, y)`` (or an iterable of chunks if ``y`` is None)."""
        for Xc, yc in iter_chunks(X, y, chunk_size):
            self.update(Xc, yc)
        return self


class MomentAccumulator(_SumStatistics):
    """First-pass statistics: count, ``y`` powers, ``M_1`` and ``M_2`` sums.

    Parameters
    ----------
    link : str, Link or callable
    n_features : int
    """

    _fields = ("y_power_sums", "yx_sum", "q2_sum", "q2_xx_sum")

    def __init__(self, link, n_features):
        super().__init__()
        self.link = get_link(link)
        self.n_features = int(n_features)
        # Q_2 is independent of the noise level (DESIGN §3), so pass 1 needs no sigma.
        self.q2 = output_transform(self.link, 0.0, 2)
        d = self.n_features
        self.y_power_sums = np.zeros(5)
        self.yx_sum = np.zeros(d)
        self.q2_sum = 0.0
        self.q2_xx_sum = np.zeros((d, d))

    def _key(self):
        return (self.link.name, self.n_features)

    def _empty_like(self):
        return MomentAccumulator(self.link, self.n_features)

    def update(self, X, y, sample_weight=None):
        """Add one chunk (rows weighted by ``sample_weight``: the count becomes their sum)."""
        if X.shape[0] == 0:
            return self
        y2 = y * y
        if sample_weight is None:
            self.n_samples += X.shape[0]
            self.y_power_sums += [X.shape[0], y.sum(), y2.sum(), (y2 * y).sum(), (y2 * y2).sum()]
            self.yx_sum += y @ X
            w = self.q2(y)
        else:
            sw = sample_weight
            total = float(sw.sum())
            self.n_samples += total
            self.y_power_sums += [total, sw @ y, sw @ y2, sw @ (y2 * y), sw @ (y2 * y2)]
            self.yx_sum += (sw * y) @ X
            w = self.q2(y) * sw
        self.q2_sum += w.sum()
        self.q2_xx_sum += (X * w[:, None]).T @ X
        return self

    # ------------------------------------------------------------ estimates
    @property
    def y_moments(self) -> np.ndarray:
        """``mean(y^p)`` for p = 0..4."""
        return self._mean("y_power_sums")

    @property
    def first_moment(self) -> np.ndarray:
        """``M_1 = mean(y x)`` (= ``c_1 sum_i q_i a_i`` in the theory regime)."""
        return self._mean("yx_sum")

    @property
    def second_moment(self) -> np.ndarray:
        """``M_2 = mean(Q_2(y) (x x^T - I))``, symmetric (d, d)."""
        m2 = self._mean("q2_xx_sum") - self._mean("q2_sum") * np.eye(self.n_features)
        return 0.5 * (m2 + m2.T)

    def noise_std(self, floor=1e-3) -> float:
        """Noise estimate from ``E[y^2] = E_t[g(t)^2] + sigma^2`` (theory regime).

        Clipped below at ``floor`` times the standard deviation of ``y`` (and
        at an absolute 1e-12), since a variance estimate can come out negative.
        """
        mean_g2 = gaussian_link_moments(self.link)[2, 0]
        m = self.y_moments
        var = m[2] - mean_g2
        y_std = np.sqrt(max(m[2] - m[1] ** 2, 0.0))
        return float(max(np.sqrt(max(var, 0.0)), floor * y_std, 1e-12))

    def whitening(self, n_experts) -> Whitening:
        """Whitening from the top-``k`` eigenpairs of ``sign(c_2) M_2``."""
        return top_whitening(np.sign(self.q2.constant) * self.second_moment, n_experts)


class FactorialMomentAccumulator(_SumStatistics):
    """First-pass statistics of the count moment start (DESIGN §13, Poisson experts).

    Holds the sums of the falling factorials ``(y)_j`` (j = 0..3), of ``y x``
    and of ``(y)_j x x^T`` (j = 0..2).  ``Q_2`` is linear in ``(y)_0, (y)_1, (y)_2``
    with coefficients that need the means ``E[(y)_j]``, so one pass yields both
    the means and ``M_2 = mean(Q_2(y) (x x^T - I)) = sum_i q_i a_i a_i^T``.

    Parameters
    ----------
    n_features : int
    """

    _fields = ("factorial_sums", "yx_sum", "fxx_sums")

    def __init__(self, n_features):
        super().__init__()
        self.n_features = int(n_features)
        d = self.n_features
        self.factorial_sums = np.zeros(4)
        self.yx_sum = np.zeros(d)
        self.fxx_sums = np.zeros((3, d, d))

    def _key(self):
        return ("factorial", self.n_features)

    def _empty_like(self):
        return FactorialMomentAccumulator(self.n_features)

    def update(self, X, y, sample_weight=None):
        """Add one chunk (rows weighted by ``sample_weight``: the count becomes their sum)."""
        if X.shape[0] == 0:
            return self
        w = np.ones_like(y) if sample_weight is None else sample_weight
        f1 = y
        f2 = y * (y - 1.0)
        f3 = f2 * (y - 2.0)
        total = float(w.sum())
        self.n_samples += X.shape[0] if sample_weight is None else total
        self.factorial_sums += [total, w @ f1, w @ f2, w @ f3]
        self.yx_sum += (w * y) @ X
        for j, f in enumerate((w, w * f1, w * f2)):
            self.fxx_sums[j] += (X * f[:, None]).T @ X
        return self

    @property
    def factorial_means(self) -> np.ndarray:
        """``mean((y)_j)`` for j = 1..3."""
        return self._mean("factorial_sums")[1:]

    def transform(self, order):
        """The count transform ``Q_order`` normalised by these factorial means."""
        try:
            return factorial_transform(order, self.factorial_means)
        except ValueError as exc:
            raise MomentMethodUnavailable(
                f"the count moment start needs positive factorial moments of y: {exc}"
            ) from None

    @property
    def first_moment(self) -> np.ndarray:
        """``mean(y x)``."""
        return self._mean("yx_sum")

    @property
    def second_moment(self) -> np.ndarray:
        """``M_2 = mean(Q_2(y) (x x^T - I))``, symmetric (d, d)."""
        c = self.transform(2).coefficients
        means = self._mean("factorial_sums")[:3]
        xx = self._mean("fxx_sums")
        m2 = np.tensordot(c, xx, axes=1) - float(c @ means) * np.eye(self.n_features)
        return 0.5 * (m2 + m2.T)

    def whitening(self, n_experts) -> Whitening:
        """Whitening from the top-``k`` eigenpairs of ``M_2`` (``c_2 = 1``)."""
        return top_whitening(self.second_moment, n_experts)


def top_whitening(m2, n_experts) -> Whitening:
    """Whitening from the top-``k`` eigenpairs of ``m2`` (``M_2`` signed so that ``c_2 > 0``).

    Raises :class:`MomentMethodUnavailable` when fewer than ``k`` eigenvalues are positive.
    """
    k = int(n_experts)
    evals, evecs = np.linalg.eigh(m2)
    order = np.argsort(evals)[::-1][:k]
    evals, evecs = evals[order], evecs[:, order]
    if evals[-1] <= 1e-12 * max(evals[0], 1e-300):
        supported = int(np.sum(evals > 1e-12 * max(evals[0], 1e-300)))
        raise MomentMethodUnavailable(
            f"the second moment supports only {supported} of the {k} requested experts "
            "(its top eigenvalues are not positive): use fewer experts or more samples"
        )
    return Whitening(evecs, evals)


@dataclass(frozen=True, eq=False)
class Whitening:
    """``P = D^{-1/2} U^T`` from eigenpairs ``(U, D)`` of ``sign(c_2) M_2``.

    ``P a_i`` are orthogonal (scaled by ``sqrt(|c_2| q_i)``) in the theory
    regime; :meth:`unwhiten` maps whitened directions back to ``R^d``.
    """

    eigenvectors: np.ndarray  # (d, k)
    eigenvalues: np.ndarray  # (k,)

    @property
    def matrix(self) -> np.ndarray:
        return (self.eigenvectors / np.sqrt(self.eigenvalues)).T

    @property
    def gram(self) -> np.ndarray:
        """``G = P P^T`` (= ``D^{-1}``)."""
        return np.diag(1.0 / self.eigenvalues)

    def unwhiten(self, B) -> np.ndarray:
        """Rows ``u_i`` (k, k) -> unit rows ``a_i ∝ U D^{1/2} u_i`` (k, d)."""
        A = (np.atleast_2d(B) * np.sqrt(self.eigenvalues)) @ self.eigenvectors.T
        return A / np.linalg.norm(A, axis=1, keepdims=True)


class ReducedMomentAccumulator(_SumStatistics):
    """Second-pass statistics of the whitened inputs ``z = P x``.

    Holds the sums behind (DESIGN §4)
    ``T_3^w = R_3 - sym(G (x) r_1)`` with ``R_3 = mean(Q_3 z^3)``, ``r_1 = mean(Q_3 z)``, and
    ``T_4^w = R_4 - sum_6 (R_2 (x) G) + r_0 sum_3 (G (x) G)`` with ``Q_4`` weights.
    Memory is O(k^4).

    Parameters
    ----------
    link : str, Link or callable
    whitening : Whitening
    noise_std : float
    orders : tuple of int
        Which of the orders 3 and 4 to accumulate.
    """

    _fields = ("r3_sum", "r1_sum", "r4_sum", "r2_sum", "r0_sum")

    def __init__(self, link, whitening: Whitening, noise_std, orders=(3, 4), transforms=None):
        super().__init__()
        self.link = get_link(link)
        self.whitening = whitening
        self.noise_std = float(noise_std)
        self.orders = tuple(sorted(set(orders)))
        if not set(self.orders) <= {3, 4}:
            raise ValueError(f"orders must be a subset of (3, 4), got {orders}")
        if transforms is None:
            transforms = {m: output_transform(self.link, self.noise_std, m) for m in self.orders}
        elif set(transforms) != set(self.orders):
            raise ValueError(f"transforms must be given for the orders {self.orders}")
        self.transforms = dict(transforms)
        self._P = whitening.matrix
        # identify the whitening by value (a digest, stable across processes): copies
        # made on Dask workers must still merge
        self._whitening_key = hashlib.sha1(np.ascontiguousarray(self._P).tobytes()).hexdigest()
        k = self._P.shape[0]
        self.r3_sum = np.zeros((k * k, k))
        self.r1_sum = np.zeros(k)
        self.r4_sum = np.zeros((k * k, k * k))
        self.r2_sum = np.zeros((k, k))
        self.r0_sum = 0.0

    @property
    def n_experts(self) -> int:
        return self._P.shape[0]

    def _key(self):
        return (self.link.name, self._whitening_key, self.noise_std, self.orders, self._q_key)

    @property
    def _q_key(self):
        return tuple(tuple(self.transforms[m].coefficients.tolist()) for m in self.orders)

    def _empty_like(self):
        return ReducedMomentAccumulator(
            self.link, self.whitening, self.noise_std, self.orders, self.transforms
        )

    def update(self, X, y, sample_weight=None):
        """Add one chunk (rows weighted by ``sample_weight``: the count becomes their sum)."""
        n = X.shape[0]
        if n == 0:
            return self
        k = self.n_experts
        self.n_samples += n if sample_weight is None else float(sample_weight.sum())
        z = X @ self._P.T
        # z (x) z as an (n, k^2) matrix: the unfoldings below are single GEMMs.
        zz = (z[:, :, None] * z[:, None, :]).reshape(n, k * k)
        if 3 in self.orders:
            w3 = self.transforms[3](y)
            if sample_weight is not None:
                w3 = w3 * sample_weight
            self.r3_sum += (zz * w3[:, None]).T @ z
            self.r1_sum += w3 @ z
        if 4 in self.orders:
            w4 = self.transforms[4](y)
            if sample_weight is not None:
                w4 = w4 * sample_weight
            wzz = zz * w4[:, None]
            self.r4_sum += wzz.T @ zz
            self.r2_sum += wzz.sum(axis=0).reshape(k, k)
            self.r0_sum += w4.sum()
        return self

    def third_order(self) -> np.ndarray:
        """Whitened ``T_3^w`` as a (k, k, k) array (not sign-corrected)."""
        if 3 not in self.orders:
            raise ValueError("third-order statistics were not accumulated")
        k = self.n_experts
        G = self.whitening.gram
        r1 = self._mean("r1_sum")
        t = self._mean("r3_sum").reshape(k, k, k)
        t = t - (
            np.einsum("ab,c->abc", G, r1)
            + np.einsum("ac,b->abc", G, r1)
            + np.einsum("bc,a->abc", G, r1)
        )
        return symmetrise(t)

    def fourth_order(self) -> np.ndarray:
        """Whitened ``T_4^w`` as a (k, k, k, k) array (not sign-corrected)."""
        if 4 not in self.orders:
            raise ValueError("fourth-order statistics were not accumulated")
        k = self.n_experts
        G = self.whitening.gram
        R2 = self._mean("r2_sum")
        r0 = self._mean("r0_sum")
        t = self._mean("r4_sum").reshape(k, k, k, k)
        six = (
            np.einsum("ab,ce->abce", G, R2)
            + np.einsum("ac,be->abce", G, R2)
            + np.einsum("ae,bc->abce", G, R2)
            + np.einsum("bc,ae->abce", G, R2)
            + np.einsum("be,ac->abce", G, R2)
            + np.einsum("ce,ab->abce", G, R2)
        )
        three = (
            np.einsum("ab,ce->abce", G, G)
            + np.einsum("ac,be->abce", G, G)
            + np.einsum("ae,bc->abce", G, G)
        )
        return symmetrise(t - six + r0 * three)


def symmetrise(t: np.ndarray) -> np.ndarray:
    """Average a tensor over all permutations of its indices (removes round-off asymmetry)."""
    perms = list(permutations(range(t.ndim)))
    return sum(np.transpose(t, p) for p in perms) / len(perms)
