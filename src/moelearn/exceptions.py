"""Exceptions and warnings raised by moelearn."""

from sklearn.exceptions import ConvergenceWarning

__all__ = [
    "CollapsedComponentWarning",
    "DegenerateFitWarning",
    "GateSeparationWarning",
    "MomentMethodUnavailable",
    "NotIdentifiedWarning",
    "UnidentifiableWarning",
]


class MomentMethodUnavailable(ValueError):
    """The moment methods cannot run on this problem.

    Raised for ``n_experts > n_features``, a link that is not valid at the
    orders needed, too few samples, or a second moment that supports fewer
    than ``n_experts`` experts.  The estimator's ``"moments"`` solver catches
    it and falls back to random starts; anything else is a genuine error.
    """


class GateSeparationWarning(UserWarning):
    """The fitted gate separates the training rows (:func:`moelearn.gate_separation`).

    A sharper gate fits as well: the likelihood's supremum lies at infinity,
    so the gate's coefficients and their standard errors are not identified
    (the analogue of perfect separation in logistic regression).  Fewer
    experts, fewer gate features, or more data usually cure it.
    """


class NotIdentifiedWarning(UserWarning):
    """Some coefficients are not identified by the data.

    Raised when the columns an expert or the gate reads are (nearly) collinear
    (with each other or, with intercepts, with a constant): the likelihood is
    flat along a combination of their coefficients, whose estimates are then
    arbitrary.  :meth:`~moelearn.MixtureOfExpertsRegressor.summary` reports
    their standard errors as not available.
    """


class CollapsedComponentWarning(ConvergenceWarning):
    """Every start of the fit ended with a collapsed component.

    A component explaining fewer samples than its expert has coefficients, or
    with its noise at the floor: fewer experts may suit the data better.  A
    :class:`~sklearn.exceptions.ConvergenceWarning`, so filters on that class
    keep working.
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
