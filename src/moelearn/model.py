"""The mixture-of-experts model (DESIGN §1): parameters, probabilities, sampling.

``p_i(x) = softmax_i(<w_i, x> + c_i)`` chooses expert ``i``, which answers
``y = g(<a_i, x> + b_i) + eps``, ``eps ~ N(0, sigma_i^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from ._logspace import logsumexp_k, softmax_k
from .families import Family, Gaussian, get_family
from .grouping import Groups, group_joint
from .links import Link, get_link

__all__ = [
    "MoEParams",
    "count_parameters",
    "make_moe",
    "random_generator",
    "sample",
    "sample_given_x",
]


def _as_matrix(name, value):
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_experts, n_features), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_vector(name, value, k, default=0.0):
    if value is None:
        return np.full(k, default)
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(k, float(arr))
    if arr.shape != (k,):
        raise ValueError(f"{name} must have shape ({k},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


@dataclass(eq=False)
class MoEParams:
    """Parameters of a k-expert mixture of experts.

    Parameters
    ----------
    experts : array of shape (k, d)
        Row ``i`` is the expert regressor ``a_i``.
    gating : array of shape (k, d)
        Row ``i`` is the gating vector ``w_i``.
    expert_bias : array of shape (k,), default zeros
    gating_bias : array of shape (k,), default zeros
    noise_std : float, array of shape (k,) or None, default 1.0
        The experts' dispersion: the noise standard deviation of a Gaussian
        expert, the scale of a Student-t expert, the coefficient of variation
        ``1 / sqrt(shape)`` of a Gamma expert or of the rate's Gamma frailty of
        a negative-binomial expert (shared or per expert, > 0); ignored (set
        to None) for Poisson and Bernoulli experts.
    link : str, Link or callable, default "linear"
        The expert non-linearity of Gaussian experts.
    family : str or Family, default "gaussian"
        Distribution of ``y`` given the expert (:mod:`moelearn.families`).
    df : array of shape (k,) or None
        Degrees of freedom of Student-t experts (required for them).
    gating_features, expert_features : boolean arrays of shape (n_features,) or None
        The columns of ``X`` that the gate and the experts read (None: all).
        ``gating`` then has shape (k, gating_features.sum()) and ``experts``
        (k, expert_features.sum()); an empty gate means constant mixing
        weights ``softmax(gating_bias)``.
    offset_feature : int or None
        A column of ``X`` added to every expert's linear predictor with
        coefficient one (the log-exposure of Poisson rates); it needs the
        covariate roles, which must not include it.
    trials_feature : int or None
        The column of ``X`` holding each row's number of trials: required by
        binomial experts (:attr:`~moelearn.families.Family.needs_trials`) and
        refused by every other family; it needs the covariate roles, which
        must not include it.
    shared_features : boolean array of shape (n_features,) or None
        Expert columns whose coefficient is the same for every expert (of each
        linear predictor; each expert keeps its own intercept).  The rows of
        ``experts`` must agree on them (to a relative 1e-9; they are then set
        to their mean).  They count once in :meth:`n_parameters`.
    shared_intercept : bool, default False
        Whether the experts share their intercept too (``expert_bias`` then
        has equal entries; it counts once).
    """

    experts: np.ndarray
    gating: np.ndarray
    expert_bias: np.ndarray | None = None
    gating_bias: np.ndarray | None = None
    noise_std: float | np.ndarray | None = 1.0
    link: str | Link = "linear"
    family: str | Family = "gaussian"
    df: np.ndarray | None = None
    gating_features: np.ndarray | None = None
    expert_features: np.ndarray | None = None
    offset_feature: int | None = None
    trials_feature: int | None = None
    shared_features: np.ndarray | None = None
    shared_intercept: bool = False

    def __post_init__(self):
        experts = np.asarray(self.experts, dtype=float)
        if experts.ndim == 3:
            # experts with several linear predictors each (multinomial: C - 1 log-odds)
            if not np.all(np.isfinite(experts)):
                raise ValueError("experts contains NaN or infinite values")
            self.experts = experts
        else:
            self.experts = _as_matrix("experts", self.experts)
        self.gating = _as_matrix("gating", self.gating)
        k, d = self.experts.shape[0], self.experts.shape[-1]
        roles = self.gating_features is not None or self.expert_features is not None
        for name in ("offset_feature", "trials_feature"):
            if getattr(self, name) is not None and not roles:
                raise ValueError(f"{name} needs gating_features and expert_features")
        if not roles:
            if k < 1 or d < 1:
                raise ValueError(f"experts must have at least one row and column, got {(k, d)}")
            if self.gating.shape != (k, d):
                raise ValueError(
                    f"gating must have the shape of experts {(k, d)}, got {self.gating.shape}"
                )
            # "all columns" is a full mask: one layout for every model
            self.gating_features = np.ones(d, dtype=bool)
            self.expert_features = np.ones(d, dtype=bool)
        self._set_roles()
        self._set_shared()
        q = self.n_predictors
        if q == 1:
            self.expert_bias = _as_vector("expert_bias", self.expert_bias, k)
        else:
            bias = np.zeros((k, q)) if self.expert_bias is None else self.expert_bias
            bias = np.asarray(bias, dtype=float)
            if bias.shape != (k, q) or not np.all(np.isfinite(bias)):
                raise ValueError(f"expert_bias must be finite with shape ({k}, {q})")
            self.expert_bias = bias
        self.gating_bias = _as_vector("gating_bias", self.gating_bias, k)
        self._set_shared_intercept()
        self._link = get_link(self.link)
        if isinstance(self.link, str):
            self.link = self._link.name
        if isinstance(self.family, Gaussian):
            self._family = self.family
            self._link = self.family.link
            self.link = self._link.name if self._link.builtin else self._link
            self.family = "gaussian"
        else:
            # a family bound to the number of experts (a zero-inflated one's point mass)
            self._family = get_family(self.family, self._link).with_experts(self.experts.shape[0])
            if isinstance(self.family, str):
                self.family = self._family.name
        if self._family.needs_trials != (self.trials_feature is not None):
            raise ValueError(
                f"family {self._family.name!r} needs trials_feature, the column of the trials"
                if self._family.needs_trials
                else f"trials_feature applies to binomial experts, not {self._family.name!r}"
            )
        if self._family.n_predictors != self.n_predictors:
            raise ValueError(
                f"family {self._family!r} has {self._family.n_predictors} linear predictors per "
                f"expert, but experts has shape {self.experts.shape}"
            )
        if self._family.dispersion_names:
            noise = np.asarray(1.0 if self.noise_std is None else self.noise_std, dtype=float)
            if noise.ndim == 0:
                noise = float(noise)
            elif noise.shape != (k,):
                raise ValueError(
                    f"noise_std must be a scalar or have shape ({k},), got {noise.shape}"
                )
            if not np.all(np.isfinite(noise)) or np.any(np.asarray(noise) <= 0):
                raise ValueError(f"noise_std must be finite and > 0, got {self.noise_std}")
            self.noise_std = noise
        else:
            self.noise_std = None
        if "nu" in self._family.dispersion_names:
            if self.df is None:
                raise ValueError("Student-t experts need df (degrees of freedom, one per expert)")
            self.df = _as_vector("df", self.df, k)
            if np.any(self.df <= 0):
                raise ValueError(f"df must be > 0, got {self.df}")
        else:
            self.df = None

    def _set_roles(self):
        k = self.experts.shape[0]
        masks = []
        for name, mask, coef in (
            ("gating_features", self.gating_features, self.gating),
            ("expert_features", self.expert_features, self.experts),
        ):
            if mask is not None:
                mask = np.asarray(mask)
                if mask.ndim != 1 or mask.dtype != bool:
                    raise ValueError(f"{name} must be a 1-D boolean mask over the columns of X")
                if (coef.shape[0], coef.shape[-1]) != (k, int(mask.sum())):
                    raise ValueError(
                        f"{name} selects {int(mask.sum())} columns but its coefficients have "
                        f"shape {coef.shape}; expected ({k}, {int(mask.sum())})"
                    )
            masks.append(mask)
        g, e = masks
        if g is None:
            g = np.ones(len(e), dtype=bool)
        if e is None:
            e = np.ones(len(g), dtype=bool)
        if len(g) != len(e):
            raise ValueError(
                f"gating_features and expert_features must have one entry per column of X, "
                f"got lengths {len(g)} and {len(e)}"
            )
        for name, mask, coef in (("gating", g, self.gating), ("experts", e, self.experts)):
            if (coef.shape[0], coef.shape[-1]) != (k, int(mask.sum())):
                raise ValueError(f"{name} must have shape ({k}, {int(mask.sum())})")
        self.gating_features, self.expert_features = g, e
        for name in ("offset_feature", "trials_feature"):
            j = getattr(self, name)
            if j is None:
                continue
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < len(g):
                raise ValueError(f"{name} must be a column index below {len(g)}, got {j}")
            if g[j] or e[j]:
                what = name.split("_")[0]
                raise ValueError(f"the {what} column cannot also be a gate or expert feature")
            setattr(self, name, int(j))
        if self.offset_feature is not None and self.offset_feature == self.trials_feature:
            raise ValueError("the offset and the trials cannot be one column")

    def _set_shared(self):
        mask = self.shared_features
        if mask is None:
            return
        mask = np.asarray(mask)
        e = self.expert_features
        if mask.shape != e.shape or mask.dtype != bool:
            raise ValueError(
                f"shared_features must be a 1-D boolean mask over the {len(e)} columns of X"
            )
        if np.any(mask & ~e):
            raise ValueError("shared_features must be expert features")
        if not mask.any():
            self.shared_features = None
            return
        cols = np.flatnonzero(mask[e])  # positions among the experts' coefficients
        shared = self.experts[..., cols]
        mean = shared.mean(axis=0, keepdims=True)
        if not np.allclose(shared, mean, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(mean).max())):
            raise ValueError(
                "the experts' coefficients of shared_features must be equal across the experts"
            )
        self.experts = self.experts.copy()
        self.experts[..., cols] = mean
        self.shared_features = mask.copy()

    def _set_shared_intercept(self):
        self.shared_intercept = bool(self.shared_intercept)
        if not self.shared_intercept:
            return
        bias = np.asarray(self.expert_bias, dtype=float)
        mean = bias.mean(axis=0, keepdims=True)
        if not np.allclose(bias, mean, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(mean).max())):
            raise ValueError("with shared_intercept the experts' intercepts must be equal")
        self.expert_bias = np.broadcast_to(mean, bias.shape).copy()

    @property
    def n_shared(self) -> int:
        """Coefficients every expert shares: :attr:`shared_features` and the intercept."""
        columns = 0 if self.shared_features is None else int(self.shared_features.sum())
        return columns + int(self.shared_intercept)

    # ------------------------------------------------------------------ shape
    @property
    def n_experts(self) -> int:
        return self.experts.shape[0]

    @property
    def n_predictors(self) -> int:
        """Linear predictors per expert (``experts`` of shape (k, q, d) has ``q``)."""
        return 1 if self.experts.ndim == 2 else self.experts.shape[1]

    @property
    def n_features(self) -> int:
        return len(self.expert_features)

    @property
    def has_roles(self) -> bool:
        """Whether the gate or the experts read a subset of the columns (not all of them)."""
        return not (self.gating_features.all() and self.expert_features.all())

    @property
    def link_function(self) -> Link:
        return self._link

    @property
    def family_object(self) -> Family:
        return self._family

    def family_at(self, X) -> Family:
        """The family bound to the rows of ``X`` (their trials, for binomial experts).

        Every hook of a family that :attr:`~moelearn.families.Family.needs_trials`
        runs on this copy; for the other families it is :attr:`family_object`.
        """
        if self.trials_feature is None:
            return self._family
        return self._family.at_rows(self._check_X(X)[:, self.trials_feature])

    @property
    def noise_vector(self) -> np.ndarray:
        """Dispersion (``noise_std``) per expert, shape (k,); NaN for families without one."""
        if self.noise_std is None:
            return np.full(self.n_experts, np.nan)
        return np.broadcast_to(np.asarray(self.noise_std, dtype=float), (self.n_experts,)).copy()

    def dispersion(self) -> np.ndarray:
        """The family's natural dispersion parameters, shape (k, m) (see :mod:`.families`)."""
        cols = []
        for name in self._family.dispersion_names:
            if name == "sigma":
                cols.append(self.noise_vector)
            elif name == "nu":
                cols.append(self.df)
            elif name == "shape":
                cols.append(1.0 / self.noise_vector**2)
        return np.stack(cols, axis=1) if cols else np.zeros((self.n_experts, 0))

    def n_parameters(self, fit_intercept: bool = True) -> int:
        """Free parameters of the model (for AIC, BIC and ICL): see :func:`count_parameters`.

        A scalar ``noise_std`` counts as one dispersion shared by the experts.
        """
        return count_parameters(
            self._family,
            self.n_experts,
            self.gating_features,
            self.expert_features,
            fit_intercept,
            shared_noise=self.noise_std is not None and np.ndim(self.noise_std) == 0,
            n_shared=self.n_shared,
        )

    def copy(self) -> MoEParams:
        return MoEParams(
            self.experts.copy(),
            self.gating.copy(),
            self.expert_bias.copy(),
            self.gating_bias.copy(),
            None
            if self.noise_std is None
            else (np.copy(self.noise_std) if np.ndim(self.noise_std) else float(self.noise_std)),
            self.link,
            self._family if not isinstance(self.family, str) else self.family,
            None if self.df is None else self.df.copy(),
            self.gating_features.copy(),
            self.expert_features.copy(),
            self.offset_feature,
            self.trials_feature,
            None if self.shared_features is None else self.shared_features.copy(),
            self.shared_intercept,
        )

    # ---------------------------------------------------------- probabilities
    def check_X(self, X: np.ndarray) -> np.ndarray:
        """``X`` as a float array of shape (n_samples, n_features); ``ValueError`` otherwise."""
        return self._check_X(X)

    def _check_X(self, X):
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n_samples, {self.n_features}), got {X.shape}")
        return X

    def _gate_X(self, X):
        return X if self.gating_features.all() else X[:, self.gating_features]

    def _expert_X(self, X):
        return X if self.expert_features.all() else X[:, self.expert_features]

    def gating_logits(self, X) -> np.ndarray:
        X = self._check_X(X)
        return self._gate_X(X) @ self.gating.T + self.gating_bias

    def _gating_k(self, X):
        # (k, n) layout: reductions over experts stay vectorised (see _logspace)
        return softmax_k(self.gating @ self._gate_X(X).T + self.gating_bias[:, None])

    def expert_predictors(self, X) -> np.ndarray:
        """Linear predictors ``<a_i, x> + b_i``, shape (n, k)."""
        X = self._check_X(X)
        if self.experts.ndim == 3:  # (n, k, q)
            eta = np.einsum("nd,kqd->nkq", self._expert_X(X), self.experts) + self.expert_bias
            if self.offset_feature is not None:
                eta = eta + X[:, self.offset_feature][:, None, None]
            return eta
        eta = self._expert_X(X) @ self.experts.T + self.expert_bias
        if self.offset_feature is not None:
            eta = eta + X[:, self.offset_feature][:, None]
        return eta

    def gating_log_proba(self, X) -> np.ndarray:
        """``log p_i(x)``, shape (n, k), by a stable log-softmax."""
        return self._gating_k(self._check_X(X))[0].T

    def gating_proba(self, X) -> np.ndarray:
        """Gating probabilities ``p_i(x)``, shape (n, k)."""
        return self._gating_k(self._check_X(X))[1].T

    def expert_means(self, X) -> np.ndarray:
        """Each expert's mean ``E[y | x, expert i]`` (``g(<a_i, x> + b_i)``), shape (n, k)."""
        return self.family_at(X).mean(self.expert_predictors(X), self.dispersion())

    def expert_variances(self, X) -> np.ndarray:
        """Each expert's variance ``Var[y | x, expert i]``, shape (n, k)."""
        return self.family_at(X).variance(self.expert_predictors(X), self.dispersion())

    def mean(self, X) -> np.ndarray:
        """Mixture mean ``E[y | x] = sum_i p_i(x) E[y | x, i]``, shape (n,)."""
        X = self._check_X(X)
        p = self._gating_k(X)[1]
        means = self.expert_means(X)
        if means.ndim == 3:  # class probabilities of each expert, (n, k, C)
            return np.einsum("kn,nkc->nc", p, means)
        return np.sum(p * means.T, axis=0)

    def class_log_proba(self, X: np.ndarray) -> np.ndarray:
        """``log P(y = c | x)`` of every class under class-label experts, shape (n, C).

        The mixture ``log sum_i p_i(x) P_i(y = c | x)`` by a stable log-sum-exp
        (the family's :meth:`~moelearn.families.Bernoulli.log_proba`).
        """
        if not hasattr(self._family, "log_proba"):
            raise TypeError(f"family {self._family.name!r} has no class probabilities")
        X = self._check_X(X)
        joint = self._gating_k(X)[0].T[:, :, None] + self._family.log_proba(
            self.expert_predictors(X)
        )
        top = joint.max(axis=1, keepdims=True)
        return np.log(np.exp(joint - top).sum(axis=1)) + top[:, 0, :]

    def _log_terms(self, X, y):
        """``log p_i(x)`` (k, n) and each expert's ``log f_i(y | x)`` (n, k) of checked rows."""
        X = self._check_X(X)
        y = np.asarray(y, dtype=float).ravel()
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        logf = self.family_at(X).log_density(y, self.expert_predictors(X), self.dispersion())
        return self._gating_k(X)[0], logf

    def _joint_k(self, X, y):
        log_gate, logf = self._log_terms(X, y)
        return log_gate + logf.T

    def joint_log_likelihood(self, X, y) -> np.ndarray:
        """``log p_i(x) + log N(y | g(<a_i,x>+b_i), sigma_i^2)``, shape (n, k)."""
        return self._joint_k(X, y).T

    def group_joint_log_likelihood(self, X, y, groups: Groups) -> np.ndarray:
        """Per group ``log p_i(z_g) + sum_{n in g} log f_i(y_n | x_n)``, shape (n_groups, k).

        ``groups`` is a :class:`~moelearn.grouping.Groups` of the rows; the
        gate is read at each group's first row (its covariates are constant
        within the group).  A log-sum-exp over the experts gives each group's
        log-likelihood (:func:`moelearn.grouping.group_posterior`).
        """
        log_gate, logf = self._log_terms(X, y)
        return group_joint(log_gate.T, logf, groups)

    def log_likelihood(self, X, y) -> np.ndarray:
        """Per-sample log-likelihood ``log p(y | x)``, shape (n,)."""
        return logsumexp_k(self._joint_k(X, y))[0]

    def posterior(self, X, y) -> np.ndarray:
        """Posterior responsibilities ``P(z = i | x, y)``, shape (n, k)."""
        return logsumexp_k(self._joint_k(X, y))[1].T

    # ------------------------------------------------------------- conversion
    def to_dict(self) -> dict:
        out = {
            "experts": self.experts.tolist(),
            "gating": self.gating.tolist(),
            "expert_bias": self.expert_bias.tolist(),
            "gating_bias": self.gating_bias.tolist(),
            "noise_std": None if self.noise_std is None else np.asarray(self.noise_std).tolist(),
            "link": self._link.name,
            "family": self._family.name,
        }
        if self.df is not None:
            out["df"] = self.df.tolist()
        if self.has_roles:
            out["gating_features"] = self.gating_features.tolist()
            out["expert_features"] = self.expert_features.tolist()
        if self.offset_feature is not None:
            out["offset_feature"] = self.offset_feature
        if self.trials_feature is not None:
            out["trials_feature"] = self.trials_feature
        if self.shared_features is not None:
            out["shared_features"] = self.shared_features.tolist()
        if self.shared_intercept:
            out["shared_intercept"] = True
        return out


