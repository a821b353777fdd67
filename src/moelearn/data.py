"""Data sources: in-memory arrays, memory maps, streams of chunks and Dask arrays.

Every statistic moelearn needs is a sum over samples (DESIGN §9).  A
:class:`Data` object hides where the samples live and offers two ways to
reduce over them:

* iteration over ``(X, y)`` blocks (in order, one block in memory at a time);
* :meth:`Data.map_reduce` - apply a function to every block and add the
  results; on Dask arrays the blocks are reduced on the active scheduler
  (a ``distributed.Client`` included) and only the sums travel back.

An optional affine transform (the estimator's standardisation) is applied to
each block on the fly, so large data are never copied.

Optional non-negative per-row weights (``sample_weight``) travel with ``y``:
every statistic becomes a weighted sum and the sample count becomes the
weight total (:attr:`Data.total_weight`).  A weighted source calls
``fn(X_block, y_block, w_block)`` in :meth:`Data.map_reduce`; an unweighted
one calls ``fn(X_block, y_block)``, so unweighted passes do no extra work.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

import numpy as np

from ._chunks import default_chunk_size, iter_chunks
from ._progress import active

__all__ = [
    "Data",
    "ChunkedDataset",
    "add_partials",
    "check_sample_weight",
    "check_weight_values",
    "head_rows",
    "is_dask_array",
]


class ChunkedDataset:
    """A dataset read as a stream of ``(X, y)`` chunks, once per pass.

    Parameters
    ----------
    make_chunks : callable
        Called with no argument at the start of every pass; returns an
        iterable of ``(X_chunk, y_chunk)`` pairs (e.g. reading a file), or of
        ``(X_chunk, y_chunk, w_chunk)`` triples for weighted data (``w_chunk``
        holds the non-negative sample weights of the chunk's rows; every chunk
        then carries weights).  Every pass must yield the same rows in the
        same order.

    Examples
    --------
    >>> def chunks():
    ...     for part in range(3):
    ...         yield X_parts[part], y_parts[part]      # doctest: +SKIP
    >>> MixtureOfExpertsRegressor(3).fit(ChunkedDataset(chunks))   # doctest: +SKIP
    """

    def __init__(self, make_chunks):
        if not callable(make_chunks):
            raise TypeError(
                "make_chunks must be a callable returning an iterable of (X, y), e.g. a "
                f"generator function; got {type(make_chunks).__name__}"
            )
        self.make_chunks = make_chunks
        self._n_rows = None  # rows of the first complete pass, for the later ones
        self._n_columns = None

    def __iter__(self):
        """Yield ``(X, y)`` or, for weighted chunks, ``(X, y, w)`` as float arrays.

        Raises
        ------
        ValueError
            When a chunk is malformed, has other columns than the first, or a
            complete pass yields no rows or other rows than the first pass (as
            a generator object reused across passes does).
        """
        weighted = None
        rows = 0
        chunks = self.make_chunks()
        try:
            chunks = iter(chunks)
        except TypeError:
            raise TypeError(
                f"make_chunks() must return an iterable of (X, y) chunks, got "
                f"{type(chunks).__name__}"
            ) from None
        for number, chunk in enumerate(chunks):
            try:
                chunk = tuple(chunk)
            except TypeError:
                raise TypeError(
                    f"chunk {number} must be a tuple (X, y) or (X, y, sample_weight), got "
                    f"{type(chunk).__name__}"
                ) from None
            if len(chunk) not in (2, 3):
                raise ValueError(
                    f"each chunk must be (X, y) or (X, y, sample_weight); got {len(chunk)} items"
                )
            if weighted is None:
                weighted = len(chunk) == 3
            elif weighted != (len(chunk) == 3):
                raise ValueError("either every chunk carries sample_weight (X, y, w) or none does")
            X = _numeric(chunk[0], "X", number)
            y = _numeric(chunk[1], "y", number).ravel()
            if X.ndim != 2 or X.shape[0] != y.shape[0]:
                raise ValueError(
                    f"each chunk must be X of shape (m, d) with y of shape (m,); got "
                    f"{X.shape} and {y.shape} in chunk {number}"
                )
            if X.shape[1] < 1:
                raise ValueError(f"X must have at least one feature, got shape {X.shape}")
            if self._n_columns is None:
                self._n_columns = X.shape[1]
            elif X.shape[1] != self._n_columns:
                raise ValueError(
                    f"chunk {number} has {X.shape[1]} columns, the first chunk "
                    f"{self._n_columns}: every chunk must hold the same columns"
                )
            rows += X.shape[0]
            if weighted:
                w = _numeric(chunk[2], "sample_weight", number).ravel()
                if w.shape[0] != X.shape[0]:
                    raise ValueError(
                        f"each chunk's sample_weight must have shape ({X.shape[0]},); got "
                        f"{np.shape(chunk[2])}"
                    )
                yield X, y, w
            else:
                yield X, y
        if rows == 0:
            raise ValueError(
                "make_chunks() yielded no rows"
                + (
                    " on a later pass: it must start a new pass every time it is called "
                    "(pass a generator function, not a generator, which runs once)"
                    if self._n_rows
                    else ""
                )
            )
        if self._n_rows is None:
            self._n_rows = rows
        elif rows != self._n_rows:
            raise ValueError(
                f"a pass over the ChunkedDataset yielded {rows} rows, the first pass "
                f"{self._n_rows}: every call of make_chunks() must yield the same rows in the "
                "same order"
            )


def _numeric(value, name, number):
    """A chunk's array as float64, refusing non-numeric values with the chunk named."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"chunk {number}: {name} must be numeric ({exc})") from None


