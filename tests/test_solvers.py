import numpy as np
import pytest

import moelearn
from moelearn import MixtureOfExpertsRegressor, make_moe, sample
from moelearn.data import Data
from moelearn.links import get_link
from moelearn.solvers import (
    SOLVERS,
    Problem,
    Solution,
    available_solvers,
    get_solver,
    register_solver,
)


@pytest.fixture(scope="module")
def problem_data():
    truth = make_moe(4, 2, noise_std=0.3, random_state=0)
    return sample(truth, 2_000, random_state=1)


def test_registry_names_every_solver_in_order():
    assert available_solvers() == ("moments", "landscape", "tensor", "em", "gd-nll", "gd-l2")
    assert set(SOLVERS) == set(available_solvers())
    assert [get_solver(name).scale_y for name in available_solvers()] == [
        True,
        False,
        False,
        True,
        True,
        True,
    ]


def test_unknown_solver_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown solver 'newton'"):
        get_solver("newton")
    with pytest.raises(ValueError, match="'newton'"):
        MixtureOfExpertsRegressor(solver="newton").fit(np.eye(3), [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty string"):
        register_solver("")


def test_command_line_offers_the_registered_solvers():
    from moelearn.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["fit", "data.csv", "--target", "y", "--experts", "2", "--solver", "gd-l2"]
    )
    assert args.solver == "gd-l2"
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["fit", "data.csv", "--target", "y", "--experts", "2", "--solver", "newton"]
        )


@pytest.mark.parametrize("name", ["moments", "tensor", "em", "gd-l2"])
def test_every_solver_takes_a_problem_and_returns_a_solution(problem_data, name):
    X, y = problem_data
    Xs = (X - X.mean(0)) / X.std(0)
    ys = (y - y.mean()) / y.std()
    problem = Problem(
        Data(Xs, ys, n_experts=2), get_link("linear"), 2, np.random.default_rng(0), max_iter=50
    )
    solution = get_solver(name)(problem)
    assert isinstance(solution, Solution)
    assert solution.fit.params.experts.shape == (2, 4)
    assert np.isfinite(solution.fit.log_likelihood)
    assert isinstance(solution.init_method, str) and solution.final_step.startswith("the ")
    again = get_solver(name)(
        Problem(
            Data(Xs, ys, n_experts=2), get_link("linear"), 2, np.random.default_rng(0), max_iter=50
        )
    )
    np.testing.assert_array_equal(again.fit.params.experts, solution.fit.params.experts)


def test_a_registered_solver_is_accepted_by_the_estimator(problem_data):
    X, y = problem_data
    seen = {}

    def first_l2_then_name(problem: Problem) -> Solution:
        seen["noise_floor"] = problem.noise_floor
        solution = SOLVERS["gd-l2"](problem)
        return Solution(solution.fit, "custom", "the custom solver")

    register_solver("custom-l2")(first_l2_then_name)
    try:
        est = MixtureOfExpertsRegressor(2, solver="custom-l2", random_state=0).fit(X, y)
        assert "custom-l2" in moelearn.solvers.available_solvers()
    finally:
        del SOLVERS["custom-l2"]
    # a registered solver takes the standardised problem the built-in ones take: the
    # same fit as the squared-loss baseline's from the same draws
    ref = MixtureOfExpertsRegressor(2, solver="gd-l2", random_state=0).fit(X, y)
    assert est.init_method_ == "custom"
    # the standardised floor: 1e-3 of std(y) in units of std(y)
    assert seen["noise_floor"] == pytest.approx(1e-3)
    np.testing.assert_array_equal(est.experts_, ref.experts_)
    assert "custom-l2" not in available_solvers()


def test_the_likelihood_solvers_entries_are_the_engine_on_the_problem(problem_data):
    # "moments", "em" and "gd-nll" in the registry run the likelihood engine on the
    # problem's standardised data, as the estimator does on the data as given: the
    # search's winner and the baselines' fits, with their log-likelihood at their
    # parameters (the engine's 1e-6 ridge apart, 1e-5 per row)
    from moelearn._base import mean_log_likelihood

    X, y = problem_data
    Xs = (X - X.mean(0)) / X.std(0)
    ys = (y - y.mean()) / y.std()
    data = Data(Xs, ys, n_experts=2)
    for name, start in (("moments", "(best of"), ("em", "random"), ("gd-nll", "random")):
        problem = Problem(data, get_link("linear"), 2, np.random.default_rng(0))
        solution = SOLVERS[name](problem)
        assert start in solution.init_method
        fit = solution.fit
        assert fit.log_likelihood == pytest.approx(mean_log_likelihood(fit.params, data), abs=1e-5)
    est = MixtureOfExpertsRegressor(2, prior_strength=0.0, random_state=0).fit(X, y)
    # one optimum in original and in standardised units (log-likelihoods differ by
    # log std(y) per row): 1e-6 per row, the refinement's tolerance
    moments = SOLVERS["moments"](Problem(data, get_link("linear"), 2, np.random.default_rng(0)))
    assert moments.fit.log_likelihood - np.log(y.std()) == pytest.approx(
        est.log_likelihood_, abs=1e-6
    )
