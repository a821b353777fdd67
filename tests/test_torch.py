"""The PyTorch layer and losses (skipped when torch is not installed)."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

torch = pytest.importorskip("torch")

from moelearn import (  # noqa: E402
    MixtureOfExpertsClassifier,
    MixtureOfExpertsRegressor,
    MoEParams,
    MomentAccumulator,
    ReducedMomentAccumulator,
    make_moe,
    output_transform,
    parameter_errors,
    sample,
)
from moelearn.experts import _raw_loss_chunk, landscape_loss  # noqa: E402
from moelearn.families import Multinomial, StudentT  # noqa: E402
from moelearn.refine import _chunk_terms  # noqa: E402
from moelearn.torch import (  # noqa: E402
    ExpertLoss,
    GatingLoss,
    MoE,
    train_likelihood,
    train_two_stage,
)


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


# ---------------------------------------------------------------- families and roles
FAMILIES = ["gaussian", "student-t", "poisson", "gamma", "negative-binomial", "bernoulli"]
G_MASK = np.array([True, True, False, False, True])  # the gate reads columns 0, 1, 4
E_MASK = np.array([False, True, True, True, False])  # the experts 1, 2, 3 (column 1 shared)


def _family_params(family, roles, per_expert=True, seed=0):
    """A 3-expert MoEParams of ``family`` on 5 columns, with intercepts and random dispersions."""
    rng = np.random.default_rng(seed)
    k = 3
    n_g, n_e = (int(G_MASK.sum()), int(E_MASK.sum())) if roles else (5, 5)
    noise = None
    if family in ("gaussian", "student-t", "gamma", "negative-binomial"):
        noise = rng.uniform(0.3, 0.8, k) if per_expert else 0.5
    return MoEParams(
        0.5 * rng.standard_normal((k, n_e)),
        rng.standard_normal((k, n_g)),
        0.3 * rng.standard_normal(k),
        0.3 * rng.standard_normal(k),
        noise_std=noise,
        link="tanh" if family == "gaussian" else "linear",
        family=family,
        df=rng.uniform(1.0, 20.0, k) if family == "student-t" else None,
        gating_features=G_MASK if roles else None,
        expert_features=E_MASK if roles else None,
    )


@pytest.mark.parametrize("roles", [False, True], ids=["all-columns", "roles"])
@pytest.mark.parametrize("family", FAMILIES)
def test_layer_likelihood_and_mean_match_params_for_every_family(family, roles):
    p = _family_params(family, roles)
    X, y = sample(p, 2000, random_state=1)
    layer = MoE.from_params(p)
    assert layer.family == p.family_object.name and layer.has_roles == roles
    x_t, y_t = _t(X), _t(y)
    ll = layer.log_likelihood(x_t, y_t)
    # float64 formulas of the same densities: they agree to rounding (measured <= 1e-14
    # absolute); atol covers Gamma terms that nearly cancel to 0
    np.testing.assert_allclose(ll.detach().numpy(), p.log_likelihood(X, y), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer(x_t).detach().numpy(), p.mean(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dispersion().detach().numpy(), p.dispersion(), rtol=1e-13)
    ll.sum().backward()
    for name, prm in layer.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name


@pytest.mark.parametrize("per_expert", [False, True], ids=["shared", "per-expert"])
@pytest.mark.parametrize("roles", [False, True], ids=["all-columns", "roles"])
@pytest.mark.parametrize("family", FAMILIES)
def test_params_round_trip_for_every_family_and_role(family, roles, per_expert):
    p = _family_params(family, roles, per_expert)
    layer = MoE.from_params(p)
    back = layer.to_params()
    assert back.family_object.name == p.family_object.name
    assert back.link_function.name == p.link_function.name
    assert back.has_roles == p.has_roles
    if roles:
        np.testing.assert_array_equal(back.gating_features, G_MASK)
        np.testing.assert_array_equal(back.expert_features, E_MASK)
    for name in ("experts", "gating", "expert_bias", "gating_bias"):
        np.testing.assert_array_equal(getattr(back, name), getattr(p, name))  # copied as is
    # dispersions pass through log / exp: equal to rounding
    assert np.shape(back.noise_std) == np.shape(p.noise_std)
    if p.noise_std is None:
        assert back.noise_std is None
    else:
        np.testing.assert_allclose(back.noise_std, p.noise_std, rtol=1e-14)
    if p.df is None:
        assert back.df is None
    else:
        np.testing.assert_allclose(back.df, p.df, rtol=1e-14)
    again = MoE.from_params(back)
    for key, value in layer.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=1e-14, atol=0)
    X, _ = sample(p, 500, random_state=2)
    est = layer.to_estimator()
    np.testing.assert_allclose(est.predict(X), p.mean(X), rtol=1e-10, atol=1e-12)


def test_family_instance_and_index_roles_are_kept():
    fam = StudentT(nu_min=2.0, nu_max=50.0)
    by_index = MoE(5, 3, family=fam, gating_features=[4, 0, 1], expert_features=[3, 1, 2])
    by_mask = MoE(5, 3, family="student-t", gating_features=G_MASK, expert_features=E_MASK)
    for layer in (by_index, by_mask):
        assert layer.gating.shape == (3, 3) and layer.experts.shape == (3, 3)
        assert layer.gating_index.tolist() == [0, 1, 4]  # increasing column order
        assert layer.expert_index.tolist() == [1, 2, 3]
        assert "gating_index" in dict(layer.named_buffers())
    p = by_index.to_params()
    assert p.family_object is fam  # the bounds on nu travel with the family
    np.testing.assert_array_equal(p.gating_features, G_MASK)
    # only the gate's columns reach the gate: an empty gate gives constant weights
    const = MoE(5, 2, family="poisson", gating_features=[], dtype=torch.float64)
    with torch.no_grad():
        const.gating_bias.copy_(_t([0.0, 1.0]))
    x = torch.randn(4, 5, dtype=torch.float64)
    expected = torch.softmax(_t([0.0, 1.0]), 0).expand(4, 2)
    torch.testing.assert_close(const.gating_proba(x), expected)
    # a Gaussian layer keeps its old state (no new keys)
    assert set(MoE(4, 2).state_dict()) == {
        "experts",
        "gating",
        "expert_bias",
        "gating_bias",
        "log_noise",
    }


def test_family_layer_validates():
    with pytest.raises(ValueError, match="unknown family"):
        MoE(3, 2, family="beta-binomial")
    with pytest.raises(ValueError, match="no torch implementation"):
        MoE(3, 2, family="binomial")
    with pytest.raises(TypeError, match="family"):
        MoE(3, 2, family=3)
    with pytest.raises(ValueError, match="fixed link"):
        MoE(3, 2, family="poisson", link="tanh")
    with pytest.raises(ValueError, match="out of range"):
        MoE(3, 2, gating_features=[3])
    with pytest.raises(ValueError, match="twice"):
        MoE(3, 2, expert_features=[0, 0])
    with pytest.raises(ValueError, match="one entry per column"):
        MoE(3, 2, expert_features=[True, False])
    layer = MoE(3, 2, family="poisson", dtype=torch.float64)
    x = torch.zeros(5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        layer.log_likelihood(torch.zeros(5, 4, dtype=torch.float64), torch.zeros(5))
    with pytest.raises(ValueError, match="y >= 0"):
        train_likelihood(layer, x, -torch.ones(5, dtype=torch.float64), steps=1)


def test_other_families_refuse_the_gaussian_losses():
    p = _family_params("poisson", roles=False)
    X, y = sample(p, 500, random_state=3)
    layer = MoE.from_params(p)
    with pytest.raises(ValueError, match="Gaussian experts"):
        ExpertLoss("linear", 0.2, family="poisson")
    with pytest.raises(ValueError, match="Gaussian experts"):
        ExpertLoss("linear", 0.2, family=layer)
    with pytest.raises(ValueError, match="train_likelihood"):
        train_two_stage(layer, _t(X), _t(y), expert_steps=10)
    with pytest.raises(ValueError, match="GatingLoss()"):
        GatingLoss("linear", 0.2)(layer, _t(X), _t(y))
    # GatingLoss() is the negative log-likelihood with the experts frozen, any family
    loss = GatingLoss()(layer, _t(X), _t(y))
    loss.backward()
    assert float(loss) == pytest.approx(-p.log_likelihood(X, y).mean(), rel=1e-12)
    assert layer.gating.grad is not None and layer.experts.grad is None
    # the two-stage trainer without the moment stage trains the gate of any family
    hist = train_two_stage(layer, _t(X), _t(y), expert_steps=0, gating_steps=5, batch_size=250)
    assert len(hist["gating"]) == 5 and not hist["experts"]


@pytest.fixture
def one_thread():
    # tiny tensors: with several intra-op threads, thread synchronisation costs more than
    # the arithmetic (about 10x slower on a busy 2-core machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_likelihood_training_on_poisson_data_reaches_the_estimator_fit(one_thread):
    truth = MoEParams(
        [[0.8, 0.0, 0.3], [-0.6, 0.4, 0.0]],
        [[0.0, 1.5, -1.0], [0.0, -1.5, 1.0]],
        expert_bias=[1.0, 0.2],
        family="poisson",
    )
    X, y = sample(truth, 4000, random_state=0)
    fitted = MixtureOfExpertsRegressor(2, family="poisson", n_init=2, random_state=0).fit(X, y)
    best = fitted.params_.log_likelihood(X, y).mean()
    x_t, y_t = _t(X), _t(y)
    torch.manual_seed(0)
    layer = MoE(3, 2, family="poisson", dtype=torch.float64)
    with torch.no_grad():
        start = float(layer.log_likelihood(x_t, y_t).mean())
    hist = train_likelihood(layer, x_t, y_t, steps=300, lr=0.05, batch_size=1000, random_state=0)
    assert len(hist) == 300
    with torch.no_grad():
        end = float(layer.log_likelihood(x_t, y_t).mean())
    assert end > start + 1.0  # from -3.3 to -1.66 nats per sample
    # Both maximise the same likelihood: over 12 torch seeds the gap after 300 annealed Adam
    # steps was <= 2e-6 nats per sample, the experts within 0.005 and the gate within 0.003 of
    # the estimator's fit: far inside the MLE's own sampling error (about p / 2n = 1e-3 nats,
    # 0.03 in the experts), so the tolerances below still mean "the same optimum".
    assert abs(end - best) <= 1e-4
    err = parameter_errors(layer.to_params(), fitted.params_)
    assert err.experts <= 0.02 and err.gating <= 0.05, err


def test_likelihood_training_keeps_dispersions_in_range(one_thread):
    p = _family_params("student-t", roles=True)
    X, y = sample(p, 500, random_state=4)
    layer = MoE.from_params(p)
    with torch.no_grad():
        layer.log_df.fill_(10.0)  # nu = 2e4, beyond nu_max = 200
    hist = train_likelihood(layer, _t(X), _t(y), steps=3, batch_size=250)
    assert np.all(np.isfinite(hist))
    assert float(layer.log_df.detach().max()) <= np.log(200.0) + 1e-12


def test_two_stage_with_roles_reads_the_expert_columns(one_thread):
    # gate on columns 0-1, Gaussian experts on 2-5 (independent of the gate: the theory regime)
    rng = np.random.default_rng(0)
    g = np.array([True, True, False, False, False, False])
    A = rng.standard_normal((3, 4))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    truth = MoEParams(
        A, 1.5 * rng.standard_normal((3, 2)), noise_std=0.2, gating_features=g, expert_features=~g
    )
    X, y = sample(truth, 5000, random_state=1)
    torch.manual_seed(0)
    layer = MoE(6, 3, gating_features=[0, 1], expert_features=[2, 3, 4, 5], dtype=torch.float64)
    hist = train_two_stage(
        layer, _t(X), _t(y), expert_steps=5, gating_steps=5, restarts=1, batch_size=1000
    )
    assert len(hist["experts"]) == 5 and len(hist["gating"]) == 5
    assert layer.experts.shape == (3, 4) and layer.gating.shape == (3, 2)
    # the experts come back unit-norm from the (4-column) whitened moment stage
    np.testing.assert_allclose(layer.experts.detach().norm(dim=1).numpy(), 1.0, rtol=1e-10)
    assert np.all(np.isfinite(hist["gating"]))


def test_gating_loss_reads_the_role_columns():
    p = _family_params("gaussian", roles=True, per_expert=False)
    X, y = sample(p, 1000, random_state=5)
    layer = MoE.from_params(p)
    expected = -p.log_likelihood(X, y).mean()
    # the Gaussian L_log at the layer's own noise level, and the family form: both the NLL
    assert float(GatingLoss("tanh", 0.5)(layer, _t(X), _t(y))) == pytest.approx(expected, rel=1e-12)
    assert float(GatingLoss()(layer, _t(X), _t(y))) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------ classification layers
def _classification_layer(family, roles, seed=0, d=5, k=3, n_classes=None):
    torch.manual_seed(seed)
    kw = dict(gating_features=[0, 1, 2], expert_features=[1, 3, 4]) if roles else {}
    layer = MoE(d, k, family=family, n_classes=n_classes, dtype=torch.float64, **kw)
    with torch.no_grad():
        for p in (layer.experts, layer.gating, layer.expert_bias, layer.gating_bias):
            p.normal_()
    return layer


def _codes_from(proba, rng):
    """One class code per row of ``proba`` (n, C), by inverting the cumulative sums."""
    return np.argmax(np.cumsum(proba, axis=1) > rng.random((len(proba), 1)), axis=1)


@pytest.mark.parametrize("roles", [False, True])
def test_multinomial_layer_matches_the_family_and_the_classifier(roles):
    layer = _classification_layer("multinomial", roles, n_classes=4)
    assert layer.experts.shape == (3, 3, 3 if roles else 5) and layer.expert_bias.shape == (3, 3)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 5))
    codes = rng.integers(0, 4, 500)
    x = _t(X)
    with torch.no_grad():
        ll = layer.log_likelihood(x, torch.as_tensor(codes)).numpy()
        # float codes are the same classes
        np.testing.assert_array_equal(ll, layer.log_likelihood(x, _t(codes)).numpy())
        proba = layer.predict_proba(x).numpy()
        np.testing.assert_array_equal(layer(x).numpy(), proba)
        assert layer.expert_outputs(x).shape == (500, 3, 4)
        eta = layer.expert_predictors(x).numpy()
        log_gate = layer.gating_log_proba(x).numpy()
    # the numpy family mixed with the gate
    logf = Multinomial(4).log_density(codes, eta, np.zeros((3, 0)))
    np.testing.assert_allclose(ll, np.logaddexp.reduce(log_gate + logf, axis=1), atol=1e-10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    # and the classifier holding the same parameters, with string labels
    labels = np.array(["ant", "bee", "cat", "dog"])
    clf = layer.to_classifier(labels)
    assert isinstance(clf, MixtureOfExpertsClassifier) and clf.experts_.shape == (
        3,
        3,
        3 + 2 * (not roles),
    )
    np.testing.assert_allclose(clf.log_density(X, labels[codes]), ll, atol=1e-10)
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-10)
    assert np.array_equal(clf.predict(X), labels[proba.argmax(axis=1)])
    # back to a layer: the same model (the gate comes back centred over the experts)
    back = MoE.from_classifier(clf)
    assert back.family == "multinomial" and back.n_classes == 4 and back.has_roles == roles
    with torch.no_grad():
        np.testing.assert_allclose(back.predict_proba(x).numpy(), proba, atol=1e-10)
        np.testing.assert_allclose(back.log_likelihood(x, _t(codes)).numpy(), ll, atol=1e-10)
    np.testing.assert_allclose(back.experts.detach().numpy(), layer.experts.detach().numpy())
    g = layer.gating.detach().numpy()
    np.testing.assert_allclose(back.gating.detach().numpy(), g - g.mean(axis=0), atol=1e-15)


@pytest.mark.parametrize("roles", [False, True])
def test_bernoulli_layer_predict_proba_and_classifier_bridge(roles):
    layer = _classification_layer("bernoulli", roles, seed=1)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 5))
    y = rng.integers(0, 2, 400)
    x = _t(X)
    with torch.no_grad():
        p1 = layer(x).numpy()  # forward keeps returning P(y = 1), shape (n,)
        proba = layer.predict_proba(x).numpy()
        ll = layer.log_likelihood(x, _t(y)).numpy()
    assert p1.shape == (400,) and proba.shape == (400, 2)
    np.testing.assert_allclose(proba[:, 1], p1, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    # the classifier's two-class convention: one row, the log-odds of classes_[1]
    clf = layer.to_classifier(["no", "yes"])
    assert clf.experts_.shape == (3, 1, 3 if roles else 5)
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-10)
    np.testing.assert_allclose(clf.log_density(X, np.array(["no", "yes"])[y]), ll, atol=1e-10)
    back = MoE.from_classifier(clf)
    assert back.family == "bernoulli" and back.experts.shape == layer.experts.shape
    with torch.no_grad():
        np.testing.assert_allclose(back(x).numpy(), p1, atol=1e-10)


def test_two_class_multinomial_layer_keeps_its_classes_in_the_classifier():
    # Multinomial(2) holds the log-odds of class 0; the classifier's row is that of class 1
    layer = _classification_layer("multinomial", False, seed=2, n_classes=2)
    X = np.random.default_rng(2).standard_normal((300, 5))
    with torch.no_grad():
        proba = layer.predict_proba(_t(X)).numpy()
    clf = layer.to_classifier()
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-10)
    with torch.no_grad():
        back = MoE.from_classifier(clf).predict_proba(_t(X)).numpy()
    np.testing.assert_allclose(back, proba, atol=1e-10)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fitted_classifier_round_trips_through_the_layer(n_classes, tmp_path):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 4))
    labels = np.array([10, 20, 30][:n_classes])
    y = labels[_codes_from(np.full((300, n_classes), 1.0 / n_classes), rng)]
    clf = MixtureOfExpertsClassifier(
        2, gating_features=[0, 1], expert_features=[2, 3], n_init=1, max_iter=30, random_state=0
    )
    with warnings.catch_warnings():  # 30 iterations may stop short of convergence
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    layer = MoE.from_classifier(clf)
    assert layer.family == ("bernoulli" if n_classes == 2 else "multinomial")
    assert layer.gating.shape == (2, 2) and layer.has_roles
    codes = np.searchsorted(labels, y)
    with torch.no_grad():
        np.testing.assert_allclose(
            layer.predict_proba(_t(X)).numpy(), clf.predict_proba(X), atol=1e-10
        )
        ll = layer.log_likelihood(_t(X), torch.as_tensor(codes)).numpy()
    np.testing.assert_allclose(ll, clf.log_density(X, y), atol=1e-10)
    again = layer.to_classifier(clf.classes_)
    for name in ("experts_", "expert_bias_", "gating_", "gating_bias_", "classes_"):
        np.testing.assert_allclose(getattr(again, name), getattr(clf, name), atol=1e-15)
    np.testing.assert_array_equal(again.params_.gating_features, clf.params_.gating_features)
    assert again.n_parameters_ == clf.n_parameters_
    assert again.get_params()["expert_features"] == [2, 3]
    # the converted classifier saves and loads without pickle
    from moelearn import load

    again.save(tmp_path / "clf")
    np.testing.assert_allclose(
        load(tmp_path / "clf").predict_proba(X), clf.predict_proba(X), atol=1e-12
    )


def test_classification_layers_validate():
    with pytest.raises(ValueError, match="n_classes"):
        MoE(3, 2, family="multinomial")
    with pytest.raises(ValueError, match="n_classes"):
        MoE(3, 2, family="poisson", n_classes=3)
    with pytest.raises(ValueError, match="contradicts"):
        MoE(3, 2, family=Multinomial(3), n_classes=4)
    with pytest.raises(ValueError, match="contradicts"):
        MoE(3, 2, family="bernoulli", n_classes=3)
    no_bias = MoE(3, 2, family=Multinomial(3), bias=False)
    assert no_bias.experts.shape == (2, 2, 3) and no_bias.expert_bias.shape == (2, 2)
    clf = no_bias.to_classifier()
    assert not clf.fit_intercept and clf.n_parameters_ == 2 * 2 * 3 + 1 * 3
    layer = MoE(3, 2, family="multinomial", n_classes=3, dtype=torch.float64)
    x = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        layer.log_likelihood(x, torch.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="whole numbers"):
        layer.log_likelihood(x, torch.tensor([0.0, 1.5, 1.0, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="labels 0..2"):
        train_likelihood(layer, x, torch.tensor([0, 1, 3, 2]), steps=1)
    with pytest.raises(ValueError, match="to_classifier"):
        layer.to_params()
    with pytest.raises(ValueError, match="3 class labels"):
        layer.to_classifier(["a", "b"])
    with pytest.raises(ValueError, match="sorted and distinct"):
        layer.to_classifier(["c", "b", "a"])
    gaussian = MoE(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="predict_log_proba needs"):
        gaussian.predict_proba(x)
    with pytest.raises(ValueError, match="to_classifier needs"):
        gaussian.to_classifier()
    with pytest.raises(TypeError, match="MixtureOfExpertsClassifier"):
        MoE.from_classifier(MixtureOfExpertsRegressor())
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MoE.from_classifier(MixtureOfExpertsClassifier())


def test_gating_loss_of_a_multinomial_layer_trains_the_gate_only(one_thread):
    layer = _classification_layer("multinomial", True, seed=4, n_classes=3)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 5))
    y = torch.as_tensor(rng.integers(0, 3, 300))
    loss = GatingLoss()(layer, _t(X), y)
    with torch.no_grad():
        expected = -float(layer.log_likelihood(_t(X), y).mean())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert layer.gating.grad is not None and layer.experts.grad is None
    hist = train_two_stage(layer, _t(X), y, expert_steps=0, gating_steps=3, batch_size=100)
    assert len(hist["gating"]) == 3 and np.all(np.isfinite(hist["gating"]))


def test_likelihood_training_on_three_class_data_reaches_the_classifier_fit(one_thread):
    truth = _classification_layer("multinomial", False, d=3, k=2, n_classes=3)
    with torch.no_grad():
        truth.experts.copy_(_t([[[2.0, 0, 0], [0, 2.0, 0]], [[-2.0, 0, 1.0], [0, -2.0, 0]]]))
        truth.expert_bias.copy_(_t([[0.5, 0.0], [0.0, 0.5]]))
        truth.gating.copy_(_t([[0, 0, 2.0], [0, 0, -2.0]]))
        truth.gating_bias.zero_()
    rng = np.random.default_rng(0)
    n = 3000
    X = rng.standard_normal((n, 3))
    with torch.no_grad():
        y = _codes_from(truth.predict_proba(_t(X)).numpy(), rng)
    fitted = MixtureOfExpertsClassifier(
        2, alpha=0.0, prior_strength=0.0, n_init=2, random_state=0
    ).fit(X, y)
    x_t, y_t = _t(X), torch.as_tensor(y)

    def start_layer():
        torch.manual_seed(0)
        layer = MoE(3, 2, family="multinomial", n_classes=3, dtype=torch.float64)
        with torch.no_grad():
            # a random gate: from the all-zero gate Adam stalls 0.014 nats below the optimum
            layer.gating.normal_()
        return layer

    # LongTensor and float codes give the same training
    short = [train_likelihood(start_layer(), x_t, t, steps=20, batch_size=n) for t in (y_t, _t(y))]
    assert short[0] == pytest.approx(short[1], rel=1e-12)
    layer = start_layer()
    with torch.no_grad():
        start = float(layer.log_likelihood(x_t, y_t).mean())
    train_likelihood(layer, x_t, y_t, steps=400, lr=0.1, batch_size=n)
    with torch.no_grad():
        end = float(layer.log_likelihood(x_t, y_t).mean())
        proba = layer.predict_proba(x_t).numpy()
    assert end > start + 0.3  # from -1.32 to -0.798 nats per sample
    # Both maximise the same likelihood (alpha=0).  From this start the gap was 1e-8 nats and
    # the class probabilities within 4e-4 of the classifier's; the MLE's own sampling error is
    # about p / 2n = 16 / 6000 = 3e-3 nats per sample (and 1 / sqrt(n) = 0.02 in the
    # probabilities), so the tolerances below still mean "the same optimum".  The likelihood
    # has a second local maximum 0.017 nats lower, which 4 of 8 random starts (torch seeds 0-7)
    # reached: a single Adam run, like a single EM run, finds a local optimum.
    assert abs(end - fitted.log_likelihood_) <= 1e-4
    assert np.max(np.abs(proba - fitted.predict_proba(X))) <= 5e-3
