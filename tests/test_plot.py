"""Plots render to PNG with the expected artists and labels, and warn about nothing (Agg)."""

import sys
import warnings

import numpy as np
import pytest

import moelearn
from moelearn import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from moelearn.plot import plot_criterion, plot_experts, plot_gating, plot_rootogram, plot_trace
from moelearn.selection import ExpertSelection

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted():
    params = moelearn.make_moe(3, 2, noise_std=0.2, random_state=0, intercept_scale=0.5)
    X, y = moelearn.sample(params, 1500, random_state=1)
    est = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    return est, X, y


def _save(ax, path):
    ax.figure.savefig(path)
    plt.close(ax.figure)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_plot_experts(fitted, tmp_path):
    est, X, y = fitted
    ax = plot_experts(est, X, y, feature=1)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["expert 0", "expert 1", "mixture mean"]
    scatter = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatter) == 1 and scatter[0].get_offsets().shape == (X.shape[0], 2)
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1  # the band
    assert ax.get_xlabel() == "x1" and ax.get_ylabel() == "y"
    assert "x0 = " in ax.get_title() and "x2 = " in ax.get_title()
    assert "their means" in ax.get_title()
    _save(ax, tmp_path / "experts.png")


def test_plot_gating_on_given_axes(fitted, tmp_path):
    est, X, _ = fitted
    fig, ax = plt.subplots()
    out = plot_gating(est, X, feature=-1, ax=ax)
    assert out is ax
    lines = ax.get_lines()
    assert len(lines) == 2
    total = lines[0].get_ydata() + lines[1].get_ydata()
    np.testing.assert_allclose(total, 1.0)
    _save(ax, tmp_path / "gating.png")


def test_plot_criterion(tmp_path):
    selection = ExpertSelection(2, [1, 2, 3], [10.0, 4.0, 6.0], "bic", estimator=None)
    ax = plot_criterion(selection)
    curve, star = ax.get_lines()
    np.testing.assert_array_equal(curve.get_ydata(), [10.0, 4.0, 6.0])
    assert star.get_xdata()[0] == 2 and star.get_ydata()[0] == 4.0
    assert "BIC" in ax.get_ylabel()
    _save(ax, tmp_path / "criterion.png")
    with pytest.raises(TypeError, match="select_n_experts"):
        plot_criterion(object())


def test_plot_trace(fitted, tmp_path):
    est, _, _ = fitted
    assert est.history_.ndim == 1 and est.history_.size > 1
    ax = plot_trace(est)
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), est.history_)
    assert ax.yaxis.get_major_formatter().get_useOffset() is False
    assert ax.get_title().startswith(f"{est.history_.size} evaluations: final mean")
    _save(ax, tmp_path / "trace.png")
    # a short, flat trace: the title still says what it is, no offset on the axis
    ax = plot_trace([-0.0751483512, -0.0751483511])
    ax.figure.canvas.draw()
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert "2 evaluations" in ax.get_title() and "gain +1e-10" in ax.get_title()
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="empty"):
        plot_trace([])
    with pytest.raises(ValueError, match="no history"):
        plot_trace(MixtureOfExpertsRegressor.from_params(est.params_))


def test_bad_feature(fitted):
    est, X, y = fitted
    with pytest.raises(ValueError, match="feature"):
        plot_gating(est, X, feature=3)
    with pytest.raises(TypeError, match="feature"):
        plot_experts(est, X, y, feature="a")


@pytest.fixture(scope="module")
def framed():
    """A fit on a DataFrame with a named target Series."""
    pd = pytest.importorskip("pandas")
    params = moelearn.make_moe(4, 3, noise_std=0.2, random_state=3, intercept_scale=0.5)
    X, y = moelearn.sample(params, 1200, random_state=4)
    frame = pd.DataFrame(X, columns=["dose", "age", "height", "weight"])
    target = pd.Series(y, name="response")
    est = MixtureOfExpertsRegressor(3, random_state=0).fit(frame, target)
    return est, frame, target


def test_plots_of_a_dataframe_fit_warn_nothing_and_carry_the_names(framed, tmp_path):
    est, frame, target = framed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ax = plot_experts(est, frame, target, feature=1)
        assert ax.get_xlabel() == "age" and ax.get_ylabel() == "response"
        # four features: the three others are named with their means
        assert "dose = " in ax.get_title() and "weight = " in ax.get_title()
        _save(ax, tmp_path / "experts.png")
        ax = plot_gating(est, frame, feature=3)
        assert ax.get_xlabel() == "weight" and "age = " in ax.get_title()
        _save(ax, tmp_path / "gating.png")
        axes = plot_rootogram(est, frame, target)
        _save(axes[0], tmp_path / "rootogram.png")
        _save(plot_trace(est), tmp_path / "trace.png")
    # the target's name recorded on the estimator wins over the Series name
    est.target_name_ = "strength"
    try:
        ax = plot_experts(est, frame, target.to_numpy())
        assert ax.get_ylabel() == "strength"
        plt.close(ax.figure)
    finally:
        del est.target_name_


