"""``build_datasets(name, data_dir)``: every data set the trainer and ``irevnet eval`` know, by name."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import did_you_mean
from ..errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ..config import IRevNetConfig

__all__ = ["AUGMENTATION", "DATASETS", "DataSplits", "build_datasets", "build_eval_dataset"]

log = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
#: The paper's training augmentation (:data:`~irevnet.data.transforms.AUGMENTATIONS`) of each image data set.
AUGMENTATION = {"cifar10": "cifar", "cifar100": "cifar", "imagefolder": "imagenet"}


@dataclass(frozen=True)
class DataSplits:
    """A training split (``None`` for eval-only use) and an evaluation split.

    Both yield ``(x, y)`` with ``x`` float32 of shape ``input_shape`` (C, H, W) and ``y`` an
    int label in ``[0, num_classes)``; ``class_names[y]`` names the class (``None``: no names,
    as for synthetic data).
    """

    train: Dataset[Any] | None
    eval: Dataset[Any]
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...] | None = None


def _need_dir(name: str, data_dir: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    if data_dir is None:
        raise ConfigError(f"data set {name} needs data_dir (the folder that holds it)", option="data_dir")
    return data_dir


def build_datasets(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    config: IRevNetConfig,
    synthetic_size: int = 2560,
    eval_only: bool = False,
    augment: bool = True,
    val_split: float | None = None,
) -> DataSplits:
    """Build the splits of data set ``name`` (one of :data:`DATASETS`) for the model ``config``.

    Image files become inputs through the model's data config (:mod:`irevnet.data.transforms`):
    the evaluation split with :func:`~irevnet.data.transforms.eval_transform`, the training
    split with the paper's augmentation for the data set (``augment=False``: the evaluation
    transform, e.g. for features that must not depend on random crops).

    - ``digits``: scikit-learn's 8x8 digits (bundled, [0, 1] pixels), the fixed stratified 75/25 split.
    - ``cifar10`` / ``cifar100``: ``data_dir`` holds ``cifar-10-batches-py/`` (``cifar-100-python/``).
    - ``imagefolder``: ``data_dir/train`` and ``data_dir/val`` class trees (ImageNet). With
      ``eval_only``, ``data_dir`` may also be the val class tree itself. With ``val_split``, one
      tree of class folders (``data_dir``, or ``data_dir/train`` alone) whose seeded,
      class-stratified ``val_split`` fraction is the evaluation split
      (:func:`~irevnet.data.imagefolder.held_out_indices`; ``eval_only``: that part alone).
    - ``synthetic``: random tensors of ``config.input_shape`` with ``config.num_classes`` classes
      (``synthetic_size`` train items, a quarter of that for eval), for benchmarks.
    """
    if val_split is not None and name != "imagefolder":
        raise ConfigError(
            f"val_split holds out part of an image folder; {name} has fixed train and test splits", option="val_split"
        )
    if name == "digits":
        from .digits import load_digits_split

        train, test = load_digits_split()
        return DataSplits(None if eval_only else train, test, 10, (1, 8, 8), tuple(str(d) for d in range(10)))
    if name == "synthetic":
        from .synthetic import SyntheticImages

        # Different seeds so that the eval items are not copies of the first train items.
        shape, classes = config.input_shape, config.num_classes
        synthetic_train = SyntheticImages(synthetic_size, shape, classes, seed=0)
        synthetic_val = SyntheticImages(max(synthetic_size // 4, 1), shape, classes, seed=1)
        return DataSplits(None if eval_only else synthetic_train, synthetic_val, classes, shape)
    # Image files: torchvision (with dynamo, ~2.5 s to import) only from here on.
    from .cifar import CIFAR_CLASSES, load_cifar
    from .imagefolder import eval_imagefolder, load_imagefolder
    from .transforms import eval_transform, train_transform

    def train_tf(kind: str) -> Callable[[Any], Any]:
        return train_transform(config, augment=kind) if augment else eval_transform(config)

    if name in CIFAR_CLASSES:
        train, test = load_cifar(
            name,
            _need_dir(name, data_dir),
            train_transform=train_tf(AUGMENTATION[name]),
            eval_transform=eval_transform(config),
        )
        return DataSplits(
            None if eval_only else train, test, CIFAR_CLASSES[name], config.input_shape, tuple(test.classes)
        )  # the label names of the data set's meta file
    if name == "imagefolder":
        root = _need_dir(name, data_dir)
        # Images of any size become inputs of the model's size: say which (a preset's 32x32 or 224x224).
        log.info(
            "imagefolder: images are resized and centre-cropped to %s's input_shape %s (crop_pct %g)%s",
            config.name,
            config.input_shape,
            config.data.crop_pct,
            "" if eval_only or not augment else "; training takes random-resized crops of that size",
        )
        if eval_only:
            val = eval_imagefolder(root, transform=eval_transform(config), val_split=val_split)
            return DataSplits(None, val, len(val.classes), config.input_shape, tuple(val.classes))
        train, val = load_imagefolder(
            root,
            train_transform=train_tf(AUGMENTATION[name]),
            eval_transform=eval_transform(config),
            val_split=val_split,
        )
        return DataSplits(train, val, len(train.classes), config.input_shape, tuple(train.classes))
    hint = did_you_mean(name, DATASETS)
    raise ValueError(f"unknown data set {name!r}{f' ({hint})' if hint else ''}; available: {', '.join(DATASETS)}")


def build_eval_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> DataSplits:
    """:func:`build_datasets` with ``eval_only=True`` (``train`` is ``None``)."""
    return build_datasets(name, data_dir, eval_only=True, **kwargs)
