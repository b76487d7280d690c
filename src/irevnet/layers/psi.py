"""Invertible down-sampling ψ (space-to-depth) with the reference channel order.

Each ``b × b`` spatial patch of a ``C``-channel map becomes ``b²`` channels. Output
channel ``(i·b + j)·C + c`` holds input channel ``c`` at row offset ``i`` and column
offset ``j`` inside the patch. This is the order of the authors' code, and therefore of
their checkpoint; it differs from :class:`torch.nn.PixelUnshuffle` (``c·b² + i·b + j``).

ψ is a permutation of tensor entries, so it is orthogonal: its adjoint is its inverse.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

__all__ = ["InvertibleDownsampling", "channels_innermost", "depth_to_space", "space_to_depth"]

# torch.fx records ψ as one call: its layout branch reads strides, which a traced graph
# cannot know; the graph then runs the eager function, branch included.
torch.fx.wrap("space_to_depth")
torch.fx.wrap("depth_to_space")


def channels_innermost(x: Tensor) -> bool:
    """Whether channels are the innermost axis of ``x`` in memory (NHWC, or a channel slice of NHWC).

    A 1-wide W axis makes both layouts match; either path then gives the same values.
    """
    return x.stride(1) == 1 and x.stride(3) > 1


def space_to_depth(x: Tensor, block_size: int) -> Tensor:
    """``(N, C, H, W) -> (N, b²·C, H/b, W/b)`` in the reference channel order.

    One copy, in the input's memory format: a channels_last input (or a channel slice of
    one, as :func:`~irevnet.layers.split` makes) gives a channels_last output (in NHWC
    memory the reference order is the natural one), any other a contiguous one.
    """
    if block_size <= 1:
        return x
    n, c, h, w = x.shape
    b = block_size
    if h % b or w % b:
        raise ValueError(f"space_to_depth: spatial size {h}x{w} is not divisible by block size {b}")
    if channels_innermost(x):
        # NHWC (n, h', i, w', j, c) -> (n, h', w', i, j, c), whose last three axes are the channel
        y = x.permute(0, 2, 3, 1).reshape(n, h // b, b, w // b, b, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(n, h // b, w // b, b * b * c).permute(0, 3, 1, 2)
    x = x.reshape(n, c, h // b, b, w // b, b)
    # (n, c, h', i, w', j) -> (n, i, j, c, h', w'): channel index becomes (i*b + j)*C + c
    return x.permute(0, 3, 5, 1, 2, 4).reshape(n, b * b * c, h // b, w // b)


def depth_to_space(x: Tensor, block_size: int) -> Tensor:
    """Inverse of :func:`space_to_depth`: ``(N, b²·C, H, W) -> (N, C, b·H, b·W)``, memory format kept."""
    if block_size <= 1:
        return x
    n, cb, h, w = x.shape
    b = block_size
    if cb % (b * b):
        raise ValueError(f"depth_to_space: {cb} channels is not divisible by block size² = {b * b}")
    c = cb // (b * b)
    if channels_innermost(x):
        y = x.permute(0, 2, 3, 1).reshape(n, h, w, b, b, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(n, h * b, w * b, c).permute(0, 3, 1, 2)
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
