"""Where a model comes from: the one resolver of a source, for the library and every command.

A source is one of:

- a **checkpoint** file (``torch.save``, :mod:`.formats`), e.g. ``runs/x/best.pt``;
- a **model folder** (``config.json`` + ``model.safetensors``), or its ``model.safetensors``;
- a training **run folder** (``irevnet train --out``): its ``best.pt``, else its ``last.pt``;
- a **Hub** id ``owner/name[@revision]`` that is not a local path (a name whose folder exists,
  or that ends like a file, is read as a path).

:func:`resolve_source` decides which, from the file system alone (nothing is read or
downloaded; no torch is imported), so the command line checks a source while it parses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import CheckpointError
from .hub import is_hub_id
from .names import (
    CHECKPOINT_SUFFIXES,
    CONFIG_NAME,
    RUN_BEST,
    RUN_LAST,
    RUN_METRICS,
    RUN_MODELS,
    SAFETENSORS_SUFFIX,
    WEIGHTS_NAME,
)

__all__ = ["KINDS", "PRETRAINED_KINDS", "Kind", "Source", "resolve_source"]

Kind = Literal["checkpoint", "model folder", "run folder", "hub"]
KINDS: tuple[Kind, ...] = ("checkpoint", "model folder", "run folder", "hub")
#: What ``IRevNet.from_pretrained`` reads (Hugging Face's convention).
PRETRAINED_KINDS: tuple[Kind, ...] = ("model folder", "hub")
_TEXT = {
    "checkpoint": "checkpoint file",
    "model folder": "model folder",
    "run folder": "training run folder",
    "hub": "Hub id (owner/name)",
}
_FILE_SUFFIXES = (*CHECKPOINT_SUFFIXES, SAFETENSORS_SUFFIX, ".json", ".tar")


@dataclass(frozen=True)
class Source:
    """A resolved source. ``path``: the checkpoint file (for a run folder, the one chosen in it),
    or the model folder; ``None`` for a Hub id (its folder is known once downloaded)."""

    kind: Kind
    given: str
    path: Path | None

    def __str__(self) -> str:
        return self.given if self.path is None else str(self.path)


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _looks_local(text: str) -> bool:
    path = Path(text)
    return path.suffix.lower() in _FILE_SUFFIXES or (str(path.parent) != "." and path.parent.is_dir())


def _classify(path: Path, given: str) -> Source:
    if path.is_file():
        if path.suffix == SAFETENSORS_SUFFIX:
            return Source("model folder", given, path.parent)
        return Source("checkpoint", given, path)
    if (path / WEIGHTS_NAME).is_file():
        return Source("model folder", given, path)
    for name in RUN_MODELS:
        if (path / name).is_file():
            return Source("run folder", given, path / name)
    if (path / RUN_METRICS).is_file():
        raise CheckpointError(
            f"{given!r} is a training run folder without {RUN_BEST} or {RUN_LAST} yet (they are "
            "written when the first epoch ends, or on a stop signal)"
        )
    if (path / CONFIG_NAME).is_file():
        return Source("model folder", given, path)  # reading it names the missing weights
    raise CheckpointError(
        f"{given!r} is a folder without {CONFIG_NAME} and without {WEIGHTS_NAME}, {RUN_BEST} or "
        f"{RUN_LAST}: neither a model folder nor a training run folder"
    )


def resolve_source(source: str | os.PathLike[str], *, kinds: tuple[Kind, ...] = KINDS) -> Source:
    """Which kind of source ``source`` is (see the module's docstring), among ``kinds``.

    Raises :class:`~irevnet.errors.CheckpointError` naming ``source`` when it does not exist
    (and is no Hub id) or is of a kind not in ``kinds``.
    """
    given = os.fspath(source)
    path = Path(given)
    if path.exists():
        found = _classify(path, given)
        if found.kind not in kinds:
            what = "file" if found.kind == "checkpoint" else _TEXT[found.kind]
            raise CheckpointError(
                f"{given!r} is a {what}, not a {_or([_TEXT[k] for k in kinds])} "
                "(irevnet.load_model reads every kind of source)"
            )
        return found
    if "hub" in kinds and is_hub_id(given) and not _looks_local(given):
        return Source("hub", given, None)
    local = [_TEXT[k] for k in kinds if k != "hub"]
    raise CheckpointError(
        f"{given!r} does not exist"
        + (f": it is neither an existing {_or(local)} nor a Hub id (owner/name)" if "hub" in kinds else "")
    )
