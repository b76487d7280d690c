"""Data sets: scikit-learn's bundled digits (default) and, for training at scale, images on disk."""

from .digits import load_digits_split
from .imagefolder import CorruptImageError
from .registry import DATASETS, DataSplits, build_datasets, build_eval_dataset

__all__ = ["CorruptImageError", "DATASETS", "DataSplits", "build_datasets", "build_eval_dataset", "load_digits_split"]
