"""All of the paper's analyses of one model on one pair of splits, written as PNG + JSON files.

Each analysis NAME of :mod:`irevnet.analysis.registry` writes ``OUT/NAME.png`` (or ``.pdf``/``.svg``,
see ``AnalysisOptions.format``) and ``OUT/NAME.json``:

- ``reconstruct``: test images above Φ⁻¹(Φ(x)); per-image max abs and relative error, and the
  conditioning floor (the error of the exact inverse of Φ rounded to the model's dtype).
- ``interpolate``: Φ⁻¹(tΦ(x0) + (1-t)Φ(x1)) rows, each above the pixel-space line (Figure 5).
- ``spectrum``: normalized singular values of ∂Φ/∂x on a pixel window (Figure 4).
- ``separability``: 1-NN / linear-SVM accuracy at every depth, trained vs untrained (Figure 6).
- ``pca``: accuracy on the top-d principal components of the final features (Figure 7).
- ``metamers``, ``ood`` (bijective models), ``edits``: beyond the paper (:mod:`.invariance`,
  :mod:`.ood`, :mod:`.edits`).

:class:`Context` computes each of them (a method per analysis, named after it) and caches
what several share; ``irevnet analyze`` and ``irevnet demo`` call :func:`run_analyses`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.transforms import denormalize
from ..model import IRevNet
from .edits import representation_edits
from .features import FeatureSet, extract_splits, select_blocks, subsample
from .invariance import metamer_report
from .inversion import (
    interpolate,
    interpolation_errors,
    pairs_of_different_classes,
    pixel_interpolate,
    reconstruct_batches,
)
from .ood import ood_detection
from .pca import pca_from_features
from .plotting import (
    plot_edits,
    plot_interpolations,
    plot_log_prob_histograms,
    plot_metamers,
    plot_pca,
    plot_reconstructions,
    plot_separability,
    plot_spectrum,
    save_figure,
)
from .registry import NAMES, check_analyses, default_analyses, get
from .separability import linear_separability
from .spectrum import Window, default_window, spectrum_summary

__all__ = [
    "ANALYSES",
    "BIJECTIVE_ONLY",
    "AnalysisOptions",
    "Context",
    "check_analyses",
    "default_analyses",
    "run_analyses",
]

log = logging.getLogger(__name__)

#: The names of the analyses, in the order they run (:data:`irevnet.analysis.registry.NAMES`).
ANALYSES = NAMES
#: Analyses that need a bijective model (Φ⁻¹ defined everywhere, or a density on Φ).
BIJECTIVE_ONLY = tuple(n for n in NAMES if get(n).bijective)

#: Pool of leading test images that interpolation pairs are drawn from.
_PAIR_POOL = 200

Result = dict[str, Any]


@dataclass(frozen=True)
class AnalysisOptions:
    """Knobs of :func:`run_analyses` (the CLI flags of the same names).

    ``window``: the spectrum's pixel box ``(top, left, height, width)``; None picks
    :func:`~irevnet.analysis.default_window`. ``seed`` drives the subsampling, the SVM's
    cross-validation folds and the untrained baseline's initialization. ``float64``:
    reconstruct in float64 (on a copy of the model) instead of the model's dtype.
    ``floor_images``: the conditioning floor (a float64 forward and inverse) of the leading test
    images only (None: the ``num_images`` shown). ``every``: separability's depths (None: about 8,
    :func:`select_blocks`).
    """

    num_images: int = 16
    floor_images: int | None = None
    pairs: int = 6
    metamer_pairs: int = 100
    metamer_steps: int = 600
    ood_noise: float = 0.2
    steps: int = 9
    window: Window | None = None
    spectrum_images: int = 1
    spectrum_method: str = "auto"
    spectrum_k: int | None = None
    every: int | None = None
    baseline: bool = True
    max_train: int | None = None
    max_test: int | None = None
    batch_size: int = 256
    workers: int = 0
    seed: int = 0
    progress: bool = True
    float64: bool = False
    format: str = "png"


class Context:
    """One model, one pair of splits: a method per analysis (``(result, figure)``, named after it),
    and caches of what several of them share."""

    def __init__(self, model: IRevNet, train_set: Dataset[Any], test_set: Dataset[Any], opts: AnalysisOptions) -> None:
        self.model, self.opts = model, opts
        self.train_set = subsample(train_set, opts.max_train, seed=opts.seed)
        self.test_set = subsample(test_set, opts.max_test, seed=opts.seed)
        self.device = next(model.parameters()).device
        # Figures and errors in pixel values: undo the normalization of the model's preprocessing.
        self.pixels = partial(denormalize, config=model.config)

    def _leading_test(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(iter(DataLoader(self.test_set, batch_size=min(n, len(self.test_set)))))  # type: ignore[arg-type]  # Dataset: no __len__
        return x.to(self.device), torch.as_tensor(y)

    @cached_property
    def _pair_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The leading test images that interpolate, metamers and edits draw their pairs from."""
        return self._leading_test(_PAIR_POOL)

    def _pairs(self, n: int) -> tuple[torch.Tensor, list[tuple[int, int]], torch.Tensor, torch.Tensor, list[list[int]]]:
        """``(x, pairs, ia, ib, labels)``: ``n`` pairs of different classes from :attr:`_pair_pool`,
        their indices into ``x`` and their ``[label_a, label_b]``."""
        x, y = self._pair_pool
        pairs = pairs_of_different_classes(y, n)
        ia, ib = torch.tensor([i for i, _ in pairs]), torch.tensor([j for _, j in pairs])
        return x, pairs, ia, ib, [[int(y[a]), int(y[b])] for a, b in pairs]

    @cached_property
    def trained_features(self) -> tuple[FeatureSet, FeatureSet]:
        """Shared by separability and PCA: the separability blocks always include the last one."""
        blocks = select_blocks(self.model.depth, self.opts.every)
        return extract_splits(
            self.model,
            self.train_set,
            self.test_set,
            blocks,
            batch_size=self.opts.batch_size,
            num_workers=self.opts.workers,
            progress=self.opts.progress,
            name="trained",
        )

    def reconstruct(self) -> tuple[Result, Figure]:
        max_err: list[float] = []
        rel_err: list[float] = []
        floor: list[float] = []
        shown: list[torch.Tensor] = []  # reconstructions of the leading test images (the loader keeps the order)
        loader = DataLoader(self.test_set, batch_size=self.opts.batch_size, num_workers=self.opts.workers)
        batches = (
            x.to(self.device)
            for x, _ in tqdm(loader, desc="reconstruct", unit="batch", disable=not self.opts.progress, leave=False)
        )
        for rec in reconstruct_batches(
            self.model,
            batches,
            float64=self.opts.float64,
            to_pixels=self.pixels,
            floor_images=self.opts.num_images if self.opts.floor_images is None else self.opts.floor_images,
        ):
            max_err += rec.max_abs_error.tolist()
            rel_err += rec.relative_error.tolist()
            if rec.floor_relative_error is not None:
                floor += rec.floor_relative_error.tolist()
            need = self.opts.num_images - len(shown)
            if need > 0:  # the leading test images only: no copy of the other batches
                shown += list(self.pixels(rec.x_hat[:need].float()).cpu())
        originals = list(self.pixels(self._leading_test(len(shown))[0]).cpu()) if shown else []
        fig = plot_reconstructions(originals, shown, max_abs_error=max(max_err), subject="test images")
        # The floor is None in float64, where the computation is its own reference.
        mean_floor = sum(floor) / len(floor) if floor else None
        return {
            "images": len(max_err),
            "error_units": "pixel values (normalization undone; [0, 1] for images)",
            "dtype": str(rec.x_hat.dtype).removeprefix("torch."),
            "max_abs_error": max(max_err),
            "mean_relative_error": sum(rel_err) / len(rel_err),
            "floor_relative_error": mean_floor,
            "floor_images": len(floor),
            "per_image_max_abs_error": max_err,
            "per_image_relative_error": rel_err,
            "per_image_floor_relative_error": floor or None,
        }, fig

    def interpolate(self) -> tuple[Result, Figure]:
        x, pairs, i0, i1, pair_labels = self._pairs(self.opts.pairs)
        steps = self.opts.steps
        in_phi = self.pixels(interpolate(self.model, x[i0], x[i1], steps=steps, progress=self.opts.progress)).cpu()
        in_pixels = self.pixels(pixel_interpolate(x[i0], x[i1], steps=steps)).cpu()
        fig = plot_interpolations(in_phi, in_pixels, labels=[f"{a}→{b}" for a, b in pair_labels])
        return {
            "pairs": [list(p) for p in pairs],
            "labels": pair_labels,
            **interpolation_errors(in_phi, in_pixels),
        }, fig

    def spectrum(self) -> tuple[Result, Figure]:
        x, _ = self._leading_test(self.opts.spectrum_images)
        window = self.opts.window or default_window((x.shape[1], x.shape[2], x.shape[3]))
        res = spectrum_summary(
            self.model,
            x,
            window,
            method=self.opts.spectrum_method,
            k=self.opts.spectrum_k,
            seed=self.opts.seed,
            progress=self.opts.progress,
        )
        return res, plot_spectrum(res)

    def separability(self) -> tuple[Result, Figure]:
        # The splits are already subsampled; the seed also fixes the CV folds and the baseline.
        res = linear_separability(
            self.model,
            self.train_set,
            self.test_set,
            every=self.opts.every,
            baseline_seed=self.opts.seed if self.opts.baseline else None,
            seed=self.opts.seed,
            batch_size=self.opts.batch_size,
            num_workers=self.opts.workers,
            progress=self.opts.progress,
            features=self.trained_features,
        )
        return res, plot_separability(res)

    def pca(self) -> tuple[Result, Figure]:
        train, test = self.trained_features
        d = self.model.depth
        res = pca_from_features(
            train.features[d],
            train.labels,
            test.features[d],
            test.labels,
            seed=self.opts.seed,
            progress=self.opts.progress,
        )
        return res, plot_pca(res)

    def metamers(self) -> tuple[Result, Figure]:
        x, pairs, ia, ib, pair_labels = self._pairs(max(self.opts.metamer_pairs, self.opts.pairs))
        x_m, res = metamer_report(
            self.model,
            x[ia],
            x[ib],
            batch_size=self.opts.batch_size,
            steps=self.opts.metamer_steps,
            progress=self.opts.progress,
        )
        k = self.opts.pairs
        a, b, m = (self.pixels(v).cpu() for v in (x[ia[:k]], x[ib[:k]], x_m[:k]))
        fig = plot_metamers(a, b, m, res)
        res["labels"] = pair_labels
        res["pair_indices"] = [list(p) for p in pairs]
        res["steps"] = self.opts.metamer_steps
        return res, fig

    def ood(self) -> tuple[Result, Figure]:
        loader = DataLoader(self.test_set, batch_size=self.opts.batch_size, num_workers=self.opts.workers)
        x = torch.cat([xb for xb, _ in loader]).to(self.device)
        res = ood_detection(
            self.model,
            x,
            noise=self.opts.ood_noise,
            seed=self.opts.seed,
            batch_size=self.opts.batch_size,
            progress=self.opts.progress,
        )
        return res, plot_log_prob_histograms(res)

    def edits(self) -> tuple[Result, Figure]:
        x, pairs, ia, ib, pair_labels = self._pairs(self.opts.pairs)
        res = representation_edits(self.model, x[ia], x[ib], progress=self.opts.progress)
        fig = plot_edits(
            self.pixels(x[ia]).cpu(),
            self.pixels(x[ib]).cpu(),
            {n: self.pixels(v).cpu() for n, v in res["images"].items()},
            labels=[f"{a}, {b}" for a, b in pair_labels],
        )
        return {
            "pairs": [list(p) for p in pairs],
            "labels": pair_labels,
            "kind": res["kind"],
            "change": res["change"],
            "mean_change": {n: sum(v) / len(v) for n, v in res["change"].items()},
        }, fig


