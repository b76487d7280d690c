"""The paper's figures as :class:`matplotlib.figure.Figure` objects, ready for a paper.

Every ``plot_*`` function and :func:`image_grid` returns a Figure built directly (no
``pyplot``): nothing here selects a backend or keeps global state, so the functions work
in notebooks (display the returned figure) and in headless scripts alike.
:func:`save_figure` writes a figure as PNG (200 dpi), PDF or SVG.

Conventions: 9-10 pt text, math in mathtext (``$\\sigma_i/\\sigma_1$``), every series in
its own colour *and* line style or marker so that legends stay readable in grey, long
titles wrapped to the figure's width, image grids wrapped at :data:`MAX_COLUMNS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, NullFormatter
from torch import Tensor

__all__ = [
    "FORMATS",
    "MAX_COLUMNS",
    "image_grid",
    "plot_edits",
    "plot_interpolations",
    "plot_log_prob_histograms",
    "plot_metamers",
    "plot_pca",
    "plot_reconstructions",
    "plot_separability",
    "plot_spectrum",
    "save_figure",
    "to_display",
]

#: File formats :func:`save_figure` writes (the path's suffix picks one).
FORMATS = ("png", "pdf", "svg")
#: Raster resolution of PNG files.
PNG_DPI = 200
#: Image grids wrap onto further row groups after this many columns.
MAX_COLUMNS = 16
_FONT = {"title": 10, "label": 9, "tick": 8, "legend": 8, "cell": 8}


def to_display(x: Tensor) -> np.ndarray[Any, Any]:
    """(C, H, W) tensor of pixel values -> (H, W) or (H, W, 3) float array clipped to [0, 1] for imshow."""
    a = x.detach().float().cpu().numpy()
    a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    return np.clip(a, 0.0, 1.0)


def _visible_length(word: str) -> int:
    """Characters ``word`` shows once rendered: a mathtext command (``\\Phi``) is one, ``$ { }`` none."""
    return len(re.sub(r"[${}]", "", re.sub(r"\\[A-Za-z]+", "X", word)))


def _wrap(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` broken at spaces into lines that fit ``width_inches`` at ``fontsize`` (about 0.55 em
    per character). Never breaks inside ``$...$`` math."""
    chars = max(20, int(width_inches * 72 / (0.55 * fontsize)))
    lines = []
    for paragraph in text.split("\n"):
        words: list[str] = []
        line: list[str] = []
        length, in_math = 0, False
        for word in paragraph.split(" "):  # glue the words of a math span together
            if in_math:
                words[-1] += " " + word
            else:
                words.append(word)
            in_math ^= word.count("$") % 2 == 1
        for word in words:
            n = _visible_length(word)
            if line and length + 1 + n > chars:
                lines.append(" ".join(line))
                line, length = [], 0
            length += n + (1 if line else 0)
            line.append(word)
        lines.append(" ".join(line))
    return "\n".join(lines)


