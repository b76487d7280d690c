"""The hybrid objective (Nalisnick et al., "Hybrid Models with Deep and Invertible Features",
ICML 2019): cross-entropy + ``nll_weight`` × the negative log-density of the input per dimension.

For a bijective i-RevNet ``-log p(x) = -log N(Φ(x); 0, I)`` exactly (Φ preserves volume, see
:meth:`IRevNet.log_prob`), so the density term needs nothing but the Φ that the classifier
computes anyway. The criterion reads that Φ from a forward pre-hook on the model's head, so
the training loop keeps calling ``model(x)`` (and DDP, autocast and memory-saving training
work unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..model import IRevNet, standard_normal_log_prob

__all__ = ["HybridCriterion"]


class HybridCriterion:
    """``criterion(logits, target) = base(logits, target) + nll_weight * mean_i(-log p(x_i)) / D``.

    ``D`` is the number of entries of Φ (= of the input). Each call uses the Φ of the
    model's latest forward; in train mode BatchNorm couples the batch and the term is the
    exact negative log-density of the batch as one sample, per example and dimension.
    ``model`` must be bijective (ValueError otherwise). :meth:`remove` detaches the hook.
    """

    def __init__(
        self, model: IRevNet, nll_weight: float, base: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    ) -> None:
        model.require_density(f"the hybrid objective (nll_weight={nll_weight})")
        self.nll_weight = nll_weight
        self.base = base
        self._phi: Tensor | None = None
        self._handle = model.head.register_forward_pre_hook(self._keep)

    def _keep(self, module: Any, args: tuple[Tensor, ...]) -> None:
        self._phi = args[0]

    def nll_per_dim(self) -> Tensor:
        """Mean negative log-density per dimension (nats) of the latest forward's batch."""
        phi, self._phi = self._phi, None
        if phi is None:
            raise RuntimeError("HybridCriterion saw no forward of its model since its last call")
        return -standard_normal_log_prob(phi.float()).mean() / phi[0].numel()

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.base(logits, target) + self.nll_weight * self.nll_per_dim()

    def remove(self) -> None:
        self._handle.remove()
