"""``irevnet convert SRC DST``: the authors' checkpoint -> a self-describing irevnet checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from ..checkpoint import save_model
from ..config import list_presets
from ..convert import convert_reference_checkpoint


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert a checkpoint of the authors' code (jhjacobsen/pytorch-i-revnet) to irevnet",
        description="Read a reference checkpoint (a dict with 'state_dict', keys optionally prefixed by "
        "'module.', or a bare state dict) without executing pickled code, map it strictly onto the "
        "configuration given by --preset and the overrides, and write an irevnet checkpoint. Exits non-zero, "
        "listing missing, unexpected and mis-shaped keys, if the checkpoint does not match.",
    )
    p.add_argument("src", help="reference checkpoint, e.g. the authors' ImageNet i-RevNet-301 .pth.tar")
    p.add_argument("dst", help="irevnet checkpoint to write")
    p.add_argument("--preset", default="imagenet-b", choices=list_presets(),
                   help="configuration of the reference model (default: imagenet-b, the authors' ImageNet model)")
    g = p.add_argument_group("configuration overrides (for custom reference models)")
    g.add_argument("--blocks", type=_ints, help="blocks per stage, e.g. 6,16,72,6")
    g.add_argument("--strides", type=_ints, help="stride of each stage's first block, e.g. 2,2,2,2")
    g.add_argument("--channels", type=_ints, help="output channels per half for each stage, e.g. 24,96,384,1536")
    g.add_argument("--input-shape", type=_ints, metavar="C,H,W", help="input shape, e.g. 3,224,224")
    g.add_argument("--num-classes", type=int)
    g.add_argument("--init-block-size", type=int, help="block size of the initial ψ (0: none)")
    g.add_argument("--mult", type=int, help="bottleneck width divisor")
    g.add_argument("--dropout", type=float, help="dropout inside the bottleneck (recorded for fine-tuning)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = ("blocks", "strides", "channels", "input_shape", "num_classes", "init_block_size", "mult", "dropout")
    overrides: dict[str, Any] = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    model, report, metadata = convert_reference_checkpoint(args.src, args.preset, **overrides)
    save_model(model, args.dst, converted_from=str(args.src), reference_metadata=metadata)
    print(report.format())
    extra = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in metadata.items())
    print(f"wrote {args.dst}: {args.preset} ({model.num_parameters():,} parameters){' from ' + extra if extra else ''}")
    return 0
