"""Edits in Φ: change one part of a representation, invert, and see what that part encodes.

Because Φ_j⁻¹ is exact, the image ``Φ_j⁻¹(edit(Φ_j(x)))`` shows exactly what an edit of the
representation after block ``j`` means in pixels. Three kinds of edit:

- *spatial swap*: give ``Φ(x_a)`` the entries of ``Φ(x_b)`` in one spatial region (all
  channels), a quadrant of the ``H/f × W/f`` grid;
- *channel swap*: give ``Φ(x_a)`` one group of ``Φ(x_b)``'s channels (by default the two
  halves of the final pair, the coupling's ``x1`` and ``x2``);
- *zeroing*: set one channel group of the representation after the last block of a stage
  to 0 (:meth:`IRevNet.forward_intermediates`) and invert from there
  (:meth:`IRevNet.inverse` with ``depth``).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..model import IRevNet
from ..modes import eval_mode

__all__ = ["edit_and_invert", "quadrants", "representation_edits", "stage_ends"]

Edit = Callable[[Tensor], Tensor]


@torch.no_grad()
def edit_and_invert(model: IRevNet, x: Tensor, edit: Edit, *, depth: int | None = None) -> Tensor:
    """``Φ_j⁻¹(edit(Φ_j(x)))`` in eval mode, with ``j = depth`` (default: the last block).

    ``edit`` maps the ``(N, C_j, H_j, W_j)`` representation after block ``j`` to one of the
    same shape (it may modify its argument). The model is left in the mode it was in.
    """
    depth = model.depth if depth is None else depth
    if not 1 <= depth <= model.depth:
        raise ValueError(f"depth must be in [1, {model.depth}], got {depth}")
    with eval_mode(model):
        z = model.forward_intermediates(x, [depth - 1], intermediates_only=True)[0]
        return model.inverse(edit(z.clone()), depth=depth)


def quadrants(height: int, width: int) -> dict[str, tuple[slice, slice]]:
    """The four spatial quadrants of an ``height × width`` grid (the first ones take the odd row/column)."""
    h, w = (height + 1) // 2, (width + 1) // 2
    rows, cols = {"top": slice(0, h), "bottom": slice(h, height)}, {"left": slice(0, w), "right": slice(w, width)}
    return {
        f"{r}-{c}": (rows[r], cols[c])
        for r in rows
        for c in cols
        if rows[r].stop > rows[r].start and cols[c].stop > cols[c].start
    }


def stage_ends(model: IRevNet) -> list[int]:
    """1-based block number of the last block of each stage (the configuration's ``stage_ends``, counted from 1)."""
    return [j + 1 for j in model.config.stage_ends]


def _channel_groups(channels: int, groups: int) -> list[slice]:
    bounds = [round(k * channels / groups) for k in range(groups + 1)]
    return [slice(a, b) for a, b in pairwise(bounds) if b > a]


@torch.no_grad()
def representation_edits(
    model: IRevNet, x_a: Tensor, x_b: Tensor, *, channel_groups: int = 2, progress: bool = False
) -> dict[str, Any]:
    """Every edit of the module docstring on the pairs ``(x_a, x_b)`` ``(N, C, H, W)``.

    Returns ``{"images": {name: (N, C, H, W) tensor}, "change": {name: [float] * N}, "kind":
    {name: "spatial" | "channels" | "zero"}}``. For swaps, ``change`` is the share of the
    pixel difference that the edit carries over, ``‖x_edit − x_a‖ / ‖x_b − x_a‖``; for
    zeroing, the relative change of the image, ``‖x_edit − x_a‖ / ‖x_a‖``. Names:
    ``"top-left ← x_b"`` (a quadrant of Φ), ``"channels 1/2 ← x_b"`` (a channel group of Φ),
    ``"block j: zero 1/2"`` (a channel group after block ``j`` zeroed).

    On an injective model an edit generally leaves the subspace that Φ maps onto, and Φ⁻¹
    (which drops the padded channels) is then only a left inverse: the image is not an exact
    preimage of the edited representation. ``progress`` shows a bar over the edits (one inverse each).
    """
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if channel_groups < 1:
        raise ValueError(f"channel_groups must be >= 1, got {channel_groups}")
    with eval_mode(model):
        phi_b = model.forward_features(x_b)
    edits: list[tuple[str, str, Edit, int | None]] = []  # (name, kind, edit, depth), inverted below

    for label, (rows, cols) in quadrants(*phi_b.shape[2:]).items():

        def swap_region(z: Tensor, rows: slice = rows, cols: slice = cols) -> Tensor:
            z[:, :, rows, cols] = phi_b[:, :, rows, cols]
            return z

        edits.append((f"{label} ← x_b", "spatial", swap_region, None))
    groups = _channel_groups(phi_b.shape[1], channel_groups)
    for k, sl in enumerate(groups):

        def swap_group(z: Tensor, sl: slice = sl) -> Tensor:
            z[:, sl] = phi_b[:, sl]
            return z

        edits.append((f"channels {k + 1}/{len(groups)} ← x_b", "channels", swap_group, None))
    shapes = model.block_output_shapes((x_a.shape[-2], x_a.shape[-1]))
    for j in stage_ends(model):
        for k, sl in enumerate(_channel_groups(shapes[j - 1][0], channel_groups)):

            def zero_group(z: Tensor, sl: slice = sl) -> Tensor:
                z[:, sl] = 0
                return z

            edits.append((f"block {j}: zero {k + 1}/{channel_groups}", "zero", zero_group, j))
    images: dict[str, Tensor] = {}
    kind: dict[str, str] = {}
    for name, what, edit, depth in tqdm(edits, desc="edits", unit="edit", disable=not progress, leave=False):
        images[name], kind[name] = edit_and_invert(model, x_a, edit, depth=depth), what
    d_ab = (x_b - x_a).flatten(1).norm(dim=1).clamp_min(1e-30)
    n_a = x_a.flatten(1).norm(dim=1).clamp_min(1e-30)
    change = {
        name: ((img - x_a).flatten(1).norm(dim=1) / (n_a if kind[name] == "zero" else d_ab)).tolist()
        for name, img in images.items()
    }
    return {"images": images, "change": change, "kind": kind}
