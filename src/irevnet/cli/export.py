"""``irevnet export MODEL DST``: forward and inverse as ``torch.export`` programs."""

from __future__ import annotations

import argparse

import torch

from ..export import export_model
from .common import model_from_spec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export Φ + classifier and Φ⁻¹ with torch.export into a folder",
        description="Write DST/forward.pt2 (x -> (logits, Φ)), DST/inverse.pt2 (Φ -> x) and DST/meta.json. "
        "Eval mode, dynamic batch size, spatial size fixed to the model's input shape (or --size).",
    )
    p.add_argument("model", metavar="PRESET|CHECKPOINT")
    p.add_argument("dst", help="output folder")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the model's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = model_from_spec(args.model)
    c, h, w = model.input_shape
    h, w = args.size or (h, w)
    export_model(model, torch.zeros(2, c, h, w), args.dst)
    print(f"wrote {args.dst}/forward.pt2, inverse.pt2 and meta.json ({model.config.name}, input {c}x{h}x{w})")
    return 0
