"""The names of the files irevnet writes and reads: each defined here, once.

Plain strings, no torch: the command line checks paths with them while it parses.

::

    model folder (Hugging Face layout)        run folder of ``irevnet train``
      DIR/config.json     configuration         RUN/config.json    the resolved run settings
      DIR/model.safetensors  weights            RUN/metrics.jsonl  one JSON object per epoch
      DIR/README.md       model card (Hub)      RUN/last.pt        weights + trainer state
                                                RUN/best.pt        the best model alone
"""

from __future__ import annotations

__all__ = [
    "CARD_NAME",
    "CHECKPOINT_SUFFIXES",
    "CONFIG_NAME",
    "FORMAT",
    "RUN_BEST",
    "RUN_CONFIG",
    "RUN_LAST",
    "RUN_METRICS",
    "RUN_MODELS",
    "SAFETENSORS_SUFFIX",
    "VERSION",
    "WEIGHTS_NAME",
]

#: The tag and version of irevnet's checkpoints and model-folder configurations.
FORMAT = "irevnet"
VERSION = 1

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

#: A destination ending in one of these is a checkpoint file; any other name is a model folder.
CHECKPOINT_SUFFIXES = (".pt", ".pth")
#: A file of tensors ending in this is read by safetensors; any other by ``torch.load``.
SAFETENSORS_SUFFIX = ".safetensors"

# A run folder has a config.json too (the run's settings, not a model configuration): it is told
# apart from a model folder by its checkpoints.
RUN_CONFIG = CONFIG_NAME
RUN_METRICS = "metrics.jsonl"
RUN_LAST = "last.pt"
RUN_BEST = "best.pt"
#: The checkpoints of a run folder that hold its model, in the order a reader prefers them.
RUN_MODELS = (RUN_BEST, RUN_LAST)
