"""Matplotlib figures (headless: the Agg backend) shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = ["image_grid", "plot_pca", "plot_separability", "plot_spectrum", "to_display"]


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
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_spectrum(summary: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Figure 4: normalized singular values (log scale) against their rank, one curve per image.

    ``summary`` is the dict of :func:`irevnet.analysis.spectrum_summary`.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    conds = summary["condition_number"] or [None] * len(summary["normalized"])
    for i, (values, cond) in enumerate(zip(summary["normalized"], conds)):
        label = f"image {i}" + (f" (κ = {cond:.3g})" if cond is not None else "")
        ax.semilogy(np.arange(1, len(values) + 1), values, lw=1.2, label=label)
    top, left, h, w = summary["window"]
    ax.set_xlabel(f"rank (of {summary['input_dims']} input dimensions)")
    ax.set_ylabel("σ_i / σ_1")
    ax.set_title(title or f"singular values of ∂Φ/∂x on the {h}x{w} window at ({top}, {left})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_separability(result: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Figure 6: test accuracy against depth for 1-NN and linear SVM, trained (solid) vs untrained (dashed).

    ``result`` is the dict of :func:`irevnet.analysis.linear_separability`.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, style in (("trained", "-"), ("untrained", "--")):
        curve = result.get(name)
        if curve is None:
            continue
        for key, colour, label in (("nn", "C0", "1-NN"), ("svm", "C1", "linear SVM")):
            ax.plot(curve["blocks"], curve[key], style, color=colour, marker="o", ms=3, label=f"{label}, {name}")
    ax.set_xlabel("block j")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "linear separation with depth (averaged, standardized Φ_j)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pca(result: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Figure 7: 1-NN / SVM accuracy (left axis) and explained variance (right) against the number of components.

    ``result`` is the dict of :func:`irevnet.analysis.pca_from_features`; dotted verticals
    mark where each accuracy saturates.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, colour, label in (("nn", "C0", "1-NN"), ("svm", "C1", "linear SVM")):
        ax.semilogx(result["dims"], result[key], color=colour, marker="o", ms=3, label=label)
        ax.axvline(result["saturation"][key], color=colour, ls=":", lw=1)
    ax.set_xlabel("number of principal components d")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    var = ax.twinx()
    var.semilogx(result["dims"], result["explained_variance"], color="grey", ls="--", label="explained variance")
    var.set_ylabel("cumulative explained variance", color="grey")
    var.set_ylim(0, 1.02)
    lines = ax.get_legend_handles_labels()
    extra = var.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="lower right")
    ax.set_title(title or "contraction: accuracy on the top-d principal components of Φ", fontsize=9)
    return _save(fig, path)
