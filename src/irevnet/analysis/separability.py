"""Figure 6, progressive linear separation: 1-NN and linear-SVM accuracy at every depth.

At each block ``j`` the spatially averaged features ``mean_{h,w} Φ_j(x)`` are standardized
with statistics of the training split only, then a 1-nearest-neighbour classifier (ℓ2)
and a linear SVM are fit on the training split and scored on the test split. The paper
finds both accuracies grow with depth, with the largest jump near the end; the same
curves for the untrained network of the same configuration show how much of that is
learned rather than architectural.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..model import IRevNet
from .features import FeatureSet, extract_splits, select_blocks, subsample, untrained_like

__all__ = [
    "DEFAULT_CS",
    "accuracies_of",
    "classifier_accuracies",
    "linear_separability",
    "separability_from_features",
    "standardize",
]

log = logging.getLogger(__name__)

#: Grid of SVM regularization strengths searched by cross-validation.
DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance per feature, with statistics of ``train`` only (no test leakage).

    ``(N_train, D), (N_test, D) -> same shapes``. Constant features (e.g. the zero-padded
    channels of an injective network) stay constant instead of dividing by zero.
    """
    scaler = StandardScaler().fit(train)
    return scaler.transform(train), scaler.transform(test)


def _svm(C: float, seed: int) -> LinearSVC:
    # The primal solver (trust-region Newton) converges in tens of iterations on standardized
    # data at tol=1e-3 (the default 1e-4 costs ~20x more for the same accuracy), and draws no
    # random numbers: the dual one draws from liblinear's one process-wide generator, so fits on
    # several threads (accuracies_of) would interleave its stream.
    return LinearSVC(C=C, dual=False, tol=1e-3, max_iter=2000, random_state=seed)


