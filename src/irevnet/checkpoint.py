"""Self-describing checkpoints: configuration + weights, written atomically, loaded safely.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python containers::

    {"format": "irevnet", "version": 1, "config": {...}, "state_dict": {...}, **extras}

It is read with ``torch.load(weights_only=True)``, which refuses any pickled object that
would run code. ``extras`` (optimizer state, epoch, RNG states, ...) ride along for the
trainer; :func:`load_model` ignores them.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import IRevNetConfig
from .model import IRevNet

__all__ = ["CheckpointError", "save_model", "load_model", "read_checkpoint", "atomic_save", "FORMAT", "VERSION"]

FORMAT = "irevnet"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, unsafe or not an irevnet checkpoint."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk mid-write leaves the previous file at ``path`` untouched. The file
    gets the permissions of any newly created file (``0o666`` less the process umask), not
    the owner-only ``0o600`` of the temporary file, so collaborators on a shared run folder
    can read it as they read the run's other files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    """The process umask (reading it requires setting it; it is restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: First bytes of the two formats ``torch.save`` writes: a zip archive, or (legacy) a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _unwrap(model: nn.Module) -> IRevNet:
    # DDP / torch.compile wrappers keep the real model in .module / ._orig_mod
    while not isinstance(model, IRevNet):
        inner = getattr(model, "_orig_mod", None)
        inner = getattr(model, "module", None) if inner is None else inner
        if not isinstance(inner, nn.Module):
            raise TypeError(f"expected an IRevNet, got {type(model).__name__}")
        model = inner
    return model


def save_model(model: nn.Module, path: str | os.PathLike, **extras: Any) -> Path:
    """Write ``model`` (configuration + weights, plus optional ``extras``) atomically to ``path``."""
    net = _unwrap(model)
    payload = {"format": FORMAT, "version": VERSION, "config": net.config.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    clash = set(extras) & set(payload)
    if clash:
        raise ValueError(f"extras may not use reserved keys {sorted(clash)}")
    payload.update(extras)
    return atomic_save(payload, path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate the raw checkpoint dict at ``path`` without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_MAGIC):
        # A text file, an image, a safetensors or ONNX file, ...: say so instead of torch's pickle advice.
        raise CheckpointError(f"{str(path)!r} is not a checkpoint: not a file written by torch.save "
                              f"(it starts with {head!r})")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it contains pickled objects that would execute code "
            f"(only tensors and plain containers are allowed): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:  # truncated zip, garbage bytes, ...
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: it is corrupt or truncated ({e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an irevnet checkpoint (for the authors' checkpoints use `irevnet convert`)"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {payload.get('version')}, expected {VERSION}")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{str(path)!r} lacks a 'config' or 'state_dict' dictionary")
    return payload


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> IRevNet:
    """Rebuild the model saved by :func:`save_model` (or by the trainer) at ``path``.

    The model is returned on ``map_location`` and, like any freshly built module, in train
    mode: call ``.eval()`` before inference.
    """
    payload = read_checkpoint(path, map_location)
    try:
        model = IRevNet.from_config(IRevNetConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not describe a valid model: {e}") from None
    return model.to(map_location)
