"""Every bad or extreme input gets a clear answer, and nothing is lost (one test per kind)."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import moelearn
from moelearn import ChunkedDataset, MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from moelearn.cli import main
from moelearn.exceptions import DegenerateFitWarning, UnidentifiableWarning


@pytest.fixture(scope="module")
def data():
    truth = moelearn.make_moe(n_features=3, n_experts=2, noise_std=0.2, random_state=0)
    X, y = moelearn.sample(truth, 600, random_state=1)
    return X, y


def _quiet(fn):
    """Run ``fn`` with ConvergenceWarning ignored and every other warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fn()


# ----------------------------------------------------------------- extreme scales
@pytest.mark.parametrize("scale", [1e-160, 1e-200, 1e-300])
def test_tiny_X_is_rescaled_exactly(data, scale):
    # before: every column was taken for a constant (R^2 0.000 at 1e-160)
    X, y = data
    base = _quiet(lambda: MixtureOfExpertsRegressor(2, n_init=3, random_state=0).fit(X, y))
    tiny = _quiet(lambda: MixtureOfExpertsRegressor(2, n_init=3, random_state=0).fit(X * scale, y))
    # the same fit in other units: predictions agree to round-off of the optimiser
    np.testing.assert_allclose(tiny.predict(X * scale), base.predict(X), rtol=1e-6, atol=1e-6)
    assert tiny.score(X * scale, y) == pytest.approx(base.score(X, y), abs=1e-6)
    assert tiny.log_likelihood_ == pytest.approx(base.log_likelihood_, abs=1e-6)


