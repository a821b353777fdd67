import json
import re
import subprocess
import sys

import numpy as np
import pytest

import moelearn
from moelearn import make_moe, sample
from moelearn.cli import main


def test_demo_small(tmp_path, capsys):
    assert main(["demo", "--n-samples", "5000", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for solver in ("moments", "landscape", "tensor", "em", "gd-nll", "gd-l2"):
        assert solver in out
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_reproduce_without_matplotlib_stops_before_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert main(["reproduce", "timing", "--quick", "--output", str(tmp_path)]) == 2
    assert "moelearn[plot]" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_demo_without_matplotlib_prints_tables_and_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert main(["demo", "--n-samples", "2000", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mixture of 2 experts" in out and "figure not drawn" in out and "moelearn[plot]" in out
    assert not (tmp_path / "demo.png").exists()


@pytest.mark.parametrize("experiment", ["convergence", "success", "samples", "timing"])
def test_reproduce_quick_writes_files(tmp_path, experiment, monkeypatch):
    # shrink the quick settings further so the whole suite stays fast
    import moelearn.experiments as ex

    monkeypatch.setattr(
        ex, "_success_grid", lambda quick: [dict(k=2, scale=1, noise=0.2, link="linear")]
    )
    monkeypatch.setattr(ex, "_timing_sizes", lambda quick: ([2_000, 4_000], [4, 5], 2_000))
    assert (
        main(["reproduce", experiment, "--quick", "--seeds", "1", "--output", str(tmp_path)]) == 0
    )
    for ext in ("png", "json", "md"):
        assert (tmp_path / f"{experiment}.{ext}").stat().st_size > 0
    json.loads((tmp_path / f"{experiment}.json").read_text())


def test_reproduce_is_deterministic(tmp_path):
    import moelearn.experiments as ex

    a = ex._samples_task((2000, 0))
    b = ex._samples_task((2000, 0))
    assert a == b


def _write_csv(path, X, y):
    header = ",".join([f"x{i}" for i in range(X.shape[1])] + ["target"])
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header=header, comments="")


def test_fit_and_predict_round_trip(tmp_path, capsys):
    p = make_moe(4, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 3000, random_state=1)
    data = tmp_path / "train.csv"
    _write_csv(data, X, y)
    model = tmp_path / "model.npz"
    assert (
        main(["fit", str(data), "--target", "target", "--experts", "2", "--output", str(model)])
        == 0
    )
    assert model.exists()
    feats = tmp_path / "feats.csv"
    np.savetxt(feats, X[:10], delimiter=",", header="x0,x1,x2,x3", comments="")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), str(feats), "--output", str(out)]) == 0
    lines = out.read_text().strip().splitlines()
    assert lines[0].startswith("prediction,gate_0") and len(lines) == 11


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "missing.csv", "--target", "y", "--experts", "2"], "no such file"),
        (["fit", "{data}", "--target", "nope", "--experts", "2"], "not a column"),
        (["predict", "{data}", "{data}"], "not a valid moelearn model"),
        (["demo", "--n-experts", "12"], "smaller than"),
    ],
)
def test_bad_arguments_exit_nonzero_with_message(tmp_path, capsys, argv, message):
    data = tmp_path / "d.csv"
    _write_csv(data, np.random.default_rng(0).standard_normal((50, 3)), np.arange(50.0))
    argv = [a.format(data=data) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--n-samples", "0"],
        ["reproduce", "everything"],
        ["fit", "x.csv", "--experts", "2"],
        [],
    ],
)
def test_argparse_rejections(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_non_numeric_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,3\nx,4,5\n")
    assert main(["fit", str(bad), "--target", "y", "--experts", "1"]) == 2
    assert "row 3, column 'a': 'x' is not a number" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "moelearn.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "moelearn" in out.stdout


# --------------------------------------------------------------------------
# columns matched by name, options, overwriting, delimiters, error messages
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fitted by the command line on columns x0..x3 and a target."""
    folder = tmp_path_factory.mktemp("fitted")
    p = make_moe(4, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 2000, random_state=1)
    data = folder / "train.csv"
    _write_csv(data, X, y)
    model = folder / "model.npz"
    assert (
        main(["fit", str(data), "--target", "target", "--experts", "2", "--output", str(model)])
        == 0
    )
    return model, X, y


def _predict(tmp_path, model, header, columns, delimiter=","):
    data = tmp_path / "new.csv"
    np.savetxt(data, columns, delimiter=delimiter, header=delimiter.join(header), comments="")
    out = tmp_path / "pred.csv"
    code = main(["predict", str(model), str(data), "--output", str(out), "--force"])
    return code, (np.loadtxt(out, delimiter=",", skiprows=1) if code == 0 else None)


def test_predict_matches_columns_by_name(tmp_path, fitted):
    model, X, y = fitted
    X = X[:20]
    code, in_order = _predict(tmp_path, model, ["x0", "x1", "x2", "x3"], X)
    assert code == 0
    code, shuffled = _predict(tmp_path, model, ["x2", "x0", "x3", "x1"], X[:, [2, 0, 3, 1]])
    assert code == 0
    np.testing.assert_array_equal(shuffled, in_order)
    # the same numbers matched by position would give other predictions
    code, wrong = _predict(tmp_path, model, ["x0", "x1", "x2", "x3"], X[:, [2, 0, 3, 1]])
    assert not np.allclose(wrong[:, 0], in_order[:, 0])


def test_predict_ignores_the_target_column(tmp_path, fitted):
    model, X, y = fitted
    _, expected = _predict(tmp_path, model, ["x0", "x1", "x2", "x3"], X[:20])
    code, with_target = _predict(
        tmp_path,
        model,
        ["target", "x3", "x0", "x1", "x2"],
        np.column_stack([y[:20], X[:20, [3, 0, 1, 2]]]),
    )
    assert code == 0
    np.testing.assert_array_equal(with_target, expected)


@pytest.mark.parametrize(
    "header, message",
    [
        (["x0", "x1", "x3"], "lacks the column(s) 'x2'"),
        (["x0", "x1", "x2", "x3", "extra"], "column(s) 'extra' the model was not fitted on"),
    ],
)
def test_predict_names_missing_and_extra_columns(tmp_path, fitted, capsys, header, message):
    model, X, _ = fitted
    columns = np.random.default_rng(0).standard_normal((5, len(header)))
    code, _ = _predict(tmp_path, model, header, columns)
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_fit_refuses_to_overwrite_without_force(tmp_path, capsys):
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    _write_csv(data, rng.standard_normal((200, 3)), rng.standard_normal(200))
    model = tmp_path / "model.npz"
    model.write_bytes(b"precious")
    argv = ["fit", str(data), "--target", "target", "--experts", "1", "--output", str(model)]
    assert main(argv) == 2
    assert f"{model} exists; pass --force" in capsys.readouterr().err
    assert model.read_bytes() == b"precious"
    assert main([*argv, "--force"]) == 0
    assert model.read_bytes() != b"precious"


def test_predict_refuses_to_overwrite_without_force(tmp_path, fitted, capsys):
    model, X, _ = fitted
    data = tmp_path / "new.csv"
    np.savetxt(data, X[:5], delimiter=",", header="x0,x1,x2,x3", comments="")
    out = tmp_path / "pred.csv"
    out.write_text("keep")
    assert main(["predict", str(model), str(data), "--output", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_text() == "keep"


@pytest.mark.parametrize("delimiter, flag", [(";", None), ("\t", None), (";", ";"), ("\t", "tab")])
def test_delimiters_are_sniffed_or_given(tmp_path, fitted, delimiter, flag):
    model, X, _ = fitted
    _, expected = _predict(tmp_path, model, ["x0", "x1", "x2", "x3"], X[:10])
    data = tmp_path / "new.csv"
    np.savetxt(
        data,
        X[:10],
        delimiter=delimiter,
        header=delimiter.join(["x0", "x1", "x2", "x3"]),
        comments="",
    )
    out = tmp_path / "other.csv"
    argv = ["predict", str(model), str(data), "--output", str(out)]
    assert main(argv + (["--delimiter", flag] if flag else [])) == 0
    np.testing.assert_array_equal(np.loadtxt(out, delimiter=",", skiprows=1), expected)


def test_semicolon_file_fits(tmp_path, capsys):
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 2))
    np.savetxt(
        data, np.column_stack([X, X @ [1.0, -1.0]]), delimiter=";", header="u;v;y", comments=""
    )
    assert (
        main(
            [
                "fit",
                str(data),
                "--target",
                "y",
                "--experts",
                "1",
                "--output",
                str(tmp_path / "m.npz"),
            ]
        )
        == 0
    )
    assert "300 rows x 2 features" in capsys.readouterr().out


@pytest.mark.parametrize(
    "body, message",
    [
        ("a,b,y\n1,2,3\n4,5,6\n7,abc,9\n", "row 4, column 'b': 'abc' is not a number"),
        ("a,b,y\n1,2,3\n4,,6\n", "row 3, column 'b': missing value"),
        ("a,b,y\n1,2,3\n4,inf,6\n", "row 3, column 'b': 'inf' is not a finite number"),
        ("a,b,y\n1,2,3\n\n4,5\n", "row 4: 2 fields, expected 3"),
        ("a;b;y\n1,5;2;3\n", "row 2, column 'a': '1,5' is not a number (decimal commas"),
        ("a,a,y\n1,2,3\n", "column 'a' appears twice"),
        ("a,b,y\n", "no data rows"),
        ("", "empty file"),
    ],
)
def test_bad_cells_are_named(tmp_path, capsys, body, message):
    data = tmp_path / "data.csv"
    data.write_text(body)
    assert (
        main(
            [
                "fit",
                str(data),
                "--target",
                "y",
                "--experts",
                "1",
                "--output",
                str(tmp_path / "m.npz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"moelearn: error: {data}")
    assert message in err and len(err.strip().splitlines()) == 1


def test_fit_options_reach_the_estimator(tmp_path, monkeypatch):
    import moelearn.estimator as est_module

    seen = []
    original = est_module.MixtureOfExpertsRegressor.fit

    def spy(self, X, y=None, sample_weight=None, groups=None):
        seen.append(self.get_params())
        return original(self, X, y, sample_weight=sample_weight, groups=groups)

    monkeypatch.setattr(est_module.MixtureOfExpertsRegressor, "fit", spy)
    data = tmp_path / "d.csv"
    p = make_moe(3, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 500, random_state=1)
    _write_csv(data, X, y)
    base = [
        "fit",
        str(data),
        "--target",
        "target",
        "--experts",
        "2",
        "--force",
        "--output",
        str(tmp_path / "m.npz"),
    ]
    assert main(base) == 0
    assert (
        main(
            [
                *base,
                "--noise",
                "expert",
                "--n-init",
                "2",
                "--max-iter",
                "7",
                "--link",
                "tanh",
                "--solver",
                "em",
                "--prior-strength",
                "0.5",
            ]
        )
        == 0
    )
    defaults = est_module.MixtureOfExpertsRegressor().get_params()
    for key in ("noise", "n_init", "max_iter", "link", "solver", "prior_strength"):
        assert seen[0][key] == defaults[key]  # absent flags leave the estimator's defaults
    assert (
        seen[1]["noise"],
        seen[1]["n_init"],
        seen[1]["max_iter"],
        seen[1]["link"],
        seen[1]["solver"],
        seen[1]["prior_strength"],
    ) == ("expert", 2, 7, "tanh", "em", 0.5)
    # a prior the solver cannot apply is refused by name, not by a traceback
    bad = [*base, "--solver", "landscape", "--prior-strength", "1"]
    assert main(bad) == 2


def test_n_init_auto_is_passed_through(tmp_path, monkeypatch):
    import moelearn.estimator as est_module

    seen = []

    def spy(self, X, y=None, sample_weight=None, groups=None):
        seen.append(self.n_init)
        raise ValueError("stop here")

    monkeypatch.setattr(est_module.MixtureOfExpertsRegressor, "fit", spy)
    data = tmp_path / "d.csv"
    _write_csv(data, np.random.default_rng(0).standard_normal((50, 2)), np.arange(50.0))
    assert (
        main(
            [
                "fit",
                str(data),
                "--target",
                "target",
                "--experts",
                "2",
                "--n-init",
                "auto",
                "--output",
                str(tmp_path / "m.npz"),
            ]
        )
        == 2
    )
    assert seen == ["auto"]


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "d.csv", "--target", "y", "--experts", "2", "--n-init", "0"],
        ["fit", "d.csv", "--target", "y", "--experts", "2", "--noise", "loud"],
        ["predict", "m.npz", "d.csv", "--delimiter", "ab"],
    ],
)
def test_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_model_without_column_names_matches_by_position(tmp_path, capsys):
    from moelearn import MixtureOfExpertsRegressor

    p = make_moe(3, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 1000, random_state=1)
    est = MixtureOfExpertsRegressor(2, random_state=0).fit(X, y)
    model = tmp_path / "m.npz"
    est.save(model)
    data = tmp_path / "new.csv"
    np.savetxt(data, X[:5], delimiter=",", header="p,q,r", comments="")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), str(data), "--output", str(out)]) == 0
    np.testing.assert_allclose(
        np.loadtxt(out, delimiter=",", skiprows=1)[:, 0], est.predict(X[:5]), rtol=1e-9
    )
    np.savetxt(data, X[:5, :2], delimiter=",", header="p,q", comments="")
    assert main(["predict", str(model), str(data)]) == 2
    assert "matched by position" in capsys.readouterr().err


def test_dataframe_fit_keeps_feature_names_through_save_and_load(tmp_path):
    pd = pytest.importorskip("pandas")
    from moelearn import MixtureOfExpertsRegressor, load

    p = make_moe(3, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 1000, random_state=1)
    frame = pd.DataFrame(X, columns=["age", "dose", "weight"])
    est = MixtureOfExpertsRegressor(2, random_state=0).fit(frame, y)
    est.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert list(back.feature_names_in_) == ["age", "dose", "weight"]
    np.testing.assert_allclose(back.predict(frame), est.predict(frame), rtol=1e-12)
    with pytest.raises(ValueError, match="feature names"):
        back.predict(frame[["dose", "age", "weight"]])


def test_saved_column_names_survive_a_second_save(tmp_path, fitted):
    from moelearn import load

    model, _, _ = fitted
    est = load(model)
    assert list(est.feature_names_in_) == ["x0", "x1", "x2", "x3"]
    assert est.target_name_ == "target"
    est.save(tmp_path / "again.npz")
    again = load(tmp_path / "again.npz")
    assert list(again.feature_names_in_) == ["x0", "x1", "x2", "x3"]
    assert again.target_name_ == "target"


@pytest.mark.parametrize("names", [["a", "b"], ["a", "a", "b", "c"], [1, 2, 3, 4], "abcd"])
def test_tampered_column_names_are_refused(tmp_path, fitted, names):
    from moelearn import load

    model, _, _ = fitted
    with np.load(model, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["__meta__"].tobytes().decode("utf-8"))
    meta["feature_names_in_"] = names
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="feature_names_in_ must be 4 distinct strings"):
        load(bad)


def test_summary_prints_the_coefficient_table(tmp_path, capsys):
    p = make_moe(3, 2, noise_std=0.2, random_state=0)
    X, y = sample(p, 2000, random_state=1)
    data = tmp_path / "train.csv"
    _write_csv(data, X, y)
    model = tmp_path / "model.npz"
    assert (
        main(["fit", str(data), "--target", "target", "--experts", "2", "--output", str(model)])
        == 0
    )
    capsys.readouterr()
    assert main(["summary", str(model), str(data)]) == 0
    out = capsys.readouterr().out
    for word in ("std err", "BIC", "ICL", "x0", "x2"):
        assert word.lower() in out.lower(), word
    # a file without the target column cannot be summarised: the error says which column
    feats = tmp_path / "feats.csv"
    np.savetxt(feats, X, delimiter=",", header="x0,x1,x2", comments="")
    assert main(["summary", str(model), str(feats)]) == 2
    assert "target" in capsys.readouterr().err


def test_family_and_roles_flags(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 600
    dose, age = rng.uniform(0, 3, n), rng.uniform(-1, 1, n)
    first = rng.random(n) < 1 / (1 + np.exp(-2 * age))
    counts = rng.poisson(np.exp(np.where(first, 0.5 + 0.6 * dose, 2.0 - 0.4 * dose)))
    data = tmp_path / "counts.csv"
    data.write_text(
        "dose,age,count\n"
        + "".join(f"{a},{b},{c}\n" for a, b, c in zip(dose, age, counts, strict=True))
    )
    model = tmp_path / "m.npz"
    argv = ["fit", str(data), "--target", "count", "--experts", "2", "--output", str(model)]
    roles = ["--family", "poisson", "--gating-features", "age", "--expert-features", "dose"]
    assert main([*argv, *roles]) == 0
    est = moelearn.load(model)
    assert est.get_params()["family"] == "poisson"
    assert est.params_.gating_features.tolist() == [False, True]
    assert est.params_.expert_features.tolist() == [True, False]
    assert main(["summary", str(model), str(data)]) == 0
    assert "gate 0" in capsys.readouterr().out
    # an unknown column in a role is named
    assert main([*argv, "--force", "--gating-features", "weight"]) != 0
    assert "'weight'" in capsys.readouterr().err


def test_offset_and_weights_columns(tmp_path, capsys):
    # --offset names a column of X that neither the gate nor the experts read; --weights a
    # column that is not a feature; the fit equals the estimator's with the same options
    rng = np.random.default_rng(1)
    n = 500
    dose, hours = rng.uniform(0, 3, n), rng.uniform(0.5, 3.0, n)
    first = rng.random(n) < 0.5
    counts = rng.poisson(hours * np.exp(np.where(first, 0.5 + 0.6 * dose, 2.0 - 0.4 * dose)))
    freq = rng.integers(1, 4, n)
    data = tmp_path / "counts.csv"
    rows = zip(dose, np.log(hours), freq, counts, strict=True)
    body = "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows)
    data.write_text("dose,loghours,freq,count\n" + body)
    model = tmp_path / "m.npz"
    argv = ["fit", str(data), "--target", "count", "--experts", "2", "--output", str(model)]
    flags = ["--family", "negative-binomial", "--gating-features", "", "--offset", "loghours"]
    assert main([*argv, *flags, "--weights", "freq"]) == 0
    assert "weighted total" in capsys.readouterr().out
    est = moelearn.load(model)
    assert list(est.feature_names_in_) == ["dose", "loghours"] and est.weights_name_ == "freq"
    assert est.params_.offset_feature == 1
    assert est.params_.expert_features.tolist() == [True, False]
    X = np.c_[dose, np.log(hours)]
    ref = moelearn.MixtureOfExpertsRegressor(
        2, family="negative-binomial", gating_features=[], offset=1, random_state=0
    ).fit(X, counts, sample_weight=freq)
    np.testing.assert_allclose(est.experts_, ref.experts_, rtol=1e-10)
    assert est.log_likelihood_ == pytest.approx(ref.log_likelihood_, rel=1e-12)
    # predict and summary read the same file: the weights column is neither a feature
    # nor an unknown column, and the summary says that it counts every row once
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), str(data), "--output", str(out)]) == 0
    pred = np.loadtxt(out, delimiter=",", skiprows=1)[:, 0]
    np.testing.assert_allclose(pred, ref.predict(X), rtol=1e-9)
    capsys.readouterr()
    assert main(["summary", str(model), str(data)]) == 0
    assert "'freq'" in capsys.readouterr().err
    # the columns are checked
    for extra, message in (
        (["--offset", "count"], "already the --target"),
        (["--weights", "hours"], "not a column"),
        (["--offset", "freq", "--weights", "freq"], "already the --weights"),
        (["--offset", "loghours", "--expert-features", "dose,loghours"], "is the --offset"),
        (["--offset", "loghours", "--classify"], "--offset applies to regression"),
    ):
        assert main([*argv, "--force", *extra]) == 2
        assert message in capsys.readouterr().err


def test_trials_column(tmp_path, capsys):
    # --trials names the column of each row's number of trials: a column of X that
    # neither the gate nor the experts read; the fit equals the estimator's
    rng = np.random.default_rng(2)
    n = 400
    dose, trials = rng.uniform(-2, 2, n), rng.integers(1, 20, n)
    first = rng.random(n) < 0.5
    p = 1 / (1 + np.exp(-np.where(first, 1.0 + 1.2 * dose, -1.0 - 0.8 * dose)))
    dead = rng.binomial(trials, p)
    data = tmp_path / "dose.csv"
    body = "".join(f"{a},{b},{c}\n" for a, b, c in zip(dose, trials, dead, strict=True))
    data.write_text("dose,total,dead\n" + body)
    model = tmp_path / "m.npz"
    argv = ["fit", str(data), "--target", "dead", "--experts", "2", "--output", str(model)]
    flags = ["--family", "binomial", "--trials", "total", "--gating-features", ""]
    assert main([*argv, *flags]) == 0
    est = moelearn.load(model)
    assert est.params_.trials_feature == 1
    assert est.params_.expert_features.tolist() == [True, False]
    X = np.c_[dose, trials]
    ref = moelearn.MixtureOfExpertsRegressor(
        2, family="binomial", trials=1, gating_features=[], random_state=0
    ).fit(X, dead)
    np.testing.assert_allclose(est.experts_, ref.experts_, rtol=1e-10)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(model), str(data), "--output", str(out)]) == 0
    pred = np.loadtxt(out, delimiter=",", skiprows=1)[:, 0]
    np.testing.assert_allclose(pred, ref.predict(X), rtol=1e-9)
    capsys.readouterr()
    for extra, message in (
        (["--trials", "dead"], "already the --target"),
        (["--trials", "total", "--offset", "total"], "already the --offset"),
        (["--trials", "total", "--expert-features", "dose,total"], "is the --trials"),
        (["--trials", "total", "--classify"], "applies to regression"),
        (["--family", "binomial"], "number of trials"),
    ):
        assert main([*argv, "--force", *extra]) == 2
        assert message in capsys.readouterr().err


def test_classify_fit_predict_summary(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n = 800
    X = rng.standard_normal((n, 3))
    first = rng.random(n) < 1 / (1 + np.exp(-3 * X[:, 2]))
    eta = np.where(first, 2 * X[:, 0] - 1, -2 * X[:, 1] + 0.5)
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-eta)), "spam", "ham")
    data = tmp_path / "mail.csv"
    rows = "".join(f"{a},{b},{c},{lab}\n" for (a, b, c), lab in zip(X, label, strict=True))
    data.write_text("a,b,c,kind\n" + rows)
    model = tmp_path / "clf.npz"
    argv = ["fit", str(data), "--target", "kind", "--experts", "2", "--classify"]
    assert main([*argv, "--output", str(model)]) == 0
    assert "accuracy" in capsys.readouterr().out
    est = moelearn.load(model)
    assert est.prior_strength == 1.0  # the classifier's default
    other = tmp_path / "clf2.npz"
    assert main([*argv, "--prior-strength", "0.25", "--output", str(other)]) == 0
    assert moelearn.load(other).prior_strength == 0.25
    capsys.readouterr()
    assert list(est.classes_) == ["ham", "spam"]
    out = tmp_path / "pred.csv"
    # columns in another order, the label column present: matched by name, label ignored
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text(
        "kind,c,a,b\n"
        + "".join(f"{lab},{c},{a},{b}\n" for (a, b, c), lab in zip(X, label, strict=True))
    )
    assert main(["predict", str(model), str(shuffled), "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction,proba_ham,proba_spam,gate_0,gate_1"
    assert {line.split(",")[0] for line in lines[1:]} <= {"ham", "spam"}
    assert main(["summary", str(model), str(data)]) == 0
    printed = capsys.readouterr().out
    assert "classes: ham, spam" in printed
    # the coefficient table of the shared summary, with its standard errors
    assert str(est.summary(X, label)) in printed and "std err" in printed
    # regression-only flags are refused with --classify
    assert main([*argv, "--force", "--output", str(model), "--family", "poisson"]) != 0
    assert "--family applies to regression" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_fit_prints_the_total_log_likelihood(tmp_path, capsys):
    p = make_moe(3, 2, noise_std=0.3, random_state=0)
    X, y = sample(p, 500, random_state=1)
    data = tmp_path / "train.csv"
    _write_csv(data, X, y)
    model = tmp_path / "model.npz"
    argv = ["fit", str(data), "--target", "target", "--experts", "2", "--output", str(model)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    est = moelearn.load(model)
    total = float(np.sum(est.log_density(X, y)))
    assert f"log-likelihood {total:.6g} (total over the rows)" in out
    assert "mean" not in out


def test_select_prints_the_table_and_saves_the_chosen_model(tmp_path, capsys):
    p = make_moe(3, 2, noise_std=0.3, gating_scale=2.0, random_state=0)
    X, y = sample(p, 600, random_state=1)
    data = tmp_path / "train.csv"
    _write_csv(data, X, y)
    model = tmp_path / "best.npz"
    argv = ["select", str(data), "--target", "target", "--candidates", "1-3"]
    assert main([*argv, "--output", str(model)]) == 0
    out = capsys.readouterr().out
    for word in ("logLik", "params", "AIC", "BIC", "ICL", "converged", "degenerate"):
        assert word in out
    # the same table as the library's, on the same data and seed
    table = str(moelearn.select_n_experts(X, y, candidates=[1, 2, 3]))

    def cells(line):
        # K, converged, logLik, params, AIC, BIC, ICL (the fit time differs); the CSV's
        # array differs in layout, which may move a last printed digit
        k, converged, *numbers = line.lstrip("* ").split()[:7]
        return [k, converged, *(pytest.approx(float(v), rel=1e-5) for v in numbers)]

    keep = [cells(line) for line in table.splitlines()[1:4]]
    printed = [cells(line) for line in out.splitlines() if re.match(r"[* ] +\d", line)]
    assert len(printed) == 3
    assert printed == keep
    assert "model with 2 experts saved" in out
    est = moelearn.load(model)
    assert est.n_experts == 2 and list(est.feature_names_in_) == ["x0", "x1", "x2"]
    assert est.target_name_ == "target"
    # the saved model is the chosen fit
    sel = moelearn.select_n_experts(X, y, candidates=[1, 2, 3])
    np.testing.assert_allclose(est.experts_, sel.estimator.experts_, rtol=1e-8)
    # overwrite protection, as fit
    assert main([*argv, "--output", str(model)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*argv, "--output", str(model), "--force", "--criterion", "icl"]) == 0
    assert "by ICL" in capsys.readouterr().out


def test_select_options_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n = 400
    X = rng.standard_normal((n, 3))
    first = rng.random(n) < 1 / (1 + np.exp(-3 * X[:, 2]))
    eta = np.where(first, 2 * X[:, 0] - 1, -2 * X[:, 1] + 0.5)
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-eta)), "spam", "ham")
    data = tmp_path / "mail.csv"
    rows = "".join(f"{a},{b},{c},{lab}\n" for (a, b, c), lab in zip(X, label, strict=True))
    data.write_text("a,b,c,kind\n" + rows)
    model = tmp_path / "clf.npz"
    argv = ["select", str(data), "--target", "kind", "--classify", "--candidates", "1,2"]
    assert main([*argv, "--output", str(model), "--gating-features", "c", "-v"]) == 0
    captured = capsys.readouterr()
    assert "1 expert:" in captured.err and "2 experts:" in captured.err  # progress
    est = moelearn.load(model)
    assert isinstance(est, moelearn.MixtureOfExpertsClassifier)
    assert est.gating_.shape[1] == 1
    with pytest.raises(SystemExit):
        main(["select", str(data), "--target", "kind", "--candidates", "0-2"])
    assert "distinct positive" in capsys.readouterr().err
    assert main([*argv, "--force", "--output", str(model), "--family", "poisson"]) == 2
    assert "--family applies to regression" in capsys.readouterr().err
