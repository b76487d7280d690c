"""``irevnet export MODEL DST``: forward and inverse as ``torch.export`` programs."""

from __future__ import annotations

import argparse

from pathlib import Path

from .common import add_force_argument, check_outputs, dir_path, model_from_spec, model_spec, positive_int

#: The files ``irevnet export`` writes into its output folder.
EXPORT_FILES = ("forward.pt2", "inverse.pt2", "meta.json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export Φ + classifier and Φ⁻¹ with torch.export into a folder",
        description="Write DST/forward.pt2 (x -> (logits, Φ)), DST/inverse.pt2 (Φ -> x) and DST/meta.json. "
        "Eval mode, dynamic batch size, spatial size fixed to the model's input shape (or --size).",
    )
    p.add_argument("model", metavar="PRESET|CHECKPOINT", type=model_spec)
    p.add_argument("dst", type=dir_path, help="output folder (created if needed)")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("H", "W"),
                   help="input size (default: the model's)")
    add_force_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs([Path(args.dst) / f for f in EXPORT_FILES], force=args.force, inputs=[args.model])

    import torch

    from ..export import export_model

    model = model_from_spec(args.model)
    c, h, w = model.input_shape
    h, w = args.size or (h, w)
    export_model(model, torch.zeros(2, c, h, w), args.dst)
    print(f"wrote {args.dst}/forward.pt2, inverse.pt2 and meta.json ({model.config.name}, input {c}x{h}x{w})")
    return 0
