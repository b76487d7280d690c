"""Image trees in ImageFolder layout: ``ROOT/{train,val}/<class>/<image>`` (ImageNet), or one tree
of class folders, ``ROOT/<class>/<image>``, with a held-out validation split (``val_split``)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from torchvision.datasets import ImageFolder
from torchvision.datasets.vision import StandardTransform

from ..errors import ConfigError, DataError

__all__ = [
    "CorruptImageError",
    "decode_image",
    "eval_imagefolder",
    "held_out_indices",
    "load_image",
    "load_imagefolder",
]

log = logging.getLogger(__name__)


class CorruptImageError(DataError):
    """An image file that cannot be decoded; the message names the file."""


#: The integer modes PIL decodes high-bit-depth files to: 16-bit files (PNG, TIFF) open as
#: ``I;16*`` or, depending on the format, ``I`` with values up to 65535 (their full scale).
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode_image(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB showing what the file shows, for every mode PIL decodes.

    - The EXIF orientation is applied (photos from phones are stored rotated).
    - 16-bit grayscale (``I;16*``, and ``I`` with values up to 65535) is scaled by 1/65535;
      ``I`` images with larger values by 1/(2**31 - 1); negative values clip to 0.
    - Floating-point images (``F``, e.g. float TIFFs) are read as intensities in [0, 1]
      (values outside are clipped).
    - Bilevel (``1``), grayscale, palette (``P``), CMYK and YCbCr convert as PIL converts them.
    - Transparency (``RGBA``, ``LA``, ``PA``, a palette with a transparent colour) is composited
      onto white, the way the image looks on a page; the alpha channel is not a model input.

    The result is quantized to 8 bits per channel (the input of every transform); a 16-bit
    or float image keeps its full range, with 1/255 resolution.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in _HIGH_BIT_DEPTH_MODES or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            full_scale = 1.0
        elif a.size == 0 or a.max() <= 65535:
            full_scale = 65535.0
        else:
            full_scale = 2.0**31 - 1
        grey = np.clip(a / full_scale, 0.0, 1.0)
        return Image.fromarray(np.round(grey * 255).astype(np.uint8), mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str) -> Image.Image:
    """Decode ``path`` fully as 8-bit RGB with :func:`decode_image`; a truncated or garbage file
    raises :class:`CorruptImageError`.

    The one decoding path of irevnet: ``irevnet invert``, ImageFolder data sets (training,
    evaluation, analyses) all read images through it. PIL's own errors often omit the file
    (``image file is truncated``), so we add it: a broken image in a million-file tree must
    be findable. We fail instead of skipping so that a run never silently trains on a
    different data set than the one on disk.
    """
    with decoding(path), Image.open(path) as img:
        return decode_image(img)  # converting forces the full decode inside the try


@contextlib.contextmanager
def decoding(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn PIL's decoding errors inside the body into a :class:`CorruptImageError` naming ``path``."""
    try:
        yield
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f"cannot decode image {str(path)!r}: {e}") from None


def _folder(path: Path, transform: Callable[[Any], Any] | None) -> ImageFolder:
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist (expected <class>/<image> subfolders)")
    try:
        return ImageFolder(str(path), transform=transform, loader=load_image)
    except FileNotFoundError as e:  # no class folders, or no images in them
        raise FileNotFoundError(f"{path}: {e}") from None


