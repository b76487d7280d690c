"""``irevnet info PRESET|CHECKPOINT``: architecture summary."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable

from ..config import get_preset, list_presets
from ..summary import describe_config
from .common import model_from_spec, model_spec


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="parameters, depth, per-stage shapes and Φ size of a preset or checkpoint")
    p.add_argument("model", metavar="PRESET|CHECKPOINT", type=model_spec)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


#: Class names printed (``--json`` gives them all).
_SHOWN_NAMES = 10


def _shape(s: Iterable[int]) -> str:
    return "x".join(map(str, s))


def run(args: argparse.Namespace) -> int:
    if args.model in list_presets():
        d = describe_config(get_preset(args.model))  # no torch import: starts in a fraction of a second
    else:
        d = model_from_spec(args.model).describe()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(
        f"{d['name']}: i-RevNet, {d['kind']}, {d['blocks']} blocks ({d['layers']} layers), "
        f"{d['parameters']:,} parameters, {d['num_classes']} classes"
    )
    names = d["label_names"]
    if names:
        shown = ", ".join(names[:_SHOWN_NAMES]) + (f", ... ({len(names)} in all)" if len(names) > _SHOWN_NAMES else "")
        print(f"  classes         {shown}")
    print(f"  input           {_shape(d['input_shape'])}")
    print(f"  after init ψ    {_shape(d['after_init_psi'])}")
    for s in d["stages"]:
        print(
            f"  stage {s['stage']}: {s['blocks']:3d} blocks, stride {s['stride']}, "
            f"{s['channels_per_half']} ch/half -> {_shape(s['output_shape'])}"
        )
    ratio = d["phi_size"] / d["input_size"]
    print(
        f"  Φ               {_shape(d['phi_shape'])} = {d['phi_size']:,} values "
        f"({ratio:g}x the input's {d['input_size']:,})"
    )
    return 0
