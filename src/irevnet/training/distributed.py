"""Several processes (torchrun / DDP): joining the process group and the collectives the trainer needs.

Every helper is a no-op with one process, so the trainer calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .device import resolve_device
from .stats import Stats

__all__ = [
    "DistContext",
    "any_flags",
    "broadcast_buffers",
    "gather_objects",
    "init_distributed",
    "max_int",
    "reduce_stats",
]


@dataclass(frozen=True)
class DistContext:
    """This process's place among the ranks (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str) -> tuple[DistContext, bool]:
    """Join the process group torchrun describes in the environment; ``(context, we_created_it)``.

    NCCL when this rank computes on CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if world == 1:
        return DistContext(), False
    created = not dist.is_initialized()
    if created:
        use_cuda = resolve_device(device_spec, local_rank).type == "cuda"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, local_world), created


def reduce_stats(stats: Stats, ctx: DistContext, device: torch.device) -> Stats:
    """The statistics of all ranks together, read: summed counts and sums, the slowest rank's times."""
    stats = stats.read()
    if not ctx.enabled:
        return stats
    sums = torch.tensor(
        [stats.loss_sum, stats.correct1, stats.correct5, stats.samples, stats.compile_samples],
        dtype=torch.float64,
        device=device,
    )
    times = torch.tensor([stats.seconds, stats.compile_seconds], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    loss_sum, c1, c5, n, compile_n = sums.tolist()
    seconds, compile_seconds = times.tolist()
    return Stats(loss_sum, float(round(c1)), float(round(c5)), round(n), seconds, compile_seconds, round(compile_n))


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics; DDP only syncs them at the next forward)."""
    if ctx.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_flags(flags: list[bool | Tensor], ctx: DistContext, device: torch.device) -> list[bool]:
    """Element-wise OR of ``flags`` (Python or 0-d tensor booleans) over all ranks: ranks decide
    together. One transfer from the device (and one small all-reduce under torchrun)."""
    t = torch.stack([torch.as_tensor(f, device=device) for f in flags]).int()
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def max_int(value: int, ctx: DistContext, device: torch.device) -> int:
    """The largest ``value`` over all ranks."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
