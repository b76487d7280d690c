"""The pieces of the trainer's epoch loop: one optimizer step (forward/backward over its
micro-batches, then the update) and one evaluation pass. None of them waits for the device:
statistics and the finiteness of the loss stay tensors until the trainer reads them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..modes import eval_mode
from .stats import Stats

__all__ = ["Criterion", "evaluate", "forward_backward", "grads_finite", "micro_batch_groups", "optimizer_step"]

Criterion = Callable[[Tensor, Tensor], Tensor]
"""``criterion(logits, target) -> scalar loss`` (mean over the batch)."""


def _prepare(x: Tensor, y: Tensor, device: torch.device, channels_last: bool) -> tuple[Tensor, Tensor]:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def forward_backward(
    model: nn.Module,
    micro_batches: list[tuple[Tensor, Tensor]],
    *,
    accum: int,
    device: torch.device,
    stats: Stats,
    criterion: Criterion = F.cross_entropy,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    before_step: Callable[[], None] | None = None,
) -> Tensor:
    """Accumulate the gradients of one optimizer step (up to ``accum`` micro-batches) into ``.grad``
    and their loss and accuracy into ``stats``; returns a 0-d bool tensor: every loss was finite.

    Each loss is divided by ``accum``, so a full group sums to the gradient of the big batch.
    A DDP-wrapped model all-reduces only on the group's last micro-batch (``no_sync``).
    ``scaler`` (fp16) scales the loss. ``before_step`` runs once, before the first micro-batch's
    forward: the CUDA-graph step mark (:func:`irevnet.compile.mark_step`), which must not come
    between micro-batches, since each ``.grad`` is an output of the last backward's graphs and
    the next step's replays overwrite those. The optimizer is not touched: see :func:`optimizer_step`.
    """
    finite = torch.ones((), dtype=torch.bool, device=device)
    if before_step is not None:
        before_step()
    for i, (x, y) in enumerate(micro_batches):
        x, y = _prepare(x, y, device, channels_last)
        last = i + 1 == len(micro_batches)
        # Skip DDP's gradient all-reduce on all but the last micro-batch of the group.
        no_sync = getattr(model, "no_sync", None)
        sync = no_sync() if not last and no_sync is not None else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
                loss = criterion(logits, y)
            scaled = loss / accum if accum > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss = loss.detach()
        stats.add(logits, y, loss.double() * y.shape[0])
        finite = finite & loss.isfinite()
    return finite


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


def grads_finite(params: Iterable[nn.Parameter]) -> Tensor:
    """A 0-d bool tensor: every gradient is finite (their total norm is; fused per-tensor norms)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    norm = total_norm(grads) if total_norm else torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    return norm.isfinite()


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
) -> Stats:
    """Loss, top-1 and top-5 accuracy of ``model`` in eval mode over ``loader`` (autocast with
    ``amp_dtype``), read (:meth:`Stats.read`); ``before_batch`` runs before each batch's forward
    (CUDA-graph step marks: each batch is a step); ``on_batch(logits, labels)`` sees every batch
    (e.g. :class:`irevnet.predict.PerClassAccuracy`). The loss is the plain cross-entropy, whatever
    the training criterion."""
    device = torch.device(device)
    stats = Stats()
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
            stats.add(logits, y, F.cross_entropy(logits.float(), y, reduction="sum"))
    stats = stats.read()
    stats.seconds = time.perf_counter() - start
    return stats
