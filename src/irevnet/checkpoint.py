"""Former home of the checkpoint functions, kept so that existing imports work: see :mod:`irevnet.io`."""

from __future__ import annotations

from .errors import CheckpointError
from .io.formats import atomic_save, read_checkpoint
from .io.load import init_weights_from, load_model, save_model
from .io.names import FORMAT, VERSION
from .io.safe import torch_file_problem
from .model import config_of, unwrap_model

__all__ = ["CheckpointError", "save_model", "load_model", "read_checkpoint", "atomic_save", "init_weights_from",
           "unwrap_model", "config_of", "torch_file_problem", "FORMAT", "VERSION"]
