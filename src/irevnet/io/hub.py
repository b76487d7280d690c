"""Model folders on the Hugging Face Hub: ids, downloads and uploads (``pip install 'irevnet[hub]'``).

Downloads go through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE`` and ``HF_HOME``:
with ``HF_HUB_OFFLINE=1`` only the local cache is read. Nothing is fetched unless a Hub id
is asked for. Imports no torch.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, HubError
from ..extras import require
from .names import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["HUB_ID", "check_repo_id", "download", "is_hub_id", "is_repo_id", "upload_folder"]

#: ``owner/name`` or ``owner/name@revision``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text))


def is_repo_id(text: str) -> bool:
    """``owner/name`` without a revision: a repository to upload to."""
    return is_hub_id(text) and "@" not in text


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a repository to upload to (:func:`is_repo_id`), else :class:`ValueError`."""
    if not is_repo_id(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repository id (owner/name)")
    return repo_id


def download(model_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local folder (in the Hub cache) holding ``config.json`` and ``model.safetensors`` of
    ``model_id`` (``owner/name[@revision]``; ``revision`` wins over the ``@`` part)."""
    hub = require("huggingface_hub", extra="hub", purpose=f"loading {model_id!r} from the Hugging Face Hub")
    repo_id, _, at = model_id.partition("@")
    revision = revision or at or None
    try:
        paths = [
            hub.hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir)
            for name in (CONFIG_NAME, WEIGHTS_NAME)
        ]
    except Exception as e:  # offline without a cache entry, unknown repo, missing file, ...
        raise CheckpointError(
            f"cannot fetch {model_id!r} from the Hugging Face Hub: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    return Path(paths[0]).parent


def upload_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    api: Any = None,
) -> str:
    """Upload the files of ``folder`` to the Hub model repository ``repo_id`` (created if needed) in
    one commit; returns the commit's URL.

    ``api``: a :class:`huggingface_hub.HfApi` (default: ``HfApi(token=token)``; another endpoint:
    ``HfApi(endpoint=...)``). ``revision``: an existing branch to commit to (default: main). A failure of
    the Hub or of the connection (no token, no permission, offline, ...) is a
    :class:`~irevnet.errors.HubError` naming the repository, caused by ``huggingface_hub``'s error.
    """
    check_repo_id(repo_id)
    if api is None:
        hub = require("huggingface_hub", extra="hub", purpose=f"uploading to {repo_id!r} on the Hugging Face Hub")
        api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=commit_message or "Upload model with irevnet",
        )
    except Exception as e:  # no token, refused, offline, unknown branch, ...: the user can act on each
        raise HubError(
            f"cannot upload to {repo_id!r} on the Hugging Face Hub: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    return str(getattr(commit, "commit_url", commit))
