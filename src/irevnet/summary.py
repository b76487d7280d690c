"""The architecture summary of a configuration, computed without building (or importing) torch.

``irevnet info PRESET`` prints this; it must start in well under a second, and importing
torch alone takes longer. :meth:`irevnet.model.IRevNet.describe` returns the same
dictionary for a built model (a test checks the two agree on every preset).
"""

from __future__ import annotations

from typing import Any

from .config import IRevNetConfig

__all__ = ["describe_config"]


def _bottleneck_parameters(in_channels: int, out_channels: int, *, first: bool, mult: int) -> int:
    """Weights of :class:`irevnet.layers.Bottleneck`: three bias-free 3x3 convolutions and affine BNs."""
    hidden = out_channels // mult
    convs = 9 * (in_channels * hidden + hidden * hidden + hidden * out_channels)
    norms = 2 * (2 * hidden + (0 if first else in_channels))
    return convs + norms


def describe_config(config: IRevNetConfig) -> dict[str, Any]:
    """Parameters, depth, per-stage shapes and Φ size of the model ``config`` describes.

    The keys are those of :meth:`irevnet.model.IRevNet.describe`.
    """
    c, h, w = config.input_shape
    plan = config.plan
    params = sum(
        _bottleneck_parameters(p.bottleneck_in_channels, p.out_channels, first=p.first, mult=config.mult) for p in plan
    )
    stages = [
        {
            "stage": p.stage + 1,
            "blocks": config.blocks[p.stage],
            "stride": config.strides[p.stage],
            "channels_per_half": p.out_channels,
            "output_shape": list(p.output_shape((h, w))),
        }
        for p in plan
        if p.stage_end
    ]
    phi = config.feature_shape()
    params += (2 * phi[0] if config.head_norm else 0) + phi[0] * config.num_classes + config.num_classes  # BN, linear
    return {
        "name": config.name,
        "parameters": params,
        "blocks": len(plan),
        "layers": 3 * len(plan) + 1,
        "input_shape": [c, *config.input_shape[1:]],
        "after_init_psi": list(config.embedding_shape),
        "stages": stages,
        "phi_shape": list(phi),
        "phi_size": phi[0] * phi[1] * phi[2],
        "input_size": c * config.input_shape[1] * config.input_shape[2],
        "kind": "injective" if any(p.pad > 0 for p in plan) else "bijective",
        "num_classes": config.num_classes,
        "label_names": None if config.label_names is None else list(config.label_names),
    }
