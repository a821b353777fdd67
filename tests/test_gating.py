import numpy as np
import pytest

from moelearn import MoEParams, parameter_errors, recover_gating


@pytest.mark.parametrize("method", ["likelihood", "em"])
def test_gating_from_true_experts(theory_linear, method):
    p, X, y = theory_linear
    W = recover_gating(X, y, p.experts, method=method, random_state=0)
    np.testing.assert_allclose(W.mean(axis=0), 0.0, atol=1e-10)  # centred rows
    assert parameter_errors(MoEParams(p.experts, W), p).gating <= 0.1


def test_gating_gradient_descent_option(theory_linear):
    p, X, y = theory_linear
    r = recover_gating(
        X[:20000],
        y[:20000],
        p.experts,
        optimizer="gd",
        noise_std=0.2,
        max_iter=300,
        return_info=True,
    )
    assert np.all(np.diff(r.history) >= -1e-12)  # ascent on the log-likelihood
    assert parameter_errors(MoEParams(p.experts, r.params.gating), p).gating <= 0.2


def test_gating_bad_arguments(theory_linear):
    p, X, y = theory_linear
    with pytest.raises(ValueError, match="experts must have shape"):
        recover_gating(X[:100], y[:100], p.experts[:, :4])
    with pytest.raises(ValueError, match="method"):
        recover_gating(X[:100], y[:100], p.experts, method="newton")
