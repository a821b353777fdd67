"""BLAS threads for the thin matrix products of the fitting code."""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache


@cache
def _controller():
    """The process's thread pools, found once (a search of the loaded libraries costs ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def blas_threads(width):
    """One BLAS thread for the thin per-block products of narrow problems.

    The blocks are a few thousand rows by (d, 2k): waking a second BLAS thread
    for each costs more than it saves (measured 1.9x slower fits on 2 cores at
    d=10, k=3, and 25x slower products of shape (75, 11) x (11, 5000) on a busy
    2-core machine).  Wide problems keep the library's default.
    """
    if width > 2048:
        return nullcontext()
    return _controller().limit(limits=1, user_api="blas")
