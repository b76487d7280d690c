"""Training state: RNG streams, the run's position, and what a checkpoint must match to be resumed.

Everything here is tensors and plain containers, so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..config import IRevNetConfig
from ..errors import CheckpointError
from .recipes import Recipe
from .stats import Stats

_RECIPE_DEFAULTS = {f.name: f.default for f in fields(Recipe) if f.default is not MISSING}

__all__ = ["Progress", "check_resumable", "rng_state", "seed_everything", "set_rng_state"]


@dataclass
class Progress:
    """Where a run stands. ``epoch``: epochs completed; ``batch``: micro-batches of epoch ``epoch``
    (0-based) already trained; ``step``: optimizer steps so far; ``stats``: what the unfinished
    epoch has seen so far (this rank's); ``skipped``: steps skipped for a non-finite loss or
    gradient; ``best_top1``: the best eval top-1 so far (-1: never evaluated).
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_top1: float = -1.0
    skipped: int = 0
    stats: Stats = field(default_factory=Stats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "best_top1": self.best_top1,
            "skipped": self.skipped,
            "epoch_stats": self.stats.to_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        if "epoch_stats" in state:
            stats = Stats.from_state(state["epoch_stats"])
        else:  # the positional form of earlier checkpoints: [loss_sum, correct1, correct5, samples, seconds]
            loss_sum, c1, c5, n, seconds = state["sums"]
            stats = Stats(float(loss_sum), float(c1), float(c5), int(n), float(seconds))
        return cls(
            epoch=int(state["epoch"]),
            batch=int(state["batch"]),
            step=int(state["step"]),
            best_top1=float(state["best_top1"]),
            skipped=int(state["skipped"]),
            stats=stats,
        )

    def start_epoch(self, epoch: int) -> None:
        """Position at the beginning of epoch ``epoch`` (0-based), with nothing summed yet."""
        self.epoch, self.batch, self.stats = epoch, 0, Stats()


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's torch (CPU and ``device``'s CUDA), numpy and python RNG states."""
    # The global RandomState is an MT19937, whose legacy state is a tuple (numpy's stubs say dict).
    legacy = cast("tuple[str, np.ndarray[Any, Any], int, int, float]", np.random.get_state(legacy=True))
    _, keys, pos, has_gauss, cached = legacy
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"]), p["gauss"]))


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def check_resumable(
    path: Path, payload: dict[str, Any], model_config: IRevNetConfig, recipe: dict[str, Any]
) -> dict[str, Any]:
    """The trainer state of checkpoint ``payload``, if this run (model, recipe) may continue it.

    The optimizer and scheduler states carry the old lr, milestones and step count, so a
    changed recipe would be silently ignored: it is refused, except ``epochs``, which may
    change as long as the epochs already trained fit (the trainer then stretches the
    schedule over the new length: :func:`~irevnet.training.optim.load_schedule`).
    """
    saved = IRevNetConfig.from_dict(payload["config"])
    if saved != model_config:
        raise CheckpointError(
            f"{path} was trained with model {saved.to_dict()}, but this run builds {model_config.to_dict()}"
        )
    state = payload.get("trainer")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds weights only (no trainer state); it cannot be resumed")
    # A field added to recipes after a checkpoint was written had its default value there.
    trained = {**_RECIPE_DEFAULTS, **payload.get("recipe", {})}
    changed = sorted(k for k in recipe if trained.get(k) != recipe[k] and k != "epochs")
    if changed:
        diffs = ", ".join(f"{k}: {trained.get(k)!r} -> {recipe[k]!r}" for k in changed)
        raise CheckpointError(
            f"{path} was trained with a different recipe ({diffs}); resume with the same "
            "settings, or start a new run in another folder"
        )
    if recipe["epochs"] != trained["epochs"]:
        least = state["epoch"] + (1 if state["batch"] else 0)  # an epoch begun must be finished
        if recipe["epochs"] < least:
            raise CheckpointError(
                f"{path} has trained {state['epoch']} epoch(s)"
                f"{' and part of the next' if state['batch'] else ''}: epochs must be at least "
                f"{least} to resume it, got {recipe['epochs']}",
                option="epochs",
            )
    return state
