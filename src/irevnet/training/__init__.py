"""Training and evaluation loops, and the named recipes."""

from .loop import EpochStats, evaluate, train_epoch
from .recipes import Recipe, build_optimizer, get_recipe, list_recipes, parse_overrides, recipe_for_preset

__all__ = [
    "EpochStats", "Recipe", "build_optimizer", "evaluate", "get_recipe", "list_recipes", "parse_overrides",
    "recipe_for_preset", "train_epoch",
]
