"""Building models from named presets."""

from __future__ import annotations

from typing import Any

from .config import get_preset, list_presets
from .model import IRevNet

__all__ = ["create_model", "entrypoint_names"]

# Names that differ from "irevnet_" + the preset name: the paper calls imagenet-b i-RevNet-301.
_ENTRYPOINT_NAMES = {"imagenet-b": "irevnet_301"}


def entrypoint_names() -> dict[str, str]:
    """timm / torch.hub names of the presets: ``{"irevnet_301": "imagenet-b", "irevnet_cifar10": "cifar10", ...}``."""
    return {_ENTRYPOINT_NAMES.get(p, "irevnet_" + p.replace("-", "_")): p for p in list_presets()}


def create_model(preset: str, **overrides: Any) -> IRevNet:
    """Build the preset ``preset`` (see :func:`irevnet.list_presets`).

    ``overrides`` replace configuration fields, e.g. ``num_classes=100``,
    ``blocks=(2, 2, 2)``, ``dropout=0.1``, ``input_shape=(3, 64, 64)``.
    ``memory_efficient=True`` trains without stored activations
    (:meth:`~irevnet.model.IRevNet.set_memory_efficient`, ``docs/memory.md``). ``device``
    and ``dtype`` are :class:`~irevnet.model.IRevNet`'s (where the parameters are created).
    """
    memory_efficient = overrides.pop("memory_efficient", False)
    device, dtype = overrides.pop("device", None), overrides.pop("dtype", None)
    config = get_preset(preset)
    if overrides:
        config = config.replace(**overrides)
    model = IRevNet(config, device=device, dtype=dtype)
    if memory_efficient:
        model.set_memory_efficient(True)
    return model
