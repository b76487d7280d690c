"""Reconstruction x ≈ Φ⁻¹(Φ(x)) and interpolation x_t = Φ⁻¹(tΦ(x0) + (1-t)Φ(x1))."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..model import IRevNet
from ..modes import eval_mode
from ..precision import full_float32

__all__ = [
    "Reconstruction",
    "conditioning_floor",
    "interpolate",
    "interpolation_errors",
    "pairs_of_different_classes",
    "pixel_interpolate",
    "reconstruct",
    "reconstruct_batches",
]


class Reconstruction(NamedTuple):
    """What :func:`reconstruct` measured; errors are per image, shape (N,).

    ``floor_relative_error`` is the relative error of the *exact* (float64) inverse applied
    to Φ(x) merely rounded to the model's dtype: what the conditioning of Φ⁻¹ alone costs,
    whatever the algorithm. A ``relative_error`` within a small factor of it is intrinsic
    to the trained function, not a defect of the inverse. ``None`` for a float64
    reconstruction (float64 is the reference).
    """

    x_hat: Tensor
    max_abs_error: Tensor
    relative_error: Tensor
    floor_relative_error: Tensor | None


def _errors(x_hat: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image ``(max abs, relative L2)`` error of ``x_hat`` against ``x``, computed in float64."""
    diff = (x_hat.double() - x.double()).flatten(1)
    return diff.abs().amax(dim=1), diff.norm(dim=1) / x.double().flatten(1).norm(dim=1).clamp_min(1e-300)


@contextmanager
def _exact_eval(model: IRevNet) -> Iterator[None]:
    """The model in eval mode and in full float32, even if it opted out (``set_full_float32(False)``)."""
    with eval_mode(model), full_float32():
        yield


def _exact_inverse_of_rounded_phi(model64: IRevNet, x: Tensor, dtype: torch.dtype) -> Tensor:
    """Φ⁻¹(round_dtype(Φ(x))), everything else in float64 (``model64`` is a float64 copy)."""
    phi = model64.forward_features(x.double())
    return model64.inverse(phi.to(dtype).double())


def copy_in_dtype(model: IRevNet, dtype: torch.dtype) -> IRevNet:
    """A copy of ``model`` with its floating-point tensors in ``dtype`` (BatchNorm statistics and mode
    included; ``model`` is untouched).

    Each tensor is copied once, straight to ``dtype``: ``deepcopy`` and then ``.to(dtype)`` would
    copy it twice (for float64, 3x the float32 model in transient memory, 2 s on an ImageNet preset).
    """
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            converted = t.detach().to(dtype, copy=True)
            memo[id(t)] = nn.Parameter(converted, t.requires_grad) if isinstance(t, nn.Parameter) else converted
    return copy.deepcopy(model, memo).to(dtype)


def float64_copy(model: IRevNet) -> IRevNet:
    """An eager float64 copy of ``model`` (:func:`copy_in_dtype`). Eager: the reference needs no speed,
    and compiled blocks would recompile for float64."""
    return copy_in_dtype(model, torch.float64).compile_blocks(False)


def _dtype_of(model: IRevNet) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def conditioning_floor(model: IRevNet, x: Tensor) -> Tensor:
    """Per-image relative error (N,) of the exact inverse of Φ(x) rounded to the model's dtype.

    ``x``: (N, C, H, W). Φ and Φ⁻¹ are evaluated in float64 on a copy of ``model`` in its
    current mode (train-mode BatchNorm uses the batch statistics of ``x``, as one call of
    the model would); only Φ is rounded. No algorithm working in the model's dtype can be
    expected to beat this floor: it is the error that representing Φ alone causes. The
    model and its buffers are left untouched.
    """
    model64 = float64_copy(model)
    return _errors(_exact_inverse_of_rounded_phi(model64, x, _dtype_of(model)), x)[1]


@torch.no_grad()
def reconstruct(
    model: IRevNet,
    x: Tensor,
    *,
    batch_size: int = 256,
    float64: bool = False,
    floor: bool = True,
    to_pixels: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
) -> Reconstruction:
    """Invert Φ on ``x`` (N, C, H, W) with the model in eval mode, in full float32 (no TF32).

    Returns a :class:`Reconstruction`: ``x_hat`` (N, C, H, W) in the model's dtype (float64
    with ``float64=True``, computed on a float64 copy; the model is not changed), its
    per-image max abs and relative errors and, with ``floor=True`` (the default), the
    conditioning floor of each image (see :func:`conditioning_floor`; costs one float64
    forward and inverse). ``to_pixels`` maps inputs and reconstructions before the errors
    are measured (e.g. undoing a normalization, to report errors in pixel units). ``progress``
    shows a bar over the batches (large models take seconds per image on a CPU).
    """
    batches = tqdm(x.split(batch_size), desc="reconstruct", unit="batch", disable=not progress, leave=False)
    parts = list(reconstruct_batches(model, batches, float64=float64, floor=floor, to_pixels=to_pixels))
    floors = [r.floor_relative_error for r in parts if r.floor_relative_error is not None]
    return Reconstruction(
        torch.cat([r.x_hat for r in parts]),
        torch.cat([r.max_abs_error for r in parts]),
        torch.cat([r.relative_error for r in parts]),
        torch.cat(floors) if len(floors) == len(parts) else None,
    )


