"""MixtureOfExpertsClassifier: recovery, separation, labels, weights, persistence, out of core."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import moelearn
from moelearn import MixtureOfExpertsClassifier


@pytest.mark.slow  # about a minute: scikit-learn's checks fit the classifier many times
def test_check_estimator():
    # no expected failures, sample-weight equivalence included
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(MixtureOfExpertsClassifier())


def _logistic_moe(n, n_classes, seed):
    """Two experts on columns 0-1, the gate on column 2; true class probabilities too."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    gate = 1 / (1 + np.exp(-3.0 * X[:, 2]))  # P(expert 0 | x)
    if n_classes == 2:
        e0 = 1 / (1 + np.exp(-(2.0 * X[:, 0] - 1.0)))
        e1 = 1 / (1 + np.exp(-(-2.0 * X[:, 1] + 0.5)))
        p1 = gate * e0 + (1 - gate) * e1
        proba = np.c_[1 - p1, p1]
    else:

        def soft(logits):
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        e0 = soft(np.c_[2 * X[:, 0], -2 * X[:, 0], np.zeros(n)])
        e1 = soft(np.c_[2 * X[:, 1] + 1, np.zeros(n), -2 * X[:, 1]])
        proba = gate[:, None] * e0 + (1 - gate[:, None]) * e1
    u = rng.random(n)
    y = (u[:, None] > np.cumsum(proba, axis=1)).sum(axis=1)
    return X, y, proba


@pytest.mark.parametrize("n_classes", [2, 3])
def test_recovers_class_probabilities(n_classes):
    # n = 20 000: parameter errors are O(n^-1/2) ~ 0.01 per coefficient, so the
    # fitted probabilities at fresh points are within 0.03 of the truth (mean
    # absolute error); one logistic regression, which cannot switch experts, is
    # off by more than 0.08 on the same data.
    X, y, _ = _logistic_moe(20_000, n_classes, seed=0)
    X_new, _, truth = _logistic_moe(2_000, n_classes, seed=1)
    clf = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    assert clf.converged_
    assert list(clf.classes_) == list(range(n_classes))
    err = np.abs(clf.predict_proba(X_new) - truth).mean()
    lr = LogisticRegression(max_iter=1000).fit(X, y)
    err_lr = np.abs(lr.predict_proba(X_new) - truth).mean()
    assert err < 0.03, err
    assert err_lr > 0.08, err_lr
    assert clf.experts_.shape == (2, n_classes - 1, 3)
    assert np.allclose(clf.predict_proba(X_new).sum(axis=1), 1.0)


def test_string_labels_and_unseen_labels():
    X, y, _ = _logistic_moe(1500, 3, seed=2)
    labels = np.array(["low", "mid", "high"])[y]
    clf = MixtureOfExpertsClassifier(2, random_state=0).fit(X, labels)
    assert list(clf.classes_) == ["high", "low", "mid"]
    assert set(clf.predict(X[:50])) <= {"high", "low", "mid"}
    assert np.all(np.isfinite(clf.log_density(X[:10], labels[:10])))
    # predicting never sees labels; scoring a label the model never saw is refused
    with pytest.raises(ValueError, match="not seen when fitting.*'extreme'"):
        clf.log_density(X[:3], ["low", "extreme", "mid"])


def test_single_class_is_refused():
    X = np.random.default_rng(0).standard_normal((50, 2))
    with pytest.raises(ValueError, match="at least 2 classes.*only one class"):
        MixtureOfExpertsClassifier(2).fit(X, np.full(50, "a"))


