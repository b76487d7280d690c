"""Conversion of the authors' checkpoints (jhjacobsen/pytorch-i-revnet) into irevnet models.

The reference model names its parameters::

    stack.{i}.bottleneck_block.{k}.{weight,bias,running_mean,running_var,num_batches_tracked}
    bn1.*      (BatchNorm2d over the merged Φ)
    linear.*   (the classifier)

where ``bottleneck_block`` is an ``nn.Sequential`` holding, for every block but the
first, ``[BN, ReLU, conv, BN, ReLU, conv, Dropout, BN, ReLU, conv]`` (indexes 0..9) and,
for block 0, the same list without the leading ``BN, ReLU`` (indexes 0..7). ReLU and
Dropout have no parameters but occupy an index. Our bottleneck has the same layers under
the names ``bn0, conv1, bn1, conv2, drop, bn2, conv3``, and ψ, split/merge and padding
are parameter-free in both, so the mapping is a pure renaming: no tensor is reshaped.

Reading never executes pickled code (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from torch import Tensor

from .blocks import IRevBlock
from .errors import IRevNetError
from .factory import create_model
from .io.fit import check_fit
from .io.names import FORMAT
from .io.safe import load_tensor_file
from .model import IRevNet

__all__ = [
    "ConversionError",
    "ConversionReport",
    "convert_reference_checkpoint",
    "convert_reference_state_dict",
    "load_reference_checkpoint",
    "read_reference_state_dict",
    "reference_key_map",
]

log = logging.getLogger(__name__)

# Position of each of our bottleneck layers in the reference ``bottleneck_block`` Sequential.
_BOTTLENECK_INDEX = {"bn0": 0, "conv1": 2, "bn1": 3, "conv2": 5, "bn2": 7, "conv3": 9}
# The first block lacks the leading BN and ReLU, so every later index shifts down by 2.
_FIRST_BOTTLENECK_INDEX = {name: i - 2 for name, i in _BOTTLENECK_INDEX.items() if name != "bn0"}
_HEAD_NAMES = {"norm": "bn1", "fc": "linear"}
# Old checkpoints (PyTorch < 0.4.1) predate this BatchNorm buffer; it does not affect eval outputs.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
_DATA_PARALLEL_PREFIX = "module."


class ConversionError(IRevNetError, RuntimeError):
    """A reference checkpoint cannot be read or does not match the requested configuration."""


@dataclass
class ConversionReport:
    """Outcome of mapping a reference state dict onto a model; ``ok`` when nothing is wrong.

    ``missing``: our keys with no reference counterpart; ``unexpected``: reference keys
    that map onto nothing; ``mismatched``: ``(reference key, its shape, expected shape)``;
    ``defaulted``: ``num_batches_tracked`` buffers absent from an old checkpoint, left at
    the model's value (harmless: they only matter for momentum-free BN training).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    defaulted: list[str] = field(default_factory=list)
    converted: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, *, limit: int = 20) -> str:
        """Human-readable summary listing at most ``limit`` keys per category."""
        lines = [f"{self.converted} tensors converted"]
        if self.defaulted:
            lines.append(f"{len(self.defaulted)} num_batches_tracked buffers absent (old checkpoint), left at 0")
        for title, items in (
            ("missing (expected by the model, absent from the checkpoint)", self.missing),
            ("unexpected (in the checkpoint, unknown to the model)", self.unexpected),
        ):
            if items:
                lines.append(f"{len(items)} {title}:")
                lines += [f"  {k}" for k in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        if self.mismatched:
            lines.append(f"{len(self.mismatched)} with a wrong shape (checkpoint vs model):")
            lines += [f"  {k}: {list(got)} vs {list(want)}" for k, got, want in self.mismatched[:limit]]
            if len(self.mismatched) > limit:
                lines.append(f"  ... and {len(self.mismatched) - limit} more")
        return "\n".join(lines)


def reference_key_map(model: IRevNet) -> dict[str, str]:
    """``{reference key: our key}`` for every entry of ``model.state_dict()``.

    Raises :class:`ConversionError` if the model holds state the reference layout lacks
    (which would mean the two architectures have diverged).
    """
    mapping: dict[str, str] = {}
    for key in model.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) == 5 and parts[2] == "bottleneck":
            _, block, _, layer, tensor = parts
            first = cast(IRevBlock, model.blocks[int(block)]).bottleneck.first
            index = (_FIRST_BOTTLENECK_INDEX if first else _BOTTLENECK_INDEX).get(layer)
            if index is not None:
                mapping[f"stack.{block}.bottleneck_block.{index}.{tensor}"] = key
                continue
        elif parts[0] == "head" and len(parts) == 3 and parts[1] in _HEAD_NAMES:
            mapping[f"{_HEAD_NAMES[parts[1]]}.{parts[2]}"] = key
            continue
        raise ConversionError(f"model state {key!r} has no counterpart in the reference layout")
    return mapping


