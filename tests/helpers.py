"""Shared helpers for the statistical tests."""

import numpy as np


def standard_error_bound(terms, n_sigma=6.0):
    """``n_sigma`` standard errors of the mean of per-sample ``terms``.

    Tests of Monte Carlo estimates compare against this: by the CLT a correct
    estimate misses it with probability < 1e-8 per comparison at 6 sigma.
    """
    terms = np.asarray(terms)
    return n_sigma * terms.std(axis=0) / np.sqrt(terms.shape[0])
