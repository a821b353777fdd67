"""Gating recovery with the experts fixed (DESIGN §5).

Once the experts are known, the gating loss ``L_log`` (the negative
log-likelihood as a function of the gating alone) has the true gating as its
optimum; both of its minimisers here converge there:

* ``method="likelihood"`` - L-BFGS (or plain gradient descent, as in the
  AISTATS 2020 paper) on ``L_log``;
* ``method="em"`` - EM with the experts fixed (ICML 2019): posterior
  responsibilities, then a soft-label multinomial logistic regression.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._validation import check_int, check_link, check_noise_std, check_real, check_Xy
from .links import Link
from .model import MoEParams, random_generator
from .refine import Data, FitResult, maximize_likelihood

__all__ = ["recover_gating"]


def recover_gating(
    X: ArrayLike,
    y: ArrayLike,
    experts: ArrayLike,
    link: str | Link = "linear",
    method: str = "likelihood",
    noise_std: float | ArrayLike | None = None,
    random_state: int | np.random.Generator | np.random.RandomState | None = None,
    *,
    expert_bias: ArrayLike | None = None,
    fit_intercept: bool = False,
    optimizer: str = "lbfgs",
    max_iter: int = 200,
    tol: float = 1e-9,
    return_info: bool = False,
    chunk_size: int | None = None,
) -> np.ndarray | FitResult:
    """Estimate the gating parameters given the experts.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    experts : array-like of shape (n_experts, n_features)
    link : str, Link or callable
    method : {"likelihood", "em"}
    noise_std : float or None
        Known noise level; None estimates it jointly with the gating.
    random_state : int, RandomState, Generator or None
        Seeds the small random start of the gating.
    expert_bias : array-like of shape (n_experts,) or None
        Fixed expert intercepts (zero by default).
    fit_intercept : bool, default False
        Also fit gating intercepts.
    optimizer : {"lbfgs", "gd"}
        For ``method="likelihood"``: L-BFGS or plain gradient descent.
    max_iter : int
    tol : float
    return_info : bool
        Return the :class:`~moelearn.refine.FitResult` (with loss history).
    chunk_size : int or None

    Returns
    -------
    gating : ndarray of shape (n_experts, n_features), centred rows
        (or a FitResult with ``return_info=True``).
    """
    if method not in ("likelihood", "em"):
        raise ValueError(f"method must be 'likelihood' or 'em', got {method!r}")
    if optimizer not in ("lbfgs", "gd"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'gd', got {optimizer!r}")
    link = check_link(link)
    noise_std = check_noise_std(noise_std)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    tol = check_real("tol", tol, minimum=0.0)
    X, y = check_Xy(X, y)
    experts = np.asarray(experts, dtype=float)
    n, d = X.shape
    if experts.ndim != 2 or experts.shape[1] != d:
        raise ValueError(f"experts must have shape (n_experts, {d}), got {experts.shape}")
    if not np.all(np.isfinite(experts)):
        raise ValueError("experts contains NaN or infinite values")
    k = experts.shape[0]
    rng = random_generator(random_state)
    if noise_std is not None and noise_std <= 0:
        raise ValueError("noise_std must be > 0 for gating recovery")
    start_noise = noise_std if noise_std is not None else float(np.std(y))
    init = MoEParams(
        experts,
        0.01 * rng.standard_normal((k, d)),
        expert_bias=expert_bias,
        noise_std=start_noise,
        link=link,
    )
    free = {"gating"}
    if fit_intercept:
        free.add("gating_bias")
    if noise_std is None:
        free.add("noise")
    data = Data(X, y, chunk_size, n_experts=k)
    result: FitResult = maximize_likelihood(
        data,
        init,
        free=free,
        method="em" if method == "em" else optimizer,
        max_iter=max_iter,
        tol=tol,
        noise_floor=1e-6 * float(np.std(y)),
    )
    W = result.params.gating
    result.params.gating = W - W.mean(axis=0, keepdims=True)
    if fit_intercept:
        c = result.params.gating_bias
        result.params.gating_bias = c - c.mean()
    return result if return_info else result.params.gating
