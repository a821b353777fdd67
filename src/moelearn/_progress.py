"""A dependency-free progress line for long runs (experiments, benchmarks)."""

from __future__ import annotations

import sys
import time


def progress(iterable, total=None, label="", stream=None):
    """Yield from ``iterable`` while writing ``label i/total, elapsed, eta`` to stderr."""
    stream = stream or sys.stderr
    total = total if total is not None else len(iterable)
    start = time.perf_counter()
    for i, item in enumerate(iterable, 1):
        yield item
        elapsed = time.perf_counter() - start
        eta = elapsed / i * (total - i)
        stream.write(f"\r{label} {i}/{total}  {elapsed:6.1f}s elapsed, ~{eta:6.1f}s left ")
        stream.flush()
    stream.write("\n")
