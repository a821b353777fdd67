import json
import zipfile

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator

import moelearn
from moelearn import MixtureOfExpertsRegressor, make_moe, parameter_errors, sample


@pytest.mark.parametrize(
    "kw",
    [
        {},
        # each family's run takes about 45 s (many small fits)
        pytest.param({"family": "student-t"}, marks=pytest.mark.slow),
        pytest.param({"family": "poisson"}, marks=pytest.mark.slow),
        pytest.param({"family": "gamma"}, marks=pytest.mark.slow),
        pytest.param({"gating_features": []}, marks=pytest.mark.slow),
    ],
    ids=["gaussian", "student-t", "poisson", "gamma", "constant-gate"],
)
def test_check_estimator(kw):
    # every family passes all of scikit-learn's estimator checks, with one expected failure.
    # On the checks' tiny data (15 rows, 30 features) Student-t and Gamma experts reach their
    # spreads' bounds (the scale at the noise floor, the shape at its bound) and one linear
    # predictor passes through every row: the likelihood's ceiling is a plateau, flat along
    # the gate, where the optimisers stop anywhere. The engine returns the plateau's canonical
    # point (DESIGN §13), so that a fit with integer weights predicts as the fit on repeated
    # rows does (check_sample_weight_equivalence_on_dense_data). The expected failure:
    # under the default prior a Student-t fit there keeps a second expert that the gate
    # switches off, whose degrees of freedom sit at the prior's mode (so it is not the
    # plateau's point with equal experts); on the one row of weight zero the gate gives it
    # 5e-10 or 4e-9 (the gate's steepness along the plateau, which only the Cauchy prior's
    # flat tail determines, is the optimiser's stopping point), so the two fits predict
    # 6.5e-10 and 4.7e-9 there: 4e-9 apart, beyond the check's absolute 1e-9, while the 14
    # other rows agree to 1e-9
    expected = None
    if kw.get("family") == "student-t":
        expected = {
            "check_sample_weight_equivalence_on_dense_data": "an expert switched off by the "
            "gate predicts at a row of weight zero with a gate known to 1e-8 (see the comment)"
        }
    check_estimator(MixtureOfExpertsRegressor(**kw), expected_failed_checks=expected)


def _fit(X, y, **kw):
    kw.setdefault("compute_standard_errors", False)
    return MixtureOfExpertsRegressor(3, **kw).fit(X, y)


def _within_truth_start(params, X, y, ratio=1.1, **kw):
    """The default solver's errors vs the refinement started at the truth."""
    est = _fit(X, y, random_state=0, **kw)
    ref = _fit(X, y, init_params=params, **kw)
    e, r = parameter_errors(est, params), parameter_errors(ref, params)
    return (e.experts <= ratio * r.experts and e.gating <= ratio * r.gating), (e, r, est)


@pytest.mark.parametrize("link", ["linear", "tanh"])
def test_moments_solver_reaches_the_mle_fast_seed(link):
    p = make_moe(10, 3, link=link, noise_std=0.2, random_state=1)
    X, y = sample(p, 100_000, random_state=2)
    ok, (e, r, est) = _within_truth_start(p, X, y, link=link)
    assert ok, (e, r)
    assert "unavailable" not in est.init_method_  # the moment start was screened


# slow: 10 seeds x 2 fits at n = 1e5 per link (10-21 s each on 2 busy cores)
@pytest.mark.slow
@pytest.mark.parametrize("link", ["linear", "tanh", "relu", "sigmoid"])
def test_moments_solver_reaches_the_mle_every_seed(link):
    failures = []
    for seed in range(10):
        p = make_moe(10, 3, link=link, noise_std=0.2, random_state=100 + seed)
        X, y = sample(p, 100_000, random_state=200 + seed)
        ok, detail = _within_truth_start(p, X, y, link=link)
        if not ok:
            failures.append((seed, detail[:2]))
    assert not failures  # the issue asks for every seed


# slow: 10 seeds x 2 per-expert-noise fits at n = 1e5 per input law (13-14 s each)
@pytest.mark.slow
@pytest.mark.parametrize("inputs", ["gaussian", "uniform", "correlated"])
def test_moments_solver_off_the_theory_regime(inputs):
    ok_count = 0
    for seed in range(10):
        p = make_moe(
            10,
            3,
            noise_std=0.2,
            gating_scale=2.0,
            orthogonal_gating=False,
            intercept_scale=0.5,
            per_expert_noise=True,
            random_state=300 + seed,
        )
        X, y = sample(p, 100_000, random_state=400 + seed, inputs=inputs)
        ok, _ = _within_truth_start(p, X, y, noise="expert")
        ok_count += ok
    assert ok_count >= 9  # >= 90% of seeds


