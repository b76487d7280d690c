"""Split S̃ / merge M̃ and injective zero padding on channel pairs.

A *pair* ``(x1, x2)`` is how the coupling blocks carry a representation: the first and
second halves of the channel axis. ``split`` gives the first half ``C // 2`` channels
(as the reference code does, so an odd ``C`` puts the extra channel in ``x2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["InjectivePad", "Pair", "merge", "split"]

Pair = tuple[Tensor, Tensor]


def split(x: Tensor) -> Pair:
    """``(N, C, H, W) -> ((N, C//2, H, W), (N, C - C//2, H, W))``."""
    n = x.shape[1] // 2
    return x[:, :n], x[:, n:]


def merge(x1: Tensor, x2: Tensor) -> Tensor:
    """Concatenate a pair back along channels; inverse of :func:`split`."""
    return torch.cat((x1, x2), dim=1)


class InjectivePad(nn.Module):
    """Append ``num_channels`` zero channels at the END of the channel axis.

    The map is an isometric embedding: ``inverse`` (dropping the channels) is its left
    inverse and also its adjoint, which the memory-saving backward relies on.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        if num_channels < 0:
            raise ValueError(f"num_channels must be >= 0, got {num_channels}")
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.num_channels == 0:
            return x
        # Constant padding keeps x's memory format (a channels_last x stays channels_last).
        return F.pad(x, (0, 0, 0, 0, 0, self.num_channels))

    def inverse(self, y: Tensor) -> Tensor:
        if self.num_channels == 0:
            return y
        return y[:, : y.shape[1] - self.num_channels]

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"
