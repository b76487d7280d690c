"""The exponential moving average (EMA) of a model's weights, recipe fields ``ema_decay`` and ``ema_warmup``.

PyTorch's :class:`~torch.optim.swa_utils.AveragedModel` keeps the copy and
:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn` does the averaging; this module adds the
warm-up. A constant decay close to 1 keeps the random initial weights in the average for a long
time (with 0.99, 26% of the EMA after 132 steps is still the initialization), so early
evaluations of the EMA are poor. With the warm-up, the ``k``-th update uses
``min(decay, (1 + k) / (10 + k))``, the rule of TensorFlow's ``ExponentialMovingAverage``
(``num_updates``): the EMA first follows the weights closely and reaches ``decay`` after
``(10 decay - 1) / (1 - decay)`` updates (890 for 0.99, 45,000 for 0.9998).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["ema_decay_at", "model_ema", "set_updates"]


def ema_decay_at(decay: float, updates: int, *, warmup: bool = True) -> float:
    """The decay of the EMA's ``updates``-th averaging update (the first update copies the weights)."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


def model_ema(model: nn.Module, decay: float, *, warmup: bool = True) -> AveragedModel:
    """An :class:`~torch.optim.swa_utils.AveragedModel` of ``model``: after each optimizer step,
    ``ema.update_parameters(model)`` sets ``ema = d * ema + (1 - d) * weights`` with ``d`` from
    :func:`ema_decay_at`; buffers (BatchNorm running statistics, already running averages) are
    copied. ``ema.module`` is the averaged copy of ``model``, in eval mode and without gradients;
    ``ema.n_averaged`` counts the updates (the first copies the weights).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must be in (0, 1), got {decay}")

    def update(
        ema_params: list[Tensor] | tuple[Tensor, ...],
        params: list[Tensor] | tuple[Tensor, ...],
        n_averaged: Tensor | int,
    ) -> None:
        # The count AveragedModel keeps on the CPU (it is given no device): reading the device's
        # copy, ``n_averaged``, would wait for the device.
        get_ema_multi_avg_fn(ema_decay_at(decay, int(ema.n_averaged), warmup=warmup))(ema_params, params, n_averaged)

    ema = AveragedModel(model, multi_avg_fn=update, use_buffers=False)
    ema.module.eval().requires_grad_(False)
    return ema


def set_updates(ema: AveragedModel, updates: int) -> None:
    """Set the EMA's update count (on resume: it decides the warm-up's decay)."""
    with torch.no_grad():
        ema.n_averaged.fill_(updates)