def test_separable_data():
    # perfectly separated classes: with the default prior (one row's worth, as
    # LogisticRegression(C=1) on standardised columns) or a small ridge the answer is
    # finite and no warning is given; without either the coefficients grow without
    # bound and the fit warns, still returning finite probabilities.
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 2))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        prior = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
        ridge = MixtureOfExpertsClassifier(2, alpha=1e-4, prior_strength=0.0, random_state=0)
        ridge.fit(X, y)
    assert np.all(np.isfinite(prior.experts_)) and np.all(np.isfinite(ridge.experts_))
    # the prior's pull leaves the row nearest the boundary (x0 = 0.0044) on the wrong
    # side, as scikit-learn's default does: 399 of 400
    assert prior.score(X, y) == 0.9975
    assert ridge.score(X, y) == 1.0
    with pytest.warns(ConvergenceWarning, match="separated"):
        plain = MixtureOfExpertsClassifier(2, alpha=0.0, prior_strength=0.0, random_state=0).fit(
            X, y
        )
    assert np.all(np.isfinite(plain.experts_))
    assert np.all(np.isfinite(plain.predict_proba(X)))
    assert plain.score(X, y) == 1.0


def test_unpenalised_fit_reaches_a_separated_supremum():
    # One expert can separate its region exactly (x0 > 0: y = [x1 > 0]); the other
    # region is noisy.  Without a ridge the likelihood then has no maximum, only a
    # supremum approached as the separating expert's and the gate's coefficients
    # grow.  The default search must enter that basin and follow it as far as a
    # fit started at the separated configuration itself (expert 0 = 10 x1, gate =
    # 10 x0) does: the two agree to 1e-3 nats (both stop where the remaining gain
    # per iteration is below the tolerance; measured 1e-4 or better on seeds 0-3),
    # and the fit warns that the answer is a finite stopping point.
    from moelearn.data import Data
    from moelearn.engine import State
    from moelearn.families import Bernoulli
    from moelearn.family_fit import fit_engine

    rng = np.random.default_rng(0)
    n = 300
    X = rng.standard_normal((n, 2))
    noisy = rng.random(n) < 1 / (1 + np.exp(-0.5 * X[:, 1]))
    y = np.where(X[:, 0] > 0, X[:, 1] > 0, noisy).astype(int)

    def separated(design, x_mean, x_scale, y_mean, y_scale):
        # in the engine's standardised columns (intercept first)
        coef = np.array([[[10.0 * x_mean[1] / x_scale[1], 0.0, 10.0]], [[0.0, 0.0, 0.0]]])
        gate = np.array([[10.0 * x_mean[0] / x_scale[0], 10.0, 0.0], [0.0, 0.0, 0.0]])
        return State(coef, np.zeros((2, 0)), gate)

    mask = np.ones(2, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = fit_engine(
            Data(X, y.astype(float)),
            Bernoulli(),
            2,
            mask,
            mask,
            init=separated,
            alpha=0.0,
            random_state=np.random.default_rng(0),
        )
    reference = ref.fit.log_likelihood * n
    with pytest.warns(ConvergenceWarning, match="separated"):
        clf = MixtureOfExpertsClassifier(2, alpha=0.0, prior_strength=0.0, random_state=0).fit(X, y)
    assert clf.log_density(X, y).sum() >= reference - 1e-3
    # the separating expert's slope has run far past the start's 10 / sd(x1)
    assert np.max(np.abs(clf.experts_)) > 30.0


def test_default_search_reaches_a_separated_supremum_a_short_screen_misses(monkeypatch):
    # Unpenalised, the likelihood of these data (n = 200, a quadratic log-odds that
    # no single logistic expert fits) has many suprema at infinity, one per way an
    # expert can separate the rows it is given.  The default search (the starts plus
    # random hard partitions of the rows, screened together by longer EM) reaches
    # the best one seen, -97.18 nats, from random_state 0 and 1 alike (to 0.01 nats:
    # both follow the same separated configuration until the gain per iteration is
    # below the tolerance); the engine's former screen (the same starts, 20 EM
    # iterations of one scoring step each, no partitions) stops at -100.0 to -103.3
    # on random_state 0-5, here 0-2: more than 2 nats short.  The fit warns that the
    # answer is a finite stopping point.
    import moelearn.engine as engine

    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 3))
    eta = 0.8 * X @ rng.standard_normal(3) + 0.5 * X[:, 0] ** 2 - 0.5
    y = (rng.random(200) < 1 / (1 + np.exp(-eta))).astype(int)
    lls = []
    for seed in (0, 1):
        with pytest.warns(ConvergenceWarning, match="separated"):
            clf = MixtureOfExpertsClassifier(
                2, alpha=0.0, prior_strength=0.0, random_state=seed
            ).fit(X, y)
        lls.append(clf.log_density(X, y).sum())
    assert abs(lls[0] - lls[1]) < 0.01, lls
    monkeypatch.setattr(engine, "DISCRETE_PARTITIONS", 0.0)
    monkeypatch.setattr(engine, "DISCRETE_SCREEN_ITER", 20)
    monkeypatch.setattr(moelearn.families.Bernoulli, "screen_steps", (1, 1))
    monkeypatch.setattr(engine, "DISCRETE_LONG", 0)
    monkeypatch.setattr(engine, "DISCRETE_ACCELERATE", False)
    short = []
    for seed in (0, 1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = MixtureOfExpertsClassifier(
                2, alpha=0.0, prior_strength=0.0, random_state=seed
            ).fit(X, y)
        short.append(clf.log_density(X, y).sum())
    assert min(lls) > max(short) + 2.0, (lls, short)


def test_integer_weights_equal_repeated_rows():
    X, y, _ = _logistic_moe(1200, 2, seed=4)
    w = np.random.default_rng(5).integers(0, 4, len(y))
    a = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y, sample_weight=w)
    b = MixtureOfExpertsClassifier(2, random_state=0).fit(np.repeat(X, w, 0), np.repeat(y, w))
    # the same optimum reached from different screens: equal to the optimiser's tolerance
    assert np.allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-4)
    with pytest.raises(ValueError, match="non-negative"):
        MixtureOfExpertsClassifier(2).fit(X, y, sample_weight=-np.ones(len(y)))


