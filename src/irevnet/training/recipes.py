"""Named training recipes (hyper-parameters), overridable field by field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["Recipe", "get_recipe", "list_recipes", "build_optimizer"]


@dataclass(frozen=True)
class Recipe:
    """Optimization hyper-parameters of a training run.

    ``schedule`` is ``"onecycle"`` (one-cycle cosine, stepped per batch) or ``"step"``
    (multiply the lr by ``lr_gamma`` at each epoch in ``lr_milestones``).
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "step"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    dropout: float = 0.0

    def replace(self, **overrides: Any) -> "Recipe":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown recipe option(s): {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


_RECIPES: dict[str, Recipe] = {
    # Bundled digits: reaches >= 0.96 test accuracy in well under a minute on 2 CPU cores.
    "digits": Recipe(name="digits", epochs=50, batch_size=64, lr=0.05, weight_decay=5e-4,
                     nesterov=True, schedule="onecycle"),
}


def get_recipe(name: str) -> Recipe:
    try:
        return _RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; available recipes: {', '.join(list_recipes())}") from None


def list_recipes() -> list[str]:
    return sorted(_RECIPES)


def build_optimizer(params, recipe: Recipe, steps_per_epoch: int):
    """SGD with momentum and the recipe's schedule. Returns ``(optimizer, scheduler, per_batch)``."""
    import torch

    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    if recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr,
                                                    total_steps=recipe.epochs * steps_per_epoch)
        return opt, sched, True
    if recipe.schedule == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(recipe.lr_milestones),
                                                     gamma=recipe.lr_gamma)
        return opt, sched, False
    raise ValueError(f"unknown schedule {recipe.schedule!r} (use 'onecycle' or 'step')")
