"""Coefficients shared by every expert (``shared_features``): against profiling and truths."""

import pickle

import numpy as np
import pandas as pd
import pytest

import moelearn
from moelearn import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor, MoEParams, load
from moelearn.cli import main


def _poisson(n, seed):
    """Two Poisson experts on column 0, a common slope 0.4 on column 1, the gate on column 2."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    first = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * X[:, 2]))
    eta = np.where(first, 0.5 + 0.8 * X[:, 0], 1.5 - 0.5 * X[:, 0]) + 0.4 * X[:, 1]
    return X, rng.poisson(np.exp(eta)).astype(float)


def _gaussian(n, seed, k=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    first = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * X[:, 2]))
    y = np.where(first, 1.0 + 2.0 * X[:, 0], -1.0 - 1.0 * X[:, 0]) + 0.7 * X[:, 1]
    return X, y + 0.3 * rng.normal(size=n)


def _profile(shared, X, y, b):
    """The log-likelihood with the shared coefficient fixed at ``b`` through an offset.

    The profiled model: the same gate (columns 0-2), experts on columns 0 and 2, and
    ``b * x1`` in column 3 as the offset; warm-started at the shared fit.
    """
    p = shared.params_
    init = MoEParams(
        p.experts[:, [0, 2]],
        p.gating,
        p.expert_bias,
        p.gating_bias,
        None,
        family="poisson",
        gating_features=np.array([True, True, True, False]),
        expert_features=np.array([True, False, True, False]),
        offset_feature=3,
    )
    est = MixtureOfExpertsRegressor(
        2,
        family="poisson",
        gating_features=[0, 1, 2],
        expert_features=[0, 2],
        offset=3,
        init_params=init,
    )
    return est.fit(np.c_[X, b * X[:, 1]], y).log_likelihood_ * len(y)


def test_a_shared_coefficient_is_offset_profiling_at_the_optimum():
    X, y = _poisson(1500, seed=0)
    shared = MixtureOfExpertsRegressor(
        2, family="poisson", shared_features=[1], random_state=0
    ).fit(X, y)
    assert shared.converged_
    b = shared.params_.experts[0, 1]
    assert shared.params_.experts[1, 1] == b
    total = shared.log_likelihood_ * len(y)
    # the profile at b reproduces the shared fit (both maximise the same likelihood)
    assert _profile(shared, X, y, b) == pytest.approx(total, abs=1e-6)
    # and b maximises the profile; its curvature is the information of the shared
    # coordinate: the standard error within 3% (the profile is quadratic to O(delta))
    se = shared.standard_errors(X, y).experts[0, 1]
    delta = 0.2 * se
    drops = [total - _profile(shared, X, y, b + s * delta) for s in (-1.0, 1.0)]
    assert min(drops) > 0
    se_profile = delta / np.sqrt(2.0 * np.mean(drops))
    assert se_profile == pytest.approx(se, rel=0.03)


def test_recovers_known_parameters_within_four_standard_errors():
    # n = 3000: each estimate within 4 of its standard errors (a 6e-5 chance each
    # under normality), the shared slope among them
    X, y = _gaussian(3000, seed=1)
    est = MixtureOfExpertsRegressor(2, shared_features=[1], random_state=0).fit(X, y)
    se = est.standard_errors(X, y)
    order = np.argsort(est.expert_bias_)  # the expert with intercept -1 first
    truth = np.array([[-1.0, 0.7, 0.0], [2.0, 0.7, 0.0]])
    assert np.all(np.abs(est.experts_[order] - truth) <= 4 * se.experts[order])
    assert np.all(np.abs(est.expert_bias_[order] - [-1.0, 1.0]) <= 4 * se.expert_bias[order])
    assert se.experts[0, 1] == se.experts[1, 1] > 0


def test_counted_once_shown_once_with_shared_noise_too():
    X, y = _gaussian(1200, seed=2)
    common = dict(n_experts=3, random_state=0, noise="shared")
    free = MixtureOfExpertsRegressor(**common).fit(X, y)
    tied = MixtureOfExpertsRegressor(shared_features=[0, 1], **common).fit(X, y)
    # two slopes shared by three experts: 2 x (3 - 1) parameters fewer
    assert tied.n_parameters_ == free.n_parameters_ - 4
    assert np.ptp(tied.experts_[:, :2], axis=0).max() == 0.0
    assert np.ndim(tied.noise_std_) == 0
    total = tied.log_density(X, y).sum()
    assert tied.bic(X, y) == pytest.approx(-2 * total + tied.n_parameters_ * np.log(len(y)))
    # the free model nests the shared one
    assert free.log_likelihood_ >= tied.log_likelihood_ - 1e-9
    summary = tied.summary(X, y)
    assert summary.n_parameters == tied.n_parameters_
    groups = [row.group for row in summary.rows]
    assert groups.count("all experts") == 2
    assert [row.name for row in summary.rows if row.group == "expert 0"] == ["x2", "intercept"]


def test_one_expert_shares_trivially():
    X, y = _gaussian(400, seed=3)
    kw = dict(gating_features=[], random_state=0)
    plain = MixtureOfExpertsRegressor(1, expert_features=[0, 1, 2], **kw).fit(X, y)
    shared = MixtureOfExpertsRegressor(1, shared_features=[1], **kw).fit(X, y)
    assert shared.n_parameters_ == plain.n_parameters_
    assert shared.log_likelihood_ == pytest.approx(plain.log_likelihood_, abs=1e-9)


def test_shared_columns_join_the_expert_features():
    X, y = _gaussian(600, seed=4)
    est = MixtureOfExpertsRegressor(
        2, expert_features=[0], gating_features=[2], shared_features=[1], random_state=0
    ).fit(X, y)
    np.testing.assert_array_equal(est.params_.expert_features, [True, True, False])
    np.testing.assert_array_equal(est.params_.shared_features, [False, True, False])
    assert est.experts_.shape == (2, 2) and est.experts_[0, 1] == est.experts_[1, 1]


def test_persistence_out_of_core_and_warm_start(tmp_path):
    X, y = _poisson(2500, seed=5)
    kw = dict(family="poisson", shared_features=[1], random_state=0)
    est = MixtureOfExpertsRegressor(2, **kw).fit(X, y)
    path = tmp_path / "shared.npz"
    est.save(path)
    back = moelearn.load(path)
    np.testing.assert_array_equal(back.params_.shared_features, est.params_.shared_features)
    assert back.n_parameters_ == est.n_parameters_
    np.testing.assert_allclose(back.log_density(X, y), est.log_density(X, y), rtol=1e-12)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=0)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    big = MixtureOfExpertsRegressor(2, chunk_size=700, **kw).fit(Xm, ym)
    np.testing.assert_allclose(big.experts_, est.experts_, atol=1e-8)
    np.testing.assert_allclose(big.gating_, est.gating_, atol=1e-8)
    assert big.log_likelihood_ == pytest.approx(est.log_likelihood_, abs=1e-10)
    refit = MixtureOfExpertsRegressor(2, init_params=est.params_, **kw).fit(X, y)
    assert refit.log_likelihood_ == pytest.approx(est.log_likelihood_, abs=1e-8)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_classifier_shares_log_odds_slopes(tmp_path, n_classes):
    rng = np.random.default_rng(6)
    n = 1500
    X = rng.normal(size=(n, 3))
    first = rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * X[:, 2]))
    scores = np.stack(
        [np.where(first, 1.5, -1.5) * X[:, 0] + 1.0 * X[:, 1] + c for c in range(n_classes - 1)]
        + [np.zeros(n)],
        axis=1,
    )
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    free = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    clf = MixtureOfExpertsClassifier(2, shared_features=[1], random_state=0).fit(X, y)
    q = n_classes - 1
    assert clf.n_parameters_ == free.n_parameters_ - q
    assert np.all(clf.experts_[0, :, 1] == clf.experts_[1, :, 1])
    # the shared slope: +1 for class 0 against the last class (multinomial), -1 for the
    # log-odds of class 1 (binary); within four standard errors
    truth = -1.0 if n_classes == 2 else 1.0
    se = clf.standard_errors(X, y).experts.reshape(2, q, 3)
    assert abs(clf.experts_[0, 0, 1] - truth) < 4 * se[0, 0, 1]
    assert se[0, 0, 1] == se[1, 0, 1] > 0
    path = tmp_path / "clf.npz"
    clf.save(path)
    back = moelearn.load(path)
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), rtol=1e-12)
    assert back.n_parameters_ == clf.n_parameters_
    summary = clf.summary(X, y)
    assert summary.n_parameters == clf.n_parameters_
    assert any(row.group.startswith("all experts") for row in summary.rows)


def test_binomial_experts_share_a_slope():
    rng = np.random.default_rng(7)
    n = 1200
    x = rng.normal(size=(n, 2))
    trials = rng.integers(1, 30, n)
    first = rng.random(n) < 0.5
    eta = np.where(first, 1.0 + 1.5 * x[:, 0], -1.0 - 1.0 * x[:, 0]) + 0.5 * x[:, 1]
    y = rng.binomial(trials, 1.0 / (1.0 + np.exp(-eta))).astype(float)
    X = np.c_[x, trials]
    est = MixtureOfExpertsRegressor(
        2, family="binomial", trials=2, gating_features=[], shared_features=[1], random_state=0
    ).fit(X, y)
    # 30 trials a row on average: the slope's standard error is about 0.01
    assert abs(est.experts_[0, 1] - 0.5) < 0.05 and est.experts_[1, 1] == est.experts_[0, 1]
    assert est.n_parameters_ == 2 * 2 + 1 + 1  # slopes and intercepts, the shared slope, gate


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(shared_features=[5]), "shared_features"),
        (dict(family="poisson", offset=1, shared_features=[1]), "offset column is also listed"),
        (dict(shared_features="x9"), "shared_features"),
    ],
)
def test_bad_shared_features_get_clear_errors(kwargs, message):
    X, y = _poisson(200, seed=8)
    kwargs.setdefault("family", "poisson")
    with pytest.raises(ValueError, match=message):
        MixtureOfExpertsRegressor(2, **kwargs).fit(X, y)


def test_moeparams_checks_the_shared_coefficients():
    masks = dict(
        gating_features=np.array([True, True]),
        expert_features=np.array([True, True]),
    )
    A = np.array([[1.0, 0.5], [2.0, 0.5]])
    p = MoEParams(A, np.zeros((2, 2)), shared_features=np.array([False, True]), **masks)
    assert p.n_shared == 1 and p.n_parameters() == MoEParams(A, np.zeros((2, 2))).n_parameters() - 1
    with pytest.raises(ValueError, match="equal across the experts"):
        MoEParams(A, np.zeros((2, 2)), shared_features=np.array([True, False]))
    with pytest.raises(ValueError, match="boolean mask"):
        MoEParams(A, np.zeros((2, 2)), shared_features=np.array([0, 1]))
    with pytest.raises(ValueError, match="must be expert features"):
        MoEParams(
            A[:, :1],
            np.zeros((2, 2)),
            gating_features=np.array([True, True]),
            expert_features=np.array([True, False]),
            shared_features=np.array([False, True]),
        )


def test_command_line_shared_features(tmp_path, capsys):
    X, y = _gaussian(800, seed=9)
    data = tmp_path / "train.csv"
    np.savetxt(data, np.c_[X, y], delimiter=",", header="a,b,c,y", comments="")
    model = tmp_path / "model.npz"
    argv = ["fit", str(data), "--target", "y", "--experts", "2", "--output", str(model)]
    assert main([*argv, "--shared-features", "b", "--seed", "0"]) == 0
    est = moelearn.load(model)
    np.testing.assert_array_equal(est.params_.shared_features, [False, True, False])
    capsys.readouterr()
    assert main(["summary", str(model), str(data), "--target", "y"]) == 0
    assert "all experts" in capsys.readouterr().out
    assert main([*argv, "--force", "--shared-features", "z"]) == 2
    assert "'z' not among the feature columns" in capsys.readouterr().err


def test_select_n_experts_counts_shared_coefficients_once():
    X, y = _gaussian(600, seed=10)
    result = moelearn.select_n_experts(X, y, candidates=[1, 2, 3], shared_features=[1])
    plain = moelearn.select_n_experts(X, y, candidates=[1, 2, 3])
    for shared, free, k in zip(result.rows, plain.rows, [1, 2, 3], strict=True):
        assert shared.n_parameters == free.n_parameters - (k - 1)
    assert result.n_experts == 2


# ------------------------------------------------------------- a shared intercept
def _contaminated(n, seed):
    """One line 1 + 2 x, noise sd 0.5 on 80% of the rows and 3 on the rest."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    wide = rng.random(n) < 0.2
    return x[:, None], 1.0 + 2.0 * x + np.where(wide, 3.0, 0.5) * rng.standard_normal(n)


