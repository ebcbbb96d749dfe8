"""Analyzers: one module each, registered by name.

Importing this package imports every module in it, and each analyzer module
registers its class with :func:`~eoaudit.analyzers.base.register`. A new
analyzer therefore needs no edit here: add `eoaudit/analyzers/<name>.py`.
"""

import importlib
import pkgutil

from eoaudit.analyzers.base import (
    Analyzer,
    AuditContext,
    ChunkResult,
    register,
    registered_analyzers,
)

ANALYZER_MODULES = tuple(
    importlib.import_module(f"{__name__}.{module.name}")
    for module in pkgutil.iter_modules(__path__)
    if module.name != "base" and not module.name.startswith("_")
)

__all__ = [
    "ANALYZER_MODULES",
    "Analyzer",
    "AuditContext",
    "ChunkResult",
    "register",
    "registered_analyzers",
]
