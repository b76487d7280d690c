"""Read any source (:mod:`.source`) as configuration + tensors, without building a model."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..config import IRevNetConfig
from .formats import parse_config, read_checkpoint, read_model_folder
from .hub import download
from .names import WEIGHTS_NAME
from .source import KINDS, Kind, Source, resolve_source

__all__ = ["Weights", "read_weights"]

log = logging.getLogger(__name__)


@dataclass
class Weights:
    """A model as read from a source: its configuration and state dict (on the CPU).

    ``path``: the file the tensors came from (a checkpoint, or a folder's ``model.safetensors``).
    A checkpoint's other entries (the trainer state of a ``last.pt``, ...) are not kept.
    """

    config: IRevNetConfig
    state: dict[str, Tensor]
    path: Path
    source: Source


def read_weights(
    source: str | os.PathLike[str] | Source,
    *,
    kinds: tuple[Kind, ...] = KINDS,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Weights:
    """The configuration and weights (on the CPU) of ``source`` (a checkpoint file, a model folder, a
    run folder or a Hub id; see :func:`~irevnet.io.source.resolve_source`), among ``kinds``.

    On the CPU, so that a model built from them is moved to its device once, with nothing else
    there (:meth:`IRevNet.from_weights`). ``revision`` and ``cache_dir`` apply to Hub ids. Every
    problem is a :class:`~irevnet.errors.CheckpointError` naming the file.
    """
    src = source if isinstance(source, Source) else resolve_source(source, kinds=kinds)
    if src.kind == "hub":
        folder = download(src.given, revision=revision, cache_dir=cache_dir)
        return Weights(*read_model_folder(folder), path=folder / WEIGHTS_NAME, source=src)
    assert src.path is not None
    if src.kind == "model folder":
        return Weights(*read_model_folder(src.path), path=src.path / WEIGHTS_NAME, source=src)
    if src.kind == "run folder":
        log.info("reading %s from run folder %s", src.path.name, src.given)
    payload = read_checkpoint(src.path)
    return Weights(parse_config(payload["config"], src.path), payload["state_dict"], src.path, src)
