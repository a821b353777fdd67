"""Print the declared minimum version of each dependency as an ``==`` pin, one a line.

Usage: ``python .ci/min_versions.py [EXTRA ...] [--exclude NAME ...]``

The pins are read from ``pyproject.toml``: the ``dependencies`` and those of each
``EXTRA`` named (an extra that names ``moelearn[...]`` brings those extras in too).
Every requirement must carry a ``>=`` lower bound; one without is an error, so a
dependency cannot be added without a bound that this job then checks.  The output
is meant for ``pip install -r /dev/stdin`` or ``xargs pip install``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# name, optional [extras], the version specifiers (comma-separated), an optional marker
REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?"
    r"\s*(?P<spec>[^;]*?)\s*(?:;.*)?$"
)


def _parse(text: str) -> tuple[str, list[str], str]:
    match = REQUIREMENT.match(text)
    if match is None:
        raise SystemExit(f"pyproject.toml: cannot read the requirement {text!r}")
    extras = [e.strip() for e in (match["extras"] or "").split(",") if e.strip()]
    return match["name"], extras, match["spec"]


def _lower_bound(name: str, spec: str) -> str:
    bounds = [s.strip()[2:].strip() for s in spec.split(",") if s.strip().startswith(">=")]
    if len(bounds) != 1:
        raise SystemExit(f"pyproject.toml: {name!r} needs exactly one '>=' lower bound, got {spec!r}")
    return bounds[0]


def pins(extras: list[str], exclude: set[str]) -> list[str]:
    """The ``name[extras]==minimum`` pins of the dependencies and the extras named."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    own = project["name"].lower()
    requirements = list(project["dependencies"])
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (it has {sorted(optional)})")
        seen.add(extra)
        for text in optional[extra]:
            name, inner, _ = _parse(text)
            if name.lower() == own:  # moelearn[plot,...]: those extras
                todo.extend(inner)
            else:
                requirements.append(text)
    out = {}
    for text in requirements:
        name, inner, spec = _parse(text)
        if name.lower() in exclude:
            continue
        extra_text = f"[{','.join(inner)}]" if inner else ""
        out[name.lower()] = f"{name}{extra_text}=={_lower_bound(name, spec)}"
    return sorted(out.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*", help="extras whose requirements are pinned too")
    parser.add_argument(
        "--exclude", action="append", default=[], help="a package to leave out (repeatable)"
    )
    args = parser.parse_args(argv)
    print("\n".join(pins(args.extras, {e.lower() for e in args.exclude})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
