"""The file codec: hand-written files of versions 1 and 2, the record registry, layering."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import moelearn
from moelearn import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor, MoEParams
from moelearn.persistence import register_record

SRC = Path(moelearn.__file__).parent

A = np.array([[1.0, -0.5], [-0.3, 2.0]])
W = np.array([[0.4, 0.1], [-0.4, -0.1]])
B = np.array([0.2, -0.7])
C = np.array([0.3, -0.3])
SIGMA = np.array([0.5, 0.25])
X = np.random.default_rng(0).normal(size=(50, 2))
Y = X @ A[0] + 0.1


def _write(path, meta, arrays):
    # the layout every version has used: an uncompressed npz with a JSON byte array
    body = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, __meta__=body, **arrays)


def _regressor_arrays(d=2):
    return {
        "experts": A,
        "gating": W,
        "expert_bias": B,
        "gating_bias": C,
        "noise_std": SIGMA,
        "x_mean": np.zeros(d),
        "x_whiten": np.eye(d),
        "x_unwhiten": np.eye(d),
    }


def _regressor_meta(version):
    meta = {
        "format": "moelearn-model",
        "version": version,
        "link": "linear",
        "n_experts": 2,
        "n_features": 2,
        "params": {"noise": "expert", "fit_intercept": True, "max_iter": 1000, "solver": "moments"},
        "random_state": 0,
        "fitted": {
            "n_iter_": 7,
            "converged_": True,
            "log_likelihood_": -1.25,
            "init_method_": "moments (tensor)",
            "y_mean": 0.0,
            "y_scale": 1.0,
        },
    }
    if version == 2:
        meta["family"] = "gaussian"
    return meta


@pytest.mark.parametrize("version", [1, 2])
def test_hand_written_regressor_files_load(tmp_path, version):
    path = tmp_path / "m.npz"
    _write(path, _regressor_meta(version), _regressor_arrays())
    est = moelearn.load(path)
    truth = MoEParams(A, W, B, C, SIGMA, "linear")
    assert isinstance(est, MixtureOfExpertsRegressor)
    assert (est.n_iter_, est.converged_, est.log_likelihood_) == (7, True, -1.25)
    assert est.init_method_ == "moments (tensor)" and est.random_state == 0
    np.testing.assert_allclose(est.predict(X), truth.mean(X), rtol=1e-12)
    np.testing.assert_allclose(est.log_density(X, Y), truth.log_likelihood(X, Y), rtol=1e-12)
    # saved again, the file holds the same record
    est.save(tmp_path / "again.npz")
    with np.load(tmp_path / "again.npz") as again:
        meta = json.loads(again["__meta__"].tobytes())
        assert meta["version"] == 2 and "estimator" not in meta
        for name, value in _regressor_arrays().items():
            np.testing.assert_array_equal(again[name], value)


def test_hand_written_version_2_file_with_roles_and_family(tmp_path):
    meta = _regressor_meta(2)
    meta.update(
        family="student-t",
        df=[4.0, 9.0],
        gating_features=[True, False],
        expert_features=[False, True],
        feature_names_in_=["dose", "age"],
        target_name_="response",
    )
    arrays = _regressor_arrays()
    arrays.update(experts=A[:, 1:], gating=W[:, :1])
    _write(tmp_path / "t.npz", meta, arrays)
    est = moelearn.load(tmp_path / "t.npz")
    assert est.family == "student-t" and est.target_name_ == "response"
    assert list(est.feature_names_in_) == ["dose", "age"]
    np.testing.assert_array_equal(est.df_, [4.0, 9.0])
    np.testing.assert_array_equal(est.params_.expert_features, [False, True])


def test_unknown_record_and_bad_fields_are_refused(tmp_path):
    meta = _regressor_meta(2)
    meta["estimator"] = "forest"
    _write(tmp_path / "f.npz", meta, _regressor_arrays())
    with pytest.raises(ValueError, match="unknown estimator 'forest'"):
        moelearn.load(tmp_path / "f.npz")
    meta = _regressor_meta(2)
    meta["n_experts"] = "two"
    _write(tmp_path / "b.npz", meta, _regressor_arrays())
    with pytest.raises(ValueError, match="not a valid moelearn model file: bad metadata"):
        moelearn.load(tmp_path / "b.npz")
    meta = _regressor_meta(2)
    del meta["fitted"]["n_iter_"]
    _write(tmp_path / "k.npz", meta, _regressor_arrays())
    with pytest.raises(ValueError, match="bad metadata .*n_iter_"):
        moelearn.load(tmp_path / "k.npz")


def test_hand_written_classifier_file_loads(tmp_path):
    meta = {
        "format": "moelearn-model",
        "version": 2,
        "estimator": "classifier",
        "n_experts": 2,
        "n_features": 2,
        "classes": ["no", "yes"],
        "label_dtype": "object",
        "gating_features": [True, True],
        "expert_features": [True, True],
        "params": {"n_experts": 2, "alpha": 1e-4},
        "random_state": None,
        "fitted": {
            "n_iter_": 3,
            "converged_": True,
            "log_likelihood_": -0.5,
            "init_method_": "kmeans",
            "n_parameters_": 9,
        },
    }
    arrays = {
        "experts": A[:, None, :],
        "expert_bias": B[:, None],
        "gating": W,
        "gating_bias": C,
    }
    _write(tmp_path / "c.npz", meta, arrays)
    clf = moelearn.load(tmp_path / "c.npz")
    assert isinstance(clf, MixtureOfExpertsClassifier)
    gate = np.exp(X @ W.T + C)
    gate /= gate.sum(1, keepdims=True)
    p_yes = (gate / (1.0 + np.exp(-(X @ A.T + B)))).sum(1)
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], p_yes, rtol=1e-10)
    assert list(clf.predict(X[:3])) == ["yes" if p > 0.5 else "no" for p in p_yes[:3]]
    # written before prior_strength existed: fitted without a prior, whatever today's default
    assert clf.get_params()["prior_strength"] == 0.0 and clf.alpha == 1e-4
    prior = clf.summary(X, np.where(p_yes > 0.5, "yes", "no")).prior
    assert "ridge alpha = 0.0001" in prior and "precision" not in prior


def test_register_record_needs_both_record_methods():
    class Plain:
        pass

    with pytest.raises(TypeError, match="_to_record"):
        register_record("plain")(Plain)


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            # a relative import of this package, or the package by its name
            module = node.module or ""
            yield (module if node.level else f"/{module}"), [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_persistence_imports_no_estimator():
    modules = {module for module, _ in _imports(SRC / "persistence.py")}
    assert modules <= {"/__future__", "/typing", "json", "os", "zipfile", "numpy"}, modules


def test_no_module_imports_another_modules_private_names():
    found = [
        f"{path.name}: from .{module} import {name}"
        for path in sorted(SRC.glob("*.py"))
        for module, names in _imports(path)
        for name in names
        if name.startswith("_")
        and not name.startswith("__")
        and not (module.startswith("/") and not module.startswith("/moelearn"))
    ]
    assert found == []


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::moelearn.exceptions.GateSeparationWarning")
@pytest.mark.parametrize(
    "family",
    [
        moelearn.families.StudentT(nu_max=40.0),
        moelearn.families.Gamma(shape_max=1e4),
        moelearn.families.NegativeBinomial(shape_max=1e4),
    ],
)
def test_family_instances_with_arguments_round_trip(tmp_path, family):
    # a family instance is saved by its name and its arguments, and restored with them
    y = np.exp(0.3 * X[:, 0]) + 0.1 * np.abs(np.random.default_rng(1).normal(size=50))
    est = MixtureOfExpertsRegressor(2, family=family, n_init=1, max_iter=20, random_state=0)
    est.fit(X, y)
    path = tmp_path / "model.npz"
    est.save(path)
    back = moelearn.load(path)
    restored = back.params_.family_object
    assert type(restored) is type(family)
    assert restored.get_config() == family.get_config()
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)
    # the family parameter keeps the object (a name would lose its arguments on a refit)
    assert back.family.get_config() == family.get_config()


def test_default_family_instance_is_named_and_a_foreign_one_is_refused(tmp_path):
    est = MixtureOfExpertsRegressor.from_params(
        MoEParams(A, W, B, C, SIGMA, family=moelearn.families.StudentT(), df=[5.0, 5.0])
    )
    assert est.family == "student-t"  # the name builds the same family

    class Shifted(moelearn.families.Gaussian):
        pass

    foreign = MixtureOfExpertsRegressor.from_params(MoEParams(A, W, B, C, SIGMA, family=Shifted()))
    with pytest.raises(ValueError, match="not one of moelearn's families"):
        foreign.save(tmp_path / "model.npz")


@pytest.mark.parametrize("args", [{"nu_min": "a"}, {"nu_max": -1.0}, {"nope": 1.0}, [1.0]])
def test_bad_family_arguments_in_a_file_are_refused(tmp_path, args):
    meta = _regressor_meta(2)
    meta["family"] = "student-t"
    meta["family_args"] = args
    meta["df"] = [5.0, 5.0]
    _write(tmp_path / "m.npz", meta, _regressor_arrays())
    with pytest.raises(ValueError, match="family"):
        moelearn.load(tmp_path / "m.npz")
