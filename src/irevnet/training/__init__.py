"""Training: the optimizer step and epoch loops, named recipes, and the resumable trainer of ``irevnet train``.

``trainer`` runs the loop; the modules around it each do one job: ``run_dir`` (the run
folder), ``state`` (RNG and position), ``distributed`` (torchrun collectives), ``device``
(device and AMP), ``data_loading`` (data order and workers), ``preemption`` (stop signals),
``optim`` (optimizer, schedule, loss), ``ema`` (weight averaging).

Names are imported on first use (PEP 562): :mod:`.recipes` is plain Python, so the
command line can list recipes without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .hybrid import HybridCriterion
    from .loop import EpochStats, evaluate, train_epoch
    from .optim import build_criterion, build_optimizer
    from .recipes import Recipe, get_recipe, list_recipes, parse_overrides, recipe_for_preset

_MODULE_OF = {
    "HybridCriterion": "hybrid",
    **dict.fromkeys(["EpochStats", "evaluate", "train_epoch"], "loop"),
    **dict.fromkeys(["build_criterion", "build_optimizer"], "optim"),
    **dict.fromkeys(["Recipe", "get_recipe", "list_recipes", "parse_overrides", "recipe_for_preset"], "recipes"),
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, globals())
