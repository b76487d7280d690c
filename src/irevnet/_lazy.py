"""PEP 562 lazy exports for package ``__init__`` modules.

A package lists ``name -> submodule``; the submodule is imported when the name is first
used. This keeps ``import irevnet`` (and ``irevnet --help``) free of torch, scikit-learn
and matplotlib until something needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, module_of: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``module_of``'s names from its submodules.

    The package's ``__all__`` is a literal list (what linters and type checkers read) and must
    name exactly ``module_of``'s names.
    """
    differ = set(namespace.get("__all__", ())) ^ set(module_of)
    if differ:
        raise ImportError(f"{package}.__all__ and its lazy exports differ in {sorted(differ)}")

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return __getattr__, __dir__
