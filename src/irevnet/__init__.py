"""i-RevNet: deep invertible networks (Jacobsen, Smeulders & Oyallon, ICLR 2018)."""

from .checkpoint import CheckpointError, load_model, save_model
from .config import IRevNetConfig, list_presets
from .factory import create_model
from .model import IRevNet

__all__ = [
    "CheckpointError",
    "IRevNet",
    "IRevNetConfig",
    "create_model",
    "list_presets",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"
