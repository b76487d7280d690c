"""Atomic file writes: the one way irevnet writes checkpoints, model folders and run files.

A file is written under a temporary name in its folder, given the mode of any newly created
file, flushed to disk and renamed over its final name: a crash or a full disk mid-write
leaves the previous file untouched and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "new_file_mode"]


def new_file_mode() -> int:
    """The mode of a newly created file: ``0o666`` less the process umask (reading the umask
    requires setting it; it is restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp)`` to write a temporary file beside ``path``, then make it ``path``.

    What ``write`` returns is ignored.

    The file gets the mode of any new file, not the owner-only ``0o600`` of a temporary file,
    so collaborators on a shared folder can read it as they read its other files. ``write``
    may replace the file (safetensors does): the mode is set after it returns.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fchmod(f.fileno(), new_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of ``text``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
