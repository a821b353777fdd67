"""Progress output: a dependency-free progress line, and the ``verbose`` reporter.

The estimators' ``verbose`` option prints one line per stage of a fit to
standard error (``print(..., file=sys.stderr)``, as scikit-learn's own
``verbose`` does).  A fit installs its :class:`Reporter` for its own duration
(:func:`reporting`); the fitting code calls :func:`report` at each stage and
never needs the reporter passed down.  Without an active reporter (the
default, ``verbose=0``) :func:`report` does nothing.
"""

from __future__ import annotations

import contextvars
import functools
import numbers
import sys
import time
from contextlib import contextmanager

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("moelearn_reporter", default=None)


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


class Reporter:
    """Writes the stages of a fit to a stream (standard error by default).

    Parameters
    ----------
    verbose : int
        0: silent; 1: the stages of the start search and the passes over
        out-of-core data; 2: also every pass over in-memory data.
    prefix : str
        Written before every line.
    stream : file-like or None
        None: ``sys.stderr`` at the time of writing.
    """

    def __init__(self, verbose=1, prefix="moelearn", stream=None):
        self.verbose = int(verbose)
        self.prefix = prefix
        self.stream = stream
        self._start = time.perf_counter()
        self.n_passes = 0

    def __call__(self, message, level=1):
        """Write ``message`` when ``verbose >= level``."""
        if self.verbose >= level:
            elapsed = time.perf_counter() - self._start
            print(
                f"[{self.prefix} {elapsed:7.2f}s] {message}",
                file=self.stream or sys.stderr,
                flush=True,
            )

    def data_pass(self, n_rows, seconds, in_memory=False):
        """Record one pass over the data (written out of core, or at ``verbose >= 2``)."""
        self.n_passes += 1
        rate = n_rows / seconds if seconds > 0 else float("inf")
        self(
            f"pass {self.n_passes} over {n_rows:,} rows: {seconds:.2f}s ({rate:,.0f} rows/s)",
            level=2 if in_memory else 1,
        )


def active() -> Reporter | None:
    """The reporter of the fit in progress (None when silent)."""
    return _ACTIVE.get()


def report(message, level=1):
    """Write ``message`` through the active reporter, if any."""
    reporter = _ACTIVE.get()
    if reporter is not None:
        reporter(message, level)


@contextmanager
def reporting(verbose, prefix="moelearn"):
    """Make a :class:`Reporter` active for the block (``verbose=0``: silence, also nested)."""
    reporter = Reporter(verbose, prefix) if verbose else None
    token = _ACTIVE.set(reporter)
    try:
        yield reporter
    finally:
        _ACTIVE.reset(token)


def reported_fit(fit):
    """Decorate an estimator's ``fit``: its ``verbose`` reporter is active meanwhile.

    At ``verbose >= 1`` the stages reported by the fitting code are written,
    then the time taken and the winning start (``init_method_``).
    """

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        verbose = getattr(self, "verbose", 0)
        # a bad value is left to the estimator's parameter validation
        verbose = int(verbose) if isinstance(verbose, numbers.Integral) else 0
        with reporting(verbose, type(self).__name__) as reporter:
            out = fit(self, *args, **kwargs)
            if reporter is not None:
                reporter(
                    f"fit done (final fit: {getattr(self, 'n_iter_', '?')} iterations); "
                    f"start: {getattr(self, 'init_method_', '')}"
                )
        return out

    return wrapper
