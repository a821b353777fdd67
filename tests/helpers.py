"""Shared helpers for the statistical tests."""

import functools

import numpy as np
from hypothesis import event


def standard_error_bound(terms, n_sigma=6.0):
    """``n_sigma`` standard errors of the mean of per-sample ``terms``.

    Tests of Monte Carlo estimates compare against this: by the CLT a correct
    estimate misses it with probability < 1e-8 per comparison at 6 sigma.
    """
    terms = np.asarray(terms)
    return n_sigma * terms.std(axis=0) / np.sqrt(terms.shape[0])


def record(outcomes, outcome):
    """Count how one example of a property-based test ended.

    The outcome is also a Hypothesis ``event``, so ``pytest
    --hypothesis-show-statistics`` prints the fraction of examples per outcome.
    """
    event(outcome)
    outcomes[outcome] += 1


def fraction_at_least(minimum, outcomes, outcome):
    """Decorate a ``@given`` test: after its examples, ``outcome`` must be >= ``minimum``.

    A fuzz test whose examples are all rejected before its assertion cannot
    fail; this makes that a failure.  ``outcomes`` is the Counter that the test
    body passes to :func:`record`.
    """

    def decorate(test):
        @functools.wraps(test)
        def wrapper(*args, **kwargs):
            outcomes.clear()
            test(*args, **kwargs)
            total = sum(outcomes.values())
            assert total > 0, "no example ran"
            assert outcomes[outcome] >= minimum * total, (
                f"only {outcomes[outcome]} of {total} examples ended in {outcome!r}: "
                f"{dict(outcomes)}"
            )

        return wrapper

    return decorate


def pass_log_likelihood_gradient(family, design, data, state, h=1e-5):
    """Central differences (step ``h``) of the engine's log-likelihood in :meth:`State.flat`."""
    from moelearn.engine import pass_statistics

    theta = state.flat()
    fd = np.empty_like(theta)
    for j in range(theta.size):
        step = np.zeros_like(theta)
        step[j] = h
        up = pass_statistics(family, design, data, state.with_flat(theta + step), "value")["ll"]
        down = pass_statistics(family, design, data, state.with_flat(theta - step), "value")["ll"]
        fd[j] = (up - down) / (2 * h)
    return fd
