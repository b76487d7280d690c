"""A recipe's optimizer, learning-rate schedule and training loss."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model import IRevNet
from .hybrid import HybridCriterion
from .recipes import Recipe
from .steps import Criterion

__all__ = ["build_criterion", "build_optimizer", "load_schedule"]


def _param_groups(params: nn.Module | Iterable[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on 1-d parameters (BatchNorm weights, biases), as is customary."""
    if not isinstance(params, nn.Module):
        return [{"params": list(params), "weight_decay": weight_decay}]
    decay = [p for p in params.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in params.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))


def build_optimizer(
    params: nn.Module | Iterable[nn.Parameter], recipe: Recipe, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, bool]:
    """The recipe's optimizer and schedule over ``params`` (a model or its parameters).

    Returns ``(optimizer, scheduler, per_step)``: ``per_step`` tells whether the scheduler
    steps after every optimizer step (``onecycle``, ``cosine``) or after every epoch (``step``).
    """
    if recipe.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(_param_groups(params, recipe.weight_decay), lr=recipe.lr)
    else:
        opt = torch.optim.SGD(
            params.parameters() if isinstance(params, nn.Module) else params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "onecycle":
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total), True
    if recipe.schedule == "cosine":
        warmup = round(recipe.warmup_epochs * steps_per_epoch)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, partial(_warmup_cosine, warmup=warmup, total=total)), True
    return (
        opt,
        torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(recipe.lr_milestones), gamma=recipe.lr_gamma),
        False,
    )


def load_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any], *, stretch: bool) -> None:
    """Restore ``scheduler`` from ``state``, the state of the same recipe's schedule.

    ``stretch``: ``state`` was written for another number of epochs. A schedule stepped per
    optimizer step (``onecycle``, ``cosine``) is a function of the step and the total, and
    keeps this scheduler's total: from the saved step on, the run follows the schedule of a
    run planned with the new length from the start (the lr jumps to that schedule's value).
    Continuing from the end of the old one instead would train at its final lr, about 0 for
    both. The ``step`` schedule's milestones are epochs: it continues unchanged.
    """
    length = {k: v for k, v in scheduler.state_dict().items() if k in ("total_steps", "_schedule_phases")}
    if not stretch or isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR):
        scheduler.load_state_dict(state)
        return
    scheduler.load_state_dict({**state, **length})  # OneCycleLR's total; the cosine's is in its function
    scheduler.last_epoch -= 1
    scheduler.step()  # sets the lr (and OneCycleLR's momentum) of the saved step on this schedule


def build_criterion(recipe: Recipe, model: IRevNet | None = None) -> Criterion:
    """The training loss ``criterion(logits, target)``: cross-entropy with the recipe's label smoothing,
    plus ``nll_weight`` × the negative log-density of the input with the hybrid objective
    (which reads Φ from ``model``'s head: pass the model it trains)."""
    base: Criterion = (
        partial(F.cross_entropy, label_smoothing=recipe.label_smoothing) if recipe.label_smoothing else F.cross_entropy
    )
    if recipe.nll_weight:
        if model is None:
            raise ValueError("the hybrid objective (nll_weight > 0) needs the model it trains")
        # It reads Φ from a hook on the head, so it sees through DDP and memory saving.
        return HybridCriterion(model, recipe.nll_weight, base=base)
    return base
