"""Expert non-linearities ("links") g with their derivatives.

A :class:`Link` bundles a vectorised function ``g``, its derivatives ``g'``
and ``g''`` (the second one for the observed information) and the points
where ``g`` is not smooth (so that quadrature can split the real line there).
Built-in links are looked up by name; any user callable becomes a link
through :func:`get_link`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import expit, log_expit

__all__ = ["Link", "get_link", "available_links", "register_link"]

ArrayFunc = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class Link:
    """A scalar non-linearity applied element-wise.

    Parameters
    ----------
    name : str
        Registry name, or a descriptive name for a user function.
    func : callable
        Vectorised ``g``.
    derivative : callable
        Vectorised ``g'``.
    kinks : tuple of float
        Points where ``g`` or ``g'`` is not smooth (quadrature splits there).
    builtin : bool
        Whether the link comes from the registry (only those can be saved by name).
    second_derivative : callable or None
        Vectorised ``g''``; None takes central differences of ``derivative``.
    homogeneous : bool
        Whether ``g(c t) = c g(t)`` for every ``c > 0`` (linear, relu, leaky
        relu): then ``y`` may be rescaled exactly with the coefficients.
    """

    name: str
    func: ArrayFunc
    derivative: ArrayFunc
    kinks: tuple = field(default=())
    builtin: bool = False
    second_derivative: ArrayFunc | None = None
    homogeneous: bool = False

    def __call__(self, t):
        return self.func(np.asarray(t, dtype=float))

    def grad(self, t):
        """Derivative ``g'(t)``."""
        return self.derivative(np.asarray(t, dtype=float))

    def grad2(self, t):
        """Second derivative ``g''(t)`` (central differences of ``g'`` when not supplied)."""
        t = np.asarray(t, dtype=float)
        if self.second_derivative is not None:
            return np.asarray(self.second_derivative(t), dtype=float)
        return _numerical_derivative(self.derivative)(t)

    @property
    def is_linear(self) -> bool:
        return self.name == "linear"

    def __repr__(self) -> str:
        return f"Link({self.name!r})"


# Module-level functions (not lambdas) so that links, and the models holding
# them, can be pickled by users who want to (moelearn's own files never do).
def _identity(t):
    return t.copy()


def _ones(t):
    return np.ones_like(t)


def _relu(t):
    return np.maximum(t, 0.0)


def _step(t):
    return (t > 0).astype(float)


_LEAKY_SLOPE = 0.1


def _leaky_relu(t):
    return np.where(t > 0, t, _LEAKY_SLOPE * t)


def _leaky_step(t):
    return np.where(t > 0, 1.0, _LEAKY_SLOPE)


def _zeros(t):
    return np.zeros_like(t)


def _sigmoid_grad(t):
    return expit(t) * expit(-t)


def _sigmoid_grad2(t):
    # s'' = s (1 - s) (1 - 2 s), with 1 - 2 s(t) = s(-t) - s(t)
    return expit(t) * expit(-t) * (expit(-t) - expit(t))


def _tanh_grad(t):
    return 1.0 - np.tanh(t) ** 2


def _tanh_grad2(t):
    th = np.tanh(t)
    return -2.0 * th * (1.0 - th**2)


def _softplus(t):
    # softplus(t) = -log_expit(-t) is the overflow-free form of log(1 + e^t).
    return -log_expit(-t)


_REGISTRY: dict[str, Link] = {
    # g'' of the piecewise-linear links is 0 away from the kink (almost everywhere)
    "linear": Link(
        "linear", _identity, _ones, builtin=True, second_derivative=_zeros, homogeneous=True
    ),
    "relu": Link(
        "relu", _relu, _step, (0.0,), builtin=True, second_derivative=_zeros, homogeneous=True
    ),
    "leaky_relu": Link(
        "leaky_relu",
        _leaky_relu,
        _leaky_step,
        (0.0,),
        builtin=True,
        second_derivative=_zeros,
        homogeneous=True,
    ),
    "sigmoid": Link(
        "sigmoid", expit, _sigmoid_grad, builtin=True, second_derivative=_sigmoid_grad2
    ),
    "tanh": Link("tanh", np.tanh, _tanh_grad, builtin=True, second_derivative=_tanh_grad2),
    "softplus": Link("softplus", _softplus, expit, builtin=True, second_derivative=_sigmoid_grad),
}


def available_links() -> list[str]:
    """Names of the registered links."""
    return sorted(_REGISTRY)


def register_link(
    name: str,
    func: ArrayFunc,
    derivative: ArrayFunc | None = None,
    kinks: tuple[float, ...] = (),
) -> Link:
    """Register a new named link so it can be used (and saved) by name."""
    if not isinstance(name, str) or not name:
        raise TypeError("link name must be a non-empty string")
    link = _make_user_link(func, derivative, name, kinks)
    _REGISTRY[name] = Link(name, link.func, link.derivative, tuple(kinks), builtin=True)
    return _REGISTRY[name]


class _CentralDifference:
    """``g'`` by central differences of ``g`` (a class, so that links can be pickled)."""

    def __init__(self, func: ArrayFunc):
        self.func = func

    def __call__(self, t):
        t = np.asarray(t, dtype=float)
        h = 1e-5 * np.maximum(1.0, np.abs(t))
        return (self.func(t + h) - self.func(t - h)) / (2 * h)


class _AsFloat:
    """A user function whose output is made a float array (picklable when the function is)."""

    def __init__(self, func: ArrayFunc):
        self.func = func

    def __call__(self, t):
        return np.asarray(self.func(t), dtype=float)


def _numerical_derivative(func: ArrayFunc) -> ArrayFunc:
    return _CentralDifference(func)


def _make_user_link(func, derivative, name, kinks) -> Link:
    if not callable(func):
        raise TypeError(f"link must be a name or a callable, got {type(func).__name__}")
    if derivative is not None and not callable(derivative):
        raise TypeError("link derivative must be callable")

    vfunc = _AsFloat(func)
    probe = np.linspace(-3, 3, 7)
    try:
        with np.errstate(all="ignore"):  # judged by the finiteness check below
            out = vfunc(probe)
    except Exception as exc:  # user code: report it as a bad argument
        raise ValueError(f"link callable failed on a test array: {exc}") from exc
    if out.shape != probe.shape or not np.all(np.isfinite(out)):
        raise ValueError(
            "link callable must map an array of shape (n,) to finite values of the same shape"
        )
    dfunc = _numerical_derivative(vfunc) if derivative is None else _AsFloat(derivative)
    return Link(name, vfunc, dfunc, tuple(float(k) for k in kinks), builtin=False)


def get_link(link: str | Link | ArrayFunc) -> Link:
    """Return the :class:`Link` for a name, a ``Link`` or a user callable.

    Parameters
    ----------
    link : str, Link or callable
        A registry name (see :func:`available_links`), an existing link, or a
        vectorised function ``g``.  A ``(g, g_prime)`` tuple supplies the
        derivative; otherwise it is taken by central differences.
    """
    if isinstance(link, Link):
        return link
    if isinstance(link, str):
        try:
            return _REGISTRY[link]
        except KeyError:
            raise ValueError(
                f"unknown link {link!r}; choose one of {available_links()} or pass a callable"
            ) from None
    if isinstance(link, tuple) and len(link) == 2:
        func, derivative = link
        return _make_user_link(func, derivative, getattr(func, "__name__", "custom"), ())
    if callable(link):
        return _make_user_link(link, None, getattr(link, "__name__", "custom"), ())
    raise TypeError(f"link must be a name, a Link or a callable, got {type(link).__name__}")
