import warnings

import numpy as np
import pytest

import moelearn
from moelearn import (
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
    SelectionResult,
    make_moe,
    sample,
    select_n_experts,
)


@pytest.fixture(scope="module")
def two_experts():
    p = make_moe(3, 2, noise_std=0.3, gating_scale=2.0, random_state=0)
    return sample(p, 600, random_state=1)


@pytest.mark.parametrize("criterion", ["bic", pytest.param("cv", marks=pytest.mark.slow)])
def test_select_n_experts_finds_three(criterion):
    p = make_moe(6, 3, noise_std=0.2, gating_scale=2.0, random_state=0)
    X, y = sample(p, 6000, random_state=1)
    sel = select_n_experts(X, y, candidates=[1, 2, 3, 4], criterion=criterion, cv=3)
    assert sel.n_experts == 3, sel.scores
    assert sel.estimator.n_experts == 3


def test_table_equals_individual_fits(two_experts):
    X, y = two_experts
    sel = select_n_experts(X, y, candidates=[1, 2, 3])
    assert isinstance(sel, SelectionResult) and isinstance(sel, moelearn.ExpertSelection)
    assert [r.n_experts for r in sel.rows] == [1, 2, 3]
    for row in sel.rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = MixtureOfExpertsRegressor(row.n_experts, random_state=0).fit(X, y)
        # the same seed and data: the same fit, to the last bit
        np.testing.assert_array_equal(sel.estimators[row.n_experts].params_.experts, est.experts_)
        assert row.log_likelihood == pytest.approx(est.log_density(X, y).sum(), rel=1e-12)
        assert row.n_parameters == est.n_parameters_
        assert row.bic == pytest.approx(est.bic(X, y), rel=1e-12)
        assert row.aic == pytest.approx(est.aic(X, y), rel=1e-12)
        assert row.icl == pytest.approx(est.icl(X, y), rel=1e-12)
        assert row.icl >= row.bic
        assert row.converged == est.converged_
        assert row.fit_time > 0
        assert np.isnan(row.cv_log_likelihood)
    assert sel.scores == [r.bic for r in sel.rows]
    assert sel.n_experts == 2
    # the chosen model is the candidate's fit, not a refit
    assert sel.estimator is sel.estimators[2]