def test_many_features_are_summarised_in_the_title():
    params = moelearn.make_moe(6, 2, noise_std=0.2, random_state=0)
    X, y = moelearn.sample(params, 600, random_state=1)
    est = MixtureOfExpertsRegressor(2, n_init=1, random_state=0).fit(X, y)
    ax = plot_experts(est, X, y, feature=2)
    assert ax.get_title().startswith("the other 5 features at their means")
    plt.close(ax.figure)


def test_experts_drawn_only_where_the_gate_gives_them_weight(framed):
    est, frame, target = framed
    ax = plot_experts(est, frame, target, feature=0, n_grid=150, min_weight=0.2)
    grid = np.repeat(frame.to_numpy().mean(axis=0)[None, :], 150, axis=0)
    grid[:, 0] = np.linspace(frame.dose.min(), frame.dose.max(), 150)
    gate = est.params_.gating_proba(grid)
    assert 0 < np.sum(gate < 0.2) < gate.size  # some of each: the test can fail
    for i, line in enumerate(ax.get_lines()[:3]):
        hidden = np.isnan(np.asarray(line.get_ydata(), dtype=float))
        np.testing.assert_array_equal(hidden, gate[:, i] < 0.2)
    assert "gate weight >= 0.2" in ax.get_title()
    plt.close(ax.figure)
    ax = plot_experts(est, frame, target, feature=0, min_weight=0)
    assert not any(np.isnan(line.get_ydata()).any() for line in ax.get_lines())
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="min_weight"):
        plot_experts(est, frame, target, min_weight=1.0)


def test_rootogram_bars_sum_to_the_number_of_rows(fitted, tmp_path):
    est, X, y = fitted
    axes = plot_rootogram(est, X, y, bins=10)
    assert axes.shape == (2,)
    post = est.predict_responsibilities(X, y)
    for i, ax in enumerate(axes):
        heights = np.array([bar.get_height() for bar in ax.patches])
        assert heights.size == 10 and heights.sum() == X.shape[0]
        expected, _ = np.histogram(post[:, i], bins=np.linspace(0, 1, 11))
        np.testing.assert_array_equal(heights, expected)
        assert ax.get_xlabel() == "posterior probability"
    assert "square-root" in axes[0].get_ylabel()
    _save(axes[0], tmp_path / "rootogram.png")
    # on given axes
    fig, given = plt.subplots(1, 2)
    assert list(plot_rootogram(est, X, y, axes=given)) == list(given)
    plt.close(fig)
    with pytest.raises(ValueError, match="one Axes per expert"):
        plot_rootogram(est, X, y, axes=given[:1])
    with pytest.raises(ValueError, match="bins"):
        plot_rootogram(est, X, y, bins=0)


def test_rootogram_of_a_classifier(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((1500, 3))
    first = rng.random(1500) < 1 / (1 + np.exp(-3 * X[:, 2]))
    eta = np.where(first, 2 * X[:, 0] - 1, -2 * X[:, 1] + 0.5)
    y = np.where(rng.random(1500) < 1 / (1 + np.exp(-eta)), "yes", "no")
    clf = MixtureOfExpertsClassifier(2, n_init=1, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        axes = plot_rootogram(clf, X, y)
        ax = plot_gating(clf, X, feature=2)
    for panel in axes:
        assert sum(bar.get_height() for bar in panel.patches) == 1500
    # posterior of expert 0 from the gate and the experts' probabilities of the label
    gate, experts = clf.predict_gating(X), clf.predict_experts(X)
    code = (y == "yes").astype(int)
    joint = gate * experts[np.arange(1500), :, code]
    post = joint[:, 0] / joint.sum(axis=1)
    expected, _ = np.histogram(post, bins=np.linspace(0, 1, 21))
    np.testing.assert_array_equal([bar.get_height() for bar in axes[0].patches], expected)
    _save(axes[0], tmp_path / "rootogram.png")
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="not seen"):
        plot_rootogram(clf, X, np.where(y == "yes", "yes", "maybe"))
    with pytest.raises(TypeError, match="needs a fitted MixtureOfExpertsRegressor"):
        plot_experts(clf, X, y)


def test_without_matplotlib_the_error_names_the_extra(fitted, monkeypatch):
    est, X, _ = fitted
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"moelearn\[plot\]"):
        plot_gating(est, X)
