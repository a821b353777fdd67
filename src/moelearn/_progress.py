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
        0: silent; 1 or more: the stages of the start search and the passes
        over out-of-core data.
    prefix : str
        Written before every line.
    stream : file-like or None
        None: ``sys.stderr`` at the time of writing.
    interval : float, default 1.0
        Seconds between two lines about passes over the data.
    """

    def __init__(self, verbose=1, prefix="moelearn", stream=None, interval=1.0):
        self.verbose = int(verbose)
        self.prefix = prefix
        self.stream = stream
        self.interval = float(interval)
        self.started = time.perf_counter()
        self.n_passes = 0
        self._pending = [0, 0, 0.0]  # passes, rows and seconds not yet written
        self._written = None

    def __call__(self, message, level=1):
        """Write ``message`` when ``verbose >= level``."""
        if self.verbose >= level:
            elapsed = time.perf_counter() - self.started
            print(
                f"[{self.prefix} {elapsed:7.2f}s] {message}",
                file=self.stream or sys.stderr,
                flush=True,
            )

    def data_pass(self, n_rows, seconds):
        """Record one pass over out-of-core data.

        The first pass is written at once; later ones are gathered into one
        line at most every ``interval`` seconds (a fit makes hundreds).
        """
        self.n_passes += 1
        pending = self._pending
        pending[0] += 1
        pending[1] += int(n_rows)
        pending[2] += float(seconds)
        now = time.perf_counter()
        if self._written is None or now - self._written >= self.interval:
            self.flush_passes()

    def flush_passes(self):
        """Write the passes gathered since the last line (if any)."""
        count, rows, seconds = self._pending
        if count:
            rate = rows / seconds if seconds > 0 else float("inf")
            first = self.n_passes - count + 1
            which = f"pass {first}" if count == 1 else f"passes {first}-{self.n_passes}"
            self(
                f"{which} over the data ({rows:,} rows read in {seconds:.2f}s, {rate:,.0f} rows/s)"
            )
        self._pending = [0, 0, 0.0]
        self._written = time.perf_counter()


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
                reporter.flush_passes()
                reporter(
                    f"fit done (final fit: {getattr(self, 'n_iter_', '?')} iterations); "
                    f"start: {getattr(self, 'init_method_', '')}"
                )
        return out

    return wrapper