def test_each_candidate_fitted_once(two_experts, monkeypatch):
    X, y = two_experts
    calls = []
    original = MixtureOfExpertsRegressor.fit

    def counting(self, X, y=None, sample_weight=None):
        calls.append(self.n_experts)
        return original(self, X, y, sample_weight=sample_weight)

    monkeypatch.setattr(MixtureOfExpertsRegressor, "fit", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        select_n_experts(X, y, candidates=[1, 2])
    assert calls == [1, 2]


@pytest.mark.filterwarnings("ignore:.*the largest candidate")
@pytest.mark.parametrize("criterion", ["aic", "icl"])
def test_other_criteria_choose_their_minimum(two_experts, criterion):
    X, y = two_experts
    sel = select_n_experts(X, y, candidates=[1, 2, 3], criterion=criterion)
    values = [getattr(r, criterion) for r in sel.rows]
    assert sel.scores == values
    assert sel.n_experts == sel.candidates[int(np.argmin(values))]


def test_cv_scores_are_held_out_means(two_experts):
    X, y = two_experts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # may choose the largest candidate
        sel = select_n_experts(X, y, candidates=[1, 2], criterion="cv", cv=3)
    cv = [r.cv_log_likelihood for r in sel.rows]
    assert sel.scores == cv and all(np.isfinite(cv))
    assert cv[1] > cv[0]  # two experts generated the data; one fits visibly worse
    assert "cv logLik/n" in str(sel)


def test_dataframe_names_kept_for_roles(two_experts):
    pd = pytest.importorskip("pandas")
    X, y = two_experts
    frame = pd.DataFrame(X, columns=["age", "RDS", "dose"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sel = select_n_experts(
            frame, pd.Series(y, name="target"), candidates=[1, 2], gating_features=["RDS"]
        )
    for est in sel.estimators.values():
        assert list(est.feature_names_in_) == ["age", "RDS", "dose"]
        assert est.params_.gating_features.tolist() == [False, True, False]
    # predicting from a DataFrame leaks no feature-name warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sel.estimator.predict(frame)


@pytest.mark.filterwarnings("ignore:.*the largest candidate")
def test_sample_weight_honoured(two_experts):
    X, y = two_experts
    w = np.random.default_rng(3).integers(0, 4, size=len(y)).astype(float)
    sel = select_n_experts(X, y, candidates=[1, 2, 3], sample_weight=w)
    plain = select_n_experts(X, y, candidates=[1, 2, 3])
    for row, other in zip(sel.rows, plain.rows, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = MixtureOfExpertsRegressor(row.n_experts, random_state=0)
            est.fit(X, y, sample_weight=w)
        # weights count as frequencies: weighted log-likelihood, n = sum of the weights
        ll = float(w @ est.log_density(X, y))
        assert row.log_likelihood == pytest.approx(ll, rel=1e-12)
        assert row.bic == pytest.approx(-2 * ll + est.n_parameters_ * np.log(w.sum()), rel=1e-12)
        assert row.bic == pytest.approx(est.bic(X, y, sample_weight=w), rel=1e-12)
        assert row.log_likelihood != pytest.approx(other.log_likelihood, rel=1e-3)


def test_estimator_template_and_params(two_experts):
    X, y = two_experts
    template = MixtureOfExpertsRegressor(noise="shared", n_init=3, random_state=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sel = select_n_experts(
            X, y, candidates=[1, 2], estimator=template, random_state=None, max_iter=50
        )
    for k, est in sel.estimators.items():
        params = est.get_params()
        assert (params["n_experts"], params["noise"], params["n_init"]) == (k, "shared", 3)
        assert (params["random_state"], params["max_iter"]) == (5, 50)
    assert template.get_params()["max_iter"] == 1000  # the template itself is untouched


def test_classifier():
    rng = np.random.default_rng(1)
    n = 600
    X = rng.standard_normal((n, 3))
    first = rng.random(n) < 1 / (1 + np.exp(-3 * X[:, 2]))
    eta = np.where(first, 2 * X[:, 0] - 1, -2 * X[:, 1] + 0.5)
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-eta)), "spam", "ham")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sel = select_n_experts(
            X, y, candidates=[1, 2], estimator=MixtureOfExpertsClassifier(), criterion="icl"
        )
    for row in sel.rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = MixtureOfExpertsClassifier(row.n_experts, random_state=0).fit(X, y)
        assert row.log_likelihood == pytest.approx(est.log_density(X, y).sum(), rel=1e-12)
        assert row.n_parameters == est.n_parameters_
        assert row.bic == pytest.approx(est.bic(X, y), rel=1e-12)
        assert row.icl == pytest.approx(est.icl(X, y), rel=1e-12)
    assert isinstance(sel.estimator, MixtureOfExpertsClassifier)
    # one expert has no posterior uncertainty: its ICL is its BIC
    assert sel.rows[0].icl == pytest.approx(sel.rows[0].bic, rel=1e-12)


def test_warns_at_the_edge_of_the_candidates(two_experts):
    X, y = two_experts
    with pytest.warns(UserWarning, match="the largest candidate"):
        sel = select_n_experts(X, y, candidates=[1, 2])
    assert sel.n_experts == 2
    with pytest.warns(UserWarning, match="the smallest candidate"):
        sel = select_n_experts(X, y, candidates=[2, 3])
    assert sel.n_experts == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert select_n_experts(X, y, candidates=[1, 2, 3]).n_experts == 2
        # one expert at the lower edge is no reason to warn: there is nothing below it
        line = X @ [1.0, -1.0, 0.5] + 0.3 * np.random.default_rng(2).standard_normal(len(y))
        assert select_n_experts(X, line, candidates=[1, 2]).n_experts == 1


def test_degenerate_fits_are_flagged_not_warned():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (60, 1))
    # two levels split exactly at x = 0: a two-expert gate separates the rows
    y = np.where(x[:, 0] < 0, 1.0, -1.0) + 0.05 * rng.standard_normal(60)
    with warnings.catch_warnings():
        warnings.simplefilter("error", moelearn.exceptions.GateSeparationWarning)
        sel = select_n_experts(x, y, candidates=[1, 2, 3])
    flags = {r.n_experts: r.degenerate for r in sel.rows}
    assert flags[1] == ""
    assert "separated gate" in flags[2]
    assert "separated gate" in str(sel)


def test_table_forms(two_experts):
    X, y = two_experts
    sel = select_n_experts(X, y, candidates=[1, 2, 3])
    text = str(sel)
    lines = text.splitlines()
    for word in ("K", "logLik", "params", "AIC", "BIC", "ICL", "converged", "time (s)"):
        assert word in lines[0]
    chosen = [line for line in lines[1:4] if line.startswith("*")]
    assert len(chosen) == 1 and chosen[0].split()[1] == "2"
    assert "chosen: 2 experts by BIC" in lines[-1]
    html = sel._repr_html_()
    assert html.startswith("<table>") and "<th>ICL</th>" in html and "font-weight:bold" in html
    pd = pytest.importorskip("pandas")
    frame = sel.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == [1, 2, 3]
    assert frame.loc[2, "chosen"] and not frame.loc[1, "chosen"]
    np.testing.assert_allclose(frame["bic"], [r.bic for r in sel.rows])
    assert "cv_log_likelihood" not in frame


def test_verbose_prints_one_line_per_candidate(two_experts, capsys):
    X, y = two_experts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        select_n_experts(X, y, candidates=[1, 2])
    assert capsys.readouterr() == ("", "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        select_n_experts(X, y, candidates=[1, 2], verbose=1)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and "1 expert:" in lines[0] and "2 experts:" in lines[1]


def test_select_n_experts_bad_arguments():
    X = np.random.default_rng(0).standard_normal((50, 2))
    with pytest.raises(ValueError, match="criterion"):
        select_n_experts(X, X[:, 0], criterion="mdl")
    with pytest.raises(ValueError, match="candidates"):
        select_n_experts(X, X[:, 0], candidates=[0, 1])
    with pytest.raises(ValueError, match="candidates"):
        select_n_experts(X, X[:, 0], candidates=[])
    with pytest.raises(ValueError, match="candidates"):
        select_n_experts(X, X[:, 0], candidates=[2, 2])
    with pytest.raises(ValueError, match="cv must be"):
        select_n_experts(X, X[:, 0], criterion="cv", cv=1)
    with pytest.raises(ValueError, match="as candidates"):
        select_n_experts(X, X[:, 0], n_experts=2)
    with pytest.raises(TypeError, match="estimator must be"):
        select_n_experts(X, X[:, 0], estimator=object())
    with pytest.raises(ValueError, match="rows"):
        select_n_experts(X, X[:10, 0])
    with pytest.raises(ValueError, match="verbose"):
        select_n_experts(X, X[:, 0], verbose=-1)
