"""scikit-learn's bundled 8x8 handwritten digits as tensors (no download, ever)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

__all__ = ["load_digits_split"]


def load_digits_split(*, test_size: float = 0.25, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Stratified train/test split of the 1,797 digits.

    Returns two ``TensorDataset`` of ``(image, label)`` with images ``(1, 8, 8)`` float32 in
    [0, 1] (pixel values 0..16 divided by 16) and int64 labels 0..9.
    """
    # Imported here: scikit-learn costs seconds at start-up, and most commands never need it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_size, random_state=seed, stratify=y.numpy()
    )
    return TensorDataset(x[idx_train], y[idx_train]), TensorDataset(x[idx_test], y[idx_test])
