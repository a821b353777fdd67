"""Grouped rows: every row of a group comes from the same expert (flexmix's ``y ~ x | g``).

With groups ``g = 1..G`` the likelihood is a mixture over groups, not rows:

    L = prod_g sum_i p_i(z_g) prod_{n in g} f_i(y_n | x_n),

so the posterior ``r_gi`` is one per group, and the gate reads covariates that
are constant within a group (``z_g``).  The engine's per-row statistics carry
over unchanged when the rows' posterior is their group's, and the gate's terms
are weighted by ``1 / |g|`` (a group's gate appears once, not once per row):
the exact gradient of ``log L`` and EM's expected information then follow from
the same sums (DESIGN §13, "Grouped rows").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse

__all__ = [
    "Groups",
    "check_groups",
    "groups_out_of_core",
    "check_constant_in_groups",
    "from_codes",
    "group_joint",
    "group_posterior",
]


@dataclass(frozen=True, eq=False)
class Groups:
    """Integer group codes of the rows and what the engine needs of them.

    Attributes
    ----------
    codes : ndarray of int, shape (n_samples,)
        The group of every row, ``0 .. n_groups - 1`` (for labels out of core,
        an object read by slices: :func:`groups_out_of_core`).
    labels : ndarray, shape (n_groups,)
        The label of every group as given (sorted).
    first : ndarray of int, shape (n_groups,)
        The first row of every group (where its gate covariates are read).
    sizes : ndarray of float, shape (n_groups,)
        Rows per group.
    """

    codes: np.ndarray
    labels: np.ndarray
    first: np.ndarray
    sizes: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.labels)

    @cached_property
    def indicator(self):
        """The sparse (n_groups, n_samples) 0/1 matrix that sums rows into their groups."""
        n = len(self.codes)
        return sparse.csr_matrix((np.ones(n), (self.codes, np.arange(n))), shape=(self.n_groups, n))

    def sum_rows(self, values):
        """Sums of the rows of ``values`` (n_samples, ...) over each group."""
        values = np.asarray(values, dtype=float)
        flat = values.reshape(len(values), -1)
        return np.asarray(self.indicator @ flat).reshape((self.n_groups,) + values.shape[1:])


def from_codes(codes, labels=None) -> Groups:
    """:class:`Groups` from integer codes (renumbered densely; ``labels`` kept for those left)."""
    used, codes = np.unique(np.asarray(codes), return_inverse=True)
    labels = used if labels is None else np.asarray(labels)[used]
    first = np.full(len(used), len(codes), dtype=np.intp)
    np.minimum.at(first, codes, np.arange(len(codes)))
    sizes = np.bincount(codes, minlength=len(used)).astype(float)
    return Groups(codes.astype(np.intp), labels, first, sizes)


def check_groups(groups, n_samples, *, gate_columns=None, X=None, sample_weight=None) -> Groups:
    """Validate ``groups`` (one label per row) and return :class:`Groups`.

    Raises ``ValueError`` when the length is wrong, a label is missing, the
    gate columns of ``X`` (``gate_columns``) vary within a group, or the
    sample weights do: a group's gate and weight are one value each.
    """
    if groups is None:
        raise ValueError("groups is None")
    if hasattr(groups, "to_numpy"):
        groups = groups.to_numpy()
    labels = np.asarray(groups)
    if labels.ndim != 1:
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        else:
            raise ValueError(f"groups must be one label per row; got shape {labels.shape}")
    if len(labels) != n_samples:
        raise ValueError(f"groups has {len(labels)} labels for {n_samples} rows")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError("groups contains NaN or infinite labels")
    if labels.dtype.kind == "O":
        if any(v is None or (isinstance(v, float) and not np.isfinite(v)) for v in labels):
            raise ValueError("groups contains missing labels (None or NaN)")
        try:
            labels = labels.astype(str) if len({type(v) for v in labels}) > 1 else labels
            uniq, codes = np.unique(labels, return_inverse=True)
        except TypeError as exc:
            raise TypeError(f"the group labels cannot be compared: {exc}") from None
    else:
        uniq, codes = np.unique(labels, return_inverse=True)
    out = from_codes(codes, uniq)
    if X is not None and gate_columns is not None and len(gate_columns):
        Z = np.asarray(X)[:, gate_columns]
        varies = np.any(Z != Z[out.first[out.codes]], axis=1)
        if varies.any():
            row = int(np.flatnonzero(varies)[0])
            raise ValueError(
                "the gate reads columns that must be constant within a group: row "
                f"{row} of group {_label(out, out.codes[row])!r} differs from the group's first "
                "row (read them as expert columns, or average them per group)"
            )
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=float)
        if np.any(w != w[out.first[out.codes]]):
            raise ValueError(
                "sample_weight must be constant within a group (the weight of a group)"
            )
    return out


class _LabelCodes:
    """Group codes of labels held out of core (a memory map or a Dask array), by slices.

    ``codes[start:stop]`` reads those labels and maps them to their codes
    (a binary search in the sorted labels): memory in the number of groups.
    """

    def __init__(self, labels, sorted_labels):
        self.labels, self.sorted_labels = labels, sorted_labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        if not isinstance(index, slice):
            raise TypeError("out-of-core group codes are read by slices")
        part = np.asarray(self.labels[index]).ravel()
        return np.searchsorted(self.sorted_labels, part)


_LABEL_ROWS = 1 << 20  # labels read at a time out of core


def groups_out_of_core(labels, n_samples) -> Groups:
    """:class:`Groups` of labels in a memory map or a Dask array, read in slices.

    Two reads of the labels (the distinct labels, then each group's size and
    first row); the codes stay out of core (:class:`_LabelCodes`), so memory
    is in the number of groups.  Numbers or fixed-width strings; NaN labels
    raise ``ValueError``.
    """
    n = len(labels)
    if n != n_samples:
        raise ValueError(f"groups has {n} labels for {n_samples} rows")
    if getattr(labels, "ndim", 1) != 1:
        raise ValueError(f"groups must be one label per row; got shape {labels.shape}")
    uniq = None
    for start in range(0, n, _LABEL_ROWS):
        part = np.asarray(labels[start : start + _LABEL_ROWS])
        if part.dtype.kind == "f" and not np.all(np.isfinite(part)):
            raise ValueError("groups contains NaN or infinite labels")
        u = np.unique(part)
        uniq = u if uniq is None else np.union1d(uniq, u)
    codes = _LabelCodes(labels, uniq)
    sizes = np.zeros(len(uniq))
    first = np.full(len(uniq), n, dtype=np.intp)
    for start in range(0, n, _LABEL_ROWS):
        c = codes[start : start + _LABEL_ROWS]
        sizes += np.bincount(c, minlength=len(uniq))
        np.minimum.at(first, c, start + np.arange(len(c)))
    return Groups(codes, uniq, first, sizes)


def check_constant_in_groups(data, groups: Groups, gate_columns) -> None:
    """:func:`check_groups`' checks on a data source read block by block (out of core).

    One read of ``data`` (a :class:`moelearn.data.Data`, its rows in the
    order of ``groups``) keeps each group's smallest and largest value of the
    gate columns and of the weights: memory ``O(n_groups p)``.
    """
    cols = np.asarray(gate_columns, dtype=int)
    low = np.full((groups.n_groups, cols.size + 1), np.inf)
    high = np.full((groups.n_groups, cols.size + 1), -np.inf)

    def extremes(Xb, yb, wb, codes):
        values = np.column_stack([Xb[:, cols], np.ones(len(yb)) if wb is None else wb])
        np.minimum.at(low, codes, values)
        np.maximum.at(high, codes, values)

    data.grouped_map_reduce(extremes, groups.codes)
    varies = low != high
    if varies[:, :-1].any():
        g = int(np.flatnonzero(varies[:, :-1].any(axis=1))[0])
        raise ValueError(
            f"the gate reads columns that must be constant within a group: group "
            f"{_label(groups, g)!r} has rows that differ (read them as expert columns, or "
            "average them per group)"
        )
    if varies[:, -1].any():
        raise ValueError("sample_weight must be constant within a group (the weight of a group)")


def _label(groups, g):
    label = groups.labels[g]
    return label.item() if hasattr(label, "item") else label


def group_joint(log_gate, logf, groups: Groups):
    """Per group ``log p_i(z_g) + sum_{n in g} log f_i(y_n | x_n)``, shape (n_groups, n_experts)."""
    with np.errstate(invalid="ignore"):
        return log_gate[groups.first] + groups.sum_rows(logf)


def group_posterior(joint_g, groups: Groups, weights=None):
    """``(total, per_group, post)`` of the grouped log-likelihood from :func:`group_joint`.

    ``weights`` are row weights, constant within a group; the total is
    ``sum_g w_g per_group_g``.
    """
    # the engine's stable log-sum-exp over the experts (scipy's logsumexp costs more than the
    # whole pass on small data); a group no expert can have gets -inf and a zero posterior
    top = joint_g.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.exp(joint_g - top)
        s = e.sum(axis=1)
        per_group = np.log(s) + top[:, 0]
        post = e / s[:, None]
    post = np.where(np.isfinite(post), post, 0.0)
    wg = np.ones(groups.n_groups) if weights is None else np.asarray(weights)[groups.first]
    return float(wg @ per_group), per_group, post
