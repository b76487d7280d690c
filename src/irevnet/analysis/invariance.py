"""Metamers (Jacobsen et al., "Excessive Invariance Causes Adversarial Vulnerability", ICLR 2019).

The head of an i-RevNet, ``BN → ReLU → spatial mean → linear``, sees Φ only through the
per-channel statistic ``h_c(Φ) = mean_s ReLU(BN_c(Φ_{c,s}))``. A metamer of ``x_a`` built
from ``x_b`` is the input whose representation has ``x_a``'s statistics ``h(Φ(x_a))`` and
is otherwise as close as possible to ``Φ(x_b)``:

    Φ_m = argmin ‖Φ − Φ(x_b)‖  subject to  h(Φ) = h(Φ(x_a)),     x_m = Φ⁻¹(Φ_m).

The classifier cannot tell ``x_m`` from ``x_a`` (same logits), yet everything it discards is
taken from ``x_b``. Nearest in Φ is not nearest in pixels, so :func:`metamers` first searches
in pixel space for an image near ``x_b`` with about ``x_a``'s statistics, then applies the
exact projection to its Φ. Only a bijective Φ can be inverted at an arbitrary ``Φ_m``; an injective
model's Φ lives on a subspace that ``Φ_m`` generally leaves.

The projection decouples over channels (the constraint of channel ``c`` involves only its
``S = H·W`` entries, and the eval-mode BatchNorm is an affine map per channel), and each
channel's problem is solved exactly: see :func:`impose_head_statistics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..model import ClassifierHead, IRevNet
from ..modes import eval_mode
from ..precision import full_float32

__all__ = ["head_statistics", "impose_head_statistics", "metamer_report", "metamers"]


def _bn_affine(head: ClassifierHead, like: Tensor) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm of the head as ``scale * φ + shift`` per channel, shapes ``(C, 1)``."""
    bn = head.norm
    if bn is None:
        raise ValueError("the head has no BatchNorm (norm=False, e.g. after pruning): its statistics are undefined")
    c = like.shape[1]
    mean = bn.running_mean if bn.running_mean is not None else like.new_zeros(c)
    var = bn.running_var if bn.running_var is not None else like.new_ones(c)
    weight = bn.weight if bn.weight is not None else like.new_ones(c)
    bias = bn.bias if bn.bias is not None else like.new_zeros(c)
    scale = weight.to(like) / torch.sqrt(var.to(like) + bn.eps)
    return scale.view(c, 1), (bias.to(like) - mean.to(like) * scale).view(c, 1)


@torch.no_grad()
def head_statistics(head: ClassifierHead, phi: Tensor) -> Tensor:
    """What the head keeps of Φ: ``mean_s ReLU(BN(Φ))`` per channel with eval-mode BatchNorm, ``(N, C)``."""
    scale, shift = _bn_affine(head, phi)
    return torch.relu(phi.flatten(2) * scale + shift).mean(dim=2)


