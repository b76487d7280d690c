"""Image pipelines, all derived from a model's :class:`~irevnet.config.DataConfig`.

- :func:`eval_transform`: resize the short side to ``floor(size / crop_pct)``, centre crop
  the input size, scale to [0, 1], normalize (timm's evaluation transform for the same data
  config; at 224 with ``crop_pct=0.875``: resize 256, crop 224, the reference protocol). A
  non-square input size ``H x W`` resizes, keeping the aspect ratio, to the smallest image
  that covers ``floor(H / crop_pct) x floor(W / crop_pct)`` (timm's ``ResizeKeepRatio``), so
  the crop never pads.
- :func:`train_transform`: the paper's augmentation for the kind of data set, ``"cifar"``
  (random crop of the zero-padded image + flip) or ``"imagenet"`` (random-resized crop +
  flip + colour jitter), then the same scaling and normalization.
- :func:`denormalize`: model inputs back to pixel values, for display and pixel-space errors.

Every transform maps a PIL image to a float32 tensor of the model's ``input_shape``; with
``tensor_input=True`` the same pipeline takes a ``uint8`` ``(C, H, W)`` image tensor on any
device instead (GPU-decoded JPEGs, :mod:`irevnet.training.device_decode`): the same steps, with
the same random parameters for the same RNG state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..config import IRevNetConfig

__all__ = ["AUGMENTATIONS", "denormalize", "eval_transform", "resize_size", "train_transform"]

AUGMENTATIONS = ("cifar", "imagenet")
_INTERPOLATION = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
}


def resize_size(config: IRevNetConfig) -> int:
    """Short side the evaluation resizes to before the centre crop (timm's ``scale_size``) of a
    square input size; a non-square one resizes to cover ``floor(H / crop_pct) x floor(W / crop_pct)``."""
    _, h, w = config.input_shape
    return math.floor(min(h, w) / config.data.crop_pct)


def _to_input(config: IRevNetConfig, tensor_input: bool) -> list[Callable[[Any], Any]]:
    """Channel conversion, [0, 1] scaling and normalization (the end of every pipeline)."""
    dc = config.data_config
    grey = [T.Grayscale(1)] if config.input_shape[0] == 1 else []
    to_float = T.ConvertImageDtype(torch.float32) if tensor_input else T.ToTensor()  # both divide by 255
    return [*grey, to_float, T.Normalize(dc["mean"], dc["std"])]


class _ResizeToCover(torch.nn.Module):
    """Resize, keeping the aspect ratio, to the smallest size that covers ``(height, width)``."""

    def __init__(self, size: tuple[int, int], interpolation: T.InterpolationMode) -> None:
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def forward(self, img: Tensor | Image.Image) -> Tensor | Image.Image:
        w, h = TF.get_image_size(img)
        scale = max(self.size[0] / h, self.size[1] / w)
        out = [max(t, round(v * scale)) for v, t in ((h, self.size[0]), (w, self.size[1]))]
        return TF.resize(img, out, interpolation=self.interpolation, antialias=True)


def eval_transform(config: IRevNetConfig, *, tensor_input: bool = False) -> T.Compose:
    """PIL image (or ``uint8`` tensor) -> ``(C, H, W)`` model input of ``config.input_shape`` (deterministic)."""
    _, h, w = config.input_shape
    interpolation = _INTERPOLATION[config.data.interpolation]
    if h == w:
        resize = T.Resize(resize_size(config), interpolation=interpolation, antialias=True)
    else:  # the short side alone could leave the long side of the crop uncovered (padded with zeros)
        crop_pct = config.data.crop_pct
        resize = _ResizeToCover((math.floor(h / crop_pct), math.floor(w / crop_pct)), interpolation)
    return T.Compose([resize, T.CenterCrop((h, w)), *_to_input(config, tensor_input)])


def train_transform(config: IRevNetConfig, *, augment: str, tensor_input: bool = False) -> T.Compose:
    """PIL image (or ``uint8`` tensor) -> augmented ``(C, H, W)`` model input; ``augment`` is one
    of :data:`AUGMENTATIONS`.

    ``"cifar"``: resize to the input size when the images are not already that size, random
    crop of the image zero-padded by 1/8 of its side (4 pixels at 32), horizontal flip.
    ``"imagenet"``: random-resized crop to the input size, flip, colour jitter (0.4 each).
    """
    _, h, w = config.input_shape
    interpolation = _INTERPOLATION[config.data.interpolation]
    if augment == "cifar":
        head = [
            T.Resize((h, w), interpolation=interpolation, antialias=True),
            T.RandomCrop((h, w), padding=min(h, w) // 8),
            T.RandomHorizontalFlip(),
        ]
    elif augment == "imagenet":
        head = [
            T.RandomResizedCrop((h, w), interpolation=interpolation, antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
        ]
    else:
        raise ValueError(f"unknown augmentation {augment!r}; use one of {', '.join(AUGMENTATIONS)}")
    return T.Compose([*head, *_to_input(config, tensor_input)])


def denormalize(x: Tensor, config: IRevNetConfig) -> Tensor:
    """``(..., C, H, W)`` model inputs -> pixel values (in [0, 1] for real images); undoes the normalization."""
    dc = config.data_config
    mean = torch.tensor(dc["mean"], dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(dc["std"], dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x * std + mean
