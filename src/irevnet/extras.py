"""Optional dependencies, imported only when a feature needs them, with errors that name the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import IRevNetError

__all__ = ["EXTRAS", "MissingExtraError", "require"]

# Extra (pip install 'irevnet[EXTRA]') -> the modules it brings; pyproject.toml lists the same.
EXTRAS = {"hub": ("huggingface_hub",), "timm": ("timm",), "onnx": ("onnx", "onnxscript", "onnxruntime")}


class MissingExtraError(IRevNetError, ImportError):
    """An optional dependency is not installed; the message says which extra brings it.

    An :class:`~irevnet.errors.IRevNetError`, so the command line reports it in one line;
    ``name`` is the missing module, as for any ``ImportError``.
    """

    def __init__(self, message: str, *, name: str | None = None) -> None:
        IRevNetError.__init__(self, message)
        self.name = name


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (part of the optional extra ``extra``) or raise :class:`MissingExtraError`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs the optional dependency {module!r} ({e.msg if hasattr(e, 'msg') else e}); "
            f"install it with: pip install 'irevnet[{extra}]'",
            name=module,
        ) from None