def test_tiny_y_is_rescaled_exactly_without_warnings(data):
    # before: seven RuntimeWarnings, then "experts contains NaN or infinite values"
    X, y = data
    base = _quiet(lambda: MixtureOfExpertsRegressor(2, n_init=3, random_state=0).fit(X, y))
    tiny = _quiet(lambda: MixtureOfExpertsRegressor(2, n_init=3, random_state=0).fit(X, y * 1e-200))
    np.testing.assert_allclose(tiny.predict(X) * 1e200, base.predict(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tiny.noise_std_ * 1e200, base.noise_std_, rtol=1e-5)
    # the log-likelihood is in the units of y: shifted by log(1e200)
    assert tiny.log_likelihood_ == pytest.approx(base.log_likelihood_ + 200 * np.log(10), abs=1e-5)


def test_tiny_X_classifier_is_rescaled_exactly(data):
    X, y = data
    labels = np.where(y > np.median(y), "hi", "lo")
    base = _quiet(lambda: MixtureOfExpertsClassifier(2, random_state=0).fit(X, labels))
    tiny = _quiet(lambda: MixtureOfExpertsClassifier(2, random_state=0).fit(X * 1e-160, labels))
    np.testing.assert_allclose(
        tiny.predict_proba(X * 1e-160), base.predict_proba(X), rtol=1e-6, atol=1e-6
    )


def test_tiny_y_without_exact_rescaling_is_refused(data):
    X, y = data
    with pytest.raises(ValueError, match=r"y has values no larger than .*e-200.*link='tanh'"):
        _quiet(lambda: MixtureOfExpertsRegressor(2, link="tanh").fit(X, y * 1e-200))


def test_tiny_memory_map_is_refused_naming_the_scale(data, tmp_path):
    X, y = data
    np.save(tmp_path / "X.npy", X * 1e-160)
    np.save(tmp_path / "y.npy", y)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    y_map = np.load(tmp_path / "y.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"column 0 of X has values no larger than .*e-160"):
        MixtureOfExpertsRegressor(2).fit(X_map, y_map)


# ------------------------------------------------------------ sizes before work
def test_more_experts_than_samples_are_refused_before_work(data):
    # before: 44.7 GiB requested in the start search
    X, y = data
    with pytest.raises(ValueError, match=r"n_experts=2000 exceeds the 300 samples"):
        MixtureOfExpertsRegressor(2000).fit(X[:300], y[:300])
    with pytest.raises(ValueError, match=r"n_experts=500 exceeds the 300 samples"):
        MixtureOfExpertsClassifier(500).fit(X[:300], y[:300] > 0)


def test_experts_beyond_what_the_data_identify_are_warned_about():
    from moelearn import _validation

    with pytest.warns(UnidentifiableWarning, match=r"n_experts=90 experts of 4 coefficients"):
        _validation.check_fit_size(300, 90, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _validation.check_fit_size(300, 60, 4)  # 60 * 5 = 300 samples: identified


@pytest.mark.filterwarnings("ignore::moelearn.exceptions.GateSeparationWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("family", ["gaussian", "poisson"])
def test_as_many_experts_as_rows_fit_with_a_warning(family):
    # The Gaussian growth path split every expert at every level (k^2 split starts of
    # k-expert EM): 88 experts on 88 rows ran for hours.  Where the rows cannot identify
    # the experts the growth path and the moves are skipped; the fit ends, warned.
    rng = np.random.default_rng(5)
    X = rng.standard_normal((88, 2))
    y = rng.poisson(np.exp(0.3 * X[:, 0])).astype(float)
    with pytest.warns(UnidentifiableWarning, match="n_experts=88"):
        est = MixtureOfExpertsRegressor(88, family=family, n_init=2, max_iter=25).fit(X, y)
    assert np.all(np.isfinite(est.predict(X)))


def test_start_search_memory_is_predicted(monkeypatch):
    from moelearn import _validation

    monkeypatch.setattr(_validation, "_physical_memory", lambda: 2**30)
    with pytest.raises(
        ValueError, match=r"n_experts=1000 needs about .* GiB .* more than the 1 GiB"
    ):
        _validation.check_fit_size(10**6, 1000, 4)
    _validation.check_fit_size(10**6, 10, 4)  # small requests pass


def test_cli_too_many_experts_is_one_line(data, tmp_path, monkeypatch, capsys):
    X, y = data
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "d.csv", X[:300], y[:300])
    assert main(["fit", "d.csv", "--target", "y", "--experts", "5000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "n_experts=5000 exceeds the 300 samples" in err
    assert not (tmp_path / "model.npz").exists()


# ------------------------------------------------------ documented random_state
@pytest.mark.parametrize("cls", [MixtureOfExpertsRegressor, MixtureOfExpertsClassifier])
def test_generator_random_state_is_accepted(data, cls):
    X, y = data
    target = y if cls is MixtureOfExpertsRegressor else y > 0
    a = _quiet(lambda: cls(2, n_init=2, random_state=np.random.default_rng(5)).fit(X, target))
    b = _quiet(lambda: cls(2, n_init=2, random_state=np.random.default_rng(5)).fit(X, target))
    np.testing.assert_array_equal(a.experts_, b.experts_)


# ---------------------------------------------------------------------- pickling
def _tanh_prime(t):
    return 1.0 - np.tanh(t) ** 2


def test_every_fitted_estimator_pickles(data):
    # before: "Can't pickle local object '_make_user_link.<locals>.vfunc'"
    X, y = data
    counts = np.random.default_rng(0).poisson(np.exp(0.3 * X[:, 0]))
    fitted = [
        MixtureOfExpertsRegressor(2, link=np.tanh, n_init=2, random_state=0).fit(X, np.tanh(y)),
        MixtureOfExpertsRegressor(2, link=moelearn.get_link((np.tanh, _tanh_prime)), n_init=1).fit(
            X, np.tanh(y)
        ),
        MixtureOfExpertsRegressor(2, family="poisson", random_state=0).fit(X, counts),
        MixtureOfExpertsRegressor(2, family="student-t", n_init=2, random_state=0).fit(X, y),
        MixtureOfExpertsClassifier(2, random_state=0).fit(X, y > 0),
    ]
    for est in fitted:
        back = pickle.loads(pickle.dumps(est))
        np.testing.assert_array_equal(back.predict(X), est.predict(X))


# ---------------------------------------------------------- misleading messages
def _write_csv(path, X, y):
    cols = [f"x{j}" for j in range(X.shape[1])]
    rows = [",".join([*cols, "y"])]
    rows += [
        ",".join(f"{v!r}" for v in [*map(float, r), float(t)]) for r, t in zip(X, y, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")


def test_load_of_a_text_file_says_so(data, tmp_path):
    X, y = data
    _write_csv(tmp_path / "d.csv", X[:20], y[:20])
    with pytest.raises(ValueError, match=r"it is a text file \(it begins 'x0,x1") as info:
        moelearn.load(tmp_path / "d.csv")
    assert "pickle" not in str(info.value)


def test_cli_predict_on_a_csv_model_says_so(data, tmp_path, monkeypatch, capsys):
    X, y = data
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "d.csv", X[:20], y[:20])
    assert main(["predict", "d.csv", "d.csv"]) == 2
    err = capsys.readouterr().err
    assert "it is a text file" in err and "pickle" not in err


def test_cli_fit_on_a_directory_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somedir").mkdir()
    assert main(["fit", "somedir", "--target", "y", "--experts", "2"]) == 2
    assert "somedir is a directory, not a CSV file" in capsys.readouterr().err


def test_chunks_of_changing_width_are_named(data):
    X, y = data

    def chunks():
        yield X[:100], y[:100]
        yield X[100:, :2], y[100:]

    with pytest.raises(ValueError, match="chunk 1 has 2 columns, the first chunk 3"):
        MixtureOfExpertsRegressor(2).fit(ChunkedDataset(chunks))


def test_one_shot_generator_is_named(data):
    X, y = data
    once = iter([(X[:300], y[:300]), (X[300:], y[300:])])
    with pytest.raises(ValueError, match="pass a generator function, not a generator"):
        MixtureOfExpertsRegressor(2).fit(ChunkedDataset(lambda: once))


def test_labels_with_none_are_named(data):
    X, _ = data
    labels = np.array(["a", "b"] * 300, dtype=object)
    labels[7] = None
    with pytest.raises(ValueError, match=r"1 missing label \(None\), the first at row 7"):
        MixtureOfExpertsClassifier(2).fit(X, labels)
    labels[7] = 3
    with pytest.raises(TypeError, match="mix types that cannot be ordered"):
        MixtureOfExpertsClassifier(2).fit(X, labels)


def test_nan_label_in_a_later_chunk_of_a_memory_map_is_named(data, tmp_path):
    X, y = data
    labels = (y > 0).astype(float)
    labels[550] = np.nan
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", labels)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    y_map = np.load(tmp_path / "y.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="y contains NaN or infinite values"):
        MixtureOfExpertsClassifier(2, chunk_size=100).fit(X_map, y_map)


# -------------------------------------------------------- silent wrong results
def test_cli_output_is_written_as_named(data, tmp_path, monkeypatch):
    X, y = data
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "d.csv", X[:200], y[:200])
    args = ["fit", "d.csv", "--target", "y", "--experts", "2", "--n-init", "2"]
    assert main([*args, "--output", "model.v2"]) == 0
    assert (tmp_path / "model.v2").is_file() and not (tmp_path / "model.npz").exists()
    assert moelearn.load(tmp_path / "model.v2").n_experts == 2


def test_cli_multiline_quoted_field_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = ["a,y", "1,2", '"3', '",4']
    rows += [f"{i},{i % 3}" for i in range(5, 40)]
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    assert main(["fit", "q.csv", "--target", "y", "--experts", "1"]) == 2
    assert "row 3: a quoted field spans lines 3 to 4" in capsys.readouterr().err
    assert not (tmp_path / "model.npz").exists()


@pytest.mark.parametrize("cls", [MixtureOfExpertsRegressor, MixtureOfExpertsClassifier])
def test_refit_on_an_unnamed_memory_map_drops_stale_names(data, tmp_path, cls):
    pd = pytest.importorskip("pandas")
    X, y = data
    target = y if cls is MixtureOfExpertsRegressor else (y > 0).astype(float)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", target)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    y_map = np.load(tmp_path / "y.npy", mmap_mode="r")
    est = _quiet(
        lambda: cls(2, n_init=2, random_state=0).fit(pd.DataFrame(X, columns=list("abc")), target)
    )
    _quiet(lambda: est.fit(X_map, y_map))
    assert not hasattr(est, "feature_names_in_")
    est.set_params(gating_features=["a"])
    with pytest.raises(ValueError, match="X has no column names"):
        est.fit(X_map, y_map)


# ------------------------------------------- degenerate count and positive fits
def test_degenerate_gamma_fit_warns_naming_the_expert():
    # one response of 1e-10 (before: predictions up to 6e30 on the training inputs, silently):
    # the maximum-likelihood fit is degenerate and says which expert; the default prior's
    # fit is not, and predicts within the responses' range
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 2))
    y = rng.gamma(2.0, np.exp(0.5 * X[:, 0]) / 2.0)
    y[17] = 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(
            DegenerateFitWarning, match=r"expert \d is degenerate: .* where y ranges"
        ):
            MixtureOfExpertsRegressor(2, family="gamma", prior_strength=0.0, random_state=0).fit(
                X, y
            )
        warnings.simplefilter("error", DegenerateFitWarning)
        default = MixtureOfExpertsRegressor(2, family="gamma", random_state=0).fit(X, y)
    assert default.predict(X).max() <= y.max()


def test_ordinary_count_fit_does_not_warn():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 2))
    # a smooth gate: a step in X[:, 1] would separate the rows (GateSeparationWarning, rightly)
    first = rng.random(300) < 1.0 / (1.0 + np.exp(-2.0 * X[:, 1]))
    y = rng.poisson(np.exp(np.where(first, 1.0 + 0.5 * X[:, 0], 0.2)))
    _quiet(lambda: MixtureOfExpertsRegressor(2, family="poisson", random_state=0).fit(X, y))
