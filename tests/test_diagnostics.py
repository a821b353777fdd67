import numpy as np
import pytest

from moelearn import (
    MixtureOfExpertsRegressor,
    MoEParams,
    diagnose,
    gate_separation,
    make_moe,
    sample,
)
from moelearn.exceptions import GateSeparationWarning


def test_diagnose_gaussian_theory_regime():
    p = make_moe(8, 3, noise_std=0.2, random_state=0)
    X, y = sample(p, 100_000, random_state=1)
    dg = diagnose(X, y, n_experts=3)
    assert dg.inputs_gaussian and dg.trust_moments
    assert dg.supported_experts == 3
    assert abs(dg.noise_std - 0.2) < 0.02
    assert "trust" in str(dg) and dg.to_dict()["supported_experts"] == 3


def test_diagnose_flags_problems():
    p = make_moe(8, 3, noise_std=0.2, random_state=0)
    X, y = sample(p, 100_000, random_state=1, inputs="uniform")
    dg = diagnose(X, y, n_experts=3)
    assert not dg.inputs_gaussian and not dg.trust_moments
    X, y = sample(p, 100_000, random_state=1)
    assert not diagnose(X, y, n_experts=6).trust_moments  # M2 supports 3
    dg = diagnose(X, y, link=lambda t: t**2)  # even: orders 1 and 3 carry nothing
    assert "invalid" in dg.link_orders[1] and "invalid" in dg.link_orders[3]
    assert dg.link_orders[4].startswith("c_4")


def _two_regimes(n, rng):
    """y = +x or -x, by the sign of x: a gate with a hard boundary at 0 fits it exactly."""
    X = rng.standard_normal((n, 1))
    y = np.where(X[:, 0] > 0, X[:, 0], -X[:, 0]) + 0.1 * rng.standard_normal(n)
    return X, y


def test_gate_separation_flags_a_gate_that_separates_the_rows():
    rng = np.random.default_rng(0)
    X, y = _two_regimes(400, rng)
    # the two regimes touch at x = 0, where both experts predict 0: a gate at the
    # boundary that grows sharper fits ever better (the rows near 0 are explained by
    # either expert), so the maximum-likelihood gate separates
    with pytest.warns(GateSeparationWarning, match="separates the training rows"):
        est = MixtureOfExpertsRegressor(2, prior_strength=0.0, random_state=0).fit(X, y)
    sep = gate_separation(est.params_, X, y)
    assert sep.separated, sep
    assert sep.hard_gate_gain > -0.01
    summary = est.summary(X, y)
    assert summary.gate_separated and "SEPARATES" in str(summary)
    # a soft gate of the truth, on data drawn from it: the hard limit costs nats
    # (rows the gate mixes lose their minority expert; far above 0.01 nats at n = 400)
    soft = MoEParams(
        np.array([[1.0], [-1.0]]),
        np.array([[1.0], [-1.0]]),
        np.zeros(2),
        np.zeros(2),
        noise_std=np.array([0.3, 0.3]),
    )
    Xs = rng.standard_normal((400, 1))
    z = rng.random(400) < soft.gating_proba(Xs)[:, 0]
    ys = np.where(z, Xs[:, 0], -Xs[:, 0]) + 0.3 * rng.standard_normal(400)
    res = gate_separation(soft, Xs, ys)
    assert not res.separated and res.hard_gate_gain < -1.0, res
    # weights: integer weights equal repeated rows
    w = rng.integers(0, 3, 400).astype(float)
    rep = np.repeat(np.arange(400), w.astype(int))
    a = gate_separation(soft, Xs, ys, sample_weight=w)
    b = gate_separation(soft, Xs[rep], ys[rep])
    assert np.isclose(a.hard_gate_gain, b.hard_gate_gain) and np.isclose(a.hard_share, b.hard_share)


def test_gate_separation_rejects_bad_input():
    p = MoEParams(np.ones((2, 1)), np.zeros((2, 1)), np.zeros(2), np.zeros(2), noise_std=1.0)
    X, y = np.zeros((5, 1)), np.arange(5.0)
    with pytest.raises(TypeError, match="MoEParams"):
        gate_separation("fit", X, y)
    # no gate (equal logits on every row): nothing grows, not separated
    assert not gate_separation(p, X, y).separated
    with pytest.raises(ValueError, match="features"):
        gate_separation(p, np.zeros((5, 2)), y)
    with pytest.raises(ValueError, match="tol"):
        gate_separation(p, X, y, tol=-1)


def test_inputs_look_gaussian_separates_gaussian_from_isotropic_non_gaussian_inputs():
    """Correlated Gaussian inputs pass; uniform and log-normal ones fail, also isotropic.

    At n = 2500 the tolerances are four standard errors plus a margin, so a
    Gaussian sample fails with probability well below 1e-3 per statistic;
    uniform inputs have excess kurtosis -1.2 per column (40 standard errors of
    the column check) and Mardia's kurtosis 12 below d (d + 2) at d = 10
    (about 19 standard errors).
    """
    from moelearn.diagnostics import inputs_look_gaussian

    rng = np.random.default_rng(0)
    n, d = 2500, 10
    shared = rng.standard_normal((n, 1))
    gaussian = np.sqrt(0.5) * rng.standard_normal((n, d)) + np.sqrt(0.5) * shared
    assert inputs_look_gaussian(gaussian)
    uniform = rng.uniform(-1, 1, (n, d))
    assert not inputs_look_gaussian(uniform)
    # rotated: every whitened or standardised coordinate is nearly Gaussian, Mardia's is not
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    assert not inputs_look_gaussian(uniform @ Q)
    assert not inputs_look_gaussian(np.exp(rng.standard_normal((n, d))))
    # integer weights are repeated rows
    w = rng.integers(0, 3, n).astype(float)
    rows = np.repeat(np.arange(n), w.astype(int))
    for Z in (gaussian, uniform):
        assert inputs_look_gaussian(Z, w) == inputs_look_gaussian(Z[rows])
    assert not inputs_look_gaussian(np.ones((5, 2)))  # degenerate: no spread
    assert not inputs_look_gaussian(np.zeros((5, 0)))  # no columns