class _IgnoreConvergenceWarnings:
    """ConvergenceWarning ignored while any thread is inside: the first to enter installs the filter,
    the last to leave restores the filters. (``warnings.catch_warnings`` alone is not thread-safe: the
    filter list is process-wide, so overlapping users on threads would restore each other's copy.)
    Every scikit-learn call of a fit runs inside: scikit-learn's parallel helpers enter
    ``catch_warnings`` themselves (even with ``n_jobs=1``, e.g. in a 1-NN's ``score``), and one
    outside, on another thread, could restore a list holding our filter after the last user left.

    Small C on hard (early-block) features may stop at max_iter; the accuracy is still that of a
    valid linear classifier, and the search only needs to rank the Cs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: warnings.catch_warnings[None] | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = warnings.catch_warnings()
                self._saved.__enter__()
                warnings.simplefilter("ignore", ConvergenceWarning)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._saved is not None:
                self._saved.__exit__(None, None, None)
                self._saved = None


_ignore_convergence_warnings = _IgnoreConvergenceWarnings()


def classifier_accuracies(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int = 0,
    cv_samples: int = 2000,
    cv_folds: int = 3,
    Cs: Sequence[float] = DEFAULT_CS,
) -> dict[str, float]:
    """Test accuracy of a 1-NN (ℓ2) classifier and of a linear SVM, both fit on the training split.

    ``x_*`` are ``(N, D)`` features, already prepared (standardized, projected, ...);
    ``y_*`` are ``(N,)`` integer labels. The SVM's ``C`` is chosen from ``Cs`` by stratified
    ``cv_folds``-fold cross-validation on at most ``cv_samples`` training images (drawn with
    ``seed``), then the SVM is refit on the whole training split with that ``C``.

    Returns ``{"nn": accuracy, "svm": accuracy, "svm_C": chosen C}``; deterministic for a
    given ``seed``.
    """
    rng = np.random.default_rng(seed)
    cv_idx = np.arange(len(y_train))
    if len(cv_idx) > cv_samples:
        cv_idx = np.sort(rng.choice(len(y_train), size=cv_samples, replace=False))
    classes, counts = np.unique(y_train[cv_idx], return_counts=True)
    if counts.min() < cv_folds:  # scikit-learn's own message does not say which data or what to do
        raise ValueError(
            f"the SVM's {cv_folds}-fold cross-validation needs at least {cv_folds} training images of "
            f"every class, but class {classes[counts.argmin()]} has {counts.min()}: use more training "
            "images (e.g. a larger max_train)"
        )
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    with _ignore_convergence_warnings:  # around every scikit-learn call (_IgnoreConvergenceWarnings)
        nn = KNeighborsClassifier(n_neighbors=1).fit(x_train, y_train)
        search = GridSearchCV(_svm(1.0, seed), {"C": list(Cs)}, cv=folds, n_jobs=1)
        search.fit(x_train[cv_idx], y_train[cv_idx])
        best_c = float(search.best_params_["C"])
        svm = _svm(best_c, seed).fit(x_train, y_train)
        return {"nn": float(nn.score(x_test, y_test)), "svm": float(svm.score(x_test, y_test)), "svm_C": best_c}


def accuracies_of(
    problems: Sequence[Callable[[], tuple[np.ndarray, np.ndarray]]],
    y_train: np.ndarray,
    y_test: np.ndarray,
    *,
    progress: bool = False,
    desc: str = "classifiers",
    unit: str = "fit",
    **kwargs: Any,
) -> list[dict[str, float]]:
    """:func:`classifier_accuracies` of the ``(x_train, x_test)`` each of ``problems`` returns (same labels), in order.

    The problems run on ``torch.get_num_threads()`` threads: liblinear and the neighbour search
    release the GIL, and one fit uses one core, so two cores halve the time of the analyses'
    dozens of fits. Each fit is seeded on its own and draws no shared random numbers (:func:`_svm`):
    the results are those of a sequential run. A problem is built (e.g. standardized) in its
    thread, so only as many copies of the features as threads exist at once.
    """

    def fit(problem: Callable[[], tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        x_train, x_test = problem()
        acc = classifier_accuracies(x_train, y_train, x_test, y_test, **kwargs)
        bar.update()
        return acc

    with (
        ThreadPoolExecutor(max_workers=max(1, min(len(problems), torch.get_num_threads()))) as pool,
        tqdm(total=len(problems), desc=desc, unit=unit, disable=not progress, leave=False) as bar,
    ):
        return list(pool.map(fit, problems))


def separability_from_features(
    train: FeatureSet, test: FeatureSet, *, progress: bool = True, desc: str = "separability", **kwargs: Any
) -> dict[str, list[Any]]:
    """Accuracy by depth from features already extracted (:func:`averaged_features`).

    Evaluates every block present in both ``train`` and ``test``. ``kwargs`` go to
    :func:`classifier_accuracies`. Returns ``{"blocks": [j...], "dims": [C_j...], "nn": [...],
    "svm": [...], "svm_C": [...]}``, lists aligned with ``blocks``.
    """
    blocks = [j for j in train.blocks if j in test.features]
    out: dict[str, list[Any]] = {"blocks": blocks, "dims": [], "nn": [], "svm": [], "svm_C": []}
    problems = [partial(standardize, train.features[j], test.features[j]) for j in blocks]
    accs = accuracies_of(problems, train.labels, test.labels, progress=progress, desc=desc, unit="block", **kwargs)
    for j, acc in zip(blocks, accs, strict=True):
        out["dims"].append(int(train.features[j].shape[1]))
        for key in ("nn", "svm", "svm_C"):
            out[key].append(acc[key])
        log.debug("block %d: 1-NN %.4f, SVM %.4f (C=%g)", j, acc["nn"], acc["svm"], acc["svm_C"])
    return out


def linear_separability(
    model: IRevNet,
    train_set: Dataset[Any],
    test_set: Dataset[Any],
    *,
    every: int | None = None,
    baseline_seed: int | None = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    features: tuple[FeatureSet, FeatureSet] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Figure 6: 1-NN and linear-SVM test accuracy on ``mean_{h,w} Φ_j`` for blocks ``j`` (every ``every``-th;
    None: about :data:`~irevnet.analysis.features.DEFAULT_DEPTHS` of them, :func:`select_blocks`).

    ``train_set``/``test_set`` yield ``(image, label)``; ``max_train``/``max_test`` subsample
    them (with ``seed``); ``batch_size``/``num_workers`` go to the data loaders. With
    ``baseline_seed`` not None the same curves are computed for :func:`untrained_like`
    ``(model, seed=baseline_seed)``. ``features``: the trained model's (train, test)
    features of these splits at these blocks if already extracted (:func:`extract_splits`),
    to save a pass over the data. ``kwargs`` go to :func:`classifier_accuracies`.

    Returns ``{"blocks", "trained": {...}, "untrained": {...} or None, "baseline_seed",
    "train_images", "test_images"}`` where each curve is the dict of :func:`separability_from_features`.
    """
    train_set = subsample(train_set, max_train, seed=seed)
    test_set = subsample(test_set, max_test, seed=seed)
    blocks = select_blocks(model.depth, every)
    curves: dict[str, Any] = {"trained": None, "untrained": None}
    models = {"trained": model}
    if baseline_seed is not None:
        models["untrained"] = untrained_like(model, seed=baseline_seed)
    for name, net in models.items():
        feats = (
            features
            if name == "trained" and features is not None
            else extract_splits(
                net,
                train_set,
                test_set,
                blocks,
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
                name=name,
            )
        )
        curves[name] = separability_from_features(
            *feats, progress=progress, seed=seed, desc=f"separability {name}", **kwargs
        )
    return {
        "blocks": blocks,
        **curves,
        "baseline_seed": baseline_seed,
        "train_images": len(train_set),  # type: ignore[arg-type]  # torch's Dataset declares no __len__
        "test_images": len(test_set),  # type: ignore[arg-type]
    }
