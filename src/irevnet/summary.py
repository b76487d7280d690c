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
    f = max(config.init_block_size, 1)
    channels_in, h, w = c * f * f, h // f, w // f
    after_init = [channels_in, h, w]
    params, depth, injective, stages = 0, 0, False, []
    for s, (n, stride, ch) in enumerate(zip(config.blocks, config.strides, config.channels)):
        for i in range(n):
            pad = 0 if (stride == 2 and i == 0) else 2 * ch - channels_in
            injective |= pad > 0
            f_in = (channels_in + pad) - (channels_in + pad) // 2  # the half that enters F
            params += _bottleneck_parameters(f_in, ch, first=depth == 0, mult=config.mult)
            if stride == 2 and i == 0:
                h, w = h // 2, w // 2
            channels_in, depth = 2 * ch, depth + 1
        stages.append({"stage": s + 1, "blocks": n, "stride": stride, "channels_per_half": ch,
                       "output_shape": [channels_in, h, w]})
    params += 2 * channels_in + channels_in * config.num_classes + config.num_classes  # head: BN + linear
    return {
        "name": config.name,
        "parameters": params,
        "blocks": depth,
        "layers": 3 * depth + 1,
        "input_shape": [c, *config.input_shape[1:]],
        "after_init_psi": after_init,
        "stages": stages,
        "phi_shape": [channels_in, h, w],
        "phi_size": channels_in * h * w,
        "input_size": c * config.input_shape[1] * config.input_shape[2],
        "kind": "injective" if injective else "bijective",
        "num_classes": config.num_classes,
        "label_names": None if config.label_names is None else list(config.label_names),
    }