def load_imagefolder(
    data_dir: str | os.PathLike[str],
    *,
    train_transform: Callable[[Any], Any] | None,
    eval_transform: Callable[[Any], Any] | None,
    val_split: float | None = None,
    seed: int = 0,
) -> tuple[ImageFolder, ImageFolder]:
    """``(train, val)`` from ``data_dir/train`` and ``data_dir/val``, which must hold the same classes;
    with ``val_split``, from one tree of class folders instead (``data_dir``, or ``data_dir/train``
    when there is no ``data_dir/val``): the images :func:`held_out_indices` picks are the
    validation split, the others the training split.

    Class indices follow the sorted folder names (for ImageNet: the synset ids n01440764, ...).
    """
    root = Path(data_dir)
    if val_split is not None:
        tree = _split_tree(root)
        base = _folder(tree, None)  # scanned once: a million files take a while
        held = held_out_indices(base, val_split, seed=seed)
        kept = sorted(set(range(len(base))) - set(held))
        train, val = _part(base, kept, train_transform), _part(base, held, eval_transform)
        log.info(
            "%s: %d classes, %d train / %d held-out images (val_split %g of each class, split seed %d)",
            tree,
            len(base.classes),
            len(train),
            len(val),
            val_split,
            seed,
        )
        return train, val
    if root.is_dir() and not (root / "train").is_dir():
        raise DataError(
            f"{root} has no train/ folder: give {root}/train and {root}/val class folders, or hold out "
            "part of this tree of class folders as the validation split with val_split (e.g. 0.1)",
            option="val_split",
        )
    if (root / "train").is_dir() and not (root / "val").is_dir():
        raise DataError(
            f"{root} has train/ but no val/: add {root}/val, or hold out part of {root}/train as the "
            "validation split with val_split (e.g. 0.1)",
            option="val_split",
        )
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


def eval_imagefolder(
    data_dir: str | os.PathLike[str],
    *,
    transform: Callable[[Any], Any] | None,
    val_split: float | None = None,
    seed: int = 0,
) -> ImageFolder:
    """The evaluation split: ``data_dir/val`` if present, else ``data_dir`` itself as a class tree;
    with ``val_split``, the held-out part of the tree :func:`load_imagefolder` splits (the same images)."""
    root = Path(data_dir)
    if val_split is not None:
        base = _folder(_split_tree(root), None)
        return _part(base, held_out_indices(base, val_split, seed=seed), transform)
    return _folder(root / "val" if (root / "val").is_dir() else root, transform)


def held_out_indices(folder: ImageFolder, val_split: float, *, seed: int = 0) -> list[int]:
    """The indices (ascending) of the images of ``folder`` held out for validation: a seeded,
    class-stratified ``val_split`` fraction.

    In each class of ``n`` images, ``k = floor(val_split * n + 1/2)`` are held out, at least one
    and at most ``n - 1`` when ``n >= 2`` (none when ``n == 1``): those whose
    ``sha256(f"{seed}/{path relative to the tree}")`` are smallest. So an image's side depends on
    its own path and its rank in its class alone: the split is the same on every machine and in
    every order the files are listed, and adding images to a class moves at most a few of the others.
    """
    if not 0 < val_split < 1:
        raise ConfigError(f"val_split must be a fraction in (0, 1), got {val_split}", option="val_split")
    root = Path(folder.root)
    by_class: dict[int, list[tuple[bytes, int]]] = {}
    for i, (path, label) in enumerate(folder.samples):
        key = hashlib.sha256(f"{seed}/{Path(path).relative_to(root).as_posix()}".encode()).digest()
        by_class.setdefault(label, []).append((key, i))
    held: list[int] = []
    for items in by_class.values():
        n = len(items)
        k = 0 if n < 2 else min(max(math.floor(val_split * n + 0.5), 1), n - 1)
        held += [i for _, i in sorted(items)[:k]]
    if not held:
        raise DataError(
            f"{root}: no class has two images, so none can be held out for validation (val_split {val_split})",
            option="val_split",
        )
    return sorted(held)


def _split_tree(root: Path) -> Path:
    """The tree of class folders ``val_split`` divides: ``root``, or ``root/train`` beside no ``root/val``."""
    if (root / "val").is_dir():
        raise ConfigError(
            f"{root} already has a val/ split; val_split holds out part of a tree without one "
            f"(ROOT/<class>/<image> or ROOT/train alone)",
            option="val_split",
        )
    return root / "train" if (root / "train").is_dir() else root


def _part(folder: ImageFolder, indices: Sequence[int], transform: Callable[[Any], Any] | None) -> ImageFolder:
    """``folder`` restricted to the images ``indices``, with ``transform``; its classes stay all of ``folder``'s."""
    part = copy.copy(folder)
    part.samples = part.imgs = [folder.samples[i] for i in indices]
    part.targets = [folder.targets[i] for i in indices]
    part.transform, part.transforms = transform, StandardTransform(transform, None)
    return part
