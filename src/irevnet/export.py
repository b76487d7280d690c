"""Export of Φ, the classifier and Φ⁻¹ as ``torch.export`` programs (no irevnet needed to run them).

``export_model(model, example, dst)`` writes a folder::

    dst/forward.pt2   x (N, C, H, W)  -> (logits (N, classes), Φ (N, C', H', W'))
    dst/inverse.pt2   Φ (N, C', H', W') -> x (N, C, H, W)
    dst/meta.json     configuration, shapes, preprocessing, torch version

Both programs capture the model in eval mode (BatchNorm uses running statistics) with a
dynamic batch dimension and the example's spatial size fixed. Load them with
:func:`load_exported` or ``torch.export.load(path).module()``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .model import IRevNet

__all__ = ["export_model", "load_exported"]

log = logging.getLogger(__name__)


class _Forward(nn.Module):
    """``x -> (logits, Φ)``: the whole network, with Φ exposed for inversion."""

    def __init__(self, model: IRevNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.model.forward_features(x)
        return self.model.forward_head(phi), phi


class _Inverse(nn.Module):
    """``Φ -> x``: the explicit inverse of the feature map."""

    def __init__(self, model: IRevNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, phi: Tensor) -> Tensor:
        return self.model.inverse(phi)


def export_model(model: IRevNet, example: Tensor, dst: str | os.PathLike) -> Path:
    """Export ``model``'s forward and inverse, traced at ``example`` (N, C, H, W), into folder ``dst``.

    The model is exported in eval mode and left in the mode it was in. The batch size is
    dynamic (any N >= 1); H and W are fixed to the example's.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad():
            phi = model.forward_features(example)
            forward = torch.export.export(_Forward(model), (example,), dynamic_shapes=({0: batch},))
            inverse = torch.export.export(_Inverse(model), (phi,), dynamic_shapes=({0: batch},))
    finally:
        model.train(was_training)
    torch.export.save(forward, dst / "forward.pt2")
    torch.export.save(inverse, dst / "inverse.pt2")
    meta = {
        "format": "irevnet-export",
        "config": model.config.to_dict(),
        "input_shape": list(example.shape[1:]),
        "phi_shape": list(phi.shape[1:]),
        "preprocessing": model.config.data_config,
        "torch": torch.__version__,
    }
    (dst / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.debug("exported forward and inverse of %s to %s", model.config.name, dst)
    return dst


def load_exported(src: str | os.PathLike) -> tuple[nn.Module, nn.Module]:
    """``(forward, inverse)`` callables from a folder written by :func:`export_model`."""
    src = Path(src)
    paths = [src / "forward.pt2", src / "inverse.pt2"]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{str(p)!r} does not exist: {str(src)!r} is not an irevnet export folder")
    forward, inverse = (torch.export.load(p).module() for p in paths)
    return forward, inverse
