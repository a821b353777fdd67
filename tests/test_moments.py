import numpy as np
import pytest

from helpers import standard_error_bound
from moelearn import (
    MomentAccumulator,
    ReducedMomentAccumulator,
    Whitening,
    make_moe,
    output_transform,
    sample,
)
from moelearn.moments import iter_chunks


def _pass1(link, X, y):
    return MomentAccumulator(link, X.shape[1]).fit(X, y)


def test_second_moment_matches_population(theory_linear):
    p, X, y = theory_linear
    acc = _pass1("linear", X, y)
    q = p.gating_proba(X).mean(axis=0)
    truth = 2.0 * (p.experts.T * q) @ p.experts
    # per-sample terms of two entries (diagonal and off-diagonal) give the CLT bound
    w = output_transform("linear", 0.2, 2)(y)
    for i, j in [(0, 0), (1, 3)]:
        terms = w * (X[:, i] * X[:, j] - (i == j))
        assert abs(acc.second_moment[i, j] - truth[i, j]) <= standard_error_bound(terms)


@pytest.mark.parametrize("link", ["linear", "tanh"])
def test_whitened_third_and_fourth_match_population(link):
    p = make_moe(8, 3, link=link, noise_std=0.2, random_state=4)
    n = 400_000
    X, y = sample(p, n, random_state=9)
    acc = _pass1(link, X, y)
    wh = acc.whitening(3)
    red = ReducedMomentAccumulator(link, wh, 0.2).fit(X, y)
    q = p.gating_proba(X).mean(axis=0)
    B = wh.matrix @ p.experts.T  # columns P a_i
    rng = np.random.default_rng(0)
    for _ in range(3):
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        a = wh.matrix.T @ u  # direction in R^d
        t = X @ a
        na2 = a @ a
        c3 = red.transforms[3].constant
        c4 = red.transforms[4].constant
        # per-sample Q_3(y) S_3(x)(a,a,a) and Q_4(y) S_4(x)(a,a,a,a) (DESIGN §2)
        terms3 = red.transforms[3](y) * (t**3 - 3 * na2 * t)
        terms4 = red.transforms[4](y) * (t**4 - 6 * na2 * t**2 + 3 * na2**2)
        est3 = np.einsum("abc,a,b,c->", red.third_order(), u, u, u)
        est4 = np.einsum("abcd,a,b,c,d->", red.fourth_order(), u, u, u, u)
        # the reduced tensors are exact rewrites of the sample means ...
        assert est3 == pytest.approx(terms3.mean(), rel=1e-9, abs=1e-12)
        assert est4 == pytest.approx(terms4.mean(), rel=1e-9, abs=1e-12)
        # ... which match c_m sum_i q_i <a_i, a>^m within the CLT bound
        proj = B.T @ u
        assert abs(est3 - c3 * np.sum(q * proj**3)) <= standard_error_bound(terms3)
        assert abs(est4 - c4 * np.sum(q * proj**4)) <= standard_error_bound(terms4)


def test_chunked_equals_one_pass(theory_linear):
    _, X, y = theory_linear
    X, y = X[:20_000], y[:20_000]
    one = _pass1("relu", X, y)
    for chunk in (999, 4096, 20_000):
        chunked = MomentAccumulator("relu", 10).fit(X, y, chunk_size=chunk)
        np.testing.assert_allclose(chunked.second_moment, one.second_moment, rtol=0, atol=1e-10)
        np.testing.assert_allclose(chunked.first_moment, one.first_moment, rtol=0, atol=1e-10)
    wh = one.whitening(3)
    red_one = ReducedMomentAccumulator("relu", wh, 0.2).fit(X, y)
    red_chunk = ReducedMomentAccumulator("relu", wh, 0.2).fit(X, y, chunk_size=777)
    np.testing.assert_allclose(red_chunk.fourth_order(), red_one.fourth_order(), atol=1e-10)
    np.testing.assert_allclose(red_chunk.third_order(), red_one.third_order(), atol=1e-10)


def test_merge_by_addition_equals_concatenation(theory_linear):
    _, X, y = theory_linear
    a = _pass1("tanh", X[:30_000], y[:30_000])
    b = _pass1("tanh", X[30_000:50_000], y[30_000:50_000])
    whole = _pass1("tanh", X[:50_000], y[:50_000])
    merged = a + b
    assert merged.n_samples == 50_000
    np.testing.assert_allclose(merged.second_moment, whole.second_moment, atol=1e-10)
    np.testing.assert_allclose(merged.y_moments, whole.y_moments, atol=1e-10)
    a.merge(b)
    np.testing.assert_allclose(a.second_moment, whole.second_moment, atol=1e-10)
    with pytest.raises(ValueError, match="different settings"):
        _pass1("relu", X[:100], y[:100]) + _pass1("tanh", X[:100], y[:100])


def test_memory_is_independent_of_n(theory_linear):
    _, X, y = theory_linear
    acc = _pass1("linear", X, y)
    sizes = [np.asarray(getattr(acc, f)).size for f in acc._fields]
    assert sum(sizes) == 5 + 10 + 1 + 100


def test_noise_estimate(theory_linear):
    _, X, y = theory_linear
    # Var of y^2 is about 3 (E y^4 - (E y^2)^2 for near-Gaussian y): 6 sigma on sigma^2
    est = _pass1("linear", X, y).noise_std()
    assert abs(est**2 - 0.04) <= 6 * np.sqrt(3.0 / len(y))


def test_whitening_orthonormalises_experts(theory_linear):
    p, X, y = theory_linear
    acc = _pass1("linear", X, y)
    wh = acc.whitening(3)
    q = p.gating_proba(X).mean(axis=0)
    B = (wh.matrix @ p.experts.T) * np.sqrt(2.0 * q)
    np.testing.assert_allclose(B.T @ B, np.eye(3), atol=0.05)
    with pytest.raises(ValueError, match="supports only"):
        acc.whitening(10)


def test_whitening_matrix_and_unwhiten_are_exact_inverses():
    # distinct eigenvalues, so that a wrong power of D cannot cancel in the
    # normalisation (the statistical tests have nearly equal q_i)
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((6, 3)))
    evals = np.array([4.0, 1.0, 0.25])
    wh = Whitening(U, evals)
    np.testing.assert_allclose(wh.matrix, np.diag(evals**-0.5) @ U.T, rtol=1e-12)
    np.testing.assert_allclose(wh.gram, wh.matrix @ wh.matrix.T, rtol=1e-12, atol=1e-15)
    A = rng.standard_normal((3, 3)) @ U.T  # rows in the whitened span
    back = wh.unwhiten(A @ wh.matrix.T)  # rows P a_i -> a_i / |a_i|
    np.testing.assert_allclose(back, A / np.linalg.norm(A, axis=1, keepdims=True), atol=1e-12)


def test_iter_chunks_handles_remainders():
    X = np.arange(20.0).reshape(10, 2)
    y = np.arange(10.0)
    sizes = [c[0].shape[0] for c in iter_chunks(X, y, 3)]
    assert sizes == [3, 3, 3, 1]
