"""``irevnet predict SOURCE IMAGE... [--top-k K]``: the classes a model sees in image files, by name."""

from __future__ import annotations

import argparse
import json

from .common import SOURCE_HELP, existing_file, int_range, model_path, positive_int, read_images


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="the most probable classes of image files, named by the model's class names",
        description="Preprocess each image as the model's evaluation does (its data config: resize, centre crop, "
        "normalize), and print one line per image: the top-k class names with their softmax probabilities. "
        "Models trained by irevnet name their classes (ImageFolder folders, CIFAR label names, digits 0-9); "
        "others print class indices.",
    )
    p.add_argument("model", metavar="SOURCE", type=model_path, help=SOURCE_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE", type=existing_file, help="image files (any format PIL reads)")
    p.add_argument(
        "--top-k",
        type=int_range(1, 1000),
        default=5,
        metavar="K",
        help="classes per image, 1 to 1000 (default: 5; at most the model's number of classes)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: the GPU when present (default), else the CPU",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list: per image, its top-k classes")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.load import load_model
    from ..predict import predict
    from ..training.device import resolve_device

    model = load_model(args.model, map_location=resolve_device(args.device))
    x = read_images(args.images, model.config, progress=not args.no_progress)
    predictions = predict(model, x, top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        print(
            json.dumps(
                [
                    {"image": path, "top_k": [p.to_dict() for p in top]}
                    for path, top in zip(args.images, predictions, strict=True)
                ],
                indent=2,
            )
        )
        return 0
    for path, top in zip(args.images, predictions, strict=True):
        print(f"{path}: " + ", ".join(f"{p.label} {p.probability:.3f}" for p in top))
    return 0