def count_parameters(
    family: Family,
    n_experts,
    gating_mask,
    expert_mask,
    fit_intercept=True,
    shared_noise=False,
    n_shared=0,
) -> int:
    """Free parameters of a mixture of experts: experts, dispersions, and the gate.

    Each expert has ``family.n_predictors`` linear predictors on the expert
    columns (plus an intercept when fitted) and the family's dispersion
    parameters, but for the ``family.point_masses`` point masses, which have
    none; with ``shared_noise`` the family's noise parameter
    (:attr:`~moelearn.families.Family.noise_parameter`) is one for all experts.
    The gate has ``k - 1`` free rows (one row is the reference).  The
    ``n_shared`` expert columns whose coefficient the experts share count
    once per linear predictor.

    Parameters
    ----------
    family : Family
    n_experts : int
    gating_mask, expert_mask : boolean arrays of shape (n_features,)
    fit_intercept : bool, default True
    shared_noise : bool, default False
    n_shared : int, default 0

    Returns
    -------
    int
    """
    k = int(n_experts)
    free = k - family.point_masses  # a point mass at zero has no parameters of its own
    pe = int(np.sum(expert_mask)) + int(fit_intercept)
    pg = int(np.sum(gating_mask)) + int(fit_intercept)
    m = len(family.dispersion_names)
    dispersions = free * m
    if shared_noise and family.noise_parameter is not None:
        dispersions -= free - 1
    shared = (free - 1) * int(n_shared) * family.n_predictors
    return free * pe * family.n_predictors - shared + dispersions + (k - 1) * pg


