"""Former home of the model-folder functions, kept so that existing imports work: see :mod:`irevnet.io`."""

from __future__ import annotations

import os
from typing import Any

from .io.formats import read_model_folder
from .io.load import save_pretrained
from .io.names import CONFIG_NAME, WEIGHTS_NAME
from .model import IRevNet

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "save_pretrained", "load_pretrained", "read_model_folder"]


def load_pretrained(model_id: str | os.PathLike, **kwargs: Any) -> IRevNet:
    """:meth:`IRevNet.from_pretrained`."""
    return IRevNet.from_pretrained(model_id, **kwargs)
