"""Helpers shared by the benchmark scripts: progress, reports."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from moelearn._progress import progress  # noqa: F401  (re-exported for the scripts)

REPORT_DIR = Path(__file__).resolve().parent / "reports"


def machine():
    import moelearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "moelearn": moelearn.__version__,
        "processor": platform.processor() or platform.machine(),
    }


def write_report(name, payload, markdown_lines):
    """Write ``reports/NAME.json`` and ``reports/NAME.md``; return their paths."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    js = REPORT_DIR / f"{name}.json"
    md = REPORT_DIR / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=float))
    md.write_text("\n".join(markdown_lines) + "\n")
    return js, md


def best_time(fn, repeat=5):
    """Minimum wall time of ``repeat`` calls (the least disturbed measurement)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
