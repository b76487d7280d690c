"""Batched extraction of the spatially averaged block features Φ_j(x) used by Figures 6-7.

The paper measures separability on ``mean_{h,w} Φ_j(x)``: one vector of ``C_j`` numbers per
image and per block ``j``. Extraction runs the model once per batch and keeps only those
averages, so memory grows with ``N * sum_j C_j``, not with the activations.
``Φ_j`` is the output of block ``j-1`` (0-based) of :meth:`IRevNet.forward_intermediates`;
:meth:`IRevNet.iter_intermediates` yields the same tensors one at a time, so a batch never
holds every block's output at once (100 blocks of ImageNet-size activations would not fit).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..model import IRevNet
from ..modes import eval_mode

__all__ = ["FeatureSet", "averaged_features", "extract_splits", "select_blocks", "subsample", "untrained_like"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSet:
    """Spatially averaged features of ``N`` images.

    ``features[j]`` is a float32 array ``(N, C_j)`` for block ``j`` (1-based, as in the
    paper's "depth"); ``labels`` is an int64 array ``(N,)``. Row ``i`` of every array is the
    same image.
    """

    features: dict[int, np.ndarray]
    labels: np.ndarray

    @property
    def blocks(self) -> list[int]:
        return sorted(self.features)

    def __len__(self) -> int:
        return len(self.labels)


#: Depths that :func:`select_blocks` picks by default: enough points for the curve of Figure 6,
#: while the cost (a cross-validated SVM per depth, trained and untrained model) stays bounded
#: for deep models (the 54-block ``cifar10``: 8 depths instead of 54).
DEFAULT_DEPTHS = 8


def select_blocks(depth: int, every: int | None = None) -> list[int]:
    """Blocks ``every, 2*every, ...`` (1-based), always ending with the last block ``depth``.

    ``every=None``: ``ceil(depth / DEFAULT_DEPTHS)``, i.e. every block of a network of at most
    :data:`DEFAULT_DEPTHS` blocks, else about that many evenly spaced ones.
    """
    if every is None:
        every = max(1, math.ceil(depth / DEFAULT_DEPTHS))
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return sorted(set(range(every, depth + 1, every)) | {depth})


def subsample(dataset: Dataset[Any], max_samples: int | None, *, seed: int = 0) -> Dataset[Any]:
    """A random subset of ``max_samples`` items (order kept), or ``dataset`` itself if it is small enough.

    The choice depends only on ``len(dataset)``, ``max_samples`` and ``seed``, so two runs pick the
    same images.
    """
    n = len(dataset)  # type: ignore[arg-type]  # torch's Dataset declares no __len__
    if max_samples is None or max_samples >= n:
        return dataset
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    idx = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
    return Subset(dataset, idx.tolist())


def untrained_like(model: IRevNet, *, seed: int = 0) -> IRevNet:
    """A freshly initialized model of ``model``'s configuration, drawn with ``torch.manual_seed(seed)``.

    The global RNG state is left as it was. With the seed a run trained from, this is that
    run's initial network (the baseline of Figure 6's curves).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = IRevNet.from_config(model.config)
    return fresh.to(next(model.parameters()).device)


@torch.no_grad()
def averaged_features(
    model: IRevNet,
    dataset: Dataset[Any],
    blocks: list[int] | None = None,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> FeatureSet:
    """``mean_{h,w} Φ_j(x)`` for every image of ``dataset`` and every block ``j`` in ``blocks``.

    ``dataset`` yields ``(image (C, H, W), label)``; ``blocks`` are 1-based block numbers
    (default: all). The model runs in eval mode (BatchNorm running statistics, no dropout)
    on the device of its parameters; its train/eval mode is restored afterwards.
    """
    blocks = list(range(1, model.depth + 1)) if blocks is None else sorted(blocks)
    if not blocks or blocks[0] < 1 or blocks[-1] > model.depth:
        raise ValueError(f"blocks must be within 1..{model.depth}, got {blocks}")
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks: dict[int, list[np.ndarray]] = {j: [] for j in blocks}
    labels: list[np.ndarray] = []

    with eval_mode(model):
        for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            for j, z in model.iter_intermediates(x.to(device), [j - 1 for j in blocks]):
                chunks[j + 1].append(z.mean(dim=(2, 3)).float().cpu().numpy())
            labels.append(np.asarray(y, dtype=np.int64))
    log.debug("extracted features of %d images at %d blocks", sum(map(len, labels)), len(blocks))
    return FeatureSet({j: np.concatenate(c) for j, c in chunks.items()}, np.concatenate(labels))


def extract_splits(
    model: IRevNet,
    train_set: Dataset[Any],
    test_set: Dataset[Any],
    blocks: list[int],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    name: str = "",
) -> tuple[FeatureSet, FeatureSet]:
    """:func:`averaged_features` of the training and the test split, at the same ``blocks``."""
    train, test = (
        averaged_features(
            model,
            ds,
            blocks,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            desc=f"{name} {split}".strip(),
        )
        for split, ds in (("train", train_set), ("test", test_set))
    )
    return train, test
