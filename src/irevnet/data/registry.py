"""``build_datasets(name, data_dir)``: every data set the trainer and ``irevnet eval`` know, by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = ["DataSplits", "DATASETS", "build_datasets", "build_eval_dataset"]

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")


@dataclass(frozen=True)
class DataSplits:
    """A training split (``None`` for eval-only use) and an evaluation split.

    Both yield ``(x, y)`` with ``x`` float32 of shape ``input_shape`` (C, H, W) and ``y`` an
    int label in ``[0, num_classes)``.
    """

    train: Dataset | None
    eval: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]


def _need_dir(name: str, data_dir: str | os.PathLike | None) -> str | os.PathLike:
    if data_dir is None:
        raise ValueError(f"--data {name} needs --data-dir (the folder that holds the data set)")
    return data_dir


def build_datasets(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    synthetic_shape: tuple[int, int, int] = (3, 32, 32),
    synthetic_classes: int = 10,
    synthetic_size: int = 2560,
    eval_only: bool = False,
) -> DataSplits:
    """Build the splits of data set ``name`` (one of :data:`DATASETS`).

    - ``digits``: scikit-learn's 8x8 digits (bundled), the fixed stratified 75/25 split.
    - ``cifar10`` / ``cifar100``: ``data_dir`` holds ``cifar-10-batches-py/`` (``cifar-100-python/``).
    - ``imagefolder``: ``data_dir/train`` and ``data_dir/val`` class trees (ImageNet). With
      ``eval_only``, ``data_dir`` may also be the val class tree itself.
    - ``synthetic``: random tensors of ``synthetic_shape`` (``synthetic_size`` train items,
      a quarter of that for eval), for benchmarks.
    """
    # Imported here: torchvision and scikit-learn cost seconds, and listing DATASETS needs neither.
    from .cifar import CIFAR_CLASSES, load_cifar
    from .digits import load_digits_split
    from .imagefolder import eval_imagefolder, load_imagefolder
    from .synthetic import SyntheticImages
    from .transforms import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, cifar_transform, imagenet_transform

    cifar_stats = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}
    if name == "digits":
        train, test = load_digits_split()
        return DataSplits(None if eval_only else train, test, 10, (1, 8, 8))
    if name in cifar_stats:
        mean, std = cifar_stats[name]
        train, test = load_cifar(name, _need_dir(name, data_dir),
                                 train_transform=cifar_transform(train=True, mean=mean, std=std),
                                 eval_transform=cifar_transform(train=False, mean=mean, std=std))
        return DataSplits(None if eval_only else train, test, CIFAR_CLASSES[name], (3, 32, 32))
    if name == "imagefolder":
        root = _need_dir(name, data_dir)
        if eval_only:
            val = eval_imagefolder(root, transform=imagenet_transform(train=False))
            return DataSplits(None, val, len(val.classes), (3, 224, 224))
        train, val = load_imagefolder(root, train_transform=imagenet_transform(train=True),
                                      eval_transform=imagenet_transform(train=False))
        return DataSplits(train, val, len(train.classes), (3, 224, 224))
    if name == "synthetic":
        # Different seeds so that the eval items are not copies of the first train items.
        train = SyntheticImages(synthetic_size, synthetic_shape, synthetic_classes, seed=0)
        val = SyntheticImages(max(synthetic_size // 4, 1), synthetic_shape, synthetic_classes, seed=1)
        return DataSplits(None if eval_only else train, val, synthetic_classes, tuple(synthetic_shape))
    raise ValueError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}")


def build_eval_dataset(name: str, data_dir: str | os.PathLike | None = None, **kwargs) -> DataSplits:
    """:func:`build_datasets` with ``eval_only=True`` (``train`` is ``None``)."""
    return build_datasets(name, data_dir, eval_only=True, **kwargs)
