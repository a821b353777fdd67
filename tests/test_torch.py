"""The PyTorch layer and losses (skipped when torch is not installed)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moelearn import (  # noqa: E402
    MixtureOfExpertsRegressor,
    MomentAccumulator,
    ReducedMomentAccumulator,
    make_moe,
    output_transform,
    parameter_errors,
    sample,
)
from moelearn.experts import _raw_loss_chunk, landscape_loss  # noqa: E402
from moelearn.refine import _chunk_terms  # noqa: E402
from moelearn.torch import ExpertLoss, GatingLoss, MoE, train_two_stage  # noqa: E402


@pytest.fixture(scope="module")
def batch():
    p = make_moe(6, 3, link="tanh", noise_std=0.2, gating_scale=1.5, random_state=0)
    X, y = sample(p, 4000, random_state=1)
    return p, X, y


def _t(a):
    return torch.as_tensor(a, dtype=torch.float64)


def test_raw_expert_loss_and_gradient_match_numpy(batch):
    p, X, y = batch
    rng = np.random.default_rng(0)
    B = rng.standard_normal((3, 6))
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    q4 = output_transform("tanh", 0.2, 4)
    K = np.ones((3, 3)) - 1.5 * np.eye(3)
    ref_loss, ref_grad = _raw_loss_chunk(X, q4(y) / q4.constant, B, K, B @ B.T)
    Bt = _t(B).requires_grad_(True)
    loss = ExpertLoss("tanh", 0.2, mu=0.5)(Bt, _t(X), _t(y))
    loss.backward()
    assert loss.item() == pytest.approx(ref_loss / len(y), rel=1e-10)
    # on the sphere the torch gradient is the projection of the numpy one
    proj = ref_grad / len(y)
    proj -= np.sum(proj * B, axis=1, keepdims=True) * B
    np.testing.assert_allclose(Bt.grad.numpy(), proj, rtol=1e-8, atol=1e-10)


def test_whitened_expert_loss_matches_numpy(batch):
    p, X, y = batch
    acc = MomentAccumulator("tanh", 6).fit(X, y)
    wh = acc.whitening(3)
    red = ReducedMomentAccumulator("tanh", wh, 0.2, orders=(4,)).fit(X, y)
    c4 = red.transforms[4].constant
    T = red.fourth_order() / c4
    U = np.random.default_rng(1).standard_normal((3, 3))
    ref_loss, ref_grad = landscape_loss(T, U, mu=0.5)
    P = _t(wh.matrix)
    Ut = _t(U).requires_grad_(True)
    loss = ExpertLoss("tanh", 0.2)(Ut, _t(X) @ P.T, _t(y), gram=P @ P.T)
    loss.backward()
    assert float(loss) == pytest.approx(ref_loss, rel=1e-8)
    np.testing.assert_allclose(Ut.grad.numpy(), ref_grad, rtol=1e-8, atol=1e-10)


def test_gating_loss_and_layer_likelihood_match_numpy(batch):
    p, X, y = batch
    layer = MoE.from_params(p)
    loss = GatingLoss("tanh", 0.2)(layer, _t(X), _t(y))
    loss.backward()
    values = dict(
        experts=p.experts,
        gating=p.gating,
        expert_bias=p.expert_bias,
        gating_bias=p.gating_bias,
        noise=p.noise_vector,
    )
    ref = _chunk_terms(X, y, values, p.link_function, want_grad=True)
    assert float(loss) == pytest.approx(-ref["loglik"] / len(y), rel=1e-10)
    np.testing.assert_allclose(
        layer.gating.grad.numpy(), -ref["gating"] / len(y), rtol=1e-8, atol=1e-12
    )
    assert layer.experts.grad is None  # frozen
    np.testing.assert_allclose(
        layer.log_likelihood(_t(X), _t(y)).detach().numpy(), p.log_likelihood(X, y), rtol=1e-10
    )
    np.testing.assert_allclose(layer(_t(X)).detach().numpy(), p.mean(X), rtol=1e-10)


def test_float32_and_batch_size_independence(batch):
    p, X, y = batch
    B = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    loss = ExpertLoss("tanh", 0.2)
    full = float(loss(B.double(), _t(X), _t(y)))
    halves = [
        float(loss(B.double(), _t(X[s]), _t(y[s]))) for s in (slice(0, 2000), slice(2000, 4000))
    ]
    assert np.mean(halves) == pytest.approx(full, rel=1e-10)  # a mean over samples
    f32 = float(
        loss(
            B.float(),
            torch.as_tensor(X, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.float32),
        )
    )
    assert f32 == pytest.approx(full, rel=1e-3)


def test_conversions_round_trip(batch):
    p, X, _ = batch
    layer = MoE.from_params(p)
    back = layer.to_params()
    np.testing.assert_allclose(back.experts, p.experts)
    est = layer.to_estimator()
    assert isinstance(est, MixtureOfExpertsRegressor)
    np.testing.assert_allclose(est.predict(X), p.mean(X), rtol=1e-12)
    fitted = MixtureOfExpertsRegressor(3, link="tanh", random_state=0).fit(*sample(p, 20000))
    layer2 = MoE.from_params(fitted)
    np.testing.assert_allclose(layer2(_t(X)).detach().numpy(), fitted.predict(X), rtol=1e-10)


def test_layer_validates():
    with pytest.raises(ValueError):
        MoE(0, 3)
    with pytest.raises(ValueError, match="unknown link"):
        MoE(3, 2, link="swish")
    with pytest.raises(ValueError):
        ExpertLoss("linear", None)


# slow: 800 optimiser steps on 2e5 samples (84 s on 2 busy cores)
@pytest.mark.slow
def test_train_two_stage_recovers_experts():
    truth = make_moe(8, 3, noise_std=0.2, random_state=7)
    X, y = sample(truth, 200_000, random_state=8)
    x_t, y_t = _t(X), _t(y)
    torch.manual_seed(0)
    layer = MoE(8, 3, dtype=torch.float64)
    hist = train_two_stage(
        layer, x_t, y_t, expert_steps=200, gating_steps=200, restarts=2, random_state=0
    )
    err = parameter_errors(layer.to_params(), truth)
    assert err.experts <= 0.2, err
    assert hist["experts"] and hist["gating"] and not hist["finetune"]
    # then fine-tune the same layer on the likelihood only
    hist = train_two_stage(
        layer, x_t, y_t, expert_steps=0, gating_steps=0, finetune_steps=400, random_state=0
    )
    assert hist["finetune"] and not hist["experts"]
    err = parameter_errors(layer.to_params(), truth)
    assert err.experts <= 0.02, err
