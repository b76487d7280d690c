"""Model folders on the Hugging Face Hub: ids and downloads (``pip install 'irevnet[hub]'``).

Downloads go through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE`` and ``HF_HOME``:
with ``HF_HUB_OFFLINE=1`` only the local cache is read. Nothing is fetched unless a Hub id
is asked for. Imports no torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CheckpointError
from ..extras import require
from .names import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["HUB_ID", "is_hub_id", "download"]

#: ``owner/name`` or ``owner/name@revision``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text))


def download(model_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder (in the Hub cache) holding ``config.json`` and ``model.safetensors`` of
    ``model_id`` (``owner/name[@revision]``; ``revision`` wins over the ``@`` part)."""
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