def test_every_coefficient_shared_is_the_scale_mixture_of_a_direct_fit():
    from scipy.optimize import minimize
    from scipy.special import log_expit
    from scipy.stats import norm

    X, y = _contaminated(2000, seed=0)
    est = MixtureOfExpertsRegressor(
        n_experts=2,
        gating_features=[],
        shared_features=[0, "intercept"],
        prior_strength=0.0,  # compared with a maximum-likelihood fit by BFGS
        random_state=0,
    ).fit(X, y)

    def nll(t):
        r = y - t[0] - t[1] * X[:, 0]
        return -np.sum(
            np.logaddexp(
                log_expit(t[4]) + norm.logpdf(r, 0, np.exp(t[2])),
                log_expit(-t[4]) + norm.logpdf(r, 0, np.exp(t[3])),
            )
        )

    ref = minimize(
        nll, [0.0, 1.0, np.log(0.4), np.log(2.0), 0.5], method="BFGS", options={"gtol": 1e-8}
    )
    # the same optimum: log-likelihood to 1e-6 nats, the line and the noise levels to 1e-4
    assert est.log_density(X, y).sum() == pytest.approx(-ref.fun, abs=1e-6)
    np.testing.assert_allclose(est.expert_bias_, ref.x[0], atol=1e-4)
    np.testing.assert_allclose(est.experts_[:, 0], ref.x[1], atol=1e-4)
    np.testing.assert_allclose(np.sort(est.noise_std_), np.sort(np.exp(ref.x[2:4])), rtol=1e-4)
    assert est.n_parameters_ == 5  # a line, two noise levels, one weight
    rows = [(r.group, r.name) for r in est.summary().rows]
    assert ("all experts", "intercept") in rows and ("expert 0", "intercept") not in rows


