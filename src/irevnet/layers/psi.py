"""Invertible down-sampling ψ (space-to-depth) with the reference channel order.

Each ``b × b`` spatial patch of a ``C``-channel map becomes ``b²`` channels. Output
channel ``(i·b + j)·C + c`` holds input channel ``c`` at row offset ``i`` and column
offset ``j`` inside the patch. This is the order of the authors' code, and therefore of
their checkpoint; it differs from :class:`torch.nn.PixelUnshuffle` (``c·b² + i·b + j``).

ψ is a permutation of tensor entries, so it is orthogonal: its adjoint is its inverse.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["space_to_depth", "depth_to_space", "InvertibleDownsampling"]


def space_to_depth(x: Tensor, block_size: int) -> Tensor:
    """``(N, C, H, W) -> (N, b²·C, H/b, W/b)`` in the reference channel order."""
    if block_size <= 1:
        return x
    n, c, h, w = x.shape
    b = block_size
    if h % b or w % b:
        raise ValueError(f"space_to_depth: spatial size {h}x{w} is not divisible by block size {b}")
    x = x.reshape(n, c, h // b, b, w // b, b)
    # (n, c, h', i, w', j) -> (n, i, j, c, h', w'): channel index becomes (i*b + j)*C + c
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n, b * b * c, h // b, w // b)


def depth_to_space(x: Tensor, block_size: int) -> Tensor:
    """Inverse of :func:`space_to_depth`: ``(N, b²·C, H, W) -> (N, C, b·H, b·W)``."""
    if block_size <= 1:
        return x
    n, cb, h, w = x.shape
    b = block_size
    if cb % (b * b):
        raise ValueError(f"depth_to_space: {cb} channels is not divisible by block size² = {b * b}")
    c = cb // (b * b)
    x = x.reshape(n, b, b, c, h, w)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * b, w * b)


class InvertibleDownsampling(nn.Module):
    """ψ as a module: ``forward`` is :func:`space_to_depth`, ``inverse`` its exact inverse.

    ``block_size`` 0 or 1 means the identity (the reference's ``init_ds=0``).
    """

    def __init__(self, block_size: int = 2) -> None:
        super().__init__()
        if block_size < 0:
            raise ValueError(f"block_size must be >= 0, got {block_size}")
        self.block_size = block_size

    @property
    def factor(self) -> int:
        """Spatial reduction factor (1 for the identity)."""
        return max(self.block_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        return space_to_depth(x, self.block_size)

    def inverse(self, y: Tensor) -> Tensor:
        return depth_to_space(y, self.block_size)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}"
