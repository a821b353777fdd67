import numpy as np
import pytest

from moelearn import make_moe, sample
from moelearn.data import ChunkedDataset, Data
from moelearn.links import get_link
from moelearn.standardize import NOISE_FLOOR, Scaling


@pytest.fixture(scope="module")
def correlated():
    truth = make_moe(3, 2, noise_std=0.3, random_state=0)
    X, y = sample(truth, 3_000, random_state=1)
    mix = np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.1]])
    return truth, X @ mix + 5.0, 3.0 * y + 10.0, mix


def test_standardised_data_are_white_and_centred(correlated):
    _, X, y, _ = correlated
    scaling = Scaling.fit(Data(X, y), get_link("linear"))
    std = scaling.standardize(Data(X, y), n_experts=2)
    # exact up to round-off: the map is built from these very moments
    np.testing.assert_allclose(std.X.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.cov(std.X.T, bias=True), np.eye(3), atol=1e-10)
    assert std.y.mean() == pytest.approx(0.0, abs=1e-12)
    assert std.y.std() == pytest.approx(1.0, rel=1e-12)
    assert scaling.noise_floor == pytest.approx(NOISE_FLOOR)


def test_parameters_round_trip_and_give_the_same_density(correlated):
    truth, X, y, mix = correlated
    scaling = Scaling.fit(Data(X, y), get_link("linear"))
    # the truth expressed for the transformed data: x' = x M + 5, y' = 3 y + 10
    inv = np.linalg.inv(mix)
    A, W = truth.experts @ inv.T, truth.gating @ inv.T
    shift = 5.0 * np.ones(3)
    p = truth.__class__(
        3.0 * A,
        W,
        3.0 * (truth.expert_bias - A @ shift) + 10.0,
        truth.gating_bias - W @ shift,
        3.0 * truth.noise_vector,
        truth.link,
    )
    std = scaling.to_standard(p)
    back = scaling.from_standard(std)
    Xs, ys = scaling.transform(X, y)
    # the density changes by the Jacobian 1 / y_scale only
    np.testing.assert_allclose(
        std.log_likelihood(Xs, ys) - np.log(scaling.y_scale), p.log_likelihood(X, y), atol=1e-9
    )
    np.testing.assert_allclose(back.experts, p.experts, atol=1e-10)
    np.testing.assert_allclose(back.expert_bias, p.expert_bias, atol=1e-9)
    np.testing.assert_allclose(back.gating_proba(X), p.gating_proba(X), atol=1e-12)
    shared = scaling.to_standard(p, per_expert_noise=False)
    assert np.ndim(shared.noise_std) == 0


def test_out_of_core_scaling_equals_in_memory(correlated):
    _, X, y, _ = correlated

    def chunks():
        for start in range(0, len(y), 700):
            yield X[start : start + 700], y[start : start + 700]

    memory = Scaling.fit(Data(X, y), get_link("linear"))
    stream = Scaling.fit(Data(ChunkedDataset(chunks), None), get_link("linear"))
    # different summation order: equal to round-off
    for name in ("x_mean", "x_whiten", "x_unwhiten", "y_mean", "y_scale", "noise_floor"):
        np.testing.assert_allclose(getattr(stream, name), getattr(memory, name), rtol=1e-9)


def test_out_of_core_data_are_validated(correlated):
    _, X, y, _ = correlated
    bad = X.copy()
    bad[5, 1] = np.nan

    def chunks():
        yield bad[:1500], y[:1500]
        yield bad[1500:], y[1500:]

    with pytest.raises(ValueError, match="NaN or infinite"):
        Scaling.fit(Data(ChunkedDataset(chunks), None), get_link("linear"))

    def constant():
        yield X, np.ones(len(y))

    with pytest.raises(ValueError, match="y is constant"):
        Scaling.fit(Data(ChunkedDataset(constant), None), get_link("linear"))


def test_non_linear_link_and_no_intercept_keep_y(correlated):
    _, X, y, _ = correlated
    tanh = Scaling.fit(Data(X, y), get_link("tanh"))
    assert (tanh.y_mean, tanh.y_scale) == (0.0, 1.0)
    raw = Scaling.fit(Data(X, y), get_link("linear"), fit_intercept=False)
    np.testing.assert_array_equal(raw.x_mean, 0.0)
    assert raw.y_scale == pytest.approx(np.sqrt(np.mean(y**2)))
    ident = Scaling.identity(3)
    np.testing.assert_array_equal(ident.x_whiten, np.eye(3))