def image_grid(
    rows: Sequence[Sequence[Tensor]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell_labels: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    cell: float = 1.0,
    max_columns: int = MAX_COLUMNS,
) -> Figure:
    """A grid of images (each (C, H, W), pixel values in [0, 1]); ``rows[i][j]`` is row i, column j.

    ``cell_labels[i][j]`` (optional) is written under image ``j`` of row ``i``.

    Rows longer than ``max_columns`` wrap: the grid is drawn as several groups of
    ``len(rows)`` rows, each group holding the next ``max_columns`` columns (labels
    repeated), so a thousand images make a tall figure, never a 45,000-pixel-wide one.
    ``cell`` is the size of one image in inches; an image is never drawn smaller than its
    pixels need at :data:`PNG_DPI` up to 2.5 inches.

    Each row of a group is one image strip in one Axes (``len(rows)`` Axes per group, not
    one per image: matplotlib spends ~25 ms on each Axes, seconds on a grid of a hundred).
    """
    n_cols = max(len(r) for r in rows)
    if n_cols == 0:
        raise ValueError("image_grid needs at least one image")
    sample = next(x for row in rows for x in row)
    h, w = sample.shape[-2:]
    cell = max(cell, min(max(h, w) / PNG_DPI, 2.5))  # 224-px images get 1.12 inches: every pixel shown
    cols = min(n_cols, max_columns)
    groups = math.ceil(n_cols / cols)
    gap = max(1, round(w / 16))  # white pixels between two images of a strip
    blank = np.ones((h, cols * (w + gap) - gap, *to_display(sample).shape[2:]), dtype=np.float32)
    label_w = 1.3 if row_labels else 0.0
    col_label_h = 0.35 * max((lab.count("\n") + 1 for lab in col_labels), default=0) if col_labels else 0.0
    width = cell * cols + label_w
    title_text = _wrap(title, width, _FONT["title"]) if title else None
    title_h = 0.25 * (title_text.count("\n") + 1) + 0.15 if title_text else 0.1
    row_h = cell + (0.22 if cell_labels else 0.0)
    height = groups * (len(rows) * row_h + col_label_h) + title_h
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(groups * len(rows), 1, squeeze=False, gridspec_kw={"hspace": 0.02})[:, 0]
    for g in range(groups):
        first = g * cols
        for i, row in enumerate(rows):
            ax = axes[g * len(rows) + i]
            strip = blank.copy()
            for j, img in enumerate(row[first : first + cols]):
                strip[:, j * (w + gap) : j * (w + gap) + w] = to_display(img)
            ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            _label_columns(ax, cell_labels[i] if cell_labels else [], range(first, first + cols), w, gap)
            if row_labels:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=_FONT["cell"])
            if i == 0 and col_labels:
                top = ax.secondary_xaxis("top")
                top.spines["top"].set_visible(False)
                _label_columns(top, col_labels, range(first, first + cols), w, gap)
    if title_text:
        fig.suptitle(title_text, fontsize=_FONT["title"])
    return fig


