"""Bad input, numerical extremes and fuzzing of the public API."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.exceptions import ConvergenceWarning

from moelearn import MixtureOfExpertsRegressor, make_moe, parameter_errors, sample

SOLVERS = ["moments", "landscape", "tensor", "em", "gd-nll", "gd-l2"]


def _fit(X, y, **kw):
    kw.setdefault("max_iter", 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MixtureOfExpertsRegressor(random_state=0, **kw).fit(X, y)


def _finite(est):
    p = est.params_
    return all(np.all(np.isfinite(a)) for a in (p.experts, p.gating, p.expert_bias,
                                                 p.gating_bias, p.noise_std))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 60),
    d=st.integers(1, 5),
    k=st.integers(0, 4),
    solver=st.sampled_from(SOLVERS),
    link=st.sampled_from(["linear", "relu", "tanh", "sigmoid", "softplus", "bogus"]),
    data=st.data(),
)
def test_fuzz_estimator_fits_or_raises_cleanly(n, d, k, solver, link, data):
    elements = (st.floats(min_value=-1e8, max_value=1e8, width=64)
                | st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
    X = data.draw(arrays(np.float64, (n, d), elements=elements))
    y = data.draw(arrays(np.float64, (n,), elements=elements))
    try:
        est = _fit(X, y, n_experts=k, solver=solver, link=link, max_iter=10)
    except (ValueError, TypeError):
        return
    assert _finite(est)
    pred = est.predict(X)
    assert np.all(np.isfinite(pred))


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_scaled_inputs_and_targets(scale):
    p = make_moe(6, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 20_000, random_state=1)
    base = _fit(X, y, n_experts=2)
    est = _fit(X * scale, y * scale, n_experts=2)
    assert _finite(est)
    # the fit is equivariant: same predictions up to the scale
    np.testing.assert_allclose(est.predict(X * scale) / scale, base.predict(X), rtol=1e-3,
                               atol=1e-3)


def test_heavy_tailed_noise():
    p = make_moe(6, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 20_000, random_state=1)
    y = y + 0.2 * np.random.default_rng(2).standard_t(2, size=y.shape)  # infinite variance
    est = _fit(X, y, n_experts=2)
    assert _finite(est) and np.isfinite(est.log_likelihood_)


def test_nearly_duplicate_experts():
    p = make_moe(6, 2, orthogonal_gating=False, random_state=0)
    p.experts[1] = p.experts[0] + 1e-6
    X, y = sample(p, 20_000, random_state=1)
    est = _fit(X, y, n_experts=2)
    assert _finite(est)


def test_saturated_gate():
    p = make_moe(6, 3, gating_scale=200.0, random_state=0)
    X, y = sample(p, 20_000, random_state=1)
    est = _fit(X, y, n_experts=3, max_iter=100)
    assert _finite(est)
    assert parameter_errors(est, p).experts < 0.1


def test_lost_component_keeps_finite_parameters():
    # a single expert generated the data but three are fitted
    p = make_moe(5, 1, random_state=0)
    X, y = sample(p, 5_000, random_state=1)
    for solver in ("moments", "em"):
        assert _finite(_fit(X, y, n_experts=3, solver=solver))


def test_constant_and_nearly_constant_target():
    X = np.random.default_rng(0).standard_normal((100, 3))
    with pytest.raises(ValueError, match="constant"):
        _fit(X, np.full(100, 7.0))
    y = np.full(100, 7.0)
    y[0] += 1e-9
    assert _finite(_fit(X, y))


def test_constant_feature():
    p = make_moe(4, 2, random_state=0)
    X, y = sample(p, 5_000, random_state=1)
    X = np.column_stack([X, np.full(5_000, 3.0)])
    est = _fit(X, y, n_experts=2)
    assert _finite(est)


def test_only_constant_features_fall_back_to_random_starts():
    # the moment start has no signal here; it must hand over to the fallback
    # rather than start from NaN directions
    y = 0.5 + 0.1 * np.random.default_rng(0).standard_normal(200)
    est = _fit(np.full((200, 3), 2.0), y, n_experts=1, link="sigmoid", noise="shared", n_init=1)
    assert est.init_method_.startswith("random")
    assert _finite(est)


def test_reproducible_bit_for_bit():
    p = make_moe(6, 3, noise_std=0.2, random_state=0)
    X, y = sample(p, 20_000, random_state=1)
    for solver in SOLVERS:
        a = _fit(X, y, n_experts=3, solver=solver)
        b = _fit(X, y, n_experts=3, solver=solver)
        np.testing.assert_array_equal(a.experts_, b.experts_)
        np.testing.assert_array_equal(a.gating_, b.gating_)
