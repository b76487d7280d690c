"""Figure 7, progressive contraction: classifier accuracy on the top-d principal components.

PCA is fit on the standardized, spatially averaged final features ``mean_{h,w} Φ(x)`` of
the training split; 1-NN and linear-SVM accuracy on the top-``d`` components, for
log-spaced ``d``, shows how few directions carry the class information. On ImageNet the
paper finds accuracy drops only below d ≈ 200 (of 3,072).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from torch.utils.data import Dataset

from ..model import IRevNet
from .features import extract_splits, subsample
from .separability import accuracies_of, standardize

__all__ = ["log_spaced_dims", "pca_contraction", "pca_from_features", "saturation_dim"]

log = logging.getLogger(__name__)


def log_spaced_dims(max_dim: int, num: int = 12) -> list[int]:
    """About ``num`` distinct integers from 1 to ``max_dim`` (both included), evenly spaced in log scale."""
    if max_dim < 1:
        raise ValueError(f"max_dim must be >= 1, got {max_dim}")
    return sorted(set(np.round(np.geomspace(1, max_dim, num)).astype(int).tolist()) | {max_dim})


def saturation_dim(dims: list[int], accuracy: list[float], tolerance: float = 0.01) -> int:
    """Smallest ``d`` from which accuracy stays within ``tolerance`` of the accuracy at the largest ``d``.

    ``dims`` increasing, ``accuracy`` aligned with it.
    """
    target = accuracy[-1] - tolerance
    d = dims[-1]
    for dim, acc in zip(reversed(dims), reversed(accuracy), strict=False):
        if acc < target:
            break
        d = dim
    return d


def pca_from_features(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    dims: list[int] | None = None,
    tolerance: float = 0.01,
    seed: int = 0,
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """1-NN / linear-SVM test accuracy on the top-``d`` principal components of ``(N, D)`` features.

    Features are standardized and PCA is fit on the training split only; the components
    are used as they are (not whitened), so 1-NN measures ℓ2 distance within the top-``d``
    subspace. ``dims`` default to :func:`log_spaced_dims` up to ``min(D, N_train)``.
    ``kwargs`` go to :func:`classifier_accuracies`.

    Returns ``{"dims", "nn", "svm", "svm_C", "explained_variance"}`` (lists aligned with
    ``dims``; explained variance is the cumulative ratio of the top ``d``), plus
    ``"explained_variance_ratio"`` (every component, decreasing), ``"saturation"``
    (``{"nn": d, "svm": d}`` from :func:`saturation_dim`) and ``"tolerance"``.
    """
    x_train, x_test = standardize(x_train, x_test)
    # All components at once: PCA subspaces are nested, so the top d of a full fit are the
    # same as a fit with n_components=d.
    pca = PCA(random_state=seed).fit(x_train)
    z_train, z_test = pca.transform(x_train), pca.transform(x_test)
    max_dim = z_train.shape[1]
    dims = log_spaced_dims(max_dim) if dims is None else sorted(d for d in dims if 1 <= d <= max_dim)
    if not dims:
        raise ValueError(f"no requested dimension lies in 1..{max_dim}")
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    out: dict[str, Any] = {
        "dims": dims,
        "nn": [],
        "svm": [],
        "svm_C": [],
        "explained_variance": [float(cumulative[d - 1]) for d in dims],
    }
    problems = [partial(_leading, z_train, z_test, d) for d in dims]
    accs = accuracies_of(problems, y_train, y_test, progress=progress, desc="pca", unit="dim", seed=seed, **kwargs)
    for d, acc in zip(dims, accs, strict=True):
        for key in ("nn", "svm", "svm_C"):
            out[key].append(acc[key])
        log.debug("top %d components: 1-NN %.4f, SVM %.4f", d, acc["nn"], acc["svm"])
    out["explained_variance_ratio"] = pca.explained_variance_ratio_.tolist()
    out["saturation"] = {k: saturation_dim(dims, out[k], tolerance) for k in ("nn", "svm")}
    out["tolerance"] = tolerance
    return out


def _leading(z_train: np.ndarray, z_test: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    return z_train[:, :d], z_test[:, :d]


def pca_contraction(
    model: IRevNet,
    train_set: Dataset[Any],
    test_set: Dataset[Any],
    *,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Figure 7 on ``model``'s final features ``mean_{h,w} Φ(x)``; see :func:`pca_from_features`.

    ``max_train``/``max_test`` subsample the splits with ``seed``; ``kwargs`` go to
    :func:`pca_from_features`.
    """
    train_set, test_set = subsample(train_set, max_train, seed=seed), subsample(test_set, max_test, seed=seed)
    train, test = extract_splits(model, train_set, test_set, [model.depth], batch_size=batch_size, progress=progress)
    return pca_from_features(
        train.features[model.depth],
        train.labels,
        test.features[model.depth],
        test.labels,
        seed=seed,
        progress=progress,
        **kwargs,
    )
