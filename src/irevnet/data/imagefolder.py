"""Image trees in ImageFolder layout (ImageNet): ``ROOT/{train,val}/<class>/<image>``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from PIL import Image
from torchvision.datasets import ImageFolder

__all__ = ["CorruptImageError", "load_image", "load_imagefolder", "eval_imagefolder"]

log = logging.getLogger(__name__)


class CorruptImageError(RuntimeError):
    """An image file that cannot be decoded; the message names the file.

    A ``RuntimeError`` (not ``OSError``) so that the CLI reports it as a user error in one line.
    """


def load_image(path: str) -> Image.Image:
    """Decode ``path`` fully as RGB; a truncated or garbage file raises :class:`CorruptImageError`.

    PIL's own errors often omit the file (``image file is truncated``), so we add it: a
    broken image in a million-file tree must be findable. We fail instead of skipping so
    that a run never silently trains on a different data set than the one on disk.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the full decode inside the try
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f"cannot decode image {path!r}: {e}") from None


def _folder(path: Path, transform: Callable | None) -> ImageFolder:
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist (expected <class>/<image> subfolders)")
    try:
        return ImageFolder(str(path), transform=transform, loader=load_image)
    except FileNotFoundError as e:  # no class folders, or no images in them
        raise FileNotFoundError(f"{path}: {e}") from None


def load_imagefolder(
    data_dir: str | os.PathLike, *, train_transform: Callable | None, eval_transform: Callable | None,
) -> tuple[ImageFolder, ImageFolder]:
    """``(train, val)`` from ``data_dir/train`` and ``data_dir/val``, which must hold the same classes.

    Class indices follow the sorted folder names (for ImageNet: the synset ids n01440764, ...).
    """
    root = Path(data_dir)
    train, val = _folder(root / "train", train_transform), _folder(root / "val", eval_transform)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))[:5]
        only_val = sorted(set(val.classes) - set(train.classes))[:5]
        raise ValueError(
            f"{root}/train and {root}/val hold different classes ({len(train.classes)} vs {len(val.classes)}; "
            f"only in train: {only_train}, only in val: {only_val}); class indices would not match"
        )
    log.info("%s: %d classes, %d train / %d val images", root, len(train.classes), len(train), len(val))
    return train, val


def eval_imagefolder(data_dir: str | os.PathLike, *, transform: Callable | None) -> ImageFolder:
    """The evaluation split: ``data_dir/val`` if present, else ``data_dir`` itself as a class tree."""
    root = Path(data_dir)
    return _folder(root / "val" if (root / "val").is_dir() else root, transform)

