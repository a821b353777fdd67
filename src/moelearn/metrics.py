"""Parameter-recovery errors (DESIGN §8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from .model import MoEParams

__all__ = ["parameter_errors", "expert_error", "RecoveryErrors"]


@dataclass(frozen=True)
class RecoveryErrors:
    """Errors after matching experts.

    Attributes
    ----------
    experts : float
        ``min_pi ||A_pi - A||_F`` (signs free for even links).
    gating : float or None
        ``||centre(W_pi) - centre(W)||_F`` with the same matching; None when
        either side has no gating.
    permutation : ndarray
        ``permutation[i]`` is the estimated row matched to true row ``i``.
    signs : ndarray
        Sign applied to each matched estimated row.
    """

    experts: float
    gating: float | None
    permutation: np.ndarray
    signs: np.ndarray


def _centre(W):
    return W - W.mean(axis=0, keepdims=True)


def _unpack(p):
    if isinstance(p, MoEParams):
        return p.experts, p.gating, p.link_function
    if hasattr(p, "experts_") and hasattr(p, "gating_"):
        from .links import get_link

        return p.experts_, p.gating_, get_link(p.link)
    return np.asarray(p, dtype=float), None, None


def _is_even(link) -> bool:
    if link is None:
        return False
    t = np.linspace(0.1, 3.0, 13)
    return bool(np.allclose(link(t), link(-t)))


def parameter_errors(estimated: Any, true: Any, even: bool | None = None) -> RecoveryErrors:
    """Match estimated experts to true ones and report the errors of DESIGN §8.

    Parameters
    ----------
    estimated, true : MoEParams, fitted MixtureOfExpertsRegressor or array (k, d)
        An array means experts only.
    even : bool or None
        Whether expert signs are unidentified; by default inferred from the link.

    Returns
    -------
    RecoveryErrors

    Examples
    --------
    >>> import numpy as np
    >>> from moelearn import MoEParams
    >>> true = MoEParams(np.eye(2, 3), np.zeros((2, 3)))
    >>> estimated = np.array([[0.0, 1.0, 0.1], [1.0, 0.0, 0.0]])  # rows swapped, one off
    >>> err = parameter_errors(estimated, true)
    >>> round(err.experts, 6), err.permutation.tolist(), err.gating
    (0.1, [1, 0], None)
    """
    A_hat, W_hat, link_hat = _unpack(estimated)
    A, W, link = _unpack(true)
    if A_hat.shape != A.shape:
        raise ValueError(f"expert shapes differ: estimated {A_hat.shape}, true {A.shape}")
    if even is None:
        even = _is_even(link or link_hat)
    # cost[i, j]: true row i vs estimated row j
    cost = ((A[:, None, :] - A_hat[None, :, :]) ** 2).sum(-1)
    if even:
        flipped = ((A[:, None, :] + A_hat[None, :, :]) ** 2).sum(-1)
        sign_choice = np.where(flipped < cost, -1.0, 1.0)
        cost = np.minimum(cost, flipped)
    else:
        sign_choice = np.ones_like(cost)
    rows, cols = linear_sum_assignment(cost)
    perm = cols[np.argsort(rows)]
    signs = sign_choice[np.arange(len(perm)), perm]
    expert_err = float(np.sqrt(cost[np.arange(len(perm)), perm].sum()))
    gating_err = None
    if W is not None and W_hat is not None:
        gating_err = float(np.linalg.norm(_centre(W_hat[perm]) - _centre(W)))
    return RecoveryErrors(expert_err, gating_err, perm, signs)


def expert_error(estimated: ArrayLike, true: ArrayLike, even: bool | None = None) -> float:
    """Shorthand for ``parameter_errors(...).experts``."""
    return parameter_errors(estimated, true, even).experts
