"""Zero-inflated count experts: expert 0 a point mass at zero (ZIP, ZINB)."""

import pickle

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, gammaln, log_expit

from moelearn import MixtureOfExpertsRegressor, load
from moelearn.families import ZeroInflated, ZeroInflatedPoisson, get_family


def _zip_sample(n, seed, nb_shape=None):
    """Zero model logit -0.5 + 1.0 z, count model log-rate 1.0 + 0.5 x."""
    rng = np.random.default_rng(seed)
    x, z = rng.standard_normal(n), rng.standard_normal(n)
    zero = rng.random(n) < expit(-0.5 + 1.0 * z)
    lam = np.exp(1.0 + 0.5 * x)
    if nb_shape is not None:
        lam = lam * rng.gamma(nb_shape, 1.0 / nb_shape, size=n)
    y = np.where(zero, 0, rng.poisson(lam)).astype(float)
    return np.column_stack([x, z]), y


def _zip_nll(theta, x, z, y):
    """Minus the zero-inflated Poisson log-likelihood, written out (an independent fit)."""
    b0, b1, g0, g1 = theta
    eta = b0 + b1 * x
    logit = g0 + g1 * z
    count = y * eta - np.exp(eta) - gammaln(y + 1)  # log Poisson(y | e^eta)
    with_zero = np.logaddexp(log_expit(logit), log_expit(-logit) + count)
    return -np.sum(np.where(y == 0, with_zero, log_expit(-logit) + count))


def _zinb_nll(theta, x, z, y):
    b0, b1, g0, g1, log_shape = theta
    mu, shape = np.exp(b0 + b1 * x), np.exp(log_shape)
    logit = g0 + g1 * z
    count = (
        gammaln(y + shape)
        - gammaln(shape)
        - gammaln(y + 1)
        + shape * np.log(shape / (shape + mu))
        + y * np.log(mu / (shape + mu))
    )
    with_zero = np.logaddexp(log_expit(logit), log_expit(-logit) + count)
    return -np.sum(np.where(y == 0, with_zero, log_expit(-logit) + count))


def _fit(family, X, y, **kw):
    # maximum likelihood: these tests compare the zero-inflated likelihood with independent fits
    kw.setdefault("prior_strength", 0.0)
    return MixtureOfExpertsRegressor(
        n_experts=2,
        family=family,
        gating_features=[1],
        expert_features=[0],
        random_state=0,
        **kw,
    ).fit(X, y)


def _as_zip_theta(est):
    # the gate is centred over (point mass, count expert): the zero logit is twice row 0
    return np.array(
        [est.expert_bias_[1], est.experts_[1, 0], 2 * est.gating_bias_[0], 2 * est.gating_[0, 0]]
    )


def test_zip_equals_an_independent_maximum_likelihood_fit():
    X, y = _zip_sample(1500, seed=0)
    est = _fit("zero-inflated-poisson", X, y)
    ref = minimize(
        _zip_nll, np.zeros(4), args=(X[:, 0], X[:, 1], y), method="BFGS", options={"gtol": 1e-8}
    )
    assert est.converged_ and ref.success
    # the same optimum: the log-likelihoods to 1e-6 nats, the parameters to 1e-4
    assert est.log_density(X, y).sum() == pytest.approx(-ref.fun, abs=1e-6)
    np.testing.assert_allclose(_as_zip_theta(est), ref.x, atol=1e-4)
    # the point mass has no parameters: 2 count coefficients + 2 gate coefficients
    assert est.n_parameters_ == 4
    np.testing.assert_array_equal(est.experts_[0], 0.0)
    assert est.expert_bias_[0] == 0.0


def test_zinb_equals_an_independent_maximum_likelihood_fit():
    X, y = _zip_sample(1500, seed=1, nb_shape=2.0)
    est = _fit("zero-inflated-negative-binomial", X, y)
    ref = minimize(
        _zinb_nll, np.zeros(5), args=(X[:, 0], X[:, 1], y), method="BFGS", options={"gtol": 1e-8}
    )
    assert est.log_density(X, y).sum() == pytest.approx(-ref.fun, abs=1e-5)
    np.testing.assert_allclose(_as_zip_theta(est), ref.x[:4], atol=1e-3)
    # noise_std holds the count expert's coefficient of variation 1 / sqrt(shape)
    assert est.noise_std_[1] == pytest.approx(np.exp(-0.5 * ref.x[4]), rel=1e-3)
    assert est.n_parameters_ == 5


def test_zip_recovers_the_truth_within_its_standard_errors():
    X, y = _zip_sample(4000, seed=2)
    est = _fit("zero-inflated-poisson", X, y, compute_standard_errors=True)
    se = est.standard_errors_
    theta = _as_zip_theta(est)
    errors = np.array(
        [se.expert_bias[1], se.experts[1, 0], 2 * se.gating_bias[0], 2 * se.gating[0, 0]]
    )
    # 4 standard errors: a false alarm below 1e-4 per coordinate
    assert np.all(np.abs(theta - [1.0, 0.5, -0.5, 1.0]) < 4 * errors)
    assert np.all(errors < 0.1)  # n = 4000 identifies every coordinate well
    table = est.summary()
    groups = {row.group for row in table.rows}
    assert "expert 0" not in groups and "expert 1" in groups
    assert "point mass at zero" in str(table)
    assert table.n_parameters == 4


