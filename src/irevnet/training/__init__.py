"""Training: :func:`train` (the one epoch loop, resumable, under torchrun too), its
configuration :class:`TrainConfig`, named recipes, and the pieces it is built from.

``trainer`` runs the loop; the modules around it each do one job: ``options`` (what a run
is), ``build`` (model, EMA, data, optimizer), ``resume`` (save and restore), ``report``
(metrics, log, TensorBoard), ``steps`` (one optimizer step, one evaluation), ``stats`` (what
an epoch saw), ``run_dir`` (the run folder), ``state`` (RNG and position), ``distributed``
(torchrun collectives), ``device`` (device and AMP), ``data_loading`` (data order and
workers), ``preemption`` (stop signals), ``optim`` (optimizer, schedule, loss), ``ema``
(weight averaging), ``hybrid`` (the hybrid objective), ``monitor`` (inverse stability).

Names are imported on first use (PEP 562): :mod:`.recipes` is plain Python, so the
command line can list recipes without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .hybrid import HybridCriterion
    from .optim import build_criterion, build_optimizer
    from .options import TrainConfig, TrainResult
    from .recipes import Recipe, get_recipe, list_recipes, parse_overrides, recipe_for_preset
    from .stats import Stats
    from .steps import evaluate
    from .trainer import train

_MODULE_OF = {
    "HybridCriterion": "hybrid",
    "evaluate": "steps",
    "Stats": "stats",
    "train": "trainer",
    **dict.fromkeys(["TrainConfig", "TrainResult"], "options"),
    **dict.fromkeys(["build_criterion", "build_optimizer"], "optim"),
    **dict.fromkeys(["Recipe", "get_recipe", "list_recipes", "parse_overrides", "recipe_for_preset"], "recipes"),
}

__all__ = [
    "HybridCriterion",
    "Recipe",
    "Stats",
    "TrainConfig",
    "TrainResult",
    "build_criterion",
    "build_optimizer",
    "evaluate",
    "get_recipe",
    "list_recipes",
    "parse_overrides",
    "recipe_for_preset",
    "train",
]

__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, globals())
