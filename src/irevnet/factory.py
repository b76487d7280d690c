"""Building models from named presets."""

from __future__ import annotations

from typing import Any

from .config import get_preset
from .model import IRevNet

__all__ = ["create_model"]


def create_model(preset: str, **overrides: Any) -> IRevNet:
    """Build the preset ``preset`` (see :func:`irevnet.list_presets`).

    ``overrides`` replace configuration fields, e.g. ``num_classes=100``,
    ``blocks=(2, 2, 2)``, ``dropout=0.1``, ``input_shape=(3, 64, 64)``.
    ``memory_efficient=True`` trains without stored activations
    (:meth:`~irevnet.model.IRevNet.set_memory_efficient`, ``docs/memory.md``).
    """
    memory_efficient = overrides.pop("memory_efficient", False)
    config = get_preset(preset)
    if overrides:
        config = config.replace(**overrides)
    model = IRevNet.from_config(config)
    if memory_efficient:
        model.set_memory_efficient(True)
    return model
