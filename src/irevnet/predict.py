"""What a classifier predicts, by name: top-k predictions and accuracy per class.

Class names come from the model's configuration (``IRevNetConfig.label_names``, saved with
every checkpoint and model folder); a model without them names its classes ``"0"``, ``"1"``, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .config import IRevNetConfig
from .modes import eval_mode

if TYPE_CHECKING:
    from .model import IRevNet

__all__ = ["PerClassAccuracy", "Prediction", "class_names", "predict"]


def class_names(config: IRevNetConfig) -> tuple[str, ...]:
    """The name of each class of ``config``: its ``label_names``, else the class indices as text."""
    return config.label_names if config.label_names is not None else tuple(map(str, range(config.num_classes)))


@dataclass(frozen=True)
class Prediction:
    """One predicted class: its index, its name and its softmax probability."""

    index: int
    label: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "index": self.index, "probability": self.probability}


def predict(model: IRevNet, x: Tensor, *, top_k: int = 5, batch_size: int = 64) -> list[list[Prediction]]:
    """The ``top_k`` most probable classes of each input ``x[i]`` (``(N, C, H, W)``), best first.

    ``model`` is an :class:`~irevnet.model.IRevNet` (its configuration names the classes); it
    runs in eval mode, without gradients, on the device of its parameters, ``batch_size``
    inputs at a time, and is left in the mode it was in. ``top_k`` larger than the number of
    classes gives them all.
    """
    names = class_names(model.config)
    if not names:
        raise ValueError("the model has no classifier (num_classes 0): it predicts no classes")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    device = next(model.parameters()).device
    out: list[list[Prediction]] = []
    with eval_mode(model), torch.no_grad():
        for batch in x.split(batch_size):
            probs = model(batch.to(device)).float().softmax(dim=1)
            p, i = probs.topk(min(top_k, len(names)), dim=1)
            out += [
                [Prediction(int(j), names[int(j)], float(q)) for q, j in zip(row_p, row_i, strict=True)]
                for row_p, row_i in zip(p.tolist(), i.tolist(), strict=True)
            ]
    return out


class PerClassAccuracy:
    """Top-1 accuracy of each true class, accumulated batch by batch: ``update(logits, labels)``."""

    def __init__(self, num_classes: int) -> None:
        self.correct = torch.zeros(num_classes, dtype=torch.long)
        self.total = torch.zeros(num_classes, dtype=torch.long)

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Count a batch: ``logits (N, num_classes)``, ``labels (N,)``."""
        k = self.total.numel()
        right = logits.argmax(dim=1) == labels
        self.total += torch.bincount(labels, minlength=k).cpu()
        self.correct += torch.bincount(labels[right], minlength=k).cpu()

    def rows(self, names: tuple[str, ...]) -> list[dict[str, Any]]:
        """``{"index", "label", "images", "top1"}`` per class (``top1`` None for a class with no image)."""
        return [
            {"index": i, "label": names[i], "images": int(n), "top1": int(c) / int(n) if n else None}
            for i, (c, n) in enumerate(zip(self.correct.tolist(), self.total.tolist(), strict=True))
        ]
