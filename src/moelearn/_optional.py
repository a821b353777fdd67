"""Optional dependencies, imported on first use with an error that names the extra."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib, which moelearn installs only with the plot extra: "
            "pip install 'moelearn[plot]'"
        ) from None
    return plt
