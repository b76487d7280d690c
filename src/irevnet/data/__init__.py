"""Data sets: scikit-learn's bundled digits (default) and, for training at scale, images on disk.

Names are imported on first use (PEP 562), so listing :data:`DATASETS` costs no torch import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .digits import load_digits_split
    from .imagefolder import CorruptImageError
    from .registry import DATASETS, DataSplits, build_datasets, build_eval_dataset

_MODULE_OF = {
    "load_digits_split": "digits",
    "CorruptImageError": "imagefolder",
    **dict.fromkeys(["DATASETS", "DataSplits", "build_datasets", "build_eval_dataset"], "registry"),
}

__all__ = [
    "DATASETS",
    "CorruptImageError",
    "DataSplits",
    "build_datasets",
    "build_eval_dataset",
    "load_digits_split",
]

__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, globals())
