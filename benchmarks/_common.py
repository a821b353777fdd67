"""Helpers shared by the benchmark scripts: progress, reports."""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from moelearn._progress import progress  # noqa: F401  (re-exported for the scripts)

REPORT_DIR = Path(__file__).resolve().parent / "reports"


def _commit():
    """The checkout's commit, with ``+modified`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+modified" if dirty else "")


def machine():
    """Where and when a report was written: versions, processor, date (UTC) and commit."""
    import moelearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "moelearn": moelearn.__version__,
        "processor": platform.processor() or platform.machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
    }


def provenance(meta):
    """One line naming the date, moelearn version, commit and library versions of a report."""
    parts = []
    if meta.get("date"):
        parts.append(f"written {meta['date']}")
    parts.append(f"moelearn {meta.get('moelearn', '?')}")
    if meta.get("commit"):
        parts.append(f"commit {meta['commit']}")
    parts.append(f"numpy {meta.get('numpy', '?')}, python {meta.get('python', '?')}")
    return "; ".join(parts)


def _git(*args):
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def stamp():
    """When and from what a report was made: UTC date, moelearn version, git commit.

    The commit is ``None`` outside a git checkout; ``dirty`` says whether the
    tracked files differed from it.
    """
    import moelearn

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "moelearn": moelearn.__version__,
        "commit": commit,
        "dirty": bool(status) if commit else None,
    }


def stamp_line(info):
    """The Markdown line that closes every report."""
    commit = "no git commit" if info["commit"] is None else f"commit {info['commit'][:12]}"
    if info["dirty"]:
        commit += " with uncommitted changes"
    return f"<sub>Made {info['date']} with moelearn {info['moelearn']}, {commit}.</sub>"


def write_report(name, payload, markdown_lines):
    """Write ``reports/NAME.json`` and ``reports/NAME.md``, both stamped; return their paths.

    Every benchmark writes through here, so every report carries the date, the
    moelearn version and the commit it was made with (:func:`stamp`): under
    ``"stamp"`` in the JSON and as the last line of the Markdown.
    """
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    info = stamp()
    payload = {"benchmark": name, "stamp": info, "machine": machine(), **payload}
    js = REPORT_DIR / f"{name}.json"
    md = REPORT_DIR / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=float))
    md.write_text("\n".join([*markdown_lines, "", stamp_line(info)]) + "\n")
    return js, md


def best_time(fn, repeat=5):
    """Minimum wall time of ``repeat`` calls (the least disturbed measurement)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
