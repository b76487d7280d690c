"""Out-of-distribution detection with exact densities (Nalisnick et al., "Hybrid Models with
Deep and Invertible Features", ICML 2019).

A bijective i-RevNet gives every input an exact log-density ``log p(x) = log N(Φ(x); 0, I)``
(:meth:`IRevNet.log_prob`). A model of the data should give its test images higher density
than images from elsewhere; the AUROC of ``log p(x)`` between test images and shifted,
noised and contrast-inverted copies of them measures how well it does (0.5: chance, 1: every
test image above every shifted one). A classifier trained on cross-entropy alone has no
reason to put its data where the Gaussian is dense; the hybrid objective (cross-entropy +
``nll_weight`` × NLL per dimension, the recipe field) makes it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..model import IRevNet
from ..modes import eval_mode

__all__ = ["OOD_SHIFTS", "auroc", "log_prob_per_dim", "ood_detection", "shifted_copies"]

#: The distribution shifts of :func:`shifted_copies`, in order.
OOD_SHIFTS = ("shifted", "noised", "inverted")


def shifted_copies(x: Tensor, *, noise: float = 0.2, seed: int = 0) -> dict[str, Tensor]:
    """Out-of-distribution versions of the images ``x`` ``(N, C, H, W)``, by name.

    With ``lo, hi`` the smallest and largest value of ``x``:
    ``shifted``: translated down and right by a quarter of the height/width (at least one
    pixel), filled with ``lo``; ``noised``: plus Gaussian noise of standard deviation
    ``noise * (hi - lo)`` (drawn from ``seed``, the global RNG untouched), clipped to
    ``[lo, hi]``; ``inverted``: contrast inverted, ``lo + hi - x``.
    """
    if not (math.isfinite(noise) and noise > 0):
        raise ValueError(f"noise must be a finite number > 0, got {noise}")
    lo, hi = float(x.min()), float(x.max())
    dy, dx = max(x.shape[2] // 4, 1), max(x.shape[3] // 4, 1)
    shifted = torch.full_like(x, lo)
    shifted[:, :, dy:, dx:] = x[:, :, : x.shape[2] - dy, : x.shape[3] - dx]
    g = torch.Generator(device="cpu").manual_seed(seed)
    eps = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    noised = (x + noise * (hi - lo) * eps).clamp(lo, hi)
    return {"shifted": shifted, "noised": noised, "inverted": lo + hi - x}


@torch.no_grad()
def log_prob_per_dim(
    model: IRevNet, x: Tensor, *, batch_size: int = 256, progress: bool = False, desc: str = "log p(x)"
) -> Tensor:
    """Eval-mode ``log p(x) / D`` in nats per dimension, ``(N,)`` (``D = C·H·W``); mode restored.
    ``progress`` shows a bar over the batches (titled ``desc``)."""
    with eval_mode(model):
        batches = tqdm(x.split(batch_size), desc=desc, unit="batch", disable=not progress, leave=False)
        logp = torch.cat([model.log_prob(xb) for xb in batches])
    return logp / math.prod(x.shape[1:])


def auroc(positive: np.ndarray | Tensor, negative: np.ndarray | Tensor) -> float:
    """Area under the ROC curve of scores meant to be higher for ``positive`` than for ``negative``:
    the probability that a random positive scores above a random negative (ties count half)."""
    from sklearn.metrics import roc_auc_score

    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return float(roc_auc_score(labels, np.concatenate([pos, neg])))


def ood_detection(
    model: IRevNet, x: Tensor, *, noise: float = 0.2, seed: int = 0, batch_size: int = 256, progress: bool = False
) -> dict[str, Any]:
    """How well ``log p(x)`` tells the test images ``x`` from their :func:`shifted_copies`.

    Returns ``{"log_prob_per_dim": {"test": [...], "shifted": [...], ...}, "auroc": {shift:
    float}, "mean_log_prob_per_dim": {set: float}, "noise", "images"}`` (nats per dimension,
    eval mode). Raises ValueError for an injective model. ``progress``: a bar over the batches of each set.
    """
    sets = {"test": x, **shifted_copies(x, noise=noise, seed=seed)}
    scores = {
        name: log_prob_per_dim(model, v, batch_size=batch_size, progress=progress, desc=f"log p(x), {name}")
        .cpu()
        .double()
        for name, v in sets.items()
    }
    return {
        "images": len(x),
        "noise": noise,
        "auroc": {name: auroc(scores["test"], scores[name]) for name in OOD_SHIFTS},
        "mean_log_prob_per_dim": {name: float(s.mean()) for name, s in scores.items()},
        "log_prob_per_dim": {name: s.tolist() for name, s in scores.items()},
    }
