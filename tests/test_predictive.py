"""The predictive distribution: standard deviation, quantiles, intervals, draws, posteriors."""

import numpy as np
import pytest
from scipy.stats import norm

import moelearn
from moelearn import MixtureOfExpertsRegressor
from moelearn.predictive import (
    predict_cdf,
    predict_expert,
    predict_interval,
    predict_quantiles,
    predict_responsibilities,
    predict_std,
    sample_y,
)


@pytest.fixture(scope="module")
def problem():
    params = moelearn.make_moe(
        5,
        3,
        noise_std=0.3,
        gating_scale=2.0,
        random_state=0,
        per_expert_noise=True,
        intercept_scale=0.5,
    )
    X, y = moelearn.sample(params, 2000, random_state=1)
    return params, X, y


@pytest.mark.parametrize("link", ["linear", "tanh"])
def test_quantiles_invert_the_cdf(problem, link):
    p, X, _ = problem
    p = moelearn.MoEParams(p.experts, p.gating, p.expert_bias, p.gating_bias, p.noise_std, link)
    levels = np.array([1e-4, 0.025, 0.3, 0.5, 0.9, 0.975, 1 - 1e-4])
    Q = predict_quantiles(p, X, levels)
    assert Q.shape == (X.shape[0], levels.size)
    for j, q in enumerate(levels):
        assert np.max(np.abs(predict_cdf(p, X, Q[:, j]) - q)) < 1e-8
    assert np.all(np.diff(Q, axis=1) > 0)
    # a scalar level gives one column, the same numbers
    np.testing.assert_allclose(predict_quantiles(p, X, 0.3), Q[:, 2], rtol=0, atol=1e-10)


def test_one_expert_is_the_normal_distribution():
    p = moelearn.MoEParams([[1.0, -2.0]], [[0.0, 0.0]], [0.5], noise_std=0.7)
    X = np.random.default_rng(0).standard_normal((50, 2))
    q = np.array([0.05, 0.5, 0.95])
    expected = p.mean(X)[:, None] + 0.7 * norm.ppf(q)[None, :]
    np.testing.assert_allclose(predict_quantiles(p, X, q), expected, atol=1e-9)
    np.testing.assert_allclose(predict_std(p, X), 0.7)
    np.testing.assert_allclose(predict_interval(p, X, 0.1), expected[:, [0, 2]], atol=1e-9)


def test_sample_moments_match_mean_and_std(problem):
    p, X, _ = problem
    X = X[:20]
    m = 20_000
    draws = sample_y(p, X, m, random_state=0)
    assert draws.shape == (20, m)
    mean, var = p.mean(X), predict_std(p, X) ** 2
    # Monte Carlo standard errors from the draws themselves; 5 of them per row
    # fail with probability < 1e-6 each (40 checks in all)
    se_mean = np.sqrt(var / m)
    centred = draws - mean[:, None]
    se_var = np.sqrt((np.mean(centred**4, axis=1) - var**2) / m)
    assert np.all(np.abs(draws.mean(axis=1) - mean) < 5 * se_mean)
    assert np.all(np.abs(np.mean(centred**2, axis=1) - var) < 5 * se_var)


def test_sample_respects_random_state(problem):
    p, X, _ = problem
    a = sample_y(p, X[:5], 3, random_state=7)
    np.testing.assert_array_equal(a, sample_y(p, X[:5], 3, random_state=7))
    assert not np.array_equal(a, sample_y(p, X[:5], 3, random_state=8))


def test_interval_covers_fresh_draws_from_the_truth(problem):
    p, _, _ = problem
    X, y = moelearn.sample(p, 20_000, random_state=5)
    iv = predict_interval(p, X, alpha=0.1)
    cover = np.mean((y >= iv[:, 0]) & (y <= iv[:, 1]))
    # binomial standard error sqrt(0.09 / 2e4) = 0.0021: +-0.01 is 4.7 of them
    assert abs(cover - 0.9) < 0.01


