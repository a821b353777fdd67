"""Observed information, standard errors and the summary table."""

import numpy as np
import pytest
from scipy.special import entr
from scipy.stats import norm

import moelearn
from moelearn import MixtureOfExpertsRegressor, StandardErrors, Summary
from moelearn.inference import bootstrap_standard_errors, standard_errors, summarize
from moelearn.links import get_link
from moelearn.refine import Data, _observed_information_fd, observed_information


@pytest.mark.parametrize("link", ["linear", "tanh", "softplus"])
@pytest.mark.parametrize("per_expert", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_information_equals_finite_differences(link, per_expert, fit_intercept):
    # well conditioned: n = 3000, every expert and gate clearly present
    p = moelearn.make_moe(
        4,
        3,
        link=link,
        noise_std=0.3,
        random_state=0,
        intercept_scale=0.5 if fit_intercept else 0.0,
        per_expert_noise=per_expert,
    )
    X, y = moelearn.sample(p, 3000, random_state=1)
    data = Data(X, y, chunk_size=700)  # several chunks: the sum over chunks is exercised
    kw = dict(per_expert_noise=per_expert, fit_intercept=fit_intercept)
    exact, names = observed_information(data, p, **kw)
    fd, names_fd = _observed_information_fd(data, p, **kw)
    assert names == names_fd
    n_noise = 3 if per_expert else 1
    assert exact.shape == (2 * 3 * (4 + fit_intercept) + n_noise,) * 2
    np.testing.assert_allclose(exact, exact.T, rtol=0, atol=1e-9 * np.abs(exact).max())
    # central differences are accurate to ~1e-10 here; 1e-6 relative to the scale
    np.testing.assert_allclose(exact, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_information_for_a_user_link_without_second_derivative():
    def cube_root_ish(t):
        return t + 0.1 * np.sin(t)

    link = get_link(cube_root_ish)
    assert link.second_derivative is None
    p = moelearn.make_moe(3, 2, link=link, noise_std=0.3, random_state=2)
    X, y = moelearn.sample(p, 2000, random_state=3)
    exact, _ = observed_information(Data(X, y), p)
    fd, _ = _observed_information_fd(Data(X, y), p)
    # g'' by differences of a differenced g': agreement limited to ~1e-5 by those
    np.testing.assert_allclose(exact, fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max())


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu", "sigmoid", "tanh", "softplus"])
def test_link_second_derivatives(name):
    link = get_link(name)
    t = np.linspace(-4, 4, 101) + 0.013  # away from the kink at 0
    h = 1e-5
    numeric = (link.grad(t + h) - link.grad(t - h)) / (2 * h)
    np.testing.assert_allclose(link.grad2(t), numeric, atol=1e-8)
    user = get_link((link.func, link.derivative))  # no g'': central differences
    np.testing.assert_allclose(user.grad2(t), link.grad2(t), atol=1e-6)


@pytest.fixture(scope="module")
def fitted():
    truth = moelearn.make_moe(
        4,
        3,
        noise_std=0.3,
        gating_scale=2.0,
        random_state=0,
        intercept_scale=0.5,
        per_expert_noise=True,
    )
    X, y = moelearn.sample(truth, 4000, random_state=1)
    est = MixtureOfExpertsRegressor(
        3, noise="expert", init_params=truth, compute_standard_errors=True
    ).fit(X, y)
    return truth, est, X, y


def test_summary_table(fitted):
    _, est, X, y = fitted
    s = est.summary(X, y)
    assert isinstance(s, Summary) and isinstance(s.standard_errors, StandardErrors)
    k, d = 3, 4
    assert len(s.rows) == 2 * k * (d + 1) + k
    assert s.n_parameters == k * (d + 1) + (k - 1) * (d + 1) + k
    assert s.gate_separated is False and "SEPARATES" not in str(s)  # a soft gate (n = 4000)
    # the table's standard errors are the estimator's, row by row
    se = est.standard_errors_
    assert isinstance(se, StandardErrors)
    expert_rows = [r for r in s.rows if r.group.startswith("expert")]
    np.testing.assert_allclose(
        [r.std_error for r in expert_rows], np.hstack([se.experts, se.expert_bias[:, None]]).ravel()
    )
    np.testing.assert_allclose(
        [r.estimate for r in expert_rows],
        np.hstack([est.experts_, est.expert_bias_[:, None]]).ravel(),
    )
    for r in expert_rows:
        assert r.z == pytest.approx(r.estimate / r.std_error)
        assert r.p_value == pytest.approx(2 * norm.sf(abs(r.z)))
        assert r.ci_low == pytest.approx(r.estimate - norm.ppf(0.975) * r.std_error)
    gate_rows = [r for r in s.rows if r.group.startswith("gate")]
    np.testing.assert_allclose(
        [r.estimate for r in gate_rows], np.hstack([est.gating_, est.gating_bias_[:, None]]).ravel()
    )
    noise_rows = [r for r in s.rows if r.group == "noise"]
    assert [r.name for r in noise_rows] == ["sigma[0]", "sigma[1]", "sigma[2]"]
    assert all(np.isnan(r.z) for r in noise_rows)
    np.testing.assert_allclose([r.std_error for r in noise_rows], se.noise_std)
    # criteria: totals over the data
    assert s.log_likelihood == pytest.approx(est.log_density(X, y).sum())
    assert s.bic == pytest.approx(est.bic(X, y))
    assert s.aic == pytest.approx(est.aic(X, y))
    # ICL in flexmix's convention: -2 clogLik + p log n, clogLik the log-likelihood of
    # each row's most probable expert; the soft entropy beside it
    post = est.predict_responsibilities(X, y)
    clog = np.sum(est.log_density(X, y) + np.log(post.max(axis=1)))
    assert s.icl == pytest.approx(-2 * clog + s.n_parameters * np.log(len(y)), rel=1e-10)
    assert s.icl == pytest.approx(est.icl(X, y), rel=1e-10)
    assert s.entropy == pytest.approx(entr(post).sum(), rel=1e-8)
    assert s.entropy > 0 and s.classification_entropy > 0 and s.icl > s.bic
    text = str(s)
    for word in (
        "centred",
        "ICL",
        "P>|z|",
        "sigma[2]",
        "expert 2",
        "gate 0",
        "Converged: True",
        "init_params",
    ):
        assert word in text
    pytest.importorskip("pandas")
    frame = s.to_frame()
    assert len(frame) == len(s.rows) and "p_value" in frame.columns


def test_standard_errors_follow_the_gate_centring(fitted):
    truth, est, X, y = fitted
    p = est.params_
    se = standard_errors(p, X, y)
    shifted = moelearn.MoEParams(
        p.experts, p.gating + [1.0, -2.0, 0.5, 3.0], p.expert_bias, p.gating_bias + 4.0, p.noise_std
    )
    se_shift = standard_errors(shifted, X, y)
    np.testing.assert_allclose(se_shift.gating, se.gating, rtol=1e-6)
    np.testing.assert_allclose(se_shift.experts, se.experts, rtol=1e-6)
    # the centred gate estimates are reported whatever the representative
    s = summarize(shifted, X, y)
    gate = [r.estimate for r in s.rows if r.group == "gate 1"]
    np.testing.assert_allclose(gate, np.r_[est.gating_[1], est.gating_bias_[1]], atol=1e-12)
    # standard errors of the centred gate sum to a singular covariance: rows sum to zero
    cov = se.covariance
    gate_cols = [i for i, n in enumerate(se.names) if n.startswith("gating[")]
    block = cov[np.ix_(gate_cols, gate_cols)].reshape(3, 4, 3, 4)
    np.testing.assert_allclose(block.sum(axis=0), 0.0, atol=1e-10 * np.abs(block).max())


def test_standard_errors_scale_with_units(fitted):
    # rescaling a feature by s divides its coefficient and standard error by s
    _, est, X, y = fitted
    se = standard_errors(est.params_, X, y)
    p = est.params_
    scaled = moelearn.MoEParams(
        p.experts / [1, 1000, 1, 1],
        p.gating / [1, 1000, 1, 1],
        p.expert_bias,
        p.gating_bias,
        p.noise_std,
    )
    se2 = standard_errors(scaled, X * [1, 1000, 1, 1], y)
    np.testing.assert_allclose(se2.experts * [1, 1000, 1, 1], se.experts, rtol=1e-6)
    np.testing.assert_allclose(se2.gating * [1, 1000, 1, 1], se.gating, rtol=1e-6)


def test_bad_arguments(fitted):
    _, est, X, y = fitted
    with pytest.raises(ValueError, match="samples"):
        summarize(est.params_, X, y[:-1])
    with pytest.raises(ValueError, match="level"):
        summarize(est.params_, X, y, level=1.5)
    with pytest.raises(TypeError, match="MoEParams"):
        standard_errors("params", X, y)
    with pytest.raises(ValueError, match="feature_names"):
        summarize(est.params_, X, y, feature_names=["a"])


@pytest.mark.slow  # 200 fits and summaries: about 40 s on 2 cores
def test_coverage_in_simulation():
    """Wald intervals and predictive intervals have their nominal coverage.

    200 replications (d = 5, k = 3, n = 5000, per-expert noise), each fitted
    from the truth (the same optimum the default start reaches, cheaper).
    95% intervals on the 15 expert coefficients: 3000 intervals, binomial
    standard error 0.4% if independent (correlation within a replication
    inflates it somewhat), so [93%, 97%] is about 5 standard errors.  90%
    predictive intervals on 1000 fresh y per replication: 2e5 points, the
    spread dominated by the estimation error of each fit; [88%, 92%] is wide.
    """
    truth = moelearn.make_moe(
        5,
        3,
        noise_std=0.5,
        gating_scale=2.0,
        random_state=3,
        per_expert_noise=True,
        intercept_scale=0.5,
    )
    hits, cover = [], []
    for rep in range(200):
        X, y = moelearn.sample(truth, 5000, random_state=1000 + rep)
        est = MixtureOfExpertsRegressor(3, noise="expert", init_params=truth).fit(X, y)
        rows = [
            r
            for r in est.summary(X, y).rows
            if r.group.startswith("expert") and r.name != "intercept"
        ]
        true = truth.experts.ravel()
        hits += [
            lo <= t <= hi
            for t, lo, hi in zip(
                true, (r.ci_low for r in rows), (r.ci_high for r in rows), strict=True
            )
        ]
        X_new, y_new = moelearn.sample(truth, 1000, random_state=5000 + rep)
        iv = est.predict_interval(X_new, alpha=0.1)
        cover.append(np.mean((y_new >= iv[:, 0]) & (y_new <= iv[:, 1])))
    assert 0.93 <= np.mean(hits) <= 0.97
    assert 0.88 <= np.mean(cover) <= 0.92


def test_bootstrap_agrees_with_the_information():
    truth = moelearn.make_moe(
        3, 2, noise_std=0.3, gating_scale=2.0, random_state=0, intercept_scale=0.5
    )
    X, y = moelearn.sample(truth, 2000, random_state=1)
    est = MixtureOfExpertsRegressor(2, init_params=truth).fit(X, y)
    boot = bootstrap_standard_errors(est, X, n_boot=60, random_state=0)
    se = standard_errors(est.params_, X, y)
    ratio = np.r_[
        (boot.experts / se.experts).ravel(),
        boot.expert_bias / se.expert_bias,
        boot.noise_std / se.noise_std,
    ]
    # each ratio has a relative sampling error of about 1/sqrt(2 * 59) = 9%; the median
    # of 9 of them is within 20% of 1 unless the two methods disagree
    assert 0.8 < np.median(ratio) < 1.2
    assert boot.covariance.shape == (len(boot.names),) * 2
    again = bootstrap_standard_errors(est, X, n_boot=5, random_state=1)
    np.testing.assert_array_equal(
        again.experts, bootstrap_standard_errors(est, X, 5, random_state=1).experts
    )
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_standard_errors(est, X, n_boot=1)


def test_one_expert_gives_the_least_squares_standard_errors():
    # k = 1, linear: information XᵀX / σ² for the coefficients and 2n for log σ
    p = moelearn.make_moe(3, 1, noise_std=0.3, random_state=0)
    X, y = moelearn.sample(p, 500, random_state=1)
    est = MixtureOfExpertsRegressor(1, fit_intercept=False, prior_strength=0).fit(X, y)
    s = est.summary(X, y)
    sigma = float(est.noise_std_[0])  # one expert: one noise level
    np.testing.assert_allclose(
        s.standard_errors.experts[0], sigma * np.sqrt(np.diag(np.linalg.inv(X.T @ X))), rtol=1e-6
    )
    assert s.standard_errors.noise_std[0] == pytest.approx(sigma / np.sqrt(2 * 500), rel=1e-6)
    assert not any(r.group.startswith("gate") for r in s.rows)
    assert s.n_parameters == 4 and s.icl == pytest.approx(s.bic)


def test_summary_without_data_equals_summary_with_the_training_data(fitted):
    _, est, X, y = fitted
    alone, given = est.summary(), est.summary(X, y)
    fields = ("estimate", "std_error", "z", "p_value", "ci_low", "ci_high")
    table = [[getattr(r, f) for f in fields] for r in alone.rows]
    np.testing.assert_array_equal(table, [[getattr(r, f) for f in fields] for r in given.rows])
    assert [(r.group, r.name) for r in alone.rows] == [(r.group, r.name) for r in given.rows]
    assert str(alone) == str(given)
    assert (alone.log_likelihood, alone.bic, alone.icl) == (
        given.log_likelihood,
        given.bic,
        given.icl,
    )
    assert alone.icl == pytest.approx(est.icl(X, y), rel=1e-10)  # the same convention
    assert alone.bic == pytest.approx(est.bic(X, y), rel=1e-10)
    assert est.summary(level=0.9).level == 0.9
    with pytest.raises(ValueError, match="both X and y"):
        est.summary(X)


def test_summary_without_data_for_a_family_with_roles():
    rng = np.random.default_rng(0)
    n = 600
    X = np.column_stack([rng.uniform(0, 3, n), rng.uniform(-1, 1, n)])
    first = rng.random(n) < 1 / (1 + np.exp(-2 * X[:, 1]))
    y = rng.poisson(np.exp(np.where(first, 0.5 + 0.6 * X[:, 0], 2.0 - 0.4 * X[:, 0])))
    est = MixtureOfExpertsRegressor(
        2, family="poisson", gating_features=[1], expert_features=[0], random_state=0
    ).fit(X, y)
    assert str(est.summary()) == str(est.summary(X, y))


def test_summary_without_data_needs_in_memory_training_data(fitted, tmp_path):
    import pickle

    _, est, X, y = fitted
    # an unpickled model does not carry its training data
    clone = pickle.loads(pickle.dumps(est))
    assert np.array_equal(clone.experts_, est.experts_)
    with pytest.raises(ValueError, match=r"summary\(X, y\)"):
        clone.summary()
    assert str(clone.summary(X, y)) == str(est.summary())
    # nor does a model fitted out of core
    Xm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=float, shape=X.shape)
    Xm[:] = X
    ooc = MixtureOfExpertsRegressor(3, n_init=1, random_state=0, chunk_size=1000).fit(Xm, y)
    with pytest.raises(ValueError, match="out of core"):
        ooc.summary()
    assert ooc.summary(X, y).n_samples == len(y)


def _collinear_frame(n=800):
    pd = pytest.importorskip("pandas")
    p = moelearn.make_moe(3, 2, noise_std=0.3, random_state=0)
    X, y = moelearn.sample(p, n, random_state=1)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["a_plus_b"] = frame["a"] + frame["b"]  # collinear: a, b, a_plus_b
    return frame, y


@pytest.mark.parametrize("family", ["gaussian", "student-t"])
def test_collinear_columns_give_standard_errors_not_available(family):
    frame, y = _collinear_frame()
    with pytest.warns(moelearn.exceptions.NotIdentifiedWarning, match="'a', 'b', 'a_plus_b'"):
        est = MixtureOfExpertsRegressor(2, family=family, random_state=0).fit(frame, y)
    s = est.summary()
    involved = {"a", "b", "a_plus_b"}
    for r in s.rows:
        if r.group.startswith(("expert", "gate")) and r.name in involved:
            # not identified: never a small finite number
            assert np.isnan(r.std_error) and np.isnan(r.z) and np.isnan(r.ci_low), r
        else:
            assert np.isfinite(r.std_error) and r.std_error > 0, r
    text = str(s)
    assert "n/a" in text and "not identified" in text
    a_line = next(line for line in text.splitlines() if line.strip().startswith("a "))
    assert a_line.split()[2:] == ["n/a"] * 5


def test_identified_fits_do_not_warn(fitted):
    _, est, X, y = fitted
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", moelearn.exceptions.NotIdentifiedWarning)
        warnings.simplefilter("error", moelearn.exceptions.GateSeparationWarning)
        MixtureOfExpertsRegressor(3, random_state=0, n_init=1).fit(X, y)


def test_separated_gate_warns_at_fit():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (60, 1))
    # two levels split exactly at x = 0: a sharper gate always fits better
    y = np.where(x[:, 0] < 0, 1.0, -1.0) + 0.05 * rng.standard_normal(60)
    with pytest.warns(moelearn.exceptions.GateSeparationWarning, match="prior holds them"):
        est = MixtureOfExpertsRegressor(2, random_state=0).fit(x, y)
    s = est.summary()
    assert s.gate_separated and "SEPARATES" in str(s) and "the prior holds them" in str(s)
    # without the prior nothing holds the gate: its coefficients are not identified
    with pytest.warns(moelearn.exceptions.GateSeparationWarning, match="not identified"):
        est = MixtureOfExpertsRegressor(2, prior_strength=0, random_state=0).fit(x, y)
    assert "supremum lies at infinity" in str(est.summary())


