"""Data sets: scikit-learn's bundled digits (default) and, for training at scale, images on disk."""

from .digits import load_digits_split

__all__ = ["load_digits_split"]
