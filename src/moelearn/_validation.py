"""Input checks shared by the functional API and the estimator."""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings

import numpy as np
from sklearn.utils import check_consistent_length
from sklearn.utils.validation import check_array

from ._chunks import iter_chunks
from .exceptions import MomentMethodUnavailable, UnidentifiableWarning
from .links import get_link


def check_int(name, value, minimum=None, maximum=None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_real(name, value, minimum=None, strict=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    return value


def check_noise_std(noise_std):
    if noise_std is None:
        return None
    return check_real("noise_std", noise_std, minimum=0.0)


def check_link(link):
    """Resolve ``link``; unknown names raise ValueError, other types TypeError."""
    return get_link(link)


def _is_out_of_core(X) -> bool:
    return isinstance(X, np.memmap)


def check_Xy(X, y, *, min_samples=2):
    """Validate a regression data set; return float arrays (memory maps left on disk).

    Raises ValueError for NaN/inf, wrong dimensions, mismatched lengths, too
    few samples or a constant target, TypeError for non-numeric data.
    """
    if X is None or y is None:
        raise ValueError("X and y are both required")
    if _is_out_of_core(X):
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number):
            raise TypeError(f"X must be numeric, got dtype {X.dtype}")
        y = _check_y(y)
        check_consistent_length(X, y)
        if X.shape[0] < min_samples:
            raise ValueError(f"need at least {min_samples} samples, got {X.shape[0]}")
        x_max = 0.0
        for Xc, _ in iter_chunks(X, y):  # one pass: finiteness and magnitude together
            if not np.all(np.isfinite(Xc)):
                raise ValueError("X contains NaN or infinite values")
            x_max = max(x_max, float(np.abs(Xc).max(initial=0.0)))
    else:
        try:
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf while checking
                X = check_array(X, dtype=np.float64, ensure_min_samples=min_samples, input_name="X")
        except ValueError as exc:
            raise _rephrase(exc) from exc
        y = _check_y(y)
        check_consistent_length(X, y)
        x_max = None  # computed below from the in-memory array
    if X.shape[1] < 1:
        raise ValueError("X must have at least one feature")
    check_target_and_magnitude(X, y, x_max=x_max)
    return X, y


# Fourth powers of values beyond this overflow float64 (1e77^4 > 1.8e308).
MAX_MAGNITUDE = 1e75


def check_target_and_magnitude(X, y, x_max=None):
    """Reject a non-finite or constant target and values whose 4th powers would overflow.

    ``x_max`` (the largest ``|X|``, when a pass has already computed it) saves a pass.
    """
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite values")
    if np.ptp(y) == 0:
        raise ValueError("y is constant: a mixture of experts needs a target that varies")
    for name, arr in (("X", X), ("y", y)):
        if name == "X" and x_max is not None:
            big = x_max
        else:
            big = float(np.abs(arr).max()) if arr.size else 0.0
        if big > MAX_MAGNITUDE:
            raise ValueError(
                f"{name} has values as large as {big:.3g}: moments up to the 4th power would "
                f"overflow; rescale {name} (e.g. divide by its standard deviation)"
            )


def _check_y(y):
    try:
        with np.errstate(invalid="ignore", over="ignore"):
            y = check_array(y, dtype=np.float64, ensure_2d=False, input_name="y")
    except ValueError as exc:
        raise _rephrase(exc) from exc
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    return y


def _rephrase(exc: ValueError) -> Exception:
    msg = str(exc)
    if "could not convert" in msg or "dtype" in msg and "object" in msg:
        return TypeError(f"data must be numeric: {msg}")
    return ValueError(msg)


def check_n_experts(n_experts, n_features=None, *, moment_method=False) -> int:
    k = check_int("n_experts", n_experts, minimum=1)
    if moment_method and n_features is not None and k > n_features:
        raise MomentMethodUnavailable(
            f"the moment methods need n_experts <= n_features, got n_experts={k} > "
            f"n_features={n_features}: use fewer experts, or the estimator (which falls "
            "back to a random initialisation when k > d)"
        )
    return k


# Rows of the start search's screen (search_rows: SEARCH_ROWS, or SEARCH_ROWS_PER_PARAMETER
# per free parameter where that is more, DESIGN §13) and the fewest starts it screens.
SEARCH_ROWS = 2_500
SEARCH_ROWS_PER_PARAMETER = 30
_MIN_STARTS = 10


def search_rows(n_params) -> int:
    """Rows of the start search's subsample for a model of ``n_params`` free parameters."""
    return max(SEARCH_ROWS, SEARCH_ROWS_PER_PARAMETER * int(n_params))


def _physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_fit_size(n_samples, n_experts, coefs_per_expert, n_init="auto") -> None:
    """Refuse, before any work, a fit the data cannot identify or the memory cannot hold.

    Parameters
    ----------
    n_samples : int
        Rows of the training data.
    n_experts : int
    coefs_per_expert : int
        Coefficients of one expert (intercepts included).
    n_init : "auto" or int
        Starts of the search (``"auto"``: at least 10 are screened).

    Raises
    ------
    ValueError
        When there are more experts than samples, or when the work arrays of
        the start search (starts x rows x pairs of experts) would exceed the
        physical memory.

    Warns
    -----
    UnidentifiableWarning
        When ``n_experts * (coefs_per_expert + 1)`` exceeds ``n_samples``: some
        expert explains fewer samples than it has coefficients plus one.
    """
    n, k, p = int(n_samples), int(n_experts), max(int(coefs_per_expert), 1)
    if k > n:
        raise ValueError(
            f"n_experts={k} exceeds the {n} samples: every expert needs samples of its own to "
            f"be identified (with {p} coefficients per expert these data identify at most "
            f"{max(n // (p + 1), 1)})"
        )
    starts = _MIN_STARTS if n_init == "auto" else int(n_init)
    # the free parameters with one noise level per expert and the gate on the same columns
    rows = min(n, search_rows(k * (p + 1) + (k - 1) * p))
    need = 8.0 * starts * rows * (10 * k + k * (k - 1) / 2)
    memory = _physical_memory()
    if memory is not None and need > memory:
        raise ValueError(
            f"n_experts={k} needs about {need / 2**30:.3g} GiB of work arrays for the start "
            f"search ({starts} starts x {rows} rows x {k} experts and their {k * (k - 1) // 2} "
            f"pairs), more than the {memory / 2**30:.3g} GiB of memory here: use fewer experts"
        )
    if k > 1 and k * (p + 1) > n:
        warnings.warn(
            f"n_experts={k} experts of {p} coefficients each need more than {k * (p + 1)} "
            f"samples to be identified, and there are {n}: some expert cannot be fitted to "
            "samples of its own (fewer experts may suit these data better)",
            UnidentifiableWarning,
            stacklevel=3,
        )


# Below this magnitude second and fourth powers underflow float64 (1e-77^4 < 1e-308):
# such data are rescaled by powers of two (exact) or refused.
MIN_MAGNITUDE = 1e-75


def tiny_scale_factors(values, axis=0):
    """Powers of two that bring columns whose largest ``|value|`` is below ``MIN_MAGNITUDE`` to ~1.

    Multiplying by a power of two is exact in floating point, so a fit on the
    rescaled values is the fit on the originals, in other units.

    Parameters
    ----------
    values : ndarray
        Finite values, columns along ``axis`` = 0 (a 1-D array: one column).

    Returns
    -------
    ndarray or None
        One factor per column (1 where none is needed), or None when every
        column is zero or of ordinary magnitude.
    """
    values = np.asarray(values, dtype=float)
    top = np.abs(values).max(axis=axis) if values.size else np.zeros(values.shape[1:])
    tiny = (top > 0) & (top < MIN_MAGNITUDE)
    if not np.any(tiny):
        return None
    _, exponent = np.frexp(np.where(tiny, top, 1.0))
    # Subnormal columns (below 2**-1022) would need a factor past the largest
    # double; 2**1000 still lifts the smallest subnormal, 2**-1074, to 2**-74.
    return np.where(tiny, np.ldexp(1.0, np.minimum(-exponent, 1000)), 1.0)


@contextlib.contextmanager
def back_to_original_units():
    """Refuse, with a ValueError, a fit whose parameters overflow in the original units.

    A fit on rescaled tiny data (``tiny_scale_factors``) is converted back to
    the units of the data; coefficients of a column of magnitude near the
    smallest double may exceed the largest one there.
    """
    try:
        with np.errstate(over="raise", invalid="raise"):
            yield
    except FloatingPointError:
        raise ValueError(
            "the fitted coefficients, in the units of the data, exceed the largest "
            f"floating-point number: a column of X (or y) has values far below {MIN_MAGNITUDE:g} "
            "in magnitude; rescale X and y (e.g. divide each column by its standard deviation)"
        ) from None


def refuse_tiny(X_head, y_head=None):
    """Refuse out-of-core data whose first rows show a column below ``MIN_MAGNITUDE``.

    Out of core the data cannot be rescaled in place; the message names the
    column and its scale.
    """
    for name, values in (("X", X_head), ("y", y_head)):
        if values is None or not np.all(np.isfinite(values)):
            continue  # non-finite values are refused, with their own message, by the pass
        factors = tiny_scale_factors(values)
        if factors is None:
            continue
        column = int(np.argmax(np.atleast_1d(factors)))
        top = float(np.abs(values if values.ndim == 1 else values[:, column]).max())
        where = f"column {column} of X" if name == "X" else "y"
        raise ValueError(
            f"{where} has values no larger than {top:.3g} in magnitude in its first rows: below "
            f"{MIN_MAGNITUDE:g} its moments underflow; rescale it (e.g. multiply by "
            f"{1 / top:.3g}), or pass the data in memory, where such columns are rescaled exactly"
        )
