"""Negative-binomial (NB2) experts: the family against independent fits and known truths."""

import pickle

import numpy as np
import pytest
from scipy import optimize, stats

import moelearn
from moelearn import MixtureOfExpertsRegressor
from moelearn.families import NegativeBinomial


def _one_expert(n, seed, theta=2.5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    mu = np.exp(1.0 + 0.5 * X[:, 0] - 0.3 * X[:, 1])
    y = rng.poisson(rng.gamma(theta, mu / theta)).astype(float)
    return X, y


def _two_experts(n, seed):
    """Two NB2 experts (shapes 5 and 1.5) and a logistic gate on column 1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    first = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * X[:, 1]))
    mu = np.where(first, np.exp(2.0 + 0.8 * X[:, 0]), np.exp(0.2 - 0.6 * X[:, 0]))
    theta = np.where(first, 5.0, 1.5)
    y = rng.poisson(rng.gamma(theta, mu / theta)).astype(float)
    truth = {
        "experts": np.array([[0.8, 0.0], [-0.6, 0.0]]),
        "bias": np.array([2.0, 0.2]),
        "cv": 1.0 / np.sqrt([5.0, 1.5]),
        "gate": np.array([[0.0, 1.0], [0.0, -1.0]]),  # centred: +-1 on column 1
    }
    return X, y, truth


def test_one_expert_equals_an_independent_maximum_likelihood_fit():
    # scipy's NB pmf and a generic optimiser, no moelearn code: the same optimum
    X, y = _one_expert(2000, seed=1)
    est = MixtureOfExpertsRegressor(
        1, family="negative-binomial", prior_strength=0.0, random_state=0
    ).fit(X, y)

    def nll(theta):
        b, a0, a1, log_shape = theta
        mu = np.exp(b + a0 * X[:, 0] + a1 * X[:, 1])
        shape = np.exp(log_shape)
        return -stats.nbinom.logpmf(y, shape, shape / (shape + mu)).sum()

    ref = optimize.minimize(nll, np.zeros(4), method="BFGS", options={"gtol": 1e-9})
    assert est.log_likelihood_ * len(y) == pytest.approx(-ref.fun, abs=1e-6)
    # at a maximum to 1e-6 nats the parameters agree to about sqrt(1e-6 / n * SE^-2) ~ 1e-4
    np.testing.assert_allclose(est.expert_bias_, [ref.x[0]], atol=1e-4)
    np.testing.assert_allclose(est.experts_[0], ref.x[1:3], atol=1e-4)
    np.testing.assert_allclose(est.noise_std_, [np.exp(-0.5 * ref.x[3])], atol=1e-4)


def test_two_experts_recover_known_parameters_within_four_standard_errors():
    # n = 4000; each estimate within 4 of its own standard errors of the truth (a
    # correct fit misses one of the 14 comparisons with probability about 1e-3)
    X, y, truth = _two_experts(4000, seed=2)
    est = MixtureOfExpertsRegressor(
        2, family="negative-binomial", compute_standard_errors=True, random_state=0
    ).fit(X, y)
    order = np.argsort(-est.expert_bias_)  # the expert with the larger intercept first
    se = est.standard_errors_
    for fitted, err, true in (
        (est.experts_[order], se.experts[order], truth["experts"]),
        (est.expert_bias_[order], se.expert_bias[order], truth["bias"]),
        (est.noise_std_[order], se.noise_std[order], truth["cv"]),
        (est.gating_[order], se.gating[order], truth["gate"]),
    ):
        assert np.all(np.abs(fitted - true) <= 4.0 * err), (fitted, true, err)
    assert est.converged_


def test_nests_the_poisson_fit():
    # on Poisson counts the NB fit reaches the Poisson maximum (its limit, shape -> inf)
    # or higher: it has one more free parameter per expert
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1500, 2))
    y = rng.poisson(np.exp(0.5 + 0.4 * X[:, 0])).astype(float)
    pois = MixtureOfExpertsRegressor(1, family="poisson", random_state=0).fit(X, y)
    nb = MixtureOfExpertsRegressor(1, family="negative-binomial", random_state=0).fit(X, y)
    assert nb.log_likelihood_ >= pois.log_likelihood_ - 1e-9
    # and the gain is what a chi-square with one degree of freedom allows (< 15 nats
    # with probability 1 - 5e-8), so the shape ends large: nearly Poisson
    assert (nb.log_likelihood_ - pois.log_likelihood_) * len(y) < 7.5
    assert nb.noise_std_[0] < 0.2
    np.testing.assert_allclose(nb.experts_, pois.experts_, atol=0.05)


def test_out_of_core_equals_in_memory(tmp_path):
    X, y, _ = _two_experts(2500, seed=4)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    kw = dict(family="negative-binomial", random_state=0)
    a = MixtureOfExpertsRegressor(2, chunk_size=600, **kw).fit(Xm, ym)
    b = MixtureOfExpertsRegressor(2, **kw).fit(X, y)
    np.testing.assert_allclose(a.experts_, b.experts_, atol=1e-8)
    np.testing.assert_allclose(a.gating_, b.gating_, atol=1e-8)
    np.testing.assert_allclose(a.noise_std_, b.noise_std_, atol=1e-8)
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, abs=1e-10)


def test_predictions_intervals_samples_and_persistence(tmp_path):
    X, y, _ = _two_experts(1500, seed=5)
    est = MixtureOfExpertsRegressor(2, family="negative-binomial", random_state=0).fit(X, y)
    rows = X[:4]
    lo, hi = est.predict_interval(rows).T
    assert np.all(lo == np.round(lo)) and np.all(hi == np.round(hi)) and np.all(lo <= hi)
    draws = est.sample_y(rows, n_samples=4000, random_state=0)
    assert np.all(draws == np.round(draws)) and np.all(draws >= 0)
    # the sample mean within 5 standard errors of the predicted mean
    se = draws.std(axis=1) / np.sqrt(draws.shape[1])
    assert np.all(np.abs(draws.mean(axis=1) - est.predict(rows)) < 5 * se)
    # the quantiles are the mixture's: its CDF at the q-quantile is at least q
    q = est.predict_quantiles(rows, [0.1, 0.5, 0.9])
    emp = (draws[:, :, None] <= q[:, None, :]).mean(axis=1)
    assert np.all(emp >= np.array([0.1, 0.5, 0.9]) - 0.04)  # 5 binomial sigma at 4000
    path = tmp_path / "nb.npz"
    est.save(path)
    back = moelearn.load(path)
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)
    np.testing.assert_allclose(back.log_density(X, y), est.log_density(X, y), rtol=1e-12)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=0)
    assert "cv[0]" in str(est.summary())


def test_shared_shape_and_bad_counts():
    X, y, _ = _two_experts(800, seed=6)
    shared = MixtureOfExpertsRegressor(
        2, family="negative-binomial", noise="shared", random_state=0
    ).fit(X, y)
    assert np.ndim(shared.params_.noise_std) == 0
    per = MixtureOfExpertsRegressor(2, family="negative-binomial", random_state=0).fit(X, y)
    assert shared.params_.n_parameters() == per.params_.n_parameters() - 1
    with pytest.raises(ValueError, match="negative-binomial"):
        MixtureOfExpertsRegressor(2, family="negative-binomial").fit(X, np.r_[y[:-1], -1.0])
    with pytest.raises(ValueError, match="shape_max"):
        NegativeBinomial(shape_max=0.0)
