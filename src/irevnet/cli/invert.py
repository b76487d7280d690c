"""``irevnet invert MODEL IMAGE... --out FILE.png``: reconstruct image files through Φ⁻¹(Φ(x))."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    FIGURE_SUFFIXES,
    add_force_argument,
    check_outputs,
    existing_file,
    figure_path,
    int_range,
    model_from_spec,
    model_spec,
    read_images,
)

if TYPE_CHECKING:
    from torch import Tensor


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "invert",
        help="reconstruct image files from their final representation Φ (or interpolate in Φ)",
        description="Preprocess each image as the model's evaluation does (ImageNet models: resize 256, "
        "centre crop 224, ImageNet mean/std), compute Φ⁻¹(Φ(x)) in eval mode, undo the normalization and "
        "write a PNG grid (originals above reconstructions) plus a JSON of per-image errors next to it. "
        "With --interpolate A B, write the strip Φ⁻¹(tΦ(A) + (1-t)Φ(B)) above the pixel-space line instead, "
        "and a JSON of its errors.",
    )
    p.add_argument(
        "model", metavar="PRESET|CHECKPOINT", type=model_spec, help="an irevnet checkpoint (or a preset: untrained)"
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", type=existing_file, help="image files (any format PIL reads)")
    p.add_argument(
        "--out",
        required=True,
        type=figure_path,
        help=f"figure to write ({', '.join(FIGURE_SUFFIXES)}: the suffix picks the format); "
        "the errors go to the same path with .json",
    )
    p.add_argument(
        "--interpolate",
        nargs=2,
        metavar=("A", "B"),
        type=existing_file,
        help="write the interpolation strip from A to B (and its errors to the .json)",
    )
    p.add_argument(
        "--steps", type=int_range(2, 64), default=9, help="images in the interpolation strip, 2 to 64 (default: 9)"
    )
    p.add_argument(
        "--float64",
        action="store_true",
        help="reconstruct in float64 (on a copy of the model): exact to ~1e-10 even where the "
        "float32 inverse is ill-conditioned",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_force_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.interpolate):
        raise ValueError("give either IMAGE files to reconstruct or --interpolate A B (not both)")
    out = Path(args.out)
    check_outputs(
        [out, out.with_suffix(".json")], force=args.force, inputs=[args.model, *args.images, *(args.interpolate or [])]
    )

    from ..analysis import interpolate, interpolation_errors, pixel_interpolate, reconstruct
    from ..analysis.plotting import plot_interpolations, plot_reconstructions, save_figure
    from ..data.transforms import denormalize

    model = model_from_spec(args.model)
    cfg = model.config

    def to_pixels(t: Tensor) -> Tensor:
        return denormalize(t, cfg)

    about = {"model": args.model, "preset": cfg.name, "preprocessing": cfg.data_config}
    if args.interpolate:
        a, b = (read_images([p], cfg) for p in args.interpolate)
        in_phi = to_pixels(interpolate(model, a, b, steps=args.steps, progress=not args.no_progress))
        in_pixels = to_pixels(pixel_interpolate(a, b, steps=args.steps))
        names = [Path(p).name for p in args.interpolate]
        fig = plot_interpolations(in_phi, in_pixels, labels=["A→B"], note=f"A = {names[0]}, B = {names[1]}", cell=1.6)
        save_figure(fig, out)
        errors = interpolation_errors(in_phi, in_pixels)
        report = {
            **about,
            "a": args.interpolate[0],
            "b": args.interpolate[1],
            "error_units": "pixel values in [0, 1], after undoing the normalization",
            **errors,
        }
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        print(
            f"endpoint max abs error {errors['endpoint_max_abs_error']:.2e} (Φ⁻¹(Φ(A)) against A, Φ⁻¹(Φ(B)) "
            f"against B); largest mean distance from the pixel-space line "
            f"{max(errors['mean_abs_difference_from_pixel_path']):.2e}"
        )
        print(f"wrote {out} and {out.with_suffix('.json')}")
        return 0

    x = read_images(args.images, cfg, progress=not args.no_progress)
    rec = reconstruct(model, x, batch_size=1, float64=args.float64, to_pixels=to_pixels, progress=not args.no_progress)
    max_err, rel_err = rec.max_abs_error, rec.relative_error
    floor = rec.floor_relative_error.tolist() if rec.floor_relative_error is not None else [None] * len(x)
    names = [Path(p).name for p in args.images]
    fig = plot_reconstructions(
        to_pixels(x),
        to_pixels(rec.x_hat.float()),
        max_abs_error=float(max_err.max()),
        subject=cfg.name,
        cell=1.6,
        col_labels=[f"{n[:18]}\nmax err {e:.1e}" for n, e in zip(names, max_err.tolist(), strict=True)],
    )
    save_figure(fig, out)
    report = {
        **about,
        "dtype": str(rec.x_hat.dtype).removeprefix("torch."),
        "error_units": "pixel values in [0, 1], after undoing the normalization",
        "floor": "floor_relative_error: the exact (float64) inverse of Φ rounded to the model's dtype; null in float64",
        "images": [
            {"path": p, "max_abs_error": m, "relative_error": r, "floor_relative_error": f}
            for p, m, r, f in zip(args.images, max_err.tolist(), rel_err.tolist(), floor, strict=True)
        ],
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    for p, m, r, f in zip(args.images, max_err.tolist(), rel_err.tolist(), floor, strict=True):
        floor_text = f"conditioning floor {f:.2e}" if f is not None else "float64"
        print(f"{p}: max abs error {m:.2e}, relative error {r:.2e} ({floor_text})")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0
