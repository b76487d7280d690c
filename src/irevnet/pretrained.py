"""Model folders, the Hugging Face convention: ``config.json`` + ``model.safetensors``.

A folder holds the model alone (no optimizer or trainer state)::

    DIR/config.json        {"format": "irevnet", "version": 1, "config": {...IRevNetConfig...}}
    DIR/model.safetensors  the state dict (safetensors: no pickled code can run on load)

:func:`load_pretrained` reads a local folder, or a Hugging Face Hub model id (``owner/name``,
optionally ``owner/name@revision``) through ``huggingface_hub``, which honours
``HF_HUB_OFFLINE`` and ``HF_HOME``: with ``HF_HUB_OFFLINE=1`` only the local cache is used.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write, atomic_write_text
from .checkpoint import FORMAT, VERSION, CheckpointError, config_of, unwrap_model
from .config import IRevNetConfig
from .extras import require
from .model import IRevNet

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "save_pretrained", "load_pretrained", "read_model_folder"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def save_pretrained(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Write ``model``'s configuration and weights into ``folder`` (created if needed).

    Each file is written to a temporary name and renamed, so an interruption never leaves a
    truncated file under the final name. Returns the folder.
    """
    from safetensors.torch import save_file

    net = unwrap_model(model)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{str(folder)!r} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    doc = {"format": FORMAT, "version": VERSION, "config": config_of(net).to_dict()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(folder / CONFIG_NAME, json.dumps(doc, indent=2) + "\n")
    return folder


def _read_config(path: Path) -> IRevNetConfig:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("config"), dict):
        raise CheckpointError(f"{str(path)!r} is not an irevnet model config "
                              '(expected {"format": "irevnet", "version": 1, "config": {...}})')
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has format version {doc.get('version')}, expected {VERSION}")
    unknown = sorted(set(doc) - {"format", "version", "config"})
    if unknown:
        raise CheckpointError(f"{str(path)!r} has unknown top-level key(s) {unknown}")
    try:
        return IRevNetConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r}: {e}") from None


def read_model_folder(folder: Path) -> tuple[IRevNetConfig, dict[str, torch.Tensor]]:
    """The configuration and state dict (on the CPU) of model folder ``folder``, without building
    the model; a missing, unreadable or invalid file raises :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise CheckpointError(f"model folder {str(folder)!r} lacks {name} "
                                  f"(a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = _read_config(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    try:
        return config, load_file(weights, device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {str(weights)!r}: it is corrupt or truncated ({e})") from None


def _load_folder(folder: Path, map_location: str | torch.device) -> IRevNet:
    config, state = read_model_folder(folder)
    weights = folder / WEIGHTS_NAME
    try:
        model = IRevNet.from_config(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{str(folder / CONFIG_NAME)!r} does not describe a valid model: {e}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
                       for k, v in expected.items() if k in state and state[k].shape != v.shape)
    if missing or unexpected or misshaped:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        problems = [f"{label}: {few(keys)}" for label, keys in
                    (("missing tensors", missing), ("unexpected tensors", unexpected), ("mis-shaped tensors", misshaped))
                    if keys]
        raise CheckpointError(f"{str(weights)!r} does not match {str(folder / CONFIG_NAME)!r}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model.to(map_location)


def _download(model_id: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path:
    hub = require("huggingface_hub", extra="hub", purpose=f"loading {model_id!r} from the Hugging Face Hub")
    repo_id, _, at = model_id.partition("@")
    revision = revision or at or None
    try:
        paths = [hub.hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir)
                 for name in (CONFIG_NAME, WEIGHTS_NAME)]
    except Exception as e:  # offline without a cache entry, unknown repo, missing file, ...
        raise CheckpointError(f"cannot fetch {model_id!r} from the Hugging Face Hub: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return Path(paths[0]).parent


def load_pretrained(
    model_id: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> IRevNet:
    """The model in a local folder written by :func:`save_pretrained`, or on the Hugging Face Hub.

    A path that exists must be a model folder; otherwise ``model_id`` is read as a Hub id
    (``owner/name`` or ``owner/name@revision``; needs ``pip install 'irevnet[hub]'``). Any
    missing file, unknown configuration key or missing/mis-shaped tensor raises
    :class:`~irevnet.checkpoint.CheckpointError` naming it. The model is returned in train
    mode, like any freshly built module: call ``.eval()`` before inference.
    """
    path = Path(model_id)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{str(path)!r} is a file, not a model folder (use irevnet.load_model for .pt)")
        return _load_folder(path, map_location)
    if not _HUB_ID.match(str(model_id)):
        raise CheckpointError(f"{str(model_id)!r} is neither an existing model folder nor a Hub id (owner/name)")
    return _load_folder(_download(str(model_id), revision, cache_dir), map_location)

