"""Fail the documentation build when a public name is missing from the API reference.

After the environment is read, every name in ``__all__`` of each module listed in
the configuration value ``api_modules`` must be documented, either under the
module or, for a name the package re-exports, as ``moelearn.<name>``.  A missing
name is a Sphinx warning, which ``-W`` turns into a failed build.
"""

from __future__ import annotations

import importlib

from sphinx.util import logging

logger = logging.getLogger(__name__)


def missing_names(documented: set[str], modules: list[str]) -> list[str]:
    """Names of ``__all__`` of ``modules`` that are not in ``documented``.

    Parameters
    ----------
    documented : set of str
        Fully qualified names that the reference documents (objects and modules).
    modules : list of str
        Modules whose ``__all__`` must be covered; the first is the package.

    Returns
    -------
    list of str
        ``module.name`` for each name that is documented neither under its module
        nor, when the package exports it, under the package.
    """
    package = importlib.import_module(modules[0])
    top_level = set(package.__all__)
    missing = []
    for module_name in modules:
        if module_name not in documented:
            missing.append(module_name)
            continue
        module = importlib.import_module(module_name)
        for name in module.__all__:
            here = f"{module_name}.{name}"
            there = f"{modules[0]}.{name}"
            if here in documented or (name in top_level and there in documented):
                continue
            missing.append(here)
    return missing


def _check(app, env):
    domain = env.get_domain("py")
    documented = set(domain.objects) | set(domain.modules)
    for name in missing_names(documented, list(app.config.api_modules)):
        logger.warning("public name missing from the API reference: %s", name)


def setup(app):
    app.add_config_value("api_modules", [], "env")
    app.connect("env-check-consistency", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