def _label_columns(axis: Any, labels: Sequence[str], columns: range, w: int, gap: int) -> None:
    """``labels[j]`` under (or, on a top axis, above) image ``j`` of a strip showing ``columns``."""
    named = range(columns.start, min(columns.stop, len(labels)))
    axis.set_xticks([(j - columns.start) * (w + gap) + (w - 1) / 2 for j in named], [labels[j] for j in named])
    axis.tick_params(length=0, labelsize=_FONT["cell"] - 1)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to exactly ``path``; its suffix (``.png``, ``.pdf`` or ``.svg``) picks the format.

    PNG files are rendered at :data:`PNG_DPI`; PDF and SVG are vector files with the text as text.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(
            f"cannot save a figure as {str(path)!r}: the file name must end in {', '.join('.' + f for f in FORMATS)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, dpi=PNG_DPI, metadata={"Software": None} if fmt == "png" else None)
    return path


def plot_reconstructions(
    x: Sequence[Tensor] | Tensor,
    x_hat: Sequence[Tensor] | Tensor,
    *,
    max_abs_error: float,
    subject: str,
    col_labels: Sequence[str] | None = None,
    cell: float = 1.0,
) -> Figure:
    """Originals ``x`` above their reconstructions ``x_hat`` = Φ⁻¹(Φ(x)) (each (C, H, W), pixel values;
    a list, or a batch ``(N, C, H, W)``).

    The title names the ``subject`` (e.g. "test images", a model's name) and the largest pixel error.
    """
    return image_grid(
        [list(x), list(x_hat)],
        row_labels=["$x$", r"$\Phi^{-1}(\Phi(x))$"],
        col_labels=col_labels,
        title=f"{subject}: reconstructions from Φ (max abs pixel error {max_abs_error:.1e})",
        cell=cell,
    )


def plot_interpolations(
    in_phi: Tensor, in_pixels: Tensor, *, labels: Sequence[str], note: str | None = None, cell: float = 1.0
) -> Figure:
    """Figure 5: each interpolation in Φ above the pixel-space line between the same images.

    ``in_phi``, ``in_pixels``: ``(N, steps, C, H, W)`` pixel values, as
    :func:`~irevnet.analysis.interpolate` and :func:`~irevnet.analysis.pixel_interpolate` return
    them (``t`` from 1 to 0 along a row); ``labels``: one per pair (e.g. "3→8"); ``note`` ends the title.
    """
    rows: list[list[Tensor]] = []
    row_labels: list[str] = []
    for phi_path, pixel_path, label in zip(in_phi, in_pixels, labels, strict=False):
        rows += [list(phi_path), list(pixel_path)]
        row_labels += [f"$\\Phi$: {label}", "pixels"]
    ts = np.linspace(1, 0, in_phi.shape[1])
    title = r"$\Phi^{-1}(t\,\Phi(x_0) + (1-t)\,\Phi(x_1))$, each above $t\,x_0 + (1-t)\,x_1$"
    return image_grid(
        rows,
        row_labels=row_labels,
        col_labels=[f"$t$={t:.2f}" for t in ts],
        title=title + (f"; {note}" if note else ""),
        cell=cell,
    )


def plot_metamers(x_a: Tensor, x_b: Tensor, x_m: Tensor, result: dict[str, Any]) -> Figure:
    """Pairs ``x_a``, ``x_b`` above their metamers ``x_m`` (each (N, C, H, W) pixel values), with the predictions.

    ``result`` is the dict of :func:`~irevnet.analysis.metamer_report` for at least these N pairs.
    """
    k = len(x_a)
    labels = [[f"pred {p}" for p in result[key][:k]] for key in ("pred_a", "pred_b", "pred_m")]
    return image_grid(
        [list(x_a), list(x_b), list(x_m)],
        row_labels=["$x_a$", "$x_b$", "metamer"],
        cell_labels=labels,
        title=f"metamers: logits of x_a (max rel. error {result['max_logit_relative_error']:.0e}), "
        f"the rest of x_b; closer to x_b for {result['closer_to_b']:.0%} of {result['pairs']} pairs",
    )


def plot_edits(x_a: Tensor, x_b: Tensor, edited: dict[str, Tensor], *, labels: Sequence[str]) -> Figure:
    """One row per pair: ``x_a``, ``x_b`` and Φ⁻¹ after each edit of Φ(x_a) (``edited``: name -> (N, C, H, W)).

    Pixel values; ``labels`` name the pairs, the edits' names head the columns.
    """
    names = list(edited)
    shown = [x_a, x_b, *(edited[n] for n in names)]
    rows = [[v[k] for v in shown] for k in range(len(x_a))]
    titles = ["$x_a$", "$x_b$", *(n.replace(" ← ", "\n← ").replace(": ", ":\n") for n in names)]
    return image_grid(
        rows,
        col_labels=titles,
        row_labels=list(labels),
        title="Φ⁻¹ after edits of Φ(x_a): regions or channel groups from Φ(x_b), or channels zeroed",
    )


def _axes(title: str | None, default: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.set_title(_wrap(title or default, 5.6, _FONT["title"]), fontsize=_FONT["title"])
    ax.tick_params(which="both", labelsize=_FONT["tick"])
    return fig, ax


def plot_spectrum(summary: dict[str, Any], *, title: str | None = None) -> Figure:
    """Figure 4: normalized singular values (log scale) against their rank, one curve per image.

    ``summary`` is the dict of :func:`irevnet.analysis.spectrum_summary`; with the float32 method,
    a dotted line marks its accuracy bound.
    """
    top, left, h, w = summary["window"]
    fig, ax = _axes(
        title,
        rf"singular values of $\partial\Phi/\partial x$ on the {h}$\times${w} window "
        f"at ({top}, {left})",
    )
    conds = summary["condition_number"] or [None] * len(summary["normalized"])
    styles = ["-", "--", ":", "-."]
    for i, (values, cond) in enumerate(zip(summary["normalized"], conds, strict=False)):
        label = f"image {i}" + (rf" ($\kappa$ = {cond:.3g})" if cond is not None else "")
        ax.semilogy(
            np.arange(1, len(values) + 1), values, lw=1.4, ls=styles[i % len(styles)], color=f"C{i}", label=label
        )
    ax.set_xlabel(f"rank $i$ (of {summary['input_dims']} input dimensions)", fontsize=_FONT["label"])
    ax.set_ylabel(r"$\sigma_i / \sigma_1$", fontsize=_FONT["label"])
    smallest = min(min(v) for v in summary["normalized"])
    accuracy = max(summary.get("normalized_abs_error") or [0.0])
    if accuracy > smallest / 10:  # float32 Jacobian: the values near or below this line are not resolved
        ax.axhline(accuracy, color="grey", ls=":", lw=1, label=f"float32 accuracy (±{accuracy:.1e})")
    if smallest > 0.1:  # less than a decade: decimal ticks, not 9.975x10^-1
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(NullFormatter() if smallest < 0.5 else FormatStrFormatter("%.3g"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=_FONT["legend"])
    return fig


def plot_separability(result: dict[str, Any], *, title: str | None = None) -> Figure:
    """Figure 6: test accuracy against depth for 1-NN and linear SVM, trained vs untrained.

    Four series, each with its own colour, line style and marker: trained networks solid
    with filled markers, the untrained baseline dashed with open markers.
    ``result`` is the dict of :func:`irevnet.analysis.linear_separability`.
    """
    fig, ax = _axes(title, r"linear separation with depth (spatially averaged, standardized $\Phi_j$)")
    series = {
        ("trained", "nn"): ("C0", "o"),
        ("trained", "svm"): ("C1", "s"),
        ("untrained", "nn"): ("C2", "o"),
        ("untrained", "svm"): ("C3", "s"),
    }
    for (name, key), (colour, marker) in series.items():
        curve = result.get(name)
        if curve is None:
            continue
        trained = name == "trained"
        ax.plot(
            curve["blocks"],
            curve[key],
            "-" if trained else "--",
            color=colour,
            marker=marker,
            ms=4,
            mfc=colour if trained else "white",
            lw=1.4,
            label=f"{'1-NN' if key == 'nn' else 'linear SVM'}, {name}",
        )
    ax.set_xlabel("block $j$", fontsize=_FONT["label"])
    ax.set_ylabel("test accuracy", fontsize=_FONT["label"])
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=_FONT["legend"], loc="lower right")
    return fig


def plot_pca(result: dict[str, Any], *, title: str | None = None) -> Figure:
    """Figure 7: 1-NN / SVM accuracy (left axis) and explained variance (right) against the number of components.

    ``result`` is the dict of :func:`irevnet.analysis.pca_from_features`; dotted verticals
    mark where each accuracy saturates.
    """
    fig, ax = _axes(title, r"contraction: accuracy on the top-$d$ principal components of $\Phi$")
    for key, colour, marker, label in (("nn", "C0", "o", "1-NN"), ("svm", "C1", "s", "linear SVM")):
        ax.semilogx(result["dims"], result[key], color=colour, marker=marker, ms=4, lw=1.4, label=label)
        ax.axvline(
            result["saturation"][key],
            color=colour,
            ls=":",
            lw=1,
            label=f"{label} saturates ($d$ = {result['saturation'][key]})",
        )
    ax.set_xlabel("number of principal components $d$", fontsize=_FONT["label"])
    ax.set_ylabel("test accuracy", fontsize=_FONT["label"])
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    var = ax.twinx()
    var.semilogx(
        result["dims"], result["explained_variance"], color="grey", ls="--", lw=1.4, label="explained variance"
    )
    var.set_ylabel("cumulative explained variance", color="grey", fontsize=_FONT["label"])
    var.tick_params(which="both", labelsize=_FONT["tick"])
    var.set_ylim(0, 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 10, 100, not 10^0 (after twinx's log scale)
    lines = ax.get_legend_handles_labels()
    extra = var.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=_FONT["legend"], loc="lower right")
    return fig


def plot_log_prob_histograms(result: dict[str, Any], *, title: str | None = None) -> Figure:
    """Histograms of log p(x) per dimension: the test images (filled) and each copy (outlined), with the AUROCs.

    ``result`` is the dict of :func:`irevnet.analysis.ood_detection`.
    """
    fig, ax = _axes(title, "exact log-density: test images and their shifted, noised and inverted copies")
    scores = result["log_prob_per_dim"]
    lo, hi = np.percentile(np.concatenate([np.asarray(v) for v in scores.values()]), [0.5, 99.5])
    bins = np.linspace(lo, hi, 50)
    styles = ["-", "--", ":", "-."]
    for i, (name, v) in enumerate(scores.items()):
        if name == "test":
            ax.hist(np.clip(v, lo, hi), bins=bins, color="C0", alpha=0.4, label="test")
        else:
            ax.hist(
                np.clip(v, lo, hi),
                bins=bins,
                histtype="step",
                lw=1.4,
                ls=styles[i % len(styles)],
                color=f"C{i}",
                label=f"{name} (AUROC {result['auroc'][name]:.3f})",
            )
    ax.set_xlabel(r"$\log p(x)$ per dimension (nats)", fontsize=_FONT["label"])
    ax.set_ylabel("images", fontsize=_FONT["label"])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=_FONT["legend"])
    return fig
