"""Assemble the benchmarks page of the documentation from benchmarks/reports/.

    python benchmarks/collect.py            # writes docs/benchmarks.md

The documentation build calls :func:`write_page` too, so the site always shows
the reports as they are.  Each section says what is measured, the command that
measures it, and quotes the report verbatim with its date, version and commit.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPORTS = ROOT / "reports"
PAGE = ROOT.parent / "docs" / "benchmarks.md"

# (title, command, report name, what is measured)
SECTIONS = [
    (
        "Moment passes",
        "python benchmarks/moments.py",
        "moments",
        "The two passes over the data that the moment methods make, against the cost of one "
        "`X.T @ X` on the same rows.",
    ),
    (
        "Expert recovery",
        "python benchmarks/experts.py --seeds 20",
        "experts",
        "How often the moment methods alone recover the experts within a given error, over "
        "20 random problems of the theory regime, and how fast the error falls with n.",
    ),
    (
        "Default estimator speed",
        "python benchmarks/estimator.py",
        "estimator",
        "The default fit against a matrix product, a single refined moment start and EM with "
        "10 random restarts, at n = 10⁵, d = 10, k = 3.",
    ),
    (
        "Every solver on a grid of problems",
        "python benchmarks/estimator.py --grid --seeds 20",
        "estimator_grid",
        "The share of 20 problems per cell on which each solver recovers the experts within "
        "0.1, and its time per fit.",
    ),
    (
        "Off the theory regime: default fit against a start at the truth",
        "python benchmarks/estimator.py --basins --seeds 10",
        "estimator_basins",
        "Whether the default fit ends in the basin of a fit started at the true parameters, "
        "on problems that break the theory's assumptions.",
    ),
    (
        "Real data: the default fit against the best known optimum and flexmix",
        "python benchmarks/optima.py --reuse-reference",
        "optima",
        "The log-likelihood that one default fit reaches on 19 real data set × K cases, "
        "against the best optimum known and R's flexmix (installs R).",
    ),
    (
        "Observed information: exact against finite differences",
        "python benchmarks/information.py",
        "information",
        "The exact observed information (standard errors) against central differences of the "
        "gradient: time and agreement.",
    ),
    (
        "Scale: memory maps and Dask",
        "python benchmarks/scale.py",
        "scale",
        "Throughput and memory of in-memory, memory-mapped and Dask data up to 10⁷ rows.",
    ),
    (
        "Synthetic comparison with flexmix",
        "python benchmarks/peer_synthetic.py",
        "peer_synthetic",
        "Expert error and time of moelearn and R's flexmix on the same synthetic problems, "
        "n = 10³ to 10⁶ (installs R).",
    ),
    (
        "Real data: 10-fold cross-validation with flexmix",
        "python benchmarks/realdata.py",
        "realdata",
        "Held-out error and log density of moelearn, flexmix, the papers' pipelines and "
        "reference regressors on three real data sets (installs R).",
    ),
    (
        "Published fits: flexmix's NPreg models and meteorits' Student-t mcycle model",
        "python benchmarks/published.py",
        "published",
        "Whether moelearn reaches the log-likelihoods published for Gaussian, Poisson and "
        "Student-t mixtures (installs R).",
    ),
    (
        "Models users fit in flexmix: binomial experts with trials",
        "python benchmarks/models.py",
        "models",
        "Whether the default fit reaches flexmix's best log-likelihood, over seeds, on "
        "binomial mixtures of real data with and without a gate (installs R).",
    ),
    (
        "Classification on real data: 10-fold CV against logistic regression, boosting, flexmix",
        "python benchmarks/classification.py",
        "classification",
        "Held-out log-loss and accuracy of the classifier on 8 data sets, and its training "
        "likelihood and time against flexmix's.",
    ),
    (
        "Real data: the maximum-likelihood fit's hit rate over seeds",
        "python benchmarks/hit_rate.py",
        "hit_rate",
        "How often the maximum-likelihood fit (`prior_strength=0`) reaches the best known "
        "optimum of the likelihood of `optima.py` on its 19 cases, over seeds 0-9.",
    ),
    (
        "Real data: the default fit against the best known maximum of its own objective",
        "python benchmarks/map_optima.py",
        "map_optima",
        "How often the default fit (with its prior) reaches the best known maximum of the "
        "objective it maximises on 19 real data set × K cases, over 10 seeds, and its time "
        "against R's flexmix with 5 starts (installs R).",
    ),
    (
        "Small data: the default fit's time against an earlier version",
        "python benchmarks/speed.py",
        "speed",
        "The Gaussian default's time at n = 200 to 10⁵ (d = 5, k = 3), against an earlier "
        "commit measured in the same run, with both versions' log-likelihoods.",
    ),
    (
        "Every family against the Gaussian default",
        "python benchmarks/families.py",
        "families",
        "The default fit of the Student-t, Poisson and Gamma regressors and of the classifier, "
        "as a multiple of the Gaussian default's time at the same n (d = 5, k = 3).",
    ),
    (
        "Other families: the default fit against the best known maximum of its objective",
        "python benchmarks/family_optima.py",
        "family_optima",
        "How often the default Student-t, Poisson and Gamma fits (synthetic, n = 300 and 10³) "
        "and the classifier (four real data sets) reach the best known maximum of their "
        "objective, K = 2, 3, over 5 seeds, and their time.",
    ),
    (
        "The prior: held-out fit of the regressor at prior_strength 0, 0.5 and 1",
        "python benchmarks/prior.py",
        "prior",
        "10-fold held-out log density, worst held-out points and MSE of the maximum-likelihood "
        "fit and of the maximum a posteriori fits on 12 real data sets (31 data set × K "
        "cases).",
    ),
]


def _git_date(path):
    """Date and commit of the last commit that changed ``path``, or None outside git."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs %h", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out if len(out) == 2 else None