def test_fitted_attributes_and_methods(theory_linear):
    p, X, y = theory_linear
    X, y = X[:20000], y[:20000]
    est = MixtureOfExpertsRegressor(3, random_state=0, compute_standard_errors=True).fit(X, y)
    assert est.experts_.shape == (3, 10) and est.gating_.shape == (3, 10)
    assert est.expert_bias_.shape == (3,) and est.noise_std_.shape == (3,)
    np.testing.assert_allclose(est.gating_.mean(axis=0), 0, atol=1e-12)
    assert est.converged_ and est.n_iter_ > 0
    assert est.predict(X).shape == (20000,)
    np.testing.assert_allclose(est.predict_gating(X).sum(axis=1), 1.0)
    assert est.predict_experts(X).shape == (20000, 3)
    from sklearn.metrics import r2_score

    # the mixture mean cannot explain the mixture noise: compare with the truth's R^2
    assert est.score(X, y) >= 0.98 * r2_score(y, p.mean(X))
    ll = est.log_density(X, y)
    assert ll.mean() == pytest.approx(est.log_likelihood_)
    assert est.bic(X, y) > est.aic(X, y)
    y_new = est.sample(X, random_state=0)
    assert y_new.shape == y.shape
    se = est.standard_errors_
    assert np.all(np.isfinite(se.experts)) and np.all(se.experts > 0)
    # standard errors of order 1/sqrt(n): a few hundredths at n = 2e4
    assert 0.001 < np.median(se.experts) < 0.05


def test_standard_errors_cover_the_truth(theory_linear):
    p, X, y = theory_linear
    est = MixtureOfExpertsRegressor(3, fit_intercept=False, random_state=0).fit(X, y)
    se = est.standard_errors(X, y)
    perm = parameter_errors(est, p).permutation
    assert est.standard_errors_ is None  # off by default
    z = (est.experts_[perm] - p.experts) / se.experts[perm]
    # 30 roughly standard-normal z-scores: all within 4.5 with probability > 0.9998
    assert np.all(np.abs(z) < 4.5)
    assert 0.4 < np.std(z) < 1.8


def test_more_experts_than_features_falls_back():
    p = make_moe(3, 5, orthogonal_gating=False, random_state=0)
    X, y = sample(p, 5000, random_state=0)
    est = _fit(X, y[:], n_init=2, random_state=0).set_params(n_experts=5).fit(X, y)
    assert "moment start unavailable" in est.init_method_
    assert np.all(np.isfinite(est.experts_))


# Documented accuracy on the easy cell of docs/results.md §2 (d=10, k=3, linear,
# gating scale 1, n=1e5): the likelihood solvers and gd-l2 succeed (expert error
# <= 0.1) on every seed; the papers' pipelines (no refinement) meet the per-seed
# target 0.3 of DESIGN §8 for experts and gating.
_DOCUMENTED_ERROR = {
    "moments": 0.1,
    "em": 0.1,
    "gd-nll": 0.1,
    "gd-l2": 0.1,
    "landscape": 0.3,
    "tensor": 0.3,
}
# gradient descent needs 130-170 passes over 1e5 samples: 2-4 s each on 2 busy cores
_SLOW_SOLVERS = {"gd-nll", "gd-l2"}


@pytest.mark.parametrize(
    "solver",
    [
        pytest.param(s, marks=pytest.mark.slow) if s in _SLOW_SOLVERS else s
        for s in _DOCUMENTED_ERROR
    ],
)
def test_every_solver_reaches_its_documented_accuracy(theory_linear, solver):
    p, X, y = theory_linear
    est = _fit(X, y, solver=solver, fit_intercept=False, noise="shared", n_init=1, random_state=0)
    e = parameter_errors(est, p)
    assert e.experts <= _DOCUMENTED_ERROR[solver], e
    if solver in ("landscape", "tensor"):
        assert e.gating <= 0.3, e


def test_warm_start_with_init_params(theory_linear):
    p, X, y = theory_linear
    est = _fit(X[:20000], y[:20000], init_params=p)
    assert est.init_method_ == "init_params"
    with pytest.raises(ValueError, match="init_params"):
        _fit(X[:100, :5], y[:100], init_params=p)


def test_save_load_round_trip(tmp_path, theory_linear):
    p, X, y = theory_linear
    est = _fit(X[:20000], y[:20000], random_state=0, noise="expert")
    path = tmp_path / "model.npz"
    est.save(path)
    back = moelearn.load(path)
    np.testing.assert_array_equal(back.predict(X[:500]), est.predict(X[:500]))
    np.testing.assert_array_equal(
        back.log_density(X[:500], y[:500]), est.log_density(X[:500], y[:500])
    )
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert not zf.read(name).startswith(b"\x80"), "pickle protocol marker found"


