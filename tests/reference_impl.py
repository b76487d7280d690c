"""A small, independent re-implementation of the authors' i-RevNet (jhjacobsen/pytorch-i-revnet).

Test-only. It reproduces the reference code's module STRUCTURE and NAMES, so that its
``state_dict`` has exactly the keys and shapes of the published checkpoint
(``stack.{i}.bottleneck_block.{k}.*``, ``bn1.*``, ``linear.*``), and its function
(forward returns ``(logits, Φ)``). It is written from the paper's description, not from
``irevnet``'s code: ψ is built from the index formula by strided slicing, pooling is the
reference's fixed-size ``avg_pool2d``, so a conversion bug cannot hide behind shared code.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RefPsi(nn.Module):
    """Space-to-depth: output channel ``(i·b + j)·C + c`` = input channel ``c`` at patch offset (i, j)."""

    def __init__(self, block_size: int) -> None:
        super().__init__()
        self.b = block_size

    def forward(self, x: Tensor) -> Tensor:
        b = self.b
        return torch.cat([x[:, :, i::b, j::b] for i in range(b) for j in range(b)], dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        b = self.b
        n, cb, h, w = y.shape
        c = cb // (b * b)
        x = y.new_empty(n, c, h * b, w * b)
        for i in range(b):
            for j in range(b):
                k = i * b + j
                x[:, :, i::b, j::b] = y[:, k * c:(k + 1) * c]
        return x


class RefBlock(nn.Module):
    """Reference block: ``(x1, x2) -> (S(x2), F(x2) + S(x1))``, zero padding where channels grow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, first: bool, dropout: float, mult: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = 2 * out_ch - in_ch if stride == 1 else 0
        if self.pad:
            in_ch = 2 * out_ch
        self.psi = RefPsi(stride)
        hidden = out_ch // mult
        layers: list[nn.Module] = [] if first else [nn.BatchNorm2d(in_ch // 2), nn.ReLU(inplace=True)]
        layers += [
            nn.Conv2d(in_ch // 2, hidden, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.Dropout(p=dropout),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_ch, 3, padding=1, bias=False),
        ]
        self.bottleneck_block = nn.Sequential(*layers)

    def forward(self, x: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x1, x2 = x
        if self.pad:
            z = torch.cat((x1, x2, x1.new_zeros(x1.shape[0], self.pad, *x1.shape[2:])), dim=1)
            x1, x2 = z[:, :z.shape[1] // 2], z[:, z.shape[1] // 2:]
        fx2 = self.bottleneck_block(x2)
        if self.stride == 2:
            x1, x2 = self.psi(x1), self.psi(x2)
        return x2, fx2 + x1

    def inverse(self, y: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x2, y1 = y
        if self.stride == 2:
            x2 = self.psi.inverse(x2)
        x1 = y1 - self.bottleneck_block(x2)
        if self.stride == 2:
            x1 = self.psi.inverse(x1)
        if self.pad:
            z = torch.cat((x1, x2), dim=1)[:, :-self.pad]
            x1, x2 = z[:, :z.shape[1] // 2], z[:, z.shape[1] // 2:]
        return x1, x2


class RefIRevNet(nn.Module):
    """Reference i-RevNet: ``stack`` of blocks, head ``bn1`` + ``linear``; forward -> (logits, Φ)."""

    def __init__(self, blocks: tuple[int, ...], strides: tuple[int, ...], channels: tuple[int, ...],
                 num_classes: int, init_ds: int, in_shape: tuple[int, int, int],
                 dropout: float = 0.0, mult: int = 4) -> None:
        super().__init__()
        self.init_psi = RefPsi(init_ds) if init_ds >= 2 else None
        self.in_ch = in_shape[0] * max(init_ds, 1) ** 2
        total_ds = max(init_ds, 1) * 2 ** sum(s == 2 for s in strides)
        self.pool = in_shape[2] // total_ds
        stack: list[nn.Module] = []
        in_ch = self.in_ch
        for depth, stride, ch in zip(blocks, strides, channels):
            for k in range(depth):
                stack.append(RefBlock(in_ch, ch, stride if k == 0 else 1, not stack, dropout, mult))
                in_ch = 2 * ch
        self.stack = nn.ModuleList(stack)
        self.bn1 = nn.BatchNorm2d(in_ch, momentum=0.9)
        self.linear = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.init_psi is not None:
            x = self.init_psi(x)
        n = self.in_ch // 2
        out = (x[:, :n], x[:, n:])
        for block in self.stack:
            out = block(out)
        phi = torch.cat(out, dim=1)
        h = F.avg_pool2d(F.relu(self.bn1(phi)), self.pool)
        return self.linear(h.view(h.shape[0], -1)), phi

    def inverse(self, phi: Tensor) -> Tensor:
        n = phi.shape[1] // 2
        out = (phi[:, :n], phi[:, n:])
        for block in reversed(self.stack):
            out = block.inverse(out)
        x = torch.cat(out, dim=1)
        return self.init_psi.inverse(x) if self.init_psi is not None else x


def imagenet_b(**kw) -> RefIRevNet:
    """The authors' ImageNet (b) layout; keywords override (e.g. ``blocks``, ``in_shape``)."""
    args = dict(blocks=(6, 16, 72, 6), strides=(2, 2, 2, 2), channels=(24, 96, 384, 1536),
                num_classes=1000, init_ds=2, in_shape=(3, 224, 224))
    return RefIRevNet(**{**args, **kw})


def cifar10(**kw) -> RefIRevNet:
    """The authors' CIFAR-10 layout (injective); keywords override."""
    args = dict(blocks=(18, 18, 18), strides=(1, 2, 2), channels=(16, 64, 256),
                num_classes=10, init_ds=0, in_shape=(3, 32, 32))
    return RefIRevNet(**{**args, **kw})


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine BN parameters, running statistics and counters, so BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
    return model


def save_reference_checkpoint(model: RefIRevNet, path: Path, *, data_parallel: bool = True,
                              wrapped: bool = True, with_counters: bool = True, legacy: bool = False) -> Path:
    """Write ``model`` the way the authors' script did: ``{"state_dict": {"module." + k: v}, ...}``.

    ``wrapped=False`` writes a bare state dict; ``with_counters=False`` drops the
    ``num_batches_tracked`` buffers, as in checkpoints from PyTorch < 0.4.1;
    ``legacy=True`` uses the pre-1.6 (non-zip) serialization format.
    """
    prefix = "module." if data_parallel else ""
    sd = {prefix + k: v for k, v in model.state_dict().items()
          if with_counters or not k.endswith("num_batches_tracked")}
    payload = {"epoch": 128, "best_prec1": torch.tensor(74.018), "state_dict": sd} if wrapped else sd
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path
