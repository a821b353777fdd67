"""Exceptions and warnings raised by moelearn."""

__all__ = ["DegenerateFitWarning", "MomentMethodUnavailable", "UnidentifiableWarning"]


class MomentMethodUnavailable(ValueError):
    """The moment methods cannot run on this problem.

    Raised for ``n_experts > n_features``, a link that is not valid at the
    orders needed, too few samples, or a second moment that supports fewer
    than ``n_experts`` experts.  The estimator's ``"moments"`` solver catches
    it and falls back to random starts; anything else is a genuine error.
    """


class DegenerateFitWarning(UserWarning):
    """A fitted expert predicts far outside the range of the training target.

    Issued after fitting when some expert's mean, on the training rows that
    its gate gives weight, leaves the range of the training ``y`` by orders of
    magnitude (a degenerate optimum, e.g. a Gamma expert fitted to one tiny
    response).  The message names the expert and the values.
    """


class UnidentifiableWarning(UserWarning):
    """More experts were asked for than the data can identify.

    Issued when ``n_experts`` times (the coefficients of one expert plus one)
    exceeds the number of samples: some expert cannot be fitted to samples of
    its own.  The fit goes on (on such data the likelihood's ceiling is a
    plateau, and the engine returns its canonical point, DESIGN §13).
    """
