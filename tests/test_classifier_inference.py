"""The classifier's summary() and standard errors: the shared inference code on class labels."""

import pickle

import numpy as np
import pytest
from scipy.special import expit, softmax

from moelearn import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor


def _logistic_se(X, beta):
    """Standard errors of a logistic regression at ``beta`` (intercept first), by hand."""
    U = np.column_stack([np.ones(len(X)), X])
    p = expit(U @ beta)
    info = U.T @ (U * (p * (1 - p))[:, None])
    return np.sqrt(np.diag(np.linalg.inv(info)))


def _multinomial_se(X, B):
    """Standard errors of a multinomial logit (last class the reference), by hand.

    ``B`` has shape (C - 1, 1 + d), intercept first; the information is
    ``sum_n kron(diag(p_n) - p_n p_n', u_n u_n')`` over the free classes.
    """
    U = np.column_stack([np.ones(len(X)), X])
    eta = np.column_stack([U @ B.T, np.zeros(len(X))])
    p = softmax(eta, axis=1)[:, :-1]
    q = B.shape[0]
    info = np.zeros((q * U.shape[1], q * U.shape[1]))
    for a in range(q):
        for b in range(q):
            w = p[:, a] * ((a == b) - p[:, b])
            info[a * U.shape[1] : (a + 1) * U.shape[1], b * U.shape[1] : (b + 1) * U.shape[1]] = (
                U.T @ (U * w[:, None])
            )
    return np.sqrt(np.diag(np.linalg.inv(info))).reshape(q, U.shape[1])


def test_one_expert_binary_standard_errors_are_logistic_regression():
    # K = 1 at alpha = 0 is plain logistic regression: its standard errors are those
    # of (U' W U)^-1 at the estimate; the optimiser's tolerance leaves about 1e-6
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 3))
    y = (rng.random(500) < expit(0.5 + X @ [1.0, -0.5, 0.0])).astype(int)
    clf = MixtureOfExpertsClassifier(1, alpha=0.0, prior_strength=0.0, random_state=0).fit(X, y)
    se = clf.standard_errors(X, y)
    beta = np.concatenate([clf.expert_bias_[0], clf.experts_[0, 0]])
    ref = _logistic_se(X, beta)
    np.testing.assert_allclose(se.expert_bias, [ref[0]], rtol=1e-6)
    np.testing.assert_allclose(se.experts, ref[1:][None, :], rtol=1e-6)
    assert se.noise_std is None


def test_one_expert_multinomial_standard_errors_by_hand():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 2))
    eta = np.column_stack([0.3 + X @ [1.0, 0.0], -0.2 + X @ [0.0, 1.0], np.zeros(600)])
    p = softmax(eta, axis=1)
    y = np.array(["a", "b", "c"])[(rng.random(600)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)]
    clf = MixtureOfExpertsClassifier(1, alpha=0.0, prior_strength=0.0, random_state=0).fit(X, y)
    se = clf.standard_errors(X, y)
    assert se.experts.shape == clf.experts_.shape == (1, 2, 2)
    B = np.concatenate([clf.expert_bias_[0][:, None], clf.experts_[0]], axis=1)
    ref = _multinomial_se(X, B)
    np.testing.assert_allclose(se.expert_bias[0], ref[:, 0], rtol=1e-6)
    np.testing.assert_allclose(se.experts[0], ref[:, 1:], rtol=1e-6)
    # the table: one block per class against the last, labelled with the classes
    table = clf.summary()
    groups = {row.group for row in table.rows}
    assert groups == {"expert 0, log-odds a : c", "expert 0, log-odds b : c"}
    assert "log-odds a : c" in str(table)


