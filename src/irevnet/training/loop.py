"""Training steps, one epoch of training, and evaluation: shared by `irevnet demo` and `irevnet train`."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..modes import eval_mode

__all__ = ["EpochStats", "StepStats", "train_epoch", "evaluate", "topk_correct", "forward_backward", "optimizer_step",
           "grads_finite", "micro_batch_groups"]


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


Criterion = Callable[[Tensor, Tensor], Tensor]
"""``criterion(logits, target) -> scalar loss`` (mean over the batch)."""


@dataclass
class StepStats:
    """What one optimizer step's forward/backward saw: sums over its micro-batches.

    ``loss_finite`` is False when the loss of any micro-batch was NaN or infinite.
    """

    loss_sum: float
    correct1: int
    correct5: int
    samples: int
    loss_finite: bool


def forward_backward(
    model: nn.Module,
    micro_batches: list[tuple[Tensor, Tensor]],
    *,
    accum: int,
    device: torch.device,
    criterion: Criterion = F.cross_entropy,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    before_step: Callable[[], None] | None = None,
) -> StepStats:
    """Accumulate the gradients of one optimizer step (up to ``accum`` micro-batches) into ``.grad``.

    Each loss is divided by ``accum``, so a full group sums to the gradient of the big batch.
    A DDP-wrapped model all-reduces only on the group's last micro-batch (``no_sync``).
    ``scaler`` (fp16) scales the loss. ``before_step`` runs once, before the first micro-batch's
    forward: the CUDA-graph step mark (:func:`irevnet.compile.mark_step`), which must not come
    between micro-batches, since each ``.grad`` is an output of the last backward's graphs and
    the next step's replays overwrite those. The optimizer is not touched: see :func:`optimizer_step`.
    """
    stats = StepStats(0.0, 0, 0, 0, True)
    if before_step is not None:
        before_step()
    for i, (x, y) in enumerate(micro_batches):
        x, y = _prepare(x, y, device, channels_last)
        last = i + 1 == len(micro_batches)
        # Skip DDP's gradient all-reduce on all but the last micro-batch of the group.
        sync = model.no_sync() if not last and hasattr(model, "no_sync") else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
                loss = criterion(logits, y)
            scaled = loss / accum if accum > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        value, n = loss.item(), y.shape[0]
        c1, c5 = topk_correct(logits.detach(), y)
        stats.loss_sum += value * n
        stats.correct1, stats.correct5, stats.samples = stats.correct1 + c1, stats.correct5 + c5, stats.samples + n
        stats.loss_finite = stats.loss_finite and math.isfinite(value)
    return stats


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    skip: bool = False,
) -> None:
    """Apply the accumulated gradients (through ``scaler`` if given), clear them, step ``scheduler``.

    ``skip=True`` drops the gradients instead of applying them; the scheduler still steps, as
    it does when a GradScaler skips a step, so the schedule keeps its length.
    """
    if not skip:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


def grads_finite(params: Iterable[nn.Parameter]) -> bool:
    """True when every gradient is finite: their total norm is (fused per-tensor norms, one device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    norm = total_norm(grads) if total_norm else torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    return bool(norm.isfinite())


def micro_batch_groups(loader: Iterable[tuple[Tensor, Tensor]], accum: int) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Consecutive batches of ``loader`` in groups of ``accum`` (the last group may be shorter)."""
    group: list[tuple[Tensor, Tensor]] = []
    for batch in loader:
        group.append(batch)
        if len(group) == accum:
            yield group
            group = []
    if group:
        yield group


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
    criterion: Criterion = F.cross_entropy,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``; the scheduler (if any) steps per optimizer step.

    ``criterion(logits, target)`` is the training loss (mean over the batch).

    With ``accum = K`` the gradients of K consecutive batches are summed (each loss divided by
    K) before one optimizer step; a trailing incomplete group still steps. A DDP-wrapped
    model all-reduces only on each group's last batch (``no_sync``). ``amp_dtype`` enables
    autocast (bf16/fp16); ``scaler`` (a ``GradScaler``, for fp16) scales the loss and skips
    steps with non-finite gradients. ``on_step`` gets the index of each optimizer step.
    (``irevnet train`` runs the same steps with checkpoints, preemption and a divergence
    guard around them: :mod:`irevnet.training.trainer`.)
    """
    if accum < 1:
        raise ValueError(f"accum must be >= 1, got {accum}")
    device = torch.device(device)
    model.train()
    loss_sum, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    total_steps = math.ceil(len(loader) / accum) if hasattr(loader, "__len__") else None
    bar = tqdm(micro_batch_groups(loader, accum), total=total_steps, desc=desc, leave=False, disable=not progress,
               unit="step")
    optimizer.zero_grad(set_to_none=True)
    for step, group in enumerate(bar):
        s = forward_backward(model, group, accum=accum, device=device, criterion=criterion, amp_dtype=amp_dtype,
                             scaler=scaler, channels_last=channels_last)
        optimizer_step(optimizer, scaler=scaler, scheduler=scheduler)
        loss_sum, correct1, correct5, seen = (loss_sum + s.loss_sum, correct1 + s.correct1, correct5 + s.correct5,
                                              seen + s.samples)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct1 / seen:.3f}",
                        img_s=f"{seen / (time.perf_counter() - start):.0f}")
        if on_step is not None:
            on_step(step)
    seconds = time.perf_counter() - start
    return EpochStats(loss_sum / max(seen, 1), correct1 / max(seen, 1), correct5 / max(seen, 1), seen, seconds)


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
    before_batch: Callable[[], None] | None = None,
    on_batch: Callable[[Tensor, Tensor], None] | None = None,
) -> EpochStats:
    """Loss, top-1 and top-5 accuracy of ``model`` in eval mode over ``loader`` (autocast with ``amp_dtype``);
    ``before_batch`` runs before each batch's forward (CUDA-graph step marks: each batch is a step);
    ``on_batch(logits, labels)`` sees every batch
    (e.g. :class:`irevnet.predict.PerClassAccuracy`)."""
    device = torch.device(device)
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.perf_counter()
    with eval_mode(model):
        for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
            x, y = _prepare(x, y, device, channels_last)
            if before_batch is not None:
                before_batch()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            if on_batch is not None:
                on_batch(logits, y)
            total_loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
            c1, c5 = topk_correct(logits, y)
            correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + y.shape[0]
    seconds = time.perf_counter() - start
    return EpochStats(total_loss / max(seen, 1), correct1 / max(seen, 1), correct5 / max(seen, 1), seen, seconds)
