"""Helpers shared by several CLI commands."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_model
from ..config import list_presets
from ..factory import create_model
from ..model import IRevNet


def model_from_spec(spec: str) -> IRevNet:
    """A preset name builds a fresh model; anything else is read as a checkpoint path."""
    if spec in list_presets():
        return create_model(spec)
    if not Path(spec).exists():
        raise ValueError(f"{spec!r} is neither a preset ({', '.join(list_presets())}) nor an existing checkpoint file")
    return load_model(spec)
