"""Saving and loading fitted models without pickle: a codec of records.

A model file is an uncompressed ``.npz`` archive holding only numeric arrays
and one JSON document (stored as a byte array).  It is read with
``allow_pickle=False``, so no code can run from a file.

This module knows no estimator.  A saveable class registers itself with
:func:`register_record` under a name and provides

* ``est._to_record() -> (meta, arrays)``: a JSON-able dict and a dict of
  numeric arrays (``meta["estimator"]`` names the class, except for the
  regressor, whose files carry no tag since version 1);
* ``cls._from_record(meta, arrays) -> est``: the fitted estimator, after
  validating every field; a bad field raises ``ValueError`` (or ``KeyError``,
  ``TypeError``) naming it.

:func:`save` adds the format tag and version; :func:`load` checks them and
the archive, then hands the record to the class that its name selects.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "load", "register_record", "save"]

FORMAT = "moelearn-model"
#: The version of the saved-model format that :func:`save` writes; :func:`load`
#: reads it and the earlier versions, and refuses any other with a ``ValueError``.
FORMAT_VERSION = 2
# Version 1 files (Gaussian experts on all columns) are still read.
_READABLE = (1, 2)
_MAX_SIZE = 10**8  # entries: refuse absurd sizes before allocating them
# The record name of files without an "estimator" tag (every regressor file).
_UNTAGGED = "regressor"

_RECORDS: dict[str, type] = {}


def register_record(name: str):
    """Class decorator: files whose record is named ``name`` load into this class.

    The class provides ``_to_record()`` and the classmethod
    ``_from_record(meta, arrays)`` (see the module docstring).
    """

    def decorate(cls):
        for method in ("_to_record", "_from_record"):
            if not callable(getattr(cls, method, None)):
                raise TypeError(f"{cls.__name__} must define {method} to be saved")
        _RECORDS[name] = cls
        return cls

    return decorate


def save(estimator, path):
    """Write ``estimator._to_record()`` to ``path`` (an ``.npz`` archive, no pickle)."""
    meta, arrays = estimator._to_record()
    if "__meta__" in arrays:
        raise ValueError("an array of a record cannot be named '__meta__'")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, **meta}
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with open(os.fspath(path), "wb") as fh:
        np.savez(fh, __meta__=meta_bytes, **arrays)


def _fail(path, why):
    raise ValueError(f"{path!s} is not a valid moelearn model file: {why}")


def _check_archive_head(path):
    """Refuse a file that is not a zip archive, saying what it looks like instead.

    ``np.load`` takes any file that is neither an ``.npy`` array nor a zip
    archive for a pickle, whose refusal (``allow_pickle=False``) would be the
    wrong diagnosis for a text or CSV file.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        _fail(path, f"cannot read it ({type(exc).__name__}: {exc})")
    if head.startswith(b"PK"):
        return
    if not head:
        _fail(path, "the file is empty")
    if head.startswith(b"\x93NUMPY"):
        _fail(path, "it holds a single .npy array, not the .npz archive that save() writes")
    text = head.decode("utf-8", errors="replace")
    readable = sum((ch.isprintable() and ch != "\ufffd") or ch in "\t\r\n" for ch in text)
    if readable >= len(text) - 3:  # a character cut at byte 64 may not decode
        first = (text.splitlines() or [text])[0]
        _fail(
            path,
            f"it is a text file (it begins {first[:40]!r}), not the .npz archive that save() "
            "writes (a data file given in place of the model?)",
        )
    _fail(path, f"it is not an .npz archive (it begins with the bytes {head[:8]!r})")


def _read(path):
    """Every entry of the archive, each checked for size; never unpickled."""
    _check_archive_head(path)
    try:
        # the file is opened here, so that it is closed when np.load fails on a
        # damaged archive (np.load leaves the file it opened itself open then)
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as archive:
            names = set(archive.files)
            if "__meta__" not in names:
                _fail(path, "missing entries ['__meta__']")
            raw = {}
            for name in sorted(names):
                arr = archive[name]
                if arr.size > _MAX_SIZE:
                    _fail(path, f"entry {name!r} is absurdly large ({arr.size} values)")
                raw[name] = arr
    except ValueError as exc:
        if "not a valid moelearn model file" in str(exc):
            raise
        _fail(path, str(exc))
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        _fail(path, f"cannot read it ({type(exc).__name__}: {exc})")
    return raw


def load(path: str | os.PathLike[str]) -> Any:
    """Load a model saved by :meth:`MixtureOfExpertsRegressor.save` or
    :meth:`MixtureOfExpertsClassifier.save`.

    Raises
    ------
    ValueError
        If the file is truncated, corrupted, of an unknown version, or holds
        wrong shapes or values.  Nothing in the file is ever unpickled.
    """
    path = os.fspath(path)
    arrays = _read(path)
    meta_arr = arrays.pop("__meta__")
    if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
        _fail(path, "metadata has the wrong type")
    try:
        meta = json.loads(meta_arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"metadata is not JSON ({exc})")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        _fail(path, "wrong format tag")
    if meta.get("version") not in _READABLE:
        _fail(
            path,
            f"unknown format version {meta.get('version')!r} "
            f"(this moelearn reads version {FORMAT_VERSION})",
        )
    name = meta.get("estimator", _UNTAGGED)
    cls = _RECORDS.get(name) if isinstance(name, str) else None
    if cls is None:
        _fail(path, f"unknown estimator {name!r} (known: {sorted(_RECORDS)})")
    try:
        return cls._from_record(meta, arrays)
    except (KeyError, TypeError) as exc:
        _fail(path, f"bad metadata ({exc})")
    except ValueError as exc:
        if "not a valid moelearn model file" in str(exc):
            raise
        _fail(path, str(exc))
