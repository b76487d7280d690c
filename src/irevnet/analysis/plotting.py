"""Matplotlib figures (headless: the Agg backend) shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = ["image_grid", "to_display"]


def to_display(x: Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W) or (H, W, 3) float array clipped to [0, 1] for imshow."""
    a = x.detach().float().cpu().numpy()
    a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return np.clip(a, 0.0, 1.0)


def image_grid(
    rows: Sequence[Sequence[Tensor]],
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell: float = 1.0,
) -> Path:
    """Save a grid of images (each (C, H, W), values in [0, 1]) as a PNG."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + (1.2 if row_labels else 0), cell * n_rows + 0.6),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(row):
                img = to_display(row[j])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
            if i == 0 and col_labels and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
