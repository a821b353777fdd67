import numpy as np
import pytest
from scipy.stats import norm

import moelearn
from moelearn import MoEParams, make_moe, sample


def test_make_moe_theory_regime():
    p = make_moe(12, 4, noise_std=0.3, gating_scale=2.5, random_state=3)
    np.testing.assert_allclose(np.linalg.norm(p.experts, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(p.gating, axis=1), 2.5)
    np.testing.assert_allclose(p.gating @ p.experts.T, 0.0, atol=1e-12)
    assert np.linalg.matrix_rank(p.experts) == 4
    assert np.all(p.expert_bias == 0) and np.all(p.gating_bias == 0)


def test_make_moe_reproducible_and_validates():
    a = make_moe(5, 2, random_state=7)
    b = make_moe(5, 2, random_state=7)
    np.testing.assert_array_equal(a.experts, b.experts)
    with pytest.raises(ValueError, match="n_experts"):
        make_moe(5, 0)
    with pytest.raises(ValueError, match="orthogonal"):
        make_moe(3, 3)
    with pytest.raises(TypeError):
        make_moe(5.0, 2)
    with pytest.raises(ValueError, match="unknown link"):
        make_moe(5, 2, link="nope")


def test_sample_shapes_and_reproducibility():
    p = make_moe(6, 3, random_state=0)
    X, y, z = sample(p, 1000, random_state=5, return_labels=True)
    assert X.shape == (1000, 6) and y.shape == (1000,) and z.shape == (1000,)
    X2, y2 = sample(p, 1000, random_state=5)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError):
        sample(p, 0)


def test_sampled_expert_frequencies_match_gating():
    p = make_moe(8, 3, gating_scale=2.0, random_state=1)
    n = 200_000
    X, _, z = sample(p, n, random_state=2, return_labels=True)
    q = p.gating_proba(X).mean(axis=0)
    freq = np.bincount(z, minlength=3) / n
    # the indicator has variance <= 1/4: 6 standard errors = 6 * 0.5 / sqrt(n)
    np.testing.assert_allclose(freq, q, atol=6 * 0.5 / np.sqrt(n))


def test_log_likelihood_matches_slow_direct_formula():
    rng = np.random.default_rng(0)
    p = MoEParams(
        rng.standard_normal((3, 4)),
        5 * rng.standard_normal((3, 4)),
        rng.standard_normal(3),
        rng.standard_normal(3),
        [0.1, 0.5, 2.0],
        "tanh",
    )
    X = rng.standard_normal((50, 4))
    y = rng.standard_normal(50)
    direct = np.empty(50)
    for n in range(50):  # the slow reference formula, one sample at a time
        logits = p.gating[:, :] @ X[n] + p.gating_bias
        gate = np.exp(logits - logits.max())
        gate /= gate.sum()
        dens = norm.pdf(y[n], np.tanh(p.experts @ X[n] + p.expert_bias), p.noise_std)
        direct[n] = np.log(gate @ dens)
    np.testing.assert_allclose(p.log_likelihood(X, y), direct, rtol=1e-10)
    np.testing.assert_allclose(p.posterior(X, y).sum(axis=1), 1.0)
    np.testing.assert_allclose(p.gating_proba(X).sum(axis=1), 1.0)


def test_extreme_logits_stay_finite():
    p = MoEParams(np.eye(2), 1e4 * np.array([[1.0, 0], [-1.0, 0]]), noise_std=1e-3)
    X = np.array([[1.0, 2.0], [-3.0, 1.0]])
    y = np.array([100.0, -50.0])
    assert np.all(np.isfinite(p.log_likelihood(X, y)))
    assert np.all(np.isfinite(p.gating_log_proba(X)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(experts=np.ones(3), gating=np.ones((1, 3))), "2-D"),
        (dict(experts=np.ones((2, 3)), gating=np.ones((3, 3))), "shape of experts"),
        (dict(experts=np.ones((2, 3)), gating=np.ones((2, 3)), noise_std=0.0), "noise_std"),
        (dict(experts=np.ones((2, 3)), gating=np.ones((2, 3)), noise_std=[1, 2, 3]), "noise_std"),
        (dict(experts=np.full((2, 3), np.nan), gating=np.ones((2, 3))), "NaN"),
        (dict(experts=np.ones((2, 3)), gating=np.ones((2, 3)), expert_bias=[1.0]), "expert_bias"),
        (dict(experts=np.ones((2, 3)), gating=np.ones((2, 3)), link="bogus"), "unknown link"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoEParams(**kwargs)


def test_version():
    assert moelearn.__version__


def _gate_is_flat(p, X):
    """Constant mixing weights: every gating row equal, or probabilities that do not vary.

    Softmax ignores a common shift of the logits, so the gate is flat exactly when the
    centred gating rows vanish; the probabilities on sample points confirm it.
    """
    centred = p.gating - p.gating.mean(axis=0)
    rows_flat = np.max(np.linalg.norm(centred, axis=1)) < 1e-8
    probs_flat = np.max(np.ptp(p.gating_proba(X), axis=0)) < 1e-6
    return rows_flat or probs_flat


@pytest.mark.parametrize("k", [2, 3])
def test_make_moe_never_draws_a_flat_gate(k):
    # n_features = k + 1 leaves a one-dimensional complement for the gating: before the
    # fix half (k=2) or a quarter (k=3) of the draws had all rows equal, a constant gate.
    X = np.random.default_rng(0).standard_normal((200, k + 1))
    for seed in range(200):
        p = make_moe(k + 1, k, random_state=seed)
        assert not _gate_is_flat(p, X), seed
        # the theory regime still holds: gating orthogonal to the experts, unit-scale rows
        np.testing.assert_allclose(p.gating @ p.experts.T, 0.0, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(p.gating, axis=1), 1.0)


def test_make_moe_flat_gate_only_when_asked():
    X = np.random.default_rng(0).standard_normal((100, 1))
    for seed in range(50):  # one feature: the gating rows are +-v even without orthogonality
        assert not _gate_is_flat(make_moe(1, 2, orthogonal_gating=False, random_state=seed), X)
    assert _gate_is_flat(
        make_moe(3, 2, gating_scale=0.0, random_state=0),
        np.random.default_rng(0).standard_normal((100, 3)),
    )


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    # pyproject.toml is the single source; the package reads it back when installed
    assert moelearn.__version__ == version("moelearn")


def test_off_regime_sampler():
    p = make_moe(
        6, 2, intercept_scale=1.0, per_expert_noise=True, orthogonal_gating=False, random_state=0
    )
    assert np.ndim(p.noise_std) == 1 and np.any(p.expert_bias != 0)
    for law in ("uniform", "correlated"):
        X, y = sample(p, 20000, random_state=0, inputs=law)
        assert np.all(np.isfinite(y))
    Xc, _ = sample(p, 100_000, random_state=0, inputs="correlated", correlation=0.5)
    c = np.corrcoef(Xc[:, 0], Xc[:, 1])[0, 1]
    assert abs(c - 0.5) < 0.02
    with pytest.raises(ValueError, match="inputs"):
        sample(p, 10, inputs="cauchy")
