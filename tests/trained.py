"""Small trained models shared by test modules (each module caches its own in a fixture)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

import irevnet
from irevnet.data import load_digits_split
from irevnet.training import build_optimizer, get_recipe, train_epoch
from irevnet.training.optim import build_criterion


def trained_digits_b(**recipe_overrides):
    """``(model in eval mode, digits test set)``: ``digits-b`` after 8 epochs of its recipe with
    ``recipe_overrides`` (e.g. ``nll_weight=1.0``: the hybrid objective), seeded, a few seconds.
    The global RNG is left as it was."""
    train_set, test_set = load_digits_split()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = irevnet.create_model("digits-b")
        recipe = get_recipe("digits-b").replace(epochs=8, **recipe_overrides)
        criterion = build_criterion(recipe, model)
        loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True)
        opt, sched, _ = build_optimizer(model.parameters(), recipe, len(loader))
        for _ in range(recipe.epochs):
            train_epoch(model, loader, opt, scheduler=sched, progress=False, criterion=criterion)
        if hasattr(criterion, "remove"):  # the hybrid objective's hook on the head
            criterion.remove()
    return model.eval(), test_set
