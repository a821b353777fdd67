"""Exceptions raised by moelearn."""

__all__ = ["MomentMethodUnavailable"]


class MomentMethodUnavailable(ValueError):
    """The moment methods cannot run on this problem.

    Raised for ``n_experts > n_features``, a link that is not valid at the
    orders needed, too few samples, or a second moment that supports fewer
    than ``n_experts`` experts.  The estimator's ``"moments"`` solver catches
    it and falls back to random starts; anything else is a genuine error.
    """
