"""The one way irevnet reads a file of tensors: no pickled code ever runs.

``.safetensors`` files are read by safetensors (a header and raw bytes: nothing to execute);
anything else must be a file of ``torch.save`` and is read with ``torch.load(weights_only=True)``,
which refuses every pickled object but tensors and plain containers. Every failure is an
error naming the file (the caller's error class, :class:`~irevnet.errors.CheckpointError` by
default), never torch's advice to load untrusted code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, IRevNetError
from .names import SAFETENSORS_SUFFIX

__all__ = ["load_tensor_file", "torch_file_problem"]

#: First bytes of the two formats ``torch.save`` writes: a zip archive, or (legacy) a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def torch_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be a file written by ``torch.save`` (judged by its first bytes), or None.

    A text file, an image, an ONNX file, ...: named as such instead of getting torch's advice
    about pickled code.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_TORCH_MAGIC):
        return None
    return (
        f"{str(path)!r} is not a checkpoint: not a file written by torch.save or safetensors (it starts with {head!r})"
    )


def load_tensor_file(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    error: type[IRevNetError] = CheckpointError,
    hint: str = "",
) -> Any:
    """The content of the ``torch.save`` or safetensors file ``path``, read without executing code.

    Returns what was saved (for safetensors: a dict of tensors) on ``map_location``. A missing,
    foreign, truncated or unsafe file raises ``error`` naming it; ``hint`` is appended to the
    message of a file refused for holding pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{str(path)!r} does not exist or is not a file")
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        device = str(torch.device(map_location))
        try:
            return load_file(path, device=device)
        except (SafetensorError, OSError, ValueError) as e:
            raise error(f"cannot read {str(path)!r}: it is corrupt or truncated ({e})") from None
    not_torch = torch_file_problem(path)
    if not_torch:
        raise error(not_torch)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise error(
            f"refusing to load {str(path)!r}: it contains pickled objects that would execute code (only tensors "
            f"and plain containers are allowed): {str(e).splitlines()[0]}" + (f". {hint}" if hint else "")
        ) from None
    except Exception as e:  # truncated zip, garbage bytes, ...
        raise error(f"cannot read checkpoint {str(path)!r}: it is corrupt or truncated ({e})") from None
