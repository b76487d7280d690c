"""Every preset as a timm model: ``timm.create_model("irevnet_301")`` after ``import irevnet``.

Imported (and so registered) only when timm is: :func:`irevnet._timm_hook.install` runs
:func:`register` as soon as ``timm`` finishes importing, so ``import irevnet`` stays fast
and needs no timm. Names are :func:`irevnet.factory.entrypoint_names` (``irevnet_301`` is
the paper's name for the bijective ImageNet model ``imagenet-b``).

timm's usual keyword arguments work: ``num_classes``, ``global_pool`` (``"avg"``, or ``""``
for none), ``in_chans``, ``img_size``, ``drop_rate``, ``device``, ``dtype``,
``features_only`` (per-stage feature maps: by default the last block of every stage;
``out_indices`` selects blocks; every ``feature_cls`` returns the merged maps Φ_j),
``pretrained`` with ``pretrained_cfg_overlay=dict(file="model/model.safetensors")``; any
other keyword is an :class:`~irevnet.config.IRevNetConfig` override (``blocks=(2, 2, 2)``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import DataConfig, IRevNetConfig, get_preset
from .extras import require
from .factory import create_model, entrypoint_names
from .io.formats import read_config_document
from .io.names import CONFIG_NAME, WEIGHTS_NAME
from .model import IRevNet, timm_cfg

require("timm", extra="timm", purpose="registering irevnet's models with timm")
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model  # noqa: E402

__all__: list[str] = []  # timm's register_model appends the entry points
log = logging.getLogger(__name__)
_PAPER = {
    "license": "mit",
    "paper_name": "i-RevNet: Deep Invertible Networks",
    "paper_ids": "arXiv:1802.07088",
    "origin_url": "https://github.com/jhjacobsen/pytorch-i-revnet",
}


# The configuration fields that IRevNetConfig.plan depends on (and data, whose statistics
# have one entry per input channel).
_LAYOUT_FIELDS = frozenset({"blocks", "strides", "channels", "input_shape", "init_block_size", "data"})


def _cfg(config: IRevNetConfig) -> dict[str, Any]:
    return {**timm_cfg(config), "description": config.description, **_PAPER}


default_cfgs = generate_default_cfgs({name: _cfg(get_preset(preset)) for name, preset in entrypoint_names().items()})


def _overrides(preset: IRevNetConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm's keyword arguments -> :class:`IRevNetConfig` overrides."""
    out = dict(kwargs)
    c, h, w = out.pop("input_shape", preset.input_shape)
    in_chans = out.pop("in_chans", c)
    img_size = out.pop("img_size", None)
    if img_size is not None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if (in_chans, h, w) != preset.input_shape:
        out["input_shape"] = (in_chans, h, w)
    d = preset.data
    if in_chans != preset.input_shape[0] and "data" not in out and d.mean is not None and d.std is not None:
        # Other channel counts: the per-channel statistics averaged over the preset's channels.
        out["data"] = DataConfig(
            mean=(sum(d.mean) / len(d.mean),) * in_chans,
            std=(sum(d.std) / len(d.std),) * in_chans,
            crop_pct=d.crop_pct,
            interpolation=d.interpolation,
        )
    if "drop_rate" in out:
        out["dropout"] = out.pop("drop_rate")
    return out


def _classes_of_weights(variant: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """With ``pretrained_cfg_overlay=dict(file=DIR/model.safetensors)`` of a model folder, the number of
    classes (and their names) of its ``config.json``: timm then builds and keeps that classifier. A
    ``num_classes`` that differs replaces it, with a warning (timm itself only logs at INFO). Any other
    file (a checkpoint, whose folder's ``config.json`` may be a run's) is left to timm as it is."""
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    weights = Path(overlay["file"]) if overlay.get("file") else None
    if weights is None or weights.name != WEIGHTS_NAME or not (weights.parent / CONFIG_NAME).is_file():
        return kwargs
    config_file = weights.parent / CONFIG_NAME
    saved = read_config_document(config_file)
    out = {**kwargs, "pretrained_cfg_overlay": {**overlay, "num_classes": saved.num_classes}}
    wanted = kwargs.get("num_classes", saved.num_classes)
    if wanted != saved.num_classes and not kwargs.get("features_only"):
        log.warning(
            "%s: the weights of %s hold a classifier for %d classes; num_classes=%d replaces it with a new, "
            "randomly initialized one",
            variant,
            overlay["file"],
            saved.num_classes,
            wanted,
        )
    elif saved.label_names is not None and wanted == saved.num_classes:
        out.setdefault("label_names", saved.label_names)
    return out


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> IRevNet:
    if pretrained:
        kwargs = _classes_of_weights(variant, kwargs)
    preset_name = entrypoint_names()[variant]
    preset = get_preset(preset_name)
    # The layout this call builds, for its stage ends (features_only's default taps).
    config = preset.replace(**{k: v for k, v in _overrides(preset, kwargs).items() if k in _LAYOUT_FIELDS})

    def build(**model_kwargs: Any) -> IRevNet:
        return create_model(preset_name, **_overrides(preset, model_kwargs))

    # flatten_sequential: the sequential extractors ("dict", "list", "hook") chain ψ and the
    # blocks one by one, and the blocks pass merged maps, so every extractor returns Φ_j.
    feature_cfg = {"out_indices": config.stage_ends, "feature_cls": "getter", "flatten_sequential": True}
    return build_model_with_cfg(build, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


def _entrypoint(name: str, preset: str) -> Callable[..., IRevNet]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> IRevNet:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"i-RevNet preset {preset!r}: {get_preset(preset).description}"
    return entrypoint


_registered = False


def register() -> None:
    """Register every preset with timm (idempotent)."""
    global _registered
    if _registered:
        return
    for name, preset in entrypoint_names().items():
        fn = _entrypoint(name, preset)
        globals()[name] = register_model(fn)
    _registered = True


# Importing this module directly (before timm) registers too: the import hook defers to it.
register()
