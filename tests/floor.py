"""Reconstruction bounds relative to the conditioning floor, for tests in any numeric regime.

A fixed float32 bound on ``Φ⁻¹(Φ(x)) - x`` only holds where the trained function happens to be
well conditioned, and the figure then varies with the CPU's kernels (AVX2/AVX-512) and thread
count. The floor does not: it is the relative error of the *exact* (float64) inverse applied
to Φ(x) merely rounded to float32 (:func:`irevnet.analysis.conditioning_floor`), i.e. what
representing Φ in float32 costs whatever the algorithm.

Our float32 computation rounds in every one of the L blocks of the forward and again in the
inverse; those roundings are independent and add up like a random walk, so our error is
about sqrt(L) times the floor. Measured ratios (error / floor), Intel AVX-512 CPU:
2.9-4.8 over seeds 0..7 of ``test_inverse_exact_after_training_steps`` with 1 and 2 threads
(L = 6, errors 9e-5..1.3e-2; 3-6 on an AMD EPYC CPU per issue 10;
``benchmarks/inverse_conditioning.py``), 2.9 on the trained
digits model of ``test_injective_fix.py`` (L = 4); at initialization in train mode 6.4
(digits, L = 8), 9.6-10.4 (cifar, L = 54), 10.5 (imagenet-b at 64x64, L = 100), i.e.
ratio / sqrt(L) <= 2.3 everywhere. :func:`floor_factor` allows 5 sqrt(L): at least 2x over
every measured ratio. An error beyond it loses precision that the conditioning of the
function does not explain, which is a defect.

Float64 has no float64 reference to round, but the floor is first order in the size of the
perturbation: scaling the float32 floor by the ratio of unit roundoffs, 2^-53 / 2^-24,
predicts the float64 floor, and the same factor bounds our float64 error (measured ratios
1.4-13.8 at initialization, the same sqrt(L) growth).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor

from irevnet.analysis import conditioning_floor

FLOAT64_PER_FLOAT32_ROUNDOFF = 2.0**-29


def floor_factor(model: torch.nn.Module) -> float:
    """How far above the floor a correct reconstruction may be: 5 sqrt(depth) (see the module docstring)."""
    return 5.0 * math.sqrt(model.depth)


def relative_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| over the whole batch, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def floor_of_batch(model: torch.nn.Module, x: Tensor) -> float:
    """The conditioning floor of the batch ``x`` (relative L2 over the batch), model in its current mode."""
    per_image = conditioning_floor(model, x)
    norms = x.double().flatten(1).norm(dim=1)
    return ((per_image * norms).square().sum().sqrt() / norms.square().sum().sqrt()).item()


@torch.no_grad()
def reconstruction_and_floor(model: torch.nn.Module, x: Tensor) -> tuple[float, float]:
    """``(relative error of inverse(forward_features(x)) in the model's dtype, float32 floor)``.

    For a float64 model the floor is the float32 one scaled by
    :data:`FLOAT64_PER_FLOAT32_ROUNDOFF` (see the module docstring). Uses the model's
    current mode; a train-mode forward updates BatchNorm statistics, as any forward does.
    """
    dtype = next(model.parameters()).dtype
    probe = model if dtype == torch.float32 else _float32_copy(model)
    floor = floor_of_batch(probe, x.float())
    if dtype == torch.float64:
        floor *= FLOAT64_PER_FLOAT32_ROUNDOFF
    x = x.to(dtype)
    return relative_error(model.inverse(model.forward_features(x)), x), floor


def _float32_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).float()


def assert_at_floor(model: torch.nn.Module, x: Tensor) -> tuple[float, float]:
    """Assert the reconstruction error is within :func:`floor_factor` of the floor; returns ``(error, floor)``."""
    err, floor = reconstruction_and_floor(model, x)
    factor = floor_factor(model)
    assert err <= factor * floor, f"error {err:.3g} is {err / floor:.1f}x the conditioning floor {floor:.3g}"
    return err, floor

