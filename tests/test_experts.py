import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from helpers import fraction_at_least, record
from moelearn import expert_error, make_moe, recover_experts, sample
from moelearn.exceptions import MomentMethodUnavailable
from moelearn.experts import _raw_loss_chunk, landscape_loss, tensor_power_method


@pytest.fixture(scope="module")
def linear_1e5():
    p = make_moe(10, 3, noise_std=0.2, random_state=11)
    X, y = sample(p, 100_000, random_state=12)
    return p, X, y


# Thresholds are the per-seed targets (DESIGN §8); the benchmark
# benchmarks/experts.py measures the success rates over many seeds.
@pytest.mark.parametrize("method", ["landscape", "tensor"])
def test_linear_recovery_fast_seed(linear_1e5, method):
    p, X, y = linear_1e5
    A = recover_experts(X, y, 3, method=method, random_state=0)
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0)
    assert expert_error(A, p.experts) <= 0.3


def test_result_object_exposes_details(linear_1e5):
    _, X, y = linear_1e5
    r = recover_experts(X, y, 3, return_info=True, n_restarts=4, random_state=0)
    assert len(r.loss_history) == 4 and r.restart_losses.shape == (4,)
    # the first restart within round-off of the lowest loss
    low = r.restart_losses.min()
    assert r.restart_losses[r.best_restart] <= low + 1e-9 * max(1.0, abs(low))
    assert np.all(r.restart_losses[: r.best_restart] > low + 1e-9 * max(1.0, abs(low)))
    assert abs(r.noise_std - 0.2) < 0.02
    for hist in r.loss_history:  # descent never goes up
        assert np.all(np.diff(hist) <= 1e-12)


def test_same_seed_same_answer(linear_1e5):
    _, X, y = linear_1e5
    a = recover_experts(X, y, 3, random_state=3)
    b = recover_experts(X, y, 3, random_state=3)
    np.testing.assert_array_equal(a, b)


def test_chunked_equals_in_memory(linear_1e5):
    _, X, y = linear_1e5
    a = recover_experts(X, y, 3, method="tensor", random_state=3)
    b = recover_experts(X, y, 3, method="tensor", random_state=3, chunk_size=7777)
    np.testing.assert_allclose(a, b, atol=1e-8)


# slow: 10^6 samples per case, as the issue targets ask (2-2.5 s each, 9 s in all)
@pytest.mark.slow
@pytest.mark.parametrize("link, threshold", [("tanh", 0.3), ("relu", 0.5)])
@pytest.mark.parametrize("method", ["landscape", "tensor"])
def test_nonlinear_recovery_at_1e6(link, threshold, method):
    # seed 0 of benchmarks/experts.py; ill-conditioned experts (e.g. make_moe seed 21,
    # smallest singular value 0.3) are harder and belong to the benchmark's failure rate
    p = make_moe(10, 3, link=link, noise_std=0.2, random_state=1000)
    X, y = sample(p, 1_000_000, random_state=2000)
    assert (
        expert_error(recover_experts(X, y, 3, link=link, method=method, random_state=0), p.experts)
        <= threshold
    )


# slow: 1e5 samples, 200 full-batch and 400 mini-batch descent steps (6-9 s on 2 cores)
@pytest.mark.slow
def test_raw_form_on_orthogonal_experts():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    from moelearn import MoEParams

    p = MoEParams(Q[:3], Q[3:6], noise_std=0.2)
    X, y = sample(p, 100_000, random_state=1)
    A = recover_experts(X, y, 3, form="raw", max_iter=200, random_state=0)
    assert expert_error(A, p.experts) <= 0.35
    A_sgd = recover_experts(X, y, 3, form="raw", batch_size=2000, max_iter=400, random_state=0)
    assert expert_error(A_sgd, p.experts) <= 0.45


def test_landscape_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((3, 3))
    T = np.einsum("ia,ib,ic,id->abcd", B, B, B, B)
    U = rng.standard_normal((3, 3))
    loss, grad = landscape_loss(T, U, mu=0.5)
    num = np.zeros_like(U)
    for idx in np.ndindex(U.shape):
        E = np.zeros_like(U)
        E[idx] = 1e-6
        num[idx] = (landscape_loss(T, U + E)[0] - landscape_loss(T, U - E)[0]) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


def test_raw_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 5))
    w = rng.standard_normal(200)
    B = rng.standard_normal((3, 5))
    K = np.ones((3, 3)) - 1.5 * np.eye(3)

    def f(B):
        return _raw_loss_chunk(X, w, B, K, B @ B.T)

    _, grad = f(B)
    num = np.zeros_like(B)
    for idx in np.ndindex(B.shape):
        E = np.zeros_like(B)
        E[idx] = 1e-6
        num[idx] = (f(B + E)[0] - f(B - E)[0]) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-6)


def test_tensor_power_method_recovers_orthogonal_components():
    rng = np.random.default_rng(2)
    V, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    lam = np.array([3.0, 2.0, 1.5, 1.0])
    T = np.einsum("i,ai,bi,ci->abc", lam, V, V, V)
    comps, weights = tensor_power_method(T, 4, rng=0)
    np.testing.assert_allclose(np.sort(weights), np.sort(lam), rtol=1e-8)
    assert expert_error(comps, V.T) < 1e-6


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_experts=11), ValueError, "n_experts <= n_features"),
        (dict(n_experts=0), ValueError, "n_experts"),
        (dict(n_experts=2, link="cosh"), ValueError, "unknown link"),
        (dict(n_experts=2, method="svd"), ValueError, "method"),
        (dict(n_experts=2, link=lambda t: 0.0 * t), ValueError, "not valid"),
        (dict(n_experts=2, noise_std=-1.0), ValueError, "noise_std"),
        (dict(n_experts=2.5), TypeError, "integer"),
    ],
)
def test_bad_arguments(linear_1e5, kwargs, exc, match):
    _, X, y = linear_1e5
    with pytest.raises(exc, match=match):
        recover_experts(X[:5000], y[:5000], **kwargs)


