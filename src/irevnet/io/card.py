"""The model card (``README.md``) of a model folder on the Hugging Face Hub.

It states the architecture, the preprocessing, the classes, the metrics of the run that
trained the model (when known), how to load it, and the paper to cite. The metadata header
is built by ``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData` (``pip install
'irevnet[hub]'``), so the Hub reads the library, license, task and results. Imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..config import IRevNetConfig
from ..extras import require
from ..summary import describe_config
from .names import CARD_NAME

__all__ = ["CITATION", "model_card", "write_card"]

CITATION = """@inproceedings{jacobsen2018irevnet,
  title     = {i-RevNet: Deep Invertible Networks},
  author    = {Jacobsen, J{\\"o}rn-Henrik and Smeulders, Arnold W. M. and Oyallon, Edouard},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2018},
  eprint    = {1802.07088},
  archivePrefix = {arXiv}
}"""
#: Class names listed in the card; the full list is config.json's id2label.
_SHOWN_NAMES = 50


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in pairs)])


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(config: IRevNetConfig, *, repo_id: str | None = None, metrics: Mapping[str, Any] | None = None) -> str:
    """The text of the model card of the model ``config`` describes.

    ``metrics``: figures of the run that trained it, shown as given (e.g. ``{"data": "cifar10",
    "epochs": 200, "eval_top1": 0.91}``); ``eval_top1`` and ``data``, when present, also
    become the Hub's evaluation result.
    """
    hub = require("huggingface_hub", extra="hub", purpose="writing a model card")
    d = describe_config(config)
    metrics = dict(metrics or {})
    name = repo_id or config.name
    results = None
    if "eval_top1" in metrics and "data" in metrics:
        results = [
            hub.EvalResult(
                task_type="image-classification",
                dataset_type=str(metrics["data"]),
                dataset_name=str(metrics["data"]),
                metric_type="accuracy",
                metric_value=float(metrics["eval_top1"]),
                metric_name="top-1 accuracy",
            )
        ]
    data = hub.ModelCardData(
        library_name="irevnet",
        license="mit",
        pipeline_tag="image-classification",
        tags=["irevnet", "i-revnet", "invertible-networks", "image-classification", "pytorch"],
        model_name=name,
        eval_results=results,
    )
    shape = "×".join
    arch = _rows(
        [
            ("preset", f"`{config.name}`"),
            ("kind", d["kind"]),
            ("blocks per stage", list(config.blocks)),
            ("first-block strides", list(config.strides)),
            ("channels per half", list(config.channels)),
            ("initial ψ block size", config.init_block_size),
            ("bottleneck mult", config.mult),
            ("parameters", f"{d['parameters']:,}"),
            ("input", shape(map(str, d["input_shape"]))),
            ("Φ", shape(map(str, d["phi_shape"]))),
        ]
    )
    dc = config.data_config
    prep = _rows(
        [
            ("input size", list(dc["input_size"])),
            ("mean", list(dc["mean"])),
            ("std", list(dc["std"])),
            ("crop_pct", dc["crop_pct"]),
            ("interpolation", dc["interpolation"]),
        ]
    )
    if config.label_names is None:
        classes = f"{config.num_classes} classes, not named."
    else:
        names = config.label_names
        listed = ", ".join(f"`{n}`" for n in names[:_SHOWN_NAMES])
        more = f" and {len(names) - _SHOWN_NAMES} more (`config.json`, `id2label`)" if len(names) > _SHOWN_NAMES else ""
        classes = f"{len(names)} classes: {listed}{more}."
    trained = (
        _rows([(k, _number(v)) for k, v in metrics.items()])
        if metrics
        else "No training metrics were given with this model."
    )
    load_id = repo_id or "OWNER/NAME"
    body = f"""
# {name}

An i-RevNet (Jacobsen, Smeulders & Oyallon, ICLR 2018) image classifier: its representation Φ
is a one-to-one function of the image, and `model.inverse(Φ)` rebuilds the image from it; only
the final linear head discards information. The architecture is the authors' reference code's
(github.com/jhjacobsen/pytorch-i-revnet); the files (`config.json` + `model.safetensors`) were
written by the `irevnet` library.

## Architecture

{arch}

## Preprocessing

Resize the short side to `floor(size / crop_pct)`, centre-crop, scale to [0, 1], normalize:

{prep}

## Classes

{classes}

## Training and evaluation

{trained}

## Use

```python
import irevnet

model = irevnet.IRevNet.from_pretrained("{load_id}").eval()   # pip install 'irevnet[hub]'
phi = model.forward_features(x)                              # x: (N, {", ".join(map(str, d["input_shape"]))})
x_rec = model.inverse(phi)                                   # the image again, up to rounding
```

or `irevnet predict {load_id} image.jpg` for the most probable classes by name.

## Citation

```bibtex
{CITATION}
```
"""
    return str(hub.ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))


def write_card(
    folder: str | os.PathLike[str],
    config: IRevNetConfig,
    *,
    repo_id: str | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`model_card` as ``folder/README.md`` (atomically); returns its path."""
    return atomic_write_text(Path(folder) / CARD_NAME, model_card(config, repo_id=repo_id, metrics=metrics))