def check_sample_weight(sample_weight, n_samples):
    """Validated in-memory sample weights: shape (n,), finite, non-negative, not all zero.

    Follows :func:`sklearn.utils.validation._check_sample_weight`; every error
    names ``sample_weight``.

    Returns
    -------
    ndarray of shape (n_samples,), float64 (a new array: the input is never changed)
    """
    from sklearn.utils import check_array

    w = np.asarray(sample_weight)
    if w.ndim == 0:
        raise ValueError(f"sample_weight must be an array of shape ({n_samples},), got a scalar")
    w = check_array(w, ensure_2d=False, dtype=np.float64, input_name="sample_weight", copy=True)
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {w.shape}")
    return check_weight_values(
        n_negative=int(np.sum(w < 0)), total=float(w.sum()), n_bad=0, weights=w
    )


def check_weight_values(n_negative, total, n_bad, weights=None):
    """Refuse sample weights from their counts (in memory or summed over a stream).

    Parameters
    ----------
    n_negative : int
        Number of negative weights.
    total : float
        Sum of the weights.
    n_bad : int
        Number of NaN or infinite weights.
    weights : ndarray or None
        Returned unchanged when the counts are valid.

    Raises
    ------
    ValueError
        Naming ``sample_weight`` and what is wrong with it.
    """
    if n_bad:
        raise ValueError("sample_weight contains NaN or infinite values")
    if n_negative:
        raise ValueError(f"sample_weight must be non-negative; {n_negative} values are negative")
    if not total > 0:
        raise ValueError("sample_weight must contain at least one positive value (all are zero)")
    return weights


def is_out_of_core(X) -> bool:
    """Whether ``X`` is read block by block: a memory map, a Dask array or a stream."""
    return isinstance(X, (ChunkedDataset, np.memmap)) or is_dask_array(X)


def check_out_of_core(X, y, estimator_name):
    """Validate the shapes of out-of-core ``X`` and ``y`` (values are checked in a pass).

    A :class:`ChunkedDataset` carries ``y`` in its chunks, so ``y`` must be None;
    otherwise ``y`` is required, 1-D (or one column) and as long as ``X``.
    """
    if isinstance(X, ChunkedDataset):
        if y is not None:
            raise ValueError("pass y=None with a ChunkedDataset: its chunks hold y")
        return
    if y is None:
        raise ValueError(f"{estimator_name} requires y to be passed, but the target y is None")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[1] < 1:
        raise ValueError(f"X must have at least one feature, got shape {X.shape}")
    if len(y.shape) != 1 and not (len(y.shape) == 2 and y.shape[1] == 1):
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            "Found input variables with inconsistent numbers of "
            f"samples: [{X.shape[0]}, {y.shape[0]}]"
        )


def is_dask_array(X) -> bool:
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "to_delayed")