def test_a_shared_intercept_alone_recovers_the_lines_through_one_point():
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.standard_normal(n)
    first = rng.random(n) < 0.5
    y = 1.0 + np.where(first, 2.0, -1.0) * x + 0.3 * rng.standard_normal(n)
    est = MixtureOfExpertsRegressor(
        n_experts=2,
        gating_features=[],
        shared_features=["intercept"],
        random_state=0,
        compute_standard_errors=True,
    ).fit(x[:, None], y)
    assert est.n_parameters_ == 6  # 2 slopes, 1 intercept, 2 noise levels, 1 weight
    assert est.expert_bias_[0] == est.expert_bias_[1]
    se = est.standard_errors_
    # about 1500 rows per expert with noise 0.3: errors near 0.008; 5 standard errors
    assert abs(est.expert_bias_[0] - 1.0) < 5 * se.expert_bias[0]
    np.testing.assert_allclose(np.sort(est.experts_[:, 0]), [-1.0, 2.0], atol=5 * 0.01)
    # saved, loaded, pickled and rebuilt from its parameters with the intercept still shared
    back = pickle.loads(pickle.dumps(est))
    assert back.params_.shared_intercept
    rebuilt = MixtureOfExpertsRegressor.from_params(est.params_)
    assert rebuilt.shared_features == ["intercept"]
    assert rebuilt.n_parameters_ == 6


