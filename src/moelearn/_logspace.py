"""Log-space kernels over expert-major (k, n) arrays.

Reductions across the k experts of an (n, k) array run one short inner loop
per sample and are slow in NumPy; on a C-ordered (k, n) array the same
reductions are k vectorised passes over n.  The hot paths therefore keep
per-sample, per-expert quantities as (k, n).
"""

from __future__ import annotations

import numpy as np


def softmax_k(logits):
    """``(log p, p)`` for (k, n) logits, softmax over axis 0, overflow-free."""
    m = logits.max(axis=0)
    shifted = logits - m
    e = np.exp(shifted)
    s = e.sum(axis=0)
    return shifted - np.log(s), e / s


def logsumexp_k(a):
    """``(lse, softmax)`` over axis 0 of a (k, n) array."""
    m = a.max(axis=0)
    e = np.exp(a - m)
    s = e.sum(axis=0)
    return m + np.log(s), e / s