def test_columns_are_sized_to_their_content():
    # features and target on very different scales: coefficients and standard errors
    # from 1e-5 to 1e6.  By equivariance the fit on the rescaled data is the fit on the
    # original data rescaled, so the summary is evaluated at that maximum.
    truth = moelearn.make_moe(3, 2, noise_std=0.5, random_state=4)
    X, y = moelearn.sample(truth, 800, random_state=5)
    p = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y).params_
    s_x, s_y = np.array([1e-4, 1.0, 3e4]), 1e3
    scaled = moelearn.MoEParams(
        p.experts / s_x * s_y,
        p.gating / s_x,
        p.expert_bias * s_y,
        p.gating_bias,
        p.noise_std * s_y,
    )
    s = summarize(scaled, X * s_x, y * s_y)
    assert all(np.isfinite(r.std_error) for r in s.rows)
    lines = str(s).splitlines()
    checked = 0
    for r in s.rows:
        line = next(
            line
            for line in lines
            if line.startswith("  " + r.name + " ") and line.split()[1] == format(r.estimate, ".4g")
        )
        cells = line.split()  # every pair of columns is separated by blanks
        values = [r.estimate, r.std_error, r.ci_low, r.ci_high]
        numbers = [cells[1], cells[2], cells[-2], cells[-1]]
        if not r.group == "noise":
            assert len(cells) == 7, line
            assert float(cells[3]) == pytest.approx(r.z, abs=1e-3)
        np.testing.assert_allclose([float(c) for c in numbers], values, rtol=1e-3)
        checked += 1
    assert checked == len(s.rows)
    width = len(lines[1])
    assert all(len(line) <= width for line in lines if not line.startswith(("Note", "Start")))


def test_summary_html_and_frame(fitted):
    _, est, X, y = fitted
    s = est.summary()
    html = s._repr_html_()
    assert html.startswith("<div>") and html.count("<tr>") >= len(s.rows)
    for word in ("BIC", "ICL", "gate 0", "sigma[2]", "std err"):
        assert word in html
    pytest.importorskip("pandas")
    frame = s.to_frame()
    assert frame.attrs["bic"] == s.bic and frame.attrs["n_samples"] == len(y)
    np.testing.assert_array_equal(frame["std_error"], [r.std_error for r in s.rows])