def test_shared_intercept_round_trips_and_bad_input(tmp_path):
    X, y = _contaminated(400, seed=2)
    est = MixtureOfExpertsRegressor(
        n_experts=2, gating_features=[], shared_features=["intercept"], random_state=0
    ).fit(X, y)
    est.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.params_.shared_intercept
    np.testing.assert_allclose(back.log_density(X, y), est.log_density(X, y), rtol=1e-12)
    with pytest.raises(ValueError, match="fit_intercept=False"):
        MixtureOfExpertsRegressor(
            n_experts=2, shared_features=["intercept"], fit_intercept=False
        ).fit(X, y)
    # a column named "intercept" is that column
    frame = pd.DataFrame({"intercept": X[:, 0], "other": np.cos(X[:, 0])})
    named = MixtureOfExpertsRegressor(
        n_experts=2, gating_features=[], shared_features=["intercept"], random_state=0
    ).fit(frame, y)
    assert not named.params_.shared_intercept and named.params_.n_shared == 1
    # the classifier shares an intercept the same way
    labels = (y > np.median(y)).astype(int)
    clf = MixtureOfExpertsClassifier(
        n_experts=2, gating_features=[], shared_features=["intercept"], random_state=0
    ).fit(X, labels)
    assert clf.expert_bias_[0, 0] == clf.expert_bias_[1, 0]
    assert clf.n_parameters_ == 4
    clf.save(tmp_path / "c.npz")
    assert load(tmp_path / "c.npz").params_.shared_intercept


