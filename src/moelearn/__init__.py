"""moelearn: consistent learning of mixture-of-experts models.

The estimators :class:`MixtureOfExpertsRegressor` and
:class:`MixtureOfExpertsClassifier` follow the scikit-learn API.  The package
follows the pipeline of a fit: ``links`` and ``families`` (the experts'
non-linearities and distributions) -> ``transforms`` (the output transforms
``Q_m`` of the moment methods) -> ``moments`` (mergeable, chunked moment
statistics) -> ``experts`` and ``gating`` (the papers' consistent estimates)
-> ``refine`` and ``engine`` (maximum likelihood) -> ``solvers`` (the
registry of Gaussian solvers) -> ``estimator`` and ``classifier``.  After a
fit: ``inference`` (standard errors, summaries, bootstrap), ``predictive``
(the predictive distribution), ``plot``, ``persistence`` (``save`` and
:func:`load`, without pickle).  ``data`` reads memory maps, Dask arrays and
streams of chunks; ``datasets`` loads real data sets; ``torch`` (an optional
extra) is a PyTorch layer with the consistent losses.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

from . import datasets
from .classifier import MixtureOfExpertsClassifier
from .data import ChunkedDataset
from .diagnostics import Diagnosis, GateSeparation, diagnose, gate_separation
from .estimator import MixtureOfExpertsRegressor
from .experts import ExpertRecoveryResult, recover_count_experts, recover_experts
from .families import Family, available_families, get_family
from .gating import recover_gating
from .inference import StandardErrors, Summary, summarize
from .links import Link, available_links, get_link, register_link
from .metrics import RecoveryErrors, expert_error, parameter_errors
from .model import MoEParams, make_moe, sample
from .moments import MomentAccumulator, ReducedMomentAccumulator, Whitening
from .persistence import load
from .selection import ExpertSelection, SelectionResult, SelectionRow, select_n_experts
from .transforms import FactorialTransform, OutputTransform, factorial_transform, output_transform

try:
    # pyproject.toml is the one place the version is written
    __version__ = _distribution_version("moelearn")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ChunkedDataset",
    "Diagnosis",
    "GateSeparation",
    "ExpertRecoveryResult",
    "ExpertSelection",
    "FactorialTransform",
    "Family",
    "Link",
    "MixtureOfExpertsClassifier",
    "MixtureOfExpertsRegressor",
    "MoEParams",
    "MomentAccumulator",
    "OutputTransform",
    "RecoveryErrors",
    "ReducedMomentAccumulator",
    "SelectionResult",
    "SelectionRow",
    "StandardErrors",
    "Summary",
    "Whitening",
    "available_families",
    "available_links",
    "datasets",
    "diagnose",
    "expert_error",
    "factorial_transform",
    "gate_separation",
    "get_family",
    "get_link",
    "load",
    "make_moe",
    "output_transform",
    "parameter_errors",
    "recover_count_experts",
    "recover_experts",
    "recover_gating",
    "register_link",
    "sample",
    "select_n_experts",
    "summarize",
]