def _provenance(meta, report):
    """The report's date, version and commit: from its JSON, else from git's record of it."""
    date, commit = meta.get("date"), meta.get("commit")
    parts = [f"written {date}"] if date else []
    if not date:
        found = _git_date(report)
        if found:
            parts, commit = [f"committed {found[0]}"], commit or found[1]
    parts.append(f"moelearn {meta.get('moelearn', '?')}")
    if commit:
        parts.append(f"commit {commit}")
    parts.append(f"numpy {meta.get('numpy', '?')}, python {meta.get('python', '?')}")
    return "; ".join(parts)


def render():
    """The page as Markdown (MyST)."""
    lines = [
        "# Benchmarks",
        "",
        "Each section below says what a script in `benchmarks/` measures, the command that "
        "runs it from a clone of the repository, and its latest report from "
        "`benchmarks/reports/`, quoted verbatim with the date, moelearn version and commit it "
        "was written at. Times are wall clock on a 2-core virtual machine shared with other "
        "work; ratios measured within one run are more reliable than absolute times. Scripts "
        "marked *installs R* install R and the R packages they compare against.",
        "",
    ]
    summary = ROOT / "SUMMARY.md"
    if summary.exists():  # the hand-written reading of the numbers below
        lines += [summary.read_text().strip(), ""]
    for title, command, name, what in SECTIONS:
        md = REPORTS / f"{name}.md"
        if not md.exists():
            continue
        report = REPORTS / f"{name}.json"
        meta = json.loads(report.read_text()).get("machine", {})
        body = md.read_text().strip().splitlines()
        body = [ln for ln in body if not ln.startswith("# ")]  # the section title replaces it
        # the provenance line is written below from the JSON; drop the report's own
        body = [ln for ln in body if not (ln.startswith("<sub>") and "moelearn" in ln)]
        lines += [f"## {title}", "", what, "", f"```bash\n{command}\n```", ""]
        lines += [ln.replace("### ", "#### ").replace("## ", "### ") for ln in body]
        png = REPORTS / f"{name}.png"
        if png.exists():
            lines += ["", f"![{title}](../benchmarks/reports/{png.name})"]
        lines += ["", f"<sub>{_provenance(meta, report)}</sub>", ""]
    return "\n".join(lines) + "\n"


def write_page(path=PAGE):
    """Write the page (only when its text changed, so that Sphinx rebuilds it only then)."""
    text = render()
    path = Path(path)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def main():
    print(f"wrote {write_page()}")


if __name__ == "__main__":
    main()