def make_moe(
    n_features: int,
    n_experts: int,
    link: str | Link = "linear",
    noise_std: float = 0.1,
    gating_scale: float = 1.0,
    orthogonal_gating: bool = True,
    random_state: int | np.random.Generator | np.random.RandomState | None = None,
    *,
    intercept_scale: float = 0.0,
    per_expert_noise: bool = False,
) -> MoEParams:
    """Draw a random mixture-of-experts problem.

    Experts are unit-norm Gaussian directions (linearly independent with
    probability one when ``n_experts <= n_features``).  Gating rows have norm
    ``gating_scale``; with ``orthogonal_gating`` they lie in the orthogonal
    complement of the experts' span, the theory regime of the papers.
    Intercepts are zero.

    The gate is never constant unless ``gating_scale=0`` (or ``n_experts=1``).
    When the gating rows live in a one-dimensional space (``n_features =
    n_experts + 1`` with ``orthogonal_gating``, or ``n_features = 1``), each
    row is ``+v`` or ``-v`` for one unit vector ``v``, scaled by
    ``gating_scale``; both signs are always present, so with three or more
    experts some of them share a gating row.

    Parameters
    ----------
    n_features : int
    n_experts : int
    link : str, Link or callable
    noise_std : float
    gating_scale : float
    orthogonal_gating : bool
    random_state : int, RandomState, Generator or None
    intercept_scale : float, default 0.0
        Standard deviation of random expert and gating intercepts (off the
        theory regime when > 0).
    per_expert_noise : bool, default False
        Draw one noise level per expert, uniformly in
        ``[noise_std / 2, 2 noise_std]``.

    Returns
    -------
    MoEParams

    Examples
    --------
    >>> import numpy as np
    >>> p = make_moe(5, 2, noise_std=0.2, random_state=0)
    >>> p.experts.shape, p.gating.shape
    ((2, 5), (2, 5))
    >>> np.linalg.norm(p.experts, axis=1).round(6).tolist()  # unit-norm experts
    [1.0, 1.0]
    >>> bool(np.allclose(p.gating @ p.experts.T, 0.0))  # gating orthogonal to the experts
    True
    """
    for name, value in (("n_features", n_features), ("n_experts", n_experts)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not np.isfinite(gating_scale) or gating_scale < 0:
        raise ValueError(f"gating_scale must be finite and >= 0, got {gating_scale}")
    if orthogonal_gating and gating_scale > 0 and n_experts >= n_features:
        raise ValueError(
            "orthogonal_gating needs n_experts < n_features (the gating must live in the "
            f"orthogonal complement of the experts), got n_experts={n_experts}, "
            f"n_features={n_features}; pass orthogonal_gating=False"
        )
    rng = random_generator(random_state)
    experts = rng.standard_normal((n_experts, n_features))
    experts /= np.linalg.norm(experts, axis=1, keepdims=True)
    gating = rng.standard_normal((n_experts, n_features))
    if orthogonal_gating and gating_scale > 0:
        basis, _ = np.linalg.qr(experts.T)  # (d, k) orthonormal basis of span(A)
        gating -= (gating @ basis) @ basis.T
    norms = np.linalg.norm(gating, axis=1, keepdims=True)
    gating *= gating_scale / np.maximum(norms, 1e-300)
    if n_experts > 1 and gating_scale > 0 and _all_rows_equal(gating):
        # The gating space (the complement of the experts' span, or R^d) is
        # one-dimensional: every row is +v or -v, and equal signs make the gate
        # constant (softmax is blind to a common shift).  Draw the signs again
        # from a zero-sum vector, which always holds both signs.
        signs = rng.standard_normal(n_experts)
        signs -= signs.mean()
        gating = np.where(signs[:, None] < 0, -gating, gating)
    noise = float(noise_std)
    if per_expert_noise:
        noise = rng.uniform(0.5 * noise, 2.0 * noise, n_experts)
    bias_e = intercept_scale * rng.standard_normal(n_experts)
    bias_g = intercept_scale * rng.standard_normal(n_experts)
    return MoEParams(experts, gating, bias_e, bias_g, noise_std=noise, link=link)


def _all_rows_equal(gating) -> bool:
    """Whether every gating row is the same vector, i.e. the gate is constant."""
    spread = np.max(np.abs(gating - gating.mean(axis=0)))
    return bool(spread <= 1e-8 * max(np.max(np.abs(gating)), 1e-300))


def random_generator(random_state) -> np.random.Generator:
    """A NumPy Generator from any scikit-learn style ``random_state``.

    A Generator is returned as is (draws continue its stream); an int,
    RandomState or None seeds a new one through
    :func:`sklearn.utils.check_random_state`.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    rs = check_random_state(random_state)
    return np.random.default_rng(rs.randint(0, 2**31 - 1, size=4))


_INPUTS = ("gaussian", "uniform", "correlated")


def sample(
    params: MoEParams,
    n_samples: int,
    random_state: int | np.random.Generator | np.random.RandomState | None = None,
    return_labels: bool = False,
    inputs: str = "gaussian",
    correlation: float = 0.5,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(X, y)`` from the model, by default with ``x ~ N(0, I)``.

    Parameters
    ----------
    params : MoEParams
    n_samples : int
    random_state : int, RandomState, Generator or None
    return_labels : bool
        Also return the index of the answering expert for each sample.

    Returns
    -------
    X : ndarray of shape (n_samples, d)
    y : ndarray of shape (n_samples,)
    z : ndarray of shape (n_samples,), only with ``return_labels``

    Examples
    --------
    >>> p = make_moe(5, 2, random_state=0)
    >>> X, y = sample(p, 1000, random_state=1)
    >>> X.shape, y.shape
    ((1000, 5), (1000,))
    >>> X, y, z = sample(p, 1000, random_state=1, return_labels=True)
    >>> sorted(set(z.tolist()))  # the expert that answered each sample
    [0, 1]
    """
    if not isinstance(params, MoEParams):
        raise TypeError(f"params must be a MoEParams, got {type(params).__name__}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an integer, got {type(n_samples).__name__}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if inputs not in _INPUTS:
        raise ValueError(f"inputs must be one of {_INPUTS}, got {inputs!r}")
    rng = random_generator(random_state)
    d = params.n_features
    if inputs == "uniform":
        X = rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), (n_samples, d))
    else:
        X = rng.standard_normal((n_samples, d))
        if inputs == "correlated":
            if not 0 <= correlation < 1:
                raise ValueError(f"correlation must be in [0, 1), got {correlation}")
            # equicorrelation: x = sqrt(1-r) e + sqrt(r) s, s shared across features
            X *= np.sqrt(1.0 - correlation)
            X += np.sqrt(correlation) * rng.standard_normal((n_samples, 1))
    X, y, z = sample_given_x(params, X, rng)
    return (X, y, z) if return_labels else (X, y)


def sample_given_x(params: MoEParams, X, rng):
    """Draw ``y ~ p(y | x)`` and the answering expert for every row of ``X``.

    Parameters
    ----------
    params : MoEParams
    X : ndarray of shape (n_samples, n_features), validated
    rng : numpy.random.Generator

    Returns
    -------
    X, y, z : the rows, the responses and the index of the expert that answered.
    """
    # Gumbel-max draws z ~ Categorical(softmax(logits)) without leaving log space.
    logits = params.gating_logits(X)
    z = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    fam = params.family_at(X)
    y = fam.sample_chosen(params.expert_predictors(X), params.dispersion(), z, rng)
    return X, y, z
