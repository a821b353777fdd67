"""Assemble docs/BENCHMARKS.md from the reports in benchmarks/reports/.

    python benchmarks/collect.py

Each section quotes one report verbatim, under the command that produced it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from _common import stamp_line

ROOT = Path(__file__).resolve().parent
REPORTS = ROOT / "reports"
DOC = ROOT.parent / "docs" / "BENCHMARKS.md"

SECTIONS = [
    ("Moment passes", "python benchmarks/moments.py", "moments"),
    ("Expert recovery (issue targets)", "python benchmarks/experts.py --seeds 20", "experts"),
    ("Default estimator speed", "python benchmarks/estimator.py", "estimator"),
    (
        "Every solver on a grid of problems",
        "python benchmarks/estimator.py --grid --seeds 20",
        "estimator_grid",
    ),
    (
        "Off the theory regime: default fit vs a start at the truth",
        "python benchmarks/estimator.py --basins --seeds 10",
        "estimator_basins",
    ),
    (
        "Real data: the default fit vs the best known optimum and flexmix",
        "python benchmarks/optima.py --reuse-reference",
        "optima",
    ),
    (
        "Observed information: exact vs finite differences",
        "python benchmarks/information.py",
        "information",
    ),
    ("Scale: memory maps and Dask", "python benchmarks/scale.py", "scale"),
    ("Synthetic comparison with flexmix", "python benchmarks/peer_synthetic.py", "peer_synthetic"),
    (
        "Real data: 10-fold cross-validation with flexmix",
        "python benchmarks/realdata.py",
        "realdata",
    ),
    (
        "Published fits: flexmix's NPreg models and meteorits' Student-t mcycle model",
        "python benchmarks/published.py",
        "published",
    ),
    (
        "Classification on real data: 10-fold CV vs logistic regression, boosting, flexmix",
        "python benchmarks/classification.py",
        "classification",
    ),
]


def main():
    lines = [
        "# Benchmarks",
        "",
        "Every table below is a report written by the script named above it, copied "
        "verbatim (`python benchmarks/collect.py` rebuilds this page). Times are wall "
        "clock on the machine named in each report's JSON (2 cores); ratios are measured "
        "within one run.",
        "",
    ]
    summary = ROOT / "SUMMARY.md"
    if summary.exists():  # the hand-written reading of the numbers below
        lines += [summary.read_text().strip(), ""]
    for title, command, name in SECTIONS:
        md = REPORTS / f"{name}.md"
        if not md.exists():
            continue
        report = json.loads((REPORTS / f"{name}.json").read_text())
        meta = report.get("machine", {})
        body = md.read_text().strip().splitlines()
        # the section title replaces the report's; its stamp line goes below, with the machine
        body = [ln for ln in body if not ln.startswith(("# ", "<sub>Made "))]
        lines += [f"## {title}", "", f"```bash\n{command}\n```", ""]
        lines += [ln.replace("### ", "#### ").replace("## ", "### ") for ln in body]
        png = REPORTS / f"{name}.png"
        if png.exists():
            target = DOC.parent / "benchmarks" / png.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, target)
            lines += ["", f"![{title}](benchmarks/{png.name})"]
        made = (
            stamp_line(report["stamp"])[len("<sub>") : -len("</sub>")].rstrip(".") + "; "
            if "stamp" in report
            else "Made before reports were stamped; "
        )
        lines += [
            "",
            f"<sub>{made}numpy {meta.get('numpy', '?')}, python {meta.get('python', '?')}</sub>",
            "",
        ]
    DOC.write_text("\n".join(lines) + "\n")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
