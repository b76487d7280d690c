"""An exponential moving average (EMA) of a model's weights, the recipe field ``ema_decay``."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step; buffers are copied.

    :attr:`module` is a copy of the model (same class and configuration) in eval mode; it is
    what gets evaluated and written as the model when the recipe enables an EMA. BatchNorm
    running statistics are copied rather than averaged: they already are running averages.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(list(self.module.parameters()), params, 1.0 - self.decay)
        torch._foreach_copy_(list(self.module.buffers()), list(model.buffers()))  # one launch, not one per buffer
