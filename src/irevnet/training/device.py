"""Where a run computes: the device of this process and its mixed-precision settings."""

from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = ["AMP_DTYPES", "amp_dtype", "grad_scaler", "resolve_device"]

AMP_DTYPES: dict[str | None, torch.dtype | None] = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the GPU of this local rank when CUDA is present, else the CPU."""
    if spec not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu or cuda", option="device")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but CUDA is not available", option="device")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def amp_dtype(amp: str | None) -> torch.dtype | None:
    """``None`` / ``"bf16"`` / ``"fp16"`` -> the autocast dtype (``None``: full precision)."""
    if amp not in AMP_DTYPES:
        raise ConfigError(f"unknown amp {amp!r}; use bf16 or fp16", option="amp")
    return AMP_DTYPES[amp]


def grad_scaler(device: torch.device, amp: str | None) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")
