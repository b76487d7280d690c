"""CIFAR-10 / CIFAR-100 from their standard python-pickle folders, through torchvision (never downloading)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10, CIFAR100

from ..errors import DataError

__all__ = ["CIFAR_CLASSES", "load_cifar"]

_DATASETS: dict[str, type[CIFAR10]] = {"cifar10": CIFAR10, "cifar100": CIFAR100}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


def _root(name: str, data_dir: str | os.PathLike[str]) -> Path:
    """The folder that *contains* ``cifar-10-batches-py/`` (or ``cifar-100-python/``).

    ``data_dir`` may name that folder or the batches folder itself.
    """
    cls = _DATASETS[name]
    data_dir = Path(data_dir)
    root = data_dir.parent if data_dir.name == cls.base_folder else data_dir
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in expected if not (root / cls.base_folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name} not found: expected {root / cls.base_folder}/ holding {', '.join(expected)} "
            f"(missing: {', '.join(missing)}). Extract {cls.filename} from {cls.url} into {root}/ "
            "(irevnet never downloads), or give the folder that holds it as data_dir"
        )
    return root


def load_cifar(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    train_transform: Callable[[Any], Any] | None,
    eval_transform: Callable[[Any], Any] | None,
) -> tuple[CIFAR10, CIFAR10]:
    """``(train, test)`` splits of ``name`` (``"cifar10"`` or ``"cifar100"``) read from ``data_dir``.

    Items are ``(transform(PIL image 32x32 RGB), label)``; labels are 0..9 or 0..99 (fine labels).
    torchvision verifies every file's MD5; a corrupt or foreign file raises an error naming the folder.
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown CIFAR data set {name!r}; use one of {sorted(_DATASETS)}")
    cls, root = _DATASETS[name], _root(name, data_dir)
    try:
        return (
            cls(root, train=True, transform=train_transform, download=False),
            cls(root, train=False, transform=eval_transform, download=False),
        )
    except RuntimeError as e:  # torchvision's MD5 check failed
        raise DataError(f"{name} files in {root / cls.base_folder} are corrupt or not the official ones: {e}") from None
