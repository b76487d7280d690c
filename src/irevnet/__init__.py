"""i-RevNet: deep invertible networks (Jacobsen, Smeulders & Oyallon, ICLR 2018).

Names are imported on first use (PEP 562) so that ``import irevnet`` and the command
line's ``--help`` do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:
    from .config import DataConfig, IRevNetConfig, list_presets
    from .errors import CheckpointError, ConfigError, IRevNetError
    from .factory import create_model
    from .io.load import init_weights_from, load_model, save_model
    from .model import IRevNet

_MODULE_OF = {
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "IRevNetError": "errors",
    **dict.fromkeys(["init_weights_from", "load_model", "save_model"], "io.load"),
    "DataConfig": "config",
    "IRevNetConfig": "config",
    "list_presets": "config",
    "create_model": "factory",
    "IRevNet": "model",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "IRevNet",
    "IRevNetConfig",
    "IRevNetError",
    "create_model",
    "init_weights_from",
    "list_presets",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, globals())

from . import _timm_hook  # noqa: E402

_timm_hook.install()  # timm.create_model("irevnet_301") once timm is imported (optional, lazy)