def test_binary_summary_equals_the_binomial_regressor_with_one_trial():
    # the classifier and a binomial regressor with one trial per row fit one model;
    # their optima differ by the regressor's 1e-6 ridge only, which moves standard
    # errors (relative) by far less than 1e-3
    rng = np.random.default_rng(2)
    n = 1500
    X = rng.standard_normal((n, 2))
    first = rng.random(n) < expit(2.0 * X[:, 1])
    eta = np.where(first, 2.5 * X[:, 0] - 1.0, -2.0 * X[:, 0] + 1.0)
    y = (rng.random(n) < expit(eta)).astype(int)
    clf = MixtureOfExpertsClassifier(
        2, alpha=0.0, prior_strength=0.0, gating_features=[1], expert_features=[0], random_state=0
    ).fit(X, y)
    Xt = np.column_stack([X, np.ones(n)])
    reg = MixtureOfExpertsRegressor(
        2,
        family="binomial",
        trials=2,
        gating_features=[1],
        expert_features=[0],
        prior_strength=0.0,
        random_state=0,
    ).fit(Xt, y.astype(float))
    a, b = clf.summary(), reg.summary()
    assert a.log_likelihood == pytest.approx(b.log_likelihood, abs=1e-4)
    assert a.n_parameters == b.n_parameters
    order = np.argsort(clf.expert_bias_[:, 0]), np.argsort(reg.expert_bias_)
    sa, sb = clf.standard_errors(X, y), reg.standard_errors(Xt, y.astype(float))
    np.testing.assert_allclose(sa.experts[order[0]], sb.experts[order[1]], rtol=1e-3)
    np.testing.assert_allclose(sa.expert_bias[order[0]], sb.expert_bias[order[1]], rtol=1e-3)
    np.testing.assert_allclose(
        np.abs(sa.gating[:, 0]), np.abs(sb.gating[:, 0]), rtol=1e-3
    )  # the gate's sign follows the experts' order


def test_summary_without_data_and_after_pickling():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 2))
    y = np.where(rng.random(300) < expit(X[:, 0]), "yes", "no")
    clf = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    table = clf.summary()
    assert table.log_likelihood == pytest.approx(clf.log_density(X, y).sum(), rel=1e-12)
    assert table.n_parameters == clf.n_parameters_
    assert table.bic == pytest.approx(clf.bic(X, y), rel=1e-12)
    frame = table.to_frame()
    assert len(frame) == len(table.rows)
    again = pickle.loads(pickle.dumps(clf))
    with pytest.raises(ValueError, match="summary\\(\\) without data"):
        again.summary()
    assert str(again.summary(X, y)) == str(table)
    with pytest.raises(ValueError, match="pass both X and y"):
        clf.summary(X)
    with pytest.raises(ValueError, match="labels"):
        clf.summary(X, np.where(y == "yes", "maybe", y))


def test_a_class_an_expert_never_predicts_has_no_standard_error():
    # expert 0 answers rows of classes a and b only: its log-odds of c run to minus
    # infinity (held by the ridge); the data carry no information on them, so their
    # standard errors are n/a rather than the inverse of rounding error
    rng = np.random.default_rng(4)
    n = 900
    X = rng.standard_normal((n, 2))
    left = X[:, 1] < 0
    y = np.where(left, np.where(X[:, 0] + rng.normal(0, 0.5, n) > 0, "a", "b"), "c")
    y[~left] = np.where(rng.random((~left).sum()) < expit(X[~left, 0]), "a", "c")
    clf = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    table = clf.summary()
    # the block of the class an expert never predicts: its intercept far below zero
    blocks = {}
    for r in table.rows:
        blocks.setdefault(r.group, []).append(r)
    never = [g for g, rows in blocks.items() if g.startswith("expert") and rows[-1].estimate < -15]
    assert len(never) == 1, sorted(blocks)
    assert all(np.isnan(r.std_error) for r in blocks[never[0]])
    # the same expert's other class, and the gate, keep finite standard errors
    expert = never[0].split(",")[0]
    other = [g for g in blocks if g.startswith(expert + ",") and g != never[0]]
    assert all(np.isfinite(r.std_error) and r.std_error < 10 for g in other for r in blocks[g])
    assert all(np.isfinite(r.std_error) for g in ("gate 0", "gate 1") for r in blocks[g])
    assert "n/a" in str(table)
