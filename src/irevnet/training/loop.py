"""One epoch of training and evaluation, shared by `irevnet demo` and `irevnet train`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["EpochStats", "train_epoch", "evaluate", "topk_correct"]


@dataclass
class EpochStats:
    loss: float
    top1: float
    top5: float
    samples: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


def topk_correct(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred == target.unsqueeze(1)
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


def train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device | str = "cpu",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = True,
    desc: str = "train",
    on_step: Callable[[int], None] | None = None,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``; the scheduler (if any) steps per batch."""
    model.train()
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch")
    for step, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = y.shape[0]
        c1, c5 = topk_correct(logits.detach(), y)
        total_loss += loss.item() * n
        correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + n
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct1 / seen:.3f}",
                        img_s=f"{seen / (time.perf_counter() - start):.0f}")
        if on_step is not None:
            on_step(step)
    seconds = time.perf_counter() - start
    return EpochStats(total_loss / max(seen, 1), correct1 / max(seen, 1), correct5 / max(seen, 1), seen, seconds)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "eval",
) -> EpochStats:
    """Loss, top-1 and top-5 accuracy of ``model`` in eval mode over ``loader``."""
    was_training = model.training
    model.eval()
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        c1, c5 = topk_correct(logits, y)
        correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + y.shape[0]
    model.train(was_training)
    seconds = time.perf_counter() - start
    return EpochStats(total_loss / max(seen, 1), correct1 / max(seen, 1), correct5 / max(seen, 1), seen, seconds)