@torch.no_grad()
def impose_head_statistics(head: ClassifierHead, phi_b: Tensor, phi_a: Tensor) -> Tensor:
    """The representation closest to ``phi_b`` (ℓ2) whose :func:`head_statistics` equal ``phi_a``'s.

    ``phi_a, phi_b``: ``(N, C, H, W)``; returns ``(N, C, H, W)`` in their dtype (computed in
    float64). Per channel, in BatchNorm coordinates ``a_s = BN(φ_s)`` with target sum
    ``T = Σ_s ReLU(BN(φ_a,s))``: the minimizer adds one common shift ``σ`` to the ``m``
    largest entries (which stay positive) and clamps every other positive entry to 0
    (negative entries, invisible to the head, are kept). For each ``m`` the sum constraint
    fixes ``σ_m = (T − Σ_{i≤m} a_(i)) / m``; the cheapest feasible ``m`` wins (``m = 0`` when
    ``T = 0``). Entries the projection does not need are returned bit for bit. Channels the
    head ignores (BatchNorm weight 0) are kept as they are.
    """
    if phi_a.shape != phi_b.shape:
        raise ValueError(f"phi_a and phi_b must have the same shape, got {tuple(phi_a.shape)} and {tuple(phi_b.shape)}")
    n, c, h, w = phi_b.shape
    pa, pb = phi_a.double().flatten(2), phi_b.double().flatten(2)  # (N, C, S)
    scale, shift = _bn_affine(head, pb)
    target = torch.relu(pa * scale + shift).sum(dim=2, keepdim=True)  # (N, C, 1)
    a = pb * scale + shift
    a_sorted, order = a.sort(dim=2, descending=True)
    positive_sq = torch.relu(a_sorted).square()
    # tail[..., m] = Σ_{i≥m} ReLU(a_(i))²: the cost of clamping everything after the top m.
    tail = torch.cat([positive_sq.flip(2).cumsum(2).flip(2), positive_sq.new_zeros(n, c, 1)], dim=2)
    m = torch.arange(1, h * w + 1, dtype=a.dtype, device=a.device)
    shift_m = (target - a_sorted.cumsum(2)) / m  # (N, C, S): σ_m for the top m = 1..S
    feasible = a_sorted + shift_m > 0  # the m-th largest stays positive after the shift
    cost = torch.where(feasible, m * shift_m.square() + tail[..., 1:], torch.inf)
    # m = 0: every positive entry clamped to 0, feasible only for a zero target.
    cost0 = torch.where(target <= 0, tail[..., :1], torch.inf)
    best = torch.cat([cost0, cost], dim=2).argmin(dim=2, keepdim=True)  # (N, C, 1), 0..S
    sigma = shift_m.gather(2, (best - 1).clamp_min(0)).masked_fill(best == 0, 0.0)
    rank = torch.arange(h * w, device=a.device).view(1, 1, -1)
    new_sorted = torch.where(rank < best, a_sorted + sigma, a_sorted.clamp_max(0.0))
    delta = torch.empty_like(a).scatter_(2, order, new_sorted - a_sorted)
    # Channels whose statistic is already on target stay bit for bit (σ would be rounding noise).
    ignored = (scale == 0).view(1, c, 1) | (target == torch.relu(a).sum(dim=2, keepdim=True))
    delta = torch.where(ignored, 0.0, delta / torch.where(scale == 0, 1.0, scale))
    # delta is exactly 0 where nothing changes, so those entries come back bit for bit.
    return (pb + delta).view(n, c, h, w).to(phi_b.dtype)


def _pixel_search(
    model: IRevNet,
    x_a: Tensor,
    x_b: Tensor,
    *,
    steps: int,
    penalty: float,
    lr: float,
    on_step: Callable[[], Any] = lambda: None,
) -> Tensor:
    """Adam from ``x_a`` on ``‖x − x_b‖² + penalty · ‖h(Φ(x)) − h(Φ(x_a))‖²`` (per pair, summed; eval mode);
    ``on_step`` is called after each step."""
    with torch.no_grad():
        target = head_statistics(model.head, model.forward_features(x_a))
    scale, shift = _bn_affine(model.head, target.new_empty(1, target.shape[1]))
    x = x_a.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            stats = torch.relu(model.forward_features(x).flatten(2) * scale + shift).mean(dim=2)
            loss = (x - x_b).square().sum() + penalty * (stats - target).square().sum()
            (grad,) = torch.autograd.grad(loss, x)  # the model's .grad fields stay untouched
        x.grad = grad
        opt.step()
        on_step()
    return x.detach()