def _tamper(path, out, edit):
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item, data)


def _rewrite_meta(key, value):
    def edit(name, data):
        if name != "__meta__.npy":
            return data
        header_end = data.index(b"\n") + 1
        meta = json.loads(data[header_end:].decode())
        meta[key] = value
        body = json.dumps(meta).encode()
        import io

        buf = io.BytesIO()
        np.save(buf, np.frombuffer(body, dtype=np.uint8))
        return buf.getvalue()

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (_rewrite_meta("version", 99), "unknown format version"),
        (_rewrite_meta("format", "other"), "format tag"),
        (_rewrite_meta("n_experts", 4), "shape"),
        (lambda name, data: None if name == "gating.npy" else data, "missing"),
        (
            lambda name, data: data[: len(data) // 2] if name == "experts.npy" else data,
            "not a valid",
        ),
    ],
)
def test_load_refuses_tampered_files(tmp_path, theory_linear, edit, match):
    p, X, y = theory_linear
    path = tmp_path / "m.npz"
    _fit(X[:5000], y[:5000], random_state=0).save(path)
    bad = tmp_path / "bad.npz"
    _tamper(path, bad, edit)
    with pytest.raises(ValueError, match=match):
        moelearn.load(bad)


def test_load_refuses_truncated_and_pickled_files(tmp_path, theory_linear):
    p, X, y = theory_linear
    path = tmp_path / "m.npz"
    _fit(X[:5000], y[:5000], random_state=0).save(path)
    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="not a valid"):
        moelearn.load(tmp_path / "trunc.npz")
    # an object array needs pickle to load: refused, never executed
    obj = tmp_path / "obj.npz"
    np.savez(obj, __meta__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a valid"):
        moelearn.load(obj)


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(n_experts=0), ValueError),
        (dict(solver="sgd"), ValueError),
        (dict(link="cosh"), ValueError),
        (dict(link=3), TypeError),
        (dict(noise="per-sample"), ValueError),
        (dict(tol=-1.0), ValueError),
    ],
)
def test_bad_parameters(theory_linear, kwargs, exc):
    _, X, y = theory_linear
    with pytest.raises(exc):
        MixtureOfExpertsRegressor(**kwargs).fit(X[:200], y[:200])


def test_bad_data(theory_linear):
    _, X, y = theory_linear
    est = MixtureOfExpertsRegressor()
    with pytest.raises(ValueError, match="NaN|infinity"):
        est.fit(np.where(X[:100] > 2, np.nan, X[:100]), y[:100])
    with pytest.raises(ValueError, match="constant"):
        est.fit(X[:100], np.ones(100))
    with pytest.raises(ValueError, match="inconsistent"):
        est.fit(X[:100], y[:99])
    with pytest.raises((TypeError, ValueError)):
        est.fit([["a", "b"], ["c", "d"]], [1.0, 2.0])
    est.fit(X[:500], y[:500])
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:5, :3])


def test_moments_with_extra_random_starts_still_reaches_the_mle(theory_linear):
    # the extra starts compete with the consistent one: the winner must still be
    # the maximum-likelihood solution (the refinement started at the truth)
    p, X, y = theory_linear
    X, y = X[:20000], y[:20000]
    ok, (e, r, est) = _within_truth_start(p, X, y, ratio=1.01, noise="shared", n_init=3)
    assert ok, (e, r)
    ref = _fit(X, y, init_params=p, noise="shared", n_init=1)
    assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, abs=1e-6)


def test_regressor_criteria_are_the_shared_code():
    # BIC, AIC and the parameter count come from MoEParams' plain log-likelihood and the
    # one count_parameters, for the Gaussian path and the engine's families alike
    from moelearn.model import count_parameters

    truth = make_moe(n_features=3, n_experts=2, noise_std=0.3, random_state=0)
    X, y = sample(truth, 500, random_state=1)
    for kw in ({}, {"noise": "shared"}, {"family": "student-t", "gating_features": [0]}):
        est = MixtureOfExpertsRegressor(2, random_state=0, **kw).fit(X, y)
        p = est.params_
        ll = p.log_likelihood(X, y).sum()
        k = count_parameters(
            p.family_object,
            2,
            p.gating_features,
            p.expert_features,
            shared_noise=kw.get("noise") == "shared",
        )
        assert est.n_parameters_ == k
        assert est.bic(X, y) == pytest.approx(-2 * ll + k * np.log(len(y)), rel=1e-12)
        assert est.aic(X, y) == pytest.approx(-2 * ll + 2 * k, rel=1e-12)
