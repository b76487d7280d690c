"""Helpers shared by several CLI commands."""

from __future__ import annotations

from pathlib import Path

import argparse
from typing import Any

from ..checkpoint import load_model
from ..config import get_preset, list_presets
from ..factory import create_model
from ..model import IRevNet
from ..training.recipes import parse_overrides


def model_from_spec(spec: str) -> IRevNet:
    """A preset name builds a fresh model; anything else is read as a checkpoint path."""
    if spec in list_presets():
        return create_model(spec)
    if not Path(spec).exists():
        raise ValueError(f"{spec!r} is neither a preset ({', '.join(list_presets())}) nor an existing checkpoint file")
    return load_model(spec)


def add_model_overrides_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--model KEY=VALUE`` (repeatable): overrides of the ``--preset`` configuration."""
    parser.add_argument("--model", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=help)


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--model`` overrides, parsed to the types of ``--preset``'s configuration fields."""
    return parse_overrides(get_preset(args.preset), args.model_overrides)