def test_shared_intercept_on_the_command_line(tmp_path, capsys):
    X, y = _contaminated(300, seed=3)
    path = tmp_path / "d.csv"
    pd.DataFrame({"x": X[:, 0], "y": y}).to_csv(path, index=False)
    args = [
        "fit",
        str(path),
        "--target",
        "y",
        "--experts",
        "2",
        "--gating-features",
        "",
        "--shared-features",
        "x,intercept",
        "--output",
        str(tmp_path / "m.npz"),
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert load(tmp_path / "m.npz").n_parameters_ == 5
    assert main(["summary", str(tmp_path / "m.npz"), str(path)]) == 0
    out = capsys.readouterr().out
    assert "all experts" in out and "expert 0" not in out


def test_ridge_penalises_a_shared_coefficient_once():
    # a coefficient the three experts share is one parameter: the ridge 0.5 a b^2 counts
    # it once (its gradient a b in the tied coordinate), as it counts a free one
    from moelearn.engine import State, Ties, _flat_penalty, penalty, tied_coordinates

    k, alpha, b = 3, 0.1, 2.0
    state = State(np.zeros((k, 1, 3)), np.zeros((k, 1)), np.zeros((k, 2)))
    state.coef[:, 0, 1] = b  # position 1 shared (0 is the intercept)
    state.coef[0, 0, 2] = 1.0  # a free slope of one expert
    tied = Ties(None, (1,))
    assert penalty(state, alpha, True, tied) == pytest.approx(0.5 * alpha * (b**2 + 1.0))
    assert penalty(state, alpha, True) == pytest.approx(0.5 * alpha * (k * b**2 + 1.0))
    _, grad, hess = _flat_penalty(state, alpha, True, 1.0, tied)
    expand, keep = tied_coordinates(state, tied)
    reduced = np.bincount(expand, weights=grad, minlength=keep.size)
    shared = expand[1]  # the reduced coordinate of expert 0's position 1
    assert reduced[shared] == pytest.approx(-alpha * b)
    assert np.bincount(expand, weights=np.diag(hess), minlength=keep.size)[shared] == pytest.approx(
        -alpha
    )
