"""The estimator with families of experts and separate gate and expert columns."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import moelearn
from moelearn import MixtureOfExpertsRegressor, MoEParams


def _draw(family, n, seed, gate_roles=True):
    """Two experts on column 0, the gate on column 1 (or constant), x uniform."""
    truth = MoEParams(
        experts=[[0.8], [-0.6]],
        gating=[[1.5], [-1.5]] if gate_roles else np.zeros((2, 0)),
        expert_bias=[1.0, 2.0] if family in ("poisson", "gamma") else [1.0, -1.0],
        gating_bias=[0.2, -0.2],
        noise_std={"gaussian": [0.3, 0.5], "student-t": [0.3, 0.5], "gamma": [0.3, 0.2]}.get(
            family
        ),
        family=family,
        df=[4.0, 20.0] if family == "student-t" else None,
        gating_features=np.array([False, gate_roles]),
        expert_features=np.array([True, False]),
    )
    X, y = moelearn.sample(truth, n, random_state=seed, inputs="uniform")
    return X, y, truth


@pytest.mark.parametrize("family", ["gaussian", "student-t", "poisson", "gamma"])
def test_recovery_within_standard_errors(family):
    # n = 4000: every coefficient within 4 standard errors of the truth (the
    # standard errors from the fitted observed information); a 4-sigma miss has
    # probability 6e-5 per coefficient under asymptotic normality.
    X, y, truth = _draw(family, 4000, seed=3)
    est = MixtureOfExpertsRegressor(
        2, family=family, gating_features=[1], expert_features=[0], random_state=0
    ).fit(X, y)
    assert est.converged_
    se = est.standard_errors(X, y)
    # label switching: match experts by their slopes and intercepts
    cost = (
        np.abs(est.experts_ - truth.experts.T).T
        + np.abs(est.expert_bias_[:, None] - truth.expert_bias[None, :]).T
    )
    _, order = linear_sum_assignment(cost.T)
    z_exp = (est.experts_[order] - truth.experts) / se.experts[order]
    z_bias = (est.expert_bias_[order] - truth.expert_bias) / se.expert_bias[order]
    gate_truth = truth.gating - truth.gating.mean(0)
    z_gate = (est.gating_[order] - gate_truth) / se.gating[order]
    assert np.all(np.abs(z_exp) < 4), z_exp
    assert np.all(np.abs(z_bias) < 4), z_bias
    assert np.all(np.abs(z_gate) < 4), z_gate
    if family in ("gaussian", "student-t", "gamma"):
        z_noise = (est.noise_std_[order] - truth.noise_vector) / se.noise_std[order]
        assert np.all(np.abs(z_noise) < 4), z_noise


def test_constant_gate_is_a_mixture_of_regressions():
    X, y, truth = _draw("gaussian", 2000, seed=5, gate_roles=False)
    est = MixtureOfExpertsRegressor(2, gating_features=[], expert_features=[0], random_state=0)
    est.fit(X, y)
    assert est.gating_.shape == (2, 0)
    # constant weights: the same gate for every row
    g = est.predict_gating(X)
    assert np.ptp(g, axis=0).max() < 1e-12
    # 2 x (1 slope + intercept + sigma) + 1 weight
    assert est.n_parameters_ == 7
    assert est.log_density(X, y).sum() == pytest.approx(est.log_likelihood_ * len(y))


def test_roles_by_name_and_mask_agree():
    pd = pytest.importorskip("pandas")
    X, y, _ = _draw("gaussian", 1500, seed=7)
    frame = pd.DataFrame(X, columns=["dose", "age"])
    by_name = MixtureOfExpertsRegressor(
        2, gating_features=["age"], expert_features=["dose"], random_state=0
    ).fit(frame, y)
    by_mask = MixtureOfExpertsRegressor(
        2, gating_features=[False, True], expert_features=np.array([True, False]), random_state=0
    ).fit(X, y)
    assert np.allclose(by_name.predict(frame), by_mask.predict(X), atol=1e-10)
    assert list(by_name.feature_names_in_) == ["dose", "age"]


def test_roles_errors():
    pd = pytest.importorskip("pandas")
    X, y, _ = _draw("gaussian", 300, seed=1)
    with pytest.raises(ValueError, match="gating_features.*out of range"):
        MixtureOfExpertsRegressor(2, gating_features=[5]).fit(X, y)
    with pytest.raises(ValueError, match="no column names"):
        MixtureOfExpertsRegressor(2, gating_features=["age"]).fit(X, y)
    with pytest.raises(ValueError, match="unknown columns"):
        MixtureOfExpertsRegressor(2, expert_features=["nope"]).fit(
            pd.DataFrame(X, columns=["a", "b"]), y
        )
    with pytest.raises(ValueError, match="twice"):
        MixtureOfExpertsRegressor(2, expert_features=[0, 0]).fit(X, y)
    with pytest.raises(ValueError, match="one entry per column"):
        MixtureOfExpertsRegressor(2, expert_features=[True]).fit(X, y)
    Xp, yp, _ = _draw("poisson", 300, seed=1)
    with pytest.raises(ValueError, match="noise='shared'.*'poisson' has none"):
        MixtureOfExpertsRegressor(2, family="poisson", noise="shared").fit(Xp, yp)
    for solver in ("tensor", "landscape", "gd-l2"):
        with pytest.raises(ValueError, match=f"solver='{solver}'.*Gaussian experts on all"):
            MixtureOfExpertsRegressor(2, family="student-t", solver=solver).fit(X, y)


@pytest.mark.parametrize("family", ["gaussian", "student-t", "gamma"])
def test_shared_noise_for_every_scale_family(family):
    # noise="shared" ties the noise parameter (sigma, the Gamma cv) across the experts,
    # with any covariate roles: one parameter fewer, a scalar noise_std_, a stationary
    # point in it (a 1% change of the shared value lowers the likelihood), one row in
    # the summary, and a finite standard error.
    X, y, _ = _draw(family, 2000, seed=5)
    kw = dict(family=family, gating_features=[1], expert_features=[0], random_state=0)
    own = MixtureOfExpertsRegressor(2, **kw).fit(X, y)
    tied = MixtureOfExpertsRegressor(2, noise="shared", **kw).fit(X, y)
    assert tied.converged_
    assert np.ndim(tied.noise_std_) == 0 and tied.n_parameters_ == own.n_parameters_ - 1
    total = tied.log_density(X, y).sum()
    # the nested model: its maximum is not above the per-expert one (both reach the
    # global optimum on these well-separated data)
    assert total <= own.log_density(X, y).sum() + 1e-6
    for factor in (0.99, 1.01):
        moved = tied.params_.copy()
        moved.noise_std = tied.noise_std_ * factor
        assert moved.log_likelihood(X, y).sum() < total
    assert tied.bic(X, y) == pytest.approx(-2 * total + tied.n_parameters_ * np.log(len(y)))
    se = tied.standard_errors(X, y)
    assert np.ndim(se.noise_std) == 0 and 0 < se.noise_std < 0.1 * tied.noise_std_
    text = str(tied.summary(X, y))
    assert "shared" in text


@pytest.mark.parametrize("solver", ["em", "gd-nll"])
def test_joint_baselines_fit_every_family(solver):
    # the baselines of the papers run on the one engine for any family and layout:
    # from 3 random starts they reach the default's optimum on a well-posed Poisson
    # mixture (to 1e-4 nats per sample: EM stops on a relative change of 1e-8)
    X, y, _ = _draw("poisson", 1500, seed=2)
    kw = dict(family="poisson", gating_features=[1], expert_features=[0], random_state=0)
    default = MixtureOfExpertsRegressor(2, **kw).fit(X, y)
    base = MixtureOfExpertsRegressor(2, solver=solver, n_init=3, **kw).fit(X, y)
    assert base.init_method_ == "random" and base.converged_
    assert base.log_likelihood_ == pytest.approx(default.log_likelihood_, abs=1e-4)


def test_family_rejects_invalid_targets():
    X, y, _ = _draw("gaussian", 300, seed=1)
    with pytest.raises(ValueError, match="poisson.*y >= 0"):
        MixtureOfExpertsRegressor(2, family="poisson").fit(X, y)
    with pytest.raises(ValueError, match="gamma.*y > 0"):
        MixtureOfExpertsRegressor(2, family="gamma").fit(X, y)


@pytest.mark.parametrize("family", ["student-t", "poisson", "gamma"])
def test_save_load_round_trip(family, tmp_path):
    X, y, _ = _draw(family, 800, seed=11)
    est = MixtureOfExpertsRegressor(
        2, family=family, gating_features=[1], expert_features=[0], random_state=0
    ).fit(X, y)
    est.save(tmp_path / "m.npz")
    back = moelearn.load(tmp_path / "m.npz")
    assert back.get_params()["family"] == family
    assert np.array_equal(back.log_density(X, y), est.log_density(X, y))
    assert np.array_equal(back.predict(X), est.predict(X))
    assert back.n_parameters_ == est.n_parameters_


@pytest.mark.parametrize("family", ["student-t", "poisson", "gamma"])
def test_predictive_distribution_matches_samples(family):
    # the predictive CDF at the predicted quantiles equals the levels, and the
    # mean of sample_y matches predict within 5 standard errors of 4000 draws
    X, y, _ = _draw(family, 1500, seed=13)
    est = MixtureOfExpertsRegressor(
        2, family=family, gating_features=[1], expert_features=[0], random_state=0
    ).fit(X, y)
    rows = X[:20]
    draws = est.sample_y(rows, n_samples=4000, random_state=0)
    q = est.predict_quantiles(rows, [0.1, 0.5, 0.9])
    emp = (draws[:, :, None] <= q[:, None, :]).mean(axis=1)
    # the empirical CDF at the q-quantile is >= q (exactly q for continuous y),
    # within the binomial error of 4000 draws (5 sigma = 5 * sqrt(0.25 / 4000) = 0.04)
    assert np.all(emp >= np.array([0.1, 0.5, 0.9]) - 0.04)
    if family != "poisson":
        assert np.all(np.abs(emp - np.array([0.1, 0.5, 0.9])) < 0.04)
    if family != "student-t":
        se = draws.std(axis=1) / np.sqrt(4000)
        assert np.all(np.abs(draws.mean(axis=1) - est.predict(rows)) < 5 * se)


def test_out_of_core_matches_in_memory(tmp_path):
    X, y, _ = _draw("poisson", 3000, seed=17)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    kw = dict(family="poisson", gating_features=[1], expert_features=[0], random_state=0)
    a = MixtureOfExpertsRegressor(2, chunk_size=700, **kw).fit(Xm, ym)
    b = MixtureOfExpertsRegressor(2, **kw).fit(X, y)
    assert np.allclose(a.experts_, b.experts_, atol=1e-8)
    assert np.allclose(a.gating_, b.gating_, atol=1e-8)
    assert a.log_likelihood_ == pytest.approx(b.log_likelihood_, abs=1e-10)


def test_poisson_offset_is_the_log_exposure(tmp_path):
    pd = pytest.importorskip("pandas")
    # counts over exposures of 0.5 to 20 units: with the log-exposure as offset the
    # experts' rates are recovered within 4 standard errors (n = 3000); without it
    # the exposure is missing from the model and the fit is far worse
    rng = np.random.default_rng(0)
    n = 3000
    x, z = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    exposure = rng.uniform(0.5, 20, n)
    first = rng.random(n) < 1 / (1 + np.exp(-3 * z))
    y = rng.poisson(exposure * np.exp(np.where(first, 0.5 + 1.0 * x, -0.5 - 0.8 * x)))
    frame = pd.DataFrame({"x": x, "z": z, "log_t": np.log(exposure)})
    kw = dict(family="poisson", gating_features=["z"], expert_features=["x"], random_state=0)
    est = MixtureOfExpertsRegressor(2, offset="log_t", **kw).fit(frame, y)
    se = est.standard_errors(frame, y)
    order = np.argsort(est.experts_[:, 0])  # the expert with slope -0.8 first
    z_slopes = (est.experts_[order, 0] - [-0.8, 1.0]) / se.experts[order, 0]
    z_bias = (est.expert_bias_[order] - [-0.5, 0.5]) / se.expert_bias[order]
    assert np.all(np.abs(z_slopes) < 4) and np.all(np.abs(z_bias) < 4), (z_slopes, z_bias)
    # the offset enters predictions: doubling the exposure doubles the predicted count
    doubled = frame.assign(log_t=frame.log_t + np.log(2))
    assert np.allclose(est.predict(doubled), 2 * est.predict(frame))
    without = MixtureOfExpertsRegressor(2, **kw).fit(frame[["x", "z"]], y)
    assert est.log_density(frame, y).sum() > without.log_density(frame[["x", "z"]], y).sum() + 100
    est.save(tmp_path / "o.npz")
    back = moelearn.load(tmp_path / "o.npz")
    assert np.array_equal(back.predict(frame), est.predict(frame))


def test_offset_errors():
    X, y, _ = _draw("poisson", 300, seed=1)
    with pytest.raises(ValueError, match="log-link families"):
        MixtureOfExpertsRegressor(2, offset=1).fit(X, y.astype(float) + 0.5)
    with pytest.raises(ValueError, match="also listed in expert_features"):
        MixtureOfExpertsRegressor(2, family="poisson", expert_features=[0, 1], offset=1).fit(X, y)


def test_review_regressions():
    rng = np.random.default_rng(0)
    # a Student-t fit started at a Gaussian optimum with a near-step gate keeps its gate
    # (no ridge on the gate) and ends at least as high as the Gaussian model
    X = rng.normal(size=(300, 2))
    eta = np.where(X[:, 0] > 0, 1 + 0.5 * X[:, 1], -0.5 - 0.3 * X[:, 1])
    y = eta + 0.3 * rng.standard_t(3, size=300)
    # (maximum likelihood: the t model nests the Gaussian one as nu -> infinity)
    ml = dict(prior_strength=0.0)
    gauss = MixtureOfExpertsRegressor(2, n_init=5, random_state=0, **ml).fit(X, y)
    warm = MixtureOfExpertsRegressor(2, family="student-t", init_params=gauss.params_, **ml)
    warm.fit(X, y)
    assert warm.log_likelihood_ >= gauss.log_likelihood_
    # one gross outlier does not lift the Student-t scale floor above the noise (0.01)
    X1 = rng.normal(size=(300, 1))
    y1 = 2 * X1[:, 0] + 0.01 * rng.normal(size=300)
    y1[0] = 1e5
    robust = MixtureOfExpertsRegressor(1, family="student-t", random_state=0).fit(X1, y1)
    assert robust.noise_std_[0] < 0.02
    # standard errors do not depend on the units of X (exact GLM information for k = 1)
    Xp = rng.normal(size=(2000, 2))
    yp = rng.poisson(np.exp(0.5 + 0.3 * Xp[:, 0] - 0.2 * Xp[:, 1]))
    for scale in (1.0, 1e5):
        est = MixtureOfExpertsRegressor(1, family="poisson").fit(Xp * scale, yp)
        se = est.standard_errors(Xp * scale, yp)
        A = np.c_[np.ones(2000), Xp * scale]
        mu = np.exp(A @ np.r_[est.expert_bias_, est.experts_[0]])
        exact = np.sqrt(np.diag(np.linalg.inv(A.T @ (A * mu[:, None]))))
        np.testing.assert_allclose(np.r_[se.expert_bias[0], se.experts[0]], exact, rtol=1e-4)
    # quantiles of a Gamma fit scale with y, down to y of order 1e-15
    Xg = rng.normal(size=(500, 1))
    yg = rng.gamma(2.0, np.exp(0.3 * Xg[:, 0]) / 2.0)
    base = MixtureOfExpertsRegressor(1, family="gamma", random_state=0).fit(Xg, yg)
    tiny = MixtureOfExpertsRegressor(1, family="gamma", random_state=0).fit(Xg, yg * 1e-15)
    q = [0.05, 0.5, 0.95]
    np.testing.assert_allclose(
        tiny.predict_quantiles(Xg[:3], q) / 1e-15, base.predict_quantiles(Xg[:3], q), rtol=1e-6
    )


def test_gamma_component_does_not_collapse_on_tied_responses():
    # counts + 1 hold many exact ties at 1: a Gamma component on them alone has an
    # unbounded likelihood (shape -> infinity); such fits rank last, so the answer
    # keeps coefficients of variation of a real spread (the collapsed one had 1e-4); by
    # maximum likelihood, where the collapse rule is what keeps it out (the default
    # prior bounds the shape itself: tests/test_prior.py)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 200)
    counts = rng.poisson(np.exp(np.where(np.arange(200) < 100, 2 - 0.2 * x, 1 + 0.1 * x)))
    est = MixtureOfExpertsRegressor(2, family="gamma", prior_strength=0.0, random_state=0)
    est.fit(x[:, None], counts + 1)
    assert np.all(est.noise_std_ > 0.1), est.noise_std_
