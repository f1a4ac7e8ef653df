"""Lazy attributes for a package ``__init__`` (PEP 562), so ``import main`` loads only
the face it calls (docs/architecture.md, "Cold start").

A package lists its exports under ``if TYPE_CHECKING:`` (what mypy and readers see) and,
for run time, ``__getattr__ = lazy_attributes(__name__, {"_module": ("name", ...)})``:
the first access to a name imports its private module. The packager counts those
imports (sightops/package.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, exports: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each name from ``package.<module>`` (or from an
    absolute module name, e.g. ``shared.events``) on first use."""
    where = {name: module for module, names in exports.items() for name in names}
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        absolute = module if "." in module else f"{package}.{module}"
        value = getattr(importlib.import_module(absolute), name)
        namespace[name] = value  # later accesses skip __getattr__
        return value

    return __getattr__
