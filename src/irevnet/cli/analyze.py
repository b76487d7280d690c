"""``irevnet analyze CHECKPOINT --data D --out OUT``: the paper's analyses as PNG + JSON files.

The work is :func:`irevnet.analysis.suite.run_analyses`; this module parses flags and prints
each analysis's headline (:mod:`irevnet.analysis.registry`, which imports nothing heavy). It
imports the analysis stack (scikit-learn, SciPy, matplotlib) only when the command runs, so
other commands start fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analysis.registry import ANALYSES, NAMES, get
from ..data.registry import DATASETS
from .common import (
    add_analysis_size_arguments,
    add_force_argument,
    add_format_argument,
    add_workers_argument,
    check_outputs,
    dir_path,
    existing_dir,
    fraction,
    int_range,
    model_path,
    positive_float,
    positive_int,
    seed,
)

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ..config import IRevNetConfig


def _load_data(
    name: str, data_dir: str | None, config: IRevNetConfig, val_split: float | None = None
) -> tuple[Dataset[Any], Dataset[Any]]:
    """``(train_set, test_set)`` of ``--data`` through the model's evaluation preprocessing.

    Features of the training split must not depend on random crops and flips: no augmentation.
    """
    from ..data import build_datasets

    splits = build_datasets(name, data_dir, config=config, augment=False, val_split=val_split)
    assert splits.train is not None  # only eval_only=True leaves it out
    return splits.train, splits.eval


def _window(text: str) -> tuple[int, int, int, int]:
    try:
        top, left, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOP,LEFT,HEIGHT,WIDTH (four integers), got {text!r}") from None
    if top < 0 or left < 0 or h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected TOP,LEFT >= 0 and HEIGHT,WIDTH >= 1, got {text!r}")
    return top, left, h, w


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "analyze",
        help="the paper's analyses of a checkpoint: reconstructions, interpolations, "
        "Jacobian spectrum, separability and contraction with depth (PNG + JSON)",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=model_path)
    p.add_argument("--data", required=True, choices=DATASETS, help="data set to analyse on")
    p.add_argument("--data-dir", default=None, type=existing_dir, help="folder of the data set (not needed for digits)")
    p.add_argument(
        "--val-split",
        type=fraction,
        default=None,
        metavar="F",
        help="imagefolder without val/: the held-out fraction F of each class is the test split, the "
        "rest the training split (the images `irevnet train --val-split F` holds out)",
    )
    p.add_argument("--out", required=True, type=dir_path, help="output folder for NAME.png / NAME.json")
    bijective = [a.name for a in ANALYSES if a.bijective]
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=NAMES,
        help=f"run only these analyses, from {', '.join(NAMES)} (default: all that apply; "
        f"{' and '.join(bijective)} need a bijective model)",
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="subsampling, CV folds and the untrained baseline's "
        "initialization (the seed the model was trained with gives its initial network)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: the GPU when present (default), else the CPU",
    )
    p.add_argument("--batch-size", type=positive_int, default=256)
    add_workers_argument(p)
    add_analysis_size_arguments(p)
    p.add_argument("--max-test", type=positive_int, default=None, help="subsample the test split to this many images")
    p.add_argument(
        "--num-images",
        type=int_range(1, 128),
        default=16,
        help="reconstruct: images shown, 1 to 128 (the grid wraps every 16; all test images are measured)",
    )
    p.add_argument(
        "--floor-images",
        type=positive_int,
        default=None,
        help="reconstruct: the conditioning floor (float64 passes, slow on a CPU) of the first N test images "
        "(default: those shown, --num-images; a number above the split's size: all)",
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="reconstruct: in float64 (on a copy of the model), exact to ~1e-10 even where the "
        "float32 inverse is ill-conditioned",
    )
    p.add_argument(
        "--pairs",
        type=int_range(1, 100),
        default=6,
        help="interpolate, metamers, edits: number of pairs shown (1 to 100)",
    )
    p.add_argument("--steps", type=int_range(2, 64), default=9, help="interpolate: images per row (2 to 64)")
    p.add_argument(
        "--window",
        type=_window,
        default=None,
        metavar="TOP,LEFT,HEIGHT,WIDTH",
        help="spectrum: pixel window of the perturbation (default: the whole image up to 1,024 values, "
        "else the paper's window, a centred box of 100/224 of each side: 100x100 on 224x224, 14x14 on 32x32)",
    )
    p.add_argument("--spectrum-images", type=positive_int, default=1, help="spectrum: number of test images")
    p.add_argument(
        "--spectrum-method",
        choices=["auto", "exact", "float32", "lanczos"],
        default="auto",
        help="spectrum: exact (the whole Jacobian in float64), float32 (its columns in float32, "
        "4-6x faster, with a bound on the error in the JSON) or Lanczos (top k); auto (default) picks by "
        "the window's size (docs/analysis.md)",
    )
    p.add_argument(
        "--spectrum-k", type=positive_int, default=None, help="spectrum: number of top singular values (Lanczos)"
    )
    p.add_argument(
        "--ood-noise",
        type=positive_float,
        default=0.2,
        help="ood: noise standard deviation of the noised copies, as a fraction of the value range",
    )
    p.add_argument(
        "--every",
        type=positive_int,
        default=None,
        help="separability: evaluate every k-th block and the last (default: all blocks up to 8, "
        "else about 8 evenly spaced: the 54-block cifar10 every 7th)",
    )
    p.add_argument("--no-baseline", action="store_true", help="separability: skip the untrained baseline")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_format_argument(p)
    add_force_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Without --only: every analysis that applies to the model (known once it is loaded).
    names = [n for n in NAMES if n in (args.only or NAMES)]
    out = Path(args.out)
    check_outputs(
        [out / f"{n}{ext}" for n in names for ext in (f".{args.format}", ".json")],
        force=args.force,
        inputs=[args.checkpoint],
    )

    # Imported here, not at the top: torch, scikit-learn, SciPy and matplotlib cost seconds at start-up.
    from ..analysis.suite import AnalysisOptions, run_analyses
    from ..io.load import load_model
    from ..training.data_loading import default_workers
    from ..training.device import resolve_device

    model = load_model(args.checkpoint, map_location=resolve_device(args.device))
    train_set, test_set = _load_data(args.data, args.data_dir, model.config, args.val_split)
    image_shape = tuple(test_set[0][0].shape)
    if image_shape[0] != model.input_shape[0]:
        raise ValueError(
            f"{args.data} images are {image_shape}, but the checkpoint expects {model.input_shape[0]} "
            f"channel(s) (input_shape {model.input_shape})"
        )
    opts = AnalysisOptions(
        num_images=args.num_images,
        floor_images=args.floor_images,
        pairs=args.pairs,
        steps=args.steps,
        window=args.window,
        metamer_pairs=args.metamer_pairs,
        metamer_steps=args.metamer_steps,
        ood_noise=args.ood_noise,
        spectrum_images=args.spectrum_images,
        spectrum_method=args.spectrum_method,
        spectrum_k=args.spectrum_k,
        every=args.every,
        baseline=not args.no_baseline,
        max_train=args.max_train,
        max_test=args.max_test,
        batch_size=args.batch_size,
        workers=default_workers(args.data) if args.workers is None else args.workers,
        seed=args.seed,
        progress=not args.no_progress,
        float64=args.float64,
        format=args.format,
    )
    results = run_analyses(model, train_set, test_set, args.out, names if args.only else None, opts)
    for name, r in results.items():
        print(f"{name:12s} {get(name).headline(r)}  -> {Path(args.out) / name}.{args.format}/.json")
    return 0
