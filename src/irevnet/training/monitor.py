"""Inverse stability during training: the reconstruction error of a fixed held-out batch.

Training can make Φ⁻¹ ill-conditioned (large Lipschitz constants, BatchNorm variances near
zero: "exploding inverses", Behrmann et al., AISTATS 2021), and an invertible network whose
inverse no longer reconstructs has lost the property it is used for. At each evaluation
:class:`ReconstructionMonitor` measures, on the same images every time, the mean relative
reconstruction error and the conditioning floor (the error of the exact float64 inverse of
Φ rounded to the model's dtype; :func:`irevnet.analysis.reconstruct` computes both), and
warns once when the error passes a threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..analysis.inversion import reconstruct

if TYPE_CHECKING:
    from ..model import IRevNet

__all__ = ["DEFAULT_RECON_THRESHOLD", "ReconstructionMonitor"]

log = logging.getLogger(__name__)

#: Mean relative error above which reconstructions stop being faithful: ~1/4 of an 8-bit
#: grey level on a mid-grey image, and about 1e4 times a well-conditioned float32 inverse.
DEFAULT_RECON_THRESHOLD = 1e-3


@dataclass
class ReconstructionMonitor:
    """Reconstruction error of the fixed batch ``x`` (N, C, H, W), warning once past ``threshold``.

    ``threshold=None`` measures without ever warning.
    """

    x: Tensor
    threshold: float | None = DEFAULT_RECON_THRESHOLD
    warned: bool = False

    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset[Any],
        *,
        size: int = 64,
        threshold: float | None = DEFAULT_RECON_THRESHOLD,
        device: torch.device | str = "cpu",
    ) -> ReconstructionMonitor:
        """Monitor the first ``size`` images of ``dataset`` (a held-out split: the same ones every time)."""
        if threshold is not None and not threshold > 0:
            raise ValueError(f"the reconstruction warning threshold must be > 0, got {threshold}")
        n = min(size, len(dataset))  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        if n == 0:
            raise ValueError("cannot monitor reconstructions on an empty data set")
        x = torch.stack([dataset[i][0] for i in range(n)]).to(device)
        return cls(x, threshold)

    def measure(self, model: IRevNet) -> dict[str, float]:
        """``{"recon_rel_error", "recon_floor"}``: means over the batch, in eval mode (the model's mode is kept)."""
        rec = reconstruct(model, self.x)
        assert rec.floor_relative_error is not None
        error, floor = rec.relative_error.mean().item(), rec.floor_relative_error.mean().item()
        if self.threshold is not None and not self.warned and not error <= self.threshold:  # NaN warns too
            self.warned = True
            log.warning(
                "the inverse is losing precision: mean relative reconstruction error %.3g on %d held-out images "
                "exceeds %.3g (conditioning floor %.3g, i.e. %.1fx the error an exact inverse of the rounded Φ "
                "would make). Reported once.",
                error,
                len(self.x),
                self.threshold,
                floor,
                error / floor if floor else float("inf"),
            )
        return {"recon_rel_error": error, "recon_floor": floor}
