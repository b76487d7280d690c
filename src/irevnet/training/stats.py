"""What a training epoch or an evaluation saw: sums kept on the device, read when they are logged."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Stats", "topk_correct"]


def topk_correct(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (0-d tensors on the logits' device)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred == target.unsqueeze(1)
    return [hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks]


@dataclass
class Stats:
    """Sums over the examples of one training epoch (one rank's) or one evaluation pass.

    - ``loss_sum``: sum of the per-example losses; ``correct1`` / ``correct5``: examples whose
      label is the top-1 logit / among the top 5. While examples are added they are 0-d float64
      tensors on the device that computed them, so adding never waits for the device;
      :meth:`read` turns them into Python floats with one transfer (when logging).
    - ``samples``: examples added (batch sizes are known on the host).
    - ``seconds``: wall time; ``compile_seconds`` and ``compile_samples``: the time and examples
      of the steps during which ``torch.compile`` compiled, which :attr:`images_per_second` leaves
      out so that it measures the steady state.

    The means (:attr:`loss`, :attr:`top1`, :attr:`top5`) are Python floats once read.
    """

    loss_sum: Tensor | float = 0.0
    correct1: Tensor | float = 0.0
    correct5: Tensor | float = 0.0
    samples: int = 0
    seconds: float = 0.0
    compile_seconds: float = 0.0
    compile_samples: int = 0

    def add(self, logits: Tensor, target: Tensor, loss_sum: Tensor) -> None:
        """Add a batch: its ``logits`` (N, classes), ``target`` (N,) and the sum of its N losses."""
        c1, c5 = topk_correct(logits.detach(), target)
        self.loss_sum = self.loss_sum + loss_sum.detach().double()
        self.correct1 = self.correct1 + c1.double()
        self.correct5 = self.correct5 + c5.double()
        self.samples += target.shape[0]

    def read(self) -> Stats:
        """These statistics with Python numbers for the sums."""
        sums = [self.loss_sum, self.correct1, self.correct5]
        if any(isinstance(v, Tensor) for v in sums):
            device = next(v.device for v in sums if isinstance(v, Tensor))
            sums = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in sums]).tolist()
        return dataclasses.replace(self, loss_sum=float(sums[0]), correct1=float(sums[1]), correct5=float(sums[2]))

    @property
    def loss(self) -> Any:
        return self.loss_sum / max(self.samples, 1)

    @property
    def top1(self) -> Any:
        return self.correct1 / max(self.samples, 1)

    @property
    def top5(self) -> Any:
        return self.correct5 / max(self.samples, 1)

    @property
    def images_per_second(self) -> float:
        """Examples per second outside the steps that compiled (NaN when there are none)."""
        seconds = self.seconds - self.compile_seconds
        return (self.samples - self.compile_samples) / seconds if seconds > 0 else math.nan

    def to_state(self) -> dict[str, float]:
        """Named Python numbers, for a checkpoint (reads the device)."""
        return dataclasses.asdict(self.read())

    @classmethod
    def from_state(cls, state: dict[str, float]) -> Stats:
        return cls(
            float(state["loss_sum"]),
            float(state["correct1"]),
            float(state["correct5"]),
            int(state["samples"]),
            float(state["seconds"]),
            float(state["compile_seconds"]),
            int(state["compile_samples"]),
        )
