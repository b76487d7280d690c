"""The run folder of ``irevnet train``: its files, each written atomically, and the metrics log.

::

    RUN/config.json     the resolved configuration (recipe, model, run options)
    RUN/metrics.jsonl   one JSON object per finished epoch
    RUN/last.pt         weights + trainer state, after every epoch, every ``save_every`` steps and on preemption
    RUN/best.pt         the model alone (configuration + weights, no trainer state) of the epoch with the best
                        eval top-1 so far: what ``irevnet eval``, ``load_model`` and fine-tuning read

With an EMA both checkpoints say which weights their model is (``"weights": "ema"`` or
``"trained"``). Only rank 0 writes here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..atomic import atomic_write_text
from ..io.load import save_model
from ..io.names import RUN_BEST, RUN_CONFIG, RUN_LAST, RUN_METRICS

__all__ = ["RunDir"]


class RunDir:
    """Paths and atomic writers of one run folder."""

    LAST, BEST, METRICS, CONFIG = RUN_LAST, RUN_BEST, RUN_METRICS, RUN_CONFIG  # the names: irevnet.io.names

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, doc: dict[str, Any]) -> None:
        atomic_write_text(self.path / self.CONFIG, json.dumps(doc, indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, epochs_done: int) -> list[dict[str, Any]]:
        """Keep the records of epochs ``<= epochs_done`` (a run killed between the two writes logged one more)."""
        rows = [r for r in self.read_metrics() if r["epoch"] <= epochs_done]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def save_last(self, model: nn.Module, **extras: Any) -> Path:
        """Write ``model`` and ``extras`` (the trainer state) to ``last.pt``, atomically."""
        return save_model(model, self.last, **extras)

    def save_best(self, model: nn.Module, **extras: Any) -> Path:
        """Write ``model`` (and small ``extras``, no trainer state) to ``best.pt``, atomically."""
        return save_model(model, self.best, **extras)

    def model_metrics(self, checkpoint: str) -> dict[str, Any]:
        """The figures of the run for the weights in its ``checkpoint`` (``best.pt`` or ``last.pt``), e.g.
        for a model card: data set, recipe, epochs trained, the epoch of these weights (``best.pt``'s: the
        first with the highest eval top-1, as training chose it) and that epoch's metrics. Empty when this
        is no run folder (no ``config.json`` or ``metrics.jsonl``) or ``checkpoint`` is neither file."""
        rows = self.read_metrics()
        if checkpoint not in (self.BEST, self.LAST) or not rows or not (self.path / self.CONFIG).is_file():
            return {}
        train = json.loads((self.path / self.CONFIG).read_text()).get("train", {})
        evaluated = [r for r in rows if "eval_top1" in r]
        row = max(evaluated, key=lambda r: r["eval_top1"]) if checkpoint == self.BEST and evaluated else rows[-1]
        out: dict[str, Any] = {
            "data": train.get("data"),
            "recipe": train.get("recipe", {}).get("name"),
            "epochs trained": rows[-1]["epoch"],
            "epoch of these weights": row["epoch"],
            "train_loss": row["loss"],
            "train_top1": row["top1"],
        }
        out.update({k: row[k] for k in ("eval_loss", "eval_top1", "eval_top5") if k in row})
        return {k: v for k, v in out.items() if v is not None}
