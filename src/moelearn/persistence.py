"""Saving and loading fitted models without pickle.

A model file is an uncompressed ``.npz`` archive holding only numeric arrays
and one JSON document (stored as a byte array).  It is read with
``allow_pickle=False``, so no code can run from a file, and every field is
validated before a model is built from it.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .families import Family, available_families
from .links import get_link
from .model import MoEParams
from .standardize import Scaling

__all__ = ["save_model", "save_classifier", "load", "FORMAT_VERSION"]

FORMAT = "moelearn-model"
FORMAT_VERSION = 2
# Version 1 files (Gaussian experts on all columns) are still read.
_READABLE = (1, 2)
_MAX_SIZE = 10**8  # entries: refuse absurd sizes before allocating them
_ARRAYS = (
    "experts",
    "gating",
    "expert_bias",
    "gating_bias",
    "noise_std",
    "x_mean",
    "x_whiten",
    "x_unwhiten",
)


def save_model(estimator, path):
    """Write a fitted :class:`~moelearn.MixtureOfExpertsRegressor` to ``path``.

    The column names ``feature_names_in_`` (set when fitting on a pandas
    DataFrame) and ``target_name_`` (set by the command line) are kept when
    present, as JSON strings.
    """
    link = get_link(estimator.params_.link)
    if not link.builtin:
        raise ValueError(
            f"cannot save a model with the unregistered link {link.name!r}: register it "
            "with moelearn.register_link so that it can be restored by name"
        )
    p = estimator.params_
    if isinstance(estimator.family, Family) and p.family_object.name != "gaussian":
        raise ValueError(
            f"cannot save a model fitted with a Family instance ({estimator.family!r}); "
            f"pass the family by name ({available_families()}) to save it"
        )
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "link": link.name,
        "family": p.family_object.name,
        "n_experts": int(estimator.n_experts),
        "n_features": int(estimator.n_features_in_),
        "params": {
            k: v
            for k, v in estimator.get_params().items()
            if k
            not in (
                "init_params",
                "link",
                "random_state",
                "family",
                "gating_features",
                "expert_features",
            )
        },
        "random_state": estimator.random_state if isinstance(estimator.random_state, int) else None,
        "fitted": {
            "n_iter_": estimator.n_iter_,
            "converged_": estimator.converged_,
            "log_likelihood_": estimator.log_likelihood_,
            "init_method_": estimator.init_method_,
            "y_mean": estimator._scaling.y_mean,
            "y_scale": estimator._scaling.y_scale,
        },
    }
    if p.df is not None:
        meta["df"] = [float(v) for v in p.df]
    if p.has_roles:
        meta["gating_features"] = [bool(v) for v in p.gating_features]
        meta["expert_features"] = [bool(v) for v in p.expert_features]
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        meta["feature_names_in_"] = [str(name) for name in names]
    target = getattr(estimator, "target_name_", None)
    if target is not None:
        meta["target_name_"] = str(target)
    arrays = {
        "experts": p.experts,
        "gating": p.gating,
        "expert_bias": p.expert_bias,
        "gating_bias": p.gating_bias,
        "noise_std": np.zeros(0)
        if p.noise_std is None
        else np.atleast_1d(np.asarray(p.noise_std, dtype=float)),
        "x_mean": estimator._scaling.x_mean,
        "x_whiten": estimator._scaling.x_whiten,
        "x_unwhiten": estimator._scaling.x_unwhiten,
    }
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    with open(path, "wb") as fh:
        np.savez(fh, __meta__=meta_bytes, **arrays)


_CLASSIFIER_ARRAYS = ("experts", "expert_bias", "gating", "gating_bias", "classes")


def save_classifier(estimator, path):
    """Write a fitted :class:`~moelearn.MixtureOfExpertsClassifier` to ``path``.

    Class labels must be numbers or strings (stored as JSON).
    """
    classes = estimator.classes_
    labels = [c.item() if isinstance(c, np.generic) else c for c in classes.tolist()]
    if not all(isinstance(c, (str, int, float, bool)) for c in labels):
        raise ValueError("only numeric or string class labels can be saved")
    params = {
        k: v
        for k, v in estimator.get_params().items()
        if k not in ("random_state", "gating_features", "expert_features")
    }
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "estimator": "classifier",
        "n_experts": int(estimator.n_experts),
        "n_features": int(estimator.n_features_in_),
        "classes": labels,
        "label_dtype": str(classes.dtype) if classes.dtype.kind in "biuf" else "object",
        "gating_features": [bool(v) for v in estimator._gmask],
        "expert_features": [bool(v) for v in estimator._emask],
        "params": params,
        "random_state": estimator.random_state if isinstance(estimator.random_state, int) else None,
        "fitted": {
            "n_iter_": estimator.n_iter_,
            "converged_": estimator.converged_,
            "log_likelihood_": estimator.log_likelihood_,
            "init_method_": estimator.init_method_,
            "n_parameters_": estimator.n_parameters_,
        },
    }
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        meta["feature_names_in_"] = [str(name) for name in names]
    target = getattr(estimator, "target_name_", None)
    if target is not None:
        meta["target_name_"] = str(target)
    arrays = {
        "experts": estimator.experts_,
        "expert_bias": estimator.expert_bias_,
        "gating": estimator.gating_,
        "gating_bias": estimator.gating_bias_,
    }
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with open(os.fspath(path), "wb") as fh:
        np.savez(fh, __meta__=meta_bytes, **arrays)


def _load_classifier(path, meta, archive_arrays):
    from .classifier import MixtureOfExpertsClassifier

    try:
        k, d = int(meta["n_experts"]), int(meta["n_features"])
        labels = list(meta["classes"])
        g = np.asarray(meta["gating_features"], dtype=bool)
        e = np.asarray(meta["expert_features"], dtype=bool)
        params = dict(meta["params"])
        fitted = dict(meta["fitted"])
    except (KeyError, TypeError, ValueError) as exc:
        _fail(path, f"bad metadata ({exc})")
    if not (1 <= k <= 10**4 and 1 <= d <= 10**6 and 2 <= len(labels) <= 10**5):
        _fail(path, "implausible sizes")
    if g.shape != (d,) or e.shape != (d,):
        _fail(path, f"gating_features and expert_features must have {d} entries")
    q = len(labels) - 1
    expected = {
        "experts": (k, q, int(e.sum())),
        "expert_bias": (k, q),
        "gating": (k, int(g.sum())),
        "gating_bias": (k,),
    }
    for name, shape in expected.items():
        arr = archive_arrays.get(name)
        if arr is None:
            _fail(path, f"missing entry {name!r}")
        if arr.shape != shape:
            _fail(path, f"{name} has shape {arr.shape}, expected {shape}")
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
            _fail(path, f"{name} must hold finite floating-point numbers")
    known = MixtureOfExpertsClassifier().get_params()
    try:
        est = MixtureOfExpertsClassifier(
            **{key: v for key, v in params.items() if key in known},
            random_state=meta.get("random_state"),
        )
        est.gating_features = np.flatnonzero(g).tolist()
        est.expert_features = np.flatnonzero(e).tolist()
        est._validate_params()
        dtype = meta.get("label_dtype", "object")
        est.classes_ = np.asarray(labels, dtype=None if dtype == "object" else dtype)
        est.experts_ = archive_arrays["experts"].astype(float)
        est.expert_bias_ = archive_arrays["expert_bias"].astype(float)
        est.gating_ = archive_arrays["gating"].astype(float)
        est.gating_bias_ = archive_arrays["gating_bias"].astype(float)
        est._gmask, est._emask = g, e
        est.n_features_in_ = d
        est.n_iter_ = int(fitted["n_iter_"])
        est.converged_ = bool(fitted["converged_"])
        est.log_likelihood_ = float(fitted["log_likelihood_"])
        est.init_method_ = str(fitted["init_method_"])
        est.n_parameters_ = int(fitted["n_parameters_"])
        names = meta.get("feature_names_in_")
        if names is not None:
            if not (isinstance(names, list) and len(names) == d):
                _fail(path, f"feature_names_in_ must be {d} strings")
            est.feature_names_in_ = np.asarray(names, dtype=object)
        target = meta.get("target_name_")
        if target is not None:
            if not isinstance(target, str):
                _fail(path, "target_name_ must be a string")
            est.target_name_ = target
    except (KeyError, TypeError) as exc:
        _fail(path, f"bad metadata ({exc})")
    except ValueError as exc:
        if "not a valid moelearn model file" in str(exc):
            raise
        _fail(path, str(exc))
    return est


def _fail(path, why):
    raise ValueError(f"{path!s} is not a valid moelearn model file: {why}")


def load(path):
    """Load a model saved by :meth:`MixtureOfExpertsRegressor.save` or
    :meth:`MixtureOfExpertsClassifier.save`.

    Raises
    ------
    ValueError
        If the file is truncated, corrupted, of an unknown version, or holds
        wrong shapes or values.  Nothing in the file is ever unpickled.
    """
    from .estimator import MixtureOfExpertsRegressor

    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if "__meta__" not in names:
                _fail(path, "missing entries ['__meta__']")
            raw = {}
            for name in sorted(names & {"__meta__", *_ARRAYS, *_CLASSIFIER_ARRAYS}):
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

    meta_arr = raw["__meta__"]
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
    if meta.get("estimator") == "classifier":
        return _load_classifier(path, meta, raw)
    missing = set(_ARRAYS) - set(raw)
    if missing:
        _fail(path, f"missing entries {sorted(missing)}")
    try:
        k = int(meta["n_experts"])
        d = int(meta["n_features"])
        link = get_link(str(meta["link"]))
        params = dict(meta["params"])
        fitted = dict(meta["fitted"])
        family = str(meta.get("family", "gaussian"))
        df = meta.get("df")
        df = None if df is None else np.asarray(df, dtype=float)
        masks = [meta.get("gating_features"), meta.get("expert_features")]
    except (KeyError, TypeError, ValueError) as exc:
        _fail(path, f"bad metadata ({exc})")
    if family not in available_families():
        _fail(path, f"unknown family {family!r}")
    if (masks[0] is None) != (masks[1] is None):
        _fail(path, "gating_features and expert_features must both be present or both absent")
    if masks[0] is not None:
        if not all(
            isinstance(m, list) and len(m) == d and all(isinstance(v, bool) for v in m)
            for m in masks
        ):
            _fail(path, f"gating_features and expert_features must be {d} booleans each")
        masks = [np.asarray(m, dtype=bool) for m in masks]
    d_g = d if masks[0] is None else int(masks[0].sum())
    d_e = d if masks[1] is None else int(masks[1].sum())
    if not (1 <= k <= 10**4 and 1 <= d <= 10**6):
        _fail(path, f"implausible sizes n_experts={k}, n_features={d}")
    names = meta.get("feature_names_in_")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != d
        or not all(isinstance(name, str) for name in names)
        or len(set(names)) != d
    ):
        _fail(path, f"feature_names_in_ must be {d} distinct strings")
    target = meta.get("target_name_")
    if target is not None and not isinstance(target, str):
        _fail(path, "target_name_ must be a string")

    expected = {
        "experts": (k, d_e),
        "gating": (k, d_g),
        "expert_bias": (k,),
        "gating_bias": (k,),
        "x_mean": (d,),
        "x_whiten": (d, d),
        "x_unwhiten": (d, d),
    }
    for name, shape in expected.items():
        if raw[name].shape != shape:
            _fail(path, f"{name} has shape {raw[name].shape}, expected {shape}")
    noise = raw["noise_std"]
    if noise.shape not in ((0,), (1,), (k,)):
        _fail(path, f"noise_std has shape {noise.shape}")
    for name in _ARRAYS:
        if raw[name].dtype.kind != "f" or not np.all(np.isfinite(raw[name])):
            _fail(path, f"{name} must hold finite floating-point numbers")

    try:
        p = MoEParams(
            raw["experts"],
            raw["gating"],
            raw["expert_bias"],
            raw["gating_bias"],
            None if noise.size == 0 else (float(noise[0]) if noise.shape == (1,) else noise),
            link.name,
            family,
            df,
            masks[0],
            masks[1],
        )
        known = MixtureOfExpertsRegressor().get_params()
        valid = {
            key: value
            for key, value in params.items()
            if key in known and key not in ("n_experts", "link", "noise", "family")
        }
        est = MixtureOfExpertsRegressor.from_params(
            p, random_state=meta.get("random_state"), noise=params.get("noise", "shared"), **valid
        )
        est._set_fitted(
            p,
            fitted["n_iter_"],
            fitted["converged_"],
            float(fitted["log_likelihood_"]),
            fitted["init_method_"],
        )
        est._scaling = Scaling(
            raw["x_mean"].astype(float),
            raw["x_whiten"].astype(float),
            raw["x_unwhiten"].astype(float),
            float(fitted["y_mean"]),
            float(fitted["y_scale"]),
        )
        if names is not None:
            est.feature_names_in_ = np.asarray(names, dtype=object)
        if target is not None:
            est.target_name_ = target
    except ValueError as exc:
        if "not a valid moelearn model file" in str(exc):
            raise
        _fail(path, str(exc))
    except (KeyError, TypeError) as exc:
        _fail(path, f"bad metadata ({exc})")
    return est
