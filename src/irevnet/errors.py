"""The errors irevnet raises on purpose; every one derives from :class:`IRevNetError`.

Catch ``IRevNetError`` to handle anything the library reports about bad input, bad files or
a failed run, and let other exceptions (bugs, CUDA failures) propagate. Messages make sense
without the command line: they name options by their Python names (``option`` holds the
name, so a front end such as the CLI can say which of *its* flags that is).

The classes keep the built-in base they had before (``ValueError`` for bad options,
``RuntimeError`` for unusable files) so existing ``except ValueError`` code still works.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "HubError",
    "IRevNetError",
    "OutOfMemoryError",
    "TrainingDivergedError",
]


class IRevNetError(Exception):
    """Base class of irevnet's errors. ``option``: the option (Python name) the error is about, if any."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class ConfigError(IRevNetError, ValueError):
    """An invalid option, configuration or combination of options."""


class CheckpointError(IRevNetError, RuntimeError):
    """A checkpoint file is missing, truncated, unsafe, not an irevnet checkpoint, or does not fit the run."""


class DataError(IRevNetError, RuntimeError):
    """A data set on disk is missing pieces, corrupt, or not the one it claims to be."""


class HubError(IRevNetError, RuntimeError):
    """The Hugging Face Hub refused an upload or could not be reached (no token, no permission, offline, ...)."""


class TrainingDivergedError(IRevNetError, RuntimeError):
    """The loss or a gradient became non-finite (NaN or infinite).

    The message names the step and the last good checkpoint.
    """


class OutOfMemoryError(IRevNetError, MemoryError):
    """The device ran out of memory during training; ``batch_per_process`` is the micro-batch that did not fit."""

    def __init__(self, message: str, *, batch_per_process: int, device: str) -> None:
        super().__init__(message)
        self.batch_per_process, self.device = batch_per_process, device
