"""``prior_strength``: the maximum a posteriori fit of the engine (DESIGN §13).

A Gaussian prior of precision ``lambda`` on every standardised slope, carrying
``lambda`` rows' worth of information: per sample a ridge of ``lambda / W``
(``W`` the total weight).  The tests check that it is exactly that ridge, that
its pull vanishes as ``n`` grows, that it makes a separating gate finite, and
that the reported log-likelihood stays the plain one.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from moelearn import (
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
    load,
    make_moe,
    sample,
)
from moelearn.exceptions import GateSeparationWarning
from moelearn.family_fit import prior_alpha


def _fit(X, y, sample_weight=None, k=2, **kw):
    kw.setdefault("random_state", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", GateSeparationWarning)
        return MixtureOfExpertsRegressor(k, **kw).fit(X, y, sample_weight=sample_weight)


@pytest.fixture(scope="module")
def problem():
    p = make_moe(3, 2, noise_std=0.3, random_state=0)
    X, y = sample(p, 300, random_state=1)
    return X, y


def test_prior_alpha_is_lambda_rows_worth():
    assert prior_alpha(0.0, 0.0, 10.0) == 0.0
    assert prior_alpha((1e-6, 0.0), 2.0, 400.0) == (1e-6 + 0.005, 0.005)
    assert prior_alpha(1e-4, 1.0, 100.0) == (1e-4 + 0.01, 1e-4 + 0.01)


def test_objective_is_the_log_likelihood_less_the_penalty(problem):
    X, y = problem
    plain = _fit(X, y)
    assert plain.objective_ == plain.log_likelihood_  # the Gaussian path has no ridge
    est = _fit(X, y, prior_strength=1.0)
    # the reported log-likelihood is the plain one at the fitted parameters
    assert est.log_likelihood_ == pytest.approx(np.mean(est.log_density(X, y)), abs=1e-10)
    assert est.objective_ < est.log_likelihood_
    # the penalty is at most lambda/2 |slopes|^2 / n on the standardised scale plus the
    # engine's 1e-6 ridge: positive and small here (1 row's worth against 300)
    assert 0 < est.log_likelihood_ - est.objective_ < 0.05
    # the MAP fit's likelihood is below the ML fit's, by little (tolerance: a weak
    # prior moves a well-posed optimum by O(lambda / n) nats per sample)
    assert est.log_likelihood_ <= plain.log_likelihood_ + 1e-9
    assert est.log_likelihood_ > plain.log_likelihood_ - 0.02


def test_pull_vanishes_as_n_grows():
    # the same model at n = 200 and n = 20 000: the change the prior makes to the
    # coefficients falls roughly like 1 / n (a 100-fold drop bounded by 10-fold with
    # room for the fits' own noise)
    p = make_moe(3, 2, noise_std=0.3, random_state=3)
    change = []
    for n in (200, 20_000):
        X, y = sample(p, n, random_state=4)
        a, b = _fit(X, y, prior_strength=0.0), _fit(X, y, prior_strength=2.0)
        order = np.argsort(a.expert_bias_)
        b_order = np.argsort(b.expert_bias_)
        change.append(np.max(np.abs(a.experts_[order] - b.experts_[b_order])))
    assert change[1] < change[0] / 10
    assert change[1] < 1e-2


def test_separating_gate_becomes_a_finite_maximum():
    # two experts on two halves of x with no overlap: the plain likelihood rises as
    # the gate steepens without bound; the prior's maximum is finite and moderate
    rng = np.random.default_rng(5)
    x = np.sort(rng.uniform(-1, 1, 120))
    y = np.where(x < 0, 3.0 + 0.2 * rng.standard_normal(120), -3.0 + 0.2 * rng.standard_normal(120))
    X = x[:, None]
    slopes = []
    for lam in (0.0, 1.0):
        est = _fit(X, y, prior_strength=lam, gating_features=[0])
        slopes.append(np.max(np.abs(est.gating_)))
    assert np.isfinite(slopes[1])
    # with one row's worth of prior the standardised gate slope stays below about
    # sqrt(2 * 120 * log 2 / 1): the likelihood gained by steepening past the gap
    # between the halves is bounded, the penalty is not
    assert slopes[1] * np.std(x) < 20
    assert slopes[1] < slopes[0]


def test_integer_weights_equal_repeated_rows_under_the_prior(problem):
    # W is the total weight: weights count as frequencies
    X, y = problem
    counts = np.random.default_rng(2).integers(0, 4, size=len(y))
    a = _fit(X, y, counts, prior_strength=1.0)
    b = _fit(np.repeat(X, counts, axis=0), np.repeat(y, counts), prior_strength=1.0)
    for name in ("experts_", "expert_bias_", "gating_", "gating_bias_", "noise_std_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)
    assert a.objective_ == pytest.approx(b.objective_, abs=1e-9)


@pytest.mark.parametrize("solver", ["landscape", "tensor", "gd-l2"])
def test_refused_by_solvers_without_a_likelihood(problem, solver):
    X, y = problem
    with pytest.raises(ValueError, match="prior_strength=0.5 applies to the likelihood"):
        MixtureOfExpertsRegressor(2, solver=solver, prior_strength=0.5).fit(X, y)


@pytest.mark.parametrize("bad", [-1.0, "strong"])
def test_invalid_strength_is_refused(problem, bad):
    X, y = problem
    with pytest.raises(ValueError, match="prior_strength"):
        MixtureOfExpertsRegressor(2, prior_strength=bad).fit(X, y)


def test_other_families_and_baselines_take_it(problem):
    X, y = problem
    counts = np.random.default_rng(0).poisson(np.exp(0.3 * X[:, 0]))
    for kw in ({"family": "poisson"}, {"solver": "em"}, {"solver": "gd-nll"}):
        yy = counts if kw.get("family") == "poisson" else y
        est = _fit(X, yy, prior_strength=1.0, **kw)
        assert est.objective_ < est.log_likelihood_


def test_summary_states_the_prior_and_persistence_keeps_it(problem, tmp_path):
    X, y = problem
    est = _fit(X, y, prior_strength=0.5)
    text = str(est.summary())
    assert "Prior" in text and "precision 0.5" in text
    assert "Prior" not in str(_fit(X, y).summary())
    est.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.prior_strength == 0.5
    assert back.objective_ == est.objective_
    assert back.log_likelihood_ == est.log_likelihood_


def test_classifier_prior_is_lambda_over_n_added_to_alpha():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((250, 3))
    y = (X[:, 0] + 0.5 * rng.standard_normal(250) > 0).astype(int)
    a = MixtureOfExpertsClassifier(2, alpha=1e-4, prior_strength=2.0, random_state=0).fit(X, y)
    b = MixtureOfExpertsClassifier(
        2, alpha=1e-4 + 2.0 / 250, prior_strength=0.0, random_state=0
    ).fit(X, y)
    np.testing.assert_allclose(a.experts_, b.experts_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.gating_, b.gating_, rtol=0, atol=1e-10)
    assert a.objective_ == pytest.approx(b.objective_, abs=1e-12)
    assert a.objective_ < a.log_likelihood_


def test_classifier_summary_states_its_prior_and_the_default_is_one_row():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((250, 3))
    y = (X[:, 0] + 0.5 * rng.standard_normal(250) > 0).astype(int)
    default = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    assert default.prior_strength == 1.0 and default.alpha == 0.0
    text = str(default.summary())
    assert "Prior" in text and "precision 1 on standardised slopes" in text
    # the penalty is one row's worth: lambda / (2 n) times the squared standardised slopes
    assert default.log_likelihood_ - default.objective_ > 0
    plain = MixtureOfExpertsClassifier(2, alpha=0.0, prior_strength=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain.fit(X, y)
    assert "Prior" not in str(plain.summary())
    assert plain.objective_ == plain.log_likelihood_


@pytest.mark.parametrize("loader", ["iris", "breast_cancer"])
def test_one_expert_default_is_logistic_regression_and_ignores_the_class_order(loader):
    # One expert with the default prior (one row's worth on the standardised slopes) is
    # LogisticRegression() on standardised columns: binary with one log-odds vector,
    # multinomial with the centred (class-symmetric) penalty, so relabelling the classes
    # gives the same probabilities.  Both optima are unique (strictly concave); the
    # tolerance is that of the two optimisers at tol=1e-12 (measured 8e-8 and 5e-7).
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{loader}")(return_X_y=True)
    ref = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=100_000))
    ref.fit(X, y)
    one = MixtureOfExpertsClassifier(1, tol=1e-12, random_state=0).fit(X, y)
    np.testing.assert_allclose(one.predict_proba(X), ref.predict_proba(X), atol=5e-6)
    classes = np.unique(y)
    relabel = np.roll(classes, 1)  # class c becomes relabel[c]
    other = MixtureOfExpertsClassifier(1, tol=1e-12, random_state=0).fit(X, relabel[y])
    np.testing.assert_allclose(other.predict_proba(X)[:, relabel], one.predict_proba(X), atol=1e-9)


def test_multinomial_penalty_derivatives_match_its_value():
    # the class-symmetric ridge in flat coordinates: gradient and Hessian against central
    # differences of its value (a quadratic: exact up to rounding)
    from moelearn.engine import State, _flat_penalty
    from moelearn.families import Multinomial

    rng = np.random.default_rng(0)
    metric = Multinomial(4).penalty_metric
    gate = rng.standard_normal((2, 4))
    gate[-1] = 0.0  # the reference row
    state = State(rng.standard_normal((2, 3, 4)), np.zeros((2, 0)), gate)
    value, grad, hess = _flat_penalty(state, 0.3, True, 1.0, None, metric)
    theta = state.flat()
    h = 1e-5
    for j in range(theta.size):
        e = np.zeros(theta.size)
        e[j] = h
        up = _flat_penalty(state.with_flat(theta + e), 0.3, True, 1.0, None, metric)
        down = _flat_penalty(state.with_flat(theta - e), 0.3, True, 1.0, None, metric)
        assert (up[0] - down[0]) / (2 * h) == pytest.approx(grad[j], abs=1e-8)
        np.testing.assert_allclose((up[1] - down[1]) / (2 * h), hess[:, j], atol=1e-8)
    # the centred class logits: adding the same vector to every class's (and the
    # reference's zero) logits, i.e. nothing to the probabilities, leaves it unchanged
    B = state.coef[..., 1:]
    full = np.concatenate([B, np.zeros((2, 1, 3))], axis=1)
    centred = full - full.mean(axis=1, keepdims=True)
    experts_only = _flat_penalty(state, (0.3, 0.0), True, 1.0, None, metric)[0]
    assert -experts_only == pytest.approx(0.5 * 0.3 * np.sum(centred**2), rel=1e-12)


def _one_extreme_response(family, seed):
    """300 rows of counts 0-10 (Poisson) or values in [0.2, 7.2] (Gamma), one of them
    extreme: a count of 1000, or a value of 1e-10."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((300, 2))
    if family == "poisson":
        y = rng.poisson(np.exp(0.5 + 0.5 * X[:, 0])).astype(float).clip(0, 10)
        y[7] = 1000.0
    else:
        g = rng.gamma(4.0, np.exp(0.3 * X[:, 0]) / 4.0)
        y = 0.2 + 7.0 * (g - g.min()) / (g.max() - g.min())
        y[5] = 1e-10
    return X, y


@pytest.mark.parametrize("family", ["poisson", "gamma"])
def test_one_extreme_response_does_not_make_predictions_explode_under_the_prior(family):
    # By maximum likelihood an expert follows the one extreme row with a steep slope:
    # measured on data seeds 0-4, largest means on the training inputs 1e3-1.4e14 for
    # the counts and 3.2-1.5e44 for the Gamma values.  Under the unit-information prior
    # (lambda = 1 row) every prediction stays within the range of the responses
    # (measured at most 105 and 4.43).  A tenth of it is not enough for the counts:
    # the row of 1000 is worth about 3 600 nats to an expert that follows it, and at
    # lambda = 0.1 seeds 2 and 3 reach 3.3e3 and 1.3e6 (lambda = 0.5: at most 170).
    for seed in range(5):
        X, y = _one_extreme_response(family, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the extreme row's own expert may collapse
            est = MixtureOfExpertsRegressor(
                2, family=family, prior_strength=1.0, random_state=0
            ).fit(X, y)
        pred = est.predict(X)
        assert np.all(np.isfinite(pred))
        assert pred.max() <= y.max() and pred.min() >= 0.0, (seed, pred.min(), pred.max())
