"""Training: recipes (hyper-parameters), the epoch loop and the resumable trainer.

Names are imported on first use (PEP 562): :mod:`.recipes` is plain Python, so the
command line can list recipes without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .hybrid import HybridCriterion
    from .loop import EpochStats, evaluate, train_epoch
    from .recipes import Recipe, build_optimizer, get_recipe, list_recipes, parse_overrides, recipe_for_preset

_MODULE_OF = {
    "HybridCriterion": "hybrid",
    **dict.fromkeys(["EpochStats", "evaluate", "train_epoch"], "loop"),
    **dict.fromkeys(["Recipe", "build_optimizer", "get_recipe", "list_recipes", "parse_overrides",
                     "recipe_for_preset"], "recipes"),
}

__all__ = sorted(_MODULE_OF)

__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, globals())
