"""Self-describing checkpoints: configuration + weights, written atomically, loaded safely.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python containers::

    {"format": "irevnet", "version": 1, "config": {...}, "state_dict": {...}, **extras}

It is read with ``torch.load(weights_only=True)``, which refuses any pickled object that
would run code. ``extras`` (optimizer state, epoch, RNG states, ...) ride along for the
trainer; :func:`load_model` ignores them.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .config import IRevNetConfig
from .errors import CheckpointError
from .model import ClassifierHead, IRevNet

__all__ = ["CheckpointError", "save_model", "load_model", "read_checkpoint", "atomic_save", "init_weights_from",
           "unwrap_model", "config_of", "FORMAT", "VERSION"]

log = logging.getLogger(__name__)

FORMAT = "irevnet"
VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through :func:`irevnet.atomic.atomic_write`: a crash or a full
    disk mid-write leaves the previous file untouched; the file gets the mode of any new file."""

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, save)


#: First bytes of the two formats ``torch.save`` writes: a zip archive, or (legacy) a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def torch_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a file written by ``torch.save`` (judged by its first bytes), or None.

    A text file, an image, a safetensors or ONNX file, ...: named as such instead of getting
    torch's advice about pickled code.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_TORCH_MAGIC):
        return None
    return f"{str(path)!r} is not a checkpoint: not a file written by torch.save (it starts with {head!r})"


def unwrap_model(model: nn.Module) -> IRevNet:
    """The :class:`IRevNet` inside DDP / torch.compile wrappers (``.module`` / ``._orig_mod``)."""
    while not isinstance(model, IRevNet):
        inner = getattr(model, "_orig_mod", None)
        inner = getattr(model, "module", None) if inner is None else inner
        if not isinstance(inner, nn.Module):
            raise TypeError(f"expected an IRevNet, got {type(model).__name__}")
        model = inner
    return model


def config_of(net: IRevNet) -> IRevNetConfig:
    """The configuration that rebuilds ``net``: ``num_classes`` follows a replaced classifier
    (``model.head.fc = nn.Linear(model.num_features, k)`` for fine-tuning)."""
    head, fc = net.head, getattr(net.head, "fc", None)
    if net.config.num_classes == 0 and isinstance(head, ClassifierHead) and isinstance(fc, nn.Identity):
        return net.config  # no classifier (reset_classifier(0)): the head returns pooled features
    if not isinstance(head, ClassifierHead) or not isinstance(fc, nn.Linear) or fc.bias is None \
            or fc.in_features != net.num_features:
        raise ValueError(
            f"cannot save this model: its head must be irevnet's ClassifierHead ending in "
            f"nn.Linear({net.num_features}, num_classes) (got {type(head).__name__} with {fc!r}); "
            "use model.reset_classifier(num_classes) to change the number of classes")
    if fc.out_features == net.config.num_classes:
        return net.config
    return net.config.replace(num_classes=fc.out_features)


def save_model(model: nn.Module, path: str | os.PathLike, **extras: Any) -> Path:
    """Write ``model`` (configuration + weights, plus optional ``extras``) atomically to ``path``.

    The configuration follows the model: a classifier replaced for fine-tuning (a new
    ``head.fc`` with another number of classes) is saved with its ``num_classes``.
    """
    net = unwrap_model(model)
    payload = {"format": FORMAT, "version": VERSION, "config": config_of(net).to_dict(),
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
    not_torch = torch_file_problem(path)
    if not_torch:
        raise CheckpointError(not_torch)
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
    """Rebuild the model saved at ``path``: a checkpoint file of :func:`save_model` (or the
    trainer's), or a model folder of :meth:`IRevNet.save_pretrained` (``config.json`` +
    ``model.safetensors``).

    The model is returned on ``map_location`` and, like any freshly built module, in train
    mode: call ``.eval()`` before inference.
    """
    if Path(path).is_dir():
        from .pretrained import load_pretrained

        return load_pretrained(path, map_location=map_location)
    payload = read_checkpoint(path, map_location)
    try:
        model = IRevNet.from_config(IRevNetConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not describe a valid model: {e}") from None
    return model.to(map_location)


#: Configuration fields that fix the shapes of Φ's weights (the input size and the head do not).
_ARCHITECTURE_FIELDS = ("blocks", "strides", "channels", "init_block_size", "mult")


def _read_weights(source: Path) -> tuple[Path, IRevNetConfig, dict[str, torch.Tensor]]:
    """The configuration and weights of a checkpoint file, a model folder, or a training run
    folder (its best.pt, else last.pt), and the path they were read from."""
    from .pretrained import WEIGHTS_NAME, read_model_folder

    if source.is_dir() and (source / WEIGHTS_NAME).is_file():
        return (source, *read_model_folder(source))  # the weights alone: no model is built
    path = source
    if source.is_dir():
        found = [source / name for name in ("best.pt", "last.pt") if (source / name).is_file()]
        if not found:
            raise CheckpointError(f"{str(source)!r} is a folder without {WEIGHTS_NAME}, best.pt or last.pt "
                                  "(neither a model folder nor a training run folder)")
        path = found[0]
    payload = read_checkpoint(path)
    try:
        return path, IRevNetConfig.from_dict(payload["config"]), payload["state_dict"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} does not describe a valid model: {e}") from None


def init_weights_from(model: nn.Module, source: str | os.PathLike) -> bool:
    """Copy the weights of ``source`` (a checkpoint file, a model folder of
    :meth:`IRevNet.save_pretrained`, or a training run folder: its ``best.pt``, else ``last.pt``)
    into ``model``, for fine-tuning. Weights only: no optimizer state, epoch or schedule.

    The invertible part Φ must have the same architecture (blocks, strides, channels,
    initial ψ, mult, input channels); the input's height and width may differ (the weights
    do not depend on them). When the number of classes differs, the model keeps its own,
    freshly initialized classifier (the head's BatchNorm is still copied) and this is
    logged. Returns True when the classifier was copied too.
    """
    net = unwrap_model(model)
    path, theirs, state = _read_weights(Path(source))
    ours = net.config
    differ = [f"{k} {getattr(theirs, k)} vs {getattr(ours, k)}" for k in _ARCHITECTURE_FIELDS
              if getattr(theirs, k) != getattr(ours, k)]
    if theirs.input_shape[0] != ours.input_shape[0]:
        differ.append(f"input channels {theirs.input_shape[0]} vs {ours.input_shape[0]}")
    if differ:
        raise CheckpointError(f"cannot initialize from {str(path)!r}: its architecture differs from this model's "
                              f"({'; '.join(differ)})")
    same_head = theirs.num_classes == ours.num_classes
    if not same_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.fc.")}
    # Checked before loading: load_state_dict copies what fits before it refuses a mis-shaped tensor.
    current = net.state_dict()
    missing = sorted(set(current) - set(state) - (set() if same_head else {"head.fc.weight", "head.fc.bias"}))
    unexpected = sorted(set(state) - set(current))
    misshaped = sorted(f"{k} {tuple(v.shape)} (expected {tuple(current[k].shape)})" for k, v in state.items()
                       if k in current and v.shape != current[k].shape)
    if missing or unexpected or misshaped:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the model (missing {missing}, "
                              f"unexpected {unexpected}" + (f", mis-shaped {misshaped})" if misshaped else ")"))
    net.load_state_dict(state, strict=False)
    if same_head:
        log.info("initialized all weights from %s", path)
    else:
        log.info("initialized Φ from %s; new classifier for %d classes (the checkpoint's predicts %d)",
                 path, ours.num_classes, theirs.num_classes)
    return same_head
