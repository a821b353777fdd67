"""The estimators' ``verbose`` option: silent by default, the stages of a fit at 1."""

import json

import numpy as np
import pytest

import moelearn
from moelearn import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor, make_moe, sample


@pytest.fixture(scope="module")
def data():
    p = make_moe(3, 2, noise_std=0.3, random_state=0)
    return sample(p, 800, random_state=1)


def _labels(X):
    rng = np.random.default_rng(0)
    return np.where(rng.random(len(X)) < 1 / (1 + np.exp(-2 * X[:, 0])), "a", "b")


def test_default_fits_print_nothing(data, capsys):
    X, y = data
    MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    MixtureOfExpertsRegressor(2, family="student-t", random_state=0).fit(X, y)
    MixtureOfExpertsClassifier(2, random_state=0).fit(X, _labels(X))
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("family", ["gaussian", "student-t"])
def test_verbose_prints_the_stages_to_stderr(data, capsys, family):
    X, y = data
    est = MixtureOfExpertsRegressor(2, family=family, random_state=0, verbose=1).fit(X, y)
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert "candidates screened" in err
    assert "finalists run to convergence" in err
    assert "fit done" in err and est.init_method_ in err
    assert all(line.startswith("[MixtureOfExpertsRegressor") for line in err.splitlines())


def test_verbose_classifier(data, capsys):
    X, _ = data
    MixtureOfExpertsClassifier(2, random_state=0, verbose=1).fit(X, _labels(X))
    err = capsys.readouterr().err
    assert "candidates screened" in err and "fit done" in err


def test_verbose_out_of_core_reports_passes_with_rows_per_second(data, capsys, tmp_path):
    X, y = data
    Xm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=float, shape=X.shape)
    Xm[:] = X
    MixtureOfExpertsRegressor(2, n_init=1, random_state=0, chunk_size=200).fit(Xm, y)
    assert capsys.readouterr() == ("", "")
    MixtureOfExpertsRegressor(2, n_init=1, random_state=0, chunk_size=200, verbose=1).fit(Xm, y)
    err = capsys.readouterr().err
    passes = [line for line in err.splitlines() if "over the data" in line]
    assert passes and all("rows/s" in line for line in passes)
    assert "pass 1 over the data (800 rows" in passes[0]


def test_verbose_does_not_change_the_fit(data, capsys):
    X, y = data
    quiet = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    loud = MixtureOfExpertsRegressor(2, random_state=0, verbose=1).fit(X, y)
    np.testing.assert_array_equal(quiet.experts_, loud.experts_)


def test_verbose_is_validated_and_not_saved(data, tmp_path):
    X, y = data
    with pytest.raises(ValueError, match="verbose"):
        MixtureOfExpertsRegressor(2, verbose="loud").fit(X, y)
    est = MixtureOfExpertsRegressor(2, random_state=0, n_init=1, verbose=1).fit(X, y)
    path = tmp_path / "m.npz"
    est.save(path)
    with np.load(path) as archive:
        meta = json.loads(archive["__meta__"].tobytes().decode("utf-8"))
    assert "verbose" not in meta["params"] and "n_init" in meta["params"]
    loaded = moelearn.load(path)
    assert loaded.verbose == 0
    np.testing.assert_array_equal(loaded.experts_, est.experts_)
    clf = MixtureOfExpertsClassifier(2, random_state=0, verbose=1).fit(X, _labels(X))
    clf.save(tmp_path / "c.npz")
    assert moelearn.load(tmp_path / "c.npz").verbose == 0


def test_reporter_is_silent_outside_a_fit(capsys):
    from moelearn import _progress

    _progress.report("nothing to see")
    assert capsys.readouterr() == ("", "")
    with _progress.reporting(1, "test"):
        _progress.report("a stage")
        with _progress.reporting(0):  # a nested quiet fit silences its own stages
            _progress.report("hidden")
    err = capsys.readouterr().err
    assert "a stage" in err and "hidden" not in err
