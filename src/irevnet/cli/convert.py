"""``irevnet convert SRC DST``: the authors' checkpoint -> a self-describing irevnet checkpoint."""

from __future__ import annotations

import argparse
import logging
import os

from ..config import list_presets
from .common import (
    add_force_argument,
    add_model_overrides_argument,
    check_outputs,
    existing_file,
    model_output,
    model_output_files,
    model_overrides,
    write_model,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint of the authors' code (jhjacobsen/pytorch-i-revnet) to irevnet",
        description="Read a reference checkpoint (a dict with 'state_dict', keys optionally prefixed by "
        "'module.', or a bare state dict) without executing pickled code, map it strictly onto the "
        "configuration given by --preset and the overrides, and write an irevnet checkpoint. Exits non-zero, "
        "listing missing, unexpected and mis-shaped keys, if the checkpoint does not match.",
    )
    p.add_argument(
        "src", type=existing_file, help="reference checkpoint, e.g. the authors' ImageNet i-RevNet-301 .pth.tar"
    )
    p.add_argument(
        "dst",
        type=model_output,
        help="where to write: a .pt/.pth checkpoint file, or any other name for a model folder "
        "(config.json + model.safetensors, loadable with IRevNet.from_pretrained)",
    )
    p.add_argument(
        "--preset",
        default="imagenet-b",
        choices=list_presets(),
        help="configuration of the reference model (default: imagenet-b, the authors' ImageNet model)",
    )
    add_model_overrides_argument(
        p,
        "configuration override for custom reference models, as in `irevnet train` "
        "(repeatable), e.g. --model num_classes=100 --model blocks=2,2,2",
    )
    add_force_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_outputs(model_output_files(args.dst), force=args.force, inputs=[args.src])
    overrides = model_overrides(args)

    from ..convert import convert_reference_checkpoint

    # Seconds for the ImageNet models (0.5 GB read, mapped and written): say what is going on.
    log.info("converting %s (%.0f MB) to %s ...", args.src, os.path.getsize(args.src) / 1e6, args.preset)
    model, report, metadata = convert_reference_checkpoint(args.src, args.preset, **overrides)
    log.info("writing %s ...", args.dst)
    written = write_model(model, args.dst, converted_from=str(args.src), reference_metadata=metadata)
    print(report.format())
    extra = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metadata.items())
    print(f"wrote {written}: {args.preset} ({model.num_parameters():,} parameters){' from ' + extra if extra else ''}")
    return 0
