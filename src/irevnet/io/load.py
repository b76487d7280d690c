"""Models in and out of files: the functions that build or take apart an :class:`~irevnet.model.IRevNet`.

The layers below know no model: :mod:`.names` (file names), :mod:`.safe` (reading without
running code), :mod:`.fit` (does a state dict fit), :mod:`.formats` (checkpoints and model
folders), :mod:`.source` and :mod:`.weights` (any source as configuration + tensors),
:mod:`.hub`. The model imports those; this module imports the model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..model import IRevNet, config_of, unwrap_model
from .fit import load_fitting
from .formats import write_checkpoint
from .weights import read_weights

__all__ = ["init_weights_from", "load_model", "save_model", "save_pretrained"]

log = logging.getLogger(__name__)

#: Configuration fields that fix the shapes of Φ's weights (the input size and the head do not).
_ARCHITECTURE_FIELDS = ("blocks", "strides", "channels", "init_block_size", "mult")
_CLASSIFIER = ("head.fc.weight", "head.fc.bias")


def save_model(model: nn.Module, path: str | os.PathLike[str], **extras: Any) -> Path:
    """Write ``model`` (configuration + weights, plus optional ``extras``) atomically to the
    checkpoint file ``path``.

    The configuration follows the model: a classifier replaced for fine-tuning (a new
    ``head.fc`` with another number of classes) is saved with its ``num_classes``.
    """
    net = unwrap_model(model)
    return write_checkpoint(path, config_of(net), net.state_dict(), **extras)


def save_pretrained(model: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a model folder (see :meth:`IRevNet.save_pretrained`); DDP / compile wrappers are unwrapped."""
    return unwrap_model(model).save_pretrained(folder)


def load_model(
    source: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> IRevNet:
    """Rebuild the model saved at ``source``: a checkpoint file of :func:`save_model` (or the
    trainer's), a model folder of :meth:`IRevNet.save_pretrained` (``config.json`` +
    ``model.safetensors``), a training run folder (its ``best.pt``, else ``last.pt``) or a
    Hugging Face Hub id (``owner/name[@revision]``, read as :meth:`IRevNet.from_pretrained` does).

    The model is returned on ``map_location`` and, like any freshly built module, in train
    mode: call ``.eval()`` before inference.
    """
    weights = read_weights(source, revision=revision, cache_dir=cache_dir)
    return IRevNet.from_weights(weights, map_location=map_location)


def init_weights_from(model: nn.Module, source: str | os.PathLike[str]) -> bool:
    """Copy the weights of ``source`` (any source :func:`load_model` reads) into ``model``, for
    fine-tuning. Weights only: no optimizer state, epoch or schedule.

    The invertible part Φ must have the same architecture (blocks, strides, channels,
    initial ψ, mult, input channels); the input's height and width may differ (the weights
    do not depend on them). When the number of classes differs, the model keeps its own,
    freshly initialized classifier (the head's BatchNorm is still copied) and this is
    logged. Returns True when the classifier was copied too.
    """
    net = unwrap_model(model)
    weights = read_weights(source)
    theirs, ours, where = weights.config, net.config, str(weights.source)
    differ = [
        f"{k} {getattr(theirs, k)} vs {getattr(ours, k)}"
        for k in _ARCHITECTURE_FIELDS
        if getattr(theirs, k) != getattr(ours, k)
    ]
    if theirs.input_shape[0] != ours.input_shape[0]:
        differ.append(f"input channels {theirs.input_shape[0]} vs {ours.input_shape[0]}")
    if differ:
        raise CheckpointError(
            f"cannot initialize from {where!r}: its architecture differs from this model's ({'; '.join(differ)})"
        )
    same_head = theirs.num_classes == ours.num_classes
    state = weights.state if same_head else {k: v for k, v in weights.state.items() if k not in _CLASSIFIER}
    load_fitting(
        net,
        state,
        source=str(weights.path),
        problem="does not fit the model",
        optional=() if same_head else _CLASSIFIER,
    )
    if same_head:
        log.info("initialized all weights from %s", where)
    else:
        log.info(
            "initialized Φ from %s; new classifier for %d classes (the checkpoint's predicts %d)",
            where,
            ours.num_classes,
            theirs.num_classes,
        )
    return same_head