def test_too_few_samples_and_bad_data(linear_1e5):
    _, X, y = linear_1e5
    with pytest.raises(ValueError, match="too small"):
        recover_experts(X[:30], y[:30], 2)
    Xn = X[:1000].copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        recover_experts(Xn, y[:1000], 2)
    with pytest.raises(ValueError, match="constant"):
        recover_experts(X[:1000], np.ones(1000), 2)
    with pytest.raises(ValueError, match="inconsistent|samples"):
        recover_experts(X[:1000], y[:999], 2)


@pytest.mark.parametrize("link", ["relu", "sigmoid"])
def test_inputs_without_variance_raise_moment_method_unavailable(link):
    # X = 0 leaves -mean(Q_2(y)) I in M_2 but nothing in the higher tensor: the
    # power method found no direction and the unit-normalisation divided 0 by 0
    from moelearn.exceptions import MomentMethodUnavailable

    y = 0.5 + 0.1 * np.random.default_rng(0).standard_normal(200)
    with pytest.raises(MomentMethodUnavailable, match="carries no signal"):
        recover_experts(np.zeros((200, 3)), y, 1, link=link, method="tensor")


def test_even_link_recovers_up_to_sign():
    from moelearn import MoEParams, get_link, parameter_errors

    link = get_link((np.square, lambda t: 2 * t))
    p = make_moe(8, 2, link=link, noise_std=0.2, random_state=1000)
    X, y = sample(p, 300_000, random_state=2000)
    A = recover_experts(X, y, 2, link=link, random_state=0)
    est = MoEParams(A, np.zeros_like(A), link=link)
    assert parameter_errors(est, p).experts <= 0.3  # signs free for an even link


_RECOVERY_OUTCOMES = Counter()


@fraction_at_least(0.5, _RECOVERY_OUTCOMES, "recovered")
@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(2, 6),
    data=st.data(),
    method=st.sampled_from(["landscape", "tensor"]),
    link=st.sampled_from(["linear", "tanh", "relu"]),
    inputs=st.sampled_from(["gaussian", "uniform", "correlated"]),
    noise=st.floats(0.05, 0.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_recover_experts_valid_data(d, data, method, link, inputs, noise, seed):
    # comfortably above the documented minimum of max(10 d, 50) samples: near it
    # the moments are too noisy to support k experts (a documented refusal)
    k = data.draw(st.integers(1, d - 1), label="k")  # k < d: gating orthogonal to experts
    n = data.draw(st.integers(max(40 * d, 200), 4000), label="n")
    p = make_moe(d, k, link=link, noise_std=noise, random_state=seed)
    X, y = sample(p, n, random_state=seed, inputs=inputs)
    try:
        A = recover_experts(X, y, k, method=method, link=link, random_state=0)
    except MomentMethodUnavailable as exc:
        # documented: the estimated moments support fewer than k experts
        assert re.search("supports only|carries no|no positive signal", str(exc)), exc
        record(_RECOVERY_OUTCOMES, "moments carry too little signal")
        return
    record(_RECOVERY_OUTCOMES, "recovered")
    assert A.shape == (k, d) and np.all(np.isfinite(A))
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0, rtol=1e-10)


@pytest.mark.parametrize(
    "defect", ["too few samples", "more experts than features", "NaN in X", "constant y"]
)
@settings(max_examples=5, deadline=None)
@given(
    d=st.integers(1, 5),
    method=st.sampled_from(["landscape", "tensor"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_recover_experts_rejects_invalid_input(defect, d, method, seed):
    rng = np.random.default_rng(seed)
    n, k = max(10 * d, 50), min(2, d)
    match = "n_experts"
    if defect == "too few samples":
        n = int(rng.integers(2, n))
        match = f"n_samples={n} is too small"
    elif defect == "more experts than features":
        k = d + 1
        match = "n_experts <= n_features"
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    if defect == "NaN in X":
        X[rng.integers(n), rng.integers(d)] = np.nan
        match = "Input X contains NaN"
    elif defect == "constant y":
        y[:] = 1.5
        match = "y is constant"
    event(defect)
    with pytest.raises(ValueError, match=match):
        recover_experts(X, y, k, method=method)


def test_tensor_power_method_does_not_depend_on_the_tensor_scale():
    """A tensor of tiny entries gives the unit-scale components, weights scaled with it."""
    from moelearn.experts import tensor_power_method

    rng = np.random.default_rng(0)
    V = np.linalg.qr(rng.standard_normal((4, 4)))[0][:, :2].T  # two orthonormal rows
    w = np.array([2.0, 1.0])
    T = np.einsum("r,ra,rb,rc->abc", w, V, V, V)
    U1, w1 = tensor_power_method(T, 2, rng=np.random.default_rng(1))
    with np.errstate(all="raise"):
        U2, w2 = tensor_power_method(1e-250 * T, 2, rng=np.random.default_rng(1))
    np.testing.assert_allclose(U2, U1, atol=1e-12)
    np.testing.assert_allclose(w2, 1e-250 * w1, rtol=1e-12)
    np.testing.assert_allclose(np.abs(U1 @ V.T).max(axis=1), 1.0, atol=1e-8)
