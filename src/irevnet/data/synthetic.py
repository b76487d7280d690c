"""Random tensors of a model's input shape: for throughput benchmarks and tests, no files needed."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SyntheticImages"]


class SyntheticImages(Dataset[tuple[Tensor, int]]):
    """``size`` items ``(x, y)``: ``x`` standard normal of shape ``shape`` (C, H, W), ``y = i % num_classes``.

    Item ``i`` is drawn from its own generator seeded with ``(seed, i)``, so it is the same
    in every process and every epoch and nothing is held in memory.
    """

    def __init__(self, size: int, shape: tuple[int, int, int], num_classes: int, *, seed: int = 0) -> None:
        if size < 1 or num_classes < 1:
            raise ValueError(f"size and num_classes must be >= 1, got {size} and {num_classes}")
        self.size, self.shape, self.num_classes, self.seed = size, tuple(shape), num_classes, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return torch.randn(self.shape, generator=gen), index % self.num_classes
