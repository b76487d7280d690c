"""Export of Φ, the classifier and Φ⁻¹ as ``torch.export`` or ONNX programs (no irevnet needed to run them).

``export_model(model, example, dst)`` writes a folder::

    dst/forward.pt2   x (N, C, H, W)  -> (logits (N, classes), Φ (N, C', H', W'))
    dst/inverse.pt2   Φ (N, C', H', W') -> x (N, C, H, W)
    dst/meta.json     configuration, shapes, preprocessing, torch version

Both programs capture the model in eval mode (BatchNorm uses running statistics) with a
dynamic batch dimension and the example's spatial size fixed. Load them with
:func:`load_exported` or ``torch.export.load(path).module()``.

``format="onnx"`` writes ``forward.onnx`` (input ``x``, outputs ``logits``, ``phi``) and
``inverse.onnx`` (input ``phi``, output ``x``) with PyTorch's dynamo-based ONNX exporter
(extra ``[onnx]``), then runs both in onnxruntime on a batch of another size and refuses
the export (nothing is left under the final names) unless every output is within
``ONNX_TOLERANCE`` relative error of the eager model; the errors go into meta.json.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .extras import EXTRAS, require
from .model import IRevNet
from .precision import full_float32

__all__ = ["FORMATS", "ONNX_TOLERANCE", "export_model", "load_exported"]

FORMATS = ("torch", "onnx")
# Largest accepted ‖onnxruntime − eager‖ / ‖eager‖ per output (measured: ~4e-7 for logits,
# ~1e-7 for Φ and Φ⁻¹ in float32 on small cifar10 and imagenet-b layouts).
ONNX_TOLERANCE = 1e-5

log = logging.getLogger(__name__)


class _Forward(nn.Module):
    """``x -> (logits, Φ)``: the whole network, with Φ exposed for inversion."""

    def __init__(self, model: IRevNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.model.forward_features(x)
        return self.model.forward_head(phi), phi


class _Inverse(nn.Module):
    """``Φ -> x``: the explicit inverse of the feature map."""

    def __init__(self, model: IRevNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, phi: Tensor) -> Tensor:
        return self.model.inverse(phi)


def export_model(
    model: IRevNet, example: Tensor, dst: str | os.PathLike[str], *, format: str = "torch", progress: bool = False
) -> Path:
    """Export ``model``'s forward and inverse, traced at ``example`` (N, C, H, W), into folder ``dst``.

    The model is exported in eval mode and left in the mode it was in. The batch size is
    dynamic (any N >= 1); H and W are fixed to the example's. ``format``: ``"torch"``
    (``torch.export``, the default) or ``"onnx"`` (checked in onnxruntime, see the module docs).
    ``progress`` shows a bar over the steps (each program, and the ONNX check; tens of
    seconds each for an ImageNet model).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    if format == "onnx":
        _check_onnx_available()
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    was_training, was_exact = model.training, model.full_float32
    model.eval()
    meta_extra = {}
    bar = tqdm(
        total=2 if format == "torch" else 3, desc=f"export ({format})", unit="step", disable=not progress, leave=False
    )
    try:
        with torch.no_grad():
            phi = model.forward_features(example)
            # The float32 flags are global backend state, not graph operations: the programs are
            # the same without them, and tracing their context manager fails before torch 2.5.
            model.set_full_float32(False)
            if format == "torch":
                _export_torch(model, example, phi, dst, bar)
            else:
                meta_extra["onnx_relative_errors"] = _export_onnx(model, example, phi, dst, bar)
    finally:
        bar.close()
        model.train(was_training).set_full_float32(was_exact)
    meta = {
        "format": "irevnet-export",
        "program_format": format,
        "config": model.config.to_dict(),
        "input_shape": list(example.shape[1:]),
        "phi_shape": list(phi.shape[1:]),
        "preprocessing": model.config.data_config,
        "torch": torch.__version__,
        **meta_extra,
    }
    (dst / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.debug("exported forward and inverse of %s to %s (%s)", model.config.name, dst, format)
    return dst


def _export_torch(model: IRevNet, example: Tensor, phi: Tensor, dst: Path, bar: tqdm) -> None:
    batch = torch.export.Dim("batch", min=1)
    programs = {}
    for name, module, arg in (("forward", _Forward(model), example), ("inverse", _Inverse(model), phi)):
        bar.set_postfix_str(name)
        programs[name] = torch.export.export(module, (arg,), dynamic_shapes=({0: batch},))
        bar.update()
    for name, program in programs.items():  # both traced before anything is written
        torch.export.save(program, dst / f"{name}.pt2")


def _check_onnx_available() -> None:
    for module in EXTRAS["onnx"]:
        require(module, extra="onnx", purpose="ONNX export")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise RuntimeError(
            f"ONNX export uses PyTorch's dynamo-based exporter (torch.onnx.export(dynamo=True)), "
            f"which PyTorch {torch.__version__} lacks; it needs PyTorch 2.5 or newer"
        )


def _relative_error(got: np.ndarray[Any, Any], want: Tensor) -> float:
    want_np = want.detach().cpu().numpy()
    denom = float(np.linalg.norm(want_np))
    return float(np.linalg.norm(got - want_np)) / denom if denom > 0 else float(np.linalg.norm(got))


def _export_onnx(model: IRevNet, example: Tensor, phi: Tensor, dst: Path, bar: tqdm) -> dict[str, float]:
    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    programs = {
        "forward": (_Forward(model), example, ["x"], ["logits", "phi"]),
        "inverse": (_Inverse(model), phi, ["phi"], ["x"]),
    }
    tmp = {name: dst / f".{name}.onnx.tmp" for name in programs}
    # The exporter's optimizer logs every rewrite at INFO; keep the CLI's output readable.
    quiet = {name: logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")}
    levels = {name: logger.level for name, logger in quiet.items()}
    try:
        for logger in quiet.values():
            logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
        for name, (module, arg, inputs, outputs) in programs.items():
            bar.set_postfix_str(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on its own internals
                torch.onnx.export(
                    module,
                    (arg,),
                    str(tmp[name]),
                    dynamo=True,
                    dynamic_shapes=({0: batch},),
                    input_names=inputs,
                    output_names=outputs,
                    external_data=False,
                    verbose=False,
                )
            bar.update()
        bar.set_postfix_str("onnxruntime check")
        # Check on a batch of another size than the traced one, with the eager model as reference.
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(example.shape[0] + 1, *example.shape[1:], generator=gen).to(example)
        forward, inverse = (
            onnxruntime.InferenceSession(str(tmp[n]), providers=["CPUExecutionProvider"])
            for n in ("forward", "inverse")
        )
        with full_float32():  # the reference is exact (the model's own switch is off while exporting)
            phi_x = model.forward_features(x)
            want = {"logits": model.forward_head(phi_x), "phi": phi_x, "inverse": model.inverse(phi_x)}
        logits_o, phi_o = forward.run(None, {"x": x.cpu().numpy()})
        (x_o,) = inverse.run(None, {"phi": phi_x.cpu().numpy()})
        errors = {
            name: _relative_error(got, want[name])
            for name, got in (("logits", logits_o), ("phi", phi_o), ("inverse", x_o))
        }
        worst = max(errors, key=errors.__getitem__)
        if errors[worst] > ONNX_TOLERANCE:
            raise RuntimeError(
                f"the ONNX export of {model.config.name} disagrees with the eager model: relative "
                f"error of {worst} {errors[worst]:.2e} > {ONNX_TOLERANCE:.0e} (all: {errors})"
            )
        bar.update()
        for name, path in tmp.items():
            os.replace(path, dst / f"{name}.onnx")
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return errors


def load_exported(src: str | os.PathLike[str]) -> tuple[nn.Module, nn.Module]:
    """``(forward, inverse)`` callables from a folder written by :func:`export_model`."""
    src = Path(src)
    paths = [src / "forward.pt2", src / "inverse.pt2"]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{str(p)!r} does not exist: {str(src)!r} is not an irevnet export folder")
    forward, inverse = (torch.export.load(p).module() for p in paths)
    return forward, inverse