def run_analyses(
    model: IRevNet,
    train_set: Dataset[Any],
    test_set: Dataset[Any],
    out: str | Path,
    names: Sequence[str] | None = None,
    options: AnalysisOptions = AnalysisOptions(),
    stems: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the analyses ``names`` (from :data:`ANALYSES`; default: those that apply to ``model``) and write
    ``out/NAME.png`` and ``out/NAME.json``.

    ``train_set``/``test_set`` yield ``(image (C, H, W), label)``; the model runs on the
    device of its parameters and is left in the mode it was in. ``stems`` renames the
    files of some analyses (``{name: stem}`` writes ``out/stem.png`` and ``out/stem.json``).
    Returns each analysis's JSON-ready dict by name.
    """
    names = default_analyses(model) if names is None else check_analyses(names)
    refused = [n for n in names if get(n).bijective and model.injective]
    if refused:
        raise ValueError(
            f"{', '.join(refused)} need(s) a bijective model, but {model.config.name!r} is injective "
            "(its zero padding puts Φ on a subspace; use a bijective preset such as 'digits-b')"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    context = Context(model, train_set, test_set, options)
    results = {}
    for i, name in enumerate(names, 1):
        log.info("analysis %d/%d: %s ...", i, len(names), name)
        start = time.perf_counter()
        stem = (stems or {}).get(name, name)
        results[name], fig = get(name).run(context)
        save_figure(fig, out / f"{stem}.{options.format}")
        (out / f"{stem}.json").write_text(json.dumps(results[name], indent=1) + "\n")
        log.info("analysis %d/%d: %s done in %.1f s", i, len(names), name, time.perf_counter() - start)
    return results