def reconstruct_batches(
    model: IRevNet,
    batches: Iterable[Tensor],
    *,
    float64: bool = False,
    floor: bool = True,
    to_pixels: Callable[[Tensor], Tensor] | None = None,
    floor_images: int | None = None,
) -> Iterator[Reconstruction]:
    """:func:`reconstruct` of each (N, C, H, W) tensor of ``batches``, lazily; the float64 copy is made once.

    ``floor_images``: the floor of the first that many images only (None: all), since its float64
    passes cost several times the reconstruction on a CPU; a batch's ``floor_relative_error`` then
    covers its leading images (``None`` once the count is reached). Between batches the model,
    grad mode and precision flags are the caller's.
    """
    dtype = _dtype_of(model)
    float64 = float64 or dtype == torch.float64
    model64 = float64_copy(model).eval() if float64 or (floor and floor_images != 0) else None
    measure = to_pixels or (lambda t: t)
    floor_left = math.inf if floor_images is None else floor_images
    for xb in batches:
        with torch.no_grad(), _exact_eval(model):
            ref = measure(xb.double())
            if float64:
                assert model64 is not None
                x_hat = model64.inverse(model64.forward_features(xb.double()))
                rec = Reconstruction(x_hat, *_errors(measure(x_hat), ref), None)
            else:
                xb = xb.to(dtype)
                x_hat = model.inverse(model.forward_features(xb))
                floor_error = None
                if model64 is not None and floor_left > 0:
                    k = int(min(floor_left, len(xb)))
                    floor_error = _errors(measure(_exact_inverse_of_rounded_phi(model64, xb[:k], dtype)), ref[:k])[1]
                    floor_left -= k
                rec = Reconstruction(x_hat, *_errors(measure(x_hat.double()), ref), floor_error)
        yield rec


@torch.no_grad()
def interpolate(model: IRevNet, x0: Tensor, x1: Tensor, *, steps: int = 9, progress: bool = False) -> Tensor:
    """Images along the straight line between Φ(x0) and Φ(x1), mapped back by Φ⁻¹.

    ``x0, x1``: (N, C, H, W) pairs. Returns ``(N, steps, C, H, W)``; column ``k`` is
    ``Φ⁻¹(t Φ(x0) + (1 - t) Φ(x1))`` with ``t = 1 - k/(steps-1)``, so the row runs from
    ``x0`` to ``x1``. ``progress`` shows a bar over the steps (one inverse of the N pairs each).
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    with _exact_eval(model):
        p0, p1 = model.forward_features(x0), model.forward_features(x1)
        ts = torch.linspace(1.0, 0.0, steps, dtype=p0.dtype, device=p0.device)
        cols = [
            model.inverse(t * p0 + (1 - t) * p1)
            for t in tqdm(ts, desc="interpolate", unit="step", disable=not progress, leave=False)
        ]
    return torch.stack(cols, dim=1)


def pixel_interpolate(x0: Tensor, x1: Tensor, *, steps: int = 9) -> Tensor:
    """The pixel-space counterpart of :func:`interpolate`: ``t x0 + (1 - t) x1``, same layout.

    ``x0, x1``: (N, C, H, W). Returns ``(N, steps, C, H, W)`` with ``t = 1 - k/(steps-1)`` in column ``k``.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    ts = torch.linspace(1.0, 0.0, steps, dtype=x0.dtype, device=x0.device).view(1, steps, 1, 1, 1)
    return ts * x0.unsqueeze(1) + (1 - ts) * x1.unsqueeze(1)


def interpolation_errors(in_phi: Tensor, in_pixels: Tensor) -> dict[str, Any]:
    """How interpolations in Φ compare with the pixel-space line, as JSON-ready numbers.

    ``in_phi``, ``in_pixels``: ``(N, steps, C, H, W)`` in the same units (e.g. pixel values),
    from :func:`interpolate` and :func:`pixel_interpolate`. Returns ``{"t": [...],
    "mean_abs_difference_from_pixel_path": [...] (one per t, averaged over the pairs and
    entries; 0 at both ends up to the reconstruction error), "endpoint_max_abs_error"}``:
    the largest error of the two ends, where the Φ path is Φ⁻¹(Φ(x)).
    """
    steps = in_phi.shape[1]
    gap = (in_phi - in_pixels).abs().flatten(2).mean(dim=(0, 2))
    endpoints = (in_phi[:, [0, -1]] - in_pixels[:, [0, -1]]).abs().max()
    return {
        "t": torch.linspace(1, 0, steps).tolist(),
        "mean_abs_difference_from_pixel_path": gap.tolist(),
        "endpoint_max_abs_error": float(endpoints),
    }


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
