"""The book's reproduced experiments, each at three scales (smoke, book, paper).

``available()`` lists them, ``run(name, scale=...)`` runs one.  Each experiment is
a module of this package (see :mod:`bnlib.experiments.base` for the contract);
the registry finds them by scanning the package, so adding a module is enough.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from .base import SCALES, ExperimentConfig, Result

__all__ = ["SCALES", "ExperimentConfig", "Result", "available", "get", "run"]

_SKIP = {"base"}


def _modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _SKIP:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found[module.NAME] = module
    return dict(sorted(found.items()))


def available() -> dict[str, str]:
    """Map each experiment's name to the first line of its module docstring."""
    return {name: (m.__doc__ or "").strip().splitlines()[0] for name, m in _modules().items()}


def get(name: str) -> ModuleType:
    """The module of experiment ``name``; ``KeyError`` with the known names if absent."""
    modules = _modules()
    if name not in modules:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(modules)}")
    return modules[name]


def run(name: str, scale: str = "book", *, progress: bool = False, **overrides) -> Result:
    """Run experiment ``name`` at ``scale`` with config ``overrides`` (seed, device, ...)."""
    module = get(name)
    config = module.Config.at_scale(scale, **overrides)
    return module.run(config, progress=progress)
