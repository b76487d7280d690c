"""``irevnet export MODEL DST``: forward and inverse as ``torch.export`` (or ONNX) programs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_force_argument, check_outputs, dir_path, model_from_spec, model_spec, positive_int

#: The formats ``irevnet export`` writes (``irevnet.export.FORMATS``) and the file suffix of each.
FORMAT_SUFFIX = {"torch": "pt2", "onnx": "onnx"}


def export_files(fmt: str) -> tuple[str, ...]:
    """The files ``irevnet export --format FMT`` writes into its output folder."""
    return (f"forward.{FORMAT_SUFFIX[fmt]}", f"inverse.{FORMAT_SUFFIX[fmt]}", "meta.json")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export Φ + classifier and Φ⁻¹ with torch.export (or ONNX) into a folder",
        description="Write DST/forward.pt2 (x -> (logits, Φ)), DST/inverse.pt2 (Φ -> x) and DST/meta.json; "
        "with --format onnx, DST/forward.onnx and DST/inverse.onnx instead, checked in onnxruntime against the "
        "eager model (relative error <= 1e-5, recorded in meta.json). Eval mode, dynamic batch size, spatial "
        "size fixed to the model's input shape (or --size).",
    )
    p.add_argument("model", metavar="PRESET|CHECKPOINT", type=model_spec)
    p.add_argument("dst", type=dir_path, help="output folder (created if needed)")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"), help="input size (default: the model's)")
    p.add_argument(
        "--format",
        choices=tuple(FORMAT_SUFFIX),
        default="torch",
        help="torch: torch.export programs (default); onnx: ONNX via the dynamo exporter (needs "
        "pip install 'irevnet[onnx]')",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_force_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    files = export_files(args.format)
    check_outputs([Path(args.dst) / f for f in files], force=args.force, inputs=[args.model])

    import torch

    from ..export import export_model

    model = model_from_spec(args.model)
    c, h, w = model.input_shape
    h, w = args.size or (h, w)
    export_model(model, torch.zeros(2, c, h, w), args.dst, format=args.format, progress=not args.no_progress)
    print(f"wrote {Path(args.dst) / files[0]}, {files[1]} and meta.json ({model.config.name}, input {c}x{h}x{w})")
    return 0
