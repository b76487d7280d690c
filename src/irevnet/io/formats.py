"""irevnet's two file formats, read and written as configuration + tensors (no model is built here).

A **checkpoint** is a ``torch.save`` file holding only tensors and plain Python containers::

    {"format": "irevnet", "version": 1, "config": {...}, "state_dict": {...}, **extras}

``extras`` (optimizer state, epoch, RNG states, ...) ride along for the trainer; readers of
the model ignore them. A **model folder** follows the Hugging Face layout::

    DIR/config.json        {"format": "irevnet", "version": 1, "config": {...},
                            "id2label": {"0": "cat", ...}, "label2id": {"cat": 0, ...}}
    DIR/model.safetensors  the state dict

``id2label``/``label2id`` (Hugging Face's names) are written when the model knows its class
names (``IRevNetConfig.label_names``), which then live there and not in ``"config"``.
Every file is written atomically (:mod:`irevnet.atomic`) and read by :mod:`.safe`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..atomic import atomic_write, atomic_write_text
from ..config import IRevNetConfig
from ..errors import CheckpointError
from .names import CONFIG_NAME, FORMAT, VERSION, WEIGHTS_NAME
from .safe import load_tensor_file

__all__ = [
    "atomic_save",
    "config_document",
    "parse_config",
    "read_checkpoint",
    "read_config_document",
    "read_model_folder",
    "write_checkpoint",
    "write_model_folder",
]

_LABELS = "label_names"


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` through :func:`irevnet.atomic.atomic_write`: a crash or a full
    disk mid-write leaves the previous file untouched; the file gets the mode of any new file."""

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, save)


def _cpu(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def write_checkpoint(
    path: str | os.PathLike[str], config: IRevNetConfig, state: Mapping[str, Tensor], **extras: Any
) -> Path:
    """Write the checkpoint of ``config`` and ``state`` (plus ``extras``) atomically to ``path``."""
    payload = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "state_dict": _cpu(state)}
    clash = set(extras) & set(payload)
    if clash:
        raise ValueError(f"extras may not use reserved keys {sorted(clash)}")
    return atomic_save({**payload, **extras}, path)


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict at ``path``, checked to be irevnet's, read without executing pickled code."""
    payload = load_tensor_file(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an irevnet checkpoint (for the authors' checkpoints use `irevnet convert`)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {payload.get('version')}, expected {VERSION}")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{str(path)!r} lacks a 'config' or 'state_dict' dictionary")
    return payload


def parse_config(data: Any, where: str | os.PathLike[str]) -> IRevNetConfig:
    """``IRevNetConfig.from_dict(data)``; a bad configuration is a :class:`CheckpointError` naming ``where``."""
    try:
        return IRevNetConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{str(where)!r} does not describe a valid model: {e}") from None


def config_document(config: IRevNetConfig) -> dict[str, Any]:
    """The content of a model folder's ``config.json`` for ``config``."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": {k: v for k, v in config.to_dict().items() if k != _LABELS},
    }
    if config.label_names is not None:
        doc["id2label"] = {str(i): name for i, name in enumerate(config.label_names)}
        doc["label2id"] = {name: i for i, name in enumerate(config.label_names)}
    return doc


def _label_names(doc: dict[str, Any], path: Path) -> tuple[str, ...]:
    id2label = doc["id2label"]
    if not isinstance(id2label, dict) or set(id2label) != {str(i) for i in range(len(id2label))}:
        raise CheckpointError(f"{str(path)!r}: id2label must map every class index 0..n-1 (as a string) to a name")
    names = tuple(id2label[str(i)] for i in range(len(id2label)))
    label2id = doc.get("label2id")
    if label2id is not None and label2id != {name: i for i, name in enumerate(names)}:
        raise CheckpointError(f"{str(path)!r}: label2id does not invert id2label")
    return names


def read_config_document(path: str | os.PathLike[str]) -> IRevNetConfig:
    """The configuration in a model folder's ``config.json`` (class names from ``id2label``)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("config"), dict):
        raise CheckpointError(
            f"{str(path)!r} is not an irevnet model config "
            '(expected {"format": "irevnet", "version": 1, "config": {...}})'
        )
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has format version {doc.get('version')}, expected {VERSION}")
    unknown = sorted(set(doc) - {"format", "version", "config", "id2label", "label2id"})
    if unknown:
        raise CheckpointError(f"{str(path)!r} has unknown top-level key(s) {unknown}")
    config = dict(doc["config"])
    if "id2label" in doc:
        if _LABELS in config:
            raise CheckpointError(f"{str(path)!r} names the classes twice (id2label and config.{_LABELS})")
        config[_LABELS] = list(_label_names(doc, path))
    return parse_config(config, path)


def write_model_folder(folder: str | os.PathLike[str], config: IRevNetConfig, state: Mapping[str, Tensor]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created if needed); returns it.

    Each file is written to a temporary name and renamed, so an interruption never leaves a
    truncated file under the final name.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{str(folder)!r} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _cpu(state)
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config_document(config), indent=2) + "\n")
    return folder


def read_model_folder(
    folder: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[IRevNetConfig, dict[str, Tensor]]:
    """The configuration and state dict of model folder ``folder``, without building the model;
    a missing, unreadable or invalid file raises :class:`CheckpointError` naming it."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"model folder {str(folder)!r} lacks {name} (a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
    config = read_config_document(folder / CONFIG_NAME)
    return config, load_tensor_file(folder / WEIGHTS_NAME, map_location=map_location)
