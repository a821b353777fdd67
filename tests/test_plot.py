"""Plots render to PNG with the expected artists (Agg backend)."""

import numpy as np
import pytest

import moelearn
from moelearn import MixtureOfExpertsRegressor
from moelearn.plot import plot_criterion, plot_experts, plot_gating, plot_trace
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
    assert ax.get_xlabel() == "x1"
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
    _save(ax, tmp_path / "trace.png")
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
