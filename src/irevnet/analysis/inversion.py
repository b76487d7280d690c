"""Reconstruction x ≈ Φ⁻¹(Φ(x)) and interpolation x_t = Φ⁻¹(tΦ(x0) + (1-t)Φ(x1))."""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import IRevNet

__all__ = ["reconstruct", "interpolate", "pixel_interpolate", "pairs_of_different_classes"]


@torch.no_grad()
def reconstruct(model: IRevNet, x: Tensor, *, batch_size: int = 256) -> tuple[Tensor, Tensor, Tensor]:
    """Invert Φ on ``x`` (N, C, H, W) with the model in eval mode.

    Returns ``(x_hat, max_abs_error, relative_error)``; the errors are per image, shape (N,).
    """
    was_training = model.training
    model.eval()
    try:
        parts = [model.inverse(model.forward_features(xb)) for xb in x.split(batch_size)]
    finally:
        model.train(was_training)
    x_hat = torch.cat(parts)
    diff = (x_hat - x).flatten(1)
    return x_hat, diff.abs().amax(dim=1), diff.norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-30)


@torch.no_grad()
def interpolate(model: IRevNet, x0: Tensor, x1: Tensor, *, steps: int = 9) -> Tensor:
    """Images along the straight line between Φ(x0) and Φ(x1), mapped back by Φ⁻¹.

    ``x0, x1``: (N, C, H, W) pairs. Returns ``(N, steps, C, H, W)``; column ``k`` is
    ``Φ⁻¹(t Φ(x0) + (1 - t) Φ(x1))`` with ``t = 1 - k/(steps-1)``, so the row runs from
    ``x0`` to ``x1``.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    was_training = model.training
    model.eval()
    try:
        p0, p1 = model.forward_features(x0), model.forward_features(x1)
        ts = torch.linspace(1.0, 0.0, steps, dtype=p0.dtype, device=p0.device)
        cols = [model.inverse(t * p0 + (1 - t) * p1) for t in ts]
    finally:
        model.train(was_training)
    return torch.stack(cols, dim=1)


def pixel_interpolate(x0: Tensor, x1: Tensor, *, steps: int = 9) -> Tensor:
    """The pixel-space counterpart of :func:`interpolate`: ``t x0 + (1 - t) x1``, same layout.

    ``x0, x1``: (N, C, H, W). Returns ``(N, steps, C, H, W)`` with ``t = 1 - k/(steps-1)`` in column ``k``.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    ts = torch.linspace(1.0, 0.0, steps, dtype=x0.dtype, device=x0.device).view(1, steps, 1, 1, 1)
    return ts * x0.unsqueeze(1) + (1 - ts) * x1.unsqueeze(1)


def pairs_of_different_classes(y: Tensor, n: int) -> list[tuple[int, int]]:
    """``n`` index pairs ``(i, j)`` into ``y`` (labels, shape (N,)) with ``y[i] != y[j]``.

    Classes present in ``y`` are visited in turn, each paired with the class half-way
    round (0->5, 1->6, ... for ten classes); successive rounds take the next image of each
    class, wrapping around. Deterministic.
    """
    classes = torch.unique(y).tolist()
    if len(classes) < 2:
        raise ValueError("interpolation pairs need images of at least two classes")
    members = {c: (y == c).nonzero().flatten().tolist() for c in classes}
    pairs = []
    for k in range(n):
        a, b = classes[k % len(classes)], classes[(k + len(classes) // 2) % len(classes)]
        r = k // len(classes)
        pairs.append((members[a][r % len(members[a])], members[b][r % len(members[b])]))
    return pairs