def test_responsibilities(problem):
    p, X, y = problem
    r = predict_responsibilities(p, X, y)
    assert r.shape == (X.shape[0], 3)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.exp(predict_responsibilities(p, X, y, log=True)), r, atol=1e-12)
    np.testing.assert_allclose(r, p.posterior(X, y), atol=1e-12)
    np.testing.assert_array_equal(predict_expert(p, X, y), np.argmax(r, axis=1))
    # far-out y: still finite and normalised (log space)
    r_far = predict_responsibilities(p, X[:5], np.full(5, 1e3))
    assert np.all(np.isfinite(r_far))
    np.testing.assert_allclose(r_far.sum(axis=1), 1.0)
    # the most probable expert is the one that drew the sample most of the time
    Xs, ys, z = moelearn.sample(p, 5000, random_state=3, return_labels=True)
    assert np.mean(predict_expert(p, Xs, ys) == z) > 0.8


def test_bad_arguments(problem):
    p, X, y = problem
    with pytest.raises(ValueError, match="between 0 and 1"):
        predict_quantiles(p, X, [0.5, 1.0])
    with pytest.raises(ValueError, match="alpha"):
        predict_interval(p, X, alpha=0.0)
    with pytest.raises(ValueError, match="n_samples"):
        sample_y(p, X, 0)
    with pytest.raises(TypeError, match="n_samples"):
        sample_y(p, X, 2.5)
    with pytest.raises(ValueError, match="y must have shape"):
        predict_responsibilities(p, X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        predict_responsibilities(p, X[:2], [0.0, np.nan])
    with pytest.raises(TypeError, match="MoEParams"):
        predict_std(object(), X)
    with pytest.raises(ValueError, match="X must have shape"):
        predict_std(p, X[:, :2])


def test_estimator_methods(problem):
    p, X, y = problem
    est = MixtureOfExpertsRegressor.from_params(p)
    np.testing.assert_allclose(est.predict_std(X), predict_std(p, X))
    np.testing.assert_allclose(
        est.predict_quantiles(X, [0.1, 0.9]), predict_quantiles(p, X, [0.1, 0.9])
    )
    assert est.predict_interval(X[:7], alpha=0.2).shape == (7, 2)
    assert est.sample_y(X[:7], 4, random_state=0).shape == (7, 4)
    np.testing.assert_allclose(est.predict_responsibilities(X, y), p.posterior(X, y))
    assert est.predict_expert(X, y).shape == (X.shape[0],)
    with pytest.raises(ValueError, match="features"):
        est.predict_std(X[:, :3])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MixtureOfExpertsRegressor().predict_interval(X)


@pytest.mark.parametrize("family", ["student-t", "gamma", "poisson"])
def test_quantiles_of_other_families_invert_the_cdf(family):
    # continuous families: F(Q(q)) = q to 1e-9; counts: Q(q) is the smallest integer
    # y with F(y) >= q, so F(Q - 1) < q <= F(Q)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 2))
    p = moelearn.MoEParams(
        experts=np.array([[0.4, -0.2], [-0.3, 0.5]]),
        gating=np.array([[1.5, 0.0], [-1.5, 0.0]]),
        expert_bias=np.array([1.0, 2.0]),
        noise_std=np.array([0.5, 0.8]),
        family=family,
        df=np.array([3.0, 1.5]) if family == "student-t" else None,
    )
    levels = np.array([1e-3, 0.1, 0.5, 0.9, 0.999])
    Q = predict_quantiles(p, X, levels)
    assert Q.shape == (300, 5) and np.all(np.isfinite(Q))
    assert np.all(np.diff(Q, axis=1) >= 0)
    F = np.column_stack([predict_cdf(p, X, Q[:, j]) for j in range(5)])
    if family == "poisson":
        assert np.array_equal(Q, np.round(Q)) and np.all(Q >= 0)
        below = np.column_stack([predict_cdf(p, X, Q[:, j] - 1) for j in range(5)])
        assert np.all(F >= levels) and np.all(below < levels)
    else:
        np.testing.assert_allclose(F, np.broadcast_to(levels, F.shape), atol=1e-9)
    if family == "gamma":
        assert np.all(Q > 0)


@pytest.mark.parametrize("family", ["gaussian", "student-t", "gamma", "poisson", "bernoulli"])
def test_each_family_quantile_function_inverts_its_cdf(family):
    # Family.ppf brackets the mixture's quantile search: F(ppf(q)) = q for continuous
    # experts (to 1e-9), and for discrete ones the smallest integer with F >= q
    fam = moelearn.families.get_family(family)
    rng = np.random.default_rng(2)
    eta = rng.normal(0.3, 0.6, size=(40, 2))
    disp = {
        0: np.zeros((2, 0)),
        1: np.array([[0.7], [1.3]]),
        2: np.array([[0.7, 3.0], [1.3, 1.2]]),
    }[len(fam.dispersion_names)]
    levels = np.array([1e-3, 0.2, 0.5, 0.8, 0.999])
    Q = fam.ppf(levels, eta, disp)
    assert Q.shape == (40, 2, 5) and np.all(np.isfinite(Q))
    F = np.stack([fam.cdf(Q[:, :, j].ravel(), np.repeat(eta, 2, 0), disp) for j in range(5)])
    F = F.reshape(5, 40, 2, 2)[:, :, np.arange(2), np.arange(2)]  # each expert at its own Q
    if fam.discrete:
        below = np.stack(
            [fam.cdf(Q[:, :, j].ravel() - 1, np.repeat(eta, 2, 0), disp) for j in range(5)]
        ).reshape(5, 40, 2, 2)[:, :, np.arange(2), np.arange(2)]
        assert np.all(F >= levels[:, None, None] - 1e-12)
        assert np.all(below < levels[:, None, None])
    else:
        np.testing.assert_allclose(F, np.broadcast_to(levels[:, None, None], F.shape), atol=1e-9)


def test_quantiles_of_a_tiny_scale_are_found():
    # Student-t experts of scale 1e-200: the variance (1e-400) underflows, the standard
    # deviation does not; the experts' own quantiles bracket the mixture's
    p = moelearn.MoEParams(
        experts=np.array([[2e-201], [-1e-201]]),
        gating=np.array([[0.5], [-0.5]]),
        expert_bias=np.array([1e-201, -1e-201]),
        noise_std=np.array([1e-200, 2e-200]),
        family="student-t",
        df=np.array([5.0, 200.0]),
    )
    X = np.random.default_rng(0).standard_normal((10, 1))
    Q = predict_quantiles(p, X, [0.05, 0.5, 0.95])
    assert np.all(np.isfinite(Q)) and np.all(np.diff(Q, axis=1) > 0)
    F = np.column_stack([predict_cdf(p, X, Q[:, j]) for j in range(3)])
    np.testing.assert_allclose(F, np.broadcast_to([0.05, 0.5, 0.95], F.shape), atol=1e-9)
    assert np.all(np.isfinite(moelearn.predictive.predict_std(p, X)))
    assert np.all(moelearn.predictive.predict_std(p, X) > 0)


def test_quantiles_near_zero_of_one_expert():
    # one expert: the bracket is the expert's own quantile, of width 0; where that
    # quantile is near 0 (mu + sigma z cancels) rounding may put it on the wrong side
    # of the root, and the search must widen it rather than return NaN
    mu = np.linspace(-2.0, 2.0, 401)
    p = moelearn.MoEParams(
        experts=np.array([[1.0]]),
        gating=np.zeros((1, 1)),
        expert_bias=np.zeros(1),
        noise_std=np.array([0.7]),
    )
    X = mu[:, None]
    levels = norm.cdf(-mu / 0.7)  # the quantile of row i at level i is 0
    Q = predict_quantiles(p, X, levels)
    assert np.all(np.isfinite(Q))
    np.testing.assert_allclose(np.diag(Q), 0.0, atol=1e-12)


def test_a_family_without_a_quantile_function_gets_the_same_quantiles():
    # Family.ppf returning None sends the search to a bracket grown from the mixture's
    # mean and spread; it must find the same roots (to the root finder's tolerance)
    import dataclasses

    class NoQuantiles(moelearn.families.StudentT):
        def ppf(self, q, eta, disp):
            return None

    p = moelearn.MoEParams(
        experts=np.array([[0.4], [-0.3]]),
        gating=np.array([[1.0], [-1.0]]),
        expert_bias=np.array([1.0, 2.0]),
        noise_std=np.array([0.5, 0.8]),
        family="student-t",
        df=np.array([3.0, 5.0]),
    )
    X = np.random.default_rng(0).standard_normal((50, 1))
    levels = [0.01, 0.1, 0.5, 0.9, 0.99]
    grown = predict_quantiles(dataclasses.replace(p, family=NoQuantiles()), X, levels)
    np.testing.assert_allclose(grown, predict_quantiles(p, X, levels), rtol=1e-10, atol=1e-12)
