"""The estimator's start search and its reporting, for Gaussian experts on all columns."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from moelearn import MixtureOfExpertsRegressor, MoEParams
from moelearn.data import Data
from moelearn.exceptions import GateSeparationWarning


def test_converged_is_false_when_the_cap_is_hit_and_the_warning_names_the_step(two_experts):
    # max_iter caps each stage (the warm EM, then the finish): two EM iterations from the
    # moment start are short of EM's tolerance of 1e-8 here, as are two of a random start
    _, X, y, _ = two_experts
    ml = dict(prior_strength=0.0, random_state=0, max_iter=2)
    with pytest.warns(ConvergenceWarning, match="EM refinement of the moment start"):
        est = MixtureOfExpertsRegressor(2, n_init=1, refine="em", **ml).fit(X, y)
    assert not est.converged_ and est.n_iter_ <= 4
    for solver in ("em", "gd-nll"):
        # two iterations from a random start also leave a sharp gate (warned of apart)
        with (
            warnings.catch_warnings(),
            pytest.warns(ConvergenceWarning, match=f"the {solver} solver"),
        ):
            warnings.simplefilter("ignore", GateSeparationWarning)
            est = MixtureOfExpertsRegressor(2, solver=solver, **ml).fit(X, y)
        assert not est.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    assert est.converged_


def test_default_fit_reaches_the_optimum_of_a_start_at_the_truth(two_experts):
    p, X, y, _ = two_experts
    est = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    ref = MixtureOfExpertsRegressor(2, init_params=p).fit(X, y)
    assert est.log_likelihood_ >= ref.log_likelihood_ - 1e-6
    assert "best of" in est.init_method_


def test_an_integer_n_init_counts_every_start_and_one_is_the_moment_start_alone(two_experts):
    # maximum likelihood and the prior take the same search (the likelihood engine): an
    # integer m screens m starts, the moment start among them (and, beside them, random
    # partitions of the rows); m = 1 refines the moment start alone
    p, X, y, _ = two_experts
    for strength in (0.0, "auto"):
        one = MixtureOfExpertsRegressor(2, n_init=1, prior_strength=strength, random_state=0)
        one.fit(X, y)
        assert one.init_method_ == "moments (tensor)"
        three = MixtureOfExpertsRegressor(2, n_init=3, prior_strength=strength, random_state=0)
        three.fit(X, y)
        assert "(best of 3 starts" in three.init_method_
        # two well-separated experts on 3000 rows: one basin, which the moment start finds
        # (the search cannot do better than its optimum by more than the tolerance)
        assert one.objective_ == pytest.approx(three.objective_, abs=1e-7)
        assert one.converged_ and three.converged_


def test_a_collapsed_start_loses_to_the_sound_optimum(two_experts):
    # expert 1 interpolates two rows with its noise at the floor, and the gate sends it
    # little: the likelihood rewards it without bound, the collapse rule ranks it below
    # every sound candidate, so the search ends at the optimum found from the truth
    from moelearn.families import get_family
    from moelearn.family_fit import fit_family

    p, X, y, _ = two_experts
    floor = 1e-3 * float(np.std(y))
    A = np.vstack([p.experts[0], np.linalg.lstsq(X[:2], y[:2], rcond=None)[0]])
    collapsed = MoEParams(
        A, np.zeros((2, 2)), gating_bias=np.array([3.0, -3.0]), noise_std=[1.0, floor]
    )
    family = get_family("gaussian").with_experts(2)
    every = np.ones(2, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        found = fit_family(
            Data(X, y),
            family,
            2,
            every,
            every,
            n_init=3,
            extra_starts=[("collapsed", collapsed)],
            random_state=np.random.default_rng(0),
        )
    assert not found.collapsed and found.params.noise_vector.min() > 10 * floor
    truth = MixtureOfExpertsRegressor(2, prior_strength=0.0, init_params=p).fit(X, y)
    # the optimum found from the truth, to the refinement's tolerance per row
    assert found.log_likelihood == pytest.approx(truth.log_likelihood_, abs=1e-6)