def test_covariate_roles_and_bic():
    X, y, _ = _logistic_moe(4000, 2, seed=6)
    clf = MixtureOfExpertsClassifier(
        2, gating_features=[2], expert_features=[0, 1], random_state=0
    ).fit(X, y)
    assert clf.gating_.shape == (2, 1)
    # experts: 2 x (2 slopes + intercept); gate: 1 x (1 slope + intercept)
    assert clf.n_parameters_ == 8
    full = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    assert clf.bic(X, y) < full.bic(X, y)  # the gate needs only column 2
    one = MixtureOfExpertsClassifier(1, random_state=0).fit(X, y)
    assert clf.bic(X, y) < one.bic(X, y)


def test_save_load_round_trip(tmp_path):
    X, y, _ = _logistic_moe(800, 3, seed=7)
    labels = np.array(["a", "b", "c"])[y]
    clf = MixtureOfExpertsClassifier(2, gating_features=[2], random_state=0).fit(X, labels)
    clf.save(tmp_path / "c.npz")
    back = moelearn.load(tmp_path / "c.npz")
    assert isinstance(back, MixtureOfExpertsClassifier)
    assert np.array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert list(back.classes_) == ["a", "b", "c"]
    assert back.n_parameters_ == clf.n_parameters_


def test_pipeline_and_grid_search():
    X, y, _ = _logistic_moe(600, 2, seed=8)
    pipe = make_pipeline(StandardScaler(), MixtureOfExpertsClassifier(random_state=0))
    grid = GridSearchCV(pipe, {"mixtureofexpertsclassifier__n_experts": [1, 2]}, cv=2)
    grid.fit(X, y)
    assert grid.best_params_["mixtureofexpertsclassifier__n_experts"] in (1, 2)


def test_memmap_equals_in_memory(tmp_path):
    X, y, _ = _logistic_moe(5000, 3, seed=9)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y.astype(float))
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    a = MixtureOfExpertsClassifier(2, chunk_size=1000, random_state=0).fit(Xm, ym)
    b = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y.astype(float))
    assert np.allclose(a.experts_, b.experts_, atol=1e-8)
    assert np.allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-8)


