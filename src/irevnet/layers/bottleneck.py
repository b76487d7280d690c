"""The bottleneck F_j of an i-RevNet block (the only place with learned weights)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Bottleneck", "batch_norm"]


def batch_norm(bn: nn.BatchNorm2d, x: Tensor, *, update_stats: bool = True) -> Tensor:
    """Apply ``bn``; with ``update_stats=False`` a train-mode call leaves every buffer alone.

    Train mode still normalizes with the batch's own statistics (that is the function the
    forward computed), but running_mean / running_var / num_batches_tracked are not
    touched. Used by inverses and by recomputation, which must not change model state.
    """
    if update_stats or not bn.training:
        return bn(x)
    return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)


class Bottleneck(nn.Module):
    """F: ``[BN, ReLU] → conv3×3(stride) → BN → ReLU → conv3×3 → dropout → BN → ReLU → conv3×3``.

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)``, with a
    hidden width of ``out_channels // mult``. The leading BN/ReLU is omitted in the very
    first block of a network (``first=True``). Convolutions have no bias, BN is affine:
    exactly the reference layer list, so its checkpoint maps one-to-one onto the names
    ``bn0, conv1, bn1, conv2, drop, bn2, conv3``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        first: bool = False,
        dropout: float = 0.0,
        mult: int = 4,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        hidden = out_channels // mult
        if hidden < 1:
            raise ValueError(f"out_channels={out_channels} is too small for mult={mult}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.first = first
        self.bn0 = None if first else nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, 3, padding=1, bias=False)

    @property
    def draws_random(self) -> bool:
        """Whether a call draws a dropout mask from the RNG (train mode and ``p > 0``)."""
        return self.drop.training and self.drop.p > 0

    def forward(self, x: Tensor, *, update_stats: bool = True) -> Tensor:
        if self.bn0 is not None:
            x = F.relu(batch_norm(self.bn0, x, update_stats=update_stats))
        x = self.conv1(x)
        x = F.relu(batch_norm(self.bn1, x, update_stats=update_stats))
        x = self.drop(self.conv2(x))
        x = F.relu(batch_norm(self.bn2, x, update_stats=update_stats))
        return self.conv3(x)
