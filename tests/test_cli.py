import json
import subprocess
import sys

import numpy as np
import pytest

from moelearn import make_moe, sample
from moelearn.cli import main


def test_demo_small(tmp_path, capsys):
    assert main(["demo", "--n-samples", "5000", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for solver in ("moments", "landscape", "tensor", "em", "gd-nll", "gd-l2"):
        assert solver in out
    assert (tmp_path / "demo.png").stat().st_size > 10_000


@pytest.mark.parametrize("experiment", ["convergence", "success", "samples", "timing"])
def test_reproduce_quick_writes_files(tmp_path, experiment, monkeypatch):
    # shrink the quick settings further so the whole suite stays fast
    import moelearn.experiments as ex

    monkeypatch.setattr(ex, "_success_grid",
                        lambda quick: [dict(k=2, scale=1, noise=0.2, link="linear")])
    assert main(["reproduce", experiment, "--quick", "--seeds", "1",
                 "--output", str(tmp_path)]) == 0
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
    assert main(["fit", str(data), "--target", "target", "--experts", "2",
                 "--output", str(model)]) == 0
    assert model.exists()
    feats = tmp_path / "feats.csv"
    np.savetxt(feats, X[:10], delimiter=",", header="a,b,c,d", comments="")
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


@pytest.mark.parametrize("argv", [["demo", "--n-samples", "0"], ["reproduce", "everything"],
                                  ["fit", "x.csv", "--experts", "2"], []])
def test_argparse_rejections(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_non_numeric_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,3\nx,4,5\n")
    assert main(["fit", str(bad), "--target", "y", "--experts", "1"]) == 2
    assert "non-numeric" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "moelearn.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert "moelearn" in out.stdout