@dataclass(frozen=True)
class Transform:
    """``x -> (x - x_mean) @ x_whiten``, ``y -> (y - y_mean) / y_scale``."""

    x_mean: np.ndarray
    x_whiten: np.ndarray
    y_mean: float = 0.0
    y_scale: float = 1.0

    def __call__(self, X, y):
        return (X - self.x_mean) @ self.x_whiten, (y - self.y_mean) / self.y_scale


def add_partials(a, b):
    """Add two partial results: numbers, arrays, accumulators, or dicts/tuples of them."""
    if a is None:
        return b
    if isinstance(a, dict):
        return {key: add_partials(a[key], b[key]) for key in a}
    if isinstance(a, tuple):
        return tuple(add_partials(u, v) for u, v in zip(a, b, strict=True))
    return a + b


def _blocks_of(X, y, rows, w=None):
    for start in range(0, X.shape[0], rows):
        stop = start + rows
        yield X[start:stop], y[start:stop], None if w is None else w[start:stop]


def _call(fn, Xb, yb, wb):
    return fn(Xb, yb) if wb is None else fn(Xb, yb, wb)


def _reduce_block(fn, X, y, w, transform, rows):
    """Run ``fn`` over the sub-blocks of one (possibly remote) block and add the results."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    if w is not None:
        w = np.asarray(w, dtype=float).ravel()
    if transform is not None:
        X, y = transform(X, y)
    total = None
    for Xb, yb, wb in _blocks_of(X, y, rows, w):
        total = add_partials(total, _call(fn, Xb, yb, wb))
    return total


class Data:
    """Samples for the fitting code: blocks, map-reduce, and an optional transform.

    Blocks are row slices of a few thousand rows (views, no copy, for
    in-memory arrays): per-block temporaries then stay small enough to be
    reused by the allocator instead of being mapped and faulted in afresh on
    every evaluation, which measured 4x faster for n = 10^5.

    Parameters
    ----------
    X : ndarray, memory map, dask array or ChunkedDataset
    y : array-like or None (None with a ChunkedDataset)
    chunk_size : int or None
        Rows read at a time from a memory map (default from the feature count).
    n_experts : int
        Sets the block size (wider problems use shorter blocks).
    transform : Transform or None
        Applied to every block as it is read.
    n_samples, n_features : int or None
        Required for a ChunkedDataset when known; counted by a pass otherwise.
    sample_weight : ndarray, memory map, dask array or None
        Non-negative weight of every row, of the same kind and length as ``y``
        (validated by the caller; see :func:`check_sample_weight`).  A weighted
        ChunkedDataset carries its weights in its chunks instead.
    groups : moelearn.grouping.Groups or None
        The rows' groups, in the order the source yields its rows: every row
        of a group comes from one expert, and every pass computes the grouped
        likelihood (out of core: two reads per pass, :meth:`grouped_map_reduce`).

    Attributes
    ----------
    weighted : bool
        Whether the rows carry weights; :meth:`map_reduce` then passes the
        block's weights as a third argument.
    total_weight : float
        Sum of the weights (``n_samples`` when unweighted): the denominator of
        every mean.
    """

    def __init__(
        self,
        X,
        y=None,
        chunk_size=None,
        n_experts=1,
        transform=None,
        n_samples=None,
        n_features=None,
        sample_weight=None,
        groups=None,
    ):
        self.X, self.y, self.w = X, y, sample_weight
        self.groups = groups
        self.transform = transform
        self.block_rows = int(np.clip(32768 // max(1, n_experts), 1024, 8192))
        self.kind = (
            "stream"
            if isinstance(X, ChunkedDataset)
            else "dask"
            if is_dask_array(X)
            else "memmap"
            if isinstance(X, np.memmap)
            else "memory"
        )
        self.weighted = sample_weight is not None
        self._total_weight = None
        if self.kind == "stream":
            if sample_weight is not None:
                raise ValueError("a ChunkedDataset carries its sample_weight in its chunks")
            if n_samples is None or n_features is None:
                n_samples, n_features = 0, None
                for chunk in X:
                    n_samples += chunk[0].shape[0]
                    n_features = chunk[0].shape[1]
                    self.weighted = len(chunk) == 3
            else:
                self.weighted = len(next(iter(X), ())) == 3
            self.n_samples, self.n_features = int(n_samples), int(n_features or 0)
        else:
            self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        if not self.weighted:
            self._total_weight = float(self.n_samples)
        elif self.kind == "memory":
            self._total_weight = float(np.sum(sample_weight))
        if chunk_size is None and self.kind == "memmap":
            chunk_size = default_chunk_size(self.n_features)
        if chunk_size is not None and not isinstance(chunk_size, numbers.Integral):
            raise TypeError("chunk_size must be an integer")
        self.chunk_size = chunk_size

    @property
    def in_memory(self) -> bool:
        """Whether per-sample results may be cached between passes."""
        return self.kind == "memory"

    @property
    def total_weight(self) -> float:
        """Sum of the sample weights (the row count when unweighted); one pass out of core."""
        if self._total_weight is None:
            self._total_weight = float(self.map_reduce(lambda Xb, yb, wb: float(wb.sum())))
        return self._total_weight

    def record_total_weight(self, total: float) -> None:
        """Keep the sum of the weights that a caller's own pass has just computed."""
        self._total_weight = float(total)

    def with_transform(self, transform, n_experts=None) -> Data:
        out = Data.__new__(Data)
        out.__dict__.update(self.__dict__)
        out.transform = transform
        if n_experts is not None:
            out.block_rows = int(np.clip(32768 // max(1, n_experts), 1024, 8192))
        return out

    def _chunks(self):
        """Raw ``(X, y, w)`` chunks (``w`` None when unweighted)."""
        if self.kind == "stream":
            for chunk in self.X:
                yield chunk if len(chunk) == 3 else (*chunk, None)
        elif self.kind == "dask":
            X, y, w = self._dask_arrays()
            parts = [X.to_delayed().ravel(), y.to_delayed().ravel()]
            if w is not None:
                parts.append(w.to_delayed().ravel())
            for blocks in zip(*parts, strict=True):
                got = [np.asarray(b.compute()) for b in blocks]
                yield got[0], got[1], got[2] if w is not None else None
        elif self.w is None:
            for Xc, yc in iter_chunks(self.X, self.y, self.chunk_size or self.n_samples):
                yield Xc, yc, None
        else:
            step = self.chunk_size or self.n_samples
            for start in range(0, self.n_samples, step):
                stop = min(start + step, self.n_samples)
                yield (
                    np.asarray(self.X[start:stop], dtype=float),
                    np.asarray(self.y[start:stop], dtype=float).ravel(),
                    np.asarray(self.w[start:stop], dtype=float).ravel(),
                )

    def blocks(self, block_rows=None):
        """Yield ``(X_block, y_block, w_block)`` in order (``w_block`` None when unweighted).

        Blocks have ``block_rows`` rows (default: the source's ``block_rows``).
        """
        rows = self.block_rows if block_rows is None else int(block_rows)
        start = time.perf_counter()
        for Xc, yc, wc in self._chunks():
            Xc = np.asarray(Xc, dtype=float)
            yc = np.asarray(yc, dtype=float).ravel()
            if wc is not None:
                wc = np.asarray(wc, dtype=float).ravel()
            if self.transform is not None:
                Xc, yc = self.transform(Xc, yc)
            yield from _blocks_of(Xc, yc, rows, wc)
        _report_pass(self, start)

    def __iter__(self):
        """Yield ``(X_block, y_block)`` in order (the weights: :meth:`blocks`)."""
        for Xb, yb, _ in self.blocks():
            yield Xb, yb

    def _dask_arrays(self):
        import dask.array as da

        X = self.X.rechunk({1: -1})
        y = self.y if is_dask_array(self.y) else da.from_array(np.asarray(self.y))
        y = y.rechunk((X.chunks[0],))
        w = self.w
        if w is not None:
            w = w if is_dask_array(w) else da.from_array(np.asarray(w))
            w = w.rechunk((X.chunks[0],))
        return X, y, w

    def map_reduce(self, fn, block_rows=None):
        """Sum of ``fn(X_block, y_block)`` over all blocks (``fn(X, y, w)`` when weighted).

        ``block_rows`` overrides the source's ``block_rows`` (a pass whose per-row
        work is large keeps its blocks in cache).  On a Dask array each Dask block
        is reduced where it lives (on the active scheduler) and the partial sums
        are added here, in block order.
        """
        rows = self.block_rows if block_rows is None else int(block_rows)
        if self.kind != "dask":
            total = None
            for Xb, yb, wb in self.blocks(rows):
                total = add_partials(total, _call(fn, Xb, yb, wb))
            return total
        import dask

        X, y, w = self._dask_arrays()
        xs, ys = X.to_delayed().ravel(), y.to_delayed().ravel()
        ws = [None] * len(xs) if w is None else w.to_delayed().ravel()
        parts = [
            dask.delayed(_reduce_block)(fn, xb, yb, wb, self.transform, rows)
            for xb, yb, wb in zip(xs, ys, ws, strict=True)
        ]
        start = time.perf_counter()
        total = None
        for part in dask.compute(*parts):
            total = add_partials(total, part)
        _report_pass(self, start)
        return total

    def grouped_map_reduce(self, fn, codes=None):
        """Sum of ``fn(X_block, y_block, w_block, codes_block)`` over the blocks, in order.

        ``codes_block`` are the group codes of the block's rows (of
        :attr:`groups`, or of ``codes``: an array or an object read by slices)
        and ``w_block`` its weights (None when unweighted); every kind of
        source is read block by block in row order (a Dask array one block
        at a time).  Raises ``ValueError`` when the codes are not one per row.
        """
        codes = self.groups.codes if codes is None else codes
        total, start = None, 0
        for Xb, yb, wb in self.blocks():
            stop = start + len(yb)
            total = add_partials(total, fn(Xb, yb, wb, codes[start:stop]))
            start = stop
        if start != len(codes):
            raise ValueError(f"groups has {len(codes)} labels for {start} rows")
        return total

    def with_groups(self, groups) -> Data:
        """The same source with its rows grouped by ``groups`` (None: ungrouped)."""
        out = Data.__new__(Data)
        out.__dict__.update(self.__dict__)
        out.groups = groups
        return out

    def rows(self, index) -> tuple[np.ndarray, np.ndarray]:
        """The (transformed) rows at sorted positions ``index``."""
        return self.weighted_rows(index)[:2]

    def weighted_rows(self, index):
        """``(X, y, w)`` at sorted positions ``index`` (transformed; ``w`` None if unweighted)."""
        index = np.asarray(index)
        w = None
        if self.kind == "stream":
            parts, start = [], 0
            for chunk in self.X:
                m = chunk[0].shape[0]
                sel = index[(index >= start) & (index < start + m)] - start
                parts.append([c[sel] for c in chunk])
                start += m
            X = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
            if self.weighted:
                w = np.concatenate([p[2] for p in parts])
        elif self.kind == "dask":
            X = np.asarray(self.X[index].compute(), dtype=float)
            y = np.asarray(_take(self.y, index), dtype=float).ravel()
            if self.w is not None:
                w = np.asarray(_take(self.w, index), dtype=float).ravel()
        else:
            X = np.asarray(self.X[index], dtype=float)
            y = np.asarray(self.y[index], dtype=float).ravel()
            if self.w is not None:
                w = np.asarray(self.w[index], dtype=float).ravel()
        if self.transform is not None:
            X, y = self.transform(X, y)
        return X, y, w


def _report_pass(data, start):
    """One pass over out-of-core data, to the active ``verbose`` reporter (rows per second)."""
    reporter = active()
    if reporter is not None and not data.in_memory:
        reporter.data_pass(data.n_samples, time.perf_counter() - start)


def head_rows(raw: Data, rows=1000):
    """``(X, y)`` of the first rows of a source, untransformed: the first chunk of a stream.

    Cheap on every source (a stream reads one chunk), for checks of scale
    before the validating pass.
    """
    if raw.kind == "stream":
        chunk = next(iter(raw.X), None)
        if chunk is None:
            return np.zeros((0, raw.n_features)), np.zeros(0)
        return chunk[0], chunk[1]
    index = np.arange(min(raw.n_samples, rows))
    if raw.kind == "dask":
        return np.asarray(raw.X[index].compute(), dtype=float), np.asarray(
            _take(raw.y, index), dtype=float
        ).ravel()
    return np.asarray(raw.X[index], dtype=float), np.asarray(raw.y[index], dtype=float).ravel()


def _take(a, index):
    return a[index].compute() if is_dask_array(a) else np.asarray(a)[index]