def test_zip_predictions_and_sampling():
    X, y = _zip_sample(3000, seed=3)
    est = _fit("zero-inflated-poisson", X, y)
    gate = est.predict_gating(X)
    lam = np.exp(est.expert_bias_[1] + est.experts_[1, 0] * X[:, 0])
    np.testing.assert_allclose(est.predict(X), gate[:, 1] * lam, rtol=1e-10)
    np.testing.assert_allclose(est.predict_experts(X)[:, 0], 0.0)
    # P(y = 0 | x) = pi + (1 - pi) e^-lam; the sampled share of zeros matches it within
    # 4 binomial standard errors of 3000 draws
    p0 = gate[:, 0] + gate[:, 1] * np.exp(-lam)
    draws = est.sample_y(X, random_state=0)[:, 0]  # one draw per row
    assert abs(np.mean(draws == 0) - p0.mean()) < 4 * np.sqrt(p0.mean() * (1 - p0.mean()) / 3000)
    lo, hi = est.predict_interval(X[:50], alpha=0.1).T
    assert np.all(lo == np.round(lo)) and np.all(hi == np.round(hi)) and np.all(lo >= 0)


def test_zip_saved_and_pickled(tmp_path):
    X, y = _zip_sample(600, seed=4)
    est = _fit("zero-inflated-poisson", X, y)
    path = tmp_path / "zip.npz"
    est.save(path)
    back = load(path)
    assert back.params_.family_object.point_masses == 1
    np.testing.assert_allclose(back.log_density(X, y), est.log_density(X, y), rtol=1e-12)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=1e-12)
    assert back.n_parameters_ == est.n_parameters_


def test_zero_inflated_mixture_of_two_count_experts():
    rng = np.random.default_rng(5)
    n = 3000
    x = rng.standard_normal(n)
    kind = rng.choice(3, size=n, p=[0.3, 0.35, 0.35])  # structural zero, low and high rates
    rate = np.where(kind == 1, np.exp(0.2 + 0.3 * x), np.exp(2.0 - 0.4 * x))
    y = np.where(kind == 0, 0.0, rng.poisson(rate))
    est = MixtureOfExpertsRegressor(
        n_experts=3, family="zero-inflated-poisson", gating_features=[], random_state=0
    ).fit(x[:, None], y)
    # 2 count experts x 2 coefficients + 2 free mixing weights
    assert est.n_parameters_ == 6
    order = 1 + np.argsort(est.expert_bias_[1:])
    # about 1000 rows per count expert: intercept and slope errors near 0.05; 5 of them
    np.testing.assert_allclose(est.expert_bias_[order], [0.2, 2.0], atol=0.25)
    np.testing.assert_allclose(est.experts_[order, 0], [0.3, -0.4], atol=0.25)
    # the weight of the point mass: 0.3 within 5 binomial standard errors of n rows
    assert est.predict_gating(x[:1, None])[0, 0] == pytest.approx(0.3, abs=5 * 0.0084)


def test_zero_inflated_bad_input():
    X, y = _zip_sample(200, seed=6)
    with pytest.raises(ValueError, match="n_experts >= 2"):
        MixtureOfExpertsRegressor(n_experts=1, family="zero-inflated-poisson").fit(X, y)
    with pytest.raises(ValueError, match="y >= 0"):
        _fit("zero-inflated-poisson", X, y - 1.0)
    with pytest.raises(ValueError, match="count family"):
        ZeroInflated(get_family("gaussian"))
    with pytest.raises(ValueError, match="not bound"):
        ZeroInflatedPoisson().log_density(y, np.zeros((len(y), 2)), np.zeros((2, 0)))


def test_zero_inflated_on_the_command_line(tmp_path, capsys):
    import pandas as pd

    from moelearn.cli import main

    X, y = _zip_sample(400, seed=7)
    path = tmp_path / "counts.csv"
    pd.DataFrame({"x": X[:, 0], "z": X[:, 1], "y": y}).to_csv(path, index=False)
    model = tmp_path / "zip.npz"
    args = [
        "fit",
        str(path),
        "--target",
        "y",
        "--experts",
        "2",
        "--family",
        "zero-inflated-poisson",
        "--gating-features",
        "z",
        "--expert-features",
        "x",
        "--output",
        str(model),
    ]
    assert main(args) == 0
    est = _fit("zero-inflated-poisson", X, y, prior_strength="auto")  # the command's default
    assert f"log-likelihood {est.log_density(X, y).sum():.6g}" in capsys.readouterr().out
    assert main(["summary", str(model), str(path)]) == 0
    assert "point mass at zero" in capsys.readouterr().out
