"""Evaluation preprocessing per model configuration, and its inverse for display.

One definition used wherever arbitrary image files meet a model (``irevnet invert``,
export metadata): ImageNet models get the reference protocol (resize the short side by
256/224 of the input size, centre crop, ImageNet mean/std; at 224: resize 256, crop
224), CIFAR models their data set's mean/std, and everything else (e.g. the 1-channel
``digits``) plain [0, 1] pixels resized and centre-cropped to the input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision import transforms as T

from ..config import IRevNetConfig
from .transforms import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["Preprocessing", "eval_preprocessing"]

# Preset-name prefix -> (mean, std); checked in order, so "cifar100" precedes "cifar".
_STATS = (
    ("imagenet", IMAGENET_MEAN, IMAGENET_STD),
    ("cifar100", CIFAR100_MEAN, CIFAR100_STD),
    ("cifar", CIFAR10_MEAN, CIFAR10_STD),
)
# The reference ImageNet evaluation resizes to 256 before a 224 centre crop.
_IMAGENET_RESIZE_RATIO = 256 / 224


@dataclass(frozen=True)
class Preprocessing:
    """PIL image -> model input, and model input -> displayable image.

    ``transform(img)`` is ``(C, H, W)`` float32 with ``(C, H, W) == input_shape``:
    resize the short side to ``resize``, centre crop ``(H, W)``, scale to [0, 1], then
    ``(x - mean) / std`` per channel. ``denormalize`` undoes the last step exactly.
    """

    input_shape: tuple[int, int, int]
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def transform(self) -> T.Compose:
        c, h, w = self.input_shape
        steps = [T.Grayscale(1)] if c == 1 else []
        steps += [T.Resize(self.resize), T.CenterCrop((h, w)), T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)

    def denormalize(self, x: Tensor) -> Tensor:
        """``(..., C, H, W)`` model-space tensor -> pixel values (in [0, 1] for real images)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x * std + mean

    def to_dict(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "resize": self.resize,
                "mean": list(self.mean), "std": list(self.std)}


def eval_preprocessing(config: IRevNetConfig) -> Preprocessing:
    """The evaluation preprocessing of the model described by ``config`` (see the module docs)."""
    c, h, w = config.input_shape
    for prefix, mean, std in _STATS:
        if config.name.startswith(prefix) and c == len(mean):
            resize = round(min(h, w) * _IMAGENET_RESIZE_RATIO) if prefix == "imagenet" else min(h, w)
            return Preprocessing(config.input_shape, resize, tuple(mean), tuple(std))
    return Preprocessing(config.input_shape, min(h, w), (0.0,) * c, (1.0,) * c)
