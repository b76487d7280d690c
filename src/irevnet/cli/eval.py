"""``irevnet eval CHECKPOINT --data D [--data-dir DIR]``: top-1 / top-5 of a checkpoint on a data set."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from ..io.names import RUN_CONFIG
from .common import SOURCE_HELP, model_path, positive_int
from .train import add_common_arguments

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1 and top-5 accuracy of a checkpoint on a data set's evaluation split",
        description="Evaluate a checkpoint (irevnet's own, a training run's last.pt/best.pt, or a converted one). "
        "--data imagefolder takes a folder with val/ or a folder of class subfolders; for a checkpoint of a "
        "run trained with --val-split on the same folder, the part that run held out. Images get the "
        "model's evaluation preprocessing (its data config; ImageNet presets: resize 256, centre crop 224, "
        "ImageNet mean/std).",
    )
    p.add_argument("checkpoint", metavar="SOURCE", type=model_path, help=SOURCE_HELP)
    add_common_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument(
        "--per-class",
        action="store_true",
        help="also the top-1 accuracy of each class, named by the model's class names",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from ..data import build_eval_dataset
    from ..io.load import load_model
    from ..predict import PerClassAccuracy, class_names
    from ..training import evaluate
    from ..training.data_loading import default_workers
    from ..training.device import AMP_DTYPES, resolve_device

    val_split, recorded = args.val_split, None
    if val_split is None:
        val_split, recorded = _recorded_split(args.checkpoint, args.data, args.data_dir) or (None, None)
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, map_location=device)
    cfg = model.config
    data = build_eval_dataset(
        args.data, args.data_dir, config=cfg, synthetic_size=args.synthetic_size, val_split=val_split
    )
    if data.num_classes != cfg.num_classes:
        raise ValueError(
            f"{args.checkpoint} predicts {cfg.num_classes} classes but {args.data} has "
            f"{data.num_classes}; class indices would not match"
        )
    if tuple(data.input_shape) != cfg.input_shape:
        raise ValueError(
            f"{args.checkpoint} expects inputs of shape {cfg.input_shape} but {args.data} "
            f"yields {tuple(data.input_shape)}"
        )
    if cfg.label_names is not None and data.class_names is not None and cfg.label_names != data.class_names:
        at = next(i for i, (a, b) in enumerate(zip(cfg.label_names, data.class_names, strict=True)) if a != b)
        log.warning(
            "%s names its classes differently from %s (class %d: %r vs %r): the accuracy counts class "
            "indices, which may not mean the same classes",
            args.checkpoint,
            args.data,
            at,
            cfg.label_names[at],
            data.class_names[at],
        )
    workers = default_workers(args.data) if args.workers is None else args.workers
    loader = DataLoader(data.eval, batch_size=args.batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    per_class = PerClassAccuracy(cfg.num_classes) if args.per_class else None
    stats = evaluate(
        model,
        loader,
        device=device,
        progress=not args.no_progress,
        amp_dtype=AMP_DTYPES[args.amp],
        on_batch=per_class.update if per_class is not None else None,
    )
    result = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "images": stats.samples,
        "top1": stats.top1,
        "top5": stats.top5,
        "loss": stats.loss,
        "seconds": round(stats.seconds, 2),
    }
    if val_split is not None:
        result["val_split"] = val_split
    rows = per_class.rows(class_names(cfg)) if per_class is not None else None
    if rows is not None:
        result["per_class"] = rows
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    held = (
        ""
        if val_split is None
        else f", the held-out {val_split:g} of each class" + (f" (as recorded in {recorded})" if recorded else "")
    )
    print(
        f"top-1 {100 * stats.top1:.3f}%  top-5 {100 * stats.top5:.3f}%  loss {stats.loss:.4f}  "
        f"({stats.samples} images, {args.data}{held})"
    )
    if rows is not None:
        width = max(len(r["label"]) for r in rows)
        for r in rows:
            acc = "     -" if r["top1"] is None else f"{100 * r['top1']:6.2f}%"
            print(f"  {r['label']:<{width}}  top-1 {acc}  ({r['images']} images)")
    return 0


def _recorded_split(checkpoint: str, data: str, data_dir: str | None) -> tuple[float, Path] | None:
    """``(val_split, RUN/config.json)`` when ``checkpoint`` belongs to a training run (it is the run
    folder or a file in it) that held out ``val_split`` of this same image folder; else ``None``."""
    path = Path(checkpoint)
    config = (path if path.is_dir() else path.parent) / RUN_CONFIG
    try:
        run = json.loads(config.read_text())["train"]
        split, trained_on = run.get("val_split"), run.get("data_dir")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no run folder: nothing recorded
        return None
    if not split or run.get("data") != data or data_dir is None or trained_on is None:
        return None
    try:
        if os.path.samefile(trained_on, data_dir):
            return float(split), config
    except OSError:  # the folder it was trained on is gone (or was recorded relative to another directory)
        pass
    log.warning(
        "%s records a run that held out %g of %s; %s is not that folder, so all of it is evaluated "
        "(--val-split F evaluates a held-out part)",
        config,
        split,
        trained_on,
        data_dir,
    )
    return None
