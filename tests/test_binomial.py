"""Binomial experts with each row's number of trials: against independent fits and truths."""

import pickle

import numpy as np
import pytest
from scipy import optimize, special, stats

import moelearn
from moelearn import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor, MoEParams
from moelearn.families import Bernoulli, Binomial


def _one_expert(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    trials = rng.integers(1, 25, size=n).astype(float)
    p = 1.0 / (1.0 + np.exp(-(0.4 + 0.8 * x[:, 0] - 0.5 * x[:, 1])))
    y = rng.binomial(trials.astype(int), p).astype(float)
    return np.column_stack([x, trials]), y


def _two_experts(n, seed):
    """Two logistic experts on column 0, a gate on column 1, the trials in column 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    trials = rng.integers(0, 30, size=n).astype(float)
    first = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * x[:, 1]))
    eta = np.where(first, 1.0 + 1.5 * x[:, 0], -1.0 - 1.0 * x[:, 0])
    y = rng.binomial(trials.astype(int), 1.0 / (1.0 + np.exp(-eta))).astype(float)
    truth = {
        "experts": np.array([[1.5], [-1.0]]),
        "bias": np.array([1.0, -1.0]),
        "gate": np.array([[1.0], [-1.0]]),  # centred: +-1 on column 1
    }
    return np.column_stack([x, trials]), y, truth


def _fit(k, X, y, **kw):
    # maximum likelihood: these tests compare the binomial likelihood with independent fits
    kw.setdefault("random_state", 0)
    kw.setdefault("prior_strength", 0.0)
    return MixtureOfExpertsRegressor(k, family="binomial", trials=2, **kw).fit(X, y)


def test_one_expert_equals_an_independent_maximum_likelihood_fit():
    # scipy's binomial pmf and a generic optimiser, no moelearn code: the same optimum
    X, y = _one_expert(2000, seed=1)
    est = _fit(1, X, y)

    A = np.column_stack([np.ones(len(y)), X[:, :2]])

    def nll(theta):
        eta = A @ theta
        value = -(y * special.log_expit(eta) + (X[:, 2] - y) * special.log_expit(-eta)).sum()
        return value, -A.T @ (y - X[:, 2] * special.expit(eta))

    ref = optimize.minimize(nll, np.zeros(3), jac=True, method="BFGS", options={"gtol": 1e-9})
    p = special.expit(A @ ref.x)
    assert est.log_likelihood_ * len(y) == pytest.approx(
        stats.binom.logpmf(y, X[:, 2], p).sum(), abs=1e-6
    )
    # at a maximum to 1e-6 nats the parameters agree to about 1e-4 (as for the NB test)
    np.testing.assert_allclose(est.expert_bias_, [ref.x[0]], atol=1e-4)
    np.testing.assert_allclose(est.experts_[0], ref.x[1:], atol=1e-4)
    # the trials column is neither a gate nor an expert feature, and is counted nowhere
    assert not est.params_.expert_features[2] and not est.params_.gating_features[2]
    assert est.n_parameters_ == 3


def test_two_experts_recover_known_parameters_within_four_standard_errors():
    # n = 3000; each of the 8 estimates within 4 of its own standard errors of the truth
    # (a correct fit misses one comparison with probability about 5e-4)
    X, y, truth = _two_experts(3000, seed=2)
    est = _fit(2, X, y, gating_features=[1], expert_features=[0], compute_standard_errors=True)
    order = np.argsort(-est.expert_bias_)
    se = est.standard_errors_
    for fitted, err, true in (
        (est.experts_[order], se.experts[order], truth["experts"]),
        (est.expert_bias_[order], se.expert_bias[order], truth["bias"]),
        (est.gating_[order], se.gating[order], truth["gate"]),
    ):
        assert np.all(np.abs(fitted - true) <= 4.0 * err), (fitted, true, err)
    assert est.converged_
    assert "trials" not in str(est.summary()).split("expert 0")[1]


def test_one_trial_is_the_classifiers_binary_fit():
    # with one trial per row the binomial density is the Bernoulli density row by row,
    # so the regressor and the classifier maximise the same likelihood
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1200, 2))
    first = rng.random(1200) < 1.0 / (1.0 + np.exp(-1.5 * X[:, 1]))
    eta = np.where(first, 2.0 + 2.0 * X[:, 0], -1.5 - 2.0 * X[:, 0])
    y = (rng.random(1200) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    Xt = np.column_stack([X, np.ones(len(y))])
    reg = _fit(2, Xt, y)
    clf = MixtureOfExpertsClassifier(2, alpha=0.0, prior_strength=0.0, random_state=0).fit(X, y)
    # the same optimum: total log-likelihoods within 1e-4 nats (both converge to 1e-8
    # relative; the regressor's 1e-6 ridge on its standardised coefficients costs it
    # 3e-5 nats here), and the same probabilities up to that ridge's pull on the
    # steep expert's slope (-5.007 against -5.019): 1e-3 at most
    assert reg.log_likelihood_ * len(y) == pytest.approx(clf.log_likelihood_ * len(y), abs=1e-4)
    np.testing.assert_allclose(reg.predict(Xt), clf.predict_proba(X)[:, 1], atol=2e-3)
    # family level: the same log-density, gradient and information
    eta = rng.normal(size=(50, 3))
    yb = (rng.random(50) < 0.5).astype(float)
    ones = Binomial().at_rows(np.ones(50))
    for a, b in zip(
        ones.derivatives(yb, eta, None), Bernoulli().derivatives(yb, eta, None), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_captures_overdispersion_that_expanded_bernoulli_rows_cannot():
    # rows whose success probability is 0.2 or 0.8 (a mixture over rows): the binomial
    # mixture separates them; the Bernoulli expansion (one row per trial, weighted)
    # mixes single trials, which all have P(success) = 0.5, so it gains nothing over K=1
    rng = np.random.default_rng(4)
    n = 400
    trials = np.full(n, 20.0)
    p = np.where(rng.random(n) < 0.5, 0.2, 0.8)
    y = rng.binomial(20, p).astype(float)
    X = np.column_stack([rng.normal(size=n), trials])
    kw = dict(family="binomial", trials=1, gating_features=[], expert_features=[])
    one = MixtureOfExpertsRegressor(1, random_state=0, **kw).fit(X, y)
    two = MixtureOfExpertsRegressor(2, random_state=0, **kw).fit(X, y)
    # the gain of the true K = 2 over K = 1 is about n (0.5 log 0.8/0.5 ...): hundreds of nats
    assert (two.log_likelihood_ - one.log_likelihood_) * n > 200
    np.testing.assert_allclose(np.sort(1 / (1 + np.exp(-two.expert_bias_))), [0.2, 0.8], atol=0.03)
    assert two.bic(X, y) < one.bic(X, y)


def test_out_of_core_equals_in_memory(tmp_path):
    X, y, _ = _two_experts(2500, seed=5)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    a = _fit(2, Xm, ym, chunk_size=600)
    b = _fit(2, X, y)
    np.testing.assert_allclose(a.experts_, b.experts_, atol=1e-8)
    np.testing.assert_allclose(a.gating_, b.gating_, atol=1e-8)
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, abs=1e-10)


def test_predictions_intervals_samples_and_persistence(tmp_path):
    X, y, _ = _two_experts(1500, seed=6)
    est = _fit(2, X, y)
    rows = X[:5]
    lo, hi = est.predict_interval(rows).T
    assert np.all(lo == np.round(lo)) and np.all(hi == np.round(hi))
    assert np.all((0 <= lo) & (lo <= hi) & (hi <= rows[:, 2]))
    draws = est.sample_y(rows, n_samples=4000, random_state=0)
    assert np.all(draws == np.round(draws)) and np.all((draws >= 0) & (draws <= rows[:, 2:3]))
    # the sample mean within 5 standard errors of the predicted mean (a number of successes)
    se = np.maximum(draws.std(axis=1), 1e-12) / np.sqrt(draws.shape[1])
    assert np.all(np.abs(draws.mean(axis=1) - est.predict(rows)) <= 5 * se + 1e-12)
    q = est.predict_quantiles(rows, [0.1, 0.5, 0.9])
    emp = (draws[:, :, None] <= q[:, None, :]).mean(axis=1)
    assert np.all(emp >= np.array([0.1, 0.5, 0.9]) - 0.04)  # 5 binomial sigma at 4000
    # a predicted mean never exceeds the row's trials, and is 0 with no trials
    assert np.all(est.predict(X) <= X[:, 2] + 1e-12)
    assert np.all(est.predict(X[X[:, 2] == 0]) == 0)
    path = tmp_path / "binomial.npz"
    est.save(path)
    back = moelearn.load(path)
    assert back.trials == 2 and back.params_.trials_feature == 2
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)
    np.testing.assert_allclose(back.log_density(X, y), est.log_density(X, y), rtol=1e-12)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=0)
    refit = _fit(2, X, y, init_params=est.params_)
    assert refit.log_likelihood_ == pytest.approx(est.log_likelihood_, abs=1e-8)


def test_trials_by_column_name():
    pd = pytest.importorskip("pandas")
    X, y, _ = _two_experts(600, seed=7)
    frame = pd.DataFrame(X, columns=["dose", "site", "n"])
    named = MixtureOfExpertsRegressor(
        2, family="binomial", trials="n", prior_strength=0.0, random_state=0
    )
    named.fit(frame, y)
    indexed = _fit(2, X, y)
    np.testing.assert_allclose(named.predict(frame), indexed.predict(X), rtol=1e-10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda X, y: (X, y, dict(trials=None)), "needs the column of each row's number"),
        (lambda X, y: (np.c_[X[:, :2], X[:, 2] + 0.5], y, {}), "integer >= 0"),
        (lambda X, y: (np.c_[X[:, :2], -X[:, 2]], y, {}), "integer >= 0"),
        (lambda X, y: (np.c_[X[:, :2], np.r_[np.nan, X[1:, 2]]], y, {}), "NaN|integer"),
        (lambda X, y: (X, y + 100.0, {}), "y <= the row's number of trials"),
        (lambda X, y: (X, y - 0.5, {}), "successes"),
        (lambda X, y: (X, y, dict(gating_features=[1, 2])), "trials column is also listed"),
        (lambda X, y: (X, y, dict(offset=2)), "same column"),
        # a tiny trials column is never rescaled (it holds counts): refused, not recursed on
        (lambda X, y: (np.c_[X[:, :2] * 1e-312, X[:, 2] * 1e-310], y, {}), "integer >= 0"),
    ],
)
def test_bad_trials_get_clear_errors(change, message):
    X, y, _ = _two_experts(200, seed=8)
    X, y, kw = change(X, y)
    trials = kw.pop("trials", 2)
    with pytest.raises(ValueError, match=message):
        MixtureOfExpertsRegressor(2, family="binomial", trials=trials, **kw).fit(X, y)


def test_trials_elsewhere_and_bad_prediction_rows_are_refused():
    X, y, _ = _two_experts(300, seed=9)
    with pytest.raises(ValueError, match="applies to binomial experts"):
        MixtureOfExpertsRegressor(2, family="poisson", trials=2).fit(X, y)
    est = _fit(2, X, y)
    with pytest.raises(ValueError, match="integer >= 0"):
        est.predict(np.c_[X[:, :2], np.full(len(X), 2.5)])
    with pytest.raises(ValueError, match="needs trials_feature"):
        MoEParams(
            np.zeros((2, 1)),
            np.zeros((2, 1)),
            family="binomial",
            gating_features=[False, True, False],
            expert_features=[True, False, False],
        )
    with pytest.raises(ValueError, match="applies to binomial"):
        MoEParams(
            np.zeros((2, 1)),
            np.zeros((2, 1)),
            family="poisson",
            trials_feature=2,
            gating_features=[False, True, False],
            expert_features=[True, False, False],
        )
    with pytest.raises(ValueError, match="Binomial\\(\\).at_rows"):
        Binomial().mean(np.zeros((3, 1)), None)
    with pytest.raises(ValueError, match="holds the trials of 3 rows"):
        Binomial().at_rows([1, 2, 3]).mean(np.zeros((4, 1)), None)


def test_the_torch_layer_refuses_binomial_experts():
    torch_module = pytest.importorskip("moelearn.torch")
    X, y, _ = _two_experts(300, seed=10)
    est = _fit(2, X, y)
    with pytest.raises(ValueError, match="no torch implementation"):
        torch_module.MoE.from_params(est)