def _strip_data_parallel(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` puts on every key, if present."""
    if state_dict and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state_dict):
        return {k[len(_DATA_PARALLEL_PREFIX) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def convert_reference_state_dict(
    state_dict: Mapping[str, Tensor], model: IRevNet
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Rename a reference state dict to ``model``'s keys, checking every name and shape.

    ``state_dict`` may carry the ``module.`` prefix. Returns ``(mapped, report)``;
    ``mapped`` holds only the tensors that matched in name and shape, so it can be
    loaded with ``strict=True`` only when ``report.ok`` (and no ``defaulted`` keys).
    The tensors are not copied.
    """
    source = _strip_data_parallel(state_dict)
    key_map = reference_key_map(model)
    reference_name = {ours: ref_key for ref_key, ours in key_map.items()}
    unknown = [k for k in source if k not in key_map]
    fit = check_fit(model.state_dict(), {key_map[k]: v for k, v in source.items() if k in key_map})
    bad = set(fit.unexpected) | {k for k, _, _ in fit.misshaped}
    mapped = {key_map[k]: v for k, v in source.items() if k in key_map and key_map[k] not in bad}
    missing = [reference_name[k] for k in fit.missing]
    report = ConversionReport(
        missing=[k for k in missing if not k.endswith(_OPTIONAL_SUFFIX)],
        unexpected=unknown + [reference_name[k] for k in fit.unexpected],
        mismatched=[(reference_name[k], got, want) for k, got, want in fit.misshaped],
        defaulted=[k for k in missing if k.endswith(_OPTIONAL_SUFFIX)],
        converted=len(mapped),
    )
    return mapped, report


def read_reference_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a reference checkpoint without executing pickled code.

    Accepts a dict with a ``state_dict`` entry (the authors' format, with ``epoch``,
    ``best_prec1``, ...) or a bare state dict. Returns ``(state_dict, metadata)`` where
    ``metadata`` keeps the other top-level entries that are plain numbers or strings
    (scalar tensors become numbers); optimizer state and the like are dropped.
    """
    path = Path(path)
    payload = load_tensor_file(
        path,
        error=ConversionError,
        hint="If you trust the file, re-save just its tensors: "
        "torch.save({'state_dict': ckpt['state_dict']}, 'clean.pth')",
    )
    if not isinstance(payload, dict):
        raise ConversionError(f"{str(path)!r} holds a {type(payload).__name__}, expected a dict of tensors")
    if payload.get("format") == FORMAT:
        raise ConversionError(f"{str(path)!r} is already an irevnet checkpoint; load it with irevnet.load_model")
    state_dict = payload.get("state_dict", payload)
    if not isinstance(state_dict, dict) or not state_dict:
        raise ConversionError(f"{str(path)!r}: its 'state_dict' entry is not a non-empty dict")
    metadata: dict[str, Any] = {}
    if state_dict is not payload:
        for k, v in payload.items():
            if isinstance(v, Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (bool, int, float, str)):
                metadata[k] = v
    return state_dict, metadata


def convert_reference_checkpoint(
    path: str | os.PathLike[str], preset: str = "imagenet-b", **overrides: Any
) -> tuple[IRevNet, ConversionReport, dict[str, Any]]:
    """Build ``create_model(preset, **overrides)`` and load the reference checkpoint at ``path``.

    Returns ``(model, report, metadata)`` (see :func:`read_reference_state_dict`) with the
    model in eval mode. Raises :class:`ConversionError`, whose message holds the report,
    unless every key and shape matched.
    """
    state_dict, metadata = read_reference_state_dict(path)
    model = create_model(preset, **overrides)
    mapped, report = convert_reference_state_dict(state_dict, model)
    if not report.ok:
        raise ConversionError(
            f"{str(path)!r} does not match the {preset!r} configuration"
            f"{' with ' + str(overrides) if overrides else ''}:\n{report.format()}"
        )
    # strict=False only tolerates the defaulted num_batches_tracked buffers; all else was checked.
    model.load_state_dict(mapped, strict=not report.defaulted)
    log.debug("converted %d tensors from %s into %s", report.converted, path, preset)
    return model.eval(), report, metadata


def load_reference_checkpoint(path: str | os.PathLike[str], preset: str = "imagenet-b", **overrides: Any) -> IRevNet:
    """The authors' checkpoint at ``path`` as an :class:`IRevNet` in eval mode (strictly checked).

    ``irevnet.convert.load_reference_checkpoint("ckpt.pth")`` loads their ImageNet model;
    ``overrides`` describe other configurations, e.g. ``num_classes=10``.
    """
    return convert_reference_checkpoint(path, preset, **overrides)[0]
