"""One epoch of training and evaluation, shared by `irevnet demo` and `irevnet train`."""

from __future__ import annotations

import contextlib
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


def _prepare(x: Tensor, y: Tensor, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


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
    accum: int = 1,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    criterion: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``; the scheduler (if any) steps per optimizer step.

    ``criterion(logits, target)`` is the training loss (mean over the batch).

    With ``accum = K`` the gradients of K consecutive batches are summed (each loss divided by
    K) before one optimizer step; a trailing incomplete group still steps when ``len(loader)``
    is known. A DDP-wrapped model all-reduces only on each group's last batch (``no_sync``).
    ``amp_dtype`` enables autocast (bf16/fp16); ``scaler`` (a ``GradScaler``, for fp16) scales
    the loss and skips steps with non-finite gradients. ``on_step`` gets the batch index.
    """
    if accum < 1:
        raise ValueError(f"accum must be >= 1, got {accum}")
    device = torch.device(device)
    num_batches = len(loader) if hasattr(loader, "__len__") else None
    model.train()
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch")
    optimizer.zero_grad(set_to_none=True)
    for step, (x, y) in enumerate(bar):
        x, y = _prepare(x, y, device, channels_last)
        group_end = (step + 1) % accum == 0 or step + 1 == num_batches
        # Skip DDP's gradient all-reduce on all but the last batch of an accumulation group.
        sync = model.no_sync() if not group_end and hasattr(model, "no_sync") else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
                loss = criterion(logits, y)
            scaled = loss / accum if accum > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if group_end:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
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
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> EpochStats:
    """Loss, top-1 and top-5 accuracy of ``model`` in eval mode over ``loader`` (autocast with ``amp_dtype``)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        x, y = _prepare(x, y, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
        c1, c5 = topk_correct(logits, y)
        correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + y.shape[0]
    model.train(was_training)
    seconds = time.perf_counter() - start
    return EpochStats(total_loss / max(seen, 1), correct1 / max(seen, 1), correct5 / max(seen, 1), seen, seconds)