@torch.no_grad()
def metamers(
    model: IRevNet,
    x_a: Tensor,
    x_b: Tensor,
    *,
    steps: int = 600,
    penalty: float = 30.0,
    lr: float = 0.02,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """Inputs the classifier cannot tell from ``x_a`` that look like ``x_b`` (what the head discards).

    ``x_a, x_b``: ``(N, C, H, W)`` pairs. Two steps:

    1. *Search in pixels* (``steps > 0``): the nearest point to ``Φ(x_b)`` in Φ is not the
       nearest in pixels (Φ⁻¹ of a trained model stretches some directions of Φ many
       times), so Adam (``lr``) first walks from ``x_a`` towards ``x_b`` with the head's
       statistics held near ``x_a``'s by a quadratic ``penalty`` (pixel units: set for
       images in [0, 1]), giving ``x̃``.
    2. *Exact projection*: ``Φ_m`` = :func:`impose_head_statistics` of ``Φ(x̃)`` (``Φ(x_b)``
       when ``steps == 0``) with ``x_a``'s statistics, and ``x_m = Φ⁻¹(Φ_m)``.

    Step 2 makes the eval-mode logits of ``x_m`` equal those of ``x_a`` up to the rounding
    of one inverse and one forward, whatever step 1 found. The model runs in eval mode
    and is left in the mode it was in; its parameters and gradients are not touched.
    ``progress`` shows a bar over the search steps of all batches.

    Raises ValueError for an injective model (its Φ⁻¹ is defined only on the image of Φ,
    a subspace that ``Φ_m`` generally leaves) and for pairs of different shapes.
    """
    if model.injective:
        raise ValueError(
            f"metamers need a bijective model: {model.config.name!r} is injective, so its Φ⁻¹ is defined only "
            "on the zero-padded subspace that Φ maps onto, and a representation with imposed head statistics "
            "generally leaves it (use a bijective preset such as 'digits-b' or 'imagenet-b')"
        )
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    if steps < 0 or penalty <= 0 or lr <= 0:
        raise ValueError(f"need steps >= 0, penalty > 0 and lr > 0, got {steps}, {penalty}, {lr}")
    parts = []
    with (
        eval_mode(model),
        tqdm(
            total=steps * -(-len(x_a) // batch_size), desc="metamers", unit="step", disable=not progress, leave=False
        ) as bar,
    ):
        for xa, xb in zip(x_a.split(batch_size), x_b.split(batch_size), strict=True):
            start = (
                _pixel_search(model, xa, xb, steps=steps, penalty=penalty, lr=lr, on_step=bar.update) if steps else xb
            )
            phi_m = impose_head_statistics(model.head, model.forward_features(start), model.forward_features(xa))
            parts.append(model.inverse(phi_m))
    return torch.cat(parts)


@torch.no_grad()
def metamer_report(
    model: IRevNet, x_a: Tensor, x_b: Tensor, *, batch_size: int = 256, **kwargs: Any
) -> tuple[Tensor, dict[str, Any]]:
    """:func:`metamers` of ``(x_a, x_b)`` pairs (``kwargs`` go to it) and how well they work: ``(x_m, numbers)``.

    The numbers (lists over the ``N`` pairs, eval mode) are ``logit_relative_error``
    ``‖z(x_m) − z(x_a)‖ / ‖z(x_a)‖``, the predicted classes ``pred_a``, ``pred_b``,
    ``pred_m``, and the pixel ℓ2 distances ``distance_to_a`` ``‖x_m − x_a‖``,
    ``distance_to_b`` ``‖x_m − x_b‖`` and ``distance_a_b``; plus the summaries
    ``max_logit_relative_error``, ``same_prediction_as_a`` (fraction),
    ``closer_to_b`` (fraction of pairs with ``‖x_m − x_b‖ < ‖x_m − x_a‖``) and the mean distances.
    """
    x_m = metamers(model, x_a, x_b, batch_size=batch_size, **kwargs)
    with eval_mode(model), full_float32():  # a measurement: IEEE float32, like the analyses' Φ and Φ⁻¹
        z_a, z_b, z_m = (torch.cat([model(v) for v in x.split(batch_size)]) for x in (x_a, x_b, x_m))
    rel = (z_m - z_a).norm(dim=1) / z_a.norm(dim=1).clamp_min(1e-30)
    d_a, d_b, d_ab = ((u - v).flatten(1).norm(dim=1) for u, v in ((x_m, x_a), (x_m, x_b), (x_a, x_b)))
    pred_a, pred_b, pred_m = (z.argmax(dim=1) for z in (z_a, z_b, z_m))
    numbers = {
        "pairs": len(x_a),
        "max_logit_relative_error": float(rel.max()),
        "same_prediction_as_a": float((pred_m == pred_a).double().mean()),
        "closer_to_b": float((d_b < d_a).double().mean()),
        "mean_distance_to_a": float(d_a.mean()),
        "mean_distance_to_b": float(d_b.mean()),
        "mean_distance_a_b": float(d_ab.mean()),
        "logit_relative_error": rel.tolist(),
        "pred_a": pred_a.tolist(),
        "pred_b": pred_b.tolist(),
        "pred_m": pred_m.tolist(),
        "distance_to_a": d_a.tolist(),
        "distance_to_b": d_b.tolist(),
        "distance_a_b": d_ab.tolist(),
    }
    return x_m, numbers
