"""Register the presets with timm when (and only when) timm is imported.

``import irevnet`` must stay fast and must not need timm, yet ``timm.create_model("irevnet_301")``
should work after it. If timm is already imported we register at once; otherwise a finder on
``sys.meta_path`` waits for the first ``import timm``, lets it run, then registers.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types
from collections.abc import Sequence

__all__ = ["install"]

log = logging.getLogger(__name__)


def _register() -> None:
    module = sys.modules.get(f"{__package__}.timm_models")
    if module is not None and not hasattr(module, "register"):
        return  # timm_models is importing timm itself; it registers when it finishes loading
    try:
        from .timm_models import register

        register()
    except Exception as e:  # an incompatible timm must not break `import timm`
        log.warning("irevnet: could not register its models with timm (%s: %s)", type(e).__name__, e)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; the real finders locate timm
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: types.ModuleType) -> None:
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]  # patched on this loader only
        return spec


def install() -> None:
    """Register now if timm is loaded, else once it is; nothing when timm is not installed."""
    if sys.modules.get("timm") is not None:
        _register()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path) and importlib.util.find_spec("timm"):
        sys.meta_path.insert(0, _RegisterAfterImport())
