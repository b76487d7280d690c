"""Small trained models shared by test modules; each trains from its own seed and leaves the
global RNG as it was, so the result does not depend on which test asks first.

Modules that use :func:`trained_digits_b` keep it in a module-scoped fixture;
:func:`briefly_trained_cifar`, used across modules, is trained once per session and each
caller gets a copy (callers change its mode, dtype and BatchNorm statistics). Under
pytest-xdist each model is trained once per run, not once per worker (:func:`shared`).
"""

from __future__ import annotations

import copy
import functools
import random
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from filelock import FileLock

import irevnet
from irevnet.data import load_digits_split
from irevnet.training import TrainConfig, get_recipe, train

#: This run's folder shared by its pytest-xdist workers (set by conftest.py); None: one process.
SHARED: Path | None = None


def shared(name: str, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()``, or under pytest-xdist the model that the first worker to ask built, saved
    in ``SHARED`` and read back (:func:`irevnet.save_model`: configuration, weights and
    BatchNorm statistics, bit for bit). Every worker gets it from the file, in train mode."""
    if SHARED is None:
        return build()
    SHARED.mkdir(exist_ok=True)
    path = SHARED / f"{name}.pt"
    with FileLock(f"{path}.lock"):  # the other workers wait for the first one's file
        if not path.exists():
            irevnet.save_model(build(), path)
    with torch.random.fork_rng(devices=[]):  # building the module draws an initialization
        return irevnet.load_model(path)


def trained_digits_b(**recipe_overrides):
    """``(model in eval mode, digits test set)``: ``digits-b`` after 8 epochs of its recipe with
    ``recipe_overrides`` (e.g. ``nll_weight=1.0``: the hybrid objective), trained by
    :func:`irevnet.training.train` with seed 0 on the CPU, a few seconds. The global RNGs are
    left as they were."""
    name = "-".join(["digits-b", *(f"{k}={v}" for k, v in sorted(recipe_overrides.items()))])
    return shared(name, lambda: _train_digits_b(recipe_overrides)).eval(), load_digits_split()[1]


def _train_digits_b(recipe_overrides: dict) -> torch.nn.Module:
    recipe = get_recipe("digits-b").replace(epochs=8, **recipe_overrides)
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        with tempfile.TemporaryDirectory() as out:
            result = train(TrainConfig(preset="digits-b", data="digits", out=out, recipe=recipe, device="cpu",
                                       progress=False, eval_every=0))
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
    return result.model


def briefly_trained_cifar() -> torch.nn.Module:
    """``cifar10`` with blocks (2, 2, 2) after 30 aggressive SGD steps on noise, in train mode.

    Weights and BatchNorm statistics end far from the init and Φ⁻¹ ill-conditioned: the
    float32 error is 1e-4..3e-3 relative on [0, 1] noise over seeds 0..7, at 3-5x the floor
    (``benchmarks/inverse_conditioning.py``, which trains the same way); float64 stays exact.
    Seeded with 0; a copy of the session's one model.
    """
    return copy.deepcopy(_briefly_trained_cifar()).train()


@functools.cache
def _briefly_trained_cifar() -> torch.nn.Module:
    return shared("briefly-trained-cifar", _train_briefly)


def _train_briefly() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = irevnet.create_model("cifar10", blocks=(2, 2, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(30):
            x = torch.rand(16, 3, 32, 32)
            y = (x.mean(dim=(1, 2, 3)) * 20).long() % 10
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        opt.zero_grad()
    return model
