"""Reading arrays, memory maps and chunk streams a few rows at a time (the lowest layer)."""

from __future__ import annotations

import numpy as np

__all__ = ["default_chunk_size", "iter_chunks"]


def default_chunk_size(n_features: int) -> int:
    """Rows per chunk: about 8 MB of float64 features, at least 1024 rows."""
    return int(max(1024, 2**20 // max(1, n_features)))


def iter_chunks(X, y, chunk_size=None):
    """Yield ``(X_chunk, y_chunk)`` as float arrays, ``chunk_size`` rows at a time.

    Works for NumPy arrays and memory maps (only one chunk is copied into
    memory at a time), and for an iterable of ``(X, y)`` pairs, passed through.
    """
    if y is None:
        for Xc, yc in X:
            yield np.asarray(Xc, dtype=float), np.asarray(yc, dtype=float).ravel()
        return
    n = X.shape[0]
    step = chunk_size or default_chunk_size(X.shape[1])
    for start in range(0, n, step):
        stop = min(start + step, n)
        yield (
            np.asarray(X[start:stop], dtype=float),
            np.asarray(y[start:stop], dtype=float).ravel(),
        )