@pytest.mark.slow  # 10^6 rows streamed from disk: about a minute
def test_a_million_rows_out_of_core(tmp_path):
    n = 1_000_000
    X, y, truth = _logistic_moe(n, 2, seed=10)
    Xm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=float, shape=X.shape)
    Xm[:] = X
    ym = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=float, shape=(n,))
    ym[:] = y
    del X
    clf = MixtureOfExpertsClassifier(2, random_state=0).fit(Xm, ym)
    assert clf.converged_
    # at n = 10^6 the probabilities are within 0.01 of the truth on average
    assert np.abs(clf.predict_proba(Xm[:5000]) - truth[:5000]).mean() < 0.01


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_shared_likelihood_and_parameter_count(n_classes):
    # the classifier holds a MoEParams of Bernoulli or multinomial experts and its
    # log-density, responsibilities and criteria are the shared code's (MoEParams, one
    # count_parameters): the same numbers as computed from params_ directly
    from moelearn.model import count_parameters

    X, y, _ = _logistic_moe(600, n_classes, seed=8)
    clf = MixtureOfExpertsClassifier(2, gating_features=[2], random_state=0).fit(X, y)
    p = clf.params_
    assert p.family_object.name == ("bernoulli" if n_classes == 2 else "multinomial")
    codes = np.searchsorted(clf.classes_, y).astype(float)
    ll = p.log_likelihood(X, codes)
    np.testing.assert_allclose(clf.log_density(X, y), ll, rtol=1e-12)
    np.testing.assert_allclose(
        clf.predict_proba(X)[np.arange(len(y)), codes.astype(int)], np.exp(ll), rtol=1e-12
    )
    k = count_parameters(p.family_object, 2, p.gating_features, p.expert_features, True)
    assert clf.n_parameters_ == k == p.n_parameters()
    assert clf.bic(X, y) == pytest.approx(-2 * ll.sum() + k * np.log(len(y)), rel=1e-12)
    assert clf.aic(X, y) == pytest.approx(-2 * ll.sum() + 2 * k, rel=1e-12)
    np.testing.assert_allclose(
        clf.predict_responsibilities(X, y), p.posterior(X, codes), atol=1e-12
    )
    assert clf.log_likelihood_ == pytest.approx(ll.mean(), rel=1e-10)
    back = MixtureOfExpertsClassifier.from_params(p, clf.classes_)
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), atol=1e-14)
    assert back.bic(X, y) == pytest.approx(clf.bic(X, y), rel=1e-12)


def test_compute_standard_errors_at_fit():
    # standard_errors_ at fit are those standard_errors() gives later on the same rows;
    # integer weights count as frequencies (repeated rows); tiny inputs are refused
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 2))
    y = (X[:, 0] + 0.5 * rng.standard_normal(300) > 0).astype(int)
    # (with a fixed ridge: on these one-expert data the default prior leaves two constant
    # experts, and an unpenalised fit a separating one, whose standard errors are NaN, not
    # identified, in both)
    est = MixtureOfExpertsClassifier(2, random_state=0).fit(X, y)
    assert est.standard_errors_ is None
    opts = dict(compute_standard_errors=True, alpha=1e-4, prior_strength=0.0, random_state=0)
    est = MixtureOfExpertsClassifier(2, **opts).fit(X, y)
    later = est.standard_errors(X, y)
    assert np.allclose(est.standard_errors_.experts, later.experts, rtol=1e-10)
    assert np.allclose(est.standard_errors_.gating, later.gating, rtol=1e-10)
    w = rng.integers(1, 3, size=300)
    weighted = MixtureOfExpertsClassifier(2, **opts).fit(X, y, sample_weight=w)
    repeated = MixtureOfExpertsClassifier(2, **opts).fit(np.repeat(X, w, 0), np.repeat(y, w))
    # the two fits agree to about 1e-8 (test_integer_weights_equal_repeated_rows); their
    # standard errors to 1e-5 of their size
    assert np.allclose(
        weighted.standard_errors_.experts, repeated.standard_errors_.experts, rtol=1e-5
    )
    with pytest.raises(ValueError, match="compute_standard_errors=False"):
        MixtureOfExpertsClassifier(2, **opts).fit(X * 1e-80, y)
